//! The on-disk store: a content-addressed blob store (CAS) and an action cache (AC) under one
//! directory, bounded in size, shared safely by any number of processes.
//!
//! Layout under the store root (`$LLAMA_DIR`):
//!
//! ```text
//! cas/ab/abcdef...   blobs, named by the hex SHA-256 of their content
//! ac/ab/abcdef...    action results, named by their Action's digest; a SHA-256 of the
//!                    encoded ActionResult precedes it so a damaged entry is noticed
//! manifests/ab/...   llamacc's manifests (same framing), keyed by a compile's pre-key
//! tmp/               staging for atomic writes (same file system, so rename is atomic)
//! work/              per-action scratch directories of the local executor
//! size               bytes accounted so far (a little-endian u64, updated under a lock)
//! gc.lock            held by the one process evicting
//! ```
//!
//! Every write goes to `tmp/` first and is then linked into place: `link(2)` never replaces,
//! so two processes storing the same blob both succeed and the blob is whole either way.
//! Every read is verified against the digest; a blob that does not match is removed and
//! reported, never served. Eviction is least-recently-used by modification time, which reads
//! and [`Store::contains`] refresh.
//!
//! # Eviction and readers
//!
//! Several llama processes share one store, so a blob one of them is about to use can be the
//! least recently used entry another one is evicting. Two rules keep them apart:
//!
//! * Eviction never removes an entry used in the last [`EVICTION_GRACE`]: every use
//!   ([`Store::contains`], a read, a store) refreshes the entry's mtime, and an action uses
//!   its blobs within seconds of checking them. A cache smaller than what is in use therefore
//!   grows past `cache_size` for a while (and says so once) rather than failing the build.
//! * The refresh and the eviction of one blob are serialised by `flock(2)` on the blob file:
//!   a reader refreshes under a shared lock (after checking the name still leads to the inode
//!   it opened), the evictor re-reads the mtime and unlinks under an exclusive one. So a
//!   blob found present is either refreshed before the evictor looks, or was already gone
//!   and is reported absent; it is never removed between "present" and its use.
//!
//! Why not leases (a list of pinned digests per action)? Every reader (the engine, the local
//! executor, llamacc's service, the runtime, the remote executors) would have to register each
//! blob before checking it, and a lease whose holder vanished needs its own liveness protocol.
//! The mtime is already shared by every process, in any PID namespace, and survives crashes;
//! flock is released by the kernel when its holder dies. The one assumption: no process holds
//! a "present" answer for longer than the grace period (minus [`TOUCH_GRANULARITY`]) before
//! opening the blob.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};

/// Reads younger than this do not refresh a blob's timestamp: LRU needs only coarse recency,
/// and skipping the write keeps hot blobs cheap to read.
pub const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

/// Entries used more recently than this are never evicted (see "Eviction and readers").
/// Ten minutes is far longer than any gap between checking a blob and opening it, and short
/// enough that a store over its limit comes back under it soon after a build ends.
pub const EVICTION_GRACE: Duration = Duration::from_secs(600);

/// Staging files older than this were left by a process that died mid-write; eviction
/// removes them so a crash loop cannot fill the disk with them.
const STALE_STAGING: Duration = Duration::from_secs(3600);

/// The most [`Store::get_bytes`] reads into memory; larger blobs are streamed with
/// [`Store::write_blob_to`]. Generous: the largest legitimate in-memory blob is a `Tree` of a
/// huge output directory.
pub const MAX_IN_MEMORY_BLOB: u64 = 1 << 30;

/// Eviction frees space down to this fraction of the limit, so it does not run on every write.
const EVICT_TARGET_PERCENT: u64 = 80;

/// What went wrong in the store, and which file or directory it concerns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory cannot be created, read or written.
    #[error(
        "cache directory {dir} is not usable ({error}); fix its permissions or point LLAMA_DIR at a writable directory"
    )]
    Unusable {
        /// The directory or file concerned.
        dir: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// The file system holding the store is out of space or quota.
    #[error(
        "cache directory {dir} is full ({error}); free disk space, lower cache_size (LLAMA_CACHE_SIZE), or point LLAMA_DIR at another disk"
    )]
    Full {
        /// The store root.
        dir: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// A blob that should be in the store is not (never stored, or evicted).
    #[error("blob {digest} is not in the store at {dir}")]
    Missing {
        /// The blob asked for.
        digest: Digest,
        /// The store root.
        dir: PathBuf,
    },
    /// A blob's content does not hash to its name; it has been deleted.
    #[error("blob {path} was corrupt (its content hashes to {actual}); removed it")]
    Corrupt {
        /// The blob asked for.
        digest: Digest,
        /// Where it was.
        path: PathBuf,
        /// What its content actually hashes to.
        actual: Digest,
    },
    /// A blob too large to read into memory was asked for whole.
    #[error(
        "blob {digest} is {size} bytes, more than the {limit} llama reads into memory; the result naming it is damaged or hostile; delete the cache directory's ac/ entry (or the whole cache directory) and check the server that produced it"
    )]
    TooLarge {
        /// The blob asked for.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The bound it exceeds.
        limit: u64,
    },
    /// A source file changed between being hashed and being stored.
    #[error("{path} changed while llama was reading it; run the command again")]
    Changed {
        /// The source file.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// A stored message that does not decode.
    #[error("{path} does not hold a valid {what}: {source}")]
    Decode {
        /// The blob file.
        path: PathBuf,
        /// The message type expected.
        what: &'static str,
        /// The decoder's complaint.
        source: prost::DecodeError,
    },
}

/// The kinds of keyed records the store keeps beside the CAS, each in its own directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// REAPI `ActionResult`s keyed by action digest (`ac/`).
    ActionResult,
    /// llamacc's manifests: what a compile read, keyed by what is known before compiling
    /// (`manifests/`).
    Manifest,
}

impl RecordKind {
    fn dir(self) -> &'static str {
        match self {
            RecordKind::ActionResult => "ac",
            RecordKind::Manifest => "manifests",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            RecordKind::ActionResult => "action cache entry",
            RecordKind::Manifest => "compile manifest",
        }
    }
}

/// The CAS and the action cache on local disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    limit: u64,
    /// The `size` file, opened once per process.
    size_file: Arc<std::sync::OnceLock<File>>,
    /// Eviction runs again only once the accounted size passes this (besides the limit):
    /// when entries in use keep the store over its limit, walking it on every write would
    /// free nothing.
    evict_floor: Arc<AtomicU64>,
    /// How long a used entry is safe from eviction (see "Eviction and readers").
    grace: Duration,
}

/// What [`Store::verify_all`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    /// Blobs whose content hashes to their name.
    pub blobs_ok: u64,
    /// Blobs that did not, now removed.
    pub blobs_removed: u64,
    /// Action-cache entries and manifests whose checksum holds (and, for action results,
    /// that decode).
    pub records_ok: u64,
    /// Records that did not, now removed.
    pub records_removed: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, to be kept under `limit` bytes.
    ///
    /// Fails with [`StoreError::Unusable`] or [`StoreError::Full`] when the directory cannot
    /// be written, so that problems surface before any work is done.
    pub fn open(root: impl Into<PathBuf>, limit: u64) -> Result<Store, StoreError> {
        let store = Store {
            root: root.into(),
            limit,
            size_file: Default::default(),
            evict_floor: Default::default(),
            grace: EVICTION_GRACE,
        };
        for sub in ["cas", "ac", "tmp", "work"] {
            let dir = store.root.join(sub);
            fs::create_dir_all(&dir).map_err(|error| {
                match store.classify("create", &dir, error) {
                    StoreError::Io { error, .. } => StoreError::Unusable { dir, error },
                    other => other,
                }
            })?;
        }
        // A probe write: an unwritable or full directory is reported now, by name.
        let probe = tempfile::NamedTempFile::new_in(store.root.join("tmp"))
            .map_err(|e| store.classify("write to", &store.root.join("tmp"), e))?;
        drop(probe);
        Ok(store)
    }

    /// The same store with another eviction grace period than [`EVICTION_GRACE`]: shorter
    /// for a store only one process at a time uses (a Lambda container's `/tmp`, where
    /// going over the limit for long can fill the disk), never shorter than the longest gap
    /// between checking a blob and opening it. Every process sharing a store should use the
    /// same value.
    pub fn with_eviction_grace(mut self, grace: Duration) -> Store {
        self.grace = grace;
        self
    }

    /// Uses older than this refresh an entry's age: coarse enough that hot entries are not
    /// rewritten on every read, fine enough to keep most of the grace period.
    fn touch_after(&self) -> Duration {
        TOUCH_GRANULARITY.min(self.grace / 4)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The size limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The directory under which executors make per-action scratch directories.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Where the blob named `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.root.join("cas"), digest)
    }

    /// True when a blob with this digest's hash *and size* is present (not verified; reads
    /// verify). Refreshes the blob's age, so a blob found present is not evicted before the
    /// caller uses it (see "Eviction and readers"). A digest whose size differs from the
    /// stored blob's is absent: the blob under that hash stays, it is the digest that is wrong.
    pub fn contains(&self, digest: &Digest) -> bool {
        is_empty_blob(digest) || refresh(&self.blob_path(digest), digest.size(), self.touch_after())
    }

    /// Stores an in-memory blob and returns its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of_bytes(data);
        if self.contains(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(data)
            .map_err(|e| self.classify("write", tmp.path(), e))?;
        self.install(tmp, &digest)?;
        Ok(digest)
    }

    /// Stores a protobuf message's encoding and returns its digest.
    pub fn put_message<M: Message>(&self, message: &M) -> Result<Digest, StoreError> {
        self.put_bytes(&message.encode_to_vec())
    }

    /// Copies the file at `path` into the store. When `expected` is given and the content no
    /// longer matches it, nothing is stored and [`StoreError::Changed`] is returned.
    pub fn put_file(&self, path: &Path, expected: Option<Digest>) -> Result<Digest, StoreError> {
        if let Some(d) = expected
            && self.contains(&d)
        {
            return Ok(d);
        }
        let mut src = File::open(path).map_err(|e| io_error("open", path, e))?;
        let tmp = self.temp_file()?;
        let mut writer = HashingWriter::new(tmp);
        io::copy(&mut src, &mut writer).map_err(|e| self.classify("copy", path, e))?;
        let (tmp, digest) = writer.finish();
        if expected.is_some_and(|e| e != digest) {
            return Err(StoreError::Changed {
                path: path.to_path_buf(),
            });
        }
        self.install(tmp, &digest)?;
        Ok(digest)
    }

    /// Moves a file the caller owns (an action's output in a scratch directory) into the
    /// store without copying it. The file must not be modified afterwards.
    pub fn adopt_file(&self, path: &Path) -> Result<Digest, StoreError> {
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        let digest = Digest::of_reader(&file).map_err(|e| io_error("read", path, e))?;
        if !is_empty_blob(&digest) {
            // The file may have been written long ago (early in a long action): as a new
            // entry it must start young, or eviction could take it before it is delivered.
            let _ = file.set_modified(SystemTime::now());
            self.link_into_place(path, &digest)?;
        }
        Ok(digest)
    }

    /// Writes the blob to `out`, verifying it on the way. On a mismatch the blob is removed
    /// and [`StoreError::Corrupt`] returned: the caller must discard what it received.
    pub fn write_blob_to(&self, digest: &Digest, out: &mut dyn Write) -> Result<(), StoreError> {
        if is_empty_blob(digest) {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let file = self.open_blob(digest, &path)?;
        let mut writer = HashingWriter::new(out);
        io::copy(
            &mut io::BufReader::with_capacity(64 * 1024, file),
            &mut writer,
        )
        .map_err(|e| io_error("read", &path, e))?;
        let (_, actual) = writer.finish();
        self.check(digest, &path, actual)
    }

    /// Reads a whole blob into memory, verified. For blobs known to be small: one over
    /// [`MAX_IN_MEMORY_BLOB`] is [`StoreError::TooLarge`]. The digest's size is checked
    /// against the file before anything is allocated, so a hostile size is a miss, not an
    /// allocation.
    pub fn get_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        if is_empty_blob(digest) {
            return Ok(Vec::new());
        }
        if digest.size() > MAX_IN_MEMORY_BLOB {
            return Err(StoreError::TooLarge {
                digest: *digest,
                size: digest.size(),
                limit: MAX_IN_MEMORY_BLOB,
            });
        }
        let path = self.blob_path(digest);
        let file = self.open_blob(digest, &path)?;
        // open_blob checked the file's size against the digest's, now within the bound.
        let mut data = Vec::with_capacity(digest.size() as usize);
        // One byte more than expected shows a file that grew since, without reading it all.
        file.take(digest.size() + 1)
            .read_to_end(&mut data)
            .map_err(|e| io_error("read", &path, e))?;
        self.check(digest, &path, Digest::of_bytes(&data))?;
        Ok(data)
    }

    /// Reads and decodes a stored protobuf message, verified.
    pub fn get_message<M: Message + Default>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<M, StoreError> {
        let data = self.get_bytes(digest)?;
        M::decode(&data[..]).map_err(|source| StoreError::Decode {
            path: self.blob_path(digest),
            what,
            source,
        })
    }

    /// Reads the whole blob and checks its digest without keeping the data.
    pub fn verify(&self, digest: &Digest) -> Result<(), StoreError> {
        self.write_blob_to(digest, &mut io::sink())
    }

    /// Copies the blob to a new file at `dest` (which must not exist), verified, with the
    /// executable bit as asked.
    pub fn materialize(
        &self,
        digest: &Digest,
        dest: &Path,
        executable: bool,
    ) -> Result<(), StoreError> {
        let mode = if executable { 0o755 } else { 0o644 };
        let mut out = open_new(dest, mode).map_err(|e| self.classify("create", dest, e))?;
        let result = self.write_blob_to(digest, &mut out);
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }

    /// The cached result of `action`, if any. A damaged entry is removed and reported as
    /// absent, so the action runs again.
    pub fn get_action_result(
        &self,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>, StoreError> {
        let Some(payload) = self.get_record(RecordKind::ActionResult, action)? else {
            return Ok(None);
        };
        match reapi::ActionResult::decode(&payload[..]) {
            Ok(result) => Ok(Some(result)),
            Err(_) => {
                self.remove_record(RecordKind::ActionResult, action);
                Ok(None)
            }
        }
    }

    /// Records the result of `action`, replacing any earlier one.
    pub fn put_action_result(
        &self,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), StoreError> {
        self.put_record(RecordKind::ActionResult, action, &result.encode_to_vec())
    }

    /// A small keyed record of `kind` (checksummed; a damaged one is removed, reported and
    /// treated as absent).
    pub fn get_record(
        &self,
        kind: RecordKind,
        key: &Digest,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.record_path(kind, key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.classify("read", &path, e)),
        };
        let intact = data.len() >= 32 && Sha256::digest(&data[32..]).as_slice() == &data[..32];
        if !intact {
            tracing::warn!(
                "{} {} was corrupt; removed it",
                kind.describe(),
                path.display()
            );
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        if let Ok(f) = File::open(&path) {
            touch_file(&f, self.touch_after());
        }
        Ok(Some(data[32..].to_vec()))
    }

    /// Writes a record of `kind`, atomically replacing any earlier one.
    pub fn put_record(
        &self,
        kind: RecordKind,
        key: &Digest,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        let mut tmp = self.temp_file()?;
        tmp.write_all(&Sha256::digest(payload))
            .and_then(|()| tmp.write_all(payload))
            .map_err(|e| self.classify("write", tmp.path(), e))?;
        let path = self.record_path(kind, key);
        self.ensure_parent(&path)?;
        tmp.persist(&path)
            .map_err(|e| self.classify("rename into", &path, e.error))?;
        self.account(payload.len() as u64 + 32)
    }

    /// Deletes a record.
    pub fn remove_record(&self, kind: RecordKind, key: &Digest) {
        let _ = fs::remove_file(self.record_path(kind, key));
    }

    fn record_path(&self, kind: RecordKind, key: &Digest) -> PathBuf {
        shard_path(&self.root.join(kind.dir()), key)
    }

    /// Forgets the cached result of `action`.
    pub fn remove_action_result(&self, action: &Digest) {
        self.remove_record(RecordKind::ActionResult, action);
    }

    /// Deletes the blob (used when a reader found it damaged).
    pub fn remove_blob(&self, digest: &Digest) {
        let _ = fs::remove_file(self.blob_path(digest));
    }

    /// Bytes currently accounted to the store (approximate between evictions).
    pub fn accounted_size(&self) -> Result<u64, StoreError> {
        self.update_size(|s| s)
    }

    /// Evicts least-recently-used entries until the store is under its target size, unless
    /// another process is already doing so. Returns the bytes freed. Entries used within
    /// [`EVICTION_GRACE`] stay even when that leaves the store over its limit (said once per
    /// process, naming `cache_size`).
    pub fn evict(&self) -> Result<u64, StoreError> {
        let lock_path = self.root.join("gc.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.classify("open", &lock_path, e))?;
        if lock.try_lock().is_err() {
            return Ok(0);
        }
        let now = SystemTime::now();
        sweep_staging(&self.root.join("tmp"), now);
        let mut entries = Vec::new();
        let mut total = 0u64;
        for kind in [
            "cas",
            RecordKind::ActionResult.dir(),
            RecordKind::Manifest.dir(),
        ] {
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

    /// Opens the blob for reading, refreshed. A file whose size is not the digest's is not
    /// this digest's blob: [`StoreError::Missing`], and the file stays for its own digest.
    fn open_blob(&self, digest: &Digest, path: &Path) -> Result<File, StoreError> {
        match File::open(path) {
            Ok(f) => {
                let size = f.metadata().map_err(|e| io_error("stat", path, e))?.len();
                if size != digest.size() {
                    return Err(StoreError::Missing {
                        digest: *digest,
                        dir: self.root.clone(),
                    });
                }
                touch_file(&f, self.touch_after());
                Ok(f)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::Missing {
                digest: *digest,
                dir: self.root.clone(),
            }),
            Err(e) => Err(self.classify("open", path, e)),
        }
    }

    fn check(&self, digest: &Digest, path: &Path, actual: Digest) -> Result<(), StoreError> {
        if actual == *digest {
            return Ok(());
        }
        if actual.hash_bytes() == digest.hash_bytes() {
            // The content is whole (the file changed size under us, or the digest's size is
            // wrong): nothing to delete, but not this digest's blob either.
            return Err(StoreError::Missing {
                digest: *digest,
                dir: self.root.clone(),
            });
        }
        self.remove_blob(digest);
        Err(StoreError::Corrupt {
            digest: *digest,
            path: path.to_path_buf(),
            actual,
        })
    }

    fn temp_file(&self) -> Result<tempfile::NamedTempFile, StoreError> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&dir)
            .map_err(|e| self.classify("create a file in", &dir, e))
    }

    /// Moves a staged blob to its name, never replacing an existing one: a concurrent writer
    /// of the same blob wins and this copy is dropped. No fsync: a blob torn by a crash
    /// fails verification on its next read and is removed then.
    fn install(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        let _ = tmp
            .as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444));
        let tmp = match tmp.persist_noclobber(&dest) {
            Ok(_) => return self.account(digest.size()),
            Err(e) if e.error.kind() == io::ErrorKind::NotFound => {
                self.ensure_parent(&dest)?;
                e.file
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => e.file,
            Err(e) => return Err(self.classify("rename into", &dest, e.error)),
        };
        match tmp.persist_noclobber(&dest) {
            Ok(_) => self.account(digest.size()),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                if refresh(&dest, digest.size(), self.touch_after()) {
                    return Ok(());
                }
                // The blob there has the wrong size: torn by a crash of the machine (blobs
                // are not fsynced). Ours hashes to the name; rename replaces atomically.
                e.file
                    .persist(&dest)
                    .map_err(|e| self.classify("rename into", &dest, e.error))?;
                Ok(())
            }
            Err(e) => Err(self.classify("rename into", &dest, e.error)),
        }
    }

    /// Links `src` to the blob's name. `link(2)` never replaces an existing name, so a blob
    /// stored by two processes at once is whole whichever wins.
    fn link_into_place(&self, src: &Path, digest: &Digest) -> Result<(), StoreError> {
        let dest = self.blob_path(digest);
        let _ = fs::set_permissions(src, std::os::unix::fs::PermissionsExt::from_mode(0o444));
        let linked = match fs::hard_link(src, &dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_parent(&dest)?;
                fs::hard_link(src, &dest)
            }
            other => other,
        };
        match linked {
            Ok(()) => self.account(digest.size()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if refresh(&dest, digest.size(), self.touch_after()) {
                    return Ok(());
                }
                // A torn blob of the wrong size: replace it atomically, through a staged link.
                let staged = self.temp_file()?.into_temp_path();
                let staged_path = staged.to_path_buf();
                fs::remove_file(&staged_path)
                    .and_then(|()| fs::hard_link(src, &staged_path))
                    .and_then(|()| fs::rename(&staged_path, &dest))
                    .map_err(|e| self.classify("link into", &dest, e))?;
                // The rename consumed the staged name; nothing is left to delete.
                let _ = staged.keep();
                Ok(())
            }
            Err(e) => Err(self.classify("link into", &dest, e)),
        }
    }

    fn ensure_parent(&self, path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(parent) => {
                fs::create_dir_all(parent).map_err(|e| self.classify("create", parent, e))
            }
            None => Ok(()),
        }
    }

    /// Adds `bytes` to the accounted size and evicts when the limit is passed.
    fn account(&self, bytes: u64) -> Result<(), StoreError> {
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

    /// Turns an I/O error into the variant a user can act on.
    fn classify(&self, op: &'static str, path: &Path, error: io::Error) -> StoreError {
        use io::ErrorKind::*;
        match error.kind() {
            StorageFull | QuotaExceeded | FileTooLarge => StoreError::Full {
                dir: self.root.clone(),
                error,
            },
            PermissionDenied | ReadOnlyFilesystem => StoreError::Unusable {
                dir: path.to_path_buf(),
                error,
            },
            _ => io_error(op, path, error),
        }
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

fn io_error(op: &'static str, path: &Path, error: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// The empty blob is present in every store without a file: much output is empty, and
/// it needs neither a read nor a write.
fn is_empty_blob(digest: &Digest) -> bool {
    static EMPTY: std::sync::LazyLock<Digest> = std::sync::LazyLock::new(Digest::empty);
    digest.size() == 0 && *digest == *EMPTY
}

fn shard_path(base: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    base.join(&hex[..2]).join(hex)
}

fn open_new(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Refreshes an entry's modification time (its LRU age) when older than `after`.
fn touch_file(file: &File, after: Duration) {
    let now = SystemTime::now();
    let stale = file
        .metadata()
        .and_then(|m| m.modified())
        .map(|m| now.duration_since(m).unwrap_or_default() > after)
        .unwrap_or(false);
    if stale {
        let _ = file.set_modified(now);
    }
}

/// Refreshes the blob at `path` (when older than `after`) if it is present with `size`,
/// and says whether it is. The refresh happens under a shared flock, after checking that
/// the name still leads to the opened inode, so it cannot interleave with
/// [`remove_if_old`].
fn refresh(path: &Path, size: u64, after: Duration) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if size != meta.len() {
        return false;
    }
    let now = SystemTime::now();
    let fresh = meta
        .modified()
        .is_ok_and(|m| now.duration_since(m).unwrap_or_default() <= after);
    if fresh {
        // Young enough that no evictor takes it within the grace period.
        return true;
    }
    if file.lock_shared().is_err() {
        return false;
    }
    let still_named =
        fs::symlink_metadata(path).is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
    if still_named {
        let _ = file.set_modified(now);
    }
    let _ = file.unlock();
    still_named
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store(limit: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), limit).unwrap();
        (dir, store)
    }

    #[test]
    fn put_then_get_round_trips() {
        let (_d, s) = store(1 << 30);
        let d = s.put_bytes(b"hello\n").unwrap();
        assert_eq!(d, Digest::of_bytes(b"hello\n"));
        assert_eq!(s.get_bytes(&d).unwrap(), b"hello\n");
        // Storing again is a no-op that still succeeds.
        assert_eq!(s.put_bytes(b"hello\n").unwrap(), d);
        assert_eq!(s.accounted_size().unwrap(), 6);
    }

    #[test]
    fn corrupt_blob_is_removed_not_served() {
        let (_d, s) = store(1 << 30);
        let d = s.put_bytes(b"precious bytes").unwrap();
        let path = s.blob_path(&d);
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let mut data = fs::read(&path).unwrap();
        data[3] ^= 0x01;
        fs::write(&path, data).unwrap();
        match s.get_bytes(&d) {
            Err(StoreError::Corrupt { .. }) => {}
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!s.contains(&d), "the corrupt blob must be gone");
        assert!(matches!(s.get_bytes(&d), Err(StoreError::Missing { .. })));
    }

    #[test]
    fn put_file_detects_a_changed_source() {
        let (dir, s) = store(1 << 30);
        let src = dir.path().join("src");
        fs::write(&src, b"one").unwrap();
        let stale = Digest::of_bytes(b"two");
        assert!(matches!(
            s.put_file(&src, Some(stale)),
            Err(StoreError::Changed { .. })
        ));
        assert!(!s.contains(&stale));
        assert_eq!(s.put_file(&src, None).unwrap(), Digest::of_bytes(b"one"));
    }

    #[test]
    fn damaged_action_result_is_a_miss() {
        let (_d, s) = store(1 << 30);
        let action = Digest::of_bytes(b"action");
        let result = reapi::ActionResult {
            exit_code: 0,
            stdout_digest: Some(Digest::of_bytes(b"out").to_proto()),
            ..Default::default()
        };
        s.put_action_result(&action, &result).unwrap();
        assert_eq!(s.get_action_result(&action).unwrap(), Some(result));
        let path = s.record_path(RecordKind::ActionResult, &action);
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&path, data).unwrap();
        assert_eq!(s.get_action_result(&action).unwrap(), None);
        assert!(!path.exists());
    }

    fn age(s: &Store, d: &Digest, secs: u64) {
        File::open(s.blob_path(d))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn eviction_keeps_the_store_under_its_limit_and_drops_the_oldest() {
        let (_d, s) = store(10_000);
        let old = s.put_bytes(&[1u8; 3000]).unwrap();
        let mid = s.put_bytes(&[2u8; 3000]).unwrap();
        let new = s.put_bytes(&[3u8; 3000]).unwrap();
        assert!(s.contains(&old) && s.contains(&mid) && s.contains(&new));
        // All three last used before the grace period, the oldest longest ago.
        age(&s, &old, 7200);
        age(&s, &mid, 3600);
        age(&s, &new, 1800);
        // This one passes the limit and triggers eviction of the least recently used.
        let newest = s.put_bytes(&[4u8; 3000]).unwrap();
        assert!(
            !s.blob_path(&old).exists(),
            "least recently used goes first"
        );
        assert!(!s.blob_path(&mid).exists());
        assert!(s.contains(&new) && s.contains(&newest));
        assert!(s.accounted_size().unwrap() <= 8_000);
    }

    // See: issue 12, defect 4
    #[test]
    fn r12_a_hostile_size_is_an_error_not_an_allocation() {
        let (_d, s) = store(1 << 30);
        let tree = reapi::Tree::default();
        let real = s
            .put_message(&reapi::Tree {
                root: Some(reapi::Directory::default()),
                ..tree
            })
            .unwrap();
        let hostile = Digest::from_parts(*real.hash_bytes(), 1 << 50);
        match s.get_bytes(&hostile) {
            Err(StoreError::TooLarge { size, .. }) => assert_eq!(size, 1 << 50),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(matches!(
            s.get_message::<reapi::Tree>(&hostile, "Tree"),
            Err(StoreError::TooLarge { .. })
        ));
        // Under the in-memory bound but not the file's size: a miss, still no allocation.
        let lying = Digest::from_parts(*real.hash_bytes(), MAX_IN_MEMORY_BLOB - 1);
        assert!(matches!(
            s.get_bytes(&lying),
            Err(StoreError::Missing { .. })
        ));
        assert!(!s.contains(&hostile) && !s.contains(&lying));
        assert!(s.get_message::<reapi::Tree>(&real, "Tree").is_ok());
    }

    // See: issue 12, defect 4
    #[test]
    fn r12_a_size_mismatch_keeps_the_valid_blob() {
        let (_d, s) = store(1 << 30);
        let real = s.put_bytes(b"the valid blob").unwrap();
        for wrong in [real.size() + 1, real.size() - 1] {
            let digest = Digest::from_parts(*real.hash_bytes(), wrong);
            assert!(!s.contains(&digest), "size {wrong} must be a miss");
            assert!(matches!(
                s.get_bytes(&digest),
                Err(StoreError::Missing { .. })
            ));
            assert!(matches!(s.verify(&digest), Err(StoreError::Missing { .. })));
            assert!(s.put_bytes(b"the valid blob").is_ok());
            assert!(s.contains(&real), "the valid blob was deleted");
            assert_eq!(s.get_bytes(&real).unwrap(), b"the valid blob");
        }
    }

    #[test]
    fn a_torn_blob_of_the_wrong_size_is_replaced_by_the_next_store() {
        let (_d, s) = store(1 << 30);
        let real = s.put_bytes(b"whole content").unwrap();
        let path = s.blob_path(&real);
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"whole").unwrap();
        assert!(!s.contains(&real));
        assert_eq!(s.put_bytes(b"whole content").unwrap(), real);
        assert_eq!(s.get_bytes(&real).unwrap(), b"whole content");
    }

    // See: issue 12, defect 6
    #[test]
    fn r12_blobs_in_use_are_not_evicted_even_past_the_limit() {
        let (_d, s) = store(1000);
        // One action's inputs: together three times the cache size.
        let inputs: Vec<Digest> = (0..3u8).map(|i| s.put_bytes(&[i; 1000]).unwrap()).collect();
        for d in &inputs {
            assert!(s.contains(d), "an input just stored was evicted");
            assert_eq!(s.get_bytes(d).unwrap().len(), 1000);
        }
        // Once they age past the grace period they go.
        for d in &inputs {
            age(&s, d, EVICTION_GRACE.as_secs() + 120);
        }
        s.evict().unwrap();
        assert!(inputs.iter().all(|d| !s.blob_path(d).exists()));
    }

    // See: issue 12, defect 6
    #[test]
    fn r12_contains_refreshes_age() {
        let (_d, s) = store(1 << 30);
        let d = s.put_bytes(b"used again").unwrap();
        age(&s, &d, 3600);
        assert!(s.contains(&d));
        let mtime = fs::metadata(s.blob_path(&d)).unwrap().modified().unwrap();
        let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
        assert!(
            age < TOUCH_GRANULARITY,
            "contains left the blob {age:?} old"
        );
    }

    #[test]
    fn a_shorter_grace_lets_eviction_take_recent_entries() {
        let (_d, s) = store(1000);
        let s = s.with_eviction_grace(Duration::from_secs(20));
        let d = s.put_bytes(&[9u8; 800]).unwrap();
        age(&s, &d, 30);
        s.put_bytes(&[8u8; 800]).unwrap();
        assert!(!s.blob_path(&d).exists(), "30 s old is past a 20 s grace");
    }

    #[test]
    fn verify_all_removes_damage_and_counts_the_rest() {
        let (_d, s) = store(1 << 30);
        let good = s.put_bytes(b"good").unwrap();
        let bad = s.put_bytes(b"bad!").unwrap();
        let path = s.blob_path(&bad);
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"BAD!").unwrap();
        s.put_action_result(&good, &reapi::ActionResult::default())
            .unwrap();
        let report = s.verify_all().unwrap();
        assert_eq!(
            report,
            VerifyReport {
                blobs_ok: 1,
                blobs_removed: 1,
                records_ok: 1,
                records_removed: 0
            }
        );
        assert!(!path.exists());
    }

    #[test]
    fn unwritable_directory_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let err = Store::open(file.join("store"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
