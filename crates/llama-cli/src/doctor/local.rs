//! What every backend needs on this machine: the store llama writes to, the daemon llamacc
//! talks to, and the compiler llamacc stands in for.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use llama_cc::client::{self, DaemonPaths};
use llama_cc::protocol::{Request, Response};
use llama_core::doctor::Outcome;
use llama_core::{Backend, Config, Store};
use llama_exec::{HostCommand, find_program, run_host};

/// How long a daemon doctor starts may take to answer (as `llama daemon start` waits).
const DAEMON_START_WAIT: Duration = Duration::from_secs(10);

/// How long `COMPILER --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The store opens, takes a new file, and is within `cache_size`.
pub(super) fn store(config: &Config) -> Outcome {
    let dir = config.dir();
    let fix_dir = "make it writable by you, or point dir (LLAMA_DIR) at a directory that is";
    let store = match Store::open(&dir, config.cache_size()) {
        Ok(store) => store,
        Err(e) => return Outcome::problem(format!("{}: {e}", dir.display()), fix_dir),
    };
    // Every result is staged in the store and renamed into place: a file that cannot be
    // made there is a store llama cannot use.
    if let Err(e) = tempfile::Builder::new()
        .prefix(".doctor-")
        .tempfile_in(&dir)
    {
        return Outcome::problem(
            format!("{}: cannot create a file in it: {e}", dir.display()),
            fix_dir,
        );
    }
    let used = store.accounted_size().unwrap_or(0);
    let limit = store.limit();
    let detail = format!(
        "{}: writable, {} of cache_size {} used ({}%)",
        dir.display(),
        ByteSize(used).display().iec(),
        ByteSize(limit).display().iec(),
        used.saturating_mul(100) / limit.max(1)
    );
    if used > limit {
        return Outcome::problem(
            format!("{detail}: over its bound"),
            "nothing to do if it is transient (entries used in the last 10 minutes are kept \
             until they are older); else raise cache_size (LLAMA_CACHE_SIZE)",
        );
    }
    Outcome::Ok(detail)
}

/// The daemon answers, in this llama's version; one that does not run is started, as
/// llamacc would start it, so that a daemon that cannot start is found here rather than
/// by a build that quietly compiles everything directly.
pub(super) fn daemon(config: &Config) -> Outcome {
    let paths = DaemonPaths::new(&config.dir());
    if let Err(e) = &paths.socket {
        return Outcome::problem(
            format!("no usable place for its socket: {e}"),
            "point dir (LLAMA_DIR) at a shorter path, or remove the directory named (llama \
             makes it again, private to you)",
        );
    }
    let mut started = false;
    if client::request(&paths, &Request::Status).is_err() {
        if let Err(e) =
            client::spawn_and_wait(&client::llama_binary(), &paths, &[], DAEMON_START_WAIT)
        {
            let said = last_line(&paths.log)
                .map(|line| format!(" (its log ends: {line})"))
                .unwrap_or_default();
            return Outcome::problem(
                format!("not running, and it does not start: {e}{said}"),
                format!(
                    "read {}; `llama daemon run` runs it in the foreground, where its error shows",
                    paths.log.display()
                ),
            );
        }
        started = true;
    }
    match client::request(&paths, &Request::Status) {
        Ok(Response::Status { pid, version, .. }) if version == env!("CARGO_PKG_VERSION") => {
            Outcome::Ok(format!(
                "{} pid {pid} on {}",
                if started { "started," } else { "running," },
                paths.socket_display()
            ))
        }
        Ok(Response::Status { pid, version, .. }) => Outcome::problem(
            format!(
                "pid {pid} runs llama {version}, and this llama is {}",
                env!("CARGO_PKG_VERSION")
            ),
            "llama daemon stop (the next compile starts this version's)",
        ),
        Ok(other) => Outcome::problem(
            format!(
                "answers {other:?} on {} instead of its status",
                paths.socket_display()
            ),
            "llama daemon stop, then llama daemon start",
        ),
        Err(e) => Outcome::problem(
            format!("no answer on {}: {e}", paths.socket_display()),
            format!(
                "read {}; llama daemon stop, then llama daemon start",
                paths.log.display()
            ),
        ),
    }
}

/// The last line of the daemon's log, which says why it stopped; read from the end, since
/// the log grows with every daemon's life.
fn last_line(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4096;
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.take(TAIL).read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_string)
}

/// The compilers llamacc stands in for (`LLAMACC_LOCAL_CC`, `LLAMACC_LOCAL_CXX`) are on
/// `PATH`; on a remote backend they are what each compile ships.
pub(super) async fn compiler(backend: Backend) -> Outcome {
    let settings = llama_cc::Settings::from_process_env();
    let path = std::env::var_os("PATH");
    let find = |name: &str| find_program(name.as_ref(), path.as_deref(), "/".as_ref());
    let Some(cc) = find(&settings.local_cc) else {
        return Outcome::problem(
            format!(
                "{} (LLAMACC_LOCAL_CC) is not on PATH: llamacc has no compiler to run",
                settings.local_cc
            ),
            "install one (e.g. apt-get install gcc), or set LLAMACC_LOCAL_CC to the compiler llamacc stands in for",
        );
    };
    let mut detail = format!("{} is {}", settings.local_cc, described(&cc).await);
    match find(&settings.local_cxx) {
        Some(cxx) => detail.push_str(&format!(
            ", {} is {}",
            settings.local_cxx,
            described(&cxx).await
        )),
        None => detail.push_str(&format!(
            ", {} (LLAMACC_LOCAL_CXX) is not on PATH: llamac++ cannot compile",
            settings.local_cxx
        )),
    }
    if backend != Backend::Local {
        detail.push_str(&format!(
            "; llamacc ships the compiler, with the programs and libraries it runs, to the {} \
             backend with each compile, so remote objects match local ones",
            backend.name()
        ));
    }
    Outcome::Ok(detail)
}

/// `PATH (first line of --version)`.
async fn described(program: &Path) -> String {
    let command = HostCommand {
        program: program.to_path_buf(),
        args: vec![OsString::from("--version")],
        cwd: "/".into(),
        env: std::env::vars_os().collect(),
        umask: None,
    };
    let version = run_host(&command, VERSION_TIMEOUT)
        .await
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into());
    format!("{} ({version})", program.display())
}
