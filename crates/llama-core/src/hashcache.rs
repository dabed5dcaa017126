//! The stat-keyed hash cache: remembers the digest of a file by its identity and change
//! stamps, so an unchanged file is never read twice.
//!
//! The key is (device, inode, size, mtime ns, ctime ns). Any write to a file changes its
//! ctime, and ctime cannot be set from user space, so a matching key means matching content.
//! One hole remains: a file written twice within one tick of the file-system clock keeps its
//! stamps. Entries whose ctime is that recent are therefore used but not recorded (git's
//! "racy" rule).
//!
//! Persisted as an append-only file of fixed-size records, which many processes can append
//! to at once; a later record for the same key wins. The file is rewritten compactly when it
//! has grown well past the number of live entries.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;

const MAGIC: &[u8; 8] = b"LLHASH01";
const RECORD_LEN: usize = 8 * 5 + 32;

/// A file modified more recently than this is hashed but not remembered (see module docs).
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Rewrite the file when it holds this many times more records than live entries.
const COMPACT_FACTOR: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl StatKey {
    fn of(meta: &fs::Metadata) -> StatKey {
        StatKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        }
    }

    fn is_racy(&self, now: SystemTime) -> bool {
        let now_ns = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(i64::MAX);
        now_ns - self.ctime_ns.max(self.mtime_ns) < RACY_WINDOW.as_nanos() as i64
    }

    fn encode(&self, digest: &Digest, out: &mut Vec<u8>) {
        for v in [
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns as u64,
            self.ctime_ns as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(digest.hash_bytes());
    }

    fn decode(rec: &[u8]) -> Option<(StatKey, Digest)> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                rec.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let key = StatKey {
            dev: word(0)?,
            ino: word(1)?,
            size: word(2)?,
            mtime_ns: word(3)? as i64,
            ctime_ns: word(4)? as i64,
        };
        let hash: [u8; 32] = rec.get(40..72)?.try_into().ok()?;
        Some((key, Digest::from_parts(hash, key.size)))
    }
}

/// The cache, shared by the threads of one process.
#[derive(Debug)]
pub struct HashCache {
    path: Option<PathBuf>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<StatKey, Digest>,
    records_on_disk: usize,
    /// The file exists but is not ours to append to (damaged, or an older format).
    needs_rewrite: bool,
    unsaved: Vec<(StatKey, Digest)>,
    hits: u64,
    misses: u64,
}

impl HashCache {
    /// A cache that lives only in memory.
    pub fn in_memory() -> HashCache {
        HashCache {
            path: None,
            state: Mutex::new(State::default()),
        }
    }

    /// Loads the cache persisted at `path` (a missing or damaged file is an empty cache: it
    /// only ever costs a re-hash).
    pub fn load(path: impl Into<PathBuf>) -> HashCache {
        let path = path.into();
        let mut state = State::default();
        if let Ok(mut file) = File::open(&path) {
            let mut data = Vec::new();
            let readable = file.read_to_end(&mut data).is_ok() && data.starts_with(MAGIC);
            state.needs_rewrite = !readable;
            if readable {
                for rec in data[MAGIC.len()..].chunks_exact(RECORD_LEN) {
                    if let Some((key, digest)) = StatKey::decode(rec) {
                        state.entries.insert(key, digest);
                        state.records_on_disk += 1;
                    }
                }
            }
        }
        HashCache {
            path: Some(path),
            state: Mutex::new(state),
        }
    }

    /// The digest of the regular file at `path`, whose metadata the caller already has.
    pub fn digest(&self, path: &Path, meta: &fs::Metadata) -> io::Result<Digest> {
        let key = StatKey::of(meta);
        {
            let mut state = self.lock();
            if let Some(d) = state.entries.get(&key).copied() {
                state.hits += 1;
                return Ok(d);
            }
            state.misses += 1;
        }
        let digest = Digest::of_reader(File::open(path)?)?;
        // A file that changed while being read has new stamps: don't file it under the old.
        let after = fs::metadata(path)?;
        if StatKey::of(&after) == key && !key.is_racy(SystemTime::now()) {
            let mut state = self.lock();
            state.entries.insert(key, digest);
            state.unsaved.push((key, digest));
        }
        Ok(digest)
    }

    /// (hits, misses) since this cache was loaded.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.hits, state.misses)
    }

    /// Appends the entries learned since the last save (and compacts when worthwhile).
    /// Failure to save only costs re-hashing later, so callers may ignore the error.
    pub fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut state = self.lock();
        if state.unsaved.is_empty() {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let live = state.entries.len();
        let total = state.records_on_disk + state.unsaved.len();
        if state.needs_rewrite || total > COMPACT_FACTOR * live.max(1024) {
            let mut buf = Vec::with_capacity(MAGIC.len() + live * RECORD_LEN);
            buf.extend_from_slice(MAGIC);
            for (key, digest) in &state.entries {
                key.encode(digest, &mut buf);
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(&buf)?;
            tmp.persist(path).map_err(|e| e.error)?;
            state.records_on_disk = live;
            state.needs_rewrite = false;
        } else {
            let mut file = File::options().append(true).create(true).open(path)?;
            let mut buf = Vec::with_capacity(MAGIC.len() + state.unsaved.len() * RECORD_LEN);
            if file.metadata()?.len() == 0 {
                buf.extend_from_slice(MAGIC);
            }
            for (key, digest) in &state.unsaved {
                key.encode(digest, &mut buf);
            }
            // One write with O_APPEND: concurrent savers never interleave inside a record.
            file.write_all(&buf)?;
            state.records_on_disk += state.unsaved.len();
        }
        state.unsaved.clear();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }

    #[test]
    fn unchanged_file_is_hashed_once_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"content").unwrap();
        age(&file);
        // ctime is "now" after set_modified: wait out the racy window instead of faking it.
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(100));
        let db = dir.path().join("hashcache");
        let cache = HashCache::load(&db);
        let meta = fs::metadata(&file).unwrap();
        assert_eq!(
            cache.digest(&file, &meta).unwrap(),
            Digest::of_bytes(b"content")
        );
        cache.save().unwrap();
        let again = HashCache::load(&db);
        assert_eq!(
            again.digest(&file, &meta).unwrap(),
            Digest::of_bytes(b"content")
        );
        assert_eq!(again.counts(), (1, 0));
    }

    #[test]
    fn changed_file_is_rehashed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"one").unwrap();
        let cache = HashCache::in_memory();
        let d1 = cache.digest(&file, &fs::metadata(&file).unwrap()).unwrap();
        fs::write(&file, b"two").unwrap();
        let d2 = cache.digest(&file, &fs::metadata(&file).unwrap()).unwrap();
        assert_eq!(d1, Digest::of_bytes(b"one"));
        assert_eq!(d2, Digest::of_bytes(b"two"));
    }

    #[test]
    fn damaged_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hashcache");
        fs::write(&db, b"garbage").unwrap();
        let cache = HashCache::load(&db);
        assert_eq!(cache.counts(), (0, 0));
    }
}
