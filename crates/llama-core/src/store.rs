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
//! refresh.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};

/// Reads younger than this do not refresh a blob's timestamp: LRU needs only coarse recency,
/// and skipping the write keeps hot blobs cheap to read.
const TOUCH_GRANULARITY: Duration = Duration::from_secs(60);

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
    size_file: std::sync::Arc<std::sync::OnceLock<File>>,
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

    /// True when the blob is present (not verified; reads verify).
    pub fn contains(&self, digest: &Digest) -> bool {
        is_empty_blob(digest) || self.blob_path(digest).is_file()
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
        let digest = Digest::of_reader(file).map_err(|e| io_error("read", path, e))?;
        if !is_empty_blob(&digest) {
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

    /// Reads a whole blob into memory, verified. For blobs known to be small.
    pub fn get_bytes(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        if is_empty_blob(digest) {
            return Ok(Vec::new());
        }
        let path = self.blob_path(digest);
        let mut file = self.open_blob(digest, &path)?;
        let mut data = Vec::with_capacity(digest.size() as usize);
        file.read_to_end(&mut data)
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
        touch(&path);
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
    /// another process is already doing so. Returns the bytes freed.
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
        for (_, size, path) in entries {
            if total - freed <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                freed += size;
            }
        }
        let remaining = total - freed;
        self.update_size(|_| remaining)?;
        tracing::debug!(freed, remaining, "evicted from {}", self.root.display());
        Ok(freed)
    }

    fn open_blob(&self, digest: &Digest, path: &Path) -> Result<File, StoreError> {
        match File::open(path) {
            Ok(f) => {
                touch_file(&f);
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
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(self.classify("rename into", &dest, e.error)),
        };
        match tmp.persist_noclobber(&dest) {
            Ok(_) => self.account(digest.size()),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
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
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
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
        if total > self.limit {
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

/// Refreshes an entry's modification time (its LRU age), at most once a minute.
fn touch(path: &Path) {
    if let Ok(f) = File::open(path) {
        touch_file(&f);
    }
}

fn touch_file(file: &File) {
    let now = SystemTime::now();
    let stale = file
        .metadata()
        .and_then(|m| m.modified())
        .map(|m| now.duration_since(m).unwrap_or_default() > TOUCH_GRANULARITY)
        .unwrap_or(false);
    if stale {
        let _ = file.set_modified(now);
    }
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

    #[test]
    fn eviction_keeps_the_store_under_its_limit_and_drops_the_oldest() {
        let (_d, s) = store(10_000);
        let old = s.put_bytes(&[1u8; 3000]).unwrap();
        let old_path = s.blob_path(&old);
        File::open(&old_path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        let mid = s.put_bytes(&[2u8; 3000]).unwrap();
        let new = s.put_bytes(&[3u8; 3000]).unwrap();
        assert!(s.contains(&old) && s.contains(&mid) && s.contains(&new));
        // This one passes the limit and triggers eviction of the least recently used.
        let newest = s.put_bytes(&[4u8; 3000]).unwrap();
        assert!(!s.contains(&old), "least recently used goes first");
        assert!(s.contains(&newest));
        assert!(s.accounted_size().unwrap() <= 8_000);
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
