//! The engine: the action cache in front of an executor, and delivery of results to local
//! paths. Every front end goes through here, so caching, verification and atomic delivery
//! are written once.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_core::{Digest, PreparedAction, Store, StoreError, reapi};

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
}

impl Engine {
    /// An engine caching in `store` and running misses on `executor`.
    pub fn new(store: Store, executor: Arc<dyn Executor>, policy: CachePolicy) -> Engine {
        Engine {
            store,
            executor,
            policy,
        }
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
            let hit = tokio::task::spawn_blocking(move || cached_result(&store, &key))
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
            let staged = tokio::task::spawn_blocking(move || {
                let staged = stage(&store, &result, &mappings, DEFAULT_UMASK)?;
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
    let Some(result) = store.get_action_result(action)? else {
        return Ok(None);
    };
    if result_blobs_present(store, &result).unwrap_or(false) {
        Ok(Some(result))
    } else {
        store.remove_action_result(action);
        Ok(None)
    }
}

fn result_blobs_present(store: &Store, result: &reapi::ActionResult) -> Result<bool, ExecError> {
    let mut digests = vec![];
    for d in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        digests.push(parse_digest(Some(d))?);
    }
    for f in &result.output_files {
        digests.push(parse_digest(f.digest.as_ref())?);
    }
    for dir in &result.output_directories {
        let tree: reapi::Tree =
            store.get_message(&parse_digest(dir.tree_digest.as_ref())?, "Tree")?;
        for d in tree.root.iter().chain(tree.children.iter()) {
            for f in &d.files {
                digests.push(parse_digest(f.digest.as_ref())?);
            }
        }
    }
    Ok(digests.iter().all(|d| store.contains(d)))
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
    let staged = stage(store, result, outputs, umask)?;
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
) -> Result<Staged, ExecError> {
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
        } else if let Some(dir) = dirs.get(key) {
            let parent = parent_dir(&mapping.local)?;
            let tmp = tempfile::Builder::new()
                .prefix(".llama-")
                .tempdir_in(&parent)
                .map_err(|error| ExecError::Scratch {
                    path: parent.clone(),
                    error,
                })?;
            let tree: reapi::Tree =
                store.get_message(&parse_digest(dir.tree_digest.as_ref())?, "Tree")?;
            let children: HashMap<Digest, reapi::Directory> = tree
                .children
                .iter()
                .map(|d| (Digest::of_message(d), d.clone()))
                .collect();
            let root = tree.root.clone().unwrap_or_default();
            materialize_directory(store, &root, &tmp.path().join("d"), &mut |d| {
                children
                    .get(d)
                    .cloned()
                    .ok_or_else(|| ExecError::InvalidAction(format!("tree lacks directory {d}")))
            })?;
            StagedItem::Dir(tmp)
        } else if let Some(link) = links.get(key) {
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
    fn commit(self) -> Result<(), ExecError> {
        for (item, local) in self.items {
            let err = |error| ExecError::Scratch {
                path: local.clone(),
                error,
            };
            match item {
                StagedItem::File(tmp) => tmp.persist(&local).map_err(|e| err(e.error))?,
                StagedItem::Dir(tmp) => {
                    if fs::symlink_metadata(&local).is_ok_and(|m| m.is_dir()) {
                        remove_tree(&local).map_err(err)?;
                    }
                    fs::rename(tmp.path().join("d"), &local).map_err(err)?;
                }
                StagedItem::Symlink(target) => {
                    let _ = fs::remove_file(&local);
                    std::os::unix::fs::symlink(&target, &local).map_err(err)?;
                }
            }
        }
        Ok(())
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
