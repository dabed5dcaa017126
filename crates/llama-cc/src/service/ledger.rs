//! What the daemon counts and has said: the counters, what the remote backend consumed
//! since they were zeroed, and the warnings given once per daemon.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use llama_exec::Engine;

use crate::settings::Settings;
use crate::stats::{Stats, StatsSnapshot, cost};

/// The counters and the cost ledger of a daemon.
pub(super) struct Ledger {
    /// A counter for every outcome.
    pub(super) stats: Arc<Stats>,
    /// The remote executor's usage when the counters were last zeroed.
    cost_offset: Mutex<BTreeMap<String, f64>>,
    /// Unknown `LLAMACC_*` variables already reported.
    warned: Mutex<HashSet<String>>,
}

impl Ledger {
    pub(super) fn new(stats: Arc<Stats>) -> Ledger {
        Ledger {
            stats,
            cost_offset: Mutex::new(BTreeMap::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The counters, with what `remote` consumed since they were zeroed.
    pub(super) fn snapshot(&self, remote: Option<&Engine>) -> StatsSnapshot {
        let mut snapshot = self.stats.snapshot();
        let offset = self.cost_offset.lock().unwrap_or_else(|p| p.into_inner());
        for (name, value) in remote_usage(remote) {
            *snapshot.cost.entry(name.to_string()).or_default() +=
                value - offset.get(name).copied().unwrap_or(0.0);
        }
        snapshot
    }

    /// Zeroes the counters, `remote`'s cost among them.
    pub(super) fn reset(&self, remote: Option<&Engine>) {
        self.stats.reset();
        let mut offset = self.cost_offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset = remote_usage(remote)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    }

    /// True the first time `what` is said in this daemon's life.
    pub(super) fn say_once(&self, what: &str) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        warned.insert(what.to_string())
    }

    /// Unknown `LLAMACC_*` variables, each reported once per daemon.
    pub(super) fn unknown_variable_notes(&self, settings: &Settings) -> Vec<String> {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        settings
            .unknown
            .iter()
            .filter(|v| warned.insert((*v).clone()))
            .map(|v| format!("llamacc: warning: unknown variable {v} ignored (`llama help llamacc` lists the LLAMACC_* variables)"))
            .collect()
    }
}

/// What the remote executor consumed so far, by [`cost`] name.
fn remote_usage(remote: Option<&Engine>) -> Vec<(&'static str, f64)> {
    let Some(u) = remote.and_then(Engine::usage) else {
        return Vec::new();
    };
    let mut usage = vec![
        (cost::INVOCATIONS, u.invocations as f64),
        (cost::REMOTE_CACHE_HITS, u.remote_cache_hits as f64),
        (cost::GB_SECONDS, u.gb_seconds),
        (cost::S3_REQUESTS, u.s3_requests() as f64),
        (cost::BYTES_UP, u.bytes_up as f64),
        (cost::BYTES_DOWN, u.bytes_down as f64),
        (cost::CALLS, u.calls as f64),
    ];
    // A backend with no known price (a REAPI cluster) has no `dollars` entry at all: a
    // script reading `llama stats --json` must not take a made-up figure for a bill.
    usage.extend(u.dollars().map(|d| (cost::DOLLARS, d)));
    usage
}
