//! Where traces are kept: `$LLAMA_DIR/traces/BUILD.jsonl`, one JSON action per line,
//! appended by whoever ran the action (the daemon for llamacc, `llama xargs` and `llama
//! invoke` for theirs). Bounded: a build's file stops growing at [`Limits::build_bytes`],
//! and the oldest builds are dropped beyond [`Limits::builds`]. Read back as hostile: a
//! line too long or not an action is skipped and counted, never trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::record::Action;

/// How much is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Builds kept; the oldest beyond this are dropped when a new one starts.
    pub builds: usize,
    /// Bytes of one build's file; actions beyond are not recorded.
    pub build_bytes: u64,
    /// Bytes of one line read back; longer ones are skipped.
    pub line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            builds: 64,
            build_bytes: 64 << 20,
            line_bytes: 64 << 10,
        }
    }
}

/// Why a trace could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// No build of that name.
    #[error("no trace of build {0:?} (`llama trace list` shows the builds kept)")]
    NoSuchBuild(String),
    /// No build traced yet.
    #[error("no build has been traced yet in {0}")]
    NoBuilds(PathBuf),
    /// Reading or writing the trace directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// A build's trace, as read back.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The build's name.
    pub build: String,
    /// Its actions, in the order they finished.
    pub actions: Vec<Action>,
    /// Lines skipped: too long, not an action, or inconsistent.
    pub skipped: usize,
}

/// One build kept, for `llama trace list`.
#[derive(Debug, Clone)]
pub struct BuildFile {
    /// Its name.
    pub build: String,
    /// When it was last written.
    pub modified: SystemTime,
    /// Its size.
    pub bytes: u64,
}

/// The trace directory.
#[derive(Debug)]
pub struct TraceLog {
    dir: PathBuf,
    limits: Limits,
    /// Serialises appends from this process (one `write` per line also keeps other
    /// processes' lines whole: `O_APPEND`).
    lock: Mutex<()>,
}

/// A build name that is safe as a file name: letters, digits, `.`, `_`, `-`, at most 64;
/// anything else becomes `_`. An empty or dot-only name becomes `build`.
pub fn build_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.chars().all(|c| c == '.') {
        "build".into()
    } else {
        name
    }
}

impl TraceLog {
    /// The traces of the store in `llama_dir`.
    pub fn new(llama_dir: &Path, limits: Limits) -> TraceLog {
        TraceLog {
            dir: llama_dir.join("traces"),
            limits,
            lock: Mutex::new(()),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, build: &str) -> PathBuf {
        self.dir.join(format!("{}.jsonl", build_name(build)))
    }

    /// Appends `action` to `build`'s trace. A full build drops the action silently (the
    /// trace says how many it kept); a new build drops the oldest beyond the limit.
    pub fn append(&self, build: &str, action: &Action) -> Result<(), TraceError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TraceError::Io { path, source }
        };
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err(&self.dir)(e));
            }
            _ => {}
        }
        let path = self.file(build);
        let existing = fs::symlink_metadata(&path).ok();
        if existing
            .as_ref()
            .is_some_and(|m| !m.file_type().is_file() || m.len() >= self.limits.build_bytes)
        {
            return Ok(());
        }
        let mut line = serde_json::to_vec(action).map_err(|e| io_err(&path)(e.into()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(&line).map_err(io_err(&path))?;
        if existing.is_none() {
            self.prune(build);
        }
        Ok(())
    }

    /// Drops the oldest builds beyond the limit, never `keep`.
    fn prune(&self, keep: &str) {
        let Ok(mut builds) = self.builds() else {
            return;
        };
        let keep = build_name(keep);
        builds.retain(|b| b.build != keep);
        let excess = (builds.len() + 1).saturating_sub(self.limits.builds);
        for old in builds.iter().take(excess) {
            let _ = fs::remove_file(self.file(&old.build));
        }
    }

    /// The builds kept, oldest first.
    pub fn builds(&self) -> Result<Vec<BuildFile>, TraceError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(TraceError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut builds: Vec<BuildFile> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let build = name.strip_suffix(".jsonl")?.to_string();
                let meta = entry.metadata().ok().filter(|m| m.is_file())?;
                Some(BuildFile {
                    build,
                    modified: meta.modified().ok()?,
                    bytes: meta.len(),
                })
            })
            .collect();
        builds.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.build.cmp(&b.build)));
        Ok(builds)
    }

    /// The newest build's name.
    pub fn latest(&self) -> Result<String, TraceError> {
        self.builds()?
            .pop()
            .map(|b| b.build)
            .ok_or_else(|| TraceError::NoBuilds(self.dir.clone()))
    }

    /// Reads `build`'s trace back.
    pub fn load(&self, build: &str) -> Result<Loaded, TraceError> {
        let path = self.file(build);
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => TraceError::NoSuchBuild(build.to_string()),
                _ => TraceError::Io {
                    path: path.clone(),
                    source,
                },
            })?;
        let mut loaded = Loaded {
            build: build_name(build),
            ..Loaded::default()
        };
        read_lines(file, self.limits, &mut loaded).map_err(|source| TraceError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(loaded)
    }
}

/// Traces waiting for a [`Writer`]; beyond this, traces are dropped rather than the
/// action made to wait.
const QUEUE: usize = 4096;

/// Appends actions to their build's trace on a thread of its own, so that no action waits
/// for the trace file. Dropping it writes what is queued.
#[derive(Debug)]
pub struct Writer {
    queue: Option<std::sync::mpsc::SyncSender<(String, Action)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// A writer into `log`.
    pub fn new(log: TraceLog) -> Writer {
        Writer::with_copy(log, None)
    }

    /// A writer into `log` that also appends each action, as a JSON line, to `copy` (the
    /// file of the original's `-trace FILE`).
    pub fn with_copy(log: TraceLog, mut copy: Option<File>) -> Writer {
        let (queue, received) = std::sync::mpsc::sync_channel::<(String, Action)>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("llama-trace".into())
            .spawn(move || {
                let mut failed = false;
                for (build, action) in received {
                    let copied = copy.as_mut().map_or(Ok(()), |f| {
                        let mut line = serde_json::to_vec(&action).unwrap_or_default();
                        line.push(b'\n');
                        f.write_all(&line)
                    });
                    let logged = log.append(&build, &action).map_err(|e| e.to_string());
                    if let Err(e) = logged.and(copied.map_err(|e| e.to_string()))
                        && !std::mem::replace(&mut failed, true)
                    {
                        eprintln!("llama: warning: cannot write the build trace: {e}");
                    }
                }
            })
            .ok();
        Writer {
            queue: thread.is_some().then_some(queue),
            thread,
        }
    }

    /// Queues `action` for `build`'s trace; dropped if the queue is full.
    pub fn send(&self, build: &str, action: Action) {
        if let Some(queue) = &self.queue {
            let _ = queue.try_send((build.to_string(), action));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads at most `build_bytes` (and a line's worth) of `file`, line by line.
fn read_lines(file: File, limits: Limits, loaded: &mut Loaded) -> io::Result<()> {
    let mut reader = BufReader::new(file.take(limits.build_bytes + limits.line_bytes as u64));
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(limits.line_bytes as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') && n > limits.line_bytes {
            // Too long: skip to the end of it.
            loaded.skipped += 1;
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest)?;
            continue;
        }
        match serde_json::from_slice::<Action>(&line) {
            Ok(action) if action.is_consistent() => loaded.actions.push(action),
            _ => loaded.skipped += 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{Kind, Status};

    pub(crate) fn action(label: &str, arrived_us: u64, finished_us: u64) -> Action {
        Action::one_run(
            Kind::Compile,
            label.into(),
            arrived_us,
            finished_us,
            Status::Miss,
        )
    }

    #[test]
    fn names_are_file_names() {
        assert_eq!(build_name("lua-1.2_x"), "lua-1.2_x");
        assert_eq!(build_name("../etc/passwd"), ".._etc_passwd");
        assert_eq!(build_name(".."), "build");
        assert_eq!(build_name(""), "build");
        assert_eq!(build_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn appended_actions_read_back_and_damage_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = TraceLog::new(dir.path(), Limits::default());
        log.append("b", &action("a.c", 10, 20)).unwrap();
        log.append("b", &action("b.c", 15, 30)).unwrap();
        let path = log.dir().join("b.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"not json\n{\"kind\":\"compile\"}\n").unwrap();
        f.write_all(&serde_json::to_vec(&action("bad", 30, 20)).unwrap())
            .unwrap();
        f.write_all(b"\n").unwrap();
        let loaded = log.load("b").unwrap();
        assert_eq!(loaded.actions.len(), 2);
        assert_eq!(loaded.skipped, 3);
        assert_eq!(log.latest().unwrap(), "b");
        assert!(matches!(log.load("nope"), Err(TraceError::NoSuchBuild(_))));
    }

    #[test]
    fn limits_bound_builds_and_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            builds: 2,
            build_bytes: 300,
            line_bytes: 1000,
        };
        let log = TraceLog::new(dir.path(), limits);
        for i in 0..10 {
            log.append("big", &action(&format!("{i}.c"), 1, 2)).unwrap();
        }
        let kept = log.load("big").unwrap().actions.len();
        assert!((1..10).contains(&kept), "{kept}");
        for b in ["b1", "b2", "b3"] {
            std::thread::sleep(std::time::Duration::from_millis(20));
            log.append(b, &action("x.c", 1, 2)).unwrap();
        }
        let names: Vec<String> = log.builds().unwrap().into_iter().map(|b| b.build).collect();
        assert_eq!(names, ["b2", "b3"]);
    }

    #[test]
    fn a_link_in_place_of_a_trace_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let log = TraceLog::new(dir.path(), Limits::default());
        fs::create_dir_all(log.dir()).unwrap();
        let target = dir.path().join("victim");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, log.dir().join("b.jsonl")).unwrap();
        log.append("b", &action("a.c", 1, 2)).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert!(log.load("b").is_err());
    }
}
