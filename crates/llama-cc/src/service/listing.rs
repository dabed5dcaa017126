//! What a remote compile reads, listed: by the include scanner ([`crate::scanner`]) when it
//! can decide, by the compiler's `-M` when it cannot, counted by why.
//!
//! The scanner needs, per compiler set-up (compiler, flags, language, directory), one probe
//! of the compiler: its predefined macros, its search chain and what it reads before the
//! source. That probe, and the feature tests (`__has_builtin` ...) later walks ask, are
//! kept for the daemon's life; each file's directives are kept by content digest.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use llama_core::{Digest, HashCache, encode_os};
use llama_exec::{HostCommand, HostOutput, run_host};
use tokio::sync::OnceCell;

use super::in_place::unique;
use super::remote::Declined;
use super::{CompileService, Job, OUTPUT_ENV};
use crate::compilation::Language;
use crate::scanner::cache::DirectiveCache;
use crate::scanner::setup::{self, MacroSetup, Probed};
use crate::scanner::walk::{self, GiveUp, Start};
use crate::stats::{NotRemote, scan};

/// Walks again after asking the compiler the feature tests a walk met: each answer can make
/// live a branch that tests more (libstdc++ takes several rounds on a cold daemon).
const MAX_FEATURE_ROUNDS: usize = 10;

/// Compiler set-ups kept at most (each a macro table of a few hundred entries): a build
/// has a handful; past it the daemon starts over rather than grow without bound.
const MAX_PROBES: usize = 1024;

/// What a compile reads, as found.
pub(super) enum Listing {
    /// The scanner's walk: every file it read, as the search found it.
    Scanned(Vec<PathBuf>),
    /// The depfile the compiler's `-M` wrote.
    Depfile(tempfile::TempPath),
}

/// Who lists what a compile reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lister {
    /// The scanner, and the compiler where it cannot decide.
    Scanner,
    /// The compiler's `-M` alone.
    Compiler,
}

/// What the daemon keeps for the scanner.
pub(super) struct ScannerState {
    directives: Arc<DirectiveCache>,
    probes: Mutex<HashMap<Digest, Arc<OnceCell<Arc<Probe>>>>>,
}

impl ScannerState {
    pub(super) fn new(hash_cache: Arc<HashCache>) -> ScannerState {
        ScannerState {
            directives: Arc::new(DirectiveCache::new(hash_cache)),
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// The probe slot of one compiler set-up: filled by the first compile that needs it,
    /// waited for by those that arrive meanwhile.
    fn probe_cell(&self, key: Digest) -> Arc<OnceCell<Arc<Probe>>> {
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        if probes.len() >= MAX_PROBES && !probes.contains_key(&key) {
            probes.clear();
        }
        probes.entry(key).or_default().clone()
    }
}

/// One compiler set-up, probed: what every walk with it starts from.
struct Probe {
    probed: Probed,
    /// Feature tests answered so far, by `(test, argument)`.
    features: Mutex<HashMap<(String, String), i64>>,
}

impl Probe {
    fn features(&self) -> HashMap<(String, String), i64> {
        self.features
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why the scanner did not list a compile's inputs; each is counted under its name.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotScanned {
    /// The walk met something it does not decide.
    #[error(transparent)]
    GiveUp(#[from] GiveUp),
    /// The command line passes preprocessor options the scanner does not model.
    #[error(transparent)]
    Unmodelled(#[from] setup::Unmodelled),
    /// Asking the compiler its set-up or a feature test failed.
    #[error("probing the compiler: {0}")]
    Probe(String),
    /// A file the walk found could not be read (the compiler would fail on it).
    #[error("{0}: found but not readable")]
    Unreadable(PathBuf),
    /// Feature tests kept making more branches live.
    #[error("feature tests still unanswered after {MAX_FEATURE_ROUNDS} rounds")]
    FeatureRounds,
}

impl NotScanned {
    fn name(&self) -> &'static str {
        match self {
            NotScanned::GiveUp(g) => g.name(),
            NotScanned::Unmodelled(_) => "unmodelled-flags",
            NotScanned::Probe(_) => "probe-failed",
            NotScanned::Unreadable(_) => "unreadable",
            NotScanned::FeatureRounds => "feature-rounds",
        }
    }
}

impl CompileService {
    /// Lists what `job` reads: walked by the scanner when `lister` allows and it can
    /// decide, otherwise with the compiler's `-M` run with `discovery`.
    pub(super) async fn list_inputs(
        &self,
        scanner: &ScannerState,
        job: &Job<'_>,
        discovery: &[OsString],
        lister: Lister,
    ) -> Result<Listing, Declined> {
        if lister == Lister::Scanner && !job.settings.include_scanner {
            self.ledger.stats.count_scan(scan::SWITCHED_OFF);
        } else if lister == Lister::Scanner {
            match self.scan_includes(scanner, job, discovery).await {
                Ok(read) => {
                    self.ledger.stats.count_scan(scan::WALKED);
                    return Ok(Listing::Scanned(read));
                }
                Err(why) => {
                    tracing::debug!("{}: asking -M: {why}", job.c.source.display());
                    self.ledger.stats.count_scan(why.name());
                }
            }
        }
        // The scan runs here: it takes a local slot, the remote compile does not.
        let _slot = self
            .in_place
            .slot()
            .await
            .map_err(|e| Declined::Failed(e.to_string()))?;
        Ok(Listing::Depfile(self.discover(job, discovery).await?))
    }

    /// The files the compile reads, by the scanner's walk.
    async fn scan_includes(
        &self,
        scanner: &ScannerState,
        job: &Job<'_>,
        discovery: &[OsString],
    ) -> Result<Vec<PathBuf>, NotScanned> {
        let macros = setup::macro_setup(discovery, job.identity.family)?;
        let probe = self.probe(scanner, job, &macros).await?;
        let c = &job.c;
        let walking = Walking {
            directives: scanner.directives.clone(),
            probe: probe.clone(),
            ops: macros.ops.clone(),
            source: job.req.cwd.join(&c.source),
            forced: c.forced_includes.clone(),
            cwd: job.req.cwd.clone(),
            language: c.language,
            including_dir_first: !c.includes.no_source_dir,
        };
        let walking = Arc::new(walking);
        for _ in 0..MAX_FEATURE_ROUNDS {
            let this = walking.clone();
            let walked = tokio::task::spawn_blocking(move || this.walk())
                .await
                .map_err(|e| NotScanned::Probe(e.to_string()))?;
            match walked {
                Err(NotScanned::GiveUp(GiveUp::Features(tests))) => {
                    self.answer_features(job, &macros, &probe, &tests).await?
                }
                other => return other,
            }
        }
        Err(NotScanned::FeatureRounds)
    }

    /// The probe of `job`'s compiler set-up, run once per daemon.
    async fn probe(
        &self,
        scanner: &ScannerState,
        job: &Job<'_>,
        macros: &MacroSetup,
    ) -> Result<Arc<Probe>, NotScanned> {
        let cell = scanner.probe_cell(probe_key(job, &macros.probe_args));
        cell.get_or_try_init(|| async {
            let depfile = self.scratch_file("probe", ".d")?;
            let mut flags: Vec<OsString> = setup::PROBE_FLAGS.iter().map(Into::into).collect();
            flags.extend(["-MD".into(), "-MF".into(), depfile.as_os_str().to_owned()]);
            let out = self
                .run_probe(job, macros, flags, Path::new("/dev/null"))
                .await?;
            let deps = std::fs::read_to_string(&depfile).unwrap_or_default();
            let probed = Probed::read(&out.stdout, &out.stderr, &deps, &job.req.cwd);
            Ok(Arc::new(Probe {
                probed,
                features: Mutex::new(HashMap::new()),
            }))
        })
        .await
        .cloned()
    }

    /// Asks the compiler `tests` in one preprocessing of a generated file, and keeps the
    /// answers with `probe`.
    async fn answer_features(
        &self,
        job: &Job<'_>,
        macros: &MacroSetup,
        probe: &Probe,
        tests: &[(String, String)],
    ) -> Result<(), NotScanned> {
        let file = self.scratch_file("features", ".h")?;
        std::fs::write(&file, setup::feature_probe(tests))
            .map_err(|e| NotScanned::Probe(format!("{}: {e}", file.display())))?;
        let flags = vec!["-dM".into(), "-E".into()];
        let out = self.run_probe(job, macros, flags, &file).await?;
        let answers = setup::feature_answers(&out.stdout, tests);
        probe
            .features
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(answers);
        Ok(())
    }

    /// Runs the compiler with the probe arguments of `macros`, `flags`, and `input` in the
    /// compile's language, in a local slot.
    async fn run_probe(
        &self,
        job: &Job<'_>,
        macros: &MacroSetup,
        flags: Vec<OsString>,
        input: &Path,
    ) -> Result<HostOutput, NotScanned> {
        let mut args = macros.probe_args.clone();
        args.extend(flags);
        args.extend(["-x".into(), job.c.language.gcc_name().into()]);
        args.push(input.as_os_str().to_owned());
        let _slot = self
            .in_place
            .slot()
            .await
            .map_err(|e| NotScanned::Probe(e.to_string()))?;
        let out = self
            .run_compiler(job, args)
            .await
            .map_err(|e| NotScanned::Probe(e.to_string()))?;
        if !out.termination.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or_default();
            return Err(NotScanned::Probe(format!(
                "{} {}: {last}",
                job.driver.display(),
                out.termination
            )));
        }
        Ok(out)
    }

    /// Runs the compile's compiler with `args`, in its directory and environment.
    pub(super) async fn run_compiler(
        &self,
        job: &Job<'_>,
        args: Vec<OsString>,
    ) -> std::io::Result<HostOutput> {
        let command = HostCommand {
            program: job.driver.clone(),
            args,
            cwd: job.req.cwd.clone(),
            env: job.req.env.clone(),
            umask: None,
        };
        run_host(&command, self.in_place.timeout()).await
    }

    /// A file of the daemon's own for a probe, removed when dropped.
    pub(super) fn scratch_file(
        &self,
        what: &str,
        suffix: &str,
    ) -> Result<tempfile::TempPath, NotScanned> {
        let tmp = self.store.root().join("tmp");
        tempfile::Builder::new()
            .prefix(&format!("{what}-{}-{}-", std::process::id(), unique()))
            .suffix(suffix)
            .tempfile_in(&tmp)
            .map(tempfile::NamedTempFile::into_temp_path)
            .map_err(|e| {
                NotScanned::Probe(format!("cannot create a file in {}: {e}", tmp.display()))
            })
    }

    /// Lists what the compile reads, system headers included, with the local compiler's
    /// `-M` and `discovery`.
    pub(super) async fn discover(
        &self,
        job: &Job<'_>,
        discovery: &[OsString],
    ) -> Result<tempfile::TempPath, Declined> {
        let scan = |detail: String| Declined::Unsuitable(NotRemote::DependencyScan, detail);
        let depfile = self
            .scratch_file("deps", ".d")
            .map_err(|e| scan(e.to_string()))?;
        let mut args = discovery.to_vec();
        args.extend(["-M".into(), "-MF".into(), depfile.as_os_str().to_owned()]);
        let output = self
            .run_compiler(job, args)
            .await
            .map_err(|e| scan(format!("dependency scan: {e}")))?;
        if !output.termination.success() {
            // The compile itself will fail the same way; here, with the user's diagnostics.
            return Err(scan("dependency scan failed".into()));
        }
        Ok(depfile)
    }
}

/// One compile's walk, owned, for a blocking thread.
struct Walking {
    directives: Arc<DirectiveCache>,
    probe: Arc<Probe>,
    ops: Vec<setup::MacroOp>,
    source: PathBuf,
    forced: Vec<PathBuf>,
    cwd: PathBuf,
    language: Language,
    including_dir_first: bool,
}

impl Walking {
    fn walk(&self) -> Result<Vec<PathBuf>, NotScanned> {
        let probed = &self.probe.probed;
        let mut macros = probed.macros.clone();
        setup::apply(&mut macros, &self.ops);
        let mut search = probed.search.clone();
        search.including_dir_first = self.including_dir_first;
        let forced: Vec<PathBuf> = probed
            .preincluded
            .iter()
            .chain(self.forced.iter())
            .cloned()
            .collect();
        let features = self.probe.features();
        let start = Start {
            macros,
            forced: &forced,
            cplusplus: matches!(self.language, Language::Cxx | Language::ObjCxx),
            cwd: &self.cwd,
            assembler: self.language == Language::AsmWithCpp,
            features: &features,
        };
        let mut files = self.directives.files();
        let scanned = walk::walk(&self.source, start, &search, &mut files)?;
        if let Some(path) = files.unreadable() {
            return Err(NotScanned::Unreadable(path.to_path_buf()));
        }
        Ok(scanned.read)
    }
}

/// What decides a probe's answers: the compiler, the flags besides `-D`/`-U` and inputs,
/// the language, the directory relative paths are taken in, and the environment the
/// compiler reads.
fn probe_key(job: &Job<'_>, probe_args: &[OsString]) -> Digest {
    let mut key = Vec::with_capacity(1024);
    let mut field = |bytes: &[u8]| {
        key.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        key.extend_from_slice(bytes);
    };
    field(job.identity.digest.hash_bytes());
    field(job.c.language.gcc_name().as_bytes());
    field(encode_os(job.req.cwd.as_os_str()).as_bytes());
    field(&(probe_args.len() as u64).to_le_bytes());
    for arg in probe_args {
        field(encode_os(arg).as_bytes());
    }
    for (k, v) in &job.req.env {
        if OUTPUT_ENV.iter().any(|name| k == *name) {
            field(encode_os(k).as_bytes());
            field(encode_os(v).as_bytes());
        }
    }
    Digest::of_bytes(&key)
}
