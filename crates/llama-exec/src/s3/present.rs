//! The known-present set: blobs known to be in the bucket, in memory and in a file shared by
//! every llama process of the user, so nothing is HEADed or uploaded twice.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use llama_core::Digest;

use super::lock;

/// The set of blobs known to be in the bucket: in memory, and appended to a file shared by
/// every llama process of the user (one hex SHA-256 per line).
pub(super) struct KnownPresent {
    set: Mutex<HashSet<[u8; 32]>>,
    file: Option<(PathBuf, Mutex<Option<std::fs::File>>)>,
}

/// How long the known-present file is trusted before it starts afresh: well inside the
/// expiry `llama bootstrap` gives the bucket's blobs (30 days by default), so what it names
/// has seldom expired, and the file stays bounded. Starting afresh costs one HEAD per blob.
pub(super) const KNOWN_PRESENT_MAX_AGE: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// The known-present file's first line: `# since UNIX_SECONDS`.
pub(super) const KNOWN_PRESENT_SINCE: &str = "# since ";

impl KnownPresent {
    pub(super) async fn load(path: Option<PathBuf>) -> KnownPresent {
        let mut set = HashSet::new();
        if let Some(path) = &path {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match tokio::fs::read_to_string(path).await {
                Ok(text) if is_fresh(&text, now) => {
                    set.extend(text.lines().filter_map(parse_hex_line))
                }
                Ok(_) => start_afresh(path, now).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => start_afresh(path, now).await,
                Err(e) => tracing::debug!("known-present set {}: {e}", path.display()),
            }
        }
        KnownPresent {
            set: Mutex::new(set),
            file: path.map(|p| (p, Mutex::new(None))),
        }
    }

    pub(super) fn contains(&self, digest: &Digest) -> bool {
        lock(&self.set).contains(digest.hash_bytes())
    }

    pub(super) fn forget(&self, digest: &Digest) {
        // The file keeps its line; the next process to load it HEADs once more, at worst.
        lock(&self.set).remove(digest.hash_bytes());
    }

    pub(super) fn insert(&self, digest: &Digest) {
        if !lock(&self.set).insert(*digest.hash_bytes()) {
            return;
        }
        let Some((path, file)) = &self.file else {
            return;
        };
        // One short append per blob learned. O_APPEND writes this small are atomic on local
        // file systems, so processes sharing the file never interleave within a line.
        let mut file = lock(file);
        if file.is_none() {
            *file = open_append(path)
                .map_err(|e| tracing::debug!("known-present set {}: {e}", path.display()))
                .ok();
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(format!("{}\n", digest.hex()).as_bytes())
        {
            tracing::debug!("known-present set {}: {e}", path.display());
        }
    }
}

/// Whether the known-present file `text` began less than [`KNOWN_PRESENT_MAX_AGE`] before
/// `now` (a file without its first line predates the limit, and is not).
pub(super) fn is_fresh(text: &str, now: u64) -> bool {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix(KNOWN_PRESENT_SINCE))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_some_and(|since| now.saturating_sub(since) <= KNOWN_PRESENT_MAX_AGE.as_secs())
}

/// Replaces the known-present file with an empty one that starts `now`, in one rename:
/// another process still appending to the old one loses only what it learned (HEADs later).
pub(super) async fn start_afresh(path: &Path, now: u64) {
    let fresh = path.with_extension(format!("new.{}", std::process::id()));
    let result = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&fresh, format!("{KNOWN_PRESENT_SINCE}{now}\n")).await?;
        tokio::fs::rename(&fresh, path).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("known-present set {}: {e}", path.display());
        let _ = tokio::fs::remove_file(&fresh).await;
    }
}

pub(super) fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

pub(super) fn parse_hex_line(line: &str) -> Option<[u8; 32]> {
    let line = line.trim();
    if line.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
