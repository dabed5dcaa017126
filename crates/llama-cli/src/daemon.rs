//! The per-user daemon behind llamacc: one per store directory, found through a Unix
//! socket (mode 0600) in that directory (or, when that path is too long, in a private
//! runtime directory checked to be this user's alone), kept single by a lock, exiting after
//! an idle timeout. Connections that send nothing for a few seconds are dropped. It holds what makes compiles cheap across processes: the hash cache, the
//! manifests, compiler identities, and the bound on concurrent compiles.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use llama_cc::{CompileService, Stats, StatsSnapshot};
use llama_core::{Backend, Config, HashCache, Store, keys};
use llama_exec::CachePolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::context::Context;
use llama_cc::client::{DaemonPaths, connect, llama_binary, request, spawn_and_wait};
use llama_cc::protocol::{self, PROTOCOL_VERSION, Request, Response};

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
        .with_context(|| format!("opening the store (dir = {})", config.dir().display()))?
        .with_compression(config.cache_compression());
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
        Request::Compile(request) => Response::Compiled(service.compile(request).await),
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
/// Whether a daemon answers for this store.
pub fn is_running(config: &Config) -> bool {
    let paths = DaemonPaths::new(&config.dir());
    matches!(
        request(&paths, &Request::Status),
        Ok(Response::Status { .. })
    )
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
    // The daemon reads its own configuration; a flag given here travels as its variable.
    let idle = format!("{}s", config.daemon_idle_timeout().as_secs());
    let env = [(keys::DAEMON_IDLE_TIMEOUT.env(), OsStr::new(&idle))];
    spawn_and_wait(&llama_binary(), &paths, &env, Duration::from_secs(10))
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
