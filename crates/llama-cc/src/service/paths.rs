//! Paths as the kernel reads them, not as they are spelled: `..` after a symlink, `$PWD`
//! naming the working directory through one, and file stamps compared at the file
//! system's granularity.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use llama_core::encode_os;
use llama_exec::OutputMapping;

use super::{CompileRequest, OUTPUT_ENV};
use crate::compilation::Compilation;
use crate::stats::TrustReason;

/// The outputs a compile writes: object (or assembly), the depfile the user asked for, and
/// extra outputs such as the `.dwo` of `-gsplit-dwarf`. Remote names are root-relative.
/// Each is where the kernel puts it (`sym/../x.o` lands beside `sym`'s target), and the
/// flag says whether any of them differs from its lexical reading.
pub(super) fn output_mappings(
    cwd: &Path,
    c: &Compilation,
) -> Result<(Vec<OutputMapping>, bool), TrustReason> {
    let mut through_symlink = false;
    let mut mappings = Vec::new();
    for p in std::iter::once(&c.output)
        .chain(c.depfile.iter().map(|d| &d.path))
        .chain(c.extra_outputs.iter())
    {
        let path = cwd.join(p);
        let local = resolve(&path).ok_or(TrustReason::UnresolvableOutput)?;
        through_symlink |= local != normalize(&path);
        mappings.push(OutputMapping {
            remote: root_relative(&local),
            local,
        });
    }
    Ok((mappings, through_symlink))
}

/// The directory gcc and clang name as the compile's own (`DW_AT_comp_dir`, the
/// `-fdebug-prefix-map` base) when it is not the working directory as the client's getcwd
/// spelled it: `$PWD`, byte for byte, when it is absolute and is the working directory
/// (libiberty's `getpwd`, LLVM's `current_path`). `None`: the compiler uses the working
/// directory.
pub(super) fn logical_dir(req: &CompileRequest) -> Option<&OsStr> {
    let (_, pwd) = req.env.iter().rev().find(|(k, _)| k == "PWD")?;
    let path = Path::new(pwd);
    // Compared as bytes: `/src/` names the same directory as `/src` but is written as is.
    (path.is_absolute() && pwd.as_os_str() != req.cwd.as_os_str() && same_dir(path, &req.cwd))
        .then_some(pwd.as_os_str())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Stamps this close before the compile's start are not trusted either: the kernel stamps
/// files from a clock that lags the one `SystemTime::now` reads by up to a tick (1–10 ms).
const CLOCK_TICK: Duration = Duration::from_millis(20);

/// Whether a file's mtime or ctime is at or after `started`, at the granularity its file
/// system keeps: stamps without nanoseconds (whole seconds, or FAT's two) are compared a
/// whole two seconds wide, and "equal" counts as too new.
pub(super) fn too_new(meta: &fs::Metadata, started: SystemTime) -> bool {
    stamps_too_new(
        [
            (meta.mtime(), meta.mtime_nsec()),
            (meta.ctime(), meta.ctime_nsec()),
        ],
        started,
    )
}

/// [`too_new`] on (seconds, nanoseconds) stamps: mtime, then ctime.
fn stamps_too_new(stamps: [(i64, i64); 2], started: SystemTime) -> bool {
    let start = started.duration_since(UNIX_EPOCH).unwrap_or_default();
    let coarse = stamps.iter().all(|(_, nanos)| *nanos == 0);
    let window = if coarse {
        Duration::from_secs(2)
    } else {
        CLOCK_TICK
    };
    let threshold = start.saturating_sub(window);
    stamps.into_iter().any(|(secs, nanos)| {
        // A stamp before 1970 is older than any compile.
        let Ok(secs) = u64::try_from(secs) else {
            return false;
        };
        let stamp = Duration::new(secs, u32::try_from(nanos).unwrap_or(0).min(999_999_999));
        stamp >= threshold
    })
}

/// The client's variables among [`OUTPUT_ENV`]: the environment of a compile's action.
pub(super) fn output_env(req: &CompileRequest) -> Vec<(String, String)> {
    OUTPUT_ENV
        .iter()
        .filter_map(|var| {
            req.env
                .iter()
                .find(|(k, _)| k == *var)
                .map(|(_, v)| (var.to_string(), encode_os(v).into_owned()))
        })
        .collect()
}

/// The depfile's name among the compile's outputs (root-relative), if it writes one.
pub(super) fn depfile_remote(cwd: &Path, c: &Compilation) -> Option<String> {
    c.depfile.as_ref().map(|d| {
        let path = cwd.join(&d.path);
        root_relative(&resolve(&path).unwrap_or_else(|| normalize(&path)))
    })
}

/// `/a/b/../c` → `/a/c`, without touching the file system (the compiler's own spelling of
/// paths in depfiles uses `..` freely).
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` (absolute) with `.` and `..` taken out as the kernel takes them out: `..` after a
/// symlink leads to the parent of the symlink's target, not back to where the name was
/// spelled. Only a `..` that leaves a symlink touches the file system; `None` when such a
/// symlink does not resolve (the kernel would fail the lookup too).
pub(super) fn resolve(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::ParentDir => {
                let is_link = fs::symlink_metadata(&out)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(false);
                if is_link {
                    out = fs::canonicalize(&out).ok()?;
                }
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// A directory as [`resolve`] finds it, or as spelled when it does not exist (then nothing
/// is found in it either way).
pub(super) fn physical_dir(path: &Path) -> PathBuf {
    resolve(path).unwrap_or_else(|| normalize(path))
}

/// An absolute path as a path relative to the root of an input tree.
pub(super) fn root_relative(path: &Path) -> String {
    encode_os(path.as_os_str())
        .trim_start_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn stamps_are_compared_at_the_file_systems_granularity() {
        let started = at(1_000, 500_000_000);
        // Nanosecond stamps: after, equal and within the clock's tick are too new.
        for stamp in [(1_001, 1), (1_000, 500_000_000), (1_000, 490_000_000)] {
            assert!(stamps_too_new([stamp, (900, 1)], started), "{stamp:?}");
            assert!(stamps_too_new([(900, 1), stamp], started), "{stamp:?}");
        }
        assert!(!stamps_too_new([(1_000, 400_000_000), (999, 1)], started));
        // Whole seconds: the second the compile started in and the one before it are not
        // distinguishable from it; older ones are.
        assert!(stamps_too_new([(1_000, 0), (1_000, 0)], started));
        assert!(stamps_too_new([(999, 0), (999, 0)], started));
        assert!(!stamps_too_new([(997, 0), (997, 0)], started));
        // Before 1970: never too new.
        assert!(!stamps_too_new([(-5, 0), (-5, 0)], started));
    }

    #[test]
    fn resolve_follows_the_kernel_through_symlinks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = fs::canonicalize(dir.path()).expect("canonical temp dir");
        fs::create_dir_all(root.join("sub/dir")).expect("create sub/dir");
        std::os::unix::fs::symlink("sub/dir", root.join("sym")).expect("symlink");
        assert_eq!(
            resolve(&root.join("sym/../x.o")),
            Some(root.join("sub/x.o"))
        );
        assert_eq!(
            resolve(&root.join("sub/dir/../x.o")),
            Some(root.join("sub/x.o"))
        );
        assert_eq!(resolve(&root.join("./a/./b")), Some(root.join("a/b")));
        // Without `..` nothing is looked up, existing or not.
        assert_eq!(
            resolve(&root.join("no/such/x.o")),
            Some(root.join("no/such/x.o"))
        );
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).expect("symlink");
        assert_eq!(resolve(&root.join("dangling/../x.o")), None);
    }
}
