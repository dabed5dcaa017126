//! What a build's time went to: wall time, concurrency over time, time by phase, the
//! longest actions, cache hits, bytes, cost, and the serial stretches where nothing ran.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::record::{Action, Phase, Status};

/// A stretch with nothing in flight at least this long is reported (a link, a code
/// generator, configure).
pub const SERIAL_GAP_US: u64 = 500_000;

/// How many of the longest actions are named.
const LONGEST: usize = 10;

/// A build's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The build.
    pub build: String,
    /// First arrival to last answer, in seconds.
    pub wall_s: f64,
    /// Actions traced.
    pub actions: usize,
    /// Actions by how they were answered.
    pub by_status: BTreeMap<&'static str, usize>,
    /// Mean actions in flight over the wall time.
    pub mean_concurrency: f64,
    /// Most actions in flight at once.
    pub max_concurrency: usize,
    /// Actions in flight, sampled each second from the first arrival.
    pub concurrency_per_second: Vec<f64>,
    /// Seconds spent in each phase, summed over actions.
    pub phase_s: BTreeMap<&'static str, f64>,
    /// The longest actions: label and seconds.
    pub longest: Vec<(String, f64)>,
    /// Stretches with nothing in flight of at least [`SERIAL_GAP_US`]: start and end, in
    /// seconds from the first arrival.
    pub serial: Vec<(f64, f64)>,
    /// Bytes sent to and brought back from the backend.
    pub bytes_up: u64,
    /// Bytes brought back.
    pub bytes_down: u64,
    /// Cost at list prices.
    pub dollars: f64,
    /// Lines of the trace that were skipped as damaged.
    pub skipped: usize,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The report of `actions`.
pub fn report(build: &str, actions: &[Action], skipped: usize) -> Report {
    let start = actions.iter().map(|a| a.arrived_us).min().unwrap_or(0);
    let end = actions.iter().map(|a| a.finished_us).max().unwrap_or(start);
    let wall = end - start;
    let mut by_status = BTreeMap::new();
    let mut phase_us: BTreeMap<Phase, u64> = BTreeMap::new();
    for a in actions {
        *by_status.entry(a.status.name()).or_insert(0) += 1;
        for s in &a.phases {
            *phase_us.entry(s.phase).or_insert(0) += s.us();
        }
    }
    let busy: u64 = actions.iter().map(Action::us).sum();
    let mut longest: Vec<(String, f64)> = actions
        .iter()
        .map(|a| (a.label.clone(), secs(a.us())))
        .collect();
    longest.sort_by(|a, b| b.1.total_cmp(&a.1));
    longest.truncate(LONGEST);
    let (max_concurrency, serial) = sweep(actions, start);
    Report {
        build: build.to_string(),
        wall_s: secs(wall),
        actions: actions.len(),
        by_status,
        mean_concurrency: if wall == 0 {
            0.0
        } else {
            busy as f64 / wall as f64
        },
        max_concurrency,
        concurrency_per_second: per_second(actions, start, end),
        phase_s: phase_us
            .into_iter()
            .map(|(p, us)| (p.name(), secs(us)))
            .collect(),
        longest,
        serial,
        bytes_up: actions.iter().map(|a| a.bytes_up).sum(),
        bytes_down: actions.iter().map(|a| a.bytes_down).sum(),
        dollars: actions.iter().map(|a| a.dollars).sum(),
        skipped,
    }
}

/// The most actions in flight, and the stretches with none.
fn sweep(actions: &[Action], start: u64) -> (usize, Vec<(f64, f64)>) {
    let mut edges: Vec<(u64, i64)> = actions
        .iter()
        .flat_map(|a| [(a.arrived_us, 1), (a.finished_us, -1)])
        .collect();
    // Ends before starts at the same instant: back-to-back actions are not concurrent.
    edges.sort();
    let (mut now, mut max, mut idle_since) = (0i64, 0usize, None);
    let mut serial = Vec::new();
    for (t, delta) in edges {
        now += delta;
        max = max.max(now as usize);
        match (now, idle_since) {
            (0, _) => idle_since = Some(t),
            (_, Some(since)) => {
                if t - since >= SERIAL_GAP_US {
                    serial.push((secs(since - start), secs(t - start)));
                }
                idle_since = None;
            }
            _ => {}
        }
    }
    (max, serial)
}

/// Mean actions in flight during each second.
fn per_second(actions: &[Action], start: u64, end: u64) -> Vec<f64> {
    let seconds = (end - start).div_ceil(1_000_000) as usize;
    let mut busy = vec![0u64; seconds];
    for a in actions {
        let (mut t, stop) = (a.arrived_us - start, a.finished_us - start);
        while t < stop {
            let second = (t / 1_000_000) as usize;
            let next = ((second as u64 + 1) * 1_000_000).min(stop);
            if let Some(b) = busy.get_mut(second) {
                *b += next - t;
            }
            t = next;
        }
    }
    busy.into_iter().map(|us| us as f64 / 1e6).collect()
}

impl Report {
    /// The report as a terminal table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "build {}", self.build);
        let _ = writeln!(out, "  wall time            {:>10.2} s", self.wall_s);
        let _ = writeln!(out, "  actions              {:>10}", self.actions);
        for (status, n) in &self.by_status {
            let _ = writeln!(out, "    {status:<18} {n:>10}");
        }
        let _ = writeln!(
            out,
            "  concurrency          {:>10.1} mean, {} at most",
            self.mean_concurrency, self.max_concurrency
        );
        let _ = writeln!(out, "time by phase (summed over actions)");
        for (phase, s) in &self.phase_s {
            let _ = writeln!(out, "    {phase:<18} {s:>10.2} s");
        }
        if !self.serial.is_empty() {
            let _ = writeln!(out, "serial stretches (nothing traced in flight)");
            for (a, b) in &self.serial {
                let _ = writeln!(out, "    {a:>8.2} s to {b:>8.2} s  ({:.2} s)", b - a);
            }
        }
        let _ = writeln!(out, "longest actions");
        for (label, s) in &self.longest {
            let _ = writeln!(out, "    {s:>8.2} s  {label}");
        }
        let _ = writeln!(
            out,
            "bytes up {}, down {}; cost at list prices ${:.4}",
            self.bytes_up, self.bytes_down, self.dollars
        );
        if self.skipped > 0 {
            let _ = writeln!(out, "({} damaged trace lines skipped)", self.skipped);
        }
        out
    }

    /// Whether the phase totals are the sums of the actions' own phases (they are by
    /// construction; kept as a check a test can make against the raw trace).
    pub fn phase_total(&self, phase: Phase) -> f64 {
        self.phase_s.get(phase.name()).copied().unwrap_or(0.0)
    }

    /// Actions answered from the cache.
    pub fn hits(&self) -> usize {
        self.by_status.get(Status::Hit.name()).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::action;

    #[test]
    fn wall_concurrency_and_serial_stretches() {
        let actions = [
            action("a", 0, 1_000_000),
            action("b", 500_000, 1_000_000),
            // Nothing from 1 s to 2.5 s: a link, say.
            action("c", 2_500_000, 3_000_000),
        ];
        let r = report("x", &actions, 0);
        assert!((r.wall_s - 3.0).abs() < 1e-9);
        assert_eq!(r.max_concurrency, 2);
        assert!((r.mean_concurrency - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.serial, [(1.0, 2.5)]);
        assert_eq!(r.concurrency_per_second, [1.5, 0.0, 0.5]);
        assert!((r.phase_total(Phase::Run) - 2.0).abs() < 1e-9);
        assert!(r.text().contains("wall time"));
    }
}
