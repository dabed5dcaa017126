//! The servers the Lambda and REAPI executors' tests talk to, started by the tests
//! themselves on loopback and stopped on drop (DESIGN.md, "Test harness"):
//!
//! - [`S3Server`]: s3s-fs 0.14.1, an S3 server that checks SigV4 signatures and stores
//!   each object as a plain file under [`S3Server::root`].
//! - [`LambdaEmulator`]: cargo-lambda 1.9.2 (`cargo-lambda lambda watch
//!   --only-lambda-apis`), the Lambda Invoke API and Runtime API on one port; invocations of
//!   the function `_` go to whatever runtime the test starts against
//!   [`LambdaEmulator::runtime_api`].
//! - [`minbase_root`]: a Debian bookworm `debootstrap --variant=minbase` root (libc, no
//!   compiler, no headers) to chroot into.
//! - [`ReapiServer`]: BuildGrid 0.4.4 (a Remote Execution API v2 server) with its scheduler
//!   in a scratch PostgreSQL 15 cluster, and the test worker crates/llama-testkit/reapi-worker/worker.py
//!   running its actions on this host; what BuildGrid does is listed on the type.
//! - [`MotoServer`]: moto 5.2.5, the AWS control plane (CloudFormation, IAM, ECR, Lambda
//!   management, S3, STS) for the set-up commands; what it does is listed on the type.
//! - [`OciRegistry`]: docker-registry (distribution 2.8.2), a real OCI registry to push
//!   function images to.
//!
//! `scripts/install-test-servers` installs all of them at pinned versions into fixed paths;
//! a test that cannot find them fails (it does not skip) and says to run that script.
//!
//! Every process started here is in its own process group, killed with SIGKILL on drop, and
//! dies with the thread that started it (`PR_SET_PDEATHSIG`), so a test binary killed by a
//! timeout leaves nothing listening. A consequence: a server belongs to the thread that
//! started it; do not share one between tests through a `static`.
//!
//! Facts about the two servers that the code below relies on (verified by hand):
//!
//! - s3s-fs: `--port 0` works and the chosen address is logged ("server is running at
//!   http://127.0.0.1:PORT") at info level; a bucket is a directory under the root, and a
//!   key `a/b` is the file `ROOT/BUCKET/a/b` (its metadata lives in dotfiles directly under
//!   the root). Unsigned requests get 403 AccessDenied "Signature is required", a wrong
//!   secret 403 SignatureDoesNotMatch, a body that does not match its signed
//!   `x-amz-content-sha256` 500 InternalError (and nothing is stored). Path-style addressing;
//!   PutObject to a bucket that does not exist creates it. With `RUST_LOG=s3s::ops=debug`
//!   every request that passed the signature and access checks logs one "checked access, op:
//!   OPERATION, s3_path: ..." event, which [`S3Server::requests`] parses.
//! - cargo-lambda: needs a `Cargo.toml` with at least one binary target in its working
//!   directory and `cargo` on PATH (it runs `cargo metadata` at start). It takes no port 0 (0
//!   means 9000), and when its port is taken it exits with status 0 and no error, so the
//!   port is picked here and ownership of the listening socket checked in /proc. Never probe
//!   it with HTTP: every path it does not know is a "function URL" request and becomes an
//!   invocation of `_`. Its runtime API needs the `/.rt` prefix: a runtime given only
//!   `host:port` sends `/next` to the function-URL handler, i.e. it invokes itself.
//!   `/next` long-polls without limit. A function error comes back as HTTP 500 whose body is
//!   the error document the runtime posted, with no `X-Amz-Function-Error` header (so AWS
//!   SDKs retry it: boto3 invoked an erroring function 3 or 5 times). A runtime that dies
//!   mid-invocation leaves the invoker waiting until `--timeout` (whole seconds; none by
//!   default), which answers 408 with an empty body; the timed-out invocation stays queued
//!   and is delivered to the next runtime that polls, whose response POST then gets 500.
//!   `lambda-runtime-deadline-ms` is always the constant 600000, not a time. No payload
//!   limit (120 MB requests and 50 MB responses pass). N runtimes polling `/next` serve N
//!   invocations in parallel.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const S3S_FS_VERSION: &str = "0.14.1";
pub const CARGO_LAMBDA_VERSION: &str = "1.9.2";

/// How long a server may take to start listening before the test fails. Both start in well
/// under a second; the margin is for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(10);

const INSTALL_HINT: &str = "run scripts/install-test-servers (as root) to install the pinned \
                            test servers, then run the tests again";

// --- locating the pinned binaries ------------------------------------------------------------

/// Where scripts/install-test-servers puts the tools: `$LLAMA_TEST_TOOLS`, default
/// `/opt/llama-test`.
pub fn tools_dir() -> PathBuf {
    std::env::var_os("LLAMA_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/llama-test"))
}

/// Where scripts/install-test-servers keeps the minbase root: `$LLAMA_TEST_CACHE`, default
/// `/var/cache/llama-test`.
pub fn test_cache_dir() -> PathBuf {
    std::env::var_os("LLAMA_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/llama-test"))
}

/// The s3s-fs binary at its pinned version; panics saying how to install it.
pub fn s3s_fs() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        locate(
            "s3s-fs",
            tools_dir().join(format!("s3s-fs-{S3S_FS_VERSION}/bin/s3s-fs")),
            &["--version"],
            &format!("s3s-fs {S3S_FS_VERSION}"),
        )
    })
}

/// The cargo-lambda binary at its pinned version; panics saying how to install it.
pub fn cargo_lambda() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        locate(
            "cargo-lambda",
            tools_dir().join(format!(
                "cargo-lambda-{CARGO_LAMBDA_VERSION}/bin/cargo-lambda"
            )),
            // `cargo-lambda --version` is refused: it expects to be run as `cargo lambda`.
            &["lambda", "--version"],
            // "cargo-lambda 1.9.2 (67129fc 2026-08-21Z)"
            &format!("cargo-lambda {CARGO_LAMBDA_VERSION} "),
        )
    })
}

/// The install location first, then PATH; whichever is found must report the pinned version
/// (its `VERSION_ARGS` output starts with `want`). Not found or another version: a panic
/// naming what was looked for and how to install it.
fn locate(name: &str, pinned: PathBuf, version_args: &[&str], want: &str) -> PathBuf {
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default();
    let found = std::iter::once(pinned.clone())
        .chain(on_path)
        .find(|p| p.is_file());
    let Some(bin) = found else {
        panic!(
            "{name} not found (looked for {} and on PATH): {INSTALL_HINT}",
            pinned.display()
        );
    };
    let out = Command::new(&bin)
        .args(version_args)
        .output()
        .unwrap_or_else(|e| panic!("running {} failed: {e}: {INSTALL_HINT}", bin.display()));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        version.starts_with(want),
        "{} reports {version:?}, but the tests are pinned to {}: {INSTALL_HINT}",
        bin.display(),
        want.trim()
    );
    bin
}

/// The Debian bookworm minbase root (`debootstrap --variant=minbase`): libc and coreutils,
/// no compiler, no headers. Shared and read-only by convention: a test that writes into it
/// must copy it first. Panics saying how to create it.
pub fn minbase_root() -> PathBuf {
    let root = test_cache_dir().join("bookworm-minbase");
    assert!(
        root.join("bin/true").is_file(),
        "the bookworm minbase root {} does not exist: {INSTALL_HINT}",
        root.display()
    );
    root
}

// --- processes --------------------------------------------------------------------------------

/// A child in its own process group, with its output in a log file; the whole group is
/// killed on drop.
pub struct Server {
    child: Child,
    name: String,
    log: PathBuf,
}

impl Server {
    /// Spawns `cmd` with stdout and stderr appended to `log`, in a new process group, set to
    /// die with the calling thread.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Server {
        Self::spawn_with_death_signal(name, cmd, log, libc::SIGKILL)
    }

    /// [`spawn`](Server::spawn), with `signal` instead of SIGKILL sent to the process when
    /// the calling thread dies (a server that must clean up after itself, such as
    /// PostgreSQL, gets a signal it can handle). `cmd` may carry a `uid`/`gid` to run as:
    /// the signal is set after the switch, which would otherwise clear it.
    pub fn spawn_with_death_signal(
        name: &str,
        mut cmd: Command,
        log: &Path,
        signal: libc::c_int,
    ) -> Server {
        let out = File::create(log).expect("create log file");
        let err = out.try_clone().expect("dup log file");
        // SAFETY: getpid has no preconditions and cannot fail.
        let parent = unsafe { libc::getpid() };
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} failed: {e}"));
        Server {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's stdout and stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for child")
    }

    /// Sends `signal` to the process itself (not its group) and waits up to `grace` for it
    /// to exit; whether it did. Drop still kills the group with SIGKILL afterwards.
    pub fn stop(&mut self, signal: libc::c_int, grace: Duration) -> bool {
        if self.exited().is_some() {
            return true;
        }
        // SAFETY: kill has no memory-safety preconditions; the pid stays reserved until the
        // child is reaped, which only `exited` and drop do.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }

    /// Panics with the log when the process has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}) while starting; its output:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group id is the child's pid
        // (process_group(0)), which stays reserved until the wait below reaps it.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Polls `ready` every few milliseconds until it returns `Some`, for at most
/// [`START_TIMEOUT`]; `what` names the wait in the panic message.
fn wait_for<T>(what: &str, ready: impl FnMut() -> Option<T>) -> T {
    wait_for_within(what, START_TIMEOUT, ready)
}

/// [`wait_for`] with another limit.
fn wait_for_within<T>(what: &str, limit: Duration, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// Starts `name` on a port picked here, `command(port)` building it, logging to
/// `log_dir/NAME.ATTEMPT.log`; returns it and the port once it listens. Another process may
/// take the port first: the server then exits, `port_taken` recognises that from its exit
/// status and output, and the next attempt takes another port.
fn spawn_on_free_port(
    name: &str,
    log_dir: &Path,
    mut command: impl FnMut(u16) -> Command,
    port_taken: impl Fn(std::process::ExitStatus, &str) -> bool,
) -> (Server, u16) {
    for attempt in 1..=5 {
        let port = free_port();
        let log = log_dir.join(format!("{name}.{attempt}.log"));
        let mut server = Server::spawn(name, command(port), &log);
        let listening = wait_for(&format!("{name} to listen"), || {
            if let Some(status) = server.exited() {
                return Some(Err(status));
            }
            listens_on(server.pid(), port).then_some(Ok(()))
        });
        match listening {
            Ok(()) => return (server, port),
            Err(status) if attempt < 5 && port_taken(status, &server.log()) => continue,
            Err(status) => panic!(
                "{name} exited ({status}) while starting on port {port}; its output:\n{}",
                server.log()
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (or 0.0.0.0, or their
/// IPv6 forms), read from /proc: connecting alone cannot tell our server from another process
/// on the same port. gRPC servers (BuildGrid) bind "127.0.0.1:PORT" as an IPv6 socket on the
/// v4-mapped address ::ffff:127.0.0.1, which only /proc/net/tcp6 lists.
fn listens_on(pid: u32, port: u16) -> bool {
    // Addresses as /proc prints them: 127.0.0.1, 0.0.0.0; ::ffff:127.0.0.1, ::.
    const OURS: [&str; 4] = [
        "0100007F",
        "00000000",
        "0000000000000000FFFF00000100007F",
        "00000000000000000000000000000000",
    ];
    // "  0: 0100007F:24F8 00000000:0000 0A ... inode ...": local address, state 0A is LISTEN,
    // the inode is the tenth column.
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let (addr, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
                    let (ip, p) = addr.split_once(':')?;
                    let ours = OURS.contains(&ip)
                        && u16::from_str_radix(p, 16).ok()? == port
                        && *state == "0A";
                    ours.then(|| format!("socket:[{inode}]"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// The Python of the venv `$LLAMA_TEST_TOOLS/PACKAGE-VERSION`, after checking that it has
/// `program` and PACKAGE at exactly VERSION. Panics saying how to install it.
fn pinned_venv_python(package: &str, version: &str, program: &str) -> PathBuf {
    let venv = tools_dir().join(format!("{package}-{version}"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file() && venv.join("bin").join(program).is_file(),
        "{package} {version} not found (looked for the venv {}): {INSTALL_HINT}",
        venv.display()
    );
    let out = Command::new(&python)
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({package:?}))"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {} failed: {e}: {INSTALL_HINT}", python.display()));
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        found,
        version,
        "{} has {package} {found:?} ({}), but the tests are pinned to {version}: {INSTALL_HINT}",
        venv.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    python
}

/// Removes every inherited variable whose name starts with one of `prefixes` from `cmd`'s
/// environment.
fn remove_env_starting_with(cmd: &mut Command, prefixes: &[&str]) {
    for (key, _) in std::env::vars_os() {
        if prefixes
            .iter()
            .any(|p| key.to_string_lossy().starts_with(p))
        {
            cmd.env_remove(key);
        }
    }
}

mod http;
mod lambda;
mod moto;
mod reapi;
mod registry;
mod s3;

pub use http::*;
pub use lambda::*;
pub use moto::*;
pub use reapi::*;
pub use registry::*;
pub use s3::*;
