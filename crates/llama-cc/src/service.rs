//! The compile service: what the daemon does with one compile request.
//!
//! 1. Parse the arguments with the flag table; anything not a single cacheable compile is
//!    handed back to run the real compiler directly, with its reason counted.
//! 2. Identify the compiler and hash what is known before compiling (compiler, arguments,
//!    directory, output-affecting environment, source, forced includes): the pre-key.
//! 3. Look up the manifest of that pre-key: an earlier compile whose headers all still have
//!    the same content (and whose shadowing candidates are still absent) names an action
//!    whose cached result is delivered without running anything.
//! 4. Otherwise compile in place — the real compiler, the user's arguments, the user's
//!    directory, so the object is the one a plain build makes — with a depfile, and record
//!    what it read as the action's inputs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llama_core::platform::{
    COMPILER_PROPERTY, CWD_PROPERTY, PROBES_PROPERTY, PWD_PROPERTY, SYSTEM_HEADERS_PROPERTY,
};
use llama_core::{
    ActionSpec, Digest, HashCache, Hasher, RecordKind, Store, TreeBuilder, encode_os, protobuf,
    reapi,
};
use llama_exec::{Engine, HostCommand, OutputMapping, Termination, cached_result, run_host};
use tokio::sync::Semaphore;

use crate::args::{self, Compilation, DepKind, Verdict};
use crate::error::CcError;
use crate::identity::{IdentityCache, env_path};
use crate::manifest::{Entry, Manifest};
use crate::protocol::{CompileReply, CompileRequest};
use crate::scan::{ContentScan, contains, scan};
use crate::settings::Settings;
use crate::stats::{Outcome, Stats, StatsSnapshot, TrustReason};
use crate::sysdirs::SystemDirs;
use crate::toolchain::Toolchain;

mod remote;

use remote::{NotRemote, deliver_compile};

/// Environment variables that can change what the compiler writes (objects, depfiles or
/// diagnostics), and so are part of the key.
pub(crate) const OUTPUT_ENV: &[&str] = &[
    "CPATH",
    "CPLUS_INCLUDE_PATH",
    "C_INCLUDE_PATH",
    "COMPILER_PATH",
    "GCC_COLORS",
    "GCC_COMPARE_DEBUG",
    "GCC_EXEC_PREFIX",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "OBJCPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "SOURCE_DATE_EPOCH",
];

/// How long compiles stay on this machine after the remote backend failed, before one tries
/// it again: a backend that is down then costs one timeout, not one per file.
const REMOTE_PAUSE: Duration = Duration::from_secs(30);

/// Environment variables that make the compiler write files llamacc does not know about.
pub(crate) const UNCACHEABLE_ENV: &[&str] = &["DEPENDENCIES_OUTPUT", "SUNPRO_DEPENDENCIES"];

/// How a compile left the cached path.
enum Fallback {
    /// Run the real compiler directly, for this reason.
    Local(String),
    /// llamacc failed; run the real compiler directly.
    Error(CcError),
}

impl From<CcError> for Fallback {
    fn from(e: CcError) -> Self {
        Fallback::Error(e)
    }
}

impl From<llama_core::StoreError> for Fallback {
    fn from(e: llama_core::StoreError) -> Self {
        Fallback::Error(e.into())
    }
}

impl From<llama_exec::ExecError> for Fallback {
    fn from(e: llama_exec::ExecError) -> Self {
        Fallback::Error(e.into())
    }
}

/// What a compile read, hashed, and what else decides its result.
struct GatheredInputs {
    /// Each with its hash and size, for the manifest.
    hashed: Vec<(String, [u8; 32], u64)>,
    /// The input tree, files at their root-relative paths.
    tree: TreeBuilder,
    /// Paths whose absence the result depends on.
    absent: Vec<String>,
    /// Paths whose presence the result depends on (`__has_include`).
    present: Vec<String>,
    /// Fingerprint of the system include directories, when their headers are not listed.
    system: Option<[u8; 32]>,
}

/// Toolchains by compiler identity and language, or why one cannot be shipped.
type Toolchains = HashMap<(Digest, &'static str), Result<Arc<Toolchain>, String>>;

/// The state a daemon keeps across compiles.
pub struct CompileService {
    store: Store,
    hash_cache: Arc<HashCache>,
    identities: IdentityCache,
    sysdirs: SystemDirs,
    manifests: Mutex<HashMap<Digest, Arc<Manifest>>>,
    scans: Mutex<HashMap<Digest, Arc<ContentScan>>>,
    warned: Mutex<HashSet<String>>,
    slots: Semaphore,
    stats: Arc<Stats>,
    timeout: Duration,
    own_umask: u32,
    /// The remote executor misses compile on, behind its action cache; `None`: in place.
    remote: Option<Engine>,
    toolchains: Mutex<Toolchains>,
    remote_failed: AtomicBool,
    /// After a remote failure, compiles stay here until then rather than each waiting for
    /// the backend to fail again.
    remote_down_until: Mutex<Option<Instant>>,
    /// The remote executor's usage when the counters were last zeroed.
    cost_offset: Mutex<BTreeMap<String, f64>>,
}

impl CompileService {
    /// A service caching in `store`, hashing through `hash_cache`, running at most `jobs`
    /// compiles at once, each limited to `timeout`.
    pub fn new(
        store: Store,
        hash_cache: Arc<HashCache>,
        stats: Arc<Stats>,
        jobs: usize,
        timeout: Duration,
        own_umask: u32,
    ) -> CompileService {
        CompileService {
            store,
            hash_cache,
            identities: IdentityCache::default(),
            sysdirs: SystemDirs::default(),
            manifests: Mutex::new(HashMap::new()),
            scans: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            slots: Semaphore::new(jobs.max(1)),
            stats,
            timeout,
            own_umask,
            remote: None,
            toolchains: Mutex::new(HashMap::new()),
            remote_failed: AtomicBool::new(false),
            remote_down_until: Mutex::new(None),
            cost_offset: Mutex::new(BTreeMap::new()),
        }
    }

    /// Compiles misses on the executor behind `engine` (Lambda, REAPI) instead of in
    /// place, shipping the toolchain with each action. A miss that cannot go remote, or
    /// whose remote run fails, still compiles in place.
    pub fn with_remote(mut self, engine: Engine) -> CompileService {
        self.remote = Some(engine);
        self
    }

    fn lock_toolchains(&self) -> std::sync::MutexGuard<'_, Toolchains> {
        self.toolchains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters, with what the remote backend consumed since they were zeroed (the
    /// saved snapshot carries earlier daemons' share).
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        let offset = self.cost_offset.lock().unwrap_or_else(|p| p.into_inner());
        for (name, value) in self.remote_usage() {
            *snapshot.cost.entry(name.to_string()).or_default() +=
                value - offset.get(name).copied().unwrap_or(0.0);
        }
        snapshot
    }

    /// Zeroes the counters, the remote backend's cost among them.
    pub fn reset_stats(&self) {
        self.stats.reset();
        let mut offset = self.cost_offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset = self
            .remote_usage()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    }

    fn remote_usage(&self) -> Vec<(&'static str, f64)> {
        let Some(u) = self.remote.as_ref().and_then(|e| e.usage()) else {
            return Vec::new();
        };
        vec![
            ("invocations", u.invocations as f64),
            ("remote_cache_hits", u.remote_cache_hits as f64),
            ("gb_seconds", u.gb_seconds),
            ("s3_requests", u.s3_requests() as f64),
            ("bytes_up", u.bytes_up as f64),
            ("bytes_down", u.bytes_down as f64),
            ("calls", u.calls as f64),
            ("dollars", u.dollars()),
        ]
    }

    /// Handles one compile.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills a compile in progress; nothing is recorded.
    pub async fn compile(&self, req: CompileRequest) -> CompileReply {
        let started = Instant::now();
        let settings = Settings::from_env(req.env.iter().map(|(k, v)| (k, v)));
        let mut notes = self.unknown_variable_notes(&settings);
        let args = settings.filter_args(req.args.clone());
        let program = OsString::from(settings.compiler(req.cxx));
        let outcome = if settings.local {
            Err(Fallback::Local("LLAMACC_LOCAL".into()))
        } else {
            self.cached_compile(&req, &settings, &mut notes, &args, &program, started)
                .await
        };
        match outcome {
            Ok((reply, outcome, reason, saved)) => {
                self.stats.record(outcome, reason.as_deref(), saved);
                if settings.verbose {
                    notes.push(format!(
                        "llamacc: {} ({:.1} ms)",
                        describe(outcome, reason.as_deref()),
                        started.elapsed().as_secs_f64() * 1e3
                    ));
                }
                match reply {
                    CompileReply::Done {
                        exit_code,
                        stdout,
                        stderr,
                        cached,
                        notes: mut extra,
                    } => {
                        notes.append(&mut extra);
                        CompileReply::Done {
                            exit_code,
                            stdout,
                            stderr,
                            cached,
                            notes,
                        }
                    }
                    other => other,
                }
            }
            Err(fallback) => {
                let (outcome, reason) = match fallback {
                    Fallback::Local(reason) => (Outcome::Local, reason),
                    Fallback::Error(e) => {
                        notes.push(format!(
                            "llamacc: warning: {e}; running the compiler directly"
                        ));
                        (Outcome::Error, "error".to_string())
                    }
                };
                self.stats.record(outcome, Some(&reason), 0.0);
                if settings.verbose {
                    notes.push(format!("llamacc: running the compiler directly: {reason}"));
                }
                CompileReply::RunLocally {
                    program,
                    args,
                    reason,
                    notes,
                }
            }
        }
    }

    /// Unknown `LLAMACC_*` variables, each reported once per daemon.
    fn unknown_variable_notes(&self, settings: &Settings) -> Vec<String> {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        settings
            .unknown
            .iter()
            .filter(|v| warned.insert((*v).clone()))
            .map(|v| format!("llamacc: warning: unknown variable {v} ignored (see the README for LLAMACC_* variables)"))
            .collect()
    }

    async fn cached_compile(
        &self,
        req: &CompileRequest,
        settings: &Settings,
        notes: &mut Vec<String>,
        args: &[OsString],
        program: &OsStr,
        started: Instant,
    ) -> Result<(CompileReply, Outcome, Option<String>, f64), Fallback> {
        for var in UNCACHEABLE_ENV {
            if req.env.iter().any(|(k, _)| k == *var) {
                return Err(Fallback::Local(format!("environment {var}")));
            }
        }
        let driver = resolve_compiler(program, &req.env, &req.cwd)
            .ok_or_else(|| Fallback::Local("compiler not found".into()))?;
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
            .identities
            .get(&driver, &req.env, &self.hash_cache)
            .await?;
        let driver_kind = args::Driver {
            family: identity.family,
            cxx: req.cxx,
        };
        let compilation = match args::parse(args, &req.cwd, driver_kind) {
            Verdict::Compile(c) => c,
            Verdict::Local(reason) => return Err(Fallback::Local(reason.name())),
        };
        let prekey = self.prekey(req, args, &identity.digest, &compilation)?;
        let (outputs, through_symlink) = output_mappings(&req.cwd, &compilation)
            .map_err(|r| Fallback::Local(r.name().into()))?;

        // 3. The manifest: an earlier compile whose inputs are unchanged.
        let manifest = self.manifest(&prekey)?;
        for entry in &manifest.entries {
            if !self
                .entry_matches(entry, req, &driver, &identity.digest, &compilation)
                .await?
            {
                continue;
            }
            tracing::debug!(action = %entry.action_digest(), "manifest entry matches");
            let store = self.store.clone();
            let action = entry.action_digest();
            let mappings = outputs.clone();
            let umask = req.umask;
            let depfile_remote = depfile_remote(&req.cwd, &compilation);
            let hit = tokio::task::spawn_blocking(move || -> Result<_, Fallback> {
                let Some(result) = cached_result(&store, &action)? else {
                    return Ok(None);
                };
                let delivered =
                    deliver_compile(&store, &result, &mappings, depfile_remote.as_deref(), umask)?;
                Ok(delivered.map(|(stdout, stderr)| (result, stdout, stderr)))
            })
            .await
            .map_err(|e| Fallback::Error(llama_exec::ExecError::Task(e.to_string()).into()))??;
            if let Some((result, stdout, stderr)) = hit {
                let saved = compile_seconds(&result) - started.elapsed().as_secs_f64();
                return Ok((
                    CompileReply::Done {
                        exit_code: 0,
                        stdout,
                        stderr,
                        cached: true,
                        notes: Vec::new(),
                    },
                    Outcome::Hit,
                    None,
                    saved,
                ));
            }
        }

        // 4. Compile remotely when there is a remote executor...
        let mut fell_back = None;
        let mut unsuitable = None;
        // The remote compiler sees neither the user's symlinks nor the user's $PWD: an output
        // reached through `sym/..`, or a logical directory the objects name, stays here.
        if self.remote.is_some() && through_symlink {
            unsuitable = Some(TrustReason::DotDotThroughSymlink.name().to_string());
        } else if self.remote.is_some() && logical_dir(req).is_some() {
            unsuitable = Some(TrustReason::LogicalDirectory.name().to_string());
        }
        let remote = self
            .remote
            .as_ref()
            .filter(|_| unsuitable.is_none())
            .filter(|_| {
                let mut down = self
                    .remote_down_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match *down {
                    Some(until) if Instant::now() < until => {
                        fell_back = Some("the remote backend failed moments ago".to_string());
                        false
                    }
                    _ => {
                        *down = None;
                        true
                    }
                }
            });
        if let Some(engine) = remote {
            let compiled = self
                .remote_compile(
                    engine,
                    settings,
                    req,
                    &driver,
                    &identity,
                    &compilation,
                    &prekey,
                    &outputs,
                )
                .await;
            // What the executor has to say (e.g. that it lost the server and is waiting for
            // it) reaches the build through the compile that noticed, or the next one: the
            // daemon's log is not where a user looks while a build pauses.
            notes.extend(
                engine
                    .take_notices()
                    .into_iter()
                    .map(|n| format!("llamacc: warning: {n}")),
            );
            match compiled {
                Ok(done) => return Ok(done),
                Err(NotRemote::Unsuitable(reason)) => {
                    tracing::debug!("{}: {reason}", compilation.source.display());
                    unsuitable = Some(reason);
                }
                Err(NotRemote::Failed(message)) => {
                    *self
                        .remote_down_until
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + REMOTE_PAUSE);
                    if !settings.local_fallback {
                        return Ok((
                            CompileReply::Done {
                                exit_code: 1,
                                stdout: Vec::new(),
                                stderr: format!(
                                    "llamacc: error: {message}\n\
                                     llamacc: not compiling locally because LLAMACC_LOCAL_FALLBACK=0\n"
                                )
                                .into_bytes(),
                                cached: false,
                                notes: Vec::new(),
                            },
                            Outcome::RemoteError,
                            Some("remote failed".into()),
                            0.0,
                        ));
                    }
                    // Said once per daemon: a broken backend would otherwise say it for
                    // every file of the build. `llama stats` counts every fallback.
                    if !self.remote_failed.swap(true, Ordering::Relaxed) {
                        notes.push(format!(
                            "llamacc: warning: {message}; compiling on this machine instead \
                             (said once; `llama stats` counts the fallbacks)"
                        ));
                    }
                    tracing::warn!("{}: {message}", compilation.source.display());
                    fell_back = Some(message);
                }
            }
        }

        // ...or else in place, learning the inputs from the depfile.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| Fallback::Error(llama_exec::ExecError::Task(e.to_string()).into()))?;
        let own_depfile =
            compilation.depfile.is_none() && compilation.language.is_preprocessed_by_compiler();
        let tmp_depfile = own_depfile.then(|| {
            self.store
                .root()
                .join("tmp")
                .join(format!("dep-{}-{}.d", std::process::id(), unique()))
        });
        let mut run_args = args.to_vec();
        if let Some(dep) = &tmp_depfile {
            run_args.extend(["-MD".into(), "-MF".into(), dep.clone().into_os_string()]);
        }
        let run_started = SystemTime::now();
        let output = run_host(
            &HostCommand {
                program: driver.clone(),
                args: run_args,
                cwd: req.cwd.clone(),
                env: req.env.clone(),
                umask: (req.umask != self.own_umask).then_some(req.umask),
            },
            self.timeout,
        )
        .await
        .map_err(|e| {
            Fallback::Error(CcError::Spawn {
                path: driver.clone(),
                message: e.to_string(),
            })
        })?;
        let run_completed = SystemTime::now();
        let exit_code = match output.termination {
            Termination::Exited(code) => code,
            other => other.shell_status(),
        };
        let done = |cached_outcome: Outcome, reason: Option<String>| {
            Ok((
                CompileReply::Done {
                    exit_code,
                    stdout: output.stdout.clone(),
                    stderr: output.stderr.clone(),
                    cached: false,
                    notes: Vec::new(),
                },
                cached_outcome,
                reason,
                0.0,
            ))
        };
        if !output.termination.success() {
            if let Some(dep) = &tmp_depfile {
                let _ = fs::remove_file(dep);
            }
            return done(Outcome::CompileError, None);
        }
        let depfile_path = tmp_depfile
            .clone()
            .or_else(|| compilation.depfile.as_ref().map(|d| req.cwd.join(&d.path)));
        let recorded = self
            .record(
                req,
                args,
                &driver,
                &identity.digest,
                &compilation,
                &prekey,
                depfile_path.as_deref(),
                &output.stdout,
                &output.stderr,
                (run_started, run_completed),
            )
            .await;
        if let Some(dep) = &tmp_depfile {
            let _ = fs::remove_file(dep);
        }
        match recorded {
            Ok(None) if fell_back.is_some() => {
                done(Outcome::Fallback, Some("remote failed".into()))
            }
            // Compiled here although a remote backend is set: the reason is counted.
            Ok(None) => done(Outcome::Miss, unsuitable),
            Ok(Some(reason)) => done(Outcome::Uncacheable, Some(reason)),
            Err(e) => {
                // The compile itself succeeded; only caching failed. Say so once, keep going.
                let mut reply = done(Outcome::Error, Some("error".into()))?;
                if let CompileReply::Done { notes, .. } = &mut reply.0 {
                    notes.push(format!(
                        "llamacc: warning: could not cache this compile: {e:#}"
                    ));
                }
                Ok(reply)
            }
        }
    }

    /// Everything known before compiling, hashed.
    fn prekey(
        &self,
        req: &CompileRequest,
        args: &[OsString],
        identity: &Digest,
        c: &Compilation,
    ) -> Result<Digest, Fallback> {
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
        if c.native_cpu {
            h.update(&native_cpu_id());
        }
        h.update(b"\0files\0");
        let files = std::iter::once(&c.source)
            .chain(c.forced_includes.iter())
            .chain(c.file_inputs.iter());
        for file in files {
            let path = req.cwd.join(file);
            // The compiler reports a missing or unreadable file better than llamacc can, and
            // a device (`-x c /dev/null`, as configure scripts probe) has no content to key.
            let digest = self.digest_of(&path).map_err(|_| {
                Fallback::Local(match fs::metadata(&path) {
                    Ok(m) if !m.is_file() => "input not a regular file".into(),
                    _ => "unreadable input".into(),
                })
            })?;
            h.update(path.as_os_str().as_encoded_bytes());
            h.update(digest.hash_bytes());
        }
        Ok(h.finish())
    }

    /// The digest of an input the compiler read, if it can be trusted to be what the
    /// compiler read: `None` when its mtime or ctime is at or after `started` (at the file
    /// system's granularity), before or after hashing. ccache's "include file too new".
    fn trusted_digest(&self, path: &Path, started: SystemTime) -> Result<Option<Digest>, CcError> {
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

    fn digest_of(&self, path: &Path) -> Result<Digest, CcError> {
        let meta = fs::metadata(path).map_err(|e| CcError::input(path, e))?;
        if !meta.is_file() {
            return Err(CcError::input(path, "not a regular file"));
        }
        self.hash_cache
            .digest(path, &meta)
            .map_err(|e| CcError::input(path, e))
    }

    fn manifest(&self, prekey: &Digest) -> Result<Arc<Manifest>, Fallback> {
        if let Some(m) = self.lock_manifests().get(prekey) {
            return Ok(m.clone());
        }
        let manifest = match self.store.get_record(RecordKind::Manifest, prekey)? {
            Some(bytes) => Manifest::decode(&bytes),
            None => Manifest::default(),
        };
        let manifest = Arc::new(manifest);
        self.lock_manifests().insert(*prekey, manifest.clone());
        Ok(manifest)
    }

    fn lock_manifests(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Manifest>>> {
        self.manifests.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn entry_matches(
        &self,
        entry: &Entry,
        req: &CompileRequest,
        driver: &Path,
        identity: &Digest,
        c: &Compilation,
    ) -> Result<bool, Fallback> {
        for (path, hash, size) in &entry.inputs {
            let path = Path::new(path);
            let Ok(meta) = fs::metadata(path) else {
                return Ok(false);
            };
            if meta.len() != *size {
                return Ok(false);
            }
            match self.hash_cache.digest(path, &meta) {
                Ok(d) if d.hash_bytes() == hash => {}
                _ => return Ok(false),
            }
        }
        if entry.absent.iter().any(|p| fs::symlink_metadata(p).is_ok())
            || entry.present.iter().any(|p| fs::metadata(p).is_err())
        {
            return Ok(false);
        }
        if let Some(system) = entry.system {
            let dirs = self.system_dirs(req, driver, identity, c).await?;
            if self.sysdirs.fingerprint(&dirs).hash_bytes() != &system {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Every system include directory of this compile: the compiler's own for the language
    /// and flags, and those the arguments add.
    async fn system_dirs(
        &self,
        req: &CompileRequest,
        driver: &Path,
        identity: &Digest,
        c: &Compilation,
    ) -> Result<Vec<PathBuf>, Fallback> {
        let list = self
            .sysdirs
            .search_list(driver, identity, c.language.gcc_name(), &c.args, &req.env)
            .await?;
        let mut dirs: Vec<PathBuf> = list.iter().cloned().collect();
        for d in c.includes.system.iter().chain(c.includes.after.iter()) {
            let d = req.cwd.join(d);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
        Ok(dirs)
    }

    /// Records a successful compile: its inputs, its outputs in the store, its action and the
    /// manifest entry. Returns why it could not be cached, if so.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        req: &CompileRequest,
        args: &[OsString],
        driver: &Path,
        identity: &Digest,
        c: &Compilation,
        prekey: &Digest,
        depfile: Option<&Path>,
        stdout: &[u8],
        stderr: &[u8],
        times: (SystemTime, SystemTime),
    ) -> Result<Option<String>, CcError> {
        let cwd = &req.cwd;
        let listed = c.depfile.as_ref().map(|d| d.kind);
        let gathered = match self
            .gather_inputs(
                req,
                driver,
                identity,
                c,
                depfile,
                listed,
                Gather::InPlace { started: times.0 },
            )
            .await?
        {
            Ok(g) => g,
            Err(reason) => return Ok(Some(reason)),
        };
        let GatheredInputs {
            hashed,
            tree,
            absent,
            present,
            system,
            ..
        } = gathered;
        let outputs = match output_mappings(cwd, c) {
            Ok((outputs, _)) => outputs,
            Err(reason) => return Ok(Some(reason.name().into())),
        };
        let mut spec = ActionSpec {
            arguments: std::iter::once(encode_os(driver.as_os_str()).into_owned())
                .chain(args.iter().map(|a| encode_os(a).into_owned()))
                .collect(),
            env: output_env(req),
            output_paths: outputs.iter().map(|o| o.remote.clone()).collect(),
            platform: vec![
                (COMPILER_PROPERTY.into(), identity.hex()),
                (CWD_PROPERTY.into(), encode_os(cwd.as_os_str()).into_owned()),
            ],
            ..Default::default()
        };
        if let Some(sys) = system {
            spec.platform
                .push((SYSTEM_HEADERS_PROPERTY.into(), hex(&sys)));
        }
        // Two compiles that differ only in $PWD write different objects: the action's key
        // must tell them apart, or one would overwrite the other's cached result.
        if let Some(dir) = logical_dir(req) {
            spec.platform
                .push((PWD_PROPERTY.into(), encode_os(dir).into_owned()));
        }
        // Which files were absent and which present decides the result as much as the
        // content of the inputs (`__has_include`), so it is part of the action's key.
        if !absent.is_empty() || !present.is_empty() {
            let mut h = Hasher::default();
            for (tag, list) in [(&b"absent"[..], &absent), (&b"present"[..], &present)] {
                h.update(tag);
                h.update(b"\0");
                for p in list {
                    h.update(p.as_bytes());
                    h.update(b"\0");
                }
            }
            spec.platform
                .push((PROBES_PROPERTY.into(), h.finish().hex()));
        }
        let action = spec
            .prepare(tree.build())
            .map_err(|e| CcError::input(cwd, e))?;

        let store = self.store.clone();
        let stdout = stdout.to_vec();
        let stderr = stderr.to_vec();
        let action_digest = action.action_digest;
        tokio::task::spawn_blocking(move || -> Result<(), CcError> {
            let mut result = reapi::ActionResult {
                exit_code: 0,
                stdout_digest: Some(store.put_bytes(&stdout)?.to_proto()),
                stderr_digest: Some(store.put_bytes(&stderr)?.to_proto()),
                execution_metadata: Some(reapi::ExecutedActionMetadata {
                    worker: "llamacc in place".into(),
                    execution_start_timestamp: Some(timestamp(times.0)),
                    execution_completed_timestamp: Some(timestamp(times.1)),
                    ..Default::default()
                }),
                ..Default::default()
            };
            for o in &outputs {
                // Copied, never linked: the build may rewrite its object files in place.
                let digest = store.put_file(&o.local, None)?;
                result.output_files.push(reapi::OutputFile {
                    path: o.remote.clone(),
                    digest: Some(digest.to_proto()),
                    ..Default::default()
                });
            }
            store.put_action_result(&action_digest, &result)?;
            Ok(())
        })
        .await
        .map_err(|e| CcError::Exec(llama_exec::ExecError::Task(e.to_string())))??;

        tracing::debug!(
            inputs = hashed.len(),
            absent = absent.len(),
            present = present.len(),
            action = %action_digest,
            "recorded {}",
            c.source.display()
        );
        let entry = Entry {
            inputs: hashed,
            absent,
            present,
            system,
            action: (*action_digest.hash_bytes(), action_digest.size()),
        };
        self.record_entry(prekey, entry)?;
        Ok(None)
    }

    /// Adds `entry` to the manifest of `prekey`, in memory and in the store.
    fn record_entry(&self, prekey: &Digest, entry: Entry) -> Result<(), CcError> {
        let mut manifest = (*self.manifest(prekey).map_err(|f| match f {
            Fallback::Error(e) => e,
            Fallback::Local(r) => CcError::input(self.store.root(), r),
        })?)
        .clone();
        manifest.record(entry);
        self.store
            .put_record(RecordKind::Manifest, prekey, &manifest.encode())?;
        self.lock_manifests().insert(*prekey, Arc::new(manifest));
        Ok(())
    }

    /// Hashes what a compile read (from its depfile; the source alone without one) into an
    /// input tree, with what else decides the result: candidates that were absent, names
    /// `__has_include` found, and, when the depfile left system headers out
    /// (`listed` = -MMD), the fingerprint of their directories. `Ok(Err(reason))`: the
    /// compile cannot be cached.
    #[allow(clippy::too_many_arguments)]
    async fn gather_inputs(
        &self,
        req: &CompileRequest,
        driver: &Path,
        identity: &Digest,
        c: &Compilation,
        depfile: Option<&Path>,
        listed: Option<DepKind>,
        mode: Gather,
    ) -> Result<Result<GatheredInputs, String>, CcError> {
        let cwd = &req.cwd;
        // A name the remote compiler looks up through a symlink it does not have cannot be
        // shipped; here the kernel's answer is the file the compiler read.
        let physical = |p: &Path| -> Result<PathBuf, String> {
            let lexical = normalize(p);
            let real = resolve(p).unwrap_or_else(|| lexical.clone());
            match mode {
                Gather::Remote if real != lexical => {
                    Err(TrustReason::DotDotThroughSymlink.name().into())
                }
                _ => Ok(real),
            }
        };
        let mut inputs: Vec<PathBuf> = match depfile {
            Some(path) => match fs::read_to_string(path) {
                Ok(text) => {
                    let listed: Result<Vec<PathBuf>, String> = crate::depfile::prerequisites(&text)
                        .into_iter()
                        .map(|p| physical(&cwd.join(p)))
                        .collect();
                    match listed {
                        Ok(listed) => listed,
                        Err(reason) => return Ok(Err(reason)),
                    }
                }
                Err(_) => return Ok(Err("no depfile written".into())),
            },
            None => {
                // Plain assembly has no preprocessor, so the source is the only input unless
                // it pulls files in itself.
                let source = cwd.join(&c.source);
                if c.language == args::Language::Asm {
                    let text = fs::read(&source).map_err(|e| CcError::input(&source, e))?;
                    if contains(&text, b".include") {
                        return Ok(Err("assembler .include".into()));
                    }
                }
                match physical(&source) {
                    Ok(source) => vec![source],
                    Err(reason) => return Ok(Err(reason)),
                }
            }
        };
        for f in c.forced_includes.iter().chain(c.file_inputs.iter()) {
            match physical(&cwd.join(f)) {
                Ok(p) => inputs.push(p),
                Err(reason) => return Ok(Err(reason)),
            }
        }
        inputs.sort();
        inputs.dedup();

        let mut hashed = Vec::with_capacity(inputs.len());
        let mut tree = TreeBuilder::new();
        let mut tested_names: Vec<String> = Vec::new();
        for path in &inputs {
            let digest = match mode {
                Gather::InPlace { started } => match self.trusted_digest(path, started)? {
                    Some(digest) => digest,
                    None => {
                        tracing::debug!("{}: changed while compiling", path.display());
                        return Ok(Err(TrustReason::InputTooNew.name().into()));
                    }
                },
                // What is hashed is what is shipped: the remote compiler reads these bytes.
                Gather::Remote => self.digest_of(path)?,
            };
            let scan = self.scan(path, &digest);
            if let Some(reason) = scan.uncacheable {
                return Ok(Err(reason.into()));
            }
            tested_names.extend(scan.has_include.iter().cloned());
            hashed.push((
                encode_os(path.as_os_str()).into_owned(),
                *digest.hash_bytes(),
                digest.size(),
            ));
            tree.add_known(&root_relative(path), digest, false, path.clone())
                .map_err(|e| CcError::input(path, e))?;
        }
        // -MMD leaves system headers out: cover them by the fingerprint of their directories.
        let system = match listed {
            Some(DepKind::UserHeadersOnly) => {
                let dirs =
                    self.system_dirs(req, driver, identity, c)
                        .await
                        .map_err(|f| match f {
                            Fallback::Error(e) => e,
                            Fallback::Local(r) => CcError::probe(driver, r),
                        })?;
                Some(*self.sysdirs.fingerprint(&dirs).hash_bytes())
            }
            _ => None,
        };
        let mut absent = absent_candidates(cwd, c, &inputs);
        // __has_include: whether each tested name exists, in every directory it could be
        // found in, is an input too.
        let mut present = Vec::new();
        if !tested_names.is_empty() {
            tested_names.sort();
            tested_names.dedup();
            let system = self
                .system_dirs(req, driver, identity, c)
                .await
                .map_err(|f| match f {
                    Fallback::Error(e) => e,
                    Fallback::Local(r) => CcError::probe(driver, r),
                })?;
            let mut dirs: Vec<PathBuf> = inputs
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .chain(
                    c.includes
                        .quote
                        .iter()
                        .chain(c.includes.bracket.iter())
                        .map(|d| physical_dir(&cwd.join(d))),
                )
                .chain(system)
                .collect();
            dirs.sort();
            dirs.dedup();
            for name in &tested_names {
                for dir in &dirs {
                    let path = dir.join(name);
                    let candidate = encode_os(path.as_os_str()).into_owned();
                    if fs::metadata(&path).is_ok() {
                        present.push(candidate);
                    } else {
                        absent.push(candidate);
                    }
                }
            }
            absent.sort();
            absent.dedup();
        }

        Ok(Ok(GatheredInputs {
            hashed,
            tree,
            absent,
            present,
            system,
        }))
    }

    /// What a file's text says that its digest does not (memoised by digest).
    fn scan(&self, path: &Path, digest: &Digest) -> Arc<ContentScan> {
        let lock = || self.scans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = lock().get(digest) {
            return found.clone();
        }
        let found = Arc::new(match fs::read(path) {
            Ok(text) => scan(&text),
            Err(_) => ContentScan {
                uncacheable: Some("unreadable input"),
                has_include: Vec::new(),
            },
        });
        lock().insert(*digest, found.clone());
        found
    }
}

/// The outputs a compile writes: object (or assembly), the depfile the user asked for, and
/// extra outputs such as the `.dwo` of `-gsplit-dwarf`. Remote names are root-relative.
/// Each is where the kernel puts it (`sym/../x.o` lands beside `sym`'s target), and the
/// flag says whether any of them differs from its lexical reading.
fn output_mappings(cwd: &Path, c: &Compilation) -> Result<(Vec<OutputMapping>, bool), TrustReason> {
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

/// How [`CompileService::gather_inputs`] treats what it finds.
#[derive(Clone, Copy)]
enum Gather {
    /// The compiler ran here from `started`: an input changed since is not trusted.
    InPlace { started: SystemTime },
    /// The inputs are hashed to be shipped: every name must mean the same remotely.
    Remote,
}

/// The directory gcc and clang name as the compile's own (`DW_AT_comp_dir`, the
/// `-fdebug-prefix-map` base) when it is not the working directory as the client's getcwd
/// spelled it: `$PWD`, byte for byte, when it is absolute and is the working directory
/// (libiberty's `getpwd`, LLVM's `current_path`). `None`: the compiler uses the working
/// directory.
fn logical_dir(req: &CompileRequest) -> Option<&OsStr> {
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
fn too_new(meta: &fs::Metadata, started: SystemTime) -> bool {
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
fn output_env(req: &CompileRequest) -> Vec<(String, String)> {
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
fn depfile_remote(cwd: &Path, c: &Compilation) -> Option<String> {
    c.depfile.as_ref().map(|d| {
        let path = cwd.join(&d.path);
        root_relative(&resolve(&path).unwrap_or_else(|| normalize(&path)))
    })
}

/// Paths that, had they existed, the compiler would have read before one of `inputs`: the
/// same relative name in every include directory searched before the one it was found in.
fn absent_candidates(cwd: &Path, c: &Compilation, inputs: &[PathBuf]) -> Vec<String> {
    let source_dir = physical_dir(&cwd.join(&c.source))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let chain: Vec<PathBuf> = std::iter::once(source_dir)
        .chain(c.includes.quote.iter().map(|d| physical_dir(&cwd.join(d))))
        .chain(
            c.includes
                .bracket
                .iter()
                .map(|d| physical_dir(&cwd.join(d))),
        )
        .collect();
    let mut absent = Vec::new();
    for input in inputs {
        let Some(found_at) = chain.iter().position(|d| input.starts_with(d)) else {
            continue;
        };
        let Ok(rel) = input.strip_prefix(&chain[found_at]) else {
            continue;
        };
        for earlier in &chain[..found_at] {
            let candidate = earlier.join(rel);
            if fs::symlink_metadata(&candidate).is_err() {
                absent.push(encode_os(candidate.as_os_str()).into_owned());
            }
        }
    }
    absent.sort();
    absent.dedup();
    absent
}

/// The compiler as the client names it, resolved as its shell would: a path with a slash
/// relative to the client's directory, a bare name in the client's `PATH`.
pub fn resolve_compiler(
    program: &OsStr,
    env: &[(OsString, OsString)],
    cwd: &Path,
) -> Option<PathBuf> {
    llama_exec::find_program(program, env_path(env).as_deref(), cwd)
}

fn blob(store: &Store, digest: Option<&reapi::Digest>) -> Result<Vec<u8>, Fallback> {
    match digest {
        Some(d) => {
            let d = Digest::from_proto(d)
                .map_err(|e| Fallback::Error(CcError::input(store.root(), e)))?;
            Ok(store.get_bytes(&d)?)
        }
        None => Ok(Vec::new()),
    }
}

fn compile_seconds(result: &reapi::ActionResult) -> f64 {
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

fn timestamp(t: SystemTime) -> protobuf::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    protobuf::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// `/a/b/../c` → `/a/c`, without touching the file system (the compiler's own spelling of
/// paths in depfiles uses `..` freely).
fn normalize(path: &Path) -> PathBuf {
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
fn resolve(path: &Path) -> Option<PathBuf> {
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
fn physical_dir(path: &Path) -> PathBuf {
    resolve(path).unwrap_or_else(|| normalize(path))
}

/// An absolute path as a path relative to the root of an input tree.
fn root_relative(path: &Path) -> String {
    encode_os(path.as_os_str())
        .trim_start_matches('/')
        .to_string()
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
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

fn describe(outcome: Outcome, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{}: {r}", outcome.description()),
        None => outcome.description().to_string(),
    }
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
