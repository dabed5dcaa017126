//! The compile service: what the daemon does with one compile request.
//!
//! 1. Parse the arguments with the flag table; anything not a single cacheable compile is
//!    handed back to run the real compiler directly, with its reason counted.
//! 2. Identify the compiler and hash what is known before compiling (compiler, arguments,
//!    directory, output-affecting environment, source, forced includes): the pre-key.
//! 3. Look up the manifest of that pre-key: an earlier compile whose headers all still have
//!    the same content (and whose shadowing candidates are still absent) names an action
//!    whose cached result is delivered without running anything.
//! 4. Otherwise compile remotely when a remote executor is set and the compile can go
//!    there, or else in place — the real compiler, the user's arguments, the user's
//!    directory, so the object is the one a plain build makes — with a depfile, and record
//!    what it read as the action's inputs.
//!
//! Steps 1–3 are [`lookup`], step 4 [`remote`] and [`in_place`]; all three work on one
//! [`Job`]. What a compile read is gathered in [`inputs`]; paths are read as the kernel
//! reads them in [`paths`]; the counters and the remote backend's cost live in [`ledger`].

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_core::{Digest, HashCache, Store};
use llama_exec::{Engine, OutputMapping};

use crate::compilation::{Compilation, LocalReason};
use crate::error::CcError;
use crate::explain::KeyLog;
use crate::identity::{Identity, env_path};
use crate::manifest::Entry;
use crate::protocol::{CompileReply, CompileRequest};
use crate::settings::Settings;
use crate::stats::{CannotCache, ERROR_REASON, Outcome, Stats, StatsSnapshot};

mod in_place;
mod inputs;
mod keylog;
mod ledger;
mod listing;
mod lookup;
mod paths;
mod preprocess;
mod remote;

use in_place::InPlace;
use keylog::{Keyed, Told};
use ledger::Ledger;
use lookup::Caches;
use remote::{Remote, Stayed};

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

/// Environment variables that make the compiler write files llamacc does not know about,
/// with the reason each is counted under.
pub(crate) const UNCACHEABLE_ENV: &[(&str, CannotCache)] = &[
    ("DEPENDENCIES_OUTPUT", CannotCache::DependenciesOutput),
    ("SUNPRO_DEPENDENCIES", CannotCache::SunproDependencies),
];

/// How a compile left the cached path.
enum Fallback {
    /// The arguments ask for something the cache does not do.
    Args(LocalReason),
    /// The daemon cannot cache it; the detail (a path) is for messages only.
    Cannot(CannotCache, Option<String>),
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

/// One compile on its way through the service: what [`lookup`] learnt before compiling,
/// read by the remote and in-place compiles alike.
struct Job<'a> {
    /// The request as the client sent it.
    req: &'a CompileRequest,
    /// Its `LLAMACC_*` settings.
    settings: &'a Settings,
    /// The arguments to compile with (after `LLAMACC_*` filtering).
    args: &'a [OsString],
    /// The compiler, resolved in the client's `PATH`.
    driver: PathBuf,
    /// Which compiler it is.
    identity: Identity,
    /// What the arguments ask for.
    c: Compilation,
    /// Everything known before compiling, hashed: the manifest's key.
    prekey: Digest,
    /// The source and the files flags name, with the digests the pre-key covers.
    files: Vec<(PathBuf, Digest)>,
    /// What `-march=native` stands for on this machine, when a flag asks for it.
    native_cpu: Option<Digest>,
    /// Where the outputs land (object first).
    outputs: Vec<OutputMapping>,
    /// An output is reached through `sym/..`: the remote compiler would not see it there.
    through_symlink: bool,
    /// When the daemon took the request.
    started: Instant,
}

/// A compile that went through the cache: the reply's fields, and what is counted.
struct Done {
    exit_code: i32,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cached: bool,
    outcome: Outcome,
    /// The stats key of the outcome's reason, if it has one.
    reason: Option<&'static str>,
    /// What the reason's name leaves out (which file, what failed), for messages only.
    detail: Option<String>,
    /// Compiler time a hit did not spend, in seconds.
    saved: f64,
    /// Messages from llamacc itself to print first.
    notes: Vec<String>,
    /// The manifest entry the compile was found by or recorded as: its headers, for the
    /// key record.
    entry: Option<Entry>,
}

impl Done {
    /// A compile that ended with `exit_code`, writing `stdout` and `stderr`.
    fn new(outcome: Outcome, exit_code: i32, stdout: Vec<u8>, stderr: Vec<u8>) -> Done {
        Done {
            exit_code,
            stdout,
            stderr,
            cached: false,
            outcome,
            reason: None,
            detail: None,
            saved: 0.0,
            notes: Vec::new(),
            entry: None,
        }
    }

    /// Counted with `reason` (a stats key), `detail` said only in messages.
    fn because(mut self, reason: &'static str, detail: Option<String>) -> Done {
        self.reason = Some(reason);
        self.detail = detail;
        self
    }
}

/// The state a daemon keeps across compiles.
pub struct CompileService {
    store: Store,
    /// What is remembered between compiles to look them up fast.
    caches: Caches,
    /// Compiling on this machine: the slots, the limits, the engine results are recorded
    /// through.
    in_place: InPlace,
    /// The remote executor misses compile on, with its health; `None`: in place.
    remote: Option<Remote>,
    /// The counters, the remote backend's cost and what has been said once.
    ledger: Ledger,
    /// What each compile was keyed on, for `llama explain`.
    keys: Arc<KeyLog>,
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
            caches: Caches::new(hash_cache),
            in_place: InPlace::new(&store, jobs, timeout, own_umask),
            remote: None,
            ledger: Ledger::new(stats),
            keys: Arc::new(KeyLog::new(store.clone())),
            store,
        }
    }

    /// Compiles misses on the executor behind `engine` (Lambda, REAPI) instead of in
    /// place, shipping the toolchain with each action. A miss that cannot go remote, or
    /// whose remote run fails, still compiles in place.
    pub fn with_remote(mut self, engine: Engine) -> CompileService {
        self.remote = Some(Remote::new(engine, self.caches.hash_cache.clone()));
        self
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.ledger.stats
    }

    /// The counters, with what the remote backend consumed since they were zeroed (the
    /// saved snapshot carries earlier daemons' share).
    pub fn snapshot(&self) -> StatsSnapshot {
        self.ledger.snapshot(self.remote_engine())
    }

    /// Zeroes the counters, the remote backend's cost among them.
    pub fn reset_stats(&self) {
        self.ledger.reset(self.remote_engine());
    }

    fn remote_engine(&self) -> Option<&Engine> {
        self.remote.as_ref().map(|r| &r.engine)
    }

    /// Handles one compile.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills a compile in progress; nothing is recorded.
    pub async fn compile(&self, req: CompileRequest) -> CompileReply {
        let started = Instant::now();
        let settings = Settings::from_env(req.env.iter().map(|(k, v)| (k, v)));
        let mut notes = self.ledger.unknown_variable_notes(&settings);
        let args = settings.filter_args(req.args.clone());
        let program = OsString::from(settings.compiler(req.cxx));
        let (keyed, outcome) = if settings.local {
            let fallback = Fallback::Cannot(CannotCache::LocalSetting, None);
            (None, Err(fallback))
        } else {
            self.cached_compile(&req, &settings, &args, &program, started)
                .await
        };
        match outcome {
            Ok(mut done) => {
                let told = Told {
                    outcome: done.outcome,
                    reason: done.reason.map(|r| with_detail(r, done.detail.as_deref())),
                    exit_code: Some(done.exit_code),
                    entry: done.entry.take(),
                };
                self.note(&req, &settings, &args, keyed, told).await;
                self.reply_done(done, &settings, notes, started)
            }
            Err(fallback) => {
                let (outcome, reason, message) = match fallback {
                    Fallback::Args(reason) => (Outcome::Local, reason.name(), None),
                    Fallback::Cannot(reason, detail) => {
                        (Outcome::Local, reason.name().to_string(), detail)
                    }
                    Fallback::Error(e) => {
                        notes.push(format!(
                            "llamacc: warning: {e}; running the compiler directly"
                        ));
                        (Outcome::Error, ERROR_REASON.to_string(), None)
                    }
                };
                self.ledger.stats.record(outcome, Some(&reason), 0.0);
                let reason = with_detail(&reason, message.as_deref());
                let told = Told {
                    outcome,
                    reason: Some(reason.clone()),
                    exit_code: None,
                    entry: None,
                };
                self.note(&req, &settings, &args, keyed, told).await;
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

    /// Counts a compile that went through the cache and makes its reply.
    fn reply_done(
        &self,
        done: Done,
        settings: &Settings,
        mut notes: Vec<String>,
        started: Instant,
    ) -> CompileReply {
        self.ledger
            .stats
            .record(done.outcome, done.reason, done.saved);
        notes.extend(done.notes);
        if settings.verbose {
            let described = match done.reason {
                Some(r) => format!(
                    "{}: {}",
                    done.outcome.description(),
                    with_detail(r, done.detail.as_deref())
                ),
                None => done.outcome.description().to_string(),
            };
            notes.push(format!(
                "llamacc: {described} ({:.1} ms)",
                started.elapsed().as_secs_f64() * 1e3
            ));
        }
        CompileReply::Done {
            exit_code: done.exit_code,
            stdout: done.stdout,
            stderr: done.stderr,
            cached: done.cached,
            notes,
        }
    }

    /// Steps 2 to 4: look the compile up, else compile it remotely or in place. With what
    /// its key was made of, once it has one.
    async fn cached_compile(
        &self,
        req: &CompileRequest,
        settings: &Settings,
        args: &[OsString],
        program: &OsStr,
        started: Instant,
    ) -> (Option<Keyed>, Result<Done, Fallback>) {
        let job = match self.job(req, settings, args, program, started).await {
            Ok(job) => job,
            Err(fallback) => return (None, Err(fallback)),
        };
        (Some(Keyed::of(&job)), self.compile_job(&job).await)
    }

    /// Steps 3 and 4 of a job.
    async fn compile_job(&self, job: &Job<'_>) -> Result<Done, Fallback> {
        if let Some(hit) = self.lookup(job).await? {
            return Ok(hit);
        }
        let stayed = match &self.remote {
            Some(remote) => match self.compile_remotely(remote, job).await {
                Ok(done) => return Ok(done),
                Err(stayed) => stayed,
            },
            None => Stayed::default(),
        };
        self.compile_in_place(job, stayed).await
    }
}

/// A stats key, with what it leaves out in parentheses.
fn with_detail(reason: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{reason} ({detail})"),
        None => reason.to_string(),
    }
}

/// The compiler as the client names it, resolved as its shell would: a path with a slash
/// relative to the client's directory, a bare name in the client's `PATH`.
pub fn resolve_compiler(
    program: &OsStr,
    env: &[(OsString, OsString)],
    cwd: &std::path::Path,
) -> Option<PathBuf> {
    llama_exec::find_program(program, env_path(env).as_deref(), cwd)
}
