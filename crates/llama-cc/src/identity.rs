//! Which compiler a compile really uses: the driver and the programs it runs (cc1,
//! cc1plus, as), digested, with its `--version`. Part of every cache key, so a compiler
//! upgrade never serves objects built by the old one.

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
    /// The programs the driver runs (gcc's `cc1`, `cc1plus`, `as`) and where they are.
    pub programs: Vec<(&'static str, PathBuf)>,
    /// The first line of its `--version` (`gcc (Debian 12.2.0-14) 12.2.0`).
    pub version: String,
    /// Every file the digest covers (the driver first), with its content's digest: what
    /// `llama explain` names when the compiler changed.
    pub files: Vec<(PathBuf, Digest)>,
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
    let mut hasher = Hasher::default();
    hasher.update(b"llama compiler identity v1\0");
    hasher.update(&version.stdout);
    let mut stamps = Vec::new();
    let mut digests = Vec::new();
    for file in &files {
        let meta = std::fs::metadata(file).map_err(|e| CcError::probe(file, e.to_string()))?;
        let digest = hash_cache
            .digest(file, &meta)
            .map_err(|e| CcError::probe(file, e.to_string()))?;
        hasher.update(file.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(digest.hash_bytes());
        digests.push((file.clone(), digest));
        if let Some(s) = stamp(file) {
            stamps.push((file.clone(), s));
        }
    }
    Ok(Known {
        identity: Identity {
            digest: hasher.finish(),
            family,
            driver: driver.to_path_buf(),
            programs,
            version: text.lines().next().unwrap_or_default().trim().to_string(),
            files: digests,
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
