//! The servers the Lambda executor's tests talk to, started by the tests themselves on
//! loopback and stopped on drop (DESIGN.md, "Test harness"):
//!
//! - [`S3Server`]: s3s-fs 0.14.1, an S3 server that checks SigV4 signatures and stores
//!   each object as a plain file under [`S3Server::root`].
//! - [`LambdaEmulator`]: cargo-lambda 1.9.2 (`cargo-lambda lambda watch
//!   --only-lambda-apis`), the Lambda Invoke API and Runtime API on one port; invocations of
//!   the function `_` go to whatever runtime the test starts against
//!   [`LambdaEmulator::runtime_api`].
//! - [`minbase_root`]: a Debian bookworm `debootstrap --variant=minbase` root (libc, no
//!   compiler, no headers) to chroot into.
//!
//! `scripts/install-test-servers` installs all three at pinned versions into fixed paths;
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
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Server {
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
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
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
fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {START_TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether process `pid` holds a socket listening on 127.0.0.1:`port` (or 0.0.0.0), read from
/// /proc: connecting alone cannot tell our server from another process on the same port.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // "  0: 0100007F:24F8 00000000:0000 0A ... inode ...": local address, state 0A is LISTEN,
    // the inode is the tenth column.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (addr, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
            let (ip, p) = addr.split_once(':')?;
            let ours = (ip == "0100007F" || ip == "00000000")
                && u16::from_str_radix(p, 16).ok()? == port
                && *state == "0A";
            ours.then(|| format!("socket:[{inode}]"))
        })
        .collect();
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

        // The port is picked here, and another process may take it first: cargo-lambda then
        // exits (with status 0, silently), and the next attempt takes another port.
        for attempt in 1..=5 {
            let port = free_port();
            let mut cmd = Command::new(bin);
            cmd.args(["lambda", "watch", "--only-lambda-apis"])
                .args(["--invoke-address", "127.0.0.1"])
                .args(["--invoke-port", &port.to_string()])
                .args(["--timeout", &seconds.to_string()])
                .current_dir(dir.path());
            for (key, _) in std::env::vars_os() {
                let key_str = key.to_string_lossy();
                if key_str.starts_with("AWS_") || key_str.starts_with("CARGO_LAMBDA") {
                    cmd.env_remove(&key);
                }
            }
            let log = dir.path().join(format!("cargo-lambda.{attempt}.log"));
            let mut server = Server::spawn("cargo-lambda", cmd, &log);
            let listening = wait_for("cargo-lambda to listen", || {
                if let Some(status) = server.exited() {
                    return Some(Err(status));
                }
                listens_on(server.pid(), port).then_some(Ok(()))
            });
            match listening {
                Ok(()) => return LambdaEmulator { server, dir, port },
                Err(status) if status.success() && attempt < 5 => continue,
                Err(status) => panic!(
                    "cargo-lambda exited ({status}) while starting on port {port}; its output:\n{}",
                    server.log()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
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
