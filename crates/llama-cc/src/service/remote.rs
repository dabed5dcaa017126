//! Compiling a miss on a remote executor.
//!
//! The include scanner lists what the compile reads, every header, system ones too
//! ([`super::listing`]; the compiler's `-M` where it cannot decide); those files, the toolchain ([`crate::toolchain`]) and the arguments with their absolute
//! paths under a placeholder ([`crate::remote_args`]) make a hermetic action. A small
//! `/bin/sh` script, part of the command, puts the directory the inputs landed in for the
//! placeholder and records it in [`ROOT_MARKER`], so the depfile and diagnostics can name
//! the user's paths again when the result is delivered. `-ffile-prefix-map` does the same
//! inside the object, which is then byte-identical to a local compile's.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use llama_core::{
    ActionSpec, Digest, FUNCTION_PROPERTY, HashCache, PreparedAction, Store, TreeBuilder, encode_os,
};
use llama_exec::{Engine, Finished, OutputMapping, Termination, deliver_outputs};

use super::inputs::{Gather, GatheredInputs, Reads};
use super::listing::{Lister, Listing, ScannerState};
use super::lookup::{blob, compile_seconds};
use super::paths::{depfile_remote, logical_dir, normalize, output_env, resolve, root_relative};
use super::{CompileService, Done, Fallback, Job};
use crate::compilation::{Compilation, DepKind, Driver, Family};
use crate::identity::Identity;
use crate::manifest::Entry;
use crate::remote_args::{ROOT_PLACEHOLDER, remote_args};
use crate::stats::{NotRemote, Outcome, TrustReason, scan};
use crate::toolchain::{self, Toolchain};

/// The output in which the remote command records the directory its inputs landed in.
pub(crate) const ROOT_MARKER: &str = ".llama-root";

/// Runs the rest of the command line with the placeholder replaced by the input root,
/// from the directory given first. Plain POSIX sh (dash, bash, busybox), no other program
/// but `mkdir`: the remote image needs nothing else. Exit 125 means the wrapper failed.
const WRAPPER: &str = r#"R=$(pwd -P) || exit 125
printf '%s' "$R" > .llama-root || exit 125
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1)); o=
  while :; do
    case $a in
      *@LLAMA_ROOT@*) o=$o${a%%@LLAMA_ROOT@*}$R; a=${a#*@LLAMA_ROOT@} ;;
      *) break ;;
    esac
  done
  set -- "$@" "$o$a"
done
mkdir -p "$1" && cd "$1" || exit 125
shift
exec "$@"
"#;

/// Environment variables that make gcc search directories the remote root does not have
/// (they are not moved under the sysroot).
const LOCAL_SEARCH_ENV: &[&str] = &[
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "OBJCPLUS_INCLUDE_PATH",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
];

/// The flags that ask gcc for DWARF before version 5.
const OLD_DWARF: &[&str] = &["-gdwarf-2", "-gdwarf-3", "-gdwarf-4"];

/// Exit statuses that say the remote machinery failed rather than the compiler: the
/// wrapper's own (125), a program that could not be run (126, 127).
const INFRASTRUCTURE_EXITS: &[i32] = &[125, 126, 127];

/// How long compiles stay on this machine after the remote backend failed, before one tries
/// it again: a backend that is down then costs one timeout, not one per file.
const REMOTE_PAUSE: Duration = Duration::from_secs(30);

/// Toolchains by compiler identity and language, or why one cannot be shipped.
type Toolchains = std::collections::HashMap<(Digest, &'static str), Result<Arc<Toolchain>, String>>;

/// The remote executor misses compile on, the toolchains shipped to it, and its health.
pub(super) struct Remote {
    /// The action cache in front of the remote executor.
    pub(super) engine: Engine,
    toolchains: Mutex<Toolchains>,
    health: Health,
    /// What the include scanner keeps between compiles.
    scanner: ScannerState,
}

/// A circuit breaker: after a remote failure, compiles stay here for [`REMOTE_PAUSE`]
/// rather than each waiting for the backend to fail again.
#[derive(Default)]
struct Health {
    /// A failure fell back to this machine already (the user has been told).
    failed: AtomicBool,
    /// Compiles stay here until then.
    down_until: Mutex<Option<Instant>>,
}

impl Health {
    /// Whether the backend failed moments ago; the pause ends once it is over.
    fn is_down(&self) -> bool {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if Instant::now() < until => true,
            _ => {
                *down = None;
                false
            }
        }
    }

    /// Records a failure: compiles stay here for a while.
    fn trip(&self) {
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + REMOTE_PAUSE);
    }

    /// True the first time a failure falls back to this machine: the user is told once.
    fn first_fallback(&self) -> bool {
        !self.failed.swap(true, Ordering::Relaxed)
    }
}

impl Remote {
    pub(super) fn new(engine: Engine, hash_cache: Arc<HashCache>) -> Remote {
        Remote {
            engine,
            toolchains: Mutex::new(Toolchains::new()),
            health: Health::default(),
            scanner: ScannerState::new(hash_cache),
        }
    }

    fn lock_toolchains(&self) -> MutexGuard<'_, Toolchains> {
        self.toolchains.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The toolchain of this compiler for this language, found once per daemon.
    async fn toolchain(
        &self,
        identity: &Identity,
        c: &Compilation,
        env: &[(OsString, OsString)],
    ) -> Result<Arc<Toolchain>, String> {
        let key = (identity.digest, c.language.gcc_name());
        if let Some(found) = self.lock_toolchains().get(&key) {
            return found.clone();
        }
        let found = toolchain::discover(identity, c.language, env)
            .await
            .map(Arc::new);
        self.lock_toolchains().insert(key, found.clone());
        found
    }
}

/// Why a miss compiles here although a remote executor is set: the reason counted (with
/// its detail, for messages), and what to tell the user.
#[derive(Default)]
pub(super) struct Stayed {
    /// `None`: there is no remote executor.
    pub(super) why: Option<(NotRemote, Option<String>)>,
    /// Notes for the user (the executor's notices, a failure said once).
    pub(super) notes: Vec<String>,
}

/// Why a miss was not compiled remotely.
pub(super) enum Declined {
    /// It cannot be compiled remotely (the reason, and its detail); compile it here.
    Unsuitable(NotRemote, String),
    /// The remote backend failed; compile it here (or not, without local fallback).
    Failed(String),
}

/// A remote compile's action, with the inputs it was built from.
struct Prepared {
    action: PreparedAction,
    gathered: GatheredInputs,
    /// The scanner listed the inputs (not the compiler's `-M`).
    scanned: bool,
    /// The source was preprocessed here and shipped without its headers.
    preprocessed: bool,
    /// The source was preprocessed here: the depfile its preprocessor wrote, when the
    /// compile asks for one, goes into the result in place of the remote compiler's.
    preprocessed_depfile: Option<Vec<u8>>,
    /// What to tell the user about this compile.
    notes: Vec<String>,
}

/// What a remote compile ships of what the source includes.
#[derive(Clone, Copy)]
enum Ship {
    /// The source preprocessed here when the settings ask for it, else the headers.
    AsAsked,
    /// The headers.
    Headers,
}

/// A remote compile that ran.
struct Ran {
    finished: Finished,
    /// The compiler's exit code.
    exit_code: i32,
}

impl CompileService {
    /// Step 4, remotely: compiles `job` on the remote executor when it can go there and the
    /// backend is up; otherwise says why it stays here.
    pub(super) async fn compile_remotely(
        &self,
        remote: &Remote,
        job: &Job<'_>,
    ) -> Result<Done, Stayed> {
        // The remote compiler sees neither the user's symlinks nor the user's $PWD: an
        // output reached through `sym/..`, or a logical directory the objects name, stays.
        let trust = if job.through_symlink {
            Some(TrustReason::DotDotThroughSymlink)
        } else if logical_dir(job.req).is_some() {
            Some(TrustReason::LogicalDirectory)
        } else {
            None
        };
        if let Some(reason) = trust {
            return Err(Stayed {
                why: Some((NotRemote::Cannot(reason.into()), None)),
                notes: Vec::new(),
            });
        }
        if remote.health.is_down() {
            let detail = "the remote backend failed moments ago".to_string();
            return Err(Stayed {
                why: Some((NotRemote::Failed, Some(detail))),
                notes: Vec::new(),
            });
        }
        let compiled = self.remote_compile(remote, job).await;
        // What the executor has to say (e.g. that it lost the server and is waiting for
        // it) reaches the build through the compile that noticed, or the next one: the
        // daemon's log is not where a user looks while a build pauses.
        let mut notes: Vec<String> = remote
            .engine
            .take_notices()
            .into_iter()
            .map(|n| format!("llamacc: warning: {n}"))
            .collect();
        match compiled {
            Ok(mut done) => {
                notes.append(&mut done.notes);
                done.notes = notes;
                Ok(done)
            }
            Err(Declined::Unsuitable(reason, detail)) => {
                tracing::debug!("{}: {}: {detail}", job.c.source.display(), reason.name());
                Err(Stayed {
                    why: Some((reason, Some(detail))),
                    notes,
                })
            }
            Err(Declined::Failed(message)) => {
                remote.health.trip();
                if !job.settings.local_fallback {
                    let stderr = format!(
                        "llamacc: error: {message}\n\
                         llamacc: not compiling locally because LLAMACC_LOCAL_FALLBACK=0\n"
                    );
                    let mut done = Done::new(Outcome::RemoteError, 1, Vec::new(), stderr.into())
                        .because(NotRemote::Failed.name(), Some(message));
                    done.notes = notes;
                    return Ok(done);
                }
                // Said once per daemon: a broken backend would otherwise say it for
                // every file of the build. `llama stats` counts every fallback.
                if remote.health.first_fallback() {
                    notes.push(format!(
                        "llamacc: warning: {message}; compiling on this machine instead \
                         (said once; `llama stats` counts the fallbacks)"
                    ));
                }
                tracing::warn!("{}: {message}", job.c.source.display());
                Err(Stayed {
                    why: Some((NotRemote::Failed, Some(message))),
                    notes,
                })
            }
        }
    }

    /// Compiles a miss on the remote executor, records the manifest entry, and delivers
    /// the outputs.
    async fn remote_compile(&self, remote: &Remote, job: &Job<'_>) -> Result<Done, Declined> {
        let started = Instant::now();
        let mut prepared = self
            .prepare_remote(remote, job, Lister::Scanner, Ship::AsAsked)
            .await?;
        let mut ran = self.run_remote(remote, job, &prepared).await?;
        if ran.exit_code != 0 && prepared.preprocessed {
            // Diagnostics of preprocessed text lose their macro context: the user gets the
            // compile's own, from the compile with its headers.
            prepared = self
                .prepare_remote(remote, job, Lister::Scanner, Ship::Headers)
                .await?;
            ran = self.run_remote(remote, job, &prepared).await?;
        }
        if ran.exit_code != 0 && prepared.scanned {
            // A header the scanner missed fails the compile remotely: the compiler's own
            // list says whether that is what happened.
            if let Some(again) = self.missed_by_scanner(remote, job, &prepared).await? {
                ran = self.run_remote(remote, job, &again).await?;
                prepared = again;
            }
        }
        if let Some(depfile) = &prepared.preprocessed_depfile
            && ran.exit_code == 0
        {
            self.with_preprocessed_depfile(job, &prepared, &mut ran.finished, depfile)
                .await?;
        }
        let (stdout, stderr) = self.deliver_remote(job, &ran.finished).await?;
        if ran.exit_code != 0 {
            return Ok(Done::new(
                Outcome::CompileError,
                ran.exit_code,
                stdout,
                stderr,
            ));
        }
        let Prepared {
            action,
            gathered,
            notes,
            ..
        } = prepared;
        let entry = Entry {
            inputs: gathered.hashed,
            absent: gathered.absent,
            present: gathered.present,
            system: None,
            action: (
                *action.action_digest.hash_bytes(),
                action.action_digest.size(),
            ),
        };
        if let Err(e) = self.record_entry(&job.prekey, entry.clone()) {
            tracing::warn!(
                "could not record the manifest of {}: {e}",
                job.c.source.display()
            );
        }
        let finished = ran.finished;
        let outcome = if finished.cached {
            Outcome::Hit
        } else {
            Outcome::Remote
        };
        let mut done = Done::new(outcome, 0, stdout, stderr);
        done.notes = notes;
        done.entry = Some(entry);
        done.cached = finished.cached;
        if finished.cached {
            done.saved = compile_seconds(&finished.result) - started.elapsed().as_secs_f64();
        }
        Ok(done)
    }

    /// Puts the depfile written by the preprocessor here into a compile's result, here and
    /// in the store, so that a later hit delivers it too.
    async fn with_preprocessed_depfile(
        &self,
        job: &Job<'_>,
        prepared: &Prepared,
        finished: &mut Finished,
        depfile: &[u8],
    ) -> Result<(), Declined> {
        let Some(path) = depfile_remote(&job.req.cwd, &job.c) else {
            return Ok(());
        };
        let store = self.store.clone();
        let action = prepared.action.action_digest;
        let mut result = finished.result.clone();
        let depfile = depfile.to_vec();
        let result = tokio::task::spawn_blocking(move || {
            let digest = store.put_bytes(&depfile)?;
            result.output_files.retain(|f| f.path != path);
            result.output_files.push(llama_core::reapi::OutputFile {
                path,
                digest: Some(digest.to_proto()),
                ..Default::default()
            });
            store.put_action_result(&action, &result)?;
            Ok::<_, llama_core::StoreError>(result)
        })
        .await
        .map_err(|e| Declined::Failed(e.to_string()))?
        .map_err(|e| Declined::Failed(format!("recording the depfile: {e}")))?;
        finished.result = result;
        Ok(())
    }

    /// Runs a prepared action; the compiler's exit code, or why the remote machinery failed.
    async fn run_remote(
        &self,
        remote: &Remote,
        job: &Job<'_>,
        prepared: &Prepared,
    ) -> Result<Ran, Declined> {
        let action = &prepared.action;
        tracing::debug!(action = %action.action_digest, "remote compile of {}", job.c.source.display());
        let engine = &remote.engine;
        let finished = engine
            .run(action)
            .await
            .map_err(|e| Declined::Failed(format!("{} executor: {e}", engine.executor_name())))?;
        let exit_code = self.remote_exit_code(&finished).await?;
        Ok(Ran {
            finished,
            exit_code,
        })
    }

    /// After a failed remote compile whose inputs the scanner listed: the action with the
    /// compiler's list, when that list holds a file the scanner's did not; `None` when the
    /// failure is the compile's own.
    async fn missed_by_scanner(
        &self,
        remote: &Remote,
        job: &Job<'_>,
        scanned: &Prepared,
    ) -> Result<Option<Prepared>, Declined> {
        let again = match self
            .prepare_remote(remote, job, Lister::Compiler, Ship::Headers)
            .await
        {
            Ok(again) => again,
            // The preprocessor fails here too: the error is the source's.
            Err(Declined::Unsuitable(NotRemote::DependencyScan, _)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let listed: HashSet<&str> = scanned
            .gathered
            .hashed
            .iter()
            .map(|(p, _, _)| p.as_str())
            .collect();
        let missed: Vec<&str> = again
            .gathered
            .hashed
            .iter()
            .map(|(p, _, _)| p.as_str())
            .filter(|p| !listed.contains(p))
            .collect();
        if missed.is_empty() {
            return Ok(None);
        }
        self.ledger.stats.count_scan(scan::MISSED);
        tracing::warn!(
            "{}: the include scanner missed {}; compiling again with the compiler's list \
             (please report this with the file)",
            job.c.source.display(),
            missed.join(" ")
        );
        Ok(Some(again))
    }

    /// The hermetic action of `job`: its rebased arguments, the inputs the local compiler
    /// lists, the toolchain. Also returns the inputs, for the manifest entry.
    async fn prepare_remote(
        &self,
        remote: &Remote,
        job: &Job<'_>,
        lister: Lister,
        ship: Ship,
    ) -> Result<Prepared, Declined> {
        let (req, c) = (job.req, &job.c);
        let unsuitable = |why: NotRemote| move |detail: String| Declined::Unsuitable(why, detail);
        let driver = Driver {
            family: job.identity.family,
            cxx: req.cxx,
        };
        let args = remote_args(&c.args, driver).map_err(unsuitable(NotRemote::Arguments))?;
        if let Some((var, _)) = req
            .env
            .iter()
            .find(|(k, v)| !v.is_empty() && LOCAL_SEARCH_ENV.iter().any(|name| k == *name))
        {
            return Err(Declined::Unsuitable(
                NotRemote::LocalSearchEnv,
                format!(
                    "{} names directories of this machine",
                    var.to_string_lossy()
                ),
            ));
        }
        // gcc 12 files an absolute main source under its remapped name and then looks it up
        // unmapped: before DWARF 5 the file table gets a second entry (PR101575).
        if c.source.is_absolute()
            && c.args
                .iter()
                .any(|a| OLD_DWARF.contains(&a.to_string_lossy().as_ref()))
        {
            return Err(Declined::Unsuitable(
                NotRemote::OldDwarfAbsolute,
                "DWARF before version 5 with an absolute source path".into(),
            ));
        }
        let toolchain = remote
            .toolchain(&job.identity, c, &req.env)
            .await
            .map_err(unsuitable(NotRemote::Toolchain))?;
        let listing = match c.language.is_preprocessed_by_compiler() {
            true => Some(
                self.list_inputs(&remote.scanner, job, &args.discovery, lister)
                    .await?,
            ),
            false => None,
        };
        let reads = match &listing {
            Some(Listing::Scanned(files)) => Reads::Files(files),
            Some(Listing::Depfile(depfile)) => Reads::Depfile(depfile),
            None => Reads::SourceOnly,
        };
        let inputs = unsuitable(NotRemote::Inputs);
        let gathered = self
            .gather_inputs(job, reads, Some(DepKind::AllHeaders), Gather::Remote)
            .await;
        let scanned = matches!(listing, Some(Listing::Scanned(_)));
        drop(listing);
        let mut gathered = match gathered {
            Ok(Ok(g)) => g,
            Ok(Err(reason)) => {
                let detail = format!("what the compile reads: {}", reason.name());
                return Err(Declined::Unsuitable(NotRemote::Cannot(reason), detail));
            }
            Err(e) => return Err(inputs(e.to_string())),
        };
        // The toolchain, and the files `__has_include` found, are inputs too.
        let extra = toolchain
            .files
            .iter()
            .map(|f| (f.remote.clone(), f.local.clone(), f.executable))
            .chain(gathered.present.iter().filter_map(|p| {
                let p = Path::new(p);
                p.is_file()
                    .then(|| (p.to_path_buf(), p.to_path_buf(), false))
            }))
            .collect::<Vec<_>>();
        for (remote, local, executable) in extra {
            let digest = self
                .caches
                .digest_of(&local)
                .map_err(|e| inputs(e.to_string()))?;
            gathered
                .tree
                .add_known(&root_relative(&remote), digest, executable, local)
                .map_err(|e| inputs(e.to_string()))?;
        }
        let mut notes = Vec::new();
        let preprocessed = match ship {
            Ship::AsAsked => {
                self.preprocess_here(job, &args.discovery, &mut notes)
                    .await?
            }
            Ship::Headers => None,
        };
        let is_preprocessed = preprocessed.is_some();
        let mut tree = std::mem::take(&mut gathered.tree);
        let mut rebased = args.rebased;
        let mut preprocessed_depfile = None;
        if let Some(pre) = preprocessed {
            tree = self
                .preprocessed_tree(job, &toolchain, pre.text)
                .map_err(&inputs)?;
            rebased = args.without_depfile;
            let at = args.operand.unwrap_or(rebased.len());
            rebased.splice(at..at, pre.remote.iter().map(OsString::from));
            preprocessed_depfile = pre.depfile;
            self.ledger.stats.count_scan(scan::PREPROCESSED);
        }
        let action = self
            .remote_action(job, &toolchain, rebased)
            .prepare(tree.build())
            .map_err(|e| inputs(e.to_string()))?;
        Ok(Prepared {
            action,
            gathered,
            scanned,
            preprocessed: is_preprocessed,
            preprocessed_depfile,
            notes,
        })
    }

    /// The input tree of a compile preprocessed here: the text in the source's place, the
    /// files its flags name, the toolchain; no header.
    fn preprocessed_tree(
        &self,
        job: &Job<'_>,
        toolchain: &Toolchain,
        text: Arc<[u8]>,
    ) -> Result<TreeBuilder, String> {
        let cwd = &job.req.cwd;
        let mut tree = TreeBuilder::new();
        let source = cwd.join(&job.c.source);
        let source = resolve(&source).unwrap_or_else(|| normalize(&source));
        tree.add_bytes(text, &root_relative(&source), false)
            .map_err(|e| e.to_string())?;
        let files = job
            .c
            .file_inputs
            .iter()
            .map(|f| {
                let p = cwd.join(f);
                let p = resolve(&p).unwrap_or_else(|| normalize(&p));
                (p.clone(), p, false)
            })
            .chain(
                toolchain
                    .files
                    .iter()
                    .map(|f| (f.remote.clone(), f.local.clone(), f.executable)),
            );
        for (remote, local, executable) in files {
            let digest = self.caches.digest_of(&local).map_err(|e| e.to_string())?;
            tree.add_known(&root_relative(&remote), digest, executable, local)
                .map_err(|e| e.to_string())?;
        }
        Ok(tree)
    }

    /// The compiler's exit code, or why the remote machinery (not the compiler) failed.
    async fn remote_exit_code(&self, finished: &Finished) -> Result<i32, Declined> {
        match finished.termination {
            Termination::Exited(code) if !INFRASTRUCTURE_EXITS.contains(&code) => Ok(code),
            other => {
                let store = self.store.clone();
                let result = finished.result.clone();
                let stderr = tokio::task::spawn_blocking(move || {
                    blob(&store, result.stderr_digest.as_ref()).unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                Err(Declined::Failed(format!(
                    "the remote compile {other}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                )))
            }
        }
    }

    /// Delivers a remote compile's outputs; returns its stdout and stderr.
    async fn deliver_remote(
        &self,
        job: &Job<'_>,
        finished: &Finished,
    ) -> Result<Replayed, Declined> {
        let store = self.store.clone();
        let result = finished.result.clone();
        let delivery = Delivery::of(job);
        let delivered = tokio::task::spawn_blocking(move || delivery.deliver(&store, &result))
            .await
            .map_err(|e| Declined::Failed(e.to_string()))?
            .map_err(|e| Declined::Failed(describe_fallback(e)))?;
        delivered
            .ok_or_else(|| Declined::Failed("the remote compile did not write every output".into()))
    }

    /// The action: the wrapper, then the shipped driver with the rebased arguments.
    fn remote_action(
        &self,
        job: &Job<'_>,
        toolchain: &Toolchain,
        rebased: Vec<OsString>,
    ) -> ActionSpec {
        let mut arguments: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            WRAPPER.into(),
            "llamacc-remote".into(),
            format!("{ROOT_PLACEHOLDER}{}", job.req.cwd.display()),
        ];
        arguments.extend(toolchain.command_prefix());
        arguments.extend(rebased.iter().map(|a| encode_os(a).into_owned()));
        let mut env = output_env(job.req);
        env.push(("PATH".into(), "/usr/bin:/bin".into()));
        ActionSpec {
            arguments,
            env,
            output_paths: job
                .outputs
                .iter()
                .map(|o| o.remote.clone())
                .chain(std::iter::once(ROOT_MARKER.to_string()))
                .collect(),
            platform: vec![(FUNCTION_PROPERTY.into(), job.settings.function.clone())],
            timeout: Some(self.in_place.timeout()),
            ..Default::default()
        }
    }
}

/// A delivered compile's stdout and stderr.
pub(super) type Replayed = (Vec<u8>, Vec<u8>);

/// Where a compile's results go, owned, for a blocking thread.
pub(super) struct Delivery {
    outputs: Vec<OutputMapping>,
    /// The depfile among `outputs`, if the compile writes one.
    depfile_remote: Option<String>,
    /// Whose line width the depfile is re-wrapped at.
    family: Family,
    umask: u32,
}

impl Delivery {
    pub(super) fn of(job: &Job<'_>) -> Delivery {
        Delivery {
            outputs: job.outputs.clone(),
            depfile_remote: depfile_remote(&job.req.cwd, &job.c),
            family: job.identity.family,
            umask: job.req.umask,
        }
    }

    /// Delivers a compile's outputs and returns its stdout and stderr; `None` when the
    /// result lacks the object or the depfile. A result compiled remotely names its input
    /// root in its depfile and diagnostics: the root is taken out, so they name the user's
    /// paths.
    pub(super) fn deliver(
        &self,
        store: &Store,
        result: &llama_core::reapi::ActionResult,
    ) -> Result<Option<Replayed>, Fallback> {
        let (outputs, depfile_remote) = (&self.outputs, self.depfile_remote.as_deref());
        let mut stdout = blob(store, result.stdout_digest.as_ref())?;
        let mut stderr = blob(store, result.stderr_digest.as_ref())?;
        let root = result
            .output_files
            .iter()
            .find(|f| f.path == ROOT_MARKER)
            .map(|f| blob(store, f.digest.as_ref()))
            .transpose()?;
        let mut result = result.clone();
        if let Some(root) = root.filter(|r| !r.is_empty()) {
            stdout = without(&stdout, &root);
            stderr = without(&stderr, &root);
            if let Some(dep) = result
                .output_files
                .iter_mut()
                .find(|f| Some(f.path.as_str()) == depfile_remote)
            {
                let text = without(&blob(store, dep.digest.as_ref())?, &root);
                let text = crate::depfile::rewrap(&String::from_utf8_lossy(&text), self.family);
                dep.digest = Some(store.put_bytes(text.as_bytes())?.to_proto());
            }
        }
        // The object and the depfile must be there; the files a compiler writes only
        // sometimes (`.dwo`, `.su`) are delivered when they are.
        let success = result.exit_code == 0;
        let required = |o: &OutputMapping| {
            success && (o.remote == outputs[0].remote || Some(o.remote.as_str()) == depfile_remote)
        };
        let present: Vec<OutputMapping> = outputs
            .iter()
            .filter(|o| required(o) || result.output_files.iter().any(|f| f.path == o.remote))
            .cloned()
            .collect();
        if !deliver_outputs(store, &result, &present, self.umask)?.is_empty() {
            return Ok(None);
        }
        Ok(Some((stdout, stderr)))
    }
}

/// `text` with every occurrence of `needle` removed.
fn without(text: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(needle) {
            i += needle.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn describe_fallback(f: Fallback) -> String {
    match f {
        Fallback::Args(r) => r.to_string(),
        Fallback::Cannot(r, _) => r.name().to_string(),
        Fallback::Error(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_root_is_taken_out_of_text() {
        assert_eq!(
            without(b"/tmp/r1/src/a.o: /tmp/r1/src/a.c x.h", b"/tmp/r1"),
            b"/src/a.o: /src/a.c x.h"
        );
        assert_eq!(without(b"", b"/r"), b"");
    }

    #[test]
    fn the_wrapper_replaces_every_placeholder_and_runs_in_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(root.path()).unwrap();
        fs::create_dir_all(root.join("src")).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .current_dir(&root)
            .args([
                "-c",
                WRAPPER,
                "llamacc-remote",
                "@LLAMA_ROOT@/src",
                "/bin/sh",
                "-c",
                "pwd; printf '%s\\n' \"$@\"",
                "sh",
                "-I@LLAMA_ROOT@/inc",
                "a,@LLAMA_ROOT@/x:@LLAMA_ROOT@/y",
                "plain arg",
            ])
            .output()
            .unwrap();
        let r = root.display();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{r}/src\n-I{r}/inc\na,{r}/x:{r}/y\nplain arg\n")
        );
        assert_eq!(
            fs::read_to_string(root.join(ROOT_MARKER)).unwrap(),
            r.to_string()
        );
    }
}
