//! What `llama cache` asks of the store: how much of each kind it holds, removing everything
//! or what has not been used for a while, and putting the accounted size right afterwards.
//!
//! Both removals run while other processes use the store (a daemon serving hits, an
//! evictor). They take `gc.lock`, so no eviction interleaves, and remove records before the
//! blobs they name ([`ENTRY_DIRS`] order): a lookup that starts after the records went is a
//! miss. A hit already past its record can find a blob gone; the engine then reports it
//! missing and nothing is delivered (outputs are staged and moved into place all or nothing),
//! so llamacc compiles directly. An unlinked file still open by a reader reads whole.

use std::fs;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::gc::{ENTRY_DIRS, remove_if_old, sweep_staging, walk_shards};
use super::{Store, StoreError, VerifyReport};

/// A kind of file the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Content-addressed blobs (`cas/`).
    Blob,
    /// Blobs kept zstd-compressed (`cas-z/`).
    CompressedBlob,
    /// Executable copies of blobs, for inputs laid out by link (`cas-x/`).
    ExecutableCopy,
    /// Cached action results (`ac/`).
    ActionResult,
    /// llamacc's manifests (`manifests/`).
    Manifest,
}

impl EntryKind {
    /// Every kind, in the order `llama cache` lists them.
    pub const ALL: [EntryKind; 5] = [
        EntryKind::Blob,
        EntryKind::CompressedBlob,
        EntryKind::ExecutableCopy,
        EntryKind::ActionResult,
        EntryKind::Manifest,
    ];
}

/// How many entries of one kind, and their bytes on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Files.
    pub entries: u64,
    /// Their sizes added up.
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, bytes: u64) {
        self.entries += 1;
        self.bytes += bytes;
    }
}

/// What the store holds, by kind, as [`Store::usage`] counted it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StoreUsage {
    /// Content-addressed blobs.
    pub blobs: Usage,
    /// Blobs kept compressed (bytes on disk, compressed).
    pub compressed_blobs: Usage,
    /// Executable copies of blobs.
    pub executable_copies: Usage,
    /// Cached action results.
    pub action_results: Usage,
    /// llamacc's manifests.
    pub manifests: Usage,
}

impl StoreUsage {
    /// The counts of one kind.
    pub fn of(&self, kind: EntryKind) -> Usage {
        match kind {
            EntryKind::Blob => self.blobs,
            EntryKind::CompressedBlob => self.compressed_blobs,
            EntryKind::ExecutableCopy => self.executable_copies,
            EntryKind::ActionResult => self.action_results,
            EntryKind::Manifest => self.manifests,
        }
    }

    fn of_mut(&mut self, kind: EntryKind) -> &mut Usage {
        match kind {
            EntryKind::Blob => &mut self.blobs,
            EntryKind::CompressedBlob => &mut self.compressed_blobs,
            EntryKind::ExecutableCopy => &mut self.executable_copies,
            EntryKind::ActionResult => &mut self.action_results,
            EntryKind::Manifest => &mut self.manifests,
        }
    }

    /// Every kind added up.
    pub fn total(&self) -> Usage {
        ENTRY_DIRS.iter().fold(Usage::default(), |sum, (kind, _)| {
            let u = self.of(*kind);
            Usage {
                entries: sum.entries + u.entries,
                bytes: sum.bytes + u.bytes,
            }
        })
    }
}

/// What a removal took away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Files removed.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl VerifyReport {
    /// Removes a damaged blob file and says so.
    pub(super) fn remove_blob(&mut self, path: std::path::PathBuf) {
        let _ = fs::remove_file(&path);
        self.blobs_removed += 1;
        self.removed.push(path);
    }
}

impl Store {
    /// Counts what the store holds, by kind, walking it (a second or so per hundred
    /// thousand entries). Reads only metadata and refreshes nothing.
    pub fn usage(&self) -> StoreUsage {
        let mut usage = StoreUsage::default();
        for (kind, dir) in ENTRY_DIRS {
            for (_, size, _) in walk_shards(&self.root.join(dir)) {
                usage.of_mut(*kind).add(size);
            }
        }
        usage
    }

    /// Removes every blob, executable copy, action result and manifest (what `llama cache
    /// clear` does), then sets the accounted size to what is left (entries other processes
    /// stored meanwhile). Waits for an eviction in progress to finish first. Staging files
    /// of writes in flight stay; abandoned ones go.
    pub fn clear(&self) -> Result<Removed, StoreError> {
        self.remove_where(|path| fs::remove_file(path).is_ok())
    }

    /// Removes every entry not used for `age` or longer (what `llama cache evict
    /// --older-than` does): the age is the one least-recently-used eviction goes by, the
    /// modification time that every use refreshes (to within [`TOUCH_GRANULARITY`]). Each
    /// removal is checked again under the entry's lock, so one a reader is refreshing stays.
    ///
    /// [`TOUCH_GRANULARITY`]: super::TOUCH_GRANULARITY
    pub fn evict_older_than(&self, age: Duration) -> Result<Removed, StoreError> {
        let now = SystemTime::now();
        self.remove_where(|path| remove_if_old(path, now, age))
    }

    /// Under `gc.lock`, offers every entry to `remove` in [`ENTRY_DIRS`] order (it returns
    /// whether it removed it), then puts the accounted size right.
    fn remove_where(
        &self,
        remove: impl Fn(&std::path::Path) -> bool,
    ) -> Result<Removed, StoreError> {
        let lock = self.gc_lock_file()?;
        lock.lock()
            .map_err(|e| self.classify("lock", &self.root.join("gc.lock"), e))?;
        sweep_staging(&self.root.join("tmp"), SystemTime::now());
        let mut removed = Removed::default();
        for (_, dir) in ENTRY_DIRS {
            for (_, size, path) in walk_shards(&self.root.join(dir)) {
                if remove(&path) {
                    removed.entries += 1;
                    removed.bytes += size;
                }
            }
        }
        self.resync_size()?;
        let _ = lock.unlock();
        Ok(removed)
    }

    /// Sets the accounted size to what the store holds now, as counted by a walk.
    pub(super) fn resync_size(&self) -> Result<u64, StoreError> {
        let held = self.usage().total().bytes;
        self.update_size(|_| held)
    }
}
