//! Input trees: local files and directories mapped to remote paths, encoded as REAPI
//! `Directory` messages with canonical (sorted) contents, so the same inputs always give the
//! same root digest.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use prost::Message;

use crate::digest::Digest;
use crate::hashcache::HashCache;

/// Where the bytes of an input blob can be read from, to store or upload it.
#[derive(Debug, Clone)]
pub enum BlobSource {
    /// A local file (whose content had the blob's digest when it was hashed).
    File(PathBuf),
    /// Bytes held in memory.
    Bytes(Arc<[u8]>),
}

/// Problems building an input tree, each naming the path concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A remote path that is empty, absolute or climbs out with `..`.
    #[error(
        "remote path {0:?} must be relative and stay inside the working directory (no leading '/', no '..')"
    )]
    BadRemotePath(String),
    /// A local input that does not exist.
    #[error(
        "input {0} does not exist; check the path (relative paths start at the current directory)"
    )]
    Missing(PathBuf),
    /// A local input that cannot be read.
    #[error("cannot read input {path}: {error}")]
    Unreadable {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// A local input that is neither a file, a directory nor a symlink.
    #[error(
        "input {0} is not a regular file or directory (a device, socket or fifo cannot be shipped)"
    )]
    Unsupported(PathBuf),
    /// Two different inputs claim the same remote path.
    #[error(
        "two different inputs map to remote path {0:?}; give one of them another LOCAL:REMOTE name"
    )]
    Conflict(String),
}

/// Splits a remote path into its components, refusing anything that could leave the
/// action's root: absolute paths, `..`, and the empty path.
pub fn remote_components(remote: &str) -> Result<Vec<String>, TreeError> {
    let bad = || TreeError::BadRemotePath(remote.to_string());
    if remote.starts_with('/') {
        return Err(bad());
    }
    let mut parts = Vec::new();
    for part in remote.split('/') {
        match part {
            "" | "." => continue,
            ".." => return Err(bad()),
            p => parts.push(p.to_string()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(parts)
}

/// Normalises a remote path (`a//b/./c` → `a/b/c`), with the checks of [`remote_components`].
pub fn normalize_remote(remote: &str) -> Result<String, TreeError> {
    Ok(remote_components(remote)?.join("/"))
}

#[derive(Debug, Clone)]
enum Node {
    File {
        digest: Digest,
        executable: bool,
        source: BlobSource,
    },
    Symlink(String),
    Dir(BTreeMap<String, Node>),
}

impl Node {
    fn same_as(&self, other: &Node) -> bool {
        match (self, other) {
            (
                Node::File {
                    digest: a,
                    executable: x,
                    ..
                },
                Node::File {
                    digest: b,
                    executable: y,
                    ..
                },
            ) => a == b && x == y,
            (Node::Symlink(a), Node::Symlink(b)) => a == b,
            _ => false,
        }
    }
}

/// A finished input tree: its root digest, every `Directory` message, and where each file
/// blob's bytes come from.
#[derive(Debug, Clone)]
pub struct InputTree {
    /// Digest of the root `Directory`.
    pub root: Digest,
    /// Encoded `Directory` messages by digest.
    pub directories: HashMap<Digest, Vec<u8>>,
    /// File blobs by digest.
    pub files: HashMap<Digest, BlobSource>,
}

/// Builds an [`InputTree`] from local files, hashing each through a [`HashCache`].
///
/// Cloning a builder is cheap next to hashing: a set of inputs shared by many actions is
/// added once and the builder cloned for each.
#[derive(Debug, Clone, Default)]
pub struct TreeBuilder {
    root: BTreeMap<String, Node>,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        TreeBuilder::default()
    }

    /// Adds the local file or directory `local` at `remote`. A directory is added with
    /// everything under it; symlinks inside it are kept as symlinks.
    pub fn add_path(
        &mut self,
        hash_cache: &HashCache,
        local: &Path,
        remote: &str,
    ) -> Result<(), TreeError> {
        let parts = remote_components(remote)?;
        let meta = fs::metadata(local).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TreeError::Missing(local.to_path_buf()),
            _ => TreeError::Unreadable {
                path: local.to_path_buf(),
                error: e,
            },
        })?;
        let node = node_for(hash_cache, local, &meta)?;
        self.insert(&parts, remote, node)
    }

    /// Adds in-memory bytes as a file at `remote`.
    pub fn add_bytes(
        &mut self,
        data: Arc<[u8]>,
        remote: &str,
        executable: bool,
    ) -> Result<(), TreeError> {
        let parts = remote_components(remote)?;
        let node = Node::File {
            digest: Digest::of_bytes(&data),
            executable,
            source: BlobSource::Bytes(data),
        };
        self.insert(&parts, remote, node)
    }

    /// Adds a file whose digest is already known (hashed by the caller), read from `source`
    /// when its bytes are needed.
    pub fn add_known(
        &mut self,
        remote: &str,
        digest: Digest,
        executable: bool,
        source: PathBuf,
    ) -> Result<(), TreeError> {
        let parts = remote_components(remote)?;
        let node = Node::File {
            digest,
            executable,
            source: BlobSource::File(source),
        };
        self.insert(&parts, remote, node)
    }

    /// Encodes the tree.
    pub fn build(self) -> InputTree {
        let mut tree = InputTree {
            root: Digest::empty(),
            directories: HashMap::new(),
            files: HashMap::new(),
        };
        tree.root = encode_dir(self.root, &mut tree);
        tree
    }

    fn insert(&mut self, parts: &[String], remote: &str, node: Node) -> Result<(), TreeError> {
        let conflict = || TreeError::Conflict(remote.to_string());
        let (last, dirs) = parts.split_last().ok_or_else(conflict)?;
        let mut here = &mut self.root;
        for part in dirs {
            let entry = here
                .entry(part.clone())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            here = match entry {
                Node::Dir(children) => children,
                _ => return Err(conflict()),
            };
        }
        match here.get_mut(last) {
            None => {
                here.insert(last.clone(), node);
                Ok(())
            }
            Some(existing) if existing.same_as(&node) => Ok(()),
            Some(Node::Dir(existing)) => match node {
                // Two directories at one path merge, as long as their entries agree.
                Node::Dir(incoming) => merge_dirs(existing, incoming, remote),
                _ => Err(conflict()),
            },
            Some(_) => Err(conflict()),
        }
    }
}

fn node_for(hash_cache: &HashCache, local: &Path, meta: &fs::Metadata) -> Result<Node, TreeError> {
    let unreadable = |error| TreeError::Unreadable {
        path: local.to_path_buf(),
        error,
    };
    let ft = meta.file_type();
    if ft.is_file() {
        let digest = hash_cache.digest(local, meta).map_err(unreadable)?;
        Ok(Node::File {
            digest,
            executable: meta.permissions().mode() & 0o111 != 0,
            source: BlobSource::File(local.to_path_buf()),
        })
    } else if ft.is_symlink() {
        let target = fs::read_link(local).map_err(unreadable)?;
        Ok(Node::Symlink(target.to_string_lossy().into_owned()))
    } else if ft.is_dir() {
        let mut children = BTreeMap::new();
        for entry in fs::read_dir(local).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|error| TreeError::Unreadable {
                path: path.clone(),
                error,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            children.insert(name, node_for(hash_cache, &path, &meta)?);
        }
        Ok(Node::Dir(children))
    } else {
        Err(TreeError::Unsupported(local.to_path_buf()))
    }
}

fn merge_dirs(
    into: &mut BTreeMap<String, Node>,
    from: BTreeMap<String, Node>,
    remote: &str,
) -> Result<(), TreeError> {
    for (name, node) in from {
        match into.get_mut(&name) {
            None => {
                into.insert(name, node);
            }
            Some(existing) if existing.same_as(&node) => {}
            Some(Node::Dir(existing)) => match node {
                Node::Dir(incoming) => merge_dirs(existing, incoming, remote)?,
                _ => return Err(TreeError::Conflict(format!("{remote}/{name}"))),
            },
            Some(_) => return Err(TreeError::Conflict(format!("{remote}/{name}"))),
        }
    }
    Ok(())
}

/// Encodes one directory (children first) and returns its digest. `BTreeMap` order is byte
/// order of the names, which is the canonical order REAPI asks for.
fn encode_dir(children: BTreeMap<String, Node>, tree: &mut InputTree) -> Digest {
    let mut dir = reapi::Directory::default();
    for (name, node) in children {
        match node {
            Node::File {
                digest,
                executable,
                source,
            } => {
                dir.files.push(reapi::FileNode {
                    name,
                    digest: Some(digest.to_proto()),
                    is_executable: executable,
                    node_properties: None,
                });
                tree.files.entry(digest).or_insert(source);
            }
            Node::Symlink(target) => dir.symlinks.push(reapi::SymlinkNode {
                name,
                target,
                node_properties: None,
            }),
            Node::Dir(grandchildren) => {
                let digest = encode_dir(grandchildren, tree);
                dir.directories.push(reapi::DirectoryNode {
                    name,
                    digest: Some(digest.to_proto()),
                });
            }
        }
    }
    let bytes = dir.encode_to_vec();
    let digest = Digest::of_bytes(&bytes);
    tree.directories.insert(digest, bytes);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_that_escape_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../b", "a/..", "", ".", "//x"] {
            assert!(remote_components(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(normalize_remote("a//b/./c").unwrap(), "a/b/c");
    }

    #[test]
    fn same_inputs_give_the_same_root_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"A").unwrap();
        fs::write(&b, b"B").unwrap();
        let cache = HashCache::in_memory();
        let mut one = TreeBuilder::new();
        one.add_path(&cache, &a, "x/a").unwrap();
        one.add_path(&cache, &b, "b").unwrap();
        let mut two = TreeBuilder::new();
        two.add_path(&cache, &b, "b").unwrap();
        two.add_path(&cache, &a, "x/a").unwrap();
        let (one, two) = (one.build(), two.build());
        assert_eq!(one.root, two.root);
        assert_eq!(one.directories.len(), 2);
        assert_eq!(one.files.len(), 2);
    }

    #[test]
    fn executable_bit_is_part_of_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tool");
        fs::write(&f, b"#!/bin/sh\n").unwrap();
        let cache = HashCache::in_memory();
        let root = |mode| {
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            let mut t = TreeBuilder::new();
            t.add_path(&cache, &f, "tool").unwrap();
            t.build().root
        };
        assert_ne!(root(0o644), root(0o755));
    }

    #[test]
    fn directories_are_walked_and_conflicts_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("d/sub")).unwrap();
        fs::write(dir.path().join("d/sub/f"), b"1").unwrap();
        std::os::unix::fs::symlink("sub/f", dir.path().join("d/link")).unwrap();
        let cache = HashCache::in_memory();
        let mut t = TreeBuilder::new();
        t.add_path(&cache, &dir.path().join("d"), "d").unwrap();
        t.add_bytes(Arc::from(&b"2"[..]), "d/other", false).unwrap();
        let err = t
            .add_bytes(Arc::from(&b"3"[..]), "d/sub/f", false)
            .unwrap_err();
        assert!(err.to_string().contains("d/sub/f"), "{err}");
        let tree = t.build();
        assert_eq!(tree.directories.len(), 3);
        let missing = TreeBuilder::new()
            .add_path(&cache, &dir.path().join("nope"), "nope")
            .unwrap_err();
        assert!(matches!(missing, TreeError::Missing(_)));
    }
}
