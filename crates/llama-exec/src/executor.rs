//! The contract between the engine and the places actions run.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use llama_core::{PreparedAction, StoreError, reapi};

use crate::usage::Usage;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It ran past its deadline and was killed.
    TimedOut(Duration),
}

impl Termination {
    /// The exit status a shell would report: the code, or 128 + the signal number.
    pub fn shell_status(&self) -> i32 {
        match self {
            Termination::Exited(code) => *code,
            Termination::Signaled(sig) => 128 + sig,
            // As timeout(1) does.
            Termination::TimedOut(_) => 124,
        }
    }

    /// True when the command exited with 0.
    pub fn success(&self) -> bool {
        *self == Termination::Exited(0)
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(code) => write!(f, "exited with status {code}"),
            Termination::Signaled(sig) => match signal_name(*sig) {
                Some(name) => write!(f, "was killed by signal {sig} ({name})"),
                None => write!(f, "was killed by signal {sig}"),
            },
            Termination::TimedOut(after) => write!(
                f,
                "timed out after {} and was killed (raise action_timeout / LLAMA_ACTION_TIMEOUT if it needs longer)",
                humanize(*after)
            ),
        }
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{}.{:01}s", s, d.subsec_millis() / 100),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Names of the signals a command is commonly killed by.
const SIGNAL_NAMES: &[(i32, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGTRAP, "SIGTRAP"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGKILL, "SIGKILL"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
];

/// The conventional name of a signal, if it is a common one.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    SIGNAL_NAMES
        .iter()
        .find(|(n, _)| *n == sig)
        .map(|(_, name)| *name)
}

/// What an executor returns: the result, with every output already in the local store.
#[derive(Debug, Clone)]
pub struct ExecOutcome {
    /// The REAPI result (exit code, outputs, stdout/stderr digests, timings).
    pub result: reapi::ActionResult,
    /// How the command ended, more precisely than an exit code says.
    pub termination: Termination,
    /// True when the executor served an earlier result from its own (remote) action cache
    /// instead of running the command.
    pub cached: bool,
}

/// Failures of the infrastructure, as opposed to a command's own non-zero exit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The action's scratch directory could not be prepared or read back.
    #[error("preparing or collecting the action in {path}: {error}")]
    Scratch {
        /// The path concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The action is malformed (an executor received something no front end should build).
    #[error("invalid action: {0}")]
    InvalidAction(String),
    /// A blocking task failed to complete.
    #[error("internal task failed: {0}")]
    Task(String),
    /// A result from a cache or a remote executor is malformed, points outside the outputs
    /// or exceeds a limit: nothing was written for it.
    #[error(
        "refused a result from the {from}: {why}; nothing was written (a faulty or hostile server or cache produced it)"
    )]
    Refused {
        /// Where it came from ("local action cache", "reapi server at ...", ...).
        from: String,
        /// What is wrong with it.
        why: llama_core::Refusal,
    },
    /// A remote executor or its object store failed: the function errored or crashed, the
    /// service refused or throttled beyond the retries, an answer did not decode. The
    /// command's fate is unknown; it is not the command's own failure.
    #[error("{executor}: {message}")]
    Remote {
        /// The executor's name ("lambda").
        executor: &'static str,
        /// What failed, naming the function, bucket or endpoint, and what to do.
        message: String,
    },
}

/// Something that runs actions.
#[async_trait]
pub trait Executor: Send + Sync {
    /// A short name for messages ("local", "lambda", "reapi").
    fn name(&self) -> &'static str;

    /// Runs `action` and returns its outcome with every output in the local store.
    ///
    /// A command that fails is an `Ok` outcome with its termination; `Err` means the
    /// infrastructure failed and the command's fate is unknown.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the command (its whole process group) and discards its
    /// scratch directory; nothing is recorded.
    async fn execute(&self, action: &PreparedAction) -> Result<ExecOutcome, ExecError>;

    /// What the executor has consumed so far (invocations, compute, storage requests) and
    /// what it costs, for executors that are billed; `None` for the others.
    fn usage(&self) -> Option<Usage> {
        None
    }

    /// What the executor has to tell the user since it was last asked, each notice raised
    /// once per executor (e.g. "lost the connection to the server; resuming"): the llamacc
    /// daemon, whose log nobody reads during a build, passes them on to the build's stderr.
    /// Each is logged as a warning too, which `llama invoke` and `xargs` print.
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
}
