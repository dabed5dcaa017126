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
//!   in a scratch PostgreSQL 15 cluster, and the test worker tests/reapi-worker/worker.py
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

#![allow(dead_code)] // shared by several test modules; none uses every helper

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

// --- S3 ---------------------------------------------------------------------------------------

/// s3s-fs on a free loopback port with a fresh root holding one bucket, checking signatures
/// made with [`access_key`](S3Server::access_key) / [`secret_key`](S3Server::secret_key).
pub struct S3Server {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl S3Server {
    pub const BUCKET: &'static str = "llama-test";
    pub const ACCESS_KEY: &'static str = "LLAMATESTACCESSKEY";
    pub const SECRET_KEY: &'static str = "llama-test-secret-key";

    pub fn start() -> S3Server {
        let bin = s3s_fs();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        // s3s-fs serves every directory under its root as a bucket; there is nothing else
        // to creating one.
        fs::create_dir_all(root.join(Self::BUCKET)).expect("mkdir bucket");
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", Self::ACCESS_KEY])
            .args(["--secret-key", Self::SECRET_KEY])
            .arg(&root)
            // info: the listening address; s3s::ops=debug: one "checked access" event per
            // accepted request (and the reason for each rejected one); errors from the rest.
            .env("RUST_LOG", "error,s3s_fs=info,s3s::ops=debug");
        let mut server = Server::spawn("s3s-fs", cmd, &dir.path().join("s3s-fs.log"));
        let port = wait_for("s3s-fs to listen", || {
            server.assert_running();
            let log = server.log();
            let rest = log.split("server is running at http://127.0.0.1:").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        wait_for("s3s-fs to accept connections", || {
            server.assert_running();
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()
        });
        S3Server { server, dir, port }
    }

    /// `http://127.0.0.1:PORT`: path-style addressing only (`ENDPOINT/BUCKET/KEY`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    pub fn bucket(&self) -> &'static str {
        Self::BUCKET
    }

    pub fn access_key(&self) -> &'static str {
        Self::ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        Self::SECRET_KEY
    }

    /// Any region is accepted: it is part of the signature, not checked against anything.
    pub fn region(&self) -> &'static str {
        "us-east-1"
    }

    /// The directory s3s-fs stores into: bucket `B`'s object `K` is the file `root/B/K`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The keys of the objects in the bucket, sorted (directories left behind by deleted
    /// objects are not keys).
    pub fn object_keys(&self) -> Vec<String> {
        let base = self.root().join(Self::BUCKET);
        let mut keys: Vec<String> = crate::util::files_under(&base)
            .iter()
            .filter_map(|p| p.strip_prefix(&base).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// s3s-fs's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Every request that passed the signature and access checks, in order. Each is logged
    /// before it is handled, so a request the client has an answer to is in the list.
    pub fn requests(&self) -> Vec<S3Request> {
        self.log()
            .lines()
            .filter_map(|line| S3Request::parse(line.split_once("checked access, op: ")?.1))
            .collect()
    }

    /// How many accepted requests were operation `op` (as S3 names it: "PutObject",
    /// "GetObject", "HeadObject", "UploadPart", ...) on a key starting with `key_prefix`.
    pub fn count(&self, op: &str, key_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.op == op && r.key.as_deref().is_some_and(|k| k.starts_with(key_prefix)))
            .count()
    }

    /// How many objects under `key_prefix` were written: PutObject plus
    /// CompleteMultipartUpload requests.
    pub fn put_count(&self, key_prefix: &str) -> usize {
        self.count("PutObject", key_prefix) + self.count("CompleteMultipartUpload", key_prefix)
    }
}

/// One accepted S3 request, from s3s-fs's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub op: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
}

impl S3Request {
    /// Parses what follows "checked access, op: " in the log:
    /// `PutObject, s3_path: Object { bucket: "b", key: "k/1" }`, `... Bucket { bucket: "b" }`
    /// or `ListBuckets, s3_path: Root`.
    fn parse(s: &str) -> Option<S3Request> {
        let (op, path) = s.split_once(", s3_path: ")?;
        Some(S3Request {
            op: op.to_string(),
            bucket: debug_field(path, "bucket"),
            key: debug_field(path, "key"),
        })
    }
}

/// The string field `name: "..."` of a `{:?}`-formatted struct, unescaped.
fn debug_field(s: &str, name: &str) -> Option<String> {
    let rest = s.split_once(&format!("{name}: \""))?.1;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

// --- Lambda -----------------------------------------------------------------------------------

/// cargo-lambda's emulator of the Lambda Invoke and Runtime APIs on one free loopback port.
/// Invocations of the function `_` wait for a runtime the test starts itself with
/// [`runtime_env`](LambdaEmulator::runtime_env); several runtimes polling at once serve
/// several invocations at once.
pub struct LambdaEmulator {
    server: Server,
    // Declared after `server`: the process dies before its working directory goes.
    dir: tempfile::TempDir,
    port: u16,
}

impl LambdaEmulator {
    /// The function name whose invocations go to a runtime started by the test.
    pub const FUNCTION: &'static str = "_";

    /// An emulator whose invokes give up with 408 after 60 s without a response (cargo-lambda
    /// has no limit of its own: an invocation whose runtime died would wait forever).
    pub fn start() -> LambdaEmulator {
        Self::start_with_invoke_timeout(60)
    }

    /// An emulator whose invokes give up with 408 (empty body) after `seconds`. The
    /// abandoned invocation stays queued: the next runtime to poll still receives it.
    pub fn start_with_invoke_timeout(seconds: u32) -> LambdaEmulator {
        let bin = cargo_lambda();
        let dir = tempfile::tempdir().expect("tempdir");
        // cargo-lambda runs `cargo metadata` here and refuses a project without a binary
        // target; the binary is never built (it would be only if invoked by its name).
        // `[workspace]` keeps cargo from looking for a workspace in the parent directories.
        fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"llama-test-emulator\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [[bin]]\nname = \"unused\"\npath = \"main.rs\"\n\n[workspace]\n",
        )
        .expect("write Cargo.toml");
        fs::write(dir.path().join("main.rs"), "fn main() {}\n").expect("write main.rs");

        // cargo-lambda exits with status 0, silently, when its port was taken.
        let (server, port) = spawn_on_free_port(
            "cargo-lambda",
            dir.path(),
            |port| {
                let mut cmd = Command::new(bin);
                cmd.args(["lambda", "watch", "--only-lambda-apis"])
                    .args(["--invoke-address", "127.0.0.1"])
                    .args(["--invoke-port", &port.to_string()])
                    .args(["--timeout", &seconds.to_string()])
                    .current_dir(dir.path());
                remove_env_starting_with(&mut cmd, &["AWS_", "CARGO_LAMBDA"]);
                cmd
            },
            |status, _| status.success(),
        );
        LambdaEmulator { server, dir, port }
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL_LAMBDA`. Invoke with
    /// `POST /2015-03-31/functions/_/invocations`.
    pub fn invoke_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// `http://127.0.0.1:PORT/.rt`: the `AWS_LAMBDA_RUNTIME_API` for a runtime serving `_`.
    /// Unlike real Lambda's `host:port`, it carries a scheme and a path prefix; the runtime
    /// endpoints are below it (`.../2018-06-01/runtime/invocation/next`).
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// The environment cargo-lambda tells a self-started runtime to have.
    pub fn runtime_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.runtime_api()),
            ("AWS_LAMBDA_FUNCTION_NAME", Self::FUNCTION.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096".to_string()),
        ]
    }

    /// cargo-lambda's output so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }
}

// --- REAPI: BuildGrid + PostgreSQL + the test worker --------------------------------------------

pub const BUILDGRID_VERSION: &str = "0.4.4";
pub const POSTGRES_VERSION: &str = "15";

/// How long BuildGrid, PostgreSQL and the worker may each take to come up: BuildGrid, the
/// slowest (its Python imports), listens 2 to 3 s after it starts on an idle machine and 5 to
/// 10 s on one busy compiling; the margin is for worse.
const REAPI_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The BuildGrid venv (`$LLAMA_TEST_TOOLS/buildgrid-0.4.4`)'s Python, which also runs the
/// test worker and any REAPI client a test writes in Python: the `buildgrid` package carries
/// generated protos for REAPI v2, ByteStream, longrunning, google.rpc and the Bots API
/// (`from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2`).
/// Panics saying how to install it.
pub fn buildgrid_python() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| pinned_venv_python("buildgrid", BUILDGRID_VERSION, "bgd"))
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

/// `bgd`, BuildGrid's command line, from the same venv.
fn bgd() -> PathBuf {
    buildgrid_python().with_file_name("bgd")
}

/// A PostgreSQL 15 program (`initdb`, `postgres`), from Debian's postgresql-15 package
/// (which puts them off PATH); panics saying how to install it.
fn postgres_bin(name: &str) -> PathBuf {
    let bin = PathBuf::from(format!("/usr/lib/postgresql/{POSTGRES_VERSION}/bin/{name}"));
    assert!(
        bin.is_file(),
        "{} not found (Debian's postgresql-{POSTGRES_VERSION}): {INSTALL_HINT}",
        bin.display()
    );
    bin
}

/// The test worker (tests/reapi-worker/worker.py): a Bots API client that runs leases on
/// this host. It lives beside the tests that start it.
fn reapi_worker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reapi-worker/worker.py")
}

/// The uid and gid PostgreSQL runs as: the `postgres` user (created by Debian's package)
/// when we are root, since PostgreSQL refuses to run as root; `None` (ourselves) otherwise.
fn postgres_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam_r writes only into `pwd` and `buf`, both alive and of the sizes
    // given; `result` points at `pwd` or is null.
    let (uid, gid) = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        assert!(
            rc == 0 && !result.is_null(),
            "running as root, but there is no user `postgres` to run PostgreSQL as (Debian's \
             postgresql-{POSTGRES_VERSION} package creates it): {INSTALL_HINT}"
        );
        (pwd.pw_uid, pwd.pw_gid)
    };
    Some((uid, gid))
}

/// `cmd` to run as the PostgreSQL user, with a minimal environment of its own.
fn as_postgres(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C");
}

/// A scratch PostgreSQL cluster: `initdb` into a temporary directory, `postgres` in the
/// foreground (not `pg_ctl start`, which would detach it from our process group), on a
/// loopback port, trust authentication, fsync off. Stopped with SIGQUIT ("immediate
/// shutdown", which also removes its shared memory; SIGKILL would leave a SysV segment
/// behind each time), then the group is killed.
struct Postgres {
    server: Server,
    port: u16,
}

impl Postgres {
    /// Creates a cluster in `dir` (made and owned by the PostgreSQL user, whose parent it
    /// must be able to traverse) and starts it, logging to `log` (`NAME.N.log` per attempt).
    fn start(dir: &Path, log: &Path) -> Postgres {
        let user = postgres_user();
        fs::create_dir_all(dir).expect("mkdir pg");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown pg dir");
        }
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chmod pg dir");
        let data = dir.join("data");

        let mut initdb = Command::new(postgres_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            // Nothing here has to survive a crash of the machine.
            .arg("--no-sync")
            .current_dir(dir);
        as_postgres(&mut initdb, user);
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The port is picked here; another process may take it first, and postgres then
        // exits saying so: the next attempt takes another port.
        for attempt in 1..=5 {
            let port = free_port();
            let mut cmd = Command::new(postgres_bin("postgres"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
                // The Unix socket (psql -h DIR) goes next to the data, not to /run/postgresql.
                .arg("-k")
                .arg(dir)
                .arg("-F")
                .args(["-c", "max_connections=200"])
                .current_dir(dir);
            as_postgres(&mut cmd, user);
            let attempt_log = log.with_extension(format!("{attempt}.log"));
            let mut server =
                Server::spawn_with_death_signal("postgres", cmd, &attempt_log, libc::SIGQUIT);
            let ready = wait_for_within(
                "PostgreSQL to accept connections",
                REAPI_START_TIMEOUT,
                || {
                    if server.exited().is_some() {
                        return Some(false);
                    }
                    let ready = server.log().contains("ready to accept connections")
                        && listens_on(server.pid(), port);
                    ready.then_some(true)
                },
            );
            if ready {
                return Postgres { server, port };
            }
            let text = server.log();
            if attempt < 5 && text.contains("could not bind") {
                continue;
            }
            panic!("postgres exited while starting on port {port}; its output:\n{text}");
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The SQLAlchemy URL BuildGrid connects with. The `+psycopg2` driver is required:
    /// BuildGrid's notifiers use psycopg2's LISTEN/NOTIFY API, and a plain `postgresql://`
    /// leaves jobs queued forever.
    fn url(&self) -> String {
        format!(
            "postgresql+psycopg2://postgres@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster stops its backends and frees its shared memory;
        // then `server`'s own drop kills whatever is left of the group.
        self.server.stop(libc::SIGQUIT, Duration::from_secs(10));
    }
}

/// The BuildGrid configuration, from shared/reference/buildgrid-0.4.4.yml with these
/// changes, each needed by the tests:
/// - `grpc.so_reuseport: 0`: gRPC servers set SO_REUSEPORT by default, so two servers that
///   picked the same "free" port would both bind it and share its connections at random;
///   without it the second fails to start and is retried on another port.
/// - `thread-pool-size: 200`: it is also gRPC's `maximum_concurrent_rpcs`, and every bot's
///   long poll and every client's Execute/WaitExecution stream holds one for its whole
///   length; beyond it, calls fail at once with RESOURCE_EXHAUSTED.
/// - `cache-failed-actions: false`: only exit code 0 is cached, as Buildbarn, BuildBuddy and
///   Bazel's own expectations have it.
/// - `wildcard-property-keys: [container-image]`: that platform property is accepted and
///   ignored. OSFamily and ISA are always match keys (the worker's bots advertise
///   `OSFamily=linux`, `ISA=x86-64`); any other property fails Execute with
///   FAILED_PRECONDITION "Unregistered platform property [NAME={'VALUE'}]".
/// - the assigner: `interval` 0.1 s and `jitter-factor` 0.1 (it looks for a free bot every
///   0.1 to 0.2 s; the defaults, 1 s plus up to 1 s of jitter, add that much latency to every
///   action that finds a bot idle), `failure-backoff` 0.5 s (a job that found no free bot is
///   not looked at again for that long; the default 5 s made the first action after start,
///   queued before the worker's bots had registered, wait 5 s). A bot that completes a lease
///   takes a backed-off job at once, whatever the backoff.
/// - `bot-session-keepalive-timeout: 60`: a bot not heard from for 60 s (the worker long-polls
///   for 30 s at most and reports a running lease every 5 s) is dropped and its jobs
///   requeued; with the default 600 s, jobs assigned to a worker that died waited ten
///   minutes (BuildGrid keeps assigning to a dead bot until then).
/// - `max-cached-refs`: 100000 results in the action cache, which is in memory (LRU): it is
///   empty again after a restart of the server, unlike the CAS (on disk) and the scheduler
///   (in PostgreSQL).
///
/// With `tls`, a second port serves TLS (see [`ReapiTls`]); the first stays plaintext, for
/// the worker.
fn buildgrid_config(
    port: u16,
    instance: &str,
    db_url: &str,
    cas_dir: &Path,
    tls: Option<(u16, &ReapiTls)>,
) -> String {
    let tls_channel = match tls {
        None => String::new(),
        Some((tls_port, tls)) => format!(
            r#"  - !channel
    address: "127.0.0.1:{tls_port}"
    insecure-mode: false
    credentials:
      tls-server-key: {key}
      tls-server-cert: {cert}
{client_certs}"#,
            key = tls.key.display(),
            cert = tls.cert.display(),
            client_certs = tls
                .client_ca
                .as_ref()
                .map(|ca| format!("      tls-client-certs: {}\n", ca.display()))
                .unwrap_or_default(),
        ),
    };
    format!(
        r#"# Written by ReapiServer (crates/llama-cli/tests/util/harness.rs).
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
{tls_channel}
grpc-server-options:
  grpc.so_reuseport: 0

authorization:
  method: none

connections:
  - !sql-connection &sql
    connection-string: {db_url}
    pool-size: 5
    max-overflow: 10

storages:
  - !disk-storage &main-storage
    path: {cas_dir}

caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false

schedulers:
  - !sql-scheduler &state-database
    sql: *sql
    action-cache: *main-action
    storage: *main-storage
    bot-session-keepalive-timeout: 60
    property-set: !dynamic-property-set
      match-property-keys: []
      wildcard-property-keys: [container-image]
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.1
        jitter-factor: 0.1
        failure-backoff: 0.5

instances:
  - name: "{instance}"
    services:
      - !action-cache
        cache: *main-action
      - !execution
        scheduler: *state-database
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage

thread-pool-size: 200
"#,
        cas_dir = cas_dir.display()
    )
}

/// A Remote Execution API v2 server on loopback: BuildGrid 0.4.4 with its scheduler in a
/// scratch PostgreSQL 15 cluster, its CAS in a temporary directory, and the test worker
/// (tests/reapi-worker/worker.py) running `workers` actions at a time on this host. One
/// instance, [`instance`](ReapiServer::instance), serving Execution, Operations, ActionCache,
/// CAS, ByteStream, Capabilities and Bots.
///
/// What the server says and does (BuildGrid 0.4.4, verified by hand):
/// - GetCapabilities: SHA256 only; `max_batch_total_size_bytes` 4193280 (4 MiB - 1024); no
///   `supported_compressors` (identity only); action cache updates enabled; REAPI 2.0 to
///   2.2.
/// - Every request message must fit gRPC's default 4 MiB receive limit: a bigger
///   BatchUpdateBlobs fails with RESOURCE_EXHAUSTED ("Received message larger than max"),
///   a BatchReadBlobs asking for more than 4193280 bytes with INVALID_ARGUMENT, and a
///   ByteStream Write must send its data in chunks (1 MiB works). ByteStream knows no
///   `compressed-blobs/...` names (INVALID_ARGUMENT), and QueryWriteStatus is UNIMPLEMENTED
///   (no resumable uploads).
/// - FindMissingBlobs never reports the empty blob missing.
/// - Execute checks the Action and Command are in the CAS and fails the call with
///   FAILED_PRECONDITION ("Could not get command from storage.") without PreconditionFailure
///   details when not; a missing input file is found by the worker and comes back as
///   ExecuteResponse.status FAILED_PRECONDITION with a PreconditionFailure naming
///   `blobs/HASH/SIZE`. An Action whose timeout exceeds 7200 s: INVALID_ARGUMENT. An
///   unknown platform property: FAILED_PRECONDITION naming it (see [`buildgrid_config`]);
///   OSFamily or ISA values other than the bots' `linux` / `x86-64` (`Linux` included) are
///   accepted and then wait forever for a bot.
/// - Operation names are `INSTANCE/UUID`; WaitExecution wants that whole name. A completed
///   Operation carries `response` (an ExecuteResponse) even when its status is not OK.
/// - The action cache is written by BuildGrid itself when a lease completes with status OK,
///   unless the Action has `do_not_cache` (and, here, unless the exit code is non-zero). An
///   identical Action already queued or running is merged into the same job.
/// - Killing the server loses nothing but the action cache: queued and running jobs live in
///   PostgreSQL, workers reconnect and report, and after a restart WaitExecution(name)
///   returns each operation's result. Open Execute streams fail with UNAVAILABLE.
pub struct ReapiServer {
    // Drop order is declaration order: the worker, then BuildGrid, then PostgreSQL, then the
    // files.
    worker: Server,
    bgd: Option<Server>,
    postgres: Postgres,
    dir: tempfile::TempDir,
    port: u16,
    /// The TLS port, when started with [`ReapiServer::start_tls`].
    tls_port: Option<u16>,
    instance: String,
    bgd_starts: u32,
    startup: String,
}

impl ReapiServer {
    /// The instance name [`start`](ReapiServer::start) uses. Not empty, so that a client that
    /// forgets it in a resource name (`INSTANCE/blobs/...`, `INSTANCE/uploads/...`) fails.
    pub const INSTANCE: &'static str = "llama";

    /// BuildGrid, PostgreSQL and a worker that runs up to `workers` actions at once; returns
    /// once all three are up (about 4 s on an idle machine, 8 s on a busy one; most of it
    /// BuildGrid's start). The worker's bots may register a moment later: an action queued
    /// before then waits for them (about a second).
    pub fn start(workers: usize) -> ReapiServer {
        Self::start_with_instance(workers, Self::INSTANCE)
    }

    /// [`start`](ReapiServer::start) with another instance name; `""` is the default
    /// instance (resource names without a prefix).
    pub fn start_with_instance(workers: usize, instance: &str) -> ReapiServer {
        Self::start_with(workers, instance, None)
    }

    /// [`start`](ReapiServer::start), and BuildGrid serves TLS with `tls` on a second port
    /// too ([`tls_endpoint`](ReapiServer::tls_endpoint)); the worker keeps the plaintext one.
    pub fn start_tls(workers: usize, tls: ReapiTls) -> ReapiServer {
        Self::start_with(workers, Self::INSTANCE, Some(tls))
    }

    fn start_with(workers: usize, instance: &str, tls: Option<ReapiTls>) -> ReapiServer {
        assert!(workers > 0, "a REAPI server without workers runs nothing");
        let started = Instant::now();
        let python = buildgrid_python();
        let dir = tempfile::tempdir().expect("tempdir");
        // PostgreSQL, running as its own user, must reach its directory inside ours.
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .expect("chmod tempdir");

        let postgres = Postgres::start(&dir.path().join("pg"), &dir.path().join("postgres.log"));
        let postgres_up = started.elapsed();

        let out = Command::new(bgd())
            .args(["migrate", "apply", &postgres.url()])
            .output()
            .expect("run bgd migrate apply");
        assert!(
            out.status.success(),
            "bgd migrate apply {} failed ({}):\n{}{}",
            postgres.url(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let migrated = started.elapsed();

        let cas_dir = dir.path().join("cas");
        fs::create_dir_all(&cas_dir).expect("mkdir cas");
        let mut reapi = None;
        // The port is picked here; when another process takes it first, bgd exits saying so
        // (so_reuseport is off) and the next attempt takes another port.
        for attempt in 1..=5 {
            let port = free_port();
            let tls_port = tls.as_ref().map(|_| free_port());
            let config = buildgrid_config(
                port,
                instance,
                &postgres.url(),
                &cas_dir,
                tls_port.zip(tls.as_ref()),
            );
            fs::write(dir.path().join("bgd.yml"), config).expect("write bgd.yml");
            let bgd = spawn_bgd(dir.path(), 1);
            // The worker starts meanwhile (its imports take a while too) and retries until
            // BuildGrid answers.
            let mut worker_cmd = Command::new(python);
            worker_cmd
                .arg(reapi_worker_script())
                .args(["--server", &format!("127.0.0.1:{port}")])
                .args(["--instance", instance])
                .args(["--bots", &workers.to_string()])
                .arg("--work-dir")
                .arg(dir.path().join("work"))
                .args(["--bot-id-prefix", "llama-test-bot"])
                .args(["--property", "OSFamily=linux", "--property", "ISA=x86-64"]);
            let worker = Server::spawn(
                "the REAPI test worker",
                worker_cmd,
                &dir.path().join(format!("worker.{attempt}.log")),
            );
            match wait_for_bgd(bgd, port) {
                Ok(bgd) => {
                    // Both ports are bound before the server starts serving either.
                    if let Some(tls_port) = tls_port {
                        assert!(
                            listens_on(bgd.pid(), tls_port),
                            "bgd server listens on {port} but not on its TLS port {tls_port}:\n{}",
                            bgd.log()
                        );
                    }
                    reapi = Some((port, tls_port, bgd, worker));
                    break;
                }
                Err(log) if attempt < 5 && log.contains("Failed to bind to address") => continue,
                Err(log) => {
                    panic!("bgd server exited while starting on port {port}; its output:\n{log}")
                }
            }
        }
        let (port, tls_port, bgd, mut worker) = reapi.expect("the last attempt returns or panics");
        let bgd_up = started.elapsed();
        wait_for_within(
            "the REAPI test worker to start",
            REAPI_START_TIMEOUT,
            || {
                worker.assert_running();
                worker.log().contains("worker ready").then_some(())
            },
        );
        let startup = format!(
            "PostgreSQL up after {postgres_up:.2?}, migrated after {migrated:.2?}, BuildGrid \
             listening after {bgd_up:.2?}, worker ready after {:.2?}",
            started.elapsed()
        );
        ReapiServer {
            worker,
            bgd: Some(bgd),
            postgres,
            dir,
            port,
            tls_port,
            instance: instance.to_string(),
            bgd_starts: 1,
            startup,
        }
    }

    /// `grpc://127.0.0.1:PORT`: plaintext gRPC, no authentication. Stays the same across
    /// [`restart_server`](ReapiServer::restart_server).
    pub fn endpoint(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// `grpcs://127.0.0.1:PORT`: the TLS port of a server started with
    /// [`start_tls`](ReapiServer::start_tls).
    pub fn tls_endpoint(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("grpcs://127.0.0.1:{port}")
    }

    /// The REAPI instance name (`LLAMA_REAPI_INSTANCE`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The Python that has the REAPI protos (see [`buildgrid_python`]).
    pub fn python(&self) -> &'static Path {
        buildgrid_python()
    }

    /// Where BuildGrid's disk storage keeps the CAS (one file per blob, named by its hash).
    pub fn cas_dir(&self) -> PathBuf {
        self.dir.path().join("cas")
    }

    /// How long each part took to start, for a test that wants to print it.
    pub fn startup(&self) -> &str {
        &self.startup
    }

    /// Kills BuildGrid (SIGKILL, no shutdown), as a crash would. PostgreSQL and the worker
    /// keep running; the worker retries until a server is back on the same port.
    pub fn kill_server(&mut self) {
        if let Some(mut bgd) = self.bgd.take() {
            bgd.stop(libc::SIGKILL, Duration::from_secs(10));
        }
    }

    /// Whether BuildGrid is running (it is, unless killed and not restarted).
    pub fn server_running(&mut self) -> bool {
        self.bgd.as_mut().is_some_and(|b| b.exited().is_none())
    }

    /// Starts BuildGrid again on the same port with the same database and CAS (killing it
    /// first if it still runs), and waits until it listens (about 3 s). Queued and running
    /// operations carry on; the in-memory action cache starts empty.
    pub fn restart_server(&mut self) {
        self.kill_server();
        self.bgd_starts += 1;
        let bgd = spawn_bgd(self.dir.path(), self.bgd_starts);
        match wait_for_bgd(bgd, self.port) {
            Ok(bgd) => self.bgd = Some(bgd),
            Err(log) => panic!(
                "bgd server exited while restarting on port {}; its output:\n{log}",
                self.port
            ),
        }
    }

    /// BuildGrid's output so far, every run of it.
    pub fn server_log(&self) -> String {
        (1..=self.bgd_starts)
            .map(|n| {
                let path = self.dir.path().join(format!("bgd.{n}.log"));
                String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned()
            })
            .collect::<Vec<_>>()
            .join("--- bgd server restarted ---\n")
    }

    /// The worker's output so far: one line per bot session and per lease.
    pub fn worker_log(&self) -> String {
        self.worker.log()
    }

    /// PostgreSQL's output so far.
    pub fn postgres_log(&self) -> String {
        self.postgres.server.log()
    }

    /// Everything, for a failure message: worker, BuildGrid, PostgreSQL.
    pub fn log(&self) -> String {
        format!(
            "--- REAPI test worker ---\n{}\n--- bgd server ---\n{}\n--- postgres ---\n{}",
            self.worker_log(),
            self.server_log(),
            self.postgres_log()
        )
    }
}

/// The PEM files of a [`ReapiServer`] that serves TLS (BuildGrid's `tls-server-key`,
/// `tls-server-cert` and `tls-client-certs`).
pub struct ReapiTls {
    /// The server's certificate (chain).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificates a client certificate must chain to: `Some` requires one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// `bgd server start DIR/bgd.yml`, logging to `DIR/bgd.N.log`. `-v` logs warnings (the
/// default is errors only); `-vv` would log every request at info level, `-vvv` everything.
fn spawn_bgd(dir: &Path, n: u32) -> Server {
    let mut cmd = Command::new(bgd());
    cmd.args(["server", "start", "-v"])
        .arg(dir.join("bgd.yml"))
        .current_dir(dir)
        .env("PYTHONUNBUFFERED", "1");
    Server::spawn("bgd server", cmd, &dir.join(format!("bgd.{n}.log")))
}

/// Waits until `bgd` listens on `port`; its log if it exits first. Panics with the log when
/// it neither listens nor exits in time.
fn wait_for_bgd(mut bgd: Server, port: u16) -> Result<Server, String> {
    let deadline = Instant::now() + REAPI_START_TIMEOUT;
    loop {
        if bgd.exited().is_some() {
            return Err(bgd.log());
        }
        if listens_on(bgd.pid(), port) {
            return Ok(bgd);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {REAPI_START_TIMEOUT:?} waiting for bgd server to listen on port \
             {port}; its output:\n{}",
            bgd.log()
        );
        std::thread::sleep(POLL);
    }
}

// --- AWS control plane: moto --------------------------------------------------------------------

pub const MOTO_VERSION: &str = "5.2.5";
/// Debian bookworm's docker-registry (`2.8.2+ds1`).
pub const DOCKER_REGISTRY_VERSION: &str = "2.8.2";

/// The moto venv (`$LLAMA_TEST_TOOLS/moto-5.2.5`)'s Python, which has boto3 (and botocore)
/// for a test that wants to look at moto's state the way AWS's own tools do. Panics saying
/// how to install it.
pub fn moto_python() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| pinned_venv_python("moto", MOTO_VERSION, "moto_server"))
}

/// `moto_server`, from the same venv (it has no `--version`: the venv's is checked).
fn moto_server() -> PathBuf {
    moto_python().with_file_name("moto_server")
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

/// moto's server on a free loopback port: the AWS control plane `llama bootstrap`,
/// `update-function` and `doctor` talk to (CloudFormation, IAM, ECR, Lambda management, S3,
/// STS), all on [`endpoint`](MotoServer::endpoint), with Lambda set not to use Docker
/// (creating functions works; invoking one echoes its payload). Give a `llama` child
/// [`apply_env`](MotoServer::apply_env).
///
/// What moto 5.2.5 says and does (verified by hand with boto3):
/// - Any credentials and any signature are accepted. The account is always 123456789012;
///   GetCallerIdentity answers UserId `AKIAIOSFODNN7EXAMPLE`, Arn
///   `arn:aws:sts::123456789012:user/moto`, whatever the key.
/// - CloudFormation works synchronously: a change set is `CREATE_COMPLETE` / `AVAILABLE`
///   (or `FAILED`) as soon as CreateChangeSet returns, and the stack is `CREATE_COMPLETE` /
///   `UPDATE_COMPLETE` as soon as ExecuteChangeSet returns; boto3's waiters pass at once.
///   Events are the stack's own only (REVIEW_IN_PROGRESS, CREATE_IN_PROGRESS,
///   CREATE_COMPLETE, UPDATE_IN_PROGRESS, UPDATE_COMPLETE), none per resource.
/// - A stack created through a change set never has Outputs (moto resolves them only for
///   CreateStack and UpdateStack); DescribeStackResources gives the physical ids (bucket
///   `STACK-bucket-RANDOM`, repository name, role `STACK-Role-RANDOM`).
/// - A stack never fails: no `*_FAILED` or `ROLLBACK_*` status exists. A resource that cannot
///   be created (bucket name taken, a bad `Fn::GetAtt`, an invalid repository name) makes
///   ExecuteChangeSet itself fail (400/409 with that service's error), and the stack stays
///   `REVIEW_IN_PROGRESS` (creation) or keeps its status (update). A template that is not
///   YAML or JSON, or has no `Resources`, is an HTTP 500 (which SDKs retry).
/// - An UPDATE change set with the stack's template text is `FAILED` with StatusReason "The
///   submitted information didn't contain changes. Submit different information to create a
///   change set." only when its Parameters equal those the stack was created with; with
///   parameters given as UsePreviousValue, CreateChangeSet fails with ValidationError "No
///   updates are to be performed."; with other parameters it is `CREATE_COMPLETE` with no
///   Changes. Changes carry Action, LogicalResourceId and ResourceType only.
/// - Templates are barely checked: unknown resource types and properties pass. S3
///   LifecycleConfiguration and PublicAccessBlockConfiguration and ECR LifecyclePolicy are
///   ignored; inline role policies are stored (as Python reprs, not JSON).
/// - Lambda takes `PackageType: Image` with any ImageUri (no ECR or registry check) and any
///   MemorySize, Timeout and Architectures; functions are `Active` / `Successful` at once.
///   GetFunction's Code is `RepositoryType: ECR`, the ImageUri as given, and a made-up
///   ResolvedImageUri. A CreateFunction without ImageUri or ZipFile is a 500 that leaves a
///   broken function behind, after which ListFunctions fails with 500 too.
/// - ECR: GetAuthorizationToken gives `AWS:123456789012-auth-token` (base64) for
///   `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`, which serves nothing; images
///   exist only when PutImage puts them (pushes go to an [`OciRegistry`]).
/// - `POST /moto-api/reset` empties every service but keeps `/moto-api/config`.
pub struct MotoServer {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl MotoServer {
    /// The account everything lives in.
    pub const ACCOUNT_ID: &'static str = "123456789012";
    pub const REGION: &'static str = "us-east-1";
    /// Any key is accepted; these make a log line recognisable.
    pub const ACCESS_KEY: &'static str = "LLAMATESTMOTOKEY";
    pub const SECRET_KEY: &'static str = "llama-test-moto-secret";

    /// moto on a free port, with Lambda's `use_docker` off; returns once it answers (about
    /// 0.3 s on an idle machine).
    pub fn start() -> MotoServer {
        let bin = moto_server();
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, port) = spawn_on_free_port(
            "moto_server",
            dir.path(),
            |port| {
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .current_dir(dir.path())
                    .env("PYTHONUNBUFFERED", "1");
                // MOTO_ACCOUNT_ID and friends would change what the tests see.
                remove_env_starting_with(&mut cmd, &["AWS_", "MOTO_"]);
                cmd
            },
            |_, output| output.contains("Address already in use"),
        );
        let moto = MotoServer { server, dir, port };
        moto.disable_lambda_docker();
        moto
    }

    /// Without this, creating a function works but invoking it fails with 500 (moto would
    /// run the image in Docker); with it, invoke returns the payload.
    fn disable_lambda_docker(&self) {
        let body = br#"{"lambda": {"use_docker": false}}"#;
        let resp = http(
            self.addr(),
            "POST",
            "/moto-api/config",
            &[("Content-Type", "application/json")],
            body,
            START_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("POST /moto-api/config failed: {e}; moto:\n{}", self.log()));
        assert!(
            resp.status / 100 == 2 && resp.text().contains(r#""lambda": {"use_docker": false}"#),
            "POST /moto-api/config answered {}: {}",
            resp.status,
            resp.text()
        );
    }

    /// `http://127.0.0.1:PORT`: every service, path-style S3 included.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    pub fn region(&self) -> &'static str {
        Self::REGION
    }

    pub fn account_id(&self) -> &'static str {
        Self::ACCOUNT_ID
    }

    /// What an AWS SDK (Rust's, boto3) needs to talk to moto and to nothing else: the
    /// endpoint for every service, static credentials (so the chain never reaches instance
    /// metadata, which is disabled anyway), the region, and profile files that do not exist
    /// (so a developer's `~/.aws` cannot add a profile, region or endpoint).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.to_string()),
            ("AWS_REGION", Self::REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            (
                "AWS_CONFIG_FILE",
                self.dir.path().join("no-aws/config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir
                    .path()
                    .join("no-aws/credentials")
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// Removes every `AWS_*` variable `cmd` would inherit (a profile, a session token, a
    /// service's own endpoint) and sets [`env`](MotoServer::env).
    pub fn apply_env(&self, cmd: &mut Command) {
        remove_env_starting_with(cmd, &["AWS_"]);
        cmd.envs(self.env());
    }

    /// moto's output so far: one line per request, and Python tracebacks for its 500s.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

// --- OCI registry: docker-registry --------------------------------------------------------------

/// Debian's docker-registry (distribution 2.8.2), `/usr/bin/docker-registry`. Panics saying
/// how to install it.
pub fn docker_registry() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from("/usr/bin/docker-registry");
        assert!(
            bin.is_file(),
            "{} not found (Debian's docker-registry): {INSTALL_HINT}",
            bin.display()
        );
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {} failed: {e}: {INSTALL_HINT}", bin.display()));
        // "/usr/bin/docker-registry github.com/docker/distribution 2.8.2+ds1": argv[0] first.
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let version = text.split_whitespace().last().unwrap_or("");
        assert!(
            version == DOCKER_REGISTRY_VERSION
                || version.starts_with(&format!("{DOCKER_REGISTRY_VERSION}+")),
            "{} reports {text:?}, but the tests are pinned to {DOCKER_REGISTRY_VERSION}: \
             {INSTALL_HINT}",
            bin.display()
        );
        bin
    })
}

/// A real OCI registry on a free loopback port: docker-registry (distribution 2.8.2) over
/// plain HTTP, without authentication, storing into a temporary directory, deletes enabled.
/// Image references are `HOST_PORT/REPOSITORY@sha256:...`; a client must be told to use
/// HTTP for [`host_port`](OciRegistry::host_port).
///
/// What it does (verified by hand): `GET /v2/` answers 200 `{}` with
/// `Docker-Distribution-Api-Version: registry/2.0`; a repository springs into being with
/// its first upload; monolithic uploads (POST `/v2/NAME/blobs/uploads/`, then PUT to the
/// absolute Location with `&digest=`) and OCI manifests by tag and by digest work, as do
/// `_catalog` and `tags/list`. `REGISTRY_*` variables would override the configuration and
/// are removed from its environment.
pub struct OciRegistry {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl OciRegistry {
    /// A registry with empty storage; returns once it listens (a few milliseconds).
    pub fn start() -> OciRegistry {
        let bin = docker_registry();
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let config = dir.path().join("config.yml");
        let (server, port) = spawn_on_free_port(
            "docker-registry",
            dir.path(),
            |port| {
                fs::write(&config, registry_config(port, &storage)).expect("write config.yml");
                let mut cmd = Command::new(bin);
                cmd.arg("serve").arg(&config).current_dir(dir.path());
                remove_env_starting_with(&mut cmd, &["REGISTRY_"]);
                cmd
            },
            |_, output| output.contains("address already in use"),
        );
        OciRegistry { server, dir, port }
    }

    /// `127.0.0.1:PORT`: the registry part of an image reference.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`: the API is below `/v2/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The storage root: blobs under `docker/registry/v2/blobs/sha256/`, repositories under
    /// `docker/registry/v2/repositories/`.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's output so far: one line per request.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The registry's configuration: loopback only, plain HTTP, filesystem storage in `storage`,
/// deletes enabled, no upload purging (a test never lives for its hours), and a fixed HTTP
/// secret (without one it logs a warning and makes one up).
fn registry_config(port: u16, storage: &Path) -> String {
    format!(
        r#"# Written by OciRegistry (crates/llama-cli/tests/util/harness.rs).
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{storage}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: llama-test
"#,
        storage = storage.display()
    )
}

// --- a minimal HTTP/1.1 client -----------------------------------------------------------------

/// An HTTP response: status, headers (names lower-cased) and the whole body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), with `headers` added as given;
/// waits at most `timeout` for each read. Enough for probing the test servers without an
/// HTTP client dependency.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;

    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|e| std::io::Error::other(format!("bad chunk size: {e}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}
