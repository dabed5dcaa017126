//! Counters for every outcome of a compile, ccache-style: each has a stable name, a
//! description, and is incremented in one place per compile.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What happened to one compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache without running the compiler.
    Hit,
    /// Compiled, and the result recorded.
    Miss,
    /// Compiled, but the result could not be cached (the reason is counted too).
    Uncacheable,
    /// The compiler reported an error (never cached, never retried).
    CompileError,
    /// Handed back to run the real compiler directly (the reason is counted too).
    Local,
    /// llamacc's own machinery failed and the compiler ran directly instead.
    Error,
    /// Compiled by the remote backend, and the result recorded.
    Remote,
    /// The remote backend failed; compiled on this machine instead.
    Fallback,
    /// The remote backend failed and local fallback is off (`LLAMACC_LOCAL_FALLBACK=0`).
    RemoteError,
}

/// Why the daemon itself (not the argument parser) kept a compile out of the cache: each is
/// counted under its [`TrustReason::name`] among the reasons `llama stats` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustReason {
    /// An input's mtime or ctime was at or after the moment the compiler started: what the
    /// compiler read may not be what was hashed, so the result is delivered, not recorded.
    InputTooNew,
    /// An output path or a command-line input steps out of a symlinked directory with `..`:
    /// the kernel resolves it where a lexical reading would not, so the compiler runs
    /// directly.
    DotDotThroughSymlink,
    /// An output path names a directory that does not exist: the compiler reports it.
    UnresolvableOutput,
    /// `$PWD` names the working directory through a symlink, and the compiler writes that
    /// name into objects: a remote compiler cannot, so the compile stays here.
    LogicalDirectory,
}

impl TrustReason {
    /// The stable name counted in `llama stats` (`reasons` of `--json`).
    pub fn name(self) -> &'static str {
        match self {
            TrustReason::InputTooNew => "input-too-new",
            TrustReason::DotDotThroughSymlink => "dotdot-through-symlink",
            TrustReason::UnresolvableOutput => "unresolvable-output",
            TrustReason::LogicalDirectory => "logical-directory",
        }
    }
}

/// Each counter: (name in `llama stats --json`, description in `llama stats`).
const COUNTERS: &[(Outcome, &str, &str)] = &[
    (Outcome::Hit, "hits", "served from the cache"),
    (Outcome::Miss, "misses", "compiled and cached"),
    (
        Outcome::Uncacheable,
        "uncacheable",
        "compiled, result not cacheable",
    ),
    (
        Outcome::CompileError,
        "compile_errors",
        "compile errors (not cached)",
    ),
    (Outcome::Remote, "remote", "compiled remotely and cached"),
    (
        Outcome::Fallback,
        "remote_fallbacks",
        "remote failed, compiled here",
    ),
    (
        Outcome::RemoteError,
        "remote_errors",
        "remote failed, not compiled (no fallback)",
    ),
    (Outcome::Local, "local", "run by the real compiler directly"),
    (
        Outcome::Error,
        "errors",
        "llamacc errors (fell back to the compiler)",
    ),
];

/// A snapshot of the counters, as `llama stats --json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Every compile llamacc saw.
    pub compiles: u64,
    /// Counter name → count.
    pub counters: BTreeMap<String, u64>,
    /// Why compiles ran directly or could not be cached → count.
    pub reasons: BTreeMap<String, u64>,
    /// Compiler time the hits did not spend, in seconds.
    pub time_saved_secs: f64,
    /// What the remote backend consumed and cost (`invocations`, `gb_seconds`,
    /// `s3_requests`, `bytes_up`, `bytes_down`, `remote_cache_hits`, `dollars`); empty on
    /// this machine's backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost: BTreeMap<String, f64>,
}

/// How `llama stats` shows each cost entry: (name, label, decimals).
const COST_LINES: &[(&str, &str, usize)] = &[
    ("invocations", "remote invocations", 0),
    ("remote_cache_hits", "served by the remote action cache", 0),
    ("gb_seconds", "compute (GB-seconds)", 1),
    ("s3_requests", "object store requests", 0),
    ("bytes_up", "bytes uploaded", 0),
    ("bytes_down", "bytes downloaded", 0),
    ("calls", "calls to the REAPI server", 0),
    ("dollars", "cost at list prices ($)", 4),
];

/// The live counters of a daemon.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<StatsSnapshot>,
}

impl Stats {
    /// Starts from a saved snapshot.
    pub fn from_snapshot(snapshot: StatsSnapshot) -> Stats {
        Stats {
            inner: Mutex::new(snapshot),
        }
    }

    /// Records one compile's outcome, with its reason when it has one, and the compiler
    /// time a hit saved.
    pub fn record(&self, outcome: Outcome, reason: Option<&str>, saved_secs: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.compiles += 1;
        let name = counter_name(outcome);
        *s.counters.entry(name.to_string()).or_default() += 1;
        if let Some(reason) = reason {
            *s.reasons.entry(reason.to_string()).or_default() += 1;
        }
        s.time_saved_secs += saved_secs.max(0.0);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = StatsSnapshot::default();
    }
}

fn counter_name(outcome: Outcome) -> &'static str {
    COUNTERS
        .iter()
        .find(|(o, _, _)| *o == outcome)
        .map(|(_, name, _)| *name)
        .unwrap_or("unknown")
}

impl Outcome {
    /// What it means, as `llama stats` and `LLAMACC_VERBOSE` say it.
    pub fn description(self) -> &'static str {
        COUNTERS
            .iter()
            .find(|(o, _, _)| *o == self)
            .map(|(_, _, d)| *d)
            .unwrap_or("unknown")
    }
}

impl StatsSnapshot {
    /// A counter's value by name.
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The human-readable report of `llama stats`.
    pub fn report(&self) -> String {
        let mut out = format!("{:<44} {:>8}\n", "compiles", self.compiles);
        for (_, name, description) in COUNTERS {
            out.push_str(&format!("  {:<42} {:>8}\n", description, self.get(name)));
        }
        if !self.reasons.is_empty() {
            out.push_str("why compiles ran directly or were not cached:\n");
            for (reason, n) in &self.reasons {
                out.push_str(&format!("  {reason:<42} {n:>8}\n"));
            }
        }
        if !self.cost.is_empty() {
            out.push_str("remote backend:\n");
            // Each backend fills its own entries (a REAPI server bills no dollars, Lambda
            // takes no REAPI calls): the others stay out of the report.
            for (name, label, decimals) in COST_LINES {
                let v = self.cost.get(*name).copied().unwrap_or(0.0);
                if v == 0.0 && *name != "invocations" {
                    continue;
                }
                out.push_str(&format!("  {label:<42} {v:>8.decimals$}\n"));
            }
        }
        let cacheable = self.get("hits") + self.get("misses") + self.get("remote");
        if cacheable > 0 {
            out.push_str(&format!(
                "{:<44} {:>7.1}%\n",
                "hit rate",
                100.0 * self.get("hits") as f64 / cacheable as f64
            ));
        }
        out.push_str(&format!(
            "{:<44} {:>7.1}s\n",
            "compiler time saved", self.time_saved_secs
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_one_counter() {
        for o in [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Uncacheable,
            Outcome::CompileError,
            Outcome::Local,
            Outcome::Error,
            Outcome::Remote,
            Outcome::Fallback,
            Outcome::RemoteError,
        ] {
            assert_eq!(COUNTERS.iter().filter(|(x, _, _)| *x == o).count(), 1);
        }
    }

    #[test]
    fn record_and_report() {
        let s = Stats::default();
        s.record(Outcome::Hit, None, 0.5);
        s.record(Outcome::Local, Some("link"), 0.0);
        let snap = s.snapshot();
        assert_eq!(snap.compiles, 2);
        assert_eq!(snap.get("hits"), 1);
        assert!(snap.report().contains("link"));
    }

    #[test]
    fn trust_reasons_have_distinct_names() {
        let all = [
            TrustReason::InputTooNew,
            TrustReason::DotDotThroughSymlink,
            TrustReason::UnresolvableOutput,
            TrustReason::LogicalDirectory,
        ];
        let mut names: Vec<_> = all.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
