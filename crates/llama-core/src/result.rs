//! What every executor and the engine need to turn an ActionResult into files: the digests
//! it names ([`result_digests`]) and the checks on results that come from places llama does
//! not control: the action cache (local, S3, REAPI) and remote executors. A result is data from the network, so before anything
//! is downloaded, allocated or written for it, its paths must stay inside the outputs and
//! what its trees expand to must stay within [`ResultLimits`].
//!
//! Trees are DAGs: a 2 KB Tree whose directories list the same child twice, forty levels
//! deep, expands to 2^40 directories. The expanded size is therefore computed on the DAG
//! (each distinct directory once, saturating), never by walking the expansion.

use std::collections::{HashMap, HashSet};

use crate::{Digest, ParseDigestError, reapi};

/// The most entries (files, directories, symlinks) one action's outputs may expand to,
/// unless `max_output_nodes` says otherwise.
pub const DEFAULT_MAX_OUTPUT_NODES: u64 = 1_000_000;

/// The most bytes one action's outputs may expand to, unless `max_output_bytes` says
/// otherwise.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 30;

/// How deep an output directory may nest: materialising recurses once per level, and a
/// path this deep is already past what `PATH_MAX` lets a program open by name.
pub const MAX_TREE_DEPTH: usize = 1024;

/// The largest Tree message llama reads into memory (a Tree of a million entries is about
/// 100 MB).
pub const MAX_TREE_MESSAGE_BYTES: u64 = 256 << 20;

/// Bounds on what one action's result may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultLimits {
    /// Files, directories and symlinks, counted as written (a directory listed twice
    /// counts twice): `max_output_nodes`.
    pub max_nodes: u64,
    /// Bytes of every output file and of stdout and stderr, counted as written:
    /// `max_output_bytes`.
    pub max_bytes: u64,
}

impl Default for ResultLimits {
    fn default() -> Self {
        ResultLimits {
            max_nodes: DEFAULT_MAX_OUTPUT_NODES,
            max_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

/// Why a result was refused. Every variant means: llama wrote nothing for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// An output path is empty, absolute, has a NUL, or a `.`, `..` or empty component.
    #[error(
        "output path {path:?} is not a plain relative path (empty, absolute, a NUL, or a '.', '..' or empty component)"
    )]
    BadOutputPath {
        /// The path as the result gives it.
        path: String,
    },
    /// A directory entry's name is not one plain path component.
    #[error("entry {name:?} of output directory {output:?} is not a plain file name")]
    BadName {
        /// The output directory the entry is in.
        output: String,
        /// The name as given.
        name: String,
    },
    /// A directory lists the same name twice.
    #[error("output directory {output:?} lists the name {name:?} twice")]
    DuplicateName {
        /// The output directory.
        output: String,
        /// The name.
        name: String,
    },
    /// A symlink's target is absolute or climbs out of the outputs.
    #[error("symlink {path:?} points to {target:?}, outside the outputs")]
    SymlinkEscapes {
        /// The symlink (an output path, or an entry of an output directory).
        path: String,
        /// Its target.
        target: String,
    },
    /// A digest field is missing or malformed.
    #[error("{what} has a malformed digest: {error}")]
    BadDigest {
        /// Which field.
        what: String,
        /// What is wrong.
        error: String,
    },
    /// A Tree names a child directory it does not contain.
    #[error("the tree of output directory {output:?} lacks its directory {digest}")]
    MissingDirectory {
        /// The output directory.
        output: String,
        /// The absent child.
        digest: Digest,
    },
    /// A Tree message is larger than llama reads into memory.
    #[error(
        "the tree of output directory {output:?} is a {size}-byte message, more than the {MAX_TREE_MESSAGE_BYTES} llama reads"
    )]
    TreeTooLarge {
        /// The output directory.
        output: String,
        /// The size its digest announces.
        size: u64,
    },
    /// A directory nests deeper than [`MAX_TREE_DEPTH`].
    #[error("output directory {output:?} nests deeper than {MAX_TREE_DEPTH} levels")]
    TooDeep {
        /// The output directory.
        output: String,
    },
    /// The outputs expand to more entries than `max_output_nodes`.
    #[error(
        "the outputs expand to more than {limit} files, directories and symlinks (at {output:?}); if the result is genuine, raise max_output_nodes (LLAMA_MAX_OUTPUT_NODES)"
    )]
    TooManyNodes {
        /// Where the count went past the limit.
        output: String,
        /// `max_output_nodes`.
        limit: u64,
    },
    /// The outputs expand to more bytes than `max_output_bytes`.
    #[error(
        "the outputs expand to more than {limit} bytes (at {output:?}); if the result is genuine, raise max_output_bytes (LLAMA_MAX_OUTPUT_BYTES)"
    )]
    TooManyBytes {
        /// Where the sum went past the limit.
        output: String,
        /// `max_output_bytes`.
        limit: u64,
    },
}

/// What the outputs of one result have used of the limits so far: made by
/// [`check_result_shape`], charged by each [`check_tree`].
#[derive(Debug, Default)]
pub struct Budget {
    nodes: u64,
    bytes: u64,
}

impl Budget {
    fn spend(
        &mut self,
        limits: &ResultLimits,
        output: &str,
        nodes: u64,
        bytes: u64,
    ) -> Result<(), Refusal> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > limits.max_nodes {
            return Err(Refusal::TooManyNodes {
                output: output.to_string(),
                limit: limits.max_nodes,
            });
        }
        if self.bytes > limits.max_bytes {
            return Err(Refusal::TooManyBytes {
                output: output.to_string(),
                limit: limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// A checked Tree: its directories by digest, and the distinct file blobs it names.
#[derive(Debug, Clone)]
pub struct CheckedTree {
    /// The root directory.
    pub root: reapi::Directory,
    /// Every child directory, by digest.
    pub children: HashMap<Digest, reapi::Directory>,
    /// Every distinct file blob.
    pub files: Vec<Digest>,
}

fn digest_of(what: impl FnOnce() -> String, d: Option<&reapi::Digest>) -> Result<Digest, Refusal> {
    Digest::from_field(d).map_err(|e| Refusal::BadDigest {
        what: what(),
        error: e.to_string(),
    })
}

/// Whether `s` holds no NUL but the escapes of bytes that are not UTF-8 (the way llama
/// names such files: [`crate::encode_name`]); any other NUL could cut a name short.
fn nul_free(s: &str) -> bool {
    !s.contains('\0') || crate::decode_name(s).is_ok()
}

/// Whether `path` is a plain relative path: components that are neither empty, `.` nor
/// `..`, no NUL but escapes.
fn plain_relative(path: &str) -> bool {
    !path.is_empty()
        && nul_free(path)
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Whether a symlink `target` placed `depth` directories below the outputs' root stays
/// inside it when followed lexically.
pub(crate) fn target_stays_inside(target: &str, depth: usize) -> bool {
    if target.is_empty() || target.starts_with('/') || !nul_free(target) {
        return false;
    }
    let mut level = depth as i64;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                level -= 1;
                if level < 0 {
                    return false;
                }
            }
            _ => level += 1,
        }
    }
    true
}

/// Every blob `result` names directly (stdout, stderr, output files), and the digests of
/// its output directories' Tree messages (whose files are found by reading them, then
/// [`check_tree`]). Remote executors download both before the result is usable here.
pub fn result_digests(
    result: &reapi::ActionResult,
) -> Result<(Vec<Digest>, Vec<Digest>), ParseDigestError> {
    let mut blobs = Vec::new();
    for d in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        blobs.push(Digest::from_proto(d)?);
    }
    for f in &result.output_files {
        blobs.push(Digest::from_field(f.digest.as_ref())?);
    }
    let mut trees = Vec::new();
    for dir in &result.output_directories {
        trees.push(Digest::from_field(dir.tree_digest.as_ref())?);
    }
    Ok((blobs, trees))
}

/// Checks what can be checked of `result` without reading its trees: output paths,
/// symlink targets, digests, the sizes of stdout, stderr and output files, and the sizes of
/// the Tree messages. Returns the budget used so far (for [`check_tree`]).
pub fn check_result_shape(
    result: &reapi::ActionResult,
    limits: &ResultLimits,
) -> Result<Budget, Refusal> {
    let mut budget = Budget::default();
    for (what, d) in [
        ("stdout", &result.stdout_digest),
        ("stderr", &result.stderr_digest),
    ] {
        if let Some(d) = d {
            let digest = digest_of(|| what.to_string(), Some(d))?;
            budget.spend(limits, what, 0, digest.size())?;
        }
    }
    let mut seen = HashSet::new();
    let mut path_ok = |path: &str| {
        if plain_relative(path) && seen.insert(path.to_string()) {
            Ok(())
        } else {
            Err(Refusal::BadOutputPath {
                path: path.to_string(),
            })
        }
    };
    for f in &result.output_files {
        path_ok(&f.path)?;
        let digest = digest_of(|| format!("output file {:?}", f.path), f.digest.as_ref())?;
        budget.spend(limits, &f.path, 1, digest.size())?;
    }
    for l in &result.output_symlinks {
        path_ok(&l.path)?;
        let depth = l.path.split('/').count() - 1;
        if !target_stays_inside(&l.target, depth) {
            return Err(Refusal::SymlinkEscapes {
                path: l.path.clone(),
                target: l.target.clone(),
            });
        }
        budget.spend(limits, &l.path, 1, 0)?;
    }
    for d in &result.output_directories {
        path_ok(&d.path)?;
        let digest = digest_of(
            || format!("output directory {:?}", d.path),
            d.tree_digest.as_ref(),
        )?;
        if digest.size() > MAX_TREE_MESSAGE_BYTES {
            return Err(Refusal::TreeTooLarge {
                output: d.path.clone(),
                size: digest.size(),
            });
        }
    }
    Ok(budget)
}

/// Checks the Tree of output directory `output` and charges what it expands to against
/// `budget`: every name plain and unique within its directory, every symlink inside the
/// output directory, every child present, the nesting bounded.
pub fn check_tree(
    output: &str,
    tree: &reapi::Tree,
    limits: &ResultLimits,
    budget: &mut Budget,
) -> Result<CheckedTree, Refusal> {
    let children: HashMap<Digest, reapi::Directory> = tree
        .children
        .iter()
        .map(|d| (Digest::of_message(d), d.clone()))
        .collect();
    let root = tree.root.clone().unwrap_or_default();
    // Each distinct directory is looked at once: its names, and (bottom-up) the nodes and
    // bytes it expands to, saturating. `depth` is the shallowest place it appears, which is
    // where its symlinks have the least room to climb.
    let mut expanded: HashMap<Option<Digest>, (u64, u64)> = HashMap::new();
    let mut shallowest: HashMap<Option<Digest>, usize> = HashMap::new();
    let mut files = HashSet::new();
    // Iterative post-order walk of the DAG: (directory, depth, children pushed yet).
    let mut stack: Vec<(Option<Digest>, usize, bool)> = vec![(None, 0, false)];
    while let Some((key, depth, expanded_children)) = stack.pop() {
        if depth > MAX_TREE_DEPTH {
            return Err(Refusal::TooDeep {
                output: output.to_string(),
            });
        }
        let dir = match &key {
            None => &root,
            Some(d) => children.get(d).ok_or(Refusal::MissingDirectory {
                output: output.to_string(),
                digest: *d,
            })?,
        };
        if !expanded_children {
            let first = shallowest.get(&key).is_none_or(|&at| depth < at);
            if !first && expanded.contains_key(&key) {
                continue;
            }
            shallowest.insert(key, depth);
            check_names(output, dir, depth)?;
            for f in &dir.files {
                files.insert(digest_of(
                    || format!("file {:?} of output directory {output:?}", f.name),
                    f.digest.as_ref(),
                )?);
            }
            stack.push((key, depth, true));
            for sub in &dir.directories {
                let d = digest_of(
                    || format!("directory {:?} of output directory {output:?}", sub.name),
                    sub.digest.as_ref(),
                )?;
                stack.push((Some(d), depth + 1, false));
            }
            continue;
        }
        if expanded.contains_key(&key) {
            continue;
        }
        let mut nodes = 1 + dir.files.len() as u64 + dir.symlinks.len() as u64;
        let mut bytes = 0u64;
        for f in &dir.files {
            let d = digest_of(|| f.name.clone(), f.digest.as_ref())?;
            bytes = bytes.saturating_add(d.size());
        }
        for sub in &dir.directories {
            let d = digest_of(|| sub.name.clone(), sub.digest.as_ref())?;
            // Pushed above and finished before this entry was popped again.
            let (n, b) = expanded
                .get(&Some(d))
                .copied()
                .unwrap_or((u64::MAX, u64::MAX));
            nodes = nodes.saturating_add(n);
            bytes = bytes.saturating_add(b);
        }
        expanded.insert(key, (nodes, bytes));
    }
    let (nodes, bytes) = expanded.get(&None).copied().unwrap_or((u64::MAX, u64::MAX));
    budget.spend(limits, output, nodes, bytes)?;
    let mut files: Vec<Digest> = files.into_iter().collect();
    files.sort_by(|a, b| a.hash_bytes().cmp(b.hash_bytes()));
    Ok(CheckedTree {
        root,
        children,
        files,
    })
}

fn check_names(output: &str, dir: &reapi::Directory, depth: usize) -> Result<(), Refusal> {
    let mut names = HashSet::new();
    let names_in = dir
        .files
        .iter()
        .map(|f| &f.name)
        .chain(dir.directories.iter().map(|d| &d.name))
        .chain(dir.symlinks.iter().map(|l| &l.name));
    for name in names_in {
        if name.is_empty() || name == "." || name == ".." || name.contains('/') || !nul_free(name) {
            return Err(Refusal::BadName {
                output: output.to_string(),
                name: name.clone(),
            });
        }
        if !names.insert(name.as_str()) {
            return Err(Refusal::DuplicateName {
                output: output.to_string(),
                name: name.clone(),
            });
        }
    }
    for l in &dir.symlinks {
        if !target_stays_inside(&l.target, depth) {
            return Err(Refusal::SymlinkEscapes {
                path: format!("{output}/.../{}", l.name),
                target: l.target.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, data: &[u8]) -> reapi::FileNode {
        reapi::FileNode {
            name: name.into(),
            digest: Some(Digest::of_bytes(data).to_proto()),
            ..Default::default()
        }
    }

    fn dir_node(name: &str, d: &reapi::Directory) -> reapi::DirectoryNode {
        reapi::DirectoryNode {
            name: name.into(),
            digest: Some(Digest::of_message(d).to_proto()),
        }
    }

    /// A tree `levels` deep whose every directory lists the one below twice.
    pub(crate) fn bomb(levels: usize) -> reapi::Tree {
        let mut dir = reapi::Directory {
            files: vec![file("f", b"x")],
            ..Default::default()
        };
        let mut children = vec![];
        for _ in 0..levels {
            children.push(dir.clone());
            dir = reapi::Directory {
                directories: vec![dir_node("a", &dir), dir_node("b", &dir)],
                ..Default::default()
            };
        }
        reapi::Tree {
            root: Some(dir),
            children,
        }
    }

    #[test]
    fn a_tree_bomb_is_counted_without_being_expanded() {
        let tree = bomb(60);
        let mut budget = Budget::default();
        let err = check_tree("out", &tree, &ResultLimits::default(), &mut budget).unwrap_err();
        assert!(
            matches!(err, Refusal::TooManyNodes { limit, .. } if limit == DEFAULT_MAX_OUTPUT_NODES),
            "{err}"
        );
        assert!(err.to_string().contains("max_output_nodes"), "{err}");
        let mut budget = Budget::default();
        let small = check_tree("out", &bomb(3), &ResultLimits::default(), &mut budget).unwrap();
        assert_eq!(small.files.len(), 1);
        // 1 + 2 + 4 + 8 directories, 8 files.
        assert_eq!(budget.nodes, 15 + 8);
        assert_eq!(budget.bytes, 8);
    }

    #[test]
    fn symlinks_may_climb_only_as_far_as_they_are_deep() {
        assert!(target_stays_inside("a/b", 0));
        assert!(target_stays_inside("../x", 1));
        assert!(target_stays_inside("a/../../x", 1));
        assert!(!target_stays_inside("../x", 0));
        assert!(!target_stays_inside("a/../../x", 0));
        assert!(!target_stays_inside("/etc/passwd", 5));
        assert!(!target_stays_inside("", 0));
    }

    #[test]
    fn output_paths_must_be_plain_and_relative() {
        for bad in ["", "/abs", "a/../b", "..", "a//b", "./a", "a\0b", "a/"] {
            let result = reapi::ActionResult {
                output_files: vec![reapi::OutputFile {
                    path: bad.into(),
                    digest: Some(Digest::of_bytes(b"x").to_proto()),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let err = check_result_shape(&result, &ResultLimits::default()).unwrap_err();
            assert!(
                matches!(err, Refusal::BadOutputPath { .. }),
                "{bad:?}: {err}"
            );
        }
    }
}
