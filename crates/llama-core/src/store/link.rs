//! Inputs laid out by hard link instead of copied: an action's directory gets the stored
//! blob's own inode, read-only, checked against its digest once when it was stored rather
//! than hashed and copied again for every action (the 44 MB of a shipped compiler, per
//! compile). A blob the store keeps is read-only (0444); an executable input links to a
//! second read-only copy (0555) under `cas-x/`, made once from the verified blob.
//!
//! A command can still write through a link if it makes the file writable first (or runs
//! as root, which permission bits do not stop). So each link is checked after the action:
//! one whose file changed is removed from the store, and its next use fetches it again.
//! Only an action that runs alone, or on behalf of the one user who owns the store, should
//! share inodes this way; the local executor decides (see `llama_exec`'s `LocalExecutor`).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{Store, StoreError, is_empty_blob, refresh, shard_path};
use crate::digest::Digest;

/// Where the executable copies of blobs live, beside `cas/`.
pub(super) const EXECUTABLE_DIR: &str = "cas-x";

/// An input laid out by link, as its file was when linked: see [`Store::check_linked`].
#[derive(Debug, Clone)]
pub struct LinkedInput {
    source: PathBuf,
    size: u64,
    mode: u32,
    mtime: (i64, i64),
    ino: u64,
}

impl LinkedInput {
    /// The store's file the input is a link to.
    pub fn source(&self) -> &Path {
        &self.source
    }

    fn of(source: &Path, meta: &fs::Metadata) -> LinkedInput {
        LinkedInput {
            source: source.to_path_buf(),
            size: meta.len(),
            mode: meta.mode(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ino: meta.ino(),
        }
    }

    /// Whether the file still is as it was linked.
    fn unchanged(&self) -> bool {
        fs::symlink_metadata(&self.source).is_ok_and(|m| {
            m.len() == self.size
                && m.mode() == self.mode
                && (m.mtime(), m.mtime_nsec()) == self.mtime
                && m.ino() == self.ino
        })
    }
}

impl Store {
    /// Lays out blob `digest` at `dest` (which must not exist) as a hard link to the
    /// store's read-only copy, executable or not. `Ok(None)`: the blob was copied instead
    /// (the empty blob, or a link the file system refused).
    pub fn link_input(
        &self,
        digest: &Digest,
        dest: &Path,
        executable: bool,
    ) -> Result<Option<LinkedInput>, StoreError> {
        if is_empty_blob(digest) {
            self.materialize(digest, dest, executable)?;
            return Ok(None);
        }
        let source = match executable {
            false => self.blob_path(digest),
            true => self.executable_copy(digest)?,
        };
        // Linked first, looked at after: once linked, the action holds the inode whatever
        // an evictor does to the name. Two system calls per input, where a copy reads and
        // hashes the whole file.
        let mut linked = fs::hard_link(&source, dest);
        if !executable
            && linked
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            && self.compressed_path(digest).exists()
        {
            // Held only compressed: decompressed to `cas/` once, linked from then on.
            self.raw_copy(digest)?;
            linked = fs::hard_link(&source, dest);
        }
        match linked {
            Ok(()) => {}
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    && dest.parent().is_some_and(Path::is_dir) =>
            {
                return Err(StoreError::Missing {
                    digest: *digest,
                    dir: self.root.clone(),
                });
            }
            // Another file system, or too many links to one inode: a copy does the same.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EMLINK)) => {
                self.materialize(digest, dest, executable)?;
                return Ok(None);
            }
            Err(e) => return Err(self.classify("link", dest, e)),
        }
        let meta = fs::symlink_metadata(dest).map_err(|e| self.classify("stat", dest, e))?;
        let wanted = if executable { 0o555 } else { 0o444 };
        if meta.len() != digest.size() || meta.mode() & 0o7777 != wanted {
            // Torn, or writable (stored by an older llama, or changed since): not shared.
            // The copy verifies it, and a damaged blob is removed on the way.
            fs::remove_file(dest).map_err(|e| self.classify("remove", dest, e))?;
            self.materialize(digest, dest, executable)?;
            return Ok(None);
        }
        // A use like any read: an old entry is refreshed, so eviction sees it in use.
        let age = SystemTime::now()
            .duration_since(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH))
            .unwrap_or_default();
        let linked = LinkedInput::of(&source, &meta);
        if age > self.touch_after() {
            refresh(&source, digest.size(), self.touch_after());
            return Ok(Some(LinkedInput::of(
                &source,
                &fs::symlink_metadata(dest).map_err(|e| self.classify("stat", dest, e))?,
            )));
        }
        Ok(Some(linked))
    }

    /// Checks the inputs an action had by link; each whose file changed (a command wrote
    /// through its link) is removed from the store, so no later action sees it. Returns
    /// the files that changed.
    pub fn check_linked(&self, linked: &[LinkedInput]) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for input in linked {
            if !input.unchanged() {
                tracing::warn!(
                    "{} changed while an action had it as an input; removed it from the store",
                    input.source.display()
                );
                self.remove_linked(&input.source);
                changed.push(input.source.clone());
            }
        }
        changed
    }

    /// The read-only executable copy of `digest`, made from the verified blob if absent.
    fn executable_copy(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let path = shard_path(&self.root.join(EXECUTABLE_DIR), digest);
        if refresh(&path, digest.size(), self.touch_after()) {
            return Ok(path);
        }
        self.decompressed_copy(digest, &path, 0o555)?;
        Ok(path)
    }

    /// The raw blob of `digest` in `cas/`, decompressed (verified) from its copy in `cas-z/`.
    fn raw_copy(&self, digest: &Digest) -> Result<(), StoreError> {
        self.decompressed_copy(digest, &self.blob_path(digest), 0o444)
    }

    /// Writes the verified content of `digest` to a new read-only file at `path` with
    /// `mode`, unless another process made it first.
    fn decompressed_copy(&self, digest: &Digest, path: &Path, mode: u32) -> Result<(), StoreError> {
        let mut tmp = self.temp_file()?;
        let staging = tmp.path().to_path_buf();
        self.write_blob_to_file(digest, tmp.as_file_mut(), &staging)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| self.classify("chmod", tmp.path(), e))?;
        self.ensure_parent(path)?;
        match tmp.persist_noclobber(path) {
            Ok(_) => self.account(digest.size()),
            // Another process made it first: theirs is as good.
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.classify("rename into", path, e.error)),
        }
    }

    /// Removes a linked input's file from the store (a blob, or its executable copy).
    fn remove_linked(&self, source: &Path) {
        let _ = fs::remove_file(source);
    }
}
