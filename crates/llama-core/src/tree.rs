//! Input trees: local files and directories mapped to remote paths, encoded as REAPI
//! `Directory` messages with canonical (sorted) contents, so the same inputs always give the
//! same root digest.
//!
//! # Names that are not UTF-8
//!
//! REAPI names, arguments and paths are protobuf `string`s, but a Unix file name is any
//! bytes but `/` and NUL. llama keeps such names exact by carrying them in an escaped form:
//! each byte that is not part of valid UTF-8 becomes NUL followed by its two lowercase hex
//! digits (`n\xe9` → `"n\0e9"`). NUL can appear in no file name and no argument, so the
//! escape never collides with a real name, valid UTF-8 is left as it is (keys of ordinary
//! actions do not change), and [`decode_name`] gives back the exact bytes. The local
//! executor (and llama's own Lambda runtime) decode at the file system and at `exec`; a
//! REAPI server cannot, so an action holding an escaped name is refused before it is sent
//! ([`escaped_name_in`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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

/// Marks an escaped byte of a name that is not UTF-8; see the module documentation.
pub const NAME_ESCAPE: char = '\0';

/// A string that is not the escaped form of any name (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} holds a NUL that is not llama's escape of a byte (NUL and two lowercase hex digits of a byte that is not UTF-8); no file name or argument can hold NUL"
)]
pub struct BadEscape(pub String);

/// Escapes the bytes of a name (or argument, or input line) into a string: valid UTF-8 as it
/// is, every other byte as NUL and two hex digits. Lossless: [`decode_name`] inverts it.
pub fn encode_name(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push(NAME_ESCAPE);
            out.push_str(&format!("{b:02x}"));
        }
    }
    Cow::Owned(out)
}

/// [`encode_name`] of an `OsStr` (a file name, a path, an argument).
pub fn encode_os(name: &OsStr) -> Cow<'_, str> {
    encode_name(name.as_bytes())
}

/// The exact bytes an [`encode_name`]d string stands for. Refuses any NUL that is not an
/// escape [`encode_name`] would write (so two strings never decode to one name).
pub fn decode_name(s: &str) -> Result<Cow<'_, [u8]>, BadEscape> {
    if !s.contains(NAME_ESCAPE) {
        return Ok(Cow::Borrowed(s.as_bytes()));
    }
    let bad = || BadEscape(s.to_string());
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == 0 {
            let [hi, lo, ..] = tail else {
                return Err(bad());
            };
            let digit = |d: u8| match d {
                b'0'..=b'9' => Some(d - b'0'),
                b'a'..=b'f' => Some(d - b'a' + 10),
                _ => None,
            };
            let (Some(hi), Some(lo)) = (digit(*hi), digit(*lo)) else {
                return Err(bad());
            };
            out.push(hi << 4 | lo);
            rest = &tail[2..];
        } else {
            out.push(b);
            rest = tail;
        }
    }
    // Canonical form only: an escaped byte that is part of valid UTF-8 (or ASCII) would give
    // a second spelling of one name.
    if encode_name(&out) != s {
        return Err(bad());
    }
    Ok(Cow::Owned(out))
}

/// [`decode_name`] as an `OsString`, ready for the file system or `exec`.
pub fn decode_os(s: &str) -> Result<OsString, BadEscape> {
    Ok(OsString::from_vec(decode_name(s)?.into_owned()))
}

/// A name for messages: escaped bytes shown as `\xNN`, the rest as it is.
pub fn display_name(s: &str) -> String {
    match decode_name(s) {
        Ok(bytes) => bytes.utf8_chunks().fold(String::new(), |mut out, chunk| {
            out.push_str(chunk.valid());
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
            out
        }),
        Err(_) => s.escape_debug().to_string(),
    }
}

/// The first name in `command` or `tree` (an argument, an output path, a file, directory or
/// symlink of the input tree, with its path) that only exists in escaped form, for an
/// executor that must send names as they are (REAPI).
pub fn escaped_name_in(command: &reapi::Command, tree: &InputTree) -> Option<String> {
    let escaped = |s: &str| s.contains(NAME_ESCAPE);
    if let Some(arg) = command.arguments.iter().find(|a| escaped(a)) {
        return Some(format!("argument {}", display_name(arg)));
    }
    if let Some(path) = command.output_paths.iter().find(|p| escaped(p)) {
        return Some(format!("output {}", display_name(path)));
    }
    fn walk(tree: &InputTree, digest: &Digest, prefix: &str, depth: usize) -> Option<String> {
        // The tree is ours and acyclic; the bound only keeps a corrupt one from recursing forever.
        if depth > 4096 {
            return None;
        }
        let dir = reapi::Directory::decode(&tree.directories.get(digest)?[..]).ok()?;
        let path = |name: &str| display_name(&format!("{prefix}{name}"));
        for f in &dir.files {
            if f.name.contains(NAME_ESCAPE) {
                return Some(format!("input file {}", path(&f.name)));
            }
        }
        for l in &dir.symlinks {
            if l.name.contains(NAME_ESCAPE) || l.target.contains(NAME_ESCAPE) {
                return Some(format!("input symlink {}", path(&l.name)));
            }
        }
        for d in &dir.directories {
            if d.name.contains(NAME_ESCAPE) {
                return Some(format!("input directory {}", path(&d.name)));
            }
            let child = Digest::from_field(d.digest.as_ref()).ok()?;
            if let Some(found) = walk(tree, &child, &format!("{prefix}{}/", d.name), depth + 1) {
                return Some(found);
            }
        }
        None
    }
    walk(tree, &tree.root, "", 0)
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
        Ok(Node::Symlink(encode_os(target.as_os_str()).into_owned()))
    } else if ft.is_dir() {
        let mut children = BTreeMap::new();
        for entry in fs::read_dir(local).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(|error| TreeError::Unreadable {
                path: path.clone(),
                error,
            })?;
            // Escaped, never lossy: `n\xe9` and `n\xe8` stay two names.
            let name = encode_os(&entry.file_name()).into_owned();
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

    // See: issue 12, defect 11b
    #[test]
    fn r12_non_utf8_names_stay_distinct_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        fs::create_dir(&d).unwrap();
        let e9 = d.join(OsStr::from_bytes(b"n\xe9"));
        let e8 = d.join(OsStr::from_bytes(b"n\xe8"));
        fs::write(&e9, b"e9").unwrap();
        fs::write(&e8, b"e8").unwrap();
        let mut t = TreeBuilder::new();
        t.add_path(&HashCache::in_memory(), &d, "d").unwrap();
        let tree = t.build();
        let root = reapi::Directory::decode(&tree.directories[&tree.root][..]).unwrap();
        let sub = Digest::from_field(root.directories[0].digest.as_ref()).unwrap();
        let sub = reapi::Directory::decode(&tree.directories[&sub][..]).unwrap();
        let names: Vec<&str> = sub.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["n\0e8", "n\0e9"], "two names, each exact");
        assert_eq!(tree.files.len(), 2, "two contents");
        let found = escaped_name_in(&reapi::Command::default(), &tree).unwrap();
        assert_eq!(found, "input file d/n\\xe8");
    }

    #[test]
    fn escaped_names_round_trip_and_only_canonically() {
        for bytes in [
            &b"plain"[..],
            b"n\xe9",
            b"\xff\xfe/\xc3",
            "caf\u{e9}".as_bytes(),
            b"",
        ] {
            let enc = encode_name(bytes);
            assert_eq!(decode_name(&enc).unwrap(), bytes, "{enc:?}");
        }
        assert_eq!(encode_name("caf\u{e9}".as_bytes()), "caf\u{e9}");
        // A NUL that is not an escape, an escaped ASCII or UTF-8 byte, upper case digits.
        for bad in ["a\0", "a\0e", "\x0041", "\0c3\0a9", "\0E9", "\0zz"] {
            assert!(decode_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(display_name("n\0e9"), "n\\xe9");
    }
}
