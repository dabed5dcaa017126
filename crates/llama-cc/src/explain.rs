//! "Why did this miss?": what each compile's key was made of, kept per output file, and
//! the differences between a compile's key and the previous compile's of the same output,
//! in plain words.
//!
//! The daemon writes a [`KeyRecord`] per compile through the cache to
//! `$LLAMA_DIR/explain/`, one file per output (named by a digest of its path) holding its
//! last [`KEPT`] records, newest first. `llama explain` reads them back (as untrusted input:
//! sizes checked, a damaged file is no record), and `LLAMACC_DEBUG=1` appends the same
//! explanation to `$LLAMA_DIR/debug.log` as each compile finishes.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use llama_core::Digest;

/// Records kept per output.
pub const KEPT: usize = 4;

/// Largest record file read back.
const MAX_FILE: u64 = 4 << 20;

/// What one compile's key was made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The object, absolute.
    pub output: PathBuf,
    /// The source, as given.
    pub source: PathBuf,
    /// The directory the compile ran in.
    pub cwd: PathBuf,
    /// The compiler, resolved.
    pub compiler: PathBuf,
    /// Its identity's digest (its files and version text).
    pub compiler_digest: String,
    /// Its `--version` first line, for humans.
    pub compiler_version: String,
    /// The arguments, as keyed.
    pub args: Vec<String>,
    /// The environment variables that are part of the key, as `NAME=value`.
    pub env: Vec<String>,
    /// Every file the compile read: path and SHA-256.
    pub inputs: Vec<(String, String)>,
    /// Paths whose absence the result relied on (an earlier directory on the search path).
    pub absent: Vec<String>,
    /// How it was answered, as `llama stats` says it.
    pub outcome: String,
    /// Served from the cache.
    pub hit: bool,
    /// When (microseconds since the epoch).
    pub at: u64,
}

/// `path` with `.` and `..` taken out lexically, as the object's name in a record: the
/// same object compiled from another directory is the same record file.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where the records live.
pub fn dir(llama_dir: &Path) -> PathBuf {
    llama_dir.join("explain")
}

fn file_of(llama_dir: &Path, output: &Path) -> PathBuf {
    let output = normalize(output);
    let digest = Digest::of_bytes(output.as_os_str().as_encoded_bytes());
    dir(llama_dir).join(format!("{}.json", &digest.hex()[..32]))
}

/// The records of `output`, newest first; none if there are none or they are damaged.
pub fn load(llama_dir: &Path, output: &Path) -> Vec<KeyRecord> {
    read_file(&file_of(llama_dir, output))
}

/// The records of one file, as untrusted input.
pub fn read_file(path: &Path) -> Vec<KeyRecord> {
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    else {
        return Vec::new();
    };
    let mut text = Vec::new();
    if file.take(MAX_FILE).read_to_end(&mut text).is_err() {
        return Vec::new();
    }
    serde_json::from_slice(&text).unwrap_or_default()
}

/// Adds `record` to its output's file, keeping the newest [`KEPT`]. Written to a temporary
/// file and renamed, so a reader sees the old records or the new, never half.
pub fn save(llama_dir: &Path, record: &KeyRecord) -> io::Result<()> {
    let dir = dir(llama_dir);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let path = file_of(llama_dir, &record.output);
    let mut records = read_file(&path);
    records.insert(0, record.clone());
    records.truncate(KEPT);
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(&serde_json::to_vec(&records).map_err(io::Error::other)?)?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the records of objects not compiled for `age` (all of them for zero), as the
/// cache's own entries are evicted; returns how many went. Without it the directory keeps
/// a small file per object ever compiled.
pub fn prune(llama_dir: &Path, age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir(llama_dir)) else {
        return 0;
    };
    let now = std::time::SystemTime::now();
    entries
        .flatten()
        .filter(|e| {
            e.metadata().is_ok_and(|m| {
                m.is_file()
                    && m.modified()
                        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= age)
            })
        })
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// The differences between the previous compile's key and this one's, in plain words;
/// empty when the keys are the same.
pub fn differences(before: &KeyRecord, now: &KeyRecord) -> Vec<String> {
    let mut why = Vec::new();
    if before.compiler != now.compiler {
        why.push(format!(
            "the compiler changed: it was {}, now {}",
            before.compiler.display(),
            now.compiler.display()
        ));
    } else if before.compiler_digest != now.compiler_digest {
        why.push(format!(
            "the compiler {} changed (an upgrade?): its files or version were {} ({}), now {} ({})",
            now.compiler.display(),
            short(&before.compiler_digest),
            before.compiler_version,
            short(&now.compiler_digest),
            now.compiler_version
        ));
    }
    if before.cwd != now.cwd {
        why.push(format!(
            "the directory changed: it was {}, now {}",
            before.cwd.display(),
            now.cwd.display()
        ));
    }
    why.extend(argument_changes(&before.args, &now.args));
    why.extend(set_changes("environment variable", &before.env, &now.env));
    why.extend(header_changes(before, now));
    why
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// The first argument that differs (position and both values), or what was added or
/// removed at the end.
fn argument_changes(before: &[String], now: &[String]) -> Option<String> {
    let first = before.iter().zip(now).position(|(a, b)| a != b);
    match first {
        Some(i) => Some(format!(
            "argument {} changed: {} → {} (arguments were: {}; now: {})",
            i + 1,
            before[i],
            now[i],
            before.join(" "),
            now.join(" ")
        )),
        None if now.len() > before.len() => Some(format!(
            "arguments added: {}",
            now[before.len()..].join(" ")
        )),
        None if before.len() > now.len() => Some(format!(
            "arguments removed: {}",
            before[now.len()..].join(" ")
        )),
        None => None,
    }
}

/// `NAME=value` entries added, removed or changed.
fn set_changes(what: &str, before: &[String], now: &[String]) -> Vec<String> {
    let split = |e: &String| {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        (k.to_string(), v.to_string())
    };
    let before: std::collections::BTreeMap<_, _> = before.iter().map(split).collect();
    let now: std::collections::BTreeMap<_, _> = now.iter().map(split).collect();
    let mut out = Vec::new();
    for (k, v) in &now {
        match before.get(k) {
            None => out.push(format!("{what} {k} is now set ({k}={v})")),
            Some(old) if old != v => out.push(format!("{what} {k} changed: {old} → {v}")),
            _ => {}
        }
    }
    for (k, v) in &before {
        if !now.contains_key(k) {
            out.push(format!("{what} {k} is no longer set (it was {k}={v})"));
        }
    }
    out
}

/// Headers whose content changed, headers that now shadow another, headers read no more.
fn header_changes(before: &KeyRecord, now: &KeyRecord) -> Vec<String> {
    let old: std::collections::BTreeMap<&str, &str> = before
        .inputs
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_str()))
        .collect();
    let mut out = Vec::new();
    for (path, digest) in &now.inputs {
        match old.get(path.as_str()) {
            Some(was) if *was != digest => out.push(format!(
                "{} changed: its content was {}, now {}",
                path,
                short(was),
                short(digest)
            )),
            Some(_) => {}
            None if before.absent.contains(path) => {
                let name = Path::new(path).file_name();
                let shadowed = before
                    .inputs
                    .iter()
                    .find(|(p, _)| {
                        Path::new(p).file_name() == name && !now.inputs.iter().any(|(q, _)| q == p)
                    })
                    .map(|(p, _)| p.as_str());
                out.push(match shadowed {
                    Some(s) => format!("a new header {path} now shadows {s}"),
                    None => format!("a new header {path} appeared where none was"),
                });
            }
            None => out.push(format!("{path} is read now and was not before")),
        }
    }
    out
}

/// A compile's explanation, as `llama explain` and `LLAMACC_DEBUG` say it.
pub fn explain(records: &[KeyRecord]) -> String {
    let Some(now) = records.first() else {
        return "no compile of it through llamacc is recorded".into();
    };
    let mut text = format!(
        "{}: {} (compiled from {} in {})\n",
        now.output.display(),
        now.outcome,
        now.source.display(),
        now.cwd.display()
    );
    if now.hit {
        return text;
    }
    match records.get(1) {
        None => text.push_str("  no earlier compile of it is recorded: it was the first\n"),
        Some(before) => {
            let why = differences(before, now);
            if why.is_empty() {
                text.push_str(
                    "  its key is the same as the previous compile's: that result was not cached (see `llama stats` for why) or has been evicted\n",
                );
            }
            for reason in why {
                text.push_str(&format!("  - {reason}\n"));
            }
        }
    }
    text
}
