//! The local executor: runs each action on this machine, in its own scratch directory
//! materialised from the store, a bounded number at a time.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use llama_core::{BlobSource, Digest, PreparedAction, Store, StoreError, protobuf, reapi};
use prost::Message;
use tokio::sync::Semaphore;

use crate::executor::{ExecError, ExecOutcome, Executor, Termination};
use crate::fsutil::{Layout, populate_tree, remove_tree};
use crate::process::{GroupKiller, Spawn, spawn};
use crate::safepath::{create_dirs_beneath, resolve_beneath, unsafe_path};

/// Runs actions as child processes of this one.
pub struct LocalExecutor {
    store: Store,
    permits: Arc<Semaphore>,
    slots: Arc<SlotPool>,
    default_timeout: Duration,
    link_inputs: bool,
}

impl LocalExecutor {
    /// An executor running at most `jobs` actions at once, each limited to
    /// `default_timeout` unless the action sets its own.
    ///
    /// Inputs are hard links to the store's read-only blobs (checked after each action;
    /// see `llama_core::LinkedInput`), unless this process runs as root: permission bits do
    /// not stop root, and a command writing to its input would change it under the
    /// actions running beside it. Then each action gets copies.
    pub fn new(store: Store, jobs: usize, default_timeout: Duration) -> LocalExecutor {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        LocalExecutor {
            slots: Arc::new(SlotPool::new(store.work_dir())),
            store,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            default_timeout,
            link_inputs: !root,
        }
    }

    /// Lays inputs out by link (`true`) or by copy, whoever runs it. Linking as root is
    /// safe only where one action runs at a time (the Lambda runtime): the check after the
    /// action then catches a write before any other action could see it.
    pub fn with_linked_inputs(mut self, link: bool) -> LocalExecutor {
        self.link_inputs = link;
        self
    }

    /// This executor with another default timeout, sharing its limit and its scratch
    /// directories (a server that takes the timeout per request keeps one executor).
    pub fn with_default_timeout(&self, default_timeout: Duration) -> LocalExecutor {
        LocalExecutor {
            store: self.store.clone(),
            permits: self.permits.clone(),
            slots: self.slots.clone(),
            default_timeout,
            link_inputs: self.link_inputs,
        }
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn execute(&self, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ExecError::Task(e.to_string()))?;
        let store = self.store.clone();
        let prepared = action.clone();
        let slots = self.slots.clone();
        let link = self.link_inputs;
        let worker_start = SystemTime::now();
        // A blob found corrupt while materialising is deleted by the store; storing the
        // inputs again from their sources and retrying once repairs it. Linking finds a
        // missing blob by itself: the inputs are stored first only when one was.
        let (slot, layout) = blocking(move || {
            let slot = slots.take()?;
            let mut attempt = 0;
            loop {
                if !link || attempt > 0 {
                    ensure_inputs(&store, &prepared)?;
                }
                let mut layout = match link {
                    true => Layout::Link(Vec::new()),
                    false => Layout::Copy,
                };
                match slot.prepare(&store, &prepared, &mut layout) {
                    Err(ExecError::Store(StoreError::Corrupt { path, .. })) if attempt == 0 => {
                        tracing::warn!(
                            "input blob {} was corrupt; stored it again",
                            path.display()
                        );
                        attempt += 1;
                    }
                    Err(ExecError::Store(StoreError::Missing { .. })) if link && attempt == 0 => {
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                    Ok(()) => return Ok((slot, layout)),
                }
            }
        })
        .await?;
        let timeout = action.timeout().unwrap_or(self.default_timeout);
        let started = SystemTime::now();
        let termination = slot.run(&action.command, timeout).await;
        let completed = SystemTime::now();
        let store = self.store.clone();
        let command = action.command.clone();
        let (outcome, slot) = blocking(move || {
            // Checked whatever became of the run: a command that failed may still have
            // written through a link.
            if let Layout::Link(linked) = &layout {
                store.check_linked(linked);
            }
            let collected = termination.and_then(|t| Ok((t, slot.collect(&store, &command, t)?)));
            let (termination, mut result) = match collected {
                Ok(collected) => collected,
                Err(e) => return Ok((Err(e), slot)),
            };
            result.execution_metadata = Some(reapi::ExecutedActionMetadata {
                worker: "local".into(),
                worker_start_timestamp: Some(timestamp(worker_start)),
                input_fetch_start_timestamp: Some(timestamp(worker_start)),
                input_fetch_completed_timestamp: Some(timestamp(started)),
                execution_start_timestamp: Some(timestamp(started)),
                execution_completed_timestamp: Some(timestamp(completed)),
                output_upload_start_timestamp: Some(timestamp(completed)),
                output_upload_completed_timestamp: Some(timestamp(SystemTime::now())),
                worker_completed_timestamp: Some(timestamp(SystemTime::now())),
                ..Default::default()
            });
            Ok((
                Ok(ExecOutcome {
                    result,
                    termination,
                    cached: false,
                }),
                slot,
            ))
        })
        .await?;
        // Emptied after the answer, not before the next action: removing a compile's
        // hundreds of links is most of what an action costs beside its command. The slot
        // goes back to the pool once empty; an action starting sooner takes another.
        tokio::task::spawn_blocking(move || slot.clear());
        outcome
    }
}

/// Scratch directories reused from one action to the next.
///
/// Creating and deleting a directory and two files per action is what made small actions
/// slow (ext4 searches its recently freed inodes on every create). Instead each process
/// keeps one directory per concurrent action under `work/run-PID-*/` and empties it before
/// reuse; the run directory goes when the executor is dropped, and run directories of
/// processes that died are swept away by the next executor.
struct SlotPool {
    work_dir: PathBuf,
    inner: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    run_dir: Option<RunDir>,
    free: Vec<PathBuf>,
    created: usize,
}

/// This process's run directory, locked for as long as it exists.
///
/// Liveness is the lock, not the pid in the name: a pid says nothing across PID namespaces
/// (a process in another namespace sharing the store has a pid this one cannot see).
struct RunDir {
    // Declared first so it is removed while the lock is still held.
    dir: tempfile::TempDir,
    _lock: File,
}

/// The file inside each run directory that its owner holds an exclusive flock on.
const RUN_LOCK: &str = "lock";

/// A run directory without a lock file (one being created, or left by an older llama) is
/// swept only once it is this old.
const UNLOCKED_RUN_GRACE: Duration = Duration::from_secs(3600);

impl RunDir {
    fn create(work_dir: &Path) -> Result<RunDir, ExecError> {
        let scratch = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ExecError::Scratch { path, error }
        };
        loop {
            let dir = tempfile::Builder::new()
                .prefix(&format!("run-{}-", std::process::id()))
                .tempdir_in(work_dir)
                .map_err(scratch(work_dir))?;
            let lock_path = dir.path().join(RUN_LOCK);
            let lock = File::create(&lock_path).map_err(scratch(&lock_path))?;
            flock(&lock, libc::LOCK_EX).map_err(scratch(&lock_path))?;
            // A sweeper may have taken the lock between create and flock and removed the
            // directory; then the lock is on an unlinked file and the directory is gone.
            if link_count(&lock).map_err(scratch(&lock_path))? > 0 {
                return Ok(RunDir { dir, _lock: lock });
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock(2) on a descriptor this File owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn link_count(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.nlink())
}

impl SlotPool {
    fn new(work_dir: PathBuf) -> SlotPool {
        SlotPool {
            work_dir,
            inner: Mutex::new(PoolState::default()),
        }
    }

    fn take(self: &Arc<Self>) -> Result<Slot, ExecError> {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = state.free.pop() {
            return Ok(Slot {
                path,
                pool: self.clone(),
            });
        }
        let run_dir = match &state.run_dir {
            Some(dir) => dir.path().to_path_buf(),
            None => {
                sweep_stale_runs(&self.work_dir);
                let dir = RunDir::create(&self.work_dir)?;
                let path = dir.path().to_path_buf();
                state.run_dir = Some(dir);
                path
            }
        };
        let path = run_dir.join(format!("slot-{}", state.created));
        state.created += 1;
        fs::create_dir(&path).map_err(|error| ExecError::Scratch {
            path: path.clone(),
            error,
        })?;
        Ok(Slot {
            path,
            pool: self.clone(),
        })
    }
}

/// Removes the `run-*` directories no live executor holds: those whose lock can be taken
/// (their owner died, whatever namespace it ran in), and those that have no lock file and
/// are older than [`UNLOCKED_RUN_GRACE`].
fn sweep_stale_runs(work_dir: &Path) {
    let Ok(entries) = fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("run-") {
            continue;
        }
        let dir = entry.path();
        match File::open(dir.join(RUN_LOCK)) {
            Ok(lock) => {
                if flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                    // Removed while still locked, so a creator racing for this lock sees
                    // its file unlinked and starts afresh.
                    let _ = remove_tree(&dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let old = fs::symlink_metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > UNLOCKED_RUN_GRACE);
                if old {
                    let _ = remove_tree(&dir);
                }
            }
            Err(_) => {}
        }
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Task(e.to_string()))?
}

fn timestamp(t: SystemTime) -> protobuf::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    protobuf::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Puts every input blob the store lacks, from the sources the front end gave.
fn ensure_inputs(store: &Store, action: &PreparedAction) -> Result<(), ExecError> {
    let sources = action
        .input
        .files
        .iter()
        .chain(action.stdin.iter().map(|(d, s)| (d, s)));
    for (digest, error) in sources {
        if store.contains(digest) {
            continue;
        }
        let stored = match error {
            BlobSource::File(path) => store.put_file(path, Some(*digest))?,
            BlobSource::Bytes(data) => store.put_bytes(data)?,
        };
        debug_assert_eq!(stored, *digest);
    }
    Ok(())
}

/// One action's directory, borrowed from the pool: `root/` is the input tree and the
/// command's world; `stdout`, `stderr` and `stdin` sit beside it so they never appear among
/// the inputs or outputs.
struct Slot {
    path: PathBuf,
    pool: Arc<SlotPool>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Emptied before its next use, so a slot abandoned mid-action is still safe to reuse.
        let mut state = self.pool.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.free.push(std::mem::take(&mut self.path));
    }
}

impl Slot {
    /// Empties the slot and lays out the action's inputs in it.
    fn prepare(
        &self,
        store: &Store,
        action: &PreparedAction,
        layout: &mut Layout,
    ) -> Result<(), ExecError> {
        let root = self.root();
        empty_dir(&root)?;
        populate_tree(store, &action.input, &action.input.root, &root, layout)?;
        // The inputs may hold symlinks to anywhere: directories are made only through real
        // directories of the action's own tree.
        let wd = &action.command.working_directory;
        let workdir = create_dirs_beneath(&root, "working directory", wd, true)
            .map_err(path_err(root.join(wd)))?;
        for output in &action.command.output_paths {
            create_dirs_beneath(&workdir, "output path", output, false)
                .map_err(path_err(workdir.join(output)))?;
        }
        let stdin = self.stream_path("stdin");
        let _ = fs::remove_file(&stdin);
        if let Some(digest) = action.stdin_digest() {
            store.materialize(&digest, &stdin, false)?;
        }
        Ok(())
    }

    fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// Empties the slot; what cannot be removed now is removed before its next use.
    fn clear(self) {
        if let Err(e) = empty_dir(&self.root()) {
            tracing::debug!("emptying {}: {e}", self.path.display());
        }
    }

    fn stream_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Runs the command with its own environment only, in its own process group, so the
    /// whole group can be killed on timeout or cancellation.
    async fn run(
        &self,
        command: &reapi::Command,
        timeout: Duration,
    ) -> Result<Termination, ExecError> {
        let scratch_err = |path: PathBuf| move |error| ExecError::Scratch { path, error };
        let Some((program, args)) = command.arguments.split_first() else {
            return Err(ExecError::InvalidAction(
                "the command has no arguments".into(),
            ));
        };
        // Arguments that are not UTF-8 arrive escaped; the command gets their exact bytes.
        let decoded = |arg: &String| {
            llama_core::decode_os(arg)
                .map_err(|e| ExecError::InvalidAction(format!("command argument: {e}")))
        };
        let program_bytes = decoded(program)?;
        let args = args.iter().map(decoded).collect::<Result<Vec<_>, _>>()?;
        let stdout_path = self.stream_path("stdout");
        let stderr_path = self.stream_path("stderr");
        let stdout = File::create(&stdout_path).map_err(scratch_err(stdout_path.clone()))?;
        let stderr = File::create(&stderr_path).map_err(scratch_err(stderr_path.clone()))?;
        let stdin_path = self.stream_path("stdin");
        let stdin = match File::open(&stdin_path) {
            Ok(file) => Stdio::from(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Stdio::null(),
            Err(error) => return Err(scratch_err(stdin_path)(error)),
        };
        let wd = &command.working_directory;
        let cwd = resolve_beneath(&self.root(), "working directory", wd, true)
            .map_err(path_err(self.root().join(wd)))?
            .ok_or_else(|| ExecError::Scratch {
                path: self.root().join(wd),
                error: io::Error::new(io::ErrorKind::NotFound, "the working directory is gone"),
            })?;
        let path_env = command
            .environment_variables
            .iter()
            .find(|v| v.name == "PATH")
            .map(|v| std::ffi::OsStr::new(v.value.as_str()));
        // Resolving the program here, against the action's own PATH, lets std spawn with
        // posix_spawn rather than fork: std must fork to search a PATH other than ours.
        let Some(resolved) = find_program(&program_bytes, path_env, &cwd) else {
            return self.spawn_failure(
                program,
                &io::Error::new(io::ErrorKind::NotFound, "not found in the action's PATH"),
            );
        };
        let spawned = spawn(Spawn {
            program: &resolved,
            arg0: Some(&program_bytes),
            args: &args,
            env: command
                .environment_variables
                .iter()
                .map(|v| (OsStr::new(&v.name), OsStr::new(&v.value)))
                .collect(),
            cwd: &cwd,
            stdin,
            stdout: Stdio::from(stdout),
            stderr: Stdio::from(stderr),
            umask: None,
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return self.spawn_failure(program, &e),
        };
        // Whatever the command left running goes with it: when it ends, times out, or this
        // future is dropped (a cancelled job).
        let mut group = GroupKiller::new(child.id());
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        if waited.is_ok() {
            group.reaped();
        }
        drop(group);
        match waited {
            Ok(status) => {
                let status = status.map_err(scratch_err(self.root()))?;
                Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => Termination::Exited(code),
                    (None, Some(sig)) => Termination::Signaled(sig),
                    (None, None) => Termination::Exited(-1),
                })
            }
            Err(_elapsed) => {
                let _ = child.wait().await;
                Ok(Termination::TimedOut(timeout))
            }
        }
    }

    /// A program that cannot be started gets the status a shell would give (127 not found,
    /// 126 not executable) and a message on its stderr, like any other failed command.
    fn spawn_failure(&self, program: &str, err: &io::Error) -> Result<Termination, ExecError> {
        let (code, what) = match err.kind() {
            io::ErrorKind::NotFound => (127, "command not found"),
            io::ErrorKind::PermissionDenied => (126, "permission denied"),
            _ => (126, "cannot execute"),
        };
        let path = self.stream_path("stderr");
        let program = llama_core::display_name(program);
        fs::write(&path, format!("llama: {program}: {what} ({err})\n"))
            .map_err(|error| ExecError::Scratch { path, error })?;
        Ok(Termination::Exited(code))
    }

    /// Moves outputs, stdout and stderr into the store and describes them.
    fn collect(
        &self,
        store: &Store,
        command: &reapi::Command,
        termination: Termination,
    ) -> Result<reapi::ActionResult, ExecError> {
        let mut result = reapi::ActionResult {
            exit_code: termination.shell_status(),
            stdout_digest: Some(self.adopt_stream(store, "stdout")?.to_proto()),
            stderr_digest: Some(self.adopt_stream(store, "stderr")?.to_proto()),
            ..Default::default()
        };
        let wd = &command.working_directory;
        let Some(workdir) = resolve_beneath(&self.root(), "working directory", wd, true)
            .map_err(path_err(self.root().join(wd)))?
        else {
            return Ok(result);
        };
        for output in &command.output_paths {
            // A directory on the way may have been replaced by a symlink by the command:
            // nothing is followed, so nothing outside the slot is chmodded or linked.
            let Some(path) = resolve_beneath(&workdir, "output path", output, false)
                .map_err(path_err(workdir.join(output)))?
            else {
                continue;
            };
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Not produced: absent from the result, as REAPI specifies.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(ExecError::Scratch { path, error }),
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|error| ExecError::Scratch {
                    path: path.clone(),
                    error,
                })?;
                result.output_symlinks.push(reapi::OutputSymlink {
                    path: output.clone(),
                    target: llama_core::encode_os(target.as_os_str()).into_owned(),
                    node_properties: None,
                });
            } else if ft.is_dir() {
                let tree = collect_tree(store, &path)?;
                let tree_digest = store.put_message(&tree)?;
                result.output_directories.push(reapi::OutputDirectory {
                    path: output.clone(),
                    tree_digest: Some(tree_digest.to_proto()),
                    is_topologically_sorted: false,
                    root_directory_digest: tree
                        .root
                        .as_ref()
                        .map(|r| Digest::of_message(r).to_proto()),
                });
            } else if ft.is_file() {
                result.output_files.push(reapi::OutputFile {
                    path: output.clone(),
                    digest: Some(adopt_owned(store, &path, &meta)?.to_proto()),
                    is_executable: is_executable(&meta),
                    contents: Vec::new(),
                    node_properties: None,
                });
            }
        }
        Ok(result)
    }

    /// Stores a captured stream. The file is reused by the next action (truncated, same
    /// inode), so when it holds a new blob the store takes the inode over and the slot's
    /// name for it is removed.
    fn adopt_stream(&self, store: &Store, name: &str) -> Result<Digest, ExecError> {
        let path = self.stream_path(name);
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |error| ExecError::Scratch { path, error }
        };
        let file = File::open(&path).map_err(err(&path))?;
        let digest = Digest::of_reader(file).map_err(err(&path))?;
        if !store.contains(&digest) {
            store.adopt_file(&path)?;
            fs::remove_file(&path).map_err(err(&path))?;
        }
        Ok(digest)
    }
}

/// Makes `dir` an empty, writable directory, whatever the last action left in it.
fn empty_dir(dir: &Path) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |error| ExecError::Scratch {
        path: dir.to_path_buf(),
        error,
    };
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            if meta.permissions().mode() & 0o700 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(err)?;
            }
            for entry in fs::read_dir(dir).map_err(err)? {
                let path = entry.map_err(err)?.path();
                let removed = match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => remove_tree(&path),
                    _ => fs::remove_file(&path),
                };
                removed.map_err(|error| ExecError::Scratch { path, error })?;
            }
            Ok(())
        }
        Ok(_) => {
            let _ = fs::remove_file(dir);
            fs::create_dir(dir).map_err(err)
        }
        Err(_) => fs::create_dir_all(dir).map_err(err),
    }
}

/// Finds `program` as `execvp` would, but in the given `PATH` (an action's or a client's,
/// not this process's) and relative to `cwd`: a name with a slash is taken as a path, a
/// bare name is looked up in each `PATH` directory (empty means `cwd`; no `PATH` means
/// execvp's default `/bin:/usr/bin`). Shared by everything that starts programs for others,
/// so they all find the same one.
pub fn find_program(
    program: &std::ffi::OsStr,
    path_env: Option<&std::ffi::OsStr>,
    cwd: &Path,
) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    if program.is_empty() {
        return None;
    }
    if program.as_bytes().contains(&b'/') {
        let p = cwd.join(program);
        return p.is_file().then_some(p);
    }
    let search = path_env.unwrap_or(std::ffi::OsStr::new("/bin:/usr/bin"));
    std::env::split_paths(search).find_map(|dir| {
        let candidate = cwd.join(dir).join(program);
        let meta = fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

/// Stores an output file. A file with other links may be an outside file the command
/// hard-linked into its directory: it is copied, never made read-only and linked.
fn adopt_owned(store: &Store, path: &Path, meta: &fs::Metadata) -> Result<Digest, ExecError> {
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() > 1 {
        Ok(store.put_file(path, None)?)
    } else {
        Ok(store.adopt_file(path)?)
    }
}

/// Maps an error of [`crate::safepath`]: a refused path is the action's fault, anything
/// else the scratch directory's.
fn path_err(path: PathBuf) -> impl FnOnce(io::Error) -> ExecError {
    move |error| match unsafe_path(&error) {
        Some(refused) => ExecError::InvalidAction(refused.to_string()),
        None => ExecError::Scratch { path, error },
    }
}

fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// Stores the files of an output directory and returns its REAPI `Tree`.
fn collect_tree(store: &Store, dir: &Path) -> Result<reapi::Tree, ExecError> {
    let mut children = Vec::new();
    let root = collect_dir(store, dir, &mut children)?;
    Ok(reapi::Tree {
        root: Some(root),
        children,
    })
}

fn collect_dir(
    store: &Store,
    dir: &Path,
    children: &mut Vec<reapi::Directory>,
) -> Result<reapi::Directory, ExecError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ExecError::Scratch { path, error }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(err(dir))?
        .collect::<Result<_, _>>()
        .map_err(err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    let mut out = reapi::Directory::default();
    for entry in entries {
        let path = entry.path();
        // Escaped, never lossy: two names that are not UTF-8 must not become one.
        let name = llama_core::encode_os(&entry.file_name()).into_owned();
        let meta = fs::symlink_metadata(&path).map_err(err(&path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(err(&path))?;
            out.symlinks.push(reapi::SymlinkNode {
                name,
                target: llama_core::encode_os(target.as_os_str()).into_owned(),
                node_properties: None,
            });
        } else if ft.is_dir() {
            let sub = collect_dir(store, &path, children)?;
            let digest = Digest::of_bytes(&sub.encode_to_vec());
            children.push(sub);
            out.directories.push(reapi::DirectoryNode {
                name,
                digest: Some(digest.to_proto()),
            });
        } else if ft.is_file() {
            out.files.push(reapi::FileNode {
                name,
                digest: Some(adopt_owned(store, &path, &meta)?.to_proto()),
                is_executable: is_executable(&meta),
                node_properties: None,
            });
        }
    }
    Ok(out)
}
