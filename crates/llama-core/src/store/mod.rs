//! The on-disk store: a content-addressed blob store (CAS) and an action cache (AC) under one
//! directory, bounded in size, shared safely by any number of processes.
//!
//! Layout under the store root (`$LLAMA_DIR`):
//!
//! ```text
//! cas/ab/abcdef...   blobs, named by the hex SHA-256 of their content (read-only)
//! cas-z/ab/...       blobs kept zstd-compressed instead: one frame, its header giving the
//!                    content's size (see `compress` for which blobs, and why)
//! cas-x/ab/...       read-only executable copies of blobs, for inputs laid out by link
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
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;
use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};

mod compress;
mod gc;
mod link;
#[cfg(test)]
mod tests;

pub use compress::MIN_COMPRESSED;
use compress::{BlobReader, OpenBlob, content_size};
pub use link::LinkedInput;

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
    /// A blob's content does not hash to its name (or, compressed, does not decompress);
    /// it has been deleted.
    #[error("blob {path} was corrupt (its content hashes to {actual}); removed it")]
    Corrupt {
        /// The blob asked for.
        digest: Digest,
        /// Where it was.
        path: PathBuf,
        /// What its content (as far as it decompressed) actually hashes to.
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
    const fn dir(self) -> &'static str {
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
    /// Whether blobs copied in are kept compressed where that pays (`compress`).
    compress: bool,
}

/// What the store holds ([`Store::usage`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Content blobs (inputs, outputs, logs).
    pub blobs: u64,
    /// Blobs kept zstd-compressed instead (`cache_compression`).
    pub compressed_blobs: u64,
    /// Executable copies of blobs, made for linking into actions.
    pub executables: u64,
    /// Action-cache entries: one per cached result.
    pub action_results: u64,
    /// llamacc's manifests: one per compile command seen.
    pub manifests: u64,
    /// Bytes of all of them.
    pub bytes: u64,
}

/// What [`Store::verify_all`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
            compress: false,
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

    /// The same store, keeping the blobs it copies in zstd-compressed where that saves an
    /// eighth or more (see `compress`). Only writes change: blobs are read in either form
    /// whatever this says, so processes that share a store may differ. Off by default: a
    /// store whose blobs others read by [`Store::blob_path`] (the runtime's) must keep it off.
    pub fn with_compression(mut self, on: bool) -> Store {
        self.compress = on;
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

    /// Where the blob named `digest` lives uncompressed (whether or not it is present). With
    /// [`Store::with_compression`] on, a blob may be held compressed instead: read blobs
    /// through the store, not by this path.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.root.join("cas"), digest)
    }

    /// True when a blob with this digest's hash *and size* is present (not verified; reads
    /// verify). Refreshes the blob's age, so a blob found present is not evicted before the
    /// caller uses it (see "Eviction and readers"). A digest whose size differs from the
    /// stored blob's is absent: the blob under that hash stays, it is the digest that is wrong.
    pub fn contains(&self, digest: &Digest) -> bool {
        let after = self.touch_after();
        is_empty_blob(digest)
            || refresh(&self.blob_path(digest), digest.size(), after)
            || refresh_compressed(&self.compressed_path(digest), digest.size(), after)
    }

    /// Stores an in-memory blob and returns its digest.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest, StoreError> {
        let digest = Digest::of_bytes(data);
        if self.contains(&digest) {
            return Ok(digest);
        }
        if self.should_compress(digest.size())
            && let Some(staged) = self.stage_compressed(&mut &data[..], digest.size())?
        {
            self.install_compressed(staged)?;
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
        if let Some(digest) = self.put_file_compressed(&mut src, path, expected)? {
            return Ok(digest);
        }
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
        // Held already (perhaps compressed): a second copy would only take space.
        if !is_empty_blob(&digest) && !self.contains(&digest) {
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
        let blob = self.open_blob(digest)?;
        self.copy_verified(blob, digest, out, None)
    }

    /// [`Store::write_blob_to`] into the file at `path`, opened as `out`.
    fn write_blob_to_file(
        &self,
        digest: &Digest,
        out: &mut File,
        path: &Path,
    ) -> Result<(), StoreError> {
        if is_empty_blob(digest) {
            return Ok(());
        }
        let blob = self.open_blob(digest)?;
        self.copy_verified(blob, digest, out, Some(path))
    }

    /// Copies an opened blob to `out` and checks it against `digest` (see
    /// [`Store::write_blob_to`]). One byte more than the digest's size is read, to see a
    /// file that grew (or a frame that inflates past it) without reading it all.
    /// `out_path`: the file `out` writes, when known, so that failing to write it is
    /// reported as that (a full disk as [`StoreError::Full`]) rather than as a failed read.
    fn copy_verified(
        &self,
        blob: OpenBlob,
        digest: &Digest,
        out: &mut dyn Write,
        out_path: Option<&Path>,
    ) -> Result<(), StoreError> {
        let compressed = blob.is_compressed();
        let path = blob.path.clone();
        let mut reader = TrackRead {
            inner: io::BufReader::with_capacity(64 * 1024, blob.take(digest.size() + 1)),
            failed: false,
        };
        let mut writer = HashingWriter::new(out);
        let copied = io::copy(&mut reader, &mut writer);
        let (_, actual) = writer.finish();
        match copied {
            Ok(_) => self.check(digest, &path, actual),
            // A frame that does not decode is damage, like a wrong hash.
            Err(_) if compressed && reader.failed => self.damaged(digest, &path, actual),
            Err(e) => match out_path {
                Some(out) if !reader.failed => Err(self.classify("write", out, e)),
                _ => Err(io_error("read", &path, e)),
            },
        }
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
        let blob = self.open_blob(digest)?;
        // open_blob checked the content's size against the digest's, now within the bound.
        let mut data = Vec::with_capacity(digest.size() as usize);
        self.copy_verified(blob, digest, &mut data, None)?;
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
        let result = self.write_blob_to_file(digest, &mut out, dest);
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

    /// Deletes the blob, raw and compressed (used when a reader found it damaged).
    pub fn remove_blob(&self, digest: &Digest) {
        let _ = fs::remove_file(self.blob_path(digest));
        let _ = fs::remove_file(self.compressed_path(digest));
    }

    /// Opens the blob for reading, refreshed: the raw file if it is whole, else the
    /// compressed one. A file whose (content) size is not the digest's is not this digest's
    /// blob: [`StoreError::Missing`], and the file stays for its own digest.
    fn open_blob(&self, digest: &Digest) -> Result<OpenBlob, StoreError> {
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => {
                let size = f.metadata().map_err(|e| io_error("stat", &path, e))?.len();
                if size == digest.size() {
                    touch_file(&f, self.touch_after());
                    return Ok(OpenBlob {
                        reader: BlobReader::Raw(f),
                        path,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.classify("open", &path, e)),
        }
        let path = self.compressed_path(digest);
        match File::open(&path) {
            Ok(f) if content_size(&f) == Some(digest.size()) => {
                touch_file(&f, self.touch_after());
                OpenBlob::compressed(f, path.clone()).map_err(|e| self.classify("open", &path, e))
            }
            Ok(_) => Err(self.missing(digest)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.missing(digest)),
            Err(e) => Err(self.classify("open", &path, e)),
        }
    }

    fn missing(&self, digest: &Digest) -> StoreError {
        StoreError::Missing {
            digest: *digest,
            dir: self.root.clone(),
        }
    }

    fn check(&self, digest: &Digest, path: &Path, actual: Digest) -> Result<(), StoreError> {
        if actual == *digest {
            return Ok(());
        }
        if actual.hash_bytes() == digest.hash_bytes() {
            // The content is whole (the file changed size under us, or the digest's size is
            // wrong): nothing to delete, but not this digest's blob either.
            return Err(self.missing(digest));
        }
        self.damaged(digest, path, actual)
    }

    /// Removes the damaged blob file at `path` (only that one: the other form, if present,
    /// is checked when read) and reports it.
    fn damaged(&self, digest: &Digest, path: &Path, actual: Digest) -> Result<(), StoreError> {
        let _ = fs::remove_file(path);
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
        let after = self.touch_after();
        let present = |p: &Path| refresh(p, digest.size(), after);
        self.install_at(tmp, &self.blob_path(digest), digest.size(), &present)
    }

    /// [`Store::install`] for a staged compressed copy.
    fn install_compressed(&self, staged: compress::Staged) -> Result<(), StoreError> {
        let (after, size) = (self.touch_after(), staged.digest.size());
        let present = |p: &Path| refresh_compressed(p, size, after);
        let dest = self.compressed_path(&staged.digest);
        self.install_at(staged.file, &dest, staged.bytes, &present)
    }

    /// Renames `tmp` (of `bytes` on disk) to `dest` without replacing a whole entry there
    /// (`present` says whether it is one) and accounts for it.
    fn install_at(
        &self,
        tmp: tempfile::NamedTempFile,
        dest: &Path,
        bytes: u64,
        present: &dyn Fn(&Path) -> bool,
    ) -> Result<(), StoreError> {
        let _ = tmp
            .as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o444));
        let tmp = match tmp.persist_noclobber(dest) {
            Ok(_) => return self.account(bytes),
            Err(e) if e.error.kind() == io::ErrorKind::NotFound => {
                self.ensure_parent(dest)?;
                e.file
            }
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => e.file,
            Err(e) => return Err(self.classify("rename into", dest, e.error)),
        };
        match tmp.persist_noclobber(dest) {
            Ok(_) => self.account(bytes),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                if present(dest) {
                    return Ok(());
                }
                // The blob there has the wrong size: torn by a crash of the machine (blobs
                // are not fsynced). Ours hashes to the name; rename replaces atomically.
                e.file
                    .persist(dest)
                    .map_err(|e| self.classify("rename into", dest, e.error))?;
                Ok(())
            }
            Err(e) => Err(self.classify("rename into", dest, e.error)),
        }
    }

    /// [`Store::put_file`]'s compressed path: `Some(digest)` when the file was stored
    /// compressed, `None` when it is to be stored raw (compression off, too small, not
    /// worth it, or the file changed while being compressed: the raw path sees that too).
    fn put_file_compressed(
        &self,
        src: &mut File,
        path: &Path,
        expected: Option<Digest>,
    ) -> Result<Option<Digest>, StoreError> {
        let size = src.metadata().map_err(|e| io_error("stat", path, e))?.len();
        if !self.should_compress(size) {
            return Ok(None);
        }
        let staged = match self.stage_compressed(src, size) {
            Ok(staged) => staged,
            Err(StoreError::Io { .. }) => None,
            Err(e) => return Err(e),
        };
        use std::io::Seek as _;
        src.rewind().map_err(|e| io_error("read", path, e))?;
        let Some(staged) = staged else {
            return Ok(None);
        };
        let digest = staged.digest;
        if expected.is_some_and(|e| e != digest) {
            return Err(StoreError::Changed {
                path: path.to_path_buf(),
            });
        }
        self.install_compressed(staged)?;
        Ok(Some(digest))
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
    refresh_where(path, after, &|_, meta| meta.len() == size)
}

/// [`refresh`], with `whole` saying whether the opened file is the entry sought.
fn refresh_where(
    path: &Path,
    after: Duration,
    whole: &dyn Fn(&File, &fs::Metadata) -> bool,
) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !whole(&file, &meta) {
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

/// A reader that remembers whether reading failed, so that a copy's error can be told
/// apart from the writer's.
struct TrackRead<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for TrackRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// [`refresh`] for a compressed blob: present when its frame header declares `size`.
fn refresh_compressed(path: &Path, size: u64, after: Duration) -> bool {
    refresh_where(path, after, &|file, _| content_size(file) == Some(size))
}
