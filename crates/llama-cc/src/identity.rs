//! Which compiler a compile really uses: the driver, the programs it runs (cc1, cc1plus,
//! as) and the shared libraries each of them loads, digested, with its `--version`. Part of
//! every cache key, so a compiler upgrade never serves objects built by the old one — clang's
//! driver is a small program and the compiler lives in libclang-cpp and libLLVM, which a
//! distribution updates without changing the version clang prints.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llama_core::{Digest, HashCache, Hasher};
use llama_exec::{HostCommand, run_host};

use crate::compilation::Family;
use crate::error::CcError;

/// A compiler, identified.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Digest over the driver, the programs it runs and its version text.
    pub digest: Digest,
    /// gcc or clang, from `--version`.
    pub family: Family,
    /// The driver's path.
    pub driver: PathBuf,
    /// The first line of its `--version`.
    pub version: String,
    /// The programs the driver runs (gcc's `cc1`, `cc1plus`, `as`) and where they are.
    pub programs: Vec<(&'static str, PathBuf)>,
}

/// Identities of the compilers seen, revalidated by the stat stamps of their files.
#[derive(Default)]
pub struct IdentityCache {
    known: Mutex<HashMap<PathBuf, Arc<Known>>>,
}

struct Known {
    identity: Identity,
    stamps: Vec<(PathBuf, Stamp)>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    })
}

/// Programs a gcc driver runs for compiling and assembling, asked with `-print-prog-name`.
const GCC_PROGRAMS: &[&str] = &["cc1", "cc1plus", "as"];

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

impl IdentityCache {
    /// The identity of `driver` (an absolute path), probing it on first use or when any of
    /// its files changed.
    pub async fn get(
        &self,
        driver: &Path,
        env: &[(OsString, OsString)],
        hash_cache: &HashCache,
    ) -> Result<Identity, CcError> {
        let cached = self.lock().get(driver).cloned();
        if let Some(known) = cached
            && known.stamps.iter().all(|(p, s)| stamp(p) == Some(*s))
        {
            return Ok(known.identity.clone());
        }
        let known = Arc::new(probe(driver, env, hash_cache).await?);
        let identity = known.identity.clone();
        self.lock().insert(driver.to_path_buf(), known);
        Ok(identity)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Known>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn probe(
    driver: &Path,
    env: &[(OsString, OsString)],
    hash_cache: &HashCache,
) -> Result<Known, CcError> {
    let run = |args: &[&str]| HostCommand {
        program: driver.to_path_buf(),
        args: args.iter().map(OsString::from).collect(),
        cwd: PathBuf::from("/"),
        env: env.to_vec(),
        umask: None,
    };
    let version = run_host(&run(&["--version"]), PROBE_TIMEOUT)
        .await
        .map_err(|e| CcError::probe(driver, e.to_string()))?;
    if !version.termination.success() {
        return Err(CcError::probe(
            driver,
            format!(
                "`--version` {}: {}",
                version.termination,
                String::from_utf8_lossy(&version.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&version.stdout).into_owned();
    let family = if text.contains("clang") {
        Family::Clang
    } else {
        Family::Gcc
    };
    let mut files = vec![driver.to_path_buf()];
    let mut programs = Vec::new();
    if family == Family::Gcc {
        for prog in GCC_PROGRAMS {
            let out = run_host(&run(&[&format!("-print-prog-name={prog}")]), PROBE_TIMEOUT)
                .await
                .map_err(|e| CcError::probe(driver, e.to_string()))?;
            let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if let Some(path) = locate(&name, env) {
                files.push(path.clone());
                programs.push((*prog, path));
            }
        }
    }
    // A program the loader cannot list (a static one) loads no library.
    let mut libraries = Vec::new();
    for program in &files {
        for lib in llama_exec::ship::shared_libraries(program, env)
            .await
            .unwrap_or_default()
        {
            if !files.contains(&lib) && !libraries.contains(&lib) {
                libraries.push(lib);
            }
        }
    }
    files.extend(libraries);
    let mut hasher = Hasher::default();
    hasher.update(b"llama compiler identity v2\0");
    hasher.update(&version.stdout);
    let mut stamps = Vec::new();
    for file in &files {
        let meta = std::fs::metadata(file).map_err(|e| CcError::probe(file, e.to_string()))?;
        let digest = hash_cache
            .digest(file, &meta)
            .map_err(|e| CcError::probe(file, e.to_string()))?;
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(digest.hash_bytes());
        if let Some(s) = stamp(file) {
            stamps.push((file.clone(), s));
        }
    }
    Ok(Known {
        identity: Identity {
            digest: hasher.finish(),
            family,
            driver: driver.to_path_buf(),
            version: text.lines().next().unwrap_or_default().to_string(),
            programs,
        },
        stamps,
    })
}

/// An absolute path as is; a bare name looked up in the `PATH` of `env`.
fn locate(name: &str, env: &[(OsString, OsString)]) -> Option<PathBuf> {
    llama_exec::find_program(name.as_ref(), env_path(env).as_deref(), Path::new("/"))
}

/// The `PATH` of an environment.
pub fn env_path(env: &[(OsString, OsString)]) -> Option<OsString> {
    env.iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Builds `dir/libpart.so` whose `part()` returns `n`.
    fn build_part(dir: &Path, n: u32) {
        std::fs::write(
            dir.join("part.c"),
            format!("int part(void) {{ return {n}; }}\n"),
        )
        .expect("part.c");
        let status = Command::new("gcc")
            .args(["-shared", "-fPIC", "-o", "libpart.so", "part.c"])
            .current_dir(dir)
            .status()
            .expect("gcc");
        assert!(status.success());
    }

    #[tokio::test]
    async fn a_changed_library_of_the_compiler_changes_its_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        // A "compiler" whose work is done in a library, as clang's is in libLLVM: its
        // driver and its version text stay the same when the library changes.
        std::fs::write(
            d.join("cc.c"),
            "#include <stdio.h>\nint part(void);\n\
             int main(void) { printf(\"clang version 1.0 (%d)\\n\", part() > 0); return 0; }\n",
        )
        .expect("cc.c");
        build_part(d, 1);
        let status = Command::new("gcc")
            .args(["-o", "cc", "cc.c", "-L.", "-lpart", "-Wl,-rpath,$ORIGIN"])
            .current_dir(d)
            .status()
            .expect("gcc");
        assert!(status.success());
        let cache = IdentityCache::default();
        let hashes = HashCache::in_memory();
        let env = [("PATH".into(), "/usr/bin:/bin".into())];
        let before = cache
            .get(&d.join("cc"), &env, &hashes)
            .await
            .expect("probe");
        assert_eq!(before.family, Family::Clang);
        let again = cache
            .get(&d.join("cc"), &env, &hashes)
            .await
            .expect("probe");
        assert_eq!(before.digest, again.digest);
        // Replaced, as a package upgrade does: a new file under the same name.
        std::fs::remove_file(d.join("libpart.so")).expect("rm");
        build_part(d, 2);
        let after = cache
            .get(&d.join("cc"), &env, &hashes)
            .await
            .expect("probe");
        assert_ne!(
            before.digest, after.digest,
            "the library is part of the compiler"
        );
    }
}
