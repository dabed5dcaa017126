//! File-system helpers shared by the executors and the output delivery.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use llama_core::{Digest, InputTree, LinkedInput, Store, reapi};
use prost::Message;

use crate::executor::ExecError;

/// How files are laid out from the store.
pub(crate) enum Layout {
    /// Each file a verified copy of its own.
    Copy,
    /// Each file a link to the store's read-only copy, recorded here to be checked after
    /// the action ([`Store::check_linked`]).
    Link(Vec<LinkedInput>),
}

/// Fills the existing, empty directory `dest` with the directory `digest` of `tree`, every
/// file laid out from the store as `layout` says.
pub(crate) fn populate_tree(
    store: &Store,
    tree: &InputTree,
    digest: &Digest,
    dest: &Path,
    layout: &mut Layout,
) -> Result<(), ExecError> {
    let bytes = tree.directories.get(digest).ok_or_else(|| {
        ExecError::InvalidAction(format!("directory {digest} is not in the input tree"))
    })?;
    let dir = reapi::Directory::decode(&bytes[..])
        .map_err(|e| ExecError::InvalidAction(format!("directory {digest}: {e}")))?;
    let mut lookup = |d: &Digest| {
        tree.directories
            .get(d)
            .and_then(|b| reapi::Directory::decode(&b[..]).ok())
            .ok_or_else(|| {
                ExecError::InvalidAction(format!("directory {d} is not in the input tree"))
            })
    };
    populate_directory(store, &dir, dest, &mut lookup, layout)
}

/// Recreates `dir` at `dest` (which must not exist), looking up subdirectories through
/// `lookup`.
pub(crate) fn materialize_directory(
    store: &Store,
    dir: &reapi::Directory,
    dest: &Path,
    lookup: &mut dyn FnMut(&Digest) -> Result<reapi::Directory, ExecError>,
) -> Result<(), ExecError> {
    fs::create_dir(dest).map_err(|error| ExecError::Scratch {
        path: dest.to_path_buf(),
        error,
    })?;
    populate_directory(store, dir, dest, lookup, &mut Layout::Copy)
}

/// Fills the existing directory `dest` with `dir`'s entries.
fn populate_directory(
    store: &Store,
    dir: &reapi::Directory,
    dest: &Path,
    lookup: &mut dyn FnMut(&Digest) -> Result<reapi::Directory, ExecError>,
    layout: &mut Layout,
) -> Result<(), ExecError> {
    let scratch = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ExecError::Scratch { path, error }
    };
    for file in &dir.files {
        let path = checked_join(dest, &file.name)?;
        let digest = parse_digest(file.digest.as_ref())?;
        match layout {
            Layout::Copy => store.materialize(&digest, &path, file.is_executable)?,
            Layout::Link(linked) => {
                linked.extend(store.link_input(&digest, &path, file.is_executable)?);
            }
        }
    }
    for link in &dir.symlinks {
        let path = checked_join(dest, &link.name)?;
        let target = llama_core::decode_os(&link.target)
            .map_err(|e| ExecError::InvalidAction(format!("symlink {}: {e}", path.display())))?;
        std::os::unix::fs::symlink(&target, &path).map_err(scratch(&path))?;
    }
    for sub in &dir.directories {
        let path = checked_join(dest, &sub.name)?;
        let digest = parse_digest(sub.digest.as_ref())?;
        let child = lookup(&digest)?;
        fs::create_dir(&path).map_err(scratch(&path))?;
        populate_directory(store, &child, &path, lookup, layout)?;
    }
    Ok(())
}

/// A child name must be one plain path component: anything else could write outside. A
/// name that is not UTF-8 arrives escaped and is created with its exact bytes.
fn checked_join(dir: &Path, name: &str) -> Result<std::path::PathBuf, ExecError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(ExecError::InvalidAction(format!(
            "directory entry {name:?} is not a plain file name"
        )));
    }
    let name = llama_core::decode_os(name)
        .map_err(|e| ExecError::InvalidAction(format!("directory entry: {e}")))?;
    Ok(dir.join(name))
}

pub(crate) fn parse_digest(d: Option<&reapi::Digest>) -> Result<Digest, ExecError> {
    Digest::from_field(d).map_err(|e| ExecError::InvalidAction(e.to_string()))
}

/// Removes a directory tree even where the command left read-only directories behind.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_dir()
    {
        let mode = meta.permissions().mode() | 0o700;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
        if let Ok(entries) = fs::read_dir(path) {
            for entry in entries.flatten() {
                make_writable(&entry.path());
            }
        }
    }
}
