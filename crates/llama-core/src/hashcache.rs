//! The stat-keyed hash cache: remembers the digest of a file by its identity and change
//! stamps, so an unchanged file is never read twice.
//!
//! The key is (device, inode, size, mtime ns, ctime ns). Any write to a file changes its
//! ctime, and ctime cannot be set from user space, so a matching key means matching content.
//! One hole remains: a file written twice within one tick of the file-system clock keeps its
//! stamps. Entries whose ctime is that recent are therefore used but not recorded (git's
//! "racy" rule).
//!
//! Persisted as an append-only file of framed records, which many processes can append to
//! at once; a later record for the same key wins. The file is rewritten compactly when it
//! has grown well past the number of live entries.
//!
//! Each record carries its own marker and checksum (`LLHR`, 72 bytes of key and digest, the
//! first 4 bytes of their SHA-256). An append torn by a crash or a full disk leaves a partial
//! record; the loader skips whatever does not check out and resynchronises on the next
//! marker, so the records appended after it are still read.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// The file's header. Version 01 had unframed records, which one torn append misaligned.
const MAGIC: &[u8; 8] = b"LLHASH02";
/// Starts every record.
const RECORD_MARK: &[u8; 4] = b"LLHR";
/// Key and digest.
const PAYLOAD_LEN: usize = 8 * 5 + 32;
const CHECKSUM_LEN: usize = 4;
const RECORD_LEN: usize = RECORD_MARK.len() + PAYLOAD_LEN + CHECKSUM_LEN;

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

    /// Appends one framed record.
    fn encode(&self, digest: &Digest, out: &mut Vec<u8>) {
        out.extend_from_slice(RECORD_MARK);
        let start = out.len();
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
        let sum = Sha256::digest(&out[start..]);
        out.extend_from_slice(&sum[..CHECKSUM_LEN]);
    }

    /// The record at the start of `data`, if one is whole and checks out.
    fn decode_framed(data: &[u8]) -> Option<(StatKey, Digest)> {
        let rec = data.get(..RECORD_LEN)?;
        let (mark, rest) = rec.split_at(RECORD_MARK.len());
        let (payload, sum) = rest.split_at(PAYLOAD_LEN);
        if mark != RECORD_MARK || Sha256::digest(payload)[..CHECKSUM_LEN] != *sum {
            return None;
        }
        StatKey::decode(payload)
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
                let (records, damaged) = read_records(&data[MAGIC.len()..]);
                for (key, digest) in records {
                    state.entries.insert(key, digest);
                    state.records_on_disk += 1;
                }
                if damaged > 0 {
                    tracing::debug!(
                        damaged,
                        "skipped damaged bytes in hash cache {}",
                        path.display()
                    );
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

/// Every record that checks out in `data`, and how many bytes were skipped around damage.
/// After a bad record the scan moves on byte by byte to the next marker: a torn record is
/// shorter than [`RECORD_LEN`], so the record after it starts inside what a fixed stride
/// would take for it.
fn read_records(data: &[u8]) -> (Vec<(StatKey, Digest)>, usize) {
    let mut records = Vec::with_capacity(data.len() / RECORD_LEN);
    let mut skipped = 0;
    let mut at = 0;
    while at < data.len() {
        if let Some(record) = StatKey::decode_framed(&data[at..]) {
            records.push(record);
            at += RECORD_LEN;
            continue;
        }
        let next = data[at + 1..]
            .windows(RECORD_MARK.len())
            .position(|w| w == RECORD_MARK)
            .map_or(data.len(), |p| at + 1 + p);
        skipped += next - at;
        at = next;
    }
    (records, skipped)
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

    fn aged_file(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, fs::Metadata) {
        let file = dir.join(name);
        fs::write(&file, content).unwrap();
        age(&file);
        (file.clone(), fs::metadata(&file).unwrap())
    }

    // See: issue 12, defect 11e
    #[test]
    fn r12_a_torn_append_does_not_hide_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_meta) = aged_file(dir.path(), "a", b"first");
        let (b, b_meta) = aged_file(dir.path(), "b", b"second");
        let (c, c_meta) = aged_file(dir.path(), "c", b"third");
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(100));
        let db = dir.path().join("hashcache");

        let first = HashCache::load(&db);
        first.digest(&a, &a_meta).unwrap();
        first.digest(&b, &b_meta).unwrap();
        first.save().unwrap();
        // A crash in the middle of appending b's record.
        let len = fs::metadata(&db).unwrap().len();
        File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(len - RECORD_LEN as u64 / 2)
            .unwrap();
        // Another process appends after the torn record.
        let second = HashCache::load(&db);
        second.digest(&c, &c_meta).unwrap();
        second.save().unwrap();

        let loaded = HashCache::load(&db);
        assert_eq!(
            loaded.digest(&c, &c_meta).unwrap(),
            Digest::of_bytes(b"third")
        );
        assert_eq!(
            loaded.digest(&a, &a_meta).unwrap(),
            Digest::of_bytes(b"first")
        );
        assert_eq!(
            loaded.counts(),
            (2, 0),
            "records after the torn one were lost"
        );
        // The torn record is a miss that costs a re-hash, never a wrong digest.
        assert_eq!(
            loaded.digest(&b, &b_meta).unwrap(),
            Digest::of_bytes(b"second")
        );
    }

    #[test]
    fn garbage_between_records_is_skipped() {
        let key = StatKey {
            dev: 1,
            ino: 2,
            size: 5,
            mtime_ns: 3,
            ctime_ns: 4,
        };
        let digest = Digest::of_bytes(b"hello");
        let mut data = b"LLHRjunk".to_vec();
        key.encode(&digest, &mut data);
        data.extend_from_slice(b"LL");
        key.encode(&digest, &mut data);
        let (records, skipped) = read_records(&data);
        assert_eq!(records, vec![(key, digest), (key, digest)]);
        assert_eq!(skipped, 10);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]
        /// Whatever the bytes, loading never panics and never yields a record that was not
        /// written whole.
        #[test]
        fn any_damage_yields_only_written_records(
            cut in 0usize..(3 * RECORD_LEN),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let keys: Vec<StatKey> = (0..3u64)
                .map(|i| StatKey { dev: i, ino: i, size: i, mtime_ns: 0, ctime_ns: 0 })
                .collect();
            let mut data = Vec::new();
            for k in &keys {
                k.encode(&Digest::from_parts([7; 32], k.size), &mut data);
            }
            data.truncate(cut);
            data.extend_from_slice(&noise);
            let (records, _) = read_records(&data);
            for (k, d) in records {
                proptest::prop_assert!(keys.contains(&k));
                proptest::prop_assert_eq!(d, Digest::from_parts([7; 32], k.size));
            }
        }
    }
}
