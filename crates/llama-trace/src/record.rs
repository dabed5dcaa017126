//! What one action's trace holds.

use serde::{Deserialize, Serialize};

/// A step of an action, in the order an action goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for a local slot (the daemon's or xargs' concurrency limit).
    Wait,
    /// Finding what the action reads (llamacc's include scan or `-M`).
    Scan,
    /// Computing the key and looking it up in the cache.
    Lookup,
    /// Sending inputs to the remote backend.
    Upload,
    /// Waiting for a remote worker.
    Queue,
    /// The worker fetching inputs.
    Fetch,
    /// The command running (here or on a worker).
    Run,
    /// The worker storing outputs.
    Store,
    /// Bringing outputs back.
    Download,
    /// Writing outputs where the user wants them.
    Deliver,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 10] = [
        Phase::Wait,
        Phase::Scan,
        Phase::Lookup,
        Phase::Upload,
        Phase::Queue,
        Phase::Fetch,
        Phase::Run,
        Phase::Store,
        Phase::Download,
        Phase::Deliver,
    ];

    /// The name used in reports and exports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Wait => "wait",
            Phase::Scan => "scan",
            Phase::Lookup => "lookup",
            Phase::Upload => "upload",
            Phase::Queue => "queue",
            Phase::Fetch => "fetch",
            Phase::Run => "run",
            Phase::Store => "store",
            Phase::Download => "download",
            Phase::Deliver => "deliver",
        }
    }

    /// Work the client's processor does (as opposed to waiting, the network or a worker).
    pub fn client_cpu(self) -> bool {
        matches!(self, Phase::Scan | Phase::Lookup | Phase::Deliver)
    }
}

/// How an action was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// From the cache.
    Hit,
    /// Run here and cached.
    Miss,
    /// Run on a remote backend and cached.
    Remote,
    /// Run here without the cache (a link, an uncacheable compile).
    Direct,
    /// The command failed, or llama did.
    Error,
}

impl Status {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Status::Hit => "hit",
            Status::Miss => "miss",
            Status::Remote => "remote",
            Status::Direct => "direct",
            Status::Error => "error",
        }
    }
}

/// What produced an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A llamacc compile.
    Compile,
    /// `llama invoke`.
    Invoke,
    /// One job of `llama xargs`.
    Xargs,
}

/// One phase's time: microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Which phase.
    pub phase: Phase,
    /// When it began.
    pub start_us: u64,
    /// When it ended (not before `start_us`).
    pub end_us: u64,
}

impl Span {
    /// Its length.
    pub fn us(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// One action of a build, as traced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// What produced it.
    pub kind: Kind,
    /// What it was: the source compiled, or the command.
    pub label: String,
    /// When the client asked (µs since the epoch).
    pub arrived_us: u64,
    /// When it was answered.
    pub finished_us: u64,
    /// Its phases, in order.
    pub phases: Vec<Span>,
    /// How it was answered.
    pub status: Status,
    /// The worker that ran it, when a backend says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Bytes sent to the backend.
    #[serde(default)]
    pub bytes_up: u64,
    /// Bytes brought back.
    #[serde(default)]
    pub bytes_down: u64,
    /// Its cost at list prices, in dollars.
    #[serde(default)]
    pub dollars: f64,
}

impl Action {
    /// An action that spent all its time in one `run` phase (a job the engine uploaded,
    /// ran and downloaded in one step).
    pub fn one_run(
        kind: Kind,
        label: String,
        arrived_us: u64,
        finished_us: u64,
        status: Status,
    ) -> Action {
        Action {
            kind,
            label,
            arrived_us,
            finished_us,
            phases: vec![Span {
                phase: Phase::Run,
                start_us: arrived_us,
                end_us: finished_us,
            }],
            status,
            worker: None,
            bytes_up: 0,
            bytes_down: 0,
            dollars: 0.0,
        }
    }

    /// From arrival to answer.
    pub fn us(&self) -> u64 {
        self.finished_us.saturating_sub(self.arrived_us)
    }

    /// Time spent in `phase`.
    pub fn phase_us(&self, phase: Phase) -> u64 {
        self.phases
            .iter()
            .filter(|s| s.phase == phase)
            .map(Span::us)
            .sum()
    }

    /// Whether the trace is self-consistent: phases inside the action, in order, none
    /// ending before it starts. A trace read back from disk is checked before it is used.
    pub fn is_consistent(&self) -> bool {
        self.arrived_us <= self.finished_us
            && self.phases.iter().all(|s| {
                s.start_us <= s.end_us
                    && s.start_us >= self.arrived_us
                    && s.end_us <= self.finished_us
            })
            && self.phases.windows(2).all(|w| w[0].end_us <= w[1].start_us)
            && self.dollars.is_finite()
            && self.dollars >= 0.0
    }
}
