//! Command-line definitions (clap). The original's Go-style flags (`-stdin`, `-logs`,
//! `-region us-east-1`) are rewritten into these by [`crate::goflags`] first.

use clap::{Args, Parser, Subcommand};

/// Exit status when llama itself fails (bad flag, missing input, unusable store), as `env`
/// and `xargs` do: a command's own status passes through unchanged.
pub const EXIT_LLAMA_ERROR: i32 = 125;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  the command's own status    when it ran (from the cache or now)
  128+N                       the command was killed by signal N
  124                         the command ran past action_timeout and was killed
  125                         llama itself failed (bad arguments, missing input, unusable store)

Flags may be spelled with one dash or two (-stdin or --stdin), as the original llama accepted.

More help: `llama help SUBCOMMAND`, `llama help llamacc` (the LLAMACC_* variables, since
`llamacc --help` is the compiler's), `llama help settings`; `llama man`.";

/// Outsource UNIX commands to far more parallelism than one machine has.
///
/// With no set-up, commands run on this machine through a content-addressed cache under
/// $LLAMA_DIR (see `llama config`). Its compiler front end, `llamacc` / `llamacxx`, is a
/// drop-in gcc or clang: `make -j CC=llamacc CXX=llamacxx`, or a launcher in front of one:
/// `CC="llamacc gcc"`, CMake's CMAKE_C_COMPILER_LAUNCHER=llamacc.
#[derive(Debug, Parser)]
#[command(
    name = "llama",
    version,
    after_help = EXIT_STATUS_HELP,
    // Ours knows topics besides subcommands: `llama help llamacc`.
    disable_help_subcommand = true
)]
pub struct Cli {
    /// AWS region for the lambda backend (overrides `region`).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Object store for the lambda backend, s3://BUCKET/PREFIX (overrides `object_store`).
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,

    /// S3 requests the lambda backend has in flight at once (overrides `s3_concurrency`).
    #[arg(long, global = true, value_name = "N")]
    pub s3_concurrency: Option<String>,

    /// Log every AWS request and response (the SDK's debug output) on standard error.
    #[arg(long, global = true)]
    pub debug_aws: bool,

    /// Also write the trace of the actions this command runs to FILE, one JSON object per
    /// line (`llama trace` reads the traces kept under $LLAMA_DIR).
    #[arg(long, global = true, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command through llama, shipping files to it and results back.
    #[command(after_help = INVOKE_HELP)]
    Invoke(InvokeArgs),
    /// Run a command once per line of standard input, in parallel.
    #[command(after_help = XARGS_HELP)]
    Xargs(XargsArgs),
    /// Print the effective settings and where each came from.
    Config(ConfigArgs),
    /// Control the daemon behind llamacc (it starts by itself on first use).
    Daemon(DaemonArgs),
    /// What llamacc did: compiles, cache hits and misses, local runs by reason, time saved.
    Stats(StatsArgs),
    /// Why a compile missed: what changed in its key since the previous compile of it.
    #[command(after_help = EXPLAIN_HELP)]
    Explain(ExplainArgs),
    /// The local cache: where it is and what it holds; clear, evict, resize or verify it.
    #[command(after_help = CACHE_HELP)]
    Cache(CacheArgs),
    /// Traces of builds: list them, export one for Perfetto, report on it, or predict it
    /// under other resources.
    #[command(after_help = TRACE_HELP)]
    Trace(TraceArgs),
    /// Create or update the AWS resources of the lambda backend, and point the config at them.
    #[command(after_help = BOOTSTRAP_HELP)]
    Bootstrap(BootstrapArgs),
    /// Create or update a Lambda function that runs llama's actions.
    #[command(name = "update-function", after_help = UPDATE_FUNCTION_HELP)]
    UpdateFunction(UpdateFunctionArgs),
    /// Check the backend's set-up, the store and the daemon, and say how to fix what is wrong.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
    /// Print this help, a subcommand's, or a topic's: llamacc (its LLAMACC_* variables), settings.
    Help(HelpArgs),
    /// Print the completion script for a shell (e.g. `llama completions bash > /etc/bash_completion.d/llama`).
    Completions(CompletionsArgs),
    /// Print the manual page of llama, or of one subcommand (`llama man > llama.1`).
    Man(ManArgs),
}

/// `llama help`.
#[derive(Debug, Args)]
pub struct HelpArgs {
    /// A subcommand (`daemon start`), or a topic: llamacc, settings.
    #[arg(value_name = "SUBCOMMAND|TOPIC")]
    pub topic: Vec<String>,
}

/// `llama completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete llama's subcommands and flags in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `llama man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print (default: llama's own, with the environment).
    #[arg(value_name = "SUBCOMMAND")]
    pub subcommand: Option<String>,
}

const BOOTSTRAP_HELP: &str = "\
Creates, or updates through a change set, the CloudFormation stack named by `stack`
(default llama) in the region of -region (else `region`, else the AWS SDK's default):
  - an S3 bucket for inputs, outputs and cached results, expiring them after --cache-days;
  - an ECR repository for function images, dropping images no function tag points at;
  - the role functions run as, allowed to read and write that bucket and their own logs.
It then writes region, object_store, image_repository, execution_role and backend = lambda
to the config file (see `llama config`). Run again, it changes nothing and says so; after an
upgrade of llama it applies the new template. It needs permission to use CloudFormation and
to create those three resources (with CAPABILITY_IAM); functions need no more than the role.

Next: `llama update-function --create gcc` (gcc: the function llamacc compiles on, see
LLAMACC_FUNCTION), then `make -j100 CC=llamacc`.

Exit status: 0 when the stack and config are in place, 125 otherwise (the stack events that
explain a failure are printed).";

const UPDATE_FUNCTION_HELP: &str = "\
Image sources (one at most):
  --base IMAGE   any image with a libc (default for --create: debian:bookworm-slim); llama
                 copies it to image_repository with one more layer holding llama-runtime as
                 its entrypoint. Needs no container builder: this talks to the registries.
  --build DIR    builds DIR's Dockerfile with docker, podman or buildah, then pushes it. The
                 image must run llama-runtime as its entrypoint.
  --tag IMAGE    an image already pushed to ECR; it is used by digest.
  (none)         the function keeps its image; only --memory, --timeout change.

The function runs as execution_role, and its image is referenced by digest so that what
runs is exactly what was pushed. Each step waits for Lambda to finish the previous update.

Examples:
  llama update-function --create gcc
  llama update-function --memory 3008 gcc
  llama update-function --create --base public.ecr.aws/docker/library/debian:bookworm-slim gcc

Exit status: 0 when the function is active at the new image and settings, 125 otherwise.";

const DOCTOR_HELP: &str = "\
Checks the configured backend (or --backend's), then what llamacc needs on every backend:
  local   nothing more
  reapi   the settings; the server answers GetCapabilities for the instance, speaks
          SHA-256 and executes; one small action per function (llamacc's, LLAMACC_FUNCTION,
          default gcc, and each -f) is uploaded, executed and its output downloaded
  lambda  the region, the AWS credentials, the CloudFormation stack and whether it is
          current, the config against the stack, the bucket, the image repository, and each
          function (exists, active, this version of llama-runtime)
  all     the store (writable, its size against cache_size), the daemon (answers, in this
          version; started if it was not running), and the compilers llamacc stands in for
Each problem is printed with the command or setting that fixes it; --json prints one object
{backend, problems, checks: [{name, status: ok|problem|skipped, detail, fix}]}.

Exit status: 0 when everything is in order, 1 when a problem was found, 125 when llama
itself failed.";

/// `llama bootstrap`.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Days after which the bucket deletes stored blobs and cached results.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub cache_days: u32,
}

/// The CPU architecture of a Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// Intel and AMD (Lambda's default).
    #[value(name = "x86_64")]
    X86_64,
    /// AWS Graviton.
    #[value(name = "arm64")]
    Arm64,
}

#[cfg(feature = "lambda")]
impl From<Arch> for llama_aws::Arch {
    fn from(arch: Arch) -> Self {
        match arch {
            Arch::X86_64 => llama_aws::Arch::X86_64,
            Arch::Arm64 => llama_aws::Arch::Arm64,
        }
    }
}

/// `llama update-function`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").args(["base", "build", "tag"]))]
pub struct UpdateFunctionArgs {
    /// Create the function if it does not exist.
    #[arg(long)]
    pub create: bool,
    /// Build the image from this directory's Dockerfile with docker, podman or buildah.
    #[arg(long, value_name = "DIR")]
    pub build: Option<std::path::PathBuf>,
    /// Use this image, already pushed (REGISTRY/REPOSITORY:TAG or @sha256:...).
    #[arg(long, value_name = "IMAGE")]
    pub tag: Option<String>,
    /// Add llama-runtime to this base image and push the result (no builder needed).
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<String>,
    /// Memory of the function in MB (Lambda gives a full vCPU at 1769).
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(i32).range(128..=10240))]
    pub memory: Option<i32>,
    /// Timeout of one invocation (e.g. 60s, 5m; at most 15m).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// CPU architecture of the function.
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// The llama-runtime binary to put in the image (default: the one beside `llama`).
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<std::path::PathBuf>,
    /// The function's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// `llama doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also check this function (besides llamacc's, LLAMACC_FUNCTION); repeatable.
    #[arg(short = 'f', long = "function", value_name = "NAME")]
    pub functions: Vec<String>,
    /// Check this backend rather than the configured one (e.g. before switching to it).
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
    /// Print the checks as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A backend, as `--backend` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// This machine.
    Local,
    /// AWS Lambda.
    Lambda,
    /// A Remote Execution API server.
    Reapi,
}

impl From<BackendArg> for llama_core::Backend {
    fn from(backend: BackendArg) -> Self {
        match backend {
            BackendArg::Local => llama_core::Backend::Local,
            BackendArg::Lambda => llama_core::Backend::Lambda,
            BackendArg::Reapi => llama_core::Backend::Reapi,
        }
    }
}

/// `llama daemon`: a subcommand, or the original llama's flags.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = DAEMON_HELP)]
pub struct DaemonArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: Option<DaemonAction>,
    /// The original's spelling of the same actions.
    #[command(flatten)]
    pub original: OriginalDaemonFlags,
}

const DAEMON_HELP: &str = "\
The daemon starts by itself on llamacc's first compile and exits after daemon_idle_timeout
without work (see `llama config`); these commands are for scripts and for looking.

The original llama's flags work too: -ping is `status`, -shutdown is `stop`, -stats is
`llama stats`, -start runs the daemon in the foreground (`run`), -autostart does so unless
one runs, and either with -detach starts it in the background (`start`); -idle-timeout D
sets daemon_idle_timeout for that daemon. -path and -cc-concurrency are refused: the
socket's place follows LLAMA_DIR, and concurrency is the jobs / remote_jobs settings.

Exit status: 0 on success; status (and -ping) exit 1 when no daemon runs.";

/// `llama daemon -ping` and the rest of the original's flags.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "The original llama's flags")]
pub struct OriginalDaemonFlags {
    /// As `status`.
    #[arg(long)]
    pub ping: bool,
    /// As `stop`.
    #[arg(long)]
    pub shutdown: bool,
    /// As `llama stats`.
    #[arg(long)]
    pub stats: bool,
    /// As `run` (with -detach: `start`).
    #[arg(long)]
    pub start: bool,
    /// As -start, doing nothing when a daemon runs.
    #[arg(long)]
    pub autostart: bool,
    /// With -start or -autostart: in the background.
    #[arg(long)]
    pub detach: bool,
    /// daemon_idle_timeout for the daemon started.
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Refused: the socket's place follows LLAMA_DIR.
    #[arg(long, value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
    /// Refused: set jobs or remote_jobs.
    #[arg(long, value_name = "N")]
    pub cc_concurrency: Option<String>,
}

/// What `llama daemon` was asked, in either spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonMode {
    /// A subcommand, or the original flag that means it.
    Action(DaemonAction),
    /// `-autostart` without `-detach`: run in the foreground unless a daemon runs.
    RunUnlessRunning,
    /// `-stats`.
    Stats,
}

impl DaemonArgs {
    /// The action asked for, or why the flags given are refused.
    pub fn mode(&self) -> Result<DaemonMode, String> {
        let o = &self.original;
        if let Some(action) = self.action {
            return Ok(DaemonMode::Action(action));
        }
        if o.path.is_some() {
            return Err("daemon -path is not supported: the socket's place follows LLAMA_DIR (see `llama config`); set LLAMA_DIR instead".into());
        }
        if o.cc_concurrency.is_some() {
            return Err("daemon -cc-concurrency is not supported: set jobs (compiles run here at once; LLAMA_JOBS) or remote_jobs (LLAMA_REMOTE_JOBS) instead".into());
        }
        let modes = [
            (o.ping, DaemonMode::Action(DaemonAction::Status)),
            (o.shutdown, DaemonMode::Action(DaemonAction::Stop)),
            (o.stats, DaemonMode::Stats),
            (
                o.start,
                DaemonMode::Action(if o.detach {
                    DaemonAction::Start
                } else {
                    DaemonAction::Run
                }),
            ),
            (
                o.autostart,
                if o.detach {
                    DaemonMode::Action(DaemonAction::Start)
                } else {
                    DaemonMode::RunUnlessRunning
                },
            ),
        ];
        let mut chosen = modes.iter().filter(|(on, _)| *on).map(|(_, m)| *m);
        match (chosen.next(), chosen.next()) {
            (Some(mode), None) => Ok(mode),
            _ => Err("daemon: give one action: start, stop, status or run (or the original's -ping, -shutdown, -stats, -start, -autostart)".into()),
        }
    }
}

/// The daemon's subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum DaemonAction {
    /// Start the daemon in the background (a no-op when one runs).
    Start,
    /// Ask the daemon to finish its compiles and exit.
    Stop,
    /// Say whether a daemon runs, and its pid, uptime and socket (exit 1 when none does).
    Status,
    /// Run the daemon in the foreground (what `start` and llamacc launch).
    Run,
}

const EXPLAIN_HELP: &str = "\
For an object llamacc compiled (or, given a directory, the last compile whose object or
working directory is there), says whether it was served from the cache and, when it was
not, what differed from the previous compile of the same object: the compiler (another
one, or the same one upgraded), an argument, an environment variable that is part of the
key, a header's content (both digests), a new header that shadows an old one, the working
directory. llamacc keeps the last four compiles of each object under $LLAMA_DIR/explain.
LLAMACC_DEBUG=1 appends the same, compile by compile, to $LLAMA_DIR/debug.log.

Examples:
  llama explain build/foo.o
  llama explain .
  llama explain --json src/lapi.o

Exit status: 0 when a compile of it is recorded, 1 when none is, 125 when llama failed.";

/// `llama explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An object file, or a directory (its last compile).
    pub path: std::path::PathBuf,
    /// The records themselves, as JSON (newest first), with the differences.
    #[arg(long)]
    pub json: bool,
}

const CACHE_HELP: &str = "\
The cache is the store under $LLAMA_DIR (see `llama config`): content blobs, one
action-cache entry per result, and llamacc's manifests. It is kept under cache_size by
evicting the least recently used entries; an entry used in the last ten minutes is never
evicted while a build may still be using it.

Examples:
  llama cache                       where it is, its size and limit, entries, hit rate
  llama cache --json
  llama cache set-limit 20GiB       as ccache -M: written to the config file, applied now
  llama cache evict --older-than 7d
  llama cache clear                 as ccache -C (stops the daemon first)
  llama cache verify                re-hash everything, remove what is damaged

Exit status: 0; verify exits 1 when it found (and removed) damaged entries; 125 when llama
itself failed.";

/// `llama cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// What to do (default: show).
    #[command(subcommand)]
    pub action: Option<CacheAction>,
    /// Show as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `llama cache`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Where the cache is, its size and limit, its entries and llamacc's hit rate.
    Show {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every entry (the daemon is stopped first; run it when no build runs).
    Clear,
    /// Remove the entries not used for DURATION (e.g. 7d, 12h).
    Evict {
        /// Age of the entries to remove: not used for this long.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Set cache_size in the config file and evict down to it now.
    SetLimit {
        /// The new bound, e.g. 20GiB or 500MB.
        size: String,
    },
    /// Re-hash every entry, remove what is damaged, and report.
    Verify {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
}

const TRACE_HELP: &str = "\
Every llamacc compile is traced under $LLAMA_DIR/traces: when it arrived, the time it spent
in each phase (scan, lookup, upload, run, download, deliver...), how it was answered, bytes
and cost. LLAMACC_BUILD_ID names the build its compiles belong to; without it, a build is
a run of compiles with no gap longer than a few seconds. The last 64 builds are kept.

BUILD defaults to the newest build.

Examples:
  LLAMACC_BUILD_ID=lua make -j16 CC=llamacc
  llama trace report lua
  llama trace export lua > lua.trace.json        (open in ui.perfetto.dev)
  llama trace simulate lua --workers 100 --remote --rtt 30 --cold-start 1000
  llama trace simulate lua --workers 100 --remote --sweep

Exit status: 0, or 125 when the build is unknown or its trace cannot be read.";

/// `llama trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: TraceAction,
}

/// `llama trace`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum TraceAction {
    /// The builds kept, oldest first.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The build in the Trace Event format (Perfetto, chrome://tracing), on standard output.
    Export {
        /// The build (default: the newest).
        build: Option<String>,
    },
    /// Wall time, concurrency, time by phase, the longest actions, serial stretches.
    Report {
        /// The build (default: the newest).
        build: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Predicts the build's wall time and cost under other resources.
    Simulate(SimulateArgs),
}

/// `llama trace simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The build (default: the newest).
    pub build: Option<String>,
    /// Actions run at once: remote workers (--remote) or local slots.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Actions the build tool keeps in flight (make -jJ); default: as recorded.
    #[arg(long, value_name = "J")]
    pub jobs: Option<usize>,
    /// Run on remote workers rather than on the client's cores.
    #[arg(long)]
    pub remote: bool,
    /// The client's processor cores (default: this machine's).
    #[arg(long)]
    pub client_cores: Option<usize>,
    /// A remote action's round trip, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub rtt: f64,
    /// A remote worker's first action's start-up, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub cold_start: f64,
    /// How much faster a worker runs an action than the traced machine.
    #[arg(long, default_value_t = 1.0)]
    pub worker_speed: f64,
    /// How much faster the client's cores are than the traced machine's (its own work and
    /// the actions it runs here).
    #[arg(long, default_value_t = 1.0)]
    pub client_speed: f64,
    /// The client's CPU per action, in ms, in place of what the trace recorded: e.g. a
    /// remote build's measured per-compile client cost, replaying a local trace.
    #[arg(long, value_name = "MS")]
    pub client_ms: Option<f64>,
    /// The client's link, in MB/s (default: no limit).
    #[arg(long)]
    pub bandwidth: Option<f64>,
    /// cold: every action runs; warm: every action is a cache hit.
    #[arg(long, default_value = "cold", value_parser = ["cold", "warm"])]
    pub cache: String,
    /// A Lambda function's memory in MB, for the cost.
    #[arg(long, default_value_t = 1769.0)]
    pub memory: f64,
    /// Print the prediction for 1, 2, 4, ... up to --workers.
    #[arg(long)]
    pub sweep: bool,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
}

/// `llama stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print the counters as JSON.
    #[arg(long)]
    pub json: bool,
    /// Zero the counters.
    #[arg(long)]
    pub zero: bool,
}

const INVOKE_HELP: &str = "\
Example:
  echo hello > INPUT
  llama invoke -f INPUT -o OUTPUT gcc sh -c 'sha256sum INPUT > OUTPUT'
  cat OUTPUT

The command runs in a fresh directory holding only the -f files (at their REMOTE paths),
with PATH as in this shell and no other environment. Its stdout and stderr are replayed
here and its exit status becomes llama's. A successful run is cached: the same command on
the same inputs and FUNCTION is answered from the cache without running again.

Exit status:
  the command's own status    when it ran (from the cache or now)
  128+N                       the command was killed by signal N
  124                         the command ran past action_timeout and was killed
  125                         llama itself failed (bad arguments, missing input or output,
                              unusable store)";

/// `llama invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Ship a file or directory to the command; REMOTE is its path there (default: LOCAL).
    #[arg(short = 'f', long = "file", value_name = "LOCAL[:REMOTE]")]
    pub files: Vec<String>,

    /// Bring a file or directory the command produces back to LOCAL (REMOTE default: LOCAL).
    #[arg(short = 'o', long = "output", value_name = "LOCAL[:REMOTE]")]
    pub outputs: Vec<String>,

    /// Ship this program of this machine (a name on PATH, or a path) with the command: it,
    /// its shared libraries and the loader travel as inputs and it runs through them, so the
    /// function needs no image with it. Repeatable. A script ships with its interpreter.
    #[arg(long, value_name = "PROG")]
    pub ship: Vec<String>,

    /// Do not ship the command's own program, which remote backends do by default
    /// (`ship_command`): the function's image has it.
    #[arg(long)]
    pub no_ship: bool,

    /// Feed this process's standard input to the command.
    #[arg(long)]
    pub stdin: bool,

    /// Print the invocation's log (where it ran, whether cached, timings) to stderr.
    #[arg(long)]
    pub logs: bool,

    /// Print how long each phase took to stderr.
    #[arg(long)]
    pub time: bool,

    /// Run even if a cached result exists (the new result is still recorded).
    #[arg(long)]
    pub no_cache: bool,

    /// The function (Lambda function, REAPI platform, or on this machine a label) to run
    /// on; part of the cache key.
    #[arg(value_name = "FUNCTION")]
    pub function: String,

    /// The command and its arguments.
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

const XARGS_HELP: &str = "\
Each ARG-TEMPLATE is a Go text/template, evaluated once per input line with:
  {{.Line}}            the line, without its newline
  {{.Idx}}             the line's index, from 0
  {{.I PATH}}          ship local file PATH to the job; expands to its remote path
  {{.O PATH}}          bring PATH back after the job; expands to its remote path
  {{.IO PATH}}         both
  {{.AsFile TEXT}}     ship a file holding TEXT; expands to its remote path
and Go's builtins (printf, index, len, eq, ...). A template that does not parse fails before
any job runs. .Input, .Output and .InputOutput are long spellings of .I, .O and .IO.

Example (the original llama's):
  ls -1 *.png | llama xargs -j 8 optipng optipng '{{.I .Line}}' -out '{{.O (printf \"optimized/%s\" .Line)}}'

Each job's stdout and stderr are printed whole, as the job finishes (-k: in input order),
never interleaved with another job's. Jobs go through the action cache: running the same
xargs again over unchanged inputs runs nothing. On a terminal a progress bar shows jobs
done, running, failed and cached.

Exit status:
  0        every job succeeded
  1-100    that many jobs failed
  101      more than 100 jobs failed
  125      llama itself failed before running jobs (bad template, missing -f file, ...)";

/// `llama xargs`.
#[derive(Debug, Args)]
pub struct XargsArgs {
    /// Jobs in flight at once (default: the executor's capacity; locally, `jobs`).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Ship a file or directory to every job (stored once); REMOTE default: LOCAL.
    #[arg(short = 'f', long = "file", value_name = "LOCAL[:REMOTE]")]
    pub files: Vec<String>,

    /// Ship this program of this machine (a name on PATH, or a path) with the command: it,
    /// its shared libraries and the loader travel as inputs and it runs through them, so the
    /// function needs no image with it. Repeatable. A script ships with its interpreter.
    #[arg(long, value_name = "PROG")]
    pub ship: Vec<String>,

    /// Do not ship the command's own program, which remote backends do by default
    /// (`ship_command`): the function's image has it.
    #[arg(long)]
    pub no_ship: bool,

    /// Print each job's invocation log (where it ran, whether cached, timings).
    #[arg(long)]
    pub logs: bool,

    /// Print jobs' output in input order rather than as they finish.
    #[arg(short = 'k', long = "keep-order")]
    pub keep_order: bool,

    /// Write one line per finished job to FILE (index, line, exit, seconds, cached),
    /// replacing it; +FILE appends instead, as GNU parallel does.
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<std::path::PathBuf>,

    /// Trace the jobs as build NAME (`llama trace`); default xargs-SECONDS, one build per
    /// run.
    #[arg(long, value_name = "NAME")]
    pub build_id: Option<String>,

    /// Retry a job up to N times when the infrastructure fails (never when the command
    /// itself exits non-zero); default 2 on remote backends, 0 on this machine.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Stop after failures, as GNU parallel: `now,fail=N` kills running jobs, `soon,fail=N`
    /// lets them finish; neither starts new jobs.
    #[arg(long, value_name = "now|soon,fail=N")]
    pub halt: Option<String>,

    /// Run jobs even if cached results exist (new results are still recorded).
    #[arg(long)]
    pub no_cache: bool,

    /// The function the jobs run on (on this machine: a label); part of the cache key.
    #[arg(value_name = "FUNCTION")]
    pub function: String,

    /// The command, as templates evaluated per input line.
    #[arg(value_name = "ARG-TEMPLATE", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `llama config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print shell assignments (llama_KEY='value'), as the original did.
    #[arg(long, conflicts_with = "json")]
    pub shell: bool,
    /// Print the settings as one JSON object.
    #[arg(long)]
    pub json: bool,
}
