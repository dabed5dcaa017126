//! System include directories and their fingerprints.
//!
//! With `-MMD` (git, openssl and the Linux kernel use it) the compiler's depfile leaves out
//! headers found in system directories, so no per-header digests exist for them. Instead
//! the key covers a fingerprint of every system include directory: the path, inode, size,
//! mtime and ctime of every file under it. A fingerprint is recomputed when older than
//! [`FINGERPRINT_TTL`], which bounds the one sloppiness left: a system header edited in
//! place within that window of a compile.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_core::{Digest, Hasher};
use llama_exec::{HostCommand, run_host};

use crate::error::CcError;

/// How long a directory fingerprint is trusted before it is recomputed.
pub const FINGERPRINT_TTL: Duration = Duration::from_secs(1);

/// Flags that change which system directories the compiler searches. Only these are passed
/// when asking the compiler for its search list (and they key the cache of that list).
const SEARCH_FLAGS: &[&str] = &[
    "--gcc-toolchain",
    "--sysroot",
    "--target",
    "-B",
    "-idirafter",
    "-imultiarch",
    "-imultilib",
    "-iprefix",
    "-isysroot",
    "-isystem",
    "-iwithprefix",
    "-m",
    "-nostdinc",
    "-nostdinc++",
    "-stdlib",
    "-target",
];

/// A search list's cache key: compiler identity, the relevant flags, the language.
type ListKey = (Digest, Vec<OsString>, String);

/// Caches of search lists and fingerprints, shared by all compiles of a daemon.
#[derive(Default)]
pub struct SystemDirs {
    lists: Mutex<HashMap<ListKey, Arc<Vec<PathBuf>>>>,
    prints: Mutex<HashMap<PathBuf, (Digest, Instant)>>,
}

impl SystemDirs {
    /// The system include directories the compiler searches for `language` (`c`, `c++`,
    /// ...) given the relevant flags of `args`, in search order.
    pub async fn search_list(
        &self,
        driver: &Path,
        identity: &Digest,
        language: &str,
        args: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<Arc<Vec<PathBuf>>, CcError> {
        let relevant = relevant_flags(args);
        let key = (*identity, relevant.clone(), language.to_string());
        if let Some(list) = self.lock_lists().get(&key) {
            return Ok(list.clone());
        }
        let mut probe_args: Vec<OsString> = relevant;
        for a in ["-x", language, "-E", "-v", "/dev/null"] {
            probe_args.push(a.into());
        }
        let out = run_host(
            &HostCommand {
                program: driver.to_path_buf(),
                args: probe_args,
                cwd: PathBuf::from("/"),
                env: env.to_vec(),
                umask: None,
            },
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| CcError::probe(driver, e.to_string()))?;
        let list = Arc::new(parse_search_list(&String::from_utf8_lossy(&out.stderr)));
        self.lock_lists().insert(key, list.clone());
        Ok(list)
    }

    /// A fingerprint of everything under `dirs`.
    pub fn fingerprint(&self, dirs: &[PathBuf]) -> Digest {
        let mut hasher = Hasher::default();
        for dir in dirs {
            hasher.update(dir.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
            hasher.update(self.dir_print(dir).hash_bytes());
        }
        hasher.finish()
    }

    fn dir_print(&self, dir: &Path) -> Digest {
        if let Some((digest, at)) = self.lock_prints().get(dir)
            && at.elapsed() < FINGERPRINT_TTL
        {
            return *digest;
        }
        let mut entries = Vec::new();
        walk(dir, &mut entries);
        entries.sort();
        let mut hasher = Hasher::default();
        for (path, stamp) in &entries {
            hasher.update(path.as_os_str().as_encoded_bytes());
            for v in stamp {
                hasher.update(&v.to_le_bytes());
            }
        }
        let digest = hasher.finish();
        self.lock_prints()
            .insert(dir.to_path_buf(), (digest, Instant::now()));
        digest
    }

    fn lock_lists(&self) -> std::sync::MutexGuard<'_, HashMap<ListKey, Arc<Vec<PathBuf>>>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_prints(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Digest, Instant)>> {
        self.prints.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The flags of `args` (with their values) that affect the search list.
fn relevant_flags(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else { continue };
        let Some(flag) = SEARCH_FLAGS
            .iter()
            .filter(|f| text.starts_with(**f))
            .max_by_key(|f| f.len())
        else {
            continue;
        };
        out.push(arg.clone());
        // The separate-argument spelling takes the next word along.
        let separate =
            text.len() == flag.len() && !matches!(*flag, "-nostdinc" | "-nostdinc++" | "-m");
        if separate && let Some(value) = iter.next() {
            out.push(value.clone());
        }
    }
    out
}

/// Reads the `#include <...> search starts here:` list from `cc -E -v` output.
fn parse_search_list(stderr: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut inside = false;
    for line in stderr.lines() {
        if line.starts_with("#include <...> search starts here:") {
            inside = true;
        } else if line.starts_with("End of search list.") {
            break;
        } else if inside && let Some(dir) = line.strip_prefix(' ') {
            // clang marks framework directories; they hold no plain headers.
            let dir = dir.trim_end_matches(" (framework directory)");
            dirs.push(fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir)));
        }
    }
    dirs
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, [u64; 4])>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let stamp = [
            meta.ino(),
            meta.size(),
            (meta.mtime() * 1_000_000_000 + meta.mtime_nsec()) as u64,
            (meta.ctime() * 1_000_000_000 + meta.ctime_nsec()) as u64,
        ];
        if meta.is_dir() {
            walk(&path, out);
        }
        out.push((path, stamp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_list_is_read_from_cc_dash_v() {
        let text = "ignoring nonexistent directory \"/x\"\n#include \"...\" search starts here:\n#include <...> search starts here:\n /usr/lib/gcc/x86_64-linux-gnu/12/include\n /usr/local/include\n /usr/include\nEnd of search list.\n";
        let dirs = parse_search_list(text);
        assert_eq!(dirs.len(), 3);
        assert!(dirs[2].ends_with("include"));
    }

    #[test]
    fn only_search_flags_are_kept() {
        let args: Vec<OsString> = [
            "-O2",
            "-isystem",
            "/v",
            "-m32",
            "-Ifoo",
            "--sysroot=/s",
            "-DX",
            "-nostdinc",
            "a.c",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let kept: Vec<_> = relevant_flags(&args);
        assert_eq!(
            kept,
            ["-isystem", "/v", "-m32", "--sysroot=/s", "-nostdinc"]
        );
    }

    #[test]
    fn a_changed_file_changes_the_fingerprint_after_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.h"), "1").unwrap();
        let sys = SystemDirs::default();
        let dirs = vec![dir.path().to_path_buf()];
        let before = sys.fingerprint(&dirs);
        assert_eq!(before, sys.fingerprint(&dirs));
        fs::write(dir.path().join("a.h"), "22").unwrap();
        std::thread::sleep(FINGERPRINT_TTL + Duration::from_millis(50));
        assert_ne!(before, sys.fingerprint(&dirs));
    }
}
