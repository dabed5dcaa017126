//! Why did this miss? At every compile the daemon writes a [`KeyRecord`]: what the compile
//! was keyed on (the compiler and its files, the arguments, the directory, the variables of
//! the key, the source and every header with its digest) and what came of it. `llama
//! explain` (and `LLAMACC_DEBUG=1`, per compile) compares the last record of an output with
//! the closest earlier one and names, in plain words, each part of the key that differs
//! ([`Explanation`]).
//!
//! Where the records live: one store record per output ([`RecordKind::Explain`], keyed by
//! the output's absolute path) holding its last [`RECORDS_PER_OUTPUT`] records, newest
//! first, replaced atomically at each compile and evicted with the cache's other entries,
//! least recently used first. The header list of a record is a blob in the CAS, the
//! manifest [`Entry`] the compile was found by or recorded as: compiles with the same
//! headers share it. Both are read as hostile: sizes are checked before decoding, and a
//! record that does not decode is skipped, not fatal.
//!
//! Privacy: a record holds the arguments and only the variables that are part of the key
//! ([`crate::service::OUTPUT_ENV`]), never the rest of the environment.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use llama_core::{Digest, RecordKind, Store, StoreError};

use crate::manifest::Entry;
use crate::stats::Outcome;

mod diff;
mod render;

pub use diff::{Conclusion, Difference, Earlier, Explanation, explain};

/// How many compiles of one output are kept: enough to find the last one with other flags
/// (a debug and a release build of one object) or the last one cached, few enough to
/// rewrite at every compile.
pub const RECORDS_PER_OUTPUT: usize = 8;

/// A record file past this is not read: eight records of compiles with thousands of
/// arguments each fit in far less.
const MAX_HISTORY_BYTES: usize = 4 << 20;

/// A header list past this is not read (a compile that reads 100,000 headers fits).
const MAX_HEADERS_BYTES: u64 = 64 << 20;

/// The format of one record, first byte of its encoding: a record of another format
/// (written by another version of llama) is skipped.
const FORMAT: u8 = 1;

/// One compile, as its key saw it: what `llama explain` compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// When the daemon took the compile, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The output file, absolute, as [`output_path`] spells it.
    pub output: String,
    /// The working directory.
    pub cwd: String,
    /// The arguments as keyed (after `LLAMACC_FILTER_WARNINGS`), without the compiler.
    pub args: Vec<String>,
    /// What came of it: the counter of `llama stats` it was counted under (`hits`, ...).
    pub outcome: String,
    /// Why, when the outcome has a reason (`llama stats`' reason, with its detail).
    pub reason: Option<String>,
    /// The compiler's exit status, when the daemon ran it.
    pub exit_code: Option<i32>,
    /// The parts of the key, when the compile got as far as the cache.
    pub key: Option<KeyParts>,
}

/// What a compile's key was made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyParts {
    /// The compiler.
    pub compiler: CompilerKey,
    /// `$PWD`, when it names the working directory through a symlink (objects record it).
    pub pwd: Option<String>,
    /// The variables of the key that were set, as `NAME`, value.
    pub env: Vec<(String, String)>,
    /// The source, then every file a flag makes the compiler read first (`-include`,
    /// profiles, ...), with their content's SHA-256.
    pub files: Vec<(String, [u8; 32])>,
    /// What `-march=native` stands for on this machine, hashed (when a flag asks for it).
    pub native_cpu: Option<[u8; 32]>,
    /// Everything above, hashed: the key of the manifest.
    pub prekey: [u8; 32],
    /// The blob of the manifest entry (every header read with its SHA-256, the paths whose
    /// absence or presence the compile relied on, the action) the compile was found by or
    /// recorded as; `None` when it was neither (a compile error, an uncacheable compile).
    pub headers: Option<([u8; 32], u64)>,
}

/// The compiler of a compile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompilerKey {
    /// The driver's path.
    pub path: String,
    /// Run as the C++ driver (`llamac++`).
    pub cxx: bool,
    /// The identity digest: the driver, the programs it runs and its `--version`.
    pub identity: [u8; 32],
    /// The first line of its `--version`.
    pub version: String,
    /// Each file the identity covers, with its SHA-256.
    pub files: Vec<(String, [u8; 32])>,
}

impl KeyRecord {
    /// When the compile happened.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.time_ms)
    }

    /// The manifest entry's blob, as a digest.
    fn headers_digest(&self) -> Option<Digest> {
        let (hash, size) = self.key.as_ref()?.headers?;
        Some(Digest::from_parts(hash, size))
    }
}

/// `path` (absolute) as the records name it: its directory without symlinks, `..` or `.`,
/// so the daemon, which sees `cwd` joined with `-o`, and `llama explain`, which sees what
/// the user typed, name one file alike. As given when its directory does not exist.
pub fn output_path(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => match fs::canonicalize(parent) {
            Ok(dir) => dir.join(name),
            Err(_) => path.to_path_buf(),
        },
        _ => path.to_path_buf(),
    }
}

/// The records of compiles, in a store.
pub struct KeyLog {
    store: Store,
    /// Held while a history is read, extended and written back, so that two compiles of
    /// one output at once both land.
    writing: Mutex<()>,
}

/// The store record that holds the history of `output`.
fn history_key(output: &str) -> Digest {
    let mut bytes = b"llamacc key records v1\0".to_vec();
    bytes.extend_from_slice(output.as_bytes());
    Digest::of_bytes(&bytes)
}

impl KeyLog {
    /// The records kept in `store`.
    pub fn new(store: Store) -> KeyLog {
        KeyLog {
            store,
            writing: Mutex::new(()),
        }
    }

    /// The store they are kept in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The compiles of `output` ([`output_path`]'s spelling), newest first; empty when none
    /// is recorded. Records that do not decode are left out.
    pub fn history(&self, output: &Path) -> Result<Vec<KeyRecord>, StoreError> {
        self.history_by_key(&history_key(&output.to_string_lossy()))
    }

    fn history_by_key(&self, key: &Digest) -> Result<Vec<KeyRecord>, StoreError> {
        let Some(bytes) = self.store.get_record(RecordKind::Explain, key)? else {
            return Ok(Vec::new());
        };
        Ok(decode_history(&bytes))
    }

    /// Puts `record` first in its output's history, dropping the oldest past
    /// [`RECORDS_PER_OUTPUT`], and returns the history with it first.
    ///
    /// A hit that repeats the output's last record (the same key, headers and outcome: a
    /// rebuild that changed nothing) is not written: rewriting the file would cost every
    /// such hit a file creation and a rename, and tell `llama explain` nothing new. The
    /// last record then keeps the time of the first of those hits.
    pub fn push(&self, record: KeyRecord) -> Result<Vec<KeyRecord>, StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let key = history_key(&record.output);
        let mut history = self.history_by_key(&key)?;
        let repeated = record.outcome == Outcome::Hit.name()
            && history
                .first()
                .is_some_and(|last| same_but_time(last, &record));
        history.insert(0, record);
        history.truncate(RECORDS_PER_OUTPUT);
        if !repeated {
            self.store
                .put_record(RecordKind::Explain, &key, &encode_history(&history))?;
        }
        Ok(history)
    }

    /// Stores a manifest entry as the header list of a record, returning its blob's digest.
    pub fn put_headers(&self, entry: &Entry) -> Result<([u8; 32], u64), StoreError> {
        let digest = self.store.put_bytes(&entry.encode())?;
        Ok((*digest.hash_bytes(), digest.size()))
    }

    /// The header list of `record`, when it has one still in the store and whole.
    pub fn headers(&self, record: &KeyRecord) -> Option<Entry> {
        let digest = record.headers_digest()?;
        if digest.size() > MAX_HEADERS_BYTES {
            return None;
        }
        let bytes = self.store.get_bytes(&digest).ok()?;
        Entry::decode(&bytes)
    }

    /// The history of the last compile whose output is in `dir` or, when none is, of the
    /// last one that ran in `dir`; empty when there is none.
    pub fn latest_in(&self, dir: &Path) -> Result<Vec<KeyRecord>, StoreError> {
        let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mut best: Vec<KeyRecord> = Vec::new();
        let newer = |h: &[KeyRecord], best: &[KeyRecord]| {
            h.first().map(|r| r.time_ms) > best.first().map(|r| r.time_ms)
        };
        // The outputs in the directory first: a look-up each, no walk of the store.
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let history = self.history(&dir.join(entry.file_name()))?;
                if newer(&history, &best) {
                    best = history;
                }
            }
        }
        if !best.is_empty() {
            return Ok(best);
        }
        let dir = dir.to_string_lossy();
        for key in self.store.record_keys(RecordKind::Explain) {
            let history = self.history_by_key(&key)?;
            let ran_there = history.first().is_some_and(|r| r.cwd == dir);
            if ran_there && newer(&history, &best) {
                best = history;
            }
        }
        Ok(best)
    }

    /// Explains the first compile of `history` against the others, with their header lists
    /// read from the store.
    pub fn explain(&self, history: &[KeyRecord]) -> Option<Explanation> {
        let loaded: Vec<(&KeyRecord, Option<Entry>)> =
            history.iter().map(|r| (r, self.headers(r))).collect();
        let (current, earlier) = loaded.split_first()?;
        Some(explain(current, earlier))
    }
}

/// Whether two records differ in nothing but when they were made.
fn same_but_time(a: &KeyRecord, b: &KeyRecord) -> bool {
    KeyRecord {
        time_ms: b.time_ms,
        ..a.clone()
    } == *b
}

/// A history as stored: each record encoded on its own, so one that does not decode (damaged,
/// or of another format) costs only itself.
fn encode_history(history: &[KeyRecord]) -> Vec<u8> {
    let records: Vec<Vec<u8>> = history
        .iter()
        .filter_map(|r| {
            let mut bytes = vec![FORMAT];
            bytes.extend(postcard::to_allocvec(r).ok()?);
            Some(bytes)
        })
        .collect();
    postcard::to_allocvec(&records).unwrap_or_default()
}

fn decode_history(bytes: &[u8]) -> Vec<KeyRecord> {
    if bytes.len() > MAX_HISTORY_BYTES {
        return Vec::new();
    }
    let Ok(records) = postcard::from_bytes::<Vec<Vec<u8>>>(bytes) else {
        return Vec::new();
    };
    records
        .iter()
        .filter_map(|r| match r.split_first() {
            Some((&FORMAT, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(time_ms: u64, args: &[&str]) -> KeyRecord {
        KeyRecord {
            time_ms,
            output: "/w/main.o".into(),
            cwd: "/w".into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            outcome: "misses".into(),
            reason: None,
            exit_code: Some(0),
            key: Some(KeyParts {
                compiler: CompilerKey {
                    path: "/usr/bin/gcc".into(),
                    cxx: false,
                    identity: [1; 32],
                    version: "gcc 12".into(),
                    files: vec![("/usr/bin/gcc".into(), [2; 32])],
                },
                pwd: None,
                env: vec![],
                files: vec![("/w/main.c".into(), [3; 32])],
                native_cpu: None,
                prekey: [4; 32],
                headers: None,
            }),
        }
    }

    #[test]
    fn a_history_keeps_the_newest_and_survives_damage() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = KeyLog::new(Store::open(dir.path(), 1 << 30).expect("store"));
        for t in 0..10 {
            log.push(record(t, &["-c", "main.c"])).expect("push");
        }
        let history = log.history(Path::new("/w/main.o")).expect("history");
        assert_eq!(history.len(), RECORDS_PER_OUTPUT);
        assert_eq!(history[0].time_ms, 9);
        assert_eq!(history[7].time_ms, 2);
        // A record of another format (or damaged) is skipped; the others stay.
        let mut records: Vec<Vec<u8>> = postcard::from_bytes(&encode_history(&history)).unwrap();
        records[1] = vec![FORMAT + 1, 1, 2, 3];
        records[2] = vec![FORMAT, 0xff, 0xff];
        let decoded = decode_history(&postcard::to_allocvec(&records).unwrap());
        assert_eq!(decoded.len(), RECORDS_PER_OUTPUT - 2);
        assert_eq!(decoded[1].time_ms, 6);
        assert!(decode_history(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").is_empty());
        assert!(decode_history(&vec![0; MAX_HISTORY_BYTES + 1]).is_empty());
    }

    #[test]
    fn a_hit_that_repeats_the_last_record_is_not_written_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = KeyLog::new(Store::open(dir.path(), 1 << 30).expect("store"));
        let output = Path::new("/w/main.o");
        log.push(record(1, &["-c", "main.c"])).expect("push");
        let mut hit = record(2, &["-c", "main.c"]);
        hit.outcome = "hits".into();
        log.push(hit.clone()).expect("push");
        hit.time_ms = 3;
        let returned = log.push(hit.clone()).expect("push");
        assert_eq!(
            returned[0], hit,
            "the history returned has the repeat first"
        );
        let stored = log.history(output).expect("history");
        assert_eq!(stored.iter().map(|r| r.time_ms).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn output_paths_are_spelled_without_dots_or_symlinks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = fs::canonicalize(dir.path()).expect("canonical");
        fs::create_dir_all(root.join("real/obj")).expect("mkdir");
        std::os::unix::fs::symlink("real", root.join("link")).expect("symlink");
        assert_eq!(
            output_path(&root.join("link/obj/../obj/./a.o")),
            root.join("real/obj/a.o")
        );
        assert_eq!(output_path(&root.join("none/a.o")), root.join("none/a.o"));
    }
}
