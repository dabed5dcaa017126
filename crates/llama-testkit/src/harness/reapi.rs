//! BuildGrid with its PostgreSQL scheduler and the test worker: a REAPI v2 server.

use super::*;

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

/// The test worker (crates/llama-testkit/reapi-worker/worker.py): a Bots API client that runs leases on
/// this host. It lives beside the tests that start it.
fn reapi_worker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reapi-worker/worker.py")
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
        r#"# Written by ReapiServer (crates/llama-testkit).
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
/// (crates/llama-testkit/reapi-worker/worker.py) running `workers` actions at a time on this host. One
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
