//! Keeping the store within its bound: size accounting, least-recently-used eviction that
//! spares entries in use (see the module comment of `store` for why), and the verify pass.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::{
    EVICT_TARGET_PERCENT, RecordKind, STALE_STAGING, Store, StoreError, Usage, VerifyReport,
    compress, link,
};
use crate::digest::Digest;

/// The directories of what the store keeps, each sharded: what eviction, `llama cache` and
/// the size accounting walk. Records come before the blobs they name, so a pass that
/// removes everything takes away the way to a hit before its blobs.
const ENTRY_DIRS: [&str; 5] = [
    RecordKind::ActionResult.dir(),
    RecordKind::Manifest.dir(),
    link::EXECUTABLE_DIR,
    compress::COMPRESSED_DIR,
    "cas",
];

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
        let (lock, _) = self.gc_lock()?;
        if lock.try_lock().is_err() {
            return Ok(0);
        }
        let now = SystemTime::now();
        sweep_staging(&self.root.join("tmp"), now);
        let mut entries = Vec::new();
        let mut total = 0u64;
        for kind in ENTRY_DIRS {
            for entry in walk_shards(&self.root.join(kind)) {
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

    /// The file whose lock one eviction at a time holds, and its path.
    fn gc_lock(&self) -> Result<(File, PathBuf), StoreError> {
        let lock_path = self.root.join("gc.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.classify("open", &lock_path, e))?;
        Ok((file, lock_path))
    }

    /// What the store holds now, by kind (a walk of its directories).
    pub fn usage(&self) -> Usage {
        let count = |dir: &str| {
            walk_shards(&self.root.join(dir))
                .iter()
                .fold((0u64, 0u64), |(n, bytes), (_, size, _)| {
                    (n + 1, bytes + size)
                })
        };
        let blobs = count("cas");
        let compressed = count(compress::COMPRESSED_DIR);
        let executables = count(link::EXECUTABLE_DIR);
        let results = count(RecordKind::ActionResult.dir());
        let manifests = count(RecordKind::Manifest.dir());
        Usage {
            blobs: blobs.0,
            compressed_blobs: compressed.0,
            executables: executables.0,
            action_results: results.0,
            manifests: manifests.0,
            bytes: blobs.1 + compressed.1 + executables.1 + results.1 + manifests.1,
        }
    }

    /// Removes every entry last used more than `age` ago — never one used within the
    /// store's grace period (see the module comment) — and returns how many entries and
    /// bytes went. Waits for an eviction running in another process to finish first.
    pub fn evict_older_than(&self, age: Duration) -> Result<(u64, u64), StoreError> {
        let (lock, lock_path) = self.gc_lock()?;
        lock.lock()
            .map_err(|e| self.classify("lock", &lock_path, e))?;
        let now = SystemTime::now();
        let keep = age.max(self.grace);
        let (mut entries, mut freed, mut remaining) = (0u64, 0u64, 0u64);
        for kind in ENTRY_DIRS {
            for (_, size, path) in walk_shards(&self.root.join(kind)) {
                if remove_if_old(&path, now, keep) {
                    entries += 1;
                    freed += size;
                } else {
                    remaining += size;
                }
            }
        }
        self.update_size(|_| remaining)?;
        Ok((entries, freed))
    }

    /// Checks every blob against its name and every record against its checksum, removing
    /// what fails, as a crash-recovery or `doctor` pass would. Reads everything: slow on a
    /// large store.
    pub fn verify_all(&self) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        for (_, _, path) in walk_shards(&self.root.join("cas")) {
            let Some(digest) = digest_of_name(&path) else {
                let _ = fs::remove_file(&path);
                report.blobs_removed += 1;
                continue;
            };
            match self.verify(&digest) {
                Ok(()) => report.blobs_ok += 1,
                // verify removed it already.
                Err(StoreError::Corrupt { .. }) => report.blobs_removed += 1,
                // Evicted or replaced since the walk: nothing left to check.
                Err(StoreError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        for (_, _, path) in walk_shards(&self.root.join(compress::COMPRESSED_DIR)) {
            match self.verify_compressed(&path) {
                Some(true) => report.blobs_ok += 1,
                Some(false) => report.blobs_removed += 1,
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
            if whole {
                report.blobs_ok += 1;
            } else {
                let _ = fs::remove_file(&path);
                report.blobs_removed += 1;
            }
        }
        for kind in [RecordKind::ActionResult, RecordKind::Manifest] {
            for (_, _, path) in walk_shards(&self.root.join(kind.dir())) {
                let Some(key) = digest_of_name(&path) else {
                    let _ = fs::remove_file(&path);
                    report.records_removed += 1;
                    continue;
                };
                let present = match kind {
                    RecordKind::ActionResult => self.get_action_result(&key)?.is_some(),
                    RecordKind::Manifest => self.get_record(kind, &key)?.is_some(),
                };
                if present {
                    report.records_ok += 1;
                } else {
                    report.records_removed += 1;
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

    /// Adds `bytes` to the accounted size and evicts when the limit is passed.
    pub(super) fn account(&self, bytes: u64) -> Result<(), StoreError> {
        let total = self.update_size(|s| s.saturating_add(bytes))?;
        if total > self.limit.max(self.evict_floor.load(Ordering::Relaxed)) {
            self.evict()?;
        }
        Ok(())
    }

    /// Applies `f` to the accounted size under an exclusive lock and returns the new value.
    fn update_size(&self, f: impl FnOnce(u64) -> u64) -> Result<u64, StoreError> {
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
fn remove_if_old(path: &Path, now: SystemTime, grace: Duration) -> bool {
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
fn sweep_staging(tmp: &Path, now: SystemTime) {
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
fn walk_shards(base: &Path) -> Vec<(SystemTime, u64, PathBuf)> {
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
