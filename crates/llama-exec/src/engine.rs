//! The engine: the action cache in front of an executor, and delivery of results to local
//! paths. Every front end goes through here, so caching, verification and atomic delivery
//! are written once.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_core::{
    CheckedTree, Digest, PreparedAction, Refusal, ResultLimits, Store, StoreError,
    check_result_shape, check_tree, reapi,
};

use crate::executor::{ExecError, Executor, Termination};
use crate::fsutil::{materialize_directory, parse_digest, remove_tree};

/// Whether the action cache is consulted and filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Serve earlier successful results instead of running again.
    pub read: bool,
    /// Record successful results.
    pub write: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            read: true,
            write: true,
        }
    }
}

/// A finished action: ran now, or served from the action cache.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The result; every blob it names is in the local store.
    pub result: reapi::ActionResult,
    /// How the command ended.
    pub termination: Termination,
    /// True when served from the action cache without running.
    pub cached: bool,
}

/// A declared output and the local path it is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputMapping {
    /// The path as in the Command's `output_paths` (relative to its working directory).
    pub remote: String,
    /// Where it lands on this machine.
    pub local: PathBuf,
}

/// What [`Engine::run_and_deliver`] did.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The finished action.
    pub finished: Finished,
    /// Outputs asked for that the command did not produce.
    pub missing: Vec<OutputMapping>,
    /// True when the outputs were written to their local paths.
    pub written: bool,
}

/// The action cache in front of an executor.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    executor: Arc<dyn Executor>,
    policy: CachePolicy,
    limits: ResultLimits,
}

impl Engine {
    /// An engine caching in `store` and running misses on `executor`.
    pub fn new(store: Store, executor: Arc<dyn Executor>, policy: CachePolicy) -> Engine {
        Engine {
            store,
            executor,
            policy,
            limits: ResultLimits::default(),
        }
    }

    /// Bounds what a result (cached or new) may expand to when its outputs are checked
    /// and written (`max_output_nodes`, `max_output_bytes`).
    pub fn with_result_limits(mut self, limits: ResultLimits) -> Engine {
        self.limits = limits;
        self
    }

    /// The bounds results are checked against.
    pub fn result_limits(&self) -> ResultLimits {
        self.limits
    }

    /// The local store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The executor's name.
    pub fn executor_name(&self) -> &'static str {
        self.executor.name()
    }

    /// What the executor consumed and costs so far, when it is billed.
    pub fn usage(&self) -> Option<crate::Usage> {
        self.executor.usage()
    }

    /// The executor's notices for the user since last asked (see
    /// [`Executor::take_notices`]).
    pub fn take_notices(&self) -> Vec<String> {
        self.executor.take_notices()
    }

    /// Runs `action`, or serves its earlier successful result from the action cache. Only a
    /// result with exit code 0 is recorded: a failure is never served from the cache.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the executor's run (see [`Executor::execute`]); the
    /// cache is only written after a run completes.
    pub async fn run(&self, action: &PreparedAction) -> Result<Finished, ExecError> {
        self.run_with(action, self.policy.read).await
    }

    async fn run_with(
        &self,
        action: &PreparedAction,
        read_cache: bool,
    ) -> Result<Finished, ExecError> {
        let cacheable = !action.action.do_not_cache;
        if read_cache && cacheable {
            let store = self.store.clone();
            let key = action.action_digest;
            let limits = self.limits;
            let hit =
                tokio::task::spawn_blocking(move || cached_result_within(&store, &key, &limits))
                    .await
                    .map_err(|e| ExecError::Task(e.to_string()))??;
            if let Some(result) = hit {
                return Ok(Finished {
                    termination: Termination::Exited(result.exit_code),
                    result,
                    cached: true,
                });
            }
        }
        let outcome = self.executor.execute(action).await?;
        // Whatever the executor returned is checked before it is recorded: a result that
        // would be refused on delivery must not be served to anyone later.
        check_result_shape(&outcome.result, &self.limits).map_err(|why| ExecError::Refused {
            from: format!("{} executor", self.executor.name()),
            why,
        })?;
        if self.policy.write && cacheable && outcome.termination.success() {
            let store = self.store.clone();
            let key = action.action_digest;
            let result = outcome.result.clone();
            tokio::task::spawn_blocking(move || store.put_action_result(&key, &result))
                .await
                .map_err(|e| ExecError::Task(e.to_string()))??;
        }
        Ok(Finished {
            result: outcome.result,
            termination: outcome.termination,
            cached: outcome.cached,
        })
    }

    /// Runs `action` and writes the outputs named in `outputs` to their local paths.
    ///
    /// Every output is staged beside its destination and verified before any is moved into
    /// place, so a failure never leaves a partial file at a local path. When the command
    /// succeeded but did not produce an output, nothing is written and `missing` says
    /// which; when it failed, what it did produce is written. A cached result whose blobs
    /// turn out to be damaged is dropped and the action run again.
    pub async fn run_and_deliver(
        &self,
        action: &PreparedAction,
        outputs: &[OutputMapping],
    ) -> Result<Delivered, ExecError> {
        let mut read_cache = self.policy.read;
        loop {
            let finished = self.run_with(action, read_cache).await?;
            let store = self.store.clone();
            let result = finished.result.clone();
            let mappings = outputs.to_vec();
            let success = finished.termination.success();
            let limits = self.limits;
            let from = if finished.cached {
                "action cache".to_string()
            } else {
                format!("{} executor", self.executor.name())
            };
            let staged = tokio::task::spawn_blocking(move || {
                let staged = stage(&store, &result, &mappings, DEFAULT_UMASK, &limits, &from)?;
                for d in [&result.stdout_digest, &result.stderr_digest]
                    .into_iter()
                    .flatten()
                {
                    store.verify(&parse_digest(Some(d))?)?;
                }
                let written = staged.missing.is_empty() || !success;
                let missing = staged.missing.clone();
                if written {
                    staged.commit()?;
                }
                Ok::<_, ExecError>((missing, written))
            })
            .await
            .map_err(|e| ExecError::Task(e.to_string()))?;
            match staged {
                Ok((missing, written)) => {
                    return Ok(Delivered {
                        finished,
                        missing,
                        written,
                    });
                }
                Err(ExecError::Store(StoreError::Corrupt { path, .. }))
                    if finished.cached && read_cache =>
                {
                    tracing::warn!(
                        "cached output {} was corrupt; removed it and running the action again",
                        path.display()
                    );
                    self.store.remove_action_result(&action.action_digest);
                    read_cache = false;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A cached result, if present and complete: every blob it names must still be in the
/// store (eviction may have taken some), or it is not a hit (and the entry is dropped).
pub fn cached_result(
    store: &Store,
    action: &Digest,
) -> Result<Option<reapi::ActionResult>, ExecError> {
    cached_result_within(store, action, &ResultLimits::default())
}

/// [`cached_result`], with an entry that fails the checks of `limits` (bad paths, symlinks
/// out, a tree expanding past the limits) dropped as well: it is not a hit, and is reported
/// at warning level.
pub fn cached_result_within(
    store: &Store,
    action: &Digest,
    limits: &ResultLimits,
) -> Result<Option<reapi::ActionResult>, ExecError> {
    let Some(result) = store.get_action_result(action)? else {
        return Ok(None);
    };
    match result_blobs_present(store, &result, limits) {
        Ok(true) => Ok(Some(result)),
        Ok(false) => {
            store.remove_action_result(action);
            Ok(None)
        }
        Err(why) => {
            tracing::warn!("dropped the action cache entry of {action}: {why}");
            store.remove_action_result(action);
            Ok(None)
        }
    }
}

/// Whether every blob `result` names is in the store; `Err` when the result itself is
/// refused. A Tree that is absent or unreadable makes the result incomplete, not refused.
fn result_blobs_present(
    store: &Store,
    result: &reapi::ActionResult,
    limits: &ResultLimits,
) -> Result<bool, Refusal> {
    let mut budget = check_result_shape(result, limits)?;
    let mut digests = vec![];
    for d in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        digests.push(Digest::from_proto(d).map_err(|e| bad_digest("stdout/stderr", e))?);
    }
    for f in &result.output_files {
        digests.push(Digest::from_field(f.digest.as_ref()).map_err(|e| bad_digest(&f.path, e))?);
    }
    for dir in &result.output_directories {
        let tree =
            Digest::from_field(dir.tree_digest.as_ref()).map_err(|e| bad_digest(&dir.path, e))?;
        let Ok(tree) = store.get_message::<reapi::Tree>(&tree, "Tree") else {
            return Ok(false);
        };
        digests.extend(check_tree(&dir.path, &tree, limits, &mut budget)?.files);
    }
    Ok(digests.iter().all(|d| store.contains(d)))
}

fn bad_digest(what: &str, e: impl std::fmt::Display) -> Refusal {
    Refusal::BadDigest {
        what: what.to_string(),
        error: e.to_string(),
    }
}

/// Outputs written next to their destinations, waiting to be renamed into place.
struct Staged {
    items: Vec<(StagedItem, PathBuf)>,
    missing: Vec<OutputMapping>,
}

enum StagedItem {
    File(tempfile::TempPath),
    Dir(tempfile::TempDir),
    Symlink(String),
}

/// The umask outputs of `llama invoke` and `xargs` are written with.
const DEFAULT_UMASK: u32 = 0o022;

/// Writes the outputs of `result` named in `outputs` to their local paths, all or nothing:
/// each is staged beside its destination and verified, then all are renamed into place.
/// Files get mode 0666 (0777 if executable) less `umask`, as if the command had written
/// them. Returns the outputs the result does not have (then nothing is written).
pub fn deliver_outputs(
    store: &Store,
    result: &reapi::ActionResult,
    outputs: &[OutputMapping],
    umask: u32,
) -> Result<Vec<OutputMapping>, ExecError> {
    let staged = stage(
        store,
        result,
        outputs,
        umask,
        &ResultLimits::default(),
        "action cache",
    )?;
    let missing = staged.missing.clone();
    if missing.is_empty() {
        staged.commit()?;
    }
    Ok(missing)
}

fn stage(
    store: &Store,
    result: &reapi::ActionResult,
    outputs: &[OutputMapping],
    umask: u32,
    limits: &ResultLimits,
    from: &str,
) -> Result<Staged, ExecError> {
    let refused = |why| ExecError::Refused {
        from: from.to_string(),
        why,
    };
    // Everything the result claims is checked before the first byte is written.
    let mut budget = check_result_shape(result, limits).map_err(refused)?;
    let mut trees: HashMap<&str, CheckedTree> = HashMap::new();
    for dir in &result.output_directories {
        if !outputs.iter().any(|m| m.remote == dir.path) {
            continue;
        }
        let tree: reapi::Tree =
            store.get_message(&parse_digest(dir.tree_digest.as_ref())?, "Tree")?;
        let checked = check_tree(&dir.path, &tree, limits, &mut budget).map_err(refused)?;
        trees.insert(dir.path.as_str(), checked);
    }
    let files: HashMap<&str, &reapi::OutputFile> = result
        .output_files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let dirs: HashMap<&str, &reapi::OutputDirectory> = result
        .output_directories
        .iter()
        .map(|d| (d.path.as_str(), d))
        .collect();
    let links: HashMap<&str, &reapi::OutputSymlink> = result
        .output_symlinks
        .iter()
        .map(|l| (l.path.as_str(), l))
        .collect();
    let mut staged = Staged {
        items: Vec::new(),
        missing: Vec::new(),
    };
    for mapping in outputs {
        let key = mapping.remote.as_str();
        let item = if let Some(file) = files.get(key) {
            let parent = parent_dir(&mapping.local)?;
            let tmp = tempfile::Builder::new()
                .prefix(".llama-")
                .tempfile_in(&parent)
                .map_err(|error| ExecError::Scratch {
                    path: parent.clone(),
                    error,
                })?;
            let (mut file_handle, path) = tmp.into_parts();
            store.write_blob_to(&parse_digest(file.digest.as_ref())?, &mut file_handle)?;
            let mode = if file.is_executable { 0o777 } else { 0o666 } & !umask;
            set_mode(&path, mode)?;
            StagedItem::File(path)
        } else if let (Some(_), Some(tree)) = (dirs.get(key), trees.get(key)) {
            let parent = parent_dir(&mapping.local)?;
            let tmp = tempfile::Builder::new()
                .prefix(".llama-")
                .tempdir_in(&parent)
                .map_err(|error| ExecError::Scratch {
                    path: parent.clone(),
                    error,
                })?;
            materialize_directory(store, &tree.root, &tmp.path().join("d"), &mut |d| {
                tree.children
                    .get(d)
                    .cloned()
                    .ok_or_else(|| ExecError::InvalidAction(format!("tree lacks directory {d}")))
            })?;
            StagedItem::Dir(tmp)
        } else if let Some(link) = links.get(key) {
            parent_dir(&mapping.local)?;
            StagedItem::Symlink(link.target.clone())
        } else {
            staged.missing.push(mapping.clone());
            continue;
        };
        staged.items.push((item, mapping.local.clone()));
    }
    Ok(staged)
}

impl Staged {
    /// Moves every staged output into place, all or nothing: an existing destination is
    /// kept aside (a hard link to a file, the renamed directory) until every output is in
    /// place, and on any failure the outputs already moved are taken back out and what was
    /// there before is put back.
    fn commit(self) -> Result<(), ExecError> {
        let count = self.items.len();
        let mut done: Vec<Undo> = Vec::with_capacity(count);
        for (i, (item, local)) in self.items.into_iter().enumerate() {
            // The last output is never rolled back (nothing after it can fail), so the
            // file it replaces need not be kept: on a cache hit with one output that
            // saves making and removing a file beside it.
            match place(item, &local, i + 1 < count) {
                Ok(undo) => done.push(undo),
                Err(error) => {
                    for undo in done.into_iter().rev() {
                        undo.roll_back();
                    }
                    return Err(ExecError::Scratch { path: local, error });
                }
            }
        }
        for undo in done {
            undo.discard_old();
        }
        Ok(())
    }
}

/// How to take one placed output back out.
struct Undo {
    local: PathBuf,
    /// What was at `local` before, kept beside it (a hard link or the renamed directory).
    old: Option<PathBuf>,
}

impl Undo {
    fn roll_back(self) {
        // Best effort: what cannot be restored stays beside the destination, named
        // `.llama-old-*`, rather than being deleted.
        match self.old {
            Some(old) => {
                if fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir()) {
                    let _ = remove_tree(&self.local);
                }
                if let Err(e) = fs::rename(&old, &self.local) {
                    tracing::warn!(
                        "could not put {} back after a failed delivery ({e}); its old content is at {}",
                        self.local.display(),
                        old.display()
                    );
                }
            }
            None => {
                if fs::symlink_metadata(&self.local).is_ok_and(|m| m.is_dir()) {
                    let _ = remove_tree(&self.local);
                } else {
                    let _ = fs::remove_file(&self.local);
                }
            }
        }
    }

    fn discard_old(self) {
        if let Some(old) = self.old {
            let removed = if fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir()) {
                remove_tree(&old)
            } else {
                fs::remove_file(&old)
            };
            if let Err(e) = removed {
                tracing::debug!("removing {}: {e}", old.display());
            }
        }
    }
}

/// A fresh name beside `local` for keeping its old content.
fn aside(local: &Path) -> std::io::Result<PathBuf> {
    let parent = match local.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Reserve a unique name, then free it for the link or rename to take.
    let reserved = tempfile::Builder::new()
        .prefix(".llama-old-")
        .tempfile_in(parent)?;
    let path = reserved.path().to_path_buf();
    reserved.close()?;
    Ok(path)
}

/// Moves one staged output to `local`. A file or symlink replaces a non-directory in one
/// rename (the old one kept as a hard link when `keep_old`, for a roll-back); it never
/// replaces a directory, whose content would be lost. A directory replaces a directory.
fn place(item: StagedItem, local: &Path, keep_old: bool) -> std::io::Result<Undo> {
    let existing = fs::symlink_metadata(local).ok();
    let existing_dir = existing.as_ref().is_some_and(|m| m.is_dir());
    match item {
        StagedItem::File(_) | StagedItem::Symlink(_) if existing_dir => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a directory is in the way of this output file; remove it and run again",
            ));
        }
        StagedItem::Dir(_) if existing.is_some() && !existing_dir => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "a file is in the way of this output directory; remove it and run again",
            ));
        }
        _ => {}
    }
    let old = match &existing {
        None => None,
        Some(_) if existing_dir => {
            let old = aside(local)?;
            fs::rename(local, &old)?;
            Some(old)
        }
        // One rename replaces it, and a failed rename leaves it in place.
        Some(_) if !keep_old => None,
        Some(_) => {
            let old = aside(local)?;
            fs::hard_link(local, &old)?;
            Some(old)
        }
    };
    let undo = Undo {
        local: local.to_path_buf(),
        old,
    };
    let placed = match item {
        StagedItem::File(tmp) => tmp.persist(local).map_err(|e| e.error),
        StagedItem::Dir(tmp) => fs::rename(tmp.path().join("d"), local),
        StagedItem::Symlink(target) => {
            // Made under a fresh name, then renamed over: the destination is never absent.
            aside(local).and_then(|fresh| {
                std::os::unix::fs::symlink(&target, &fresh)?;
                fs::rename(&fresh, local).inspect_err(|_| {
                    let _ = fs::remove_file(&fresh);
                })
            })
        }
    };
    match placed {
        Ok(()) => Ok(undo),
        Err(e) => {
            // Nothing new is at `local`: only the old content needs putting back.
            if let Some(old) = &undo.old {
                if existing_dir {
                    let _ = fs::rename(old, local);
                } else {
                    let _ = fs::remove_file(old);
                }
            }
            Err(e)
        }
    }
}

fn parent_dir(local: &Path) -> Result<PathBuf, ExecError> {
    let parent = match local.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|error| ExecError::Scratch {
        path: parent.clone(),
        error,
    })?;
    Ok(parent)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ExecError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|error| {
        ExecError::Scratch {
            path: path.to_path_buf(),
            error,
        }
    })
}
