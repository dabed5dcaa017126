//! Keeping the store within its bound: size accounting, least-recently-used eviction that
//! spares entries in use (see the module comment of `store` for why), and the verify pass.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{
    EVICT_TARGET_PERCENT, RecordKind, STALE_STAGING, Store, StoreError, VerifyReport, compress,
    link,
};

/// What the store keeps, each kind in its own sharded directory: everything eviction,
/// `llama cache` and the size accounting walk. Records come before the blobs they name, so
/// a pass that removes everything ([`Store::clear`]) takes away the way to a hit before
/// its blobs.
pub(super) const ENTRY_DIRS: &[(EntryKind, &str)] = &[
    (EntryKind::ActionResult, RecordKind::ActionResult.dir()),
    (EntryKind::Manifest, RecordKind::Manifest.dir()),
    (EntryKind::ExecutableCopy, link::EXECUTABLE_DIR),
    (EntryKind::CompressedBlob, compress::COMPRESSED_DIR),
    (EntryKind::Blob, "cas"),
];
use super::admin::EntryKind;
use crate::digest::Digest;

impl Store {
    /// Bytes currently accounted to the store (approximate between evictions).
    pub fn accounted_size(&self) -> Result<u64, StoreError> {
        self.update_size(|s| s)
    }

    /// Evicts least-recently-used entries until the store is under its target size, unless
    /// another process is already doing so. Returns the bytes freed. Entries used within
    /// [`EVICTION_GRACE`](super::EVICTION_GRACE) stay even when that leaves the store over its limit (said once per
    /// process, naming `cache_size`).
    pub fn evict(&self) -> Result<u64, StoreError> {
        let lock = self.gc_lock_file()?;
        if lock.try_lock().is_err() {
            return Ok(0);
        }
        let now = SystemTime::now();
        sweep_staging(&self.root.join("tmp"), now);
        let mut entries = Vec::new();
        let mut total = 0u64;
        for (_, dir) in ENTRY_DIRS {
            for entry in walk_shards(&self.root.join(dir)) {
                total += entry.1;
                entries.push(entry);
            }
        }
        entries.sort_by_key(|(mtime, _, _)| *mtime);
        let target = self.limit / 100 * EVICT_TARGET_PERCENT;
        let mut freed = 0u64;
        for (mtime, size, path) in entries {
            if total - freed <= target || is_young(mtime, now, self.grace) {
                // Sorted oldest first: everything after this is young too.
                break;
            }
            if remove_if_old(&path, now, self.grace) {
                freed += size;
            }
        }
        let remaining = total - freed;
        self.update_size(|_| remaining)?;
        let floor = if remaining > target {
            warn_too_small_once(&self.root, self.limit, remaining, self.grace);
            remaining.saturating_add(self.limit - target)
        } else {
            0
        };
        self.evict_floor.store(floor, Ordering::Relaxed);
        tracing::debug!(freed, remaining, "evicted from {}", self.root.display());
        Ok(freed)
    }

    /// Checks every blob against its name and every record against its checksum, removing
    /// what fails, as a crash-recovery or `doctor` pass would. Reads everything: slow on a
    /// large store. An entry evicted or replaced while the pass runs is neither counted nor
    /// reported.
    pub fn verify_all(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for (_, _, path) in walk_shards(&self.root.join("cas")) {
            let Some(digest) = digest_of_name(&path) else {
                report.remove_blob(path);
                continue;
            };
            match self.verify(&digest) {
                Ok(()) => report.blobs_ok += 1,
                // verify removed it already.
                Err(StoreError::Corrupt { .. }) => {
                    report.blobs_removed += 1;
                    report.removed.push(path);
                }
                // Evicted or replaced since the walk: nothing left to check.
                Err(StoreError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for (_, _, path) in walk_shards(&self.root.join(compress::COMPRESSED_DIR)) {
            match self.verify_compressed(&path) {
                Some(true) => report.blobs_ok += 1,
                Some(false) => {
                    report.blobs_removed += 1;
                    report.removed.push(path);
                }
                None => {}
            }
        }
        // Executable copies are made again from their blob when missing: a bad one goes.
        for (_, _, path) in walk_shards(&self.root.join(link::EXECUTABLE_DIR)) {
            let whole = digest_of_name(&path).is_some_and(|digest| {
                File::open(&path)
                    .and_then(Digest::of_reader)
                    .is_ok_and(|actual| actual == digest)
            });
            match whole {
                true => report.blobs_ok += 1,
                false if path.exists() => report.remove_blob(path),
                false => {}
            }
        }
        for kind in [RecordKind::ActionResult, RecordKind::Manifest] {
            for (_, _, path) in walk_shards(&self.root.join(kind.dir())) {
                match self.record_intact(kind, &path) {
                    Some(true) => report.records_ok += 1,
                    Some(false) => {
                        let _ = fs::remove_file(&path);
                        report.records_removed += 1;
                        report.removed.push(path);
                    }
                    None => {}
                }
            }
        }
        Ok(report)
    }

    /// Decompresses the compressed blob at `path` and checks it against its name, removing
    /// it when it fails. `Some(whole)`, or `None` when it is gone (evicted since the walk).
    fn verify_compressed(&self, path: &Path) -> Option<bool> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => return Some(false),
        };
        let digest = digest_of_name(path).zip(compress::content_size(&file));
        let Some((named, size)) = digest else {
            let _ = fs::remove_file(path);
            return Some(false);
        };
        let digest = Digest::from_parts(*named.hash_bytes(), size);
        let blob = compress::OpenBlob::compressed(file, path.to_path_buf()).ok()?;
        match self.copy_verified(blob, &digest, &mut io::sink(), None) {
            Ok(()) => Some(true),
            // copy_verified removed it.
            Err(StoreError::Corrupt { .. }) => Some(false),
            Err(_) => None,
        }
    }

    /// Whether the record file at `path` is whole: named by a digest, its checksum holding
    /// and, for an action result, decoding. `None` when it is gone (evicted since the walk).
    fn record_intact(&self, kind: RecordKind, path: &Path) -> Option<bool> {
        use prost::Message as _;
        if digest_of_name(path).is_none() {
            return Some(false);
        }
        let data = match fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(_) => return Some(false),
        };
        let Some(payload) = super::checked_payload(&data) else {
            return Some(false);
        };
        Some(match kind {
            RecordKind::ActionResult => {
                bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult::decode(
                    payload,
                )
                .is_ok()
            }
            RecordKind::Manifest => true,
        })
    }

    /// `gc.lock`, which the one process evicting (or clearing) holds.
    pub(super) fn gc_lock_file(&self) -> Result<File, StoreError> {
        let lock_path = self.root.join("gc.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.classify("open", &lock_path, e))
    }

    /// Adds `bytes` to the accounted size and evicts when the limit is passed.
    pub(super) fn account(&self, bytes: u64) -> Result<(), StoreError> {
        let total = self.update_size(|s| s.saturating_add(bytes))?;
        if total > self.limit.max(self.evict_floor.load(Ordering::Relaxed)) {
            self.evict()?;
        }
        Ok(())
    }

    /// Applies `f` to the accounted size under an exclusive lock and returns the new value.
    pub(super) fn update_size(&self, f: impl FnOnce(u64) -> u64) -> Result<u64, StoreError> {
        let path = self.root.join("size");
        let file = match self.size_file.get() {
            Some(file) => file,
            None => {
                let opened = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| self.classify("open", &path, e))?;
                self.size_file.get_or_init(|| opened)
            }
        };
        file.lock().map_err(|e| self.classify("lock", &path, e))?;
        let result = read_update_write(file, f).map_err(|e| self.classify("update", &path, e));
        let _ = file.unlock();
        result
    }
}

/// Applies `f` to the little-endian u64 at the start of `file` (0 if absent).
fn read_update_write(file: &File, f: impl FnOnce(u64) -> u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 8];
    let current = match file.read_exact_at(&mut buf, 0) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e),
    };
    let new = f(current);
    if new != current {
        file.write_all_at(&new.to_le_bytes(), 0)?;
    }
    Ok(new)
}

/// Removes the entry at `path` if it is still older than the grace period, checked under an
/// exclusive flock (see [`refresh`]). A reader holding the lock makes this a skip.
pub(super) fn remove_if_old(path: &Path, now: SystemTime, grace: Duration) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    let removed = file.metadata().is_ok_and(|meta| {
        let old = meta.modified().is_ok_and(|m| !is_young(m, now, grace));
        let same = fs::symlink_metadata(path)
            .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
        old && same && fs::remove_file(path).is_ok()
    });
    let _ = file.unlock();
    removed
}

fn is_young(mtime: SystemTime, now: SystemTime, grace: Duration) -> bool {
    now.duration_since(mtime).unwrap_or_default() < grace
}

/// Says once per process that entries in use keep the store over `cache_size`.
fn warn_too_small_once(root: &Path, limit: u64, remaining: u64, grace: Duration) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cache_size (LLAMA_CACHE_SIZE) is {limit} bytes, but the entries of {} used in the last {} seconds take {remaining}: the store stays over its limit until they age; raise cache_size to keep more results",
            root.display(),
            grace.as_secs(),
        );
    }
}

/// Removes staging files abandoned by processes that died mid-write.
pub(super) fn sweep_staging(tmp: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry.metadata().is_ok_and(|m| {
            m.is_file()
                && m.modified()
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_STAGING)
        });
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The digest a store file's name gives (its size read from the file), if it is one.
fn digest_of_name(path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(name, &mut hash).ok()?;
    let size = fs::symlink_metadata(path).ok()?.len();
    Some(Digest::from_parts(hash, size))
}

/// Every entry in the two-level shard layout under `base`: (mtime, size, path).
pub(super) fn walk_shards(base: &Path) -> Vec<(SystemTime, u64, PathBuf)> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(base) else {
        return out;
    };
    for shard in shards.flatten() {
        let Ok(entries) = fs::read_dir(shard.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((mtime, meta.len(), entry.path()));
            }
        }
    }
    out
}
