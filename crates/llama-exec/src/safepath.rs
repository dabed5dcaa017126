//! Paths an action names inside its own directory (outputs, working directory), resolved
//! without ever leaving it.
//!
//! The action's inputs may contain symlinks pointing anywhere, so a path such as
//! `d/link/secret` must not be followed: chmodding, hard-linking or creating through it
//! would act on files outside the action's directory. Every component is checked with
//! `lstat` from the root down, and a symlink anywhere but the last component is refused.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a path named by an action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeReason {
    /// The path is empty (or only `.` and slashes) where a file is needed.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// The path has a `..` component.
    Parent,
    /// The path contains a NUL byte.
    Nul,
    /// A directory component of the path is a symlink.
    Symlink,
    /// A directory component of the path is not a directory.
    NotDirectory,
}

/// A path named by an action that would reach outside the action's directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnsafePath {
    /// What the path is to the action ("output path", "working directory").
    pub what: &'static str,
    /// The path as the action named it.
    pub path: String,
    /// The offending prefix of the path (for symlinks and non-directories).
    pub component: String,
    /// Why it was refused.
    pub reason: UnsafeReason,
}

impl fmt::Display for UnsafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, path, at) = (self.what, &self.path, &self.component);
        match self.reason {
            UnsafeReason::Empty => write!(f, "{what} {path:?} is empty; name a file or directory"),
            UnsafeReason::Absolute => write!(
                f,
                "{what} {path:?} is absolute; name it relative to the action's directory"
            ),
            UnsafeReason::Parent => write!(
                f,
                "{what} {path:?} has a `..` component; name it without `..` so it stays inside the action's directory"
            ),
            UnsafeReason::Nul => write!(f, "{what} {path:?} contains a NUL byte"),
            UnsafeReason::Symlink => write!(
                f,
                "{what} {path:?} goes through the symlink {at:?}, which may point outside the action's directory; \
                 name it by a path without symlinks"
            ),
            UnsafeReason::NotDirectory => write!(
                f,
                "{what} {path:?} goes through {at:?}, which is not a directory"
            ),
        }
    }
}

/// The plain components of `path` (`.` and empty ones dropped), refusing absolute paths,
/// `..` and NUL. `allow_empty` accepts a path with no component (the root itself).
pub(crate) fn components<'a>(
    what: &'static str,
    path: &'a str,
    allow_empty: bool,
) -> Result<Vec<&'a str>, UnsafePath> {
    let refuse = |reason| UnsafePath {
        what,
        path: path.to_string(),
        component: String::new(),
        reason,
    };
    // A NUL is only ever the escape of a byte that is not UTF-8 (llama_core::encode_name);
    // any other is refused.
    if path.contains('\0') && llama_core::decode_name(path).is_err() {
        return Err(refuse(UnsafeReason::Nul));
    }
    if path.starts_with('/') {
        return Err(refuse(UnsafeReason::Absolute));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(refuse(UnsafeReason::Parent));
    }
    if parts.is_empty() && !allow_empty {
        return Err(refuse(UnsafeReason::Empty));
    }
    Ok(parts)
}

/// Refuses a path an action names (`what`: "output path", "working directory") that is
/// absolute, has `..` or NUL, or (unless `allow_empty`) names nothing: the checks that need
/// no file system, for a front door such as the Lambda runtime.
pub fn check_relative(what: &'static str, path: &str, allow_empty: bool) -> Result<(), UnsafePath> {
    components(what, path, allow_empty).map(|_| ())
}

/// What walking a path's directories found.
enum Walk {
    /// Every directory component exists and is a real directory.
    Complete,
    /// This component (index) and the ones after it do not exist yet.
    MissingFrom(usize),
}

/// Checks with `lstat` that each of `dirs` under `root` is a real directory or absent.
fn walk(
    root: &Path,
    what: &'static str,
    path: &str,
    dirs: &[&str],
) -> Result<(PathBuf, Walk), io::Error> {
    let mut at = root.to_path_buf();
    for (i, name) in dirs.iter().enumerate() {
        at.push(native(name));
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(unsafe_io(what, path, dirs, i, UnsafeReason::Symlink));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(unsafe_io(what, path, dirs, i, UnsafeReason::NotDirectory));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                at.pop();
                return Ok((at, Walk::MissingFrom(i)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((at, Walk::Complete))
}

fn unsafe_io(
    what: &'static str,
    path: &str,
    dirs: &[&str],
    i: usize,
    reason: UnsafeReason,
) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        UnsafePath {
            what,
            path: path.to_string(),
            component: dirs[..=i].join("/"),
            reason,
        },
    )
}

/// Where `rel` is under `root`, provided no directory component on the way is a symlink.
/// The last component may be anything (a symlink output is reported as a symlink, never
/// followed). `None` when a directory on the way does not exist (the output was not made).
pub fn resolve_beneath(
    root: &Path,
    what: &'static str,
    rel: &str,
    allow_empty: bool,
) -> Result<Option<PathBuf>, io::Error> {
    let parts = components(what, rel, allow_empty).map_err(into_io)?;
    let Some((last, dirs)) = parts.split_last() else {
        let (at, _) = walk(root, what, rel, &[])?;
        return Ok(Some(at));
    };
    match walk(root, what, rel, dirs)? {
        (at, Walk::Complete) => Ok(Some(at.join(native(last)))),
        (_, Walk::MissingFrom(_)) => Ok(None),
    }
}

/// Creates the directories of `rel` under `root` (all of it when `include_last`, else all
/// but its last component), never through a symlink. Returns the directory created last.
pub fn create_dirs_beneath(
    root: &Path,
    what: &'static str,
    rel: &str,
    include_last: bool,
) -> Result<PathBuf, io::Error> {
    let parts = components(what, rel, include_last).map_err(into_io)?;
    let dirs = if include_last {
        &parts[..]
    } else {
        &parts[..parts.len().saturating_sub(1)]
    };
    loop {
        match walk(root, what, rel, dirs)? {
            (at, Walk::Complete) => return Ok(at),
            (at, Walk::MissingFrom(i)) => {
                let dir = at.join(native(dirs[i]));
                match fs::create_dir(&dir) {
                    // Made by someone else meanwhile: the next walk checks what it is.
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// A component as the file system names it: the exact bytes where it arrived escaped.
/// [`components`] has checked that every escape in the path decodes.
fn native(name: &str) -> PathBuf {
    match llama_core::decode_name(name) {
        Ok(bytes) => PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)),
        Err(_) => PathBuf::from(name),
    }
}

fn into_io(e: UnsafePath) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// The [`UnsafePath`] inside an error from this module, if that is what it is.
pub fn unsafe_path(e: &io::Error) -> Option<&UnsafePath> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<UnsafePath>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lexical_refusals_are_named() {
        fn reason(p: &str) -> Result<Vec<&str>, UnsafeReason> {
            components("output path", p, false).map_err(|e| e.reason)
        }
        assert_eq!(reason("/etc/passwd"), Err(UnsafeReason::Absolute));
        assert_eq!(reason("a/../../x"), Err(UnsafeReason::Parent));
        assert_eq!(reason("a\0b"), Err(UnsafeReason::Nul));
        assert_eq!(reason("./"), Err(UnsafeReason::Empty));
        assert_eq!(reason(".//a/./b"), Ok(vec!["a", "b"]));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("link".to_string()),
            Just("d".to_string()),
            Just("\0".to_string()),
            "[a-z]{1,3}",
            "[a-z]{200,300}",
        ]
    }

    proptest! {
        // Each case touches a few files in a temp directory: 256 cases take well under a second.
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the string, resolving never panics, and an accepted path lies inside the
        /// root, reached through real directories only.
        #[test]
        fn accepted_paths_stay_inside_the_root(
            lead in prop_oneof![Just(""), Just("/"), Just("//")],
            segs in proptest::collection::vec(segment(), 0..8),
        ) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path().join("root");
            fs::create_dir_all(root.join("d")).expect("mkdir");
            std::os::unix::fs::symlink(tmp.path(), root.join("link")).expect("symlink");
            std::os::unix::fs::symlink(tmp.path(), root.join("d/link")).expect("symlink");
            let rel = format!("{lead}{}", segs.join("/"));
            let canon_root = root.canonicalize().expect("canonical root");
            match resolve_beneath(&root, "output path", &rel, false) {
                Ok(Some(path)) => {
                    let parent = path.parent().expect("has a parent");
                    let real = parent.canonicalize().expect("parent exists");
                    prop_assert!(real.starts_with(&canon_root), "{rel:?} resolved to {real:?}");
                }
                Ok(None) => {}
                Err(e) => prop_assert!(unsafe_path(&e).is_some() || e.raw_os_error().is_some(), "{e}"),
            }
            match create_dirs_beneath(&root, "output path", &rel, true) {
                Ok(dir) => {
                    let real = dir.canonicalize().expect("created");
                    prop_assert!(real.starts_with(&canon_root), "{rel:?} created {real:?}");
                }
                Err(e) => prop_assert!(unsafe_path(&e).is_some() || e.raw_os_error().is_some(), "{e}"),
            }
            // Nothing was created beside the root (through `link`, which points at tmp).
            let beside: Vec<_> = fs::read_dir(tmp.path()).expect("list").flatten()
                .map(|e| e.file_name()).collect();
            prop_assert_eq!(beside, vec![std::ffi::OsString::from("root")]);
        }
    }
}
