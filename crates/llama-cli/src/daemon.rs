//! The per-user daemon behind llamacc: one per store directory, found through a Unix
//! socket (mode 0600) in that directory, kept single by a lock, exiting after an idle
//! timeout. It holds what makes compiles cheap across processes: the hash cache, the
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

/// Unix socket paths are limited to 108 bytes; beyond this the socket moves to /tmp.
const MAX_SOCKET_PATH: usize = 100;

/// How often the daemon saves its hash cache and counters.
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// Where a daemon for a store directory keeps its files.
#[derive(Debug, Clone)]
pub struct DaemonPaths {
    /// The store directory.
    pub dir: PathBuf,
    /// The socket clients connect to.
    pub socket: PathBuf,
    /// Held (flock) by the running daemon.
    pub lock: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
    /// The counters, saved.
    pub stats: PathBuf,
}

impl DaemonPaths {
    /// The paths for the store at `dir`.
    pub fn new(dir: &Path) -> DaemonPaths {
        let mut socket = dir.join("daemon.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let digest = llama_core::Digest::of_bytes(dir.as_os_str().as_encoded_bytes());
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            socket = PathBuf::from(format!("/tmp/llama-{uid}/{}.sock", &digest.hex()[..16]));
        }
        DaemonPaths {
            dir: dir.to_path_buf(),
            socket,
            lock: dir.join("daemon.lock"),
            log: dir.join("daemon.log"),
            stats: dir.join("stats.json"),
        }
    }
}

/// Connects to a running daemon.
pub fn connect(paths: &DaemonPaths) -> io::Result<UnixStream> {
    UnixStream::connect(&paths.socket)
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
    active: AtomicUsize,
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
}

/// `llama daemon run`: serves in the foreground until idle, stopped, or replaced.
pub fn run(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    let store = Store::open(config.dir(), config.cache_size())
        .with_context(|| format!("opening the store (dir = {})", config.dir().display()))?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&paths.lock)
        .with_context(|| format!("opening {}", paths.lock.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "llama daemon: another daemon is already running for {}",
            paths.dir.display()
        );
        return Ok(0);
    }
    if let Some(parent) = paths.socket.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // The lock is ours, so a socket file left here is a dead daemon's.
    let _ = fs::remove_file(&paths.socket);
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
        active: AtomicUsize::new(0),
        stop: Notify::new(),
        stopping: AtomicBool::new(false),
        exe,
    });
    let idle_timeout = config.daemon_idle_timeout();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        let listener = UnixListener::bind(&paths.socket)
            .with_context(|| format!("binding {}", paths.socket.display()))?;
        fs::set_permissions(&paths.socket, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", paths.socket.display()))?;
        eprintln!(
            "llama daemon: pid {} serving {} (idle timeout {}s)",
            std::process::id(),
            paths.socket.display(),
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
    let _ = fs::remove_file(&paths.socket);
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
                state.active.fetch_add(1, Ordering::SeqCst);
                state.touch();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, &service, &state, &paths).await
                        && e.kind() != io::ErrorKind::UnexpectedEof
                    {
                        eprintln!("llama daemon: connection: {e}");
                    }
                    state.active.fetch_sub(1, Ordering::SeqCst);
                    state.touch();
                });
            }
            _ = state.stop.notified() => break,
            _ = tick.tick() => {
                if state.stopping.load(Ordering::SeqCst) {
                    break;
                }
                let idle = state.active.load(Ordering::SeqCst) == 0;
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
    // Let compiles in flight finish (their clients are waiting), bounded.
    let drain_until = Instant::now() + Duration::from_secs(60);
    while state.active.load(Ordering::SeqCst) > 0 && Instant::now() < drain_until {
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
        let mut header = [0u8; 12];
        match stream.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let (version, len) = protocol::parse_header(&header)?;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        let response = if version != PROTOCOL_VERSION {
            state.request_stop();
            Response::VersionMismatch {
                daemon: PROTOCOL_VERSION,
            }
        } else {
            match postcard::from_bytes::<Request>(&payload) {
                Ok(req) => handle(req, service, state, paths).await,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        };
        let mut frame = Vec::new();
        protocol::write_frame(&mut frame, &response)?;
        stream.write_all(&frame).await?;
        if state.exe_replaced() {
            state.request_stop();
        }
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
            socket: paths.socket.to_string_lossy().into_owned(),
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
    if let Ok(Response::Status { pid, .. }) = request(&paths, &Request::Status) {
        println!(
            "llama daemon: already running (pid {pid}) on {}",
            paths.socket.display()
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
            let deadline = Instant::now() + Duration::from_secs(70);
            while connect(&paths).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("llama daemon: stopped");
            Ok(0)
        }
        Err(_) => {
            println!(
                "llama daemon: not running (no answer on {})",
                paths.socket.display()
            );
            Ok(0)
        }
    }
}

/// `llama daemon status`: exit 0 when running, 1 when not.
pub fn status(config: &Config) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
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
            paths.socket.display()
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
