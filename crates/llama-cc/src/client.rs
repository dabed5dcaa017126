//! The client half of the daemon protocol: where a store's daemon listens (a socket in the
//! store directory, or in a private runtime directory checked to be this user's alone),
//! how to ask it one thing, and how to start one. Used by the thin `llamacc` binary and by
//! `llama`; it needs nothing of the compile service, so llamacc links none of it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::protocol::{self, Request, Response};

/// Unix socket paths are limited to 108 bytes; beyond this the socket moves to a private
/// runtime directory.
const MAX_SOCKET_PATH: usize = 100;

/// Why a directory is not safe for the daemon's socket or llamacc's markers: another user
/// could listen there (and receive compiles, answering with programs to run) or plant
/// links there.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{} is not a private directory ({problem}); remove it, or set XDG_RUNTIME_DIR to a directory only you can use (mode 0700)",
    path.display()
)]
pub struct UnsafeDir {
    /// The directory refused.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: DirProblem,
}

/// What makes a directory unsafe.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DirProblem {
    /// It cannot be created or examined.
    #[error("cannot create or examine it: {0}")]
    Unreadable(String),
    /// A symbolic link or another kind of file, not a directory.
    #[error("it is not a directory but a {0}")]
    NotADirectory(&'static str),
    /// Someone else owns it.
    #[error("it belongs to uid {owner}, not to you (uid {uid})")]
    Owner {
        /// Its owner.
        owner: u32,
        /// The user running llama.
        uid: u32,
    },
    /// Others may use it.
    #[error("its mode is {0:04o}: others can use it")]
    Mode(u32),
}

/// The user running llama.
fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Makes `dir` (mode 0700) unless it exists, then checks what is there without following
/// links: a directory owned by this user that no one else can use. A directory someone
/// else created first is refused, never "fixed": its creator could still act in it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::DirBuilderExt;
    let refuse = |problem| UnsafeDir {
        path: dir.to_path_buf(),
        problem,
    };
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(dir)
        && e.kind() != io::ErrorKind::AlreadyExists
    {
        return Err(refuse(DirProblem::Unreadable(e.to_string())));
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| refuse(DirProblem::Unreadable(e.to_string())))?;
    check_private(&meta).map_err(refuse)
}

/// `meta` (from lstat) is of a directory owned by this user with no access for others.
fn check_private(meta: &fs::Metadata) -> Result<(), DirProblem> {
    let kind = meta.file_type();
    if !kind.is_dir() {
        return Err(DirProblem::NotADirectory(if kind.is_symlink() {
            "symbolic link"
        } else {
            "file"
        }));
    }
    if meta.uid() != uid() {
        return Err(DirProblem::Owner {
            owner: meta.uid(),
            uid: uid(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(DirProblem::Mode(meta.mode() & 0o7777));
    }
    Ok(())
}

/// The per-user directories for sockets and markers, best first: `$XDG_RUNTIME_DIR/llama`
/// when `XDG_RUNTIME_DIR` is set and private (the login session's own, mode 0700 by the
/// spec), else `/tmp/llama-<uid>`. Not `$TMPDIR`: builds set it per job, and llamacc and
/// its daemon must agree on the socket.
fn runtime_dir_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && xdg.is_absolute()
        && fs::symlink_metadata(&xdg).is_ok_and(|m| check_private(&m).is_ok())
    {
        dirs.push(xdg.join("llama"));
    }
    dirs.push(PathBuf::from(format!("/tmp/llama-{}", uid())));
    dirs
}

/// A private per-user directory (see [`runtime_dir_candidates`]), made if missing; the
/// refusal of the last candidate when none is safe.
pub fn private_runtime_dir() -> Result<PathBuf, UnsafeDir> {
    private_runtime_dir_where(|_| true)
}

fn private_runtime_dir_where(fits: impl Fn(&Path) -> bool) -> Result<PathBuf, UnsafeDir> {
    let mut refusal = None;
    for dir in runtime_dir_candidates().into_iter().filter(|d| fits(d)) {
        match ensure_private_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => refusal = Some(e),
        }
    }
    Err(refusal.unwrap_or_else(|| UnsafeDir {
        path: PathBuf::from(format!("/tmp/llama-{}", uid())),
        problem: DirProblem::Unreadable("no candidate is short enough".into()),
    }))
}

/// Where a daemon for a store directory keeps its files.
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    /// The store directory.
    pub dir: PathBuf,
    /// The socket clients connect to, or why no safe place for it was found.
    pub socket: Result<PathBuf, UnsafeDir>,
    /// Held (flock) by the running daemon.
    pub lock: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
    /// The counters, saved.
    pub stats: PathBuf,
}

impl DaemonPaths {
    /// The paths for the store at `dir`. A socket path too long for the store directory
    /// goes to a private runtime directory, made (mode 0700) and checked here.
    pub fn new(dir: &Path) -> DaemonPaths {
        let in_store = dir.join("daemon.sock");
        let socket = if in_store.as_os_str().len() <= MAX_SOCKET_PATH {
            Ok(in_store)
        } else {
            let digest = llama_core::Digest::of_bytes(dir.as_os_str().as_encoded_bytes());
            let name = format!("{}.sock", &digest.hex()[..16]);
            private_runtime_dir_where(|d| d.join(&name).as_os_str().len() <= MAX_SOCKET_PATH)
                .map(|d| d.join(name))
        };
        DaemonPaths {
            dir: dir.to_path_buf(),
            socket,
            lock: dir.join("daemon.lock"),
            log: dir.join("daemon.log"),
            stats: dir.join("stats.json"),
        }
    }

    /// The socket, or the refusal as an I/O error for those who only connect.
    pub fn socket(&self) -> io::Result<&Path> {
        self.socket
            .as_deref()
            .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.clone()))
    }

    /// The socket's path for messages.
    pub fn socket_display(&self) -> String {
        match &self.socket {
            Ok(p) => p.display().to_string(),
            Err(e) => e.path.display().to_string(),
        }
    }
}

/// Connects to a running daemon.
pub fn connect(paths: &DaemonPaths) -> io::Result<UnixStream> {
    UnixStream::connect(paths.socket()?)
}

/// One request, one response, on a fresh connection.
pub fn request(paths: &DaemonPaths, req: &Request) -> io::Result<Response> {
    let mut stream = connect(paths)?;
    protocol::write_frame(&mut stream, req)?;
    let (_, response) = protocol::read_frame(&mut stream)?;
    Ok(response)
}

/// Starts a daemon in the background for `paths` and waits until it answers.
pub fn spawn_and_wait(
    llama: &Path,
    paths: &DaemonPaths,
    env: &[(&str, &std::ffi::OsStr)],
    wait: Duration,
) -> io::Result<()> {
    fs::create_dir_all(&paths.dir)?;
    let log = File::options().create(true).append(true).open(&paths.log)?;
    let mut cmd = std::process::Command::new(llama);
    cmd.args(["daemon", "run"])
        .env("LLAMA_DIR", &paths.dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; it detaches the daemon from the build's
    // terminal and process group so ^C on make does not kill it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + wait;
    loop {
        if connect(paths).is_ok() {
            // Reap it if it already exited (another daemon won the lock): no zombie left.
            let _ = child.try_wait();
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait()
            && !status.success()
        {
            return Err(io::Error::other(format!(
                "the daemon exited with {status}; see {}",
                paths.log.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the daemon did not answer within {}s; see {}",
                    wait.as_secs(),
                    paths.log.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `llama` binary next to the running one (llamacc and llama are installed together),
/// else the one on `PATH`.
pub fn llama_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("llama")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("llama"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_a_private_directory_of_ones_own_is_accepted() {
        let base = tempfile::tempdir().expect("tempdir");
        let fresh = base.path().join("fresh");
        ensure_private_dir(&fresh).expect("made private");
        let mode = fs::symlink_metadata(&fresh).expect("lstat").mode();
        assert_eq!(mode & 0o777, 0o700);
        // Made before, and private: accepted again.
        ensure_private_dir(&fresh).expect("still private");

        let open = base.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = ensure_private_dir(&open).expect_err("readable by others");
        assert!(matches!(err.problem, DirProblem::Mode(0o755)), "{err}");
        assert!(
            err.to_string().contains(&open.display().to_string()),
            "{err}"
        );

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).expect("symlink");
        let err = ensure_private_dir(&link).expect_err("a link");
        assert!(
            matches!(err.problem, DirProblem::NotADirectory("symbolic link")),
            "{err}"
        );

        let file = base.path().join("file");
        fs::write(&file, b"").expect("write");
        let err = ensure_private_dir(&file).expect_err("a file");
        assert!(
            matches!(err.problem, DirProblem::NotADirectory("file")),
            "{err}"
        );

        if uid() == 0 {
            let theirs = base.path().join("theirs");
            fs::create_dir(&theirs).expect("mkdir");
            fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).expect("chmod");
            std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
            let err = ensure_private_dir(&theirs).expect_err("another user's");
            assert!(
                matches!(err.problem, DirProblem::Owner { owner: 65534, .. }),
                "{err}"
            );
        }
    }
}
