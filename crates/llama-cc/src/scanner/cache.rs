//! What the daemon keeps between walks: each file's directives, by the digest of its content,
//! so a header included by a thousand compiles is read and extracted once.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use llama_core::{Digest, HashCache};
use rustc_hash::FxHashMap;

use super::directives::{self, Directives};
use super::walk::{FileId, Files};

/// Directive lists kept at most: a kernel tree has ~20,000 headers, a list a few KB. Past
/// it the cache starts over rather than grow without bound.
const MAX_KEPT: usize = 100_000;

/// Each file's directives, by the digest of its content.
pub struct DirectiveCache {
    hash_cache: Arc<HashCache>,
    by_digest: Mutex<HashMap<Digest, Arc<Directives>>>,
}

impl DirectiveCache {
    /// A cache that learns files' digests through `hash_cache` (which revalidates them by
    /// their stat stamps).
    pub fn new(hash_cache: Arc<HashCache>) -> DirectiveCache {
        DirectiveCache {
            hash_cache,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    /// The file system as one walk sees it, through this cache.
    pub fn files(&self) -> CachedFiles<'_> {
        CachedFiles {
            cache: self,
            looked_up: FxHashMap::default(),
            unreadable: None,
        }
    }

    /// How many directive lists are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Directives>>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directives of `path`, whose content has `digest`.
    fn directives_of(&self, path: &Path, digest: Digest) -> Option<Arc<Directives>> {
        if let Some(found) = self.lock().get(&digest) {
            return Some(found.clone());
        }
        let text = fs::read(path).ok()?;
        let found = Arc::new(directives::extract(&text));
        // Kept under a digest only if it is the digest of the bytes extracted: a file
        // rewritten between the two reads must not leave another content's directives
        // under its old name.
        if Digest::of_bytes(&text) == digest {
            let mut kept = self.lock();
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
            kept.insert(digest, found.clone());
        }
        Some(found)
    }
}

/// The file system as one walk sees it: each path looked up once, its directives from the
/// [`DirectiveCache`].
pub struct CachedFiles<'a> {
    cache: &'a DirectiveCache,
    looked_up: FxHashMap<PathBuf, Option<Found>>,
    unreadable: Option<PathBuf>,
}

/// A file a walk found: its directives, and what it is known by.
#[derive(Clone)]
struct Found {
    directives: Arc<Directives>,
    id: FileId,
}

impl CachedFiles<'_> {
    /// A regular file the walk found but could not read. The compiler would fail on it
    /// where the walk passed over it, so the walk's answer is not to be used.
    pub fn unreadable(&self) -> Option<&Path> {
        self.unreadable.as_deref()
    }

    fn read(&mut self, path: &Path) -> Option<Found> {
        let meta = fs::metadata(path).ok().filter(|m| m.is_file())?;
        let found = self
            .cache
            .hash_cache
            .digest(path, &meta)
            .ok()
            .and_then(|digest| self.cache.directives_of(path, digest));
        if found.is_none() && self.unreadable.is_none() {
            self.unreadable = Some(path.to_path_buf());
        }
        Some(Found {
            directives: found?,
            id: FileId::Inode(meta.dev(), meta.ino()),
        })
    }

    fn look_up(&mut self, path: &Path) -> Option<&Found> {
        if !self.looked_up.contains_key(path) {
            let found = self.read(path);
            self.looked_up.insert(path.to_path_buf(), found);
        }
        self.looked_up.get(path)?.as_ref()
    }
}

impl Files for CachedFiles<'_> {
    fn directives(&mut self, path: &Path) -> Option<Arc<Directives>> {
        self.look_up(path).map(|f| f.directives.clone())
    }

    fn identity(&mut self, path: &Path) -> FileId {
        match self.look_up(path) {
            Some(found) => found.id.clone(),
            None => FileId::of(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_kept_by_content_not_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.h"), dir.path().join("b.h"));
        for p in [&a, &b] {
            fs::write(p, "#include <x.h>\n").expect("write");
        }
        let cache = DirectiveCache::new(Arc::new(HashCache::in_memory()));
        let mut files = cache.files();
        let (da, db) = (files.directives(&a), files.directives(&b));
        assert!(da.is_some() && db.is_some());
        assert_eq!(cache.len(), 1, "two files with one content share one list");
        assert!(files.directives(&dir.path().join("none.h")).is_none());
        assert!(
            files.directives(dir.path()).is_none(),
            "a directory is no file"
        );
        assert!(files.unreadable().is_none());
    }
}
