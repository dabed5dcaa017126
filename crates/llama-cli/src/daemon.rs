//! The per-user daemon behind llamacc: one per store directory, found through a Unix
//! socket (mode 0600) in that directory (or, when that path is too long, in a private
//! runtime directory checked to be this user's alone), kept single by a lock, exiting after
//! an idle timeout. Connections that send nothing for a few seconds are dropped. It holds what makes compiles cheap across processes: the hash cache, the
//! manifests, compiler identities, and the bound on concurrent compiles.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use llama_cc::{CompileReply, CompileRequest, CompileService, Stats, StatsSnapshot};
use llama_core::{Backend, Config, HashCache, Store};
use llama_exec::CachePolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::context::Context;
use crate::protocol::{self, CompileMsg, PROTOCOL_VERSION, Request, Response};

/// Unix socket paths are limited to 108 bytes; beyond this the socket moves to a private
/// runtime directory.
const MAX_SOCKET_PATH: usize = 100;

/// How often the daemon saves its hash cache and counters.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// How long a client has to send a whole request, from connecting or from the previous
/// answer. llamacc sends at once; a connection idle longer is dropped, so it holds neither
/// a task nor the daemon's exit.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client has to take an answer. llamacc reads at once.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long compiles in flight may delay a stopping daemon's exit (their clients wait).
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// How long a new daemon waits for a stopping one to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(10);

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
pub fn spawn_and_wait(llama: &Path, paths: &DaemonPaths, wait: Duration) -> io::Result<()> {
    fs::create_dir_all(&paths.dir)?;
    let log = File::options().create(true).append(true).open(&paths.log)?;
    let mut cmd = std::process::Command::new(llama);
    cmd.args(["daemon", "run"])
        .env("LLAMA_DIR", &paths.dir)
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

/// Shared state of a running daemon.
struct State {
    started: Instant,
    last_activity: std::sync::Mutex<Instant>,
    /// Requests being handled (not connections: an idle one must not hold the daemon).
    busy: AtomicUsize,
    stop: Notify,
    stopping: AtomicBool,
    exe: Option<(PathBuf, u64, u64)>,
}

impl State {
    fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_activity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// A rebuilt or upgraded binary means this daemon's code is stale: finish and exit.
    fn exe_replaced(&self) -> bool {
        let Some((path, dev, ino)) = &self.exe else {
            return false;
        };
        match fs::metadata(path) {
            Ok(m) => m.dev() != *dev || m.ino() != *ino,
            Err(_) => true,
        }
    }

    fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Counts a request as in flight until the guard is dropped (also when its task is
    /// cancelled).
    fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Busy(self)
    }
}

struct Busy<'a>(&'a State);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// `llama daemon run`: serves in the foreground until idle, stopped, or replaced.
pub fn run(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    let socket = paths
        .socket
        .clone()
        .with_context(|| format!("placing the daemon's socket for {}", paths.dir.display()))?;
    let store = Store::open(config.dir(), config.cache_size())
        .with_context(|| format!("opening the store (dir = {})", config.dir().display()))?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&paths.lock)
        .with_context(|| format!("opening {}", paths.lock.display()))?;
    if !take_lock(&lock, &paths) {
        return Ok(0);
    }
    // The lock is ours, so a socket file left here is a dead daemon's.
    let _ = fs::remove_file(&socket);
    let hash_cache = Arc::new(HashCache::load(paths.dir.join("hashcache")));
    let stats = Arc::new(Stats::from_snapshot(load_stats(&paths.stats)));
    // SAFETY: umask(2) cannot fail; it is read by setting and restoring it at start-up,
    // before any other thread exists.
    let own_umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    };
    let service = CompileService::new(
        store,
        hash_cache.clone(),
        stats.clone(),
        config.jobs(),
        config.action_timeout(),
        own_umask,
    );
    // On a remote backend, misses compile there. A backend that is not set up stops the
    // daemon with the context's message (what to set), which llamacc prints before it
    // compiles directly: better than a daemon silently compiling everything here.
    let service = Arc::new(match config.backend() {
        Backend::Local => service,
        _ => {
            let context = Context::new(config, CachePolicy::default())?;
            service.with_remote(context.engine)
        }
    });
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| fs::metadata(&p).ok().map(|m| (p, m.dev(), m.ino())));
    let state = Arc::new(State {
        started: Instant::now(),
        last_activity: std::sync::Mutex::new(Instant::now()),
        busy: AtomicUsize::new(0),
        stop: Notify::new(),
        stopping: AtomicBool::new(false),
        exe,
    });
    let idle_timeout = config.daemon_idle_timeout();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let listener =
            UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", socket.display()))?;
        eprintln!(
            "llama daemon: pid {} serving {} (idle timeout {}s)",
            std::process::id(),
            socket.display(),
            idle_timeout.as_secs()
        );
        serve(
            listener,
            service.clone(),
            hash_cache.clone(),
            state.clone(),
            &paths,
            idle_timeout,
        )
        .await;
        anyhow::Ok(())
    });
    // Tasks still running past the drain are cancelled, not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = fs::remove_file(&socket);
    let _ = hash_cache.save();
    save_stats(&paths.stats, &service.snapshot());
    drop(lock);
    result.map(|()| 0)
}

async fn serve(
    listener: UnixListener,
    service: Arc<CompileService>,
    hash_cache: Arc<HashCache>,
    state: Arc<State>,
    paths: &DaemonPaths,
    idle_timeout: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_save = Instant::now();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let service = service.clone();
                let state = state.clone();
                let paths = paths.clone();
                state.touch();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, &service, &state, &paths).await
                        && e.kind() != io::ErrorKind::UnexpectedEof
                    {
                        eprintln!("llama daemon: connection: {e}");
                    }
                });
            }
            _ = state.stop.notified() => break,
            _ = tick.tick() => {
                if state.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let idle = state.busy.load(Ordering::SeqCst) == 0;
                if idle && state.idle_for() > idle_timeout {
                    eprintln!("llama daemon: idle for {}s, exiting", idle_timeout.as_secs());
                    break;
                }
                if last_save.elapsed() > SAVE_EVERY {
                    last_save = Instant::now();
                    let snapshot = service.snapshot();
                    let stats_path = paths.stats.clone();
                    let hash_cache = hash_cache.clone();
                    // Off the async threads; losing either to a crash only costs re-hashing
                    // and a few counts, but saving now keeps that small.
                    tokio::task::spawn_blocking(move || {
                        save_stats(&stats_path, &snapshot);
                        if let Err(e) = hash_cache.save() {
                            eprintln!("llama daemon: saving the hash cache: {e}");
                        }
                    });
                }
            }
        }
    }
    // No new connections: a client arriving now starts the next daemon at once (it waits
    // for our lock) instead of queueing on a listener nobody accepts from. The socket is
    // removed while the lock is still ours, so it cannot be the next daemon's.
    drop(listener);
    if let Ok(socket) = &paths.socket {
        let _ = fs::remove_file(socket);
    }
    // Let requests in flight finish (their clients are waiting), bounded; idle connections
    // are not waited for.
    let drain_until = Instant::now() + DRAIN_WAIT;
    while state.busy.load(Ordering::SeqCst) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve_connection(
    mut stream: tokio::net::UnixStream,
    service: &CompileService,
    state: &State,
    paths: &DaemonPaths,
) -> io::Result<()> {
    loop {
        let (version, payload) =
            match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no whole request within {}s; connection dropped",
                            READ_TIMEOUT.as_secs()
                        ),
                    ));
                }
            };
        let _busy = state.busy();
        let response = if version != PROTOCOL_VERSION {
            state.request_stop();
            Response::VersionMismatch {
                daemon: PROTOCOL_VERSION,
            }
        } else {
            handle(protocol::decode(&payload)?, service, state, paths).await
        };
        let mut frame = Vec::new();
        protocol::write_frame(&mut frame, &response)?;
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&frame))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client took no answer within {}s; connection dropped",
                        WRITE_TIMEOUT.as_secs()
                    ),
                )
            })??;
        if state.exe_replaced() {
            state.request_stop();
        }
    }
}

/// Reads one request frame: its version and payload, or `None` when the client hung up
/// between requests. The payload buffer grows with the bytes that arrive, so a header
/// claiming the limit and sending nothing costs nothing.
///
/// # Cancel safety
/// Not cancel safe: a frame partly read is lost. The caller drops the connection then.
async fn read_request(stream: &mut tokio::net::UnixStream) -> io::Result<Option<(u32, Vec<u8>)>> {
    let mut header = [0u8; protocol::HEADER_LEN];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (version, len) = protocol::parse_header::<Request>(&header)?;
    let mut payload = protocol::payload_buffer(len);
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await?;
    if payload.len() != len {
        return Err(protocol::short_payload(payload.len(), len));
    }
    Ok(Some((version, payload)))
}

/// Takes the daemon lock. Held by another daemon: one serving (nothing to do), one
/// starting (it serves in a moment), or one stopping (it accepts no more connections and
/// lets go when its last compiles are done): wait, bounded, for either.
fn take_lock(lock: &File, paths: &DaemonPaths) -> bool {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        if lock.try_lock().is_ok() {
            return true;
        }
        if connect(paths).is_ok() {
            eprintln!(
                "llama daemon: another daemon is already running for {}",
                paths.dir.display()
            );
            return false;
        }
        if Instant::now() > deadline {
            eprintln!(
                "llama daemon: {} is still held by another daemon that does not answer on {} after {}s; stop it (`llama daemon stop`) or wait for its compiles to finish",
                paths.lock.display(),
                paths.socket_display(),
                LOCK_WAIT.as_secs()
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn handle(
    req: Request,
    service: &CompileService,
    state: &State,
    paths: &DaemonPaths,
) -> Response {
    match req {
        Request::Compile(msg) => compile(msg, service).await,
        Request::Status => Response::Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: state.started.elapsed().as_secs(),
            compiles: service.stats().snapshot().compiles,
            socket: paths.socket_display(),
            dir: paths.dir.to_string_lossy().into_owned(),
        },
        Request::Stats => {
            Response::Stats(serde_json::to_string(&service.snapshot()).unwrap_or_default())
        }
        Request::ResetStats => {
            service.reset_stats();
            save_stats(&paths.stats, &service.snapshot());
            Response::Ok
        }
        Request::Shutdown => {
            state.request_stop();
            Response::Ok
        }
    }
}

async fn compile(msg: CompileMsg, service: &CompileService) -> Response {
    use std::os::unix::ffi::OsStringExt;
    let os = |b: Vec<u8>| std::ffi::OsString::from_vec(b);
    let request = CompileRequest {
        cxx: msg.cxx,
        args: msg.args.into_iter().map(os).collect(),
        cwd: PathBuf::from(os(msg.cwd)),
        env: msg.env.into_iter().map(|(k, v)| (os(k), os(v))).collect(),
        umask: msg.umask,
    };
    match service.compile(request).await {
        CompileReply::Done {
            exit_code,
            stdout,
            stderr,
            cached,
            notes,
        } => Response::Done {
            exit_code,
            stdout,
            stderr,
            cached,
            notes,
        },
        CompileReply::RunLocally {
            program,
            args,
            reason,
            notes,
        } => Response::RunLocally {
            program: program.into_vec(),
            args: args.into_iter().map(|a| a.into_vec()).collect(),
            reason,
            notes,
        },
    }
}

/// The saved counters (none yet: zero).
pub fn load_stats(path: &Path) -> StatsSnapshot {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_stats(path: &Path, snapshot: &StatsSnapshot) {
    let Some(dir) = path.parent() else { return };
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) else {
        return;
    };
    if serde_json::to_writer_pretty(&mut tmp, snapshot).is_ok() && tmp.flush().is_ok() {
        let _ = tmp.persist(path);
    }
}

/// `llama daemon start`.
pub fn start(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    if let Err(e) = &paths.socket {
        bail!(
            "cannot place the daemon's socket for {}: {e}",
            paths.dir.display()
        );
    }
    if let Ok(Response::Status { pid, .. }) = request(&paths, &Request::Status) {
        println!(
            "llama daemon: already running (pid {pid}) on {}",
            paths.socket_display()
        );
        return Ok(0);
    }
    spawn_and_wait(&llama_binary(), &paths, Duration::from_secs(10))
        .with_context(|| format!("starting the daemon for {}", paths.dir.display()))?;
    status(config)
}

/// `llama daemon stop`.
pub fn stop(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    match request(&paths, &Request::Shutdown) {
        Ok(_) => {
            // Gone when it lets go of the lock: its counters and hash cache are saved then.
            let deadline = Instant::now() + DRAIN_WAIT + Duration::from_secs(10);
            while !lock_is_free(&paths.lock) {
                if Instant::now() > deadline {
                    println!(
                        "llama daemon: asked to stop; it is still finishing compiles in flight (see {})",
                        paths.log.display()
                    );
                    return Ok(0);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("llama daemon: stopped");
            Ok(0)
        }
        Err(_) => {
            println!(
                "llama daemon: not running (no answer on {})",
                paths.socket_display()
            );
            Ok(0)
        }
    }
}

/// True when no daemon holds `lock` (a missing file: none ever ran).
fn lock_is_free(lock: &Path) -> bool {
    match File::open(lock) {
        // Dropping the file lets go of the lock at once.
        Ok(f) => f.try_lock().is_ok(),
        Err(_) => true,
    }
}

/// `llama daemon status`: exit 0 when running, 1 when not.
pub fn status(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    if let Err(e) = &paths.socket {
        println!("llama daemon: cannot run for {}: {e}", paths.dir.display());
        return Ok(1);
    }
    match request(&paths, &Request::Status) {
        Ok(Response::Status {
            pid,
            version,
            uptime_secs,
            compiles,
            socket,
            dir,
        }) => {
            println!("llama daemon: running");
            println!("  pid       {pid}");
            println!("  version   {version}");
            println!("  uptime    {uptime_secs}s");
            println!("  compiles  {compiles}");
            println!("  socket    {socket}");
            println!("  store     {dir}");
            Ok(0)
        }
        Ok(other) => bail!(
            "unexpected answer from the daemon on {}: {other:?}",
            paths.socket_display()
        ),
        Err(_) => {
            println!(
                "llama daemon: not running for {} (llamacc starts it on first use; or run `llama daemon start`)",
                paths.dir.display()
            );
            Ok(1)
        }
    }
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
