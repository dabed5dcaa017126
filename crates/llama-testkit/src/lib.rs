//! The test kit of the llama workspace: what end-to-end tests need around the code they test.
//! A [`World`] (a private store, config dir and working directory per test, running the
//! `llama` and `llamacc` binaries it is given), the real servers the Lambda and REAPI
//! executors' tests talk to ([`harness`]), and helpers to inspect a store.
//!
//! Not for: anything a shipped binary links (`publish = false`), and not a dependent of
//! llama-cli: a test crate hands the paths of the binaries it built (`env!("CARGO_BIN_EXE_…")`,
//! which only the test crate itself can expand) to [`World::with_binaries`].

pub mod engine;
pub mod harness;
pub mod oci;
pub mod pngs;
pub mod proxy;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One test's world: `work/` is the current directory, `store/` the LLAMA_DIR.
pub struct World {
    pub dir: tempfile::TempDir,
    binaries: Binaries,
}

/// The `llama` and `llamacc` executables a [`World`] runs: the test crate's
/// `env!("CARGO_BIN_EXE_llama")` and `env!("CARGO_BIN_EXE_llamacc")`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub llama: PathBuf,
    pub llamacc: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        // Each world's store has its own daemon; stop it with the world.
        if self.store().join("daemon.lock").exists() {
            let _ = self.llama(&["daemon", "stop"]).output();
        }
    }
}

/// The C++ compiler that goes with a C compiler.
pub fn cxx_for(cc: &str) -> &'static str {
    if cc.contains("clang") {
        "clang++"
    } else {
        "g++"
    }
}

impl World {
    pub fn with_binaries(binaries: Binaries) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("work")).expect("mkdir work");
        World { dir, binaries }
    }

    /// The executables this world runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.work().join(rel)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(p, data).expect("write");
    }

    /// `llama ARGS` in this world, with no settings leaking in from the environment.
    pub fn llama(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binaries.llama);
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd
    }

    /// `llamacc ARGS` in this world, standing in for the C compiler `cc`.
    pub fn llamacc(&self, cc: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binaries.llamacc);
        cmd.args(args);
        self.isolate(&mut cmd);
        cmd.env("LLAMACC_LOCAL_CC", cc)
            .env("LLAMACC_LOCAL_CXX", cxx_for(cc));
        cmd
    }

    /// Runs in `work/` with this world's store and config, and nothing of the caller's.
    fn isolate(&self, cmd: &mut Command) {
        cmd.current_dir(self.work());
        for (key, _) in std::env::vars() {
            if key.starts_with("LLAMA") || key.starts_with("XDG_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("LLAMA_DIR", self.store())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            // A daemon a test forgets to stop goes away by itself.
            .env("LLAMA_DAEMON_IDLE_TIMEOUT", "60s");
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.llama(args).output().expect("spawn llama")
    }
}

/// A small tmpfs mounted at `dir` (unmounted on drop): the only honest way to fill a disk.
/// `None`, with the reason printed, when not root; as root, failing to mount is a failure.
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    pub fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        fs::create_dir_all(&path).expect("mkdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk { path });
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        assert_ne!(
            unsafe { libc::geteuid() },
            0,
            "root, but mounting a tmpfs failed"
        );
        eprintln!("skipped: filling a disk needs a tmpfs, and mounting one needs root");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Runs `cmd` with `input` on its standard input, capturing its output.
pub fn run_with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// What `sha256sum` prints for the file at `path`, named `name`.
pub fn sha256sum_line(path: &Path, name: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let hash = line.split_whitespace().next().unwrap_or_default();
    format!("{hash}  {name}\n")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lowercase letters in lines of 80, `size` bytes, the same every time.
pub fn letters(size: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..size)
        .map(|i| {
            if i % 81 == 80 {
                return b'\n';
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts the store is consistent: every blob (raw or compressed) hashes to its name, every
/// action-cache entry and manifest checks out (results decode), and no staging file or
/// scratch directory is left behind.
pub fn assert_store_consistent(store: &Path) {
    let opened = llama_core::Store::open(store, u64::MAX).expect("open store");
    let report = opened.verify_all().expect("verify the store");
    assert!(report.blobs_ok > 0, "the store holds no blobs");
    assert!(
        report.blobs_removed + report.records_removed == 0,
        "damaged entries (now removed): {report:?}"
    );
    let leftovers = files_under(&store.join("tmp"));
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
    let scratch: Vec<_> = fs::read_dir(store.join("work")).expect("work").collect();
    assert!(scratch.is_empty(), "scratch directories left behind");
}
