//! Looking a compile up: identify the compiler, read the arguments, hash what is known
//! before compiling (the pre-key), and deliver the result of an earlier compile whose
//! inputs all still have the same content.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use llama_core::{Digest, HashCache, Hasher, RecordKind, Store, reapi};
use llama_exec::cached_result;

use super::paths::{logical_dir, output_mappings, too_new};
use super::remote::Delivery;
use super::{CompileRequest, CompileService, Done, Fallback, Job, OUTPUT_ENV, UNCACHEABLE_ENV};
use crate::args;
use crate::compilation::{Compilation, Driver, Verdict};
use crate::error::CcError;
use crate::identity::IdentityCache;
use crate::manifest::{Entry, Manifest};
use crate::scan::{ContentScan, scan};
use crate::settings::Settings;
use crate::stats::{CannotCache, Outcome};
use crate::sysdirs::SystemDirs;

/// What a daemon remembers between compiles to look them up without rereading: file
/// digests, compiler identities, system include directories, manifests by pre-key, and
/// what each file's text says.
pub(super) struct Caches {
    pub(super) hash_cache: Arc<HashCache>,
    identities: IdentityCache,
    pub(super) sysdirs: SystemDirs,
    manifests: Mutex<HashMap<Digest, Arc<Manifest>>>,
    scans: Mutex<HashMap<Digest, Arc<ContentScan>>>,
}

impl Caches {
    pub(super) fn new(hash_cache: Arc<HashCache>) -> Caches {
        Caches {
            hash_cache,
            identities: IdentityCache::default(),
            sysdirs: SystemDirs::default(),
            manifests: Mutex::new(HashMap::new()),
            scans: Mutex::new(HashMap::new()),
        }
    }

    fn lock_manifests(&self) -> MutexGuard<'_, HashMap<Digest, Arc<Manifest>>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn digest_of(&self, path: &Path) -> Result<Digest, CcError> {
        let meta = fs::metadata(path).map_err(|e| CcError::input(path, e))?;
        if !meta.is_file() {
            return Err(CcError::input(path, "not a regular file"));
        }
        self.hash_cache
            .digest(path, &meta)
            .map_err(|e| CcError::input(path, e))
    }

    /// The digest of an input the compiler read, if it can be trusted to be what the
    /// compiler read: `None` when its mtime or ctime is at or after `started` (at the file
    /// system's granularity), before or after hashing. ccache's "include file too new".
    pub(super) fn trusted_digest(
        &self,
        path: &Path,
        started: SystemTime,
    ) -> Result<Option<Digest>, CcError> {
        let meta = fs::metadata(path).map_err(|e| CcError::input(path, e))?;
        if !meta.is_file() {
            return Err(CcError::input(path, "not a regular file"));
        }
        if too_new(&meta, started) {
            return Ok(None);
        }
        let digest = self
            .hash_cache
            .digest(path, &meta)
            .map_err(|e| CcError::input(path, e))?;
        // A write while hashing moves the stamps past the start as well.
        let after = fs::metadata(path).map_err(|e| CcError::input(path, e))?;
        if too_new(&after, started)
            || (after.ctime(), after.ctime_nsec()) != (meta.ctime(), meta.ctime_nsec())
        {
            return Ok(None);
        }
        Ok(Some(digest))
    }

    /// What a file's text says that its digest does not (memoised by digest).
    pub(super) fn scan(&self, path: &Path, digest: &Digest) -> Arc<ContentScan> {
        let lock = || self.scans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = lock().get(digest) {
            return found.clone();
        }
        let found = Arc::new(match fs::read(path) {
            Ok(text) => scan(&text),
            Err(_) => ContentScan {
                uncacheable: Some(CannotCache::UnreadableInput),
                has_include: Vec::new(),
            },
        });
        lock().insert(*digest, found.clone());
        found
    }
}

/// The pre-key, and the parts of it a key record names.
struct PreKey {
    digest: Digest,
    /// The source, forced includes and file inputs, with their digests.
    files: Vec<(PathBuf, Digest)>,
    /// What `-march=native` stands for here, when asked for.
    native_cpu: Option<Digest>,
}

impl CompileService {
    /// Steps 1 and 2: the compiler, what the arguments ask for, and the pre-key; or why
    /// the compile runs directly.
    pub(super) async fn job<'a>(
        &self,
        req: &'a CompileRequest,
        settings: &'a Settings,
        args: &'a [OsString],
        program: &OsStr,
        started: Instant,
    ) -> Result<Job<'a>, Fallback> {
        if let Some((_, reason)) = UNCACHEABLE_ENV
            .iter()
            .find(|(var, _)| req.env.iter().any(|(k, _)| k == *var))
        {
            return Err(Fallback::Cannot(*reason, None));
        }
        let driver = super::resolve_compiler(program, &req.env, &req.cwd).ok_or_else(|| {
            Fallback::Cannot(
                CannotCache::CompilerNotFound,
                Some(program.to_string_lossy().into_owned()),
            )
        })?;
        if driver
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("llamac"))
        {
            return Err(Fallback::Error(CcError::probe(
                &driver,
                "it is llamacc itself; set LLAMACC_LOCAL_CC / LLAMACC_LOCAL_CXX to the real compiler".into(),
            )));
        }
        let identity = self
            .caches
            .identities
            .get(&driver, &req.env, &self.caches.hash_cache)
            .await?;
        let driver_kind = Driver {
            family: identity.family,
            cxx: req.cxx,
        };
        let c = match args::parse(args, &req.cwd, driver_kind) {
            Verdict::Compile(c) => c,
            Verdict::Local(reason) => return Err(Fallback::Args(reason)),
        };
        let PreKey {
            digest: prekey,
            files,
            native_cpu,
        } = self.prekey(req, args, &identity.digest, &c)?;
        let (outputs, through_symlink) = output_mappings(&req.cwd, &c)
            .map_err(|r| Fallback::Cannot(r.into(), Some(c.output.display().to_string())))?;
        Ok(Job {
            req,
            settings,
            args,
            driver,
            identity,
            c,
            prekey,
            files,
            native_cpu,
            outputs,
            through_symlink,
            started,
        })
    }

    /// Everything known before compiling, hashed.
    fn prekey(
        &self,
        req: &CompileRequest,
        args: &[OsString],
        identity: &Digest,
        c: &Compilation,
    ) -> Result<PreKey, Fallback> {
        let mut h = Hasher::default();
        h.update(b"llamacc prekey v1\0");
        h.update(identity.hash_bytes());
        h.update(&[u8::from(req.cxx)]);
        h.update(req.cwd.as_os_str().as_encoded_bytes());
        h.update(b"\0");
        // The directory the compiler names in its output ($PWD when that is the working
        // directory reached through a symlink): objects with -g record it.
        if let Some(dir) = logical_dir(req) {
            h.update(b"pwd\0");
            h.update(dir.as_encoded_bytes());
            h.update(b"\0");
        }
        for a in args {
            h.update(a.as_encoded_bytes());
            h.update(b"\0");
        }
        h.update(b"\0env\0");
        for var in OUTPUT_ENV {
            if let Some((_, v)) = req.env.iter().find(|(k, _)| k == *var) {
                h.update(var.as_bytes());
                h.update(b"=");
                h.update(v.as_encoded_bytes());
                h.update(b"\0");
            }
        }
        let native_cpu = c.native_cpu.then(|| {
            let id = native_cpu_id();
            h.update(&id);
            Digest::of_bytes(&id)
        });
        h.update(b"\0files\0");
        let files = std::iter::once(&c.source)
            .chain(c.forced_includes.iter())
            .chain(c.file_inputs.iter());
        let mut keyed = Vec::new();
        for file in files {
            let path = req.cwd.join(file);
            // The compiler reports a missing or unreadable file better than llamacc can, and
            // a device (`-x c /dev/null`, as configure scripts probe) has no content to key.
            let digest = self.caches.digest_of(&path).map_err(|_| {
                let reason = match fs::metadata(&path) {
                    Ok(m) if !m.is_file() => CannotCache::InputNotRegularFile,
                    _ => CannotCache::UnreadableInput,
                };
                Fallback::Cannot(reason, Some(path.display().to_string()))
            })?;
            h.update(path.as_os_str().as_encoded_bytes());
            h.update(digest.hash_bytes());
            keyed.push((path, digest));
        }
        Ok(PreKey {
            digest: h.finish(),
            files: keyed,
            native_cpu,
        })
    }

    /// Step 3: an earlier compile whose inputs are unchanged, its outputs delivered.
    ///
    /// Checking the entries' files, reading the action cache and writing the outputs all
    /// touch the disk, so they run as one blocking task: one hand-off per hit, none of it
    /// on the async threads.
    pub(super) async fn lookup(&self, job: &Job<'_>) -> Result<Option<Done>, Fallback> {
        let manifest = self.manifest(&job.prekey)?;
        if manifest.entries.is_empty() {
            return Ok(None);
        }
        // Entries made under -MMD also name the system directories' state; it may take
        // asking the compiler (once per compiler and flags), which is async.
        let system = if manifest.entries.iter().any(|e| e.system.is_some()) {
            let dirs = self.system_dirs(job).await?;
            Some(*self.caches.sysdirs.fingerprint(&dirs).hash_bytes())
        } else {
            None
        };
        let store = self.store.clone();
        let hash_cache = self.caches.hash_cache.clone();
        let delivery = Delivery::of(job);
        let hit = tokio::task::spawn_blocking(move || -> Result<_, Fallback> {
            for entry in &manifest.entries {
                if !entry_matches(entry, &hash_cache, system.as_ref()) {
                    continue;
                }
                let action = entry.action_digest();
                tracing::debug!(%action, "manifest entry matches");
                let Some(result) = cached_result(&store, &action)? else {
                    continue;
                };
                if let Some((stdout, stderr)) = delivery.deliver(&store, &result)? {
                    return Ok(Some((result, stdout, stderr, entry.clone())));
                }
            }
            Ok(None)
        })
        .await
        .map_err(|e| Fallback::Error(llama_exec::ExecError::Task(e.to_string()).into()))??;
        Ok(hit.map(|(result, stdout, stderr, entry)| {
            let mut done = Done::new(Outcome::Hit, 0, stdout, stderr);
            done.cached = true;
            done.entry = Some(entry);
            done.saved = compile_seconds(&result) - job.started.elapsed().as_secs_f64();
            done
        }))
    }

    /// The manifest of `prekey`: what earlier compiles with it read, and their actions.
    pub(super) fn manifest(&self, prekey: &Digest) -> Result<Arc<Manifest>, CcError> {
        if let Some(m) = self.caches.lock_manifests().get(prekey) {
            return Ok(m.clone());
        }
        let manifest = match self.store.get_record(RecordKind::Manifest, prekey)? {
            Some(bytes) => Manifest::decode(&bytes),
            None => Manifest::default(),
        };
        let manifest = Arc::new(manifest);
        self.caches
            .lock_manifests()
            .insert(*prekey, manifest.clone());
        Ok(manifest)
    }

    /// Adds `entry` to the manifest of `prekey`, in memory and in the store.
    pub(super) fn record_entry(&self, prekey: &Digest, entry: Entry) -> Result<(), CcError> {
        let mut manifest = (*self.manifest(prekey)?).clone();
        manifest.record(entry);
        self.store
            .put_record(RecordKind::Manifest, prekey, &manifest.encode())?;
        self.caches
            .lock_manifests()
            .insert(*prekey, Arc::new(manifest));
        Ok(())
    }

    /// Every system include directory of this compile: the compiler's own for the language
    /// and flags, and those the arguments add.
    pub(super) async fn system_dirs(&self, job: &Job<'_>) -> Result<Vec<PathBuf>, CcError> {
        let c = &job.c;
        let list = self
            .caches
            .sysdirs
            .search_list(
                &job.driver,
                &job.identity.digest,
                c.language.gcc_name(),
                &c.args,
                &job.req.env,
            )
            .await?;
        let mut dirs: Vec<PathBuf> = list.iter().cloned().collect();
        for d in c.includes.system.iter().chain(c.includes.after.iter()) {
            let d = job.req.cwd.join(d);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        Ok(dirs)
    }
}

/// Whether every file `entry` lists still has the content it had, every path it saw
/// absent is still absent and every one it saw present still present, and (for an entry
/// that names it) the system directories' fingerprint is still `system`.
fn entry_matches(entry: &Entry, hash_cache: &HashCache, system: Option<&[u8; 32]>) -> bool {
    let unchanged = |(path, hash, size): &(String, [u8; 32], u64)| {
        let path = Path::new(path);
        fs::metadata(path).is_ok_and(|meta| {
            meta.len() == *size
                && hash_cache
                    .digest(path, &meta)
                    .is_ok_and(|d| d.hash_bytes() == hash)
        })
    };
    entry.inputs.iter().all(unchanged)
        && !entry.absent.iter().any(|p| fs::symlink_metadata(p).is_ok())
        && entry.present.iter().all(|p| fs::metadata(p).is_ok())
        && entry.system.is_none_or(|s| system == Some(&s))
}

/// The blob `digest` names, empty when it names none.
pub(super) fn blob(store: &Store, digest: Option<&reapi::Digest>) -> Result<Vec<u8>, Fallback> {
    match digest {
        Some(d) => {
            let d = Digest::from_proto(d)
                .map_err(|e| Fallback::Error(CcError::input(store.root(), e)))?;
            Ok(store.get_bytes(&d)?)
        }
        None => Ok(Vec::new()),
    }
}

/// How long the compile that produced `result` took, in seconds.
pub(super) fn compile_seconds(result: &reapi::ActionResult) -> f64 {
    let Some(meta) = &result.execution_metadata else {
        return 0.0;
    };
    match (
        &meta.execution_start_timestamp,
        &meta.execution_completed_timestamp,
    ) {
        (Some(a), Some(b)) => (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9,
        _ => 0.0,
    }
}

/// What identifies this machine's CPU for `-march=native`: its model and flags.
fn native_cpu_id() -> Vec<u8> {
    let text = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("model name") || l.starts_with("flags"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}
