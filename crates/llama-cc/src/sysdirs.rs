//! System include directories and their fingerprints.
//!
//! With `-MMD` (git, openssl and the Linux kernel use it) the compiler's depfile leaves out
//! headers found in system directories, so no per-header digests exist for them. Instead
//! the key covers a fingerprint of every system include directory: the path, inode, size,
//! mtime and ctime of every file under it.
//!
//! Walking /usr/include takes tens of milliseconds, so it is not done per compile: inotify
//! watches every directory walked, and any change under them makes the next fingerprint
//! walk again. Where inotify is unavailable (no watches left), a fingerprint is trusted
//! for [`FINGERPRINT_TTL`] instead, which bounds the sloppiness that leaves: a system header
//! edited in place within that window of a compile.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llama_core::{Digest, Hasher};
use llama_exec::{HostCommand, run_host};

use crate::error::CcError;

/// Without inotify, how long a directory fingerprint is trusted before it is recomputed.
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
pub struct SystemDirs {
    lists: Mutex<HashMap<ListKey, Arc<Vec<PathBuf>>>>,
    prints: Mutex<HashMap<PathBuf, Print>>,
    watcher: Option<Watcher>,
}

/// A directory's fingerprint, and when it was taken.
#[derive(Clone, Copy)]
struct Print {
    digest: Digest,
    generation: u64,
    taken: Instant,
}

/// inotify watches on every directory fingerprinted; any event bumps the generation.
struct Watcher {
    watches: Mutex<inotify::Watches>,
    generation: Arc<AtomicU64>,
}

impl Watcher {
    fn start() -> Option<Watcher> {
        let mut inotify = inotify::Inotify::init().ok()?;
        let watches = inotify.watches();
        let generation = Arc::new(AtomicU64::new(0));
        let bump = generation.clone();
        std::thread::Builder::new()
            .name("llama-sysdirs-watch".into())
            .spawn(move || {
                let mut buf = vec![0u8; 4096];
                loop {
                    match inotify.read_events_blocking(&mut buf) {
                        Ok(events) => {
                            if events.count() > 0 {
                                bump.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            // Watching failed: every fingerprint must be taken afresh.
                            bump.store(u64::MAX, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            })
            .ok()?;
        Some(Watcher {
            watches: Mutex::new(watches),
            generation,
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Watches `dir`; false when no watch could be added (the caller then trusts nothing).
    fn watch(&self, dir: &Path) -> bool {
        use inotify::WatchMask;
        let mask = WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVE
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        self.watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(dir, mask)
            .is_ok()
    }
}

impl Default for SystemDirs {
    fn default() -> Self {
        SystemDirs {
            lists: Mutex::new(HashMap::new()),
            prints: Mutex::new(HashMap::new()),
            watcher: Watcher::start(),
        }
    }
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
        // A directory inside another of the list is covered by the outer one's walk.
        let outer: Vec<&PathBuf> = dirs
            .iter()
            .filter(|d| !dirs.iter().any(|o| o != *d && d.starts_with(o)))
            .collect();
        for dir in outer {
            hasher.update(dir.as_os_str().as_encoded_bytes());
            hasher.update(b"\0");
            hasher.update(self.dir_print(dir).hash_bytes());
        }
        hasher.finish()
    }

    fn dir_print(&self, dir: &Path) -> Digest {
        let generation = self.watcher.as_ref().map(Watcher::generation);
        if let Some(print) = self.lock_prints().get(dir).copied() {
            let fresh = match generation {
                Some(g) => g != u64::MAX && print.generation == g,
                None => print.taken.elapsed() < FINGERPRINT_TTL,
            };
            if fresh {
                return print.digest;
            }
        }
        let mut entries = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        walk(dir, &mut entries, &mut dirs);
        // A directory that cannot be watched cannot be trusted past this compile.
        let watched = self
            .watcher
            .as_ref()
            .is_some_and(|w| dirs.iter().all(|d| w.watch(d)));
        entries.sort();
        let mut hasher = Hasher::default();
        for (path, stamp) in &entries {
            hasher.update(path.as_os_str().as_encoded_bytes());
            for v in stamp {
                hasher.update(&v.to_le_bytes());
            }
        }
        let digest = hasher.finish();
        let print = Print {
            digest,
            // Read before the walk: a change during it leaves the print stale.
            generation: if watched {
                generation.unwrap_or(u64::MAX)
            } else {
                u64::MAX
            },
            taken: Instant::now(),
        };
        self.lock_prints().insert(dir.to_path_buf(), print);
        digest
    }

    fn lock_lists(&self) -> std::sync::MutexGuard<'_, HashMap<ListKey, Arc<Vec<PathBuf>>>> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_prints(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Print>> {
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
    // The probe runs in `/`, so a relative directory is taken against it.
    crate::scanner::setup::search_from_verbose(stderr, Path::new("/"))
        .angled
        .into_iter()
        .map(|dir| fs::canonicalize(&dir).unwrap_or(dir))
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, [u64; 4])>, dirs: &mut Vec<PathBuf>) {
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
            dirs.push(path.clone());
            walk(&path, out, dirs);
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
    fn a_changed_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a.h"), "1").unwrap();
        let sys = SystemDirs::default();
        assert!(sys.watcher.is_some(), "inotify is available here");
        let dirs = vec![dir.path().to_path_buf()];
        let before = sys.fingerprint(&dirs);
        assert_eq!(before, sys.fingerprint(&dirs));
        // Edited in place, in a subdirectory, within the same second.
        fs::write(dir.path().join("sub/a.h"), "22").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sys.fingerprint(&dirs) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_ne!(before, sys.fingerprint(&dirs));
    }
}
