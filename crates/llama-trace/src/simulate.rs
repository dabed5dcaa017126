//! Replays a traced build under other resources: more or fewer workers, another client,
//! another network, a warm or cold cache.
//!
//! # The model
//!
//! Each action keeps the costs its trace measured: the client's work before it runs (scan
//! and lookup), the run itself, the client's work after (delivery), and the bytes it moved.
//! Under the new resources an action goes through stages, each waiting for its resource:
//! a client core for the work before; then, run remotely, the link for its upload, a worker
//! for the round trip, a cold start on a worker's first action and the run (divided by the
//! worker's speed), the link again for its download; run here, a local slot and a client
//! core for the run; and a client core for the delivery. A hit (`--cache warm`) only looks
//! up and delivers.
//!
//! Which action waited for which is inferred from the trace: an action that arrived after
//! others finished was released by the last of them to finish, and arrives again that long
//! after it (so a link or a code generator between them keeps its length); one that
//! arrived before any finished is ready at its recorded time. That holds when the build
//! was recorded with more jobs than it could run at once (`make -j` high), so that arrivals
//! show when actions became ready rather than when a slot came free.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use serde::Serialize;

use crate::record::{Action, Phase, Status};

/// The resources a build is replayed under.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// Actions run at once: remote workers, or local slots.
    pub workers: usize,
    /// Actions the build tool keeps in flight (`make -jJ`); `None`: as the trace shows.
    pub jobs: Option<usize>,
    /// Whether actions run on remote workers (else on the client's cores).
    pub remote: bool,
    /// The client's processor cores.
    pub client_cores: usize,
    /// A remote action's round trip, in milliseconds.
    pub rtt_ms: f64,
    /// A worker's first action's extra start-up, in milliseconds.
    pub cold_start_ms: f64,
    /// How much faster a worker runs an action than the trace's machine did.
    pub worker_speed: f64,
    /// How much faster the client's cores are than the trace's machine's: its own work and,
    /// run here, the actions.
    pub client_speed: f64,
    /// The client's CPU per action in place of what the trace recorded (lookup, scan,
    /// delivery), in milliseconds: e.g. a remote build's whole per-compile client cost,
    /// measured, when replaying a build traced on the local executor, which scanned nothing.
    pub client_ms: Option<f64>,
    /// The client's link, in MB/s (`None`: not a limit).
    pub bandwidth_mbs: Option<f64>,
    /// Every action a hit (warm) or every action run (cold).
    pub warm: bool,
    /// A Lambda function's memory, for the cost.
    pub memory_mb: f64,
}

/// Lambda's list prices (us-east-1, x86): per GB-second and per request.
pub const LAMBDA_GB_SECOND: f64 = 0.000_016_666_7;
/// Per request.
pub const LAMBDA_REQUEST: f64 = 0.000_000_2;

/// What the replay predicts.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Workers (or slots).
    pub workers: usize,
    /// Predicted wall time, in seconds.
    pub wall_s: f64,
    /// What limited it most.
    pub bottleneck: &'static str,
    /// Share of the wall time each resource was busy (0 to 1, per unit of capacity).
    pub client_busy: f64,
    /// Workers' share.
    pub workers_busy: f64,
    /// The link's share.
    pub link_busy: f64,
    /// Cost at Lambda's list price (remote runs only).
    pub dollars: f64,
}

/// Why a trace cannot be replayed so.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimulateError {
    /// Nothing to replay.
    #[error("the build has no actions to replay")]
    Empty,
    /// A cold replay needs every action's run time.
    #[error(
        "{0} actions of this build were cache hits, so their run time is unknown: replay a build recorded on an empty cache for --cache cold"
    )]
    HitsInColdReplay(usize),
    /// Zero of something that must be there.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A number out of its range.
    #[error(
        "{0} must be a finite number, not negative, and above zero for speeds, memory and bandwidth"
    )]
    BadNumber(&'static str),
}

/// An action's measured costs, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Cost {
    before: u64,
    run: u64,
    /// Latency of a remote action that occupies no resource modelled here: the client's
    /// side of a recorded round trip (calls, the backend's scheduling).
    latency: u64,
    after: u64,
    up: u64,
    down: u64,
}

/// What a stage of an action waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Res {
    Client,
    Link,
    Workers,
    /// A local slot running the command on one of the client's cores.
    Local,
    /// Time that passes without holding anything.
    Delay,
}

/// A resource of some capacity, served first come, first served.
struct Resource {
    capacity: usize,
    in_use: usize,
    waiting: VecDeque<(usize, usize)>,
    busy: u64,
    /// Uses started so far: each slot's first use pays the cold start.
    started: usize,
    cold: u64,
}

impl Resource {
    fn new(capacity: usize, cold: u64) -> Resource {
        Resource {
            capacity,
            in_use: 0,
            waiting: VecDeque::new(),
            busy: 0,
            started: 0,
            cold,
        }
    }

    /// Starts a use of `dur` now; how long it really takes (a cold start added).
    fn start(&mut self, dur: u64) -> u64 {
        self.in_use += 1;
        let extra = if self.started < self.capacity {
            self.cold
        } else {
            0
        };
        self.started += 1;
        self.busy += dur + extra;
        dur + extra
    }
}

/// An event of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Stage `.1` of action `.0` finished.
    Done(usize, usize),
    /// Action `.0` is ready to start.
    Ready(usize),
}

/// The replay's state: events in time order, resources served first come, first served.
struct Replay<'a> {
    stages: Vec<Vec<(Res, u64)>>,
    released: Vec<Vec<usize>>,
    lag: &'a [u64],
    resources: BTreeMap<Res, Resource>,
    events: BinaryHeap<Reverse<(u64, Event)>>,
    /// The build tool's limit on actions in flight, those in flight, and those ready but
    /// held back by it.
    jobs: usize,
    in_flight: usize,
    held: VecDeque<usize>,
    wall: u64,
    billed: u64,
    runs: u64,
}

impl Replay<'_> {
    /// Moves action `i` to stage `s` at time `t`: starts the stage, queues it for its
    /// resource, or finishes the action and readies those it released.
    fn request(&mut self, i: usize, s: usize, t: u64) {
        let Some(&(res, dur)) = self.stages[i].get(s) else {
            self.wall = self.wall.max(t);
            self.in_flight -= 1;
            if let Some(next) = self.held.pop_front() {
                self.in_flight += 1;
                self.request(next, 0, t);
            }
            for &next in &self.released[i] {
                self.events
                    .push(Reverse((t + self.lag[next], Event::Ready(next))));
            }
            return;
        };
        if dur == 0 {
            return self.request(i, s + 1, t);
        }
        if res == Res::Local {
            // A run here holds a slot (the daemon's `jobs`) and, while it runs, one of the
            // client's cores, which the build tool's own work needs too.
            let Some(slots) = self.resources.get_mut(&Res::Local) else {
                return self.request(i, s + 1, t + dur);
            };
            if slots.in_use < slots.capacity {
                slots.in_use += 1;
                slots.busy += dur;
                self.take_core(i, s, t);
            } else {
                slots.waiting.push_back((i, s));
            }
            return;
        }
        let Some(r) = self.resources.get_mut(&res) else {
            return self.request(i, s + 1, t + dur);
        };
        if r.in_use < r.capacity {
            let took = r.start(dur);
            self.count(res, took);
            self.events.push(Reverse((t + took, Event::Done(i, s))));
        } else {
            r.waiting.push_back((i, s));
        }
    }

    /// Starts stage `s` of action `i` on a client core, or queues it for one.
    fn take_core(&mut self, i: usize, s: usize, t: u64) {
        let dur = self.stages[i][s].1;
        let Some(cores) = self.resources.get_mut(&Res::Client) else {
            return;
        };
        if cores.in_use < cores.capacity {
            let took = cores.start(dur);
            self.events.push(Reverse((t + took, Event::Done(i, s))));
        } else {
            cores.waiting.push_back((i, s));
        }
    }

    /// Frees a unit of `res` at `t` and starts its next waiter.
    fn release(&mut self, res: Res, t: u64) {
        let Some(r) = self.resources.get_mut(&res) else {
            return;
        };
        r.in_use -= 1;
        let Some((j, sj)) = r.waiting.pop_front() else {
            return;
        };
        if res == Res::Local {
            // A waiter for a slot now has one; it still needs a core.
            r.in_use += 1;
            r.busy += self.stages[j][sj].1;
            return self.take_core(j, sj, t);
        }
        let took = r.start(self.stages[j][sj].1);
        self.count(res, took);
        self.events.push(Reverse((t + took, Event::Done(j, sj))));
    }

    /// Counts a worker's use for the bill.
    fn count(&mut self, res: Res, took: u64) {
        if res == Res::Workers {
            self.billed += took;
            self.runs += 1;
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((t, event))) = self.events.pop() {
            match event {
                Event::Ready(i) if self.in_flight >= self.jobs => self.held.push_back(i),
                Event::Ready(i) => {
                    self.in_flight += 1;
                    self.request(i, 0, t);
                }
                Event::Done(i, s) => {
                    let res = self.stages[i][s].0;
                    if res == Res::Local {
                        self.release(Res::Client, t);
                    }
                    self.release(res, t);
                    self.request(i, s + 1, t);
                }
            }
        }
    }
}

/// Replays `actions` under `res`.
pub fn simulate(actions: &[Action], res: &Resources) -> Result<Prediction, SimulateError> {
    if actions.is_empty() {
        return Err(SimulateError::Empty);
    }
    if res.workers == 0 {
        return Err(SimulateError::Zero("--workers"));
    }
    if res.client_cores == 0 {
        return Err(SimulateError::Zero("--client-cores"));
    }
    // (flag, value, whether zero is meaningful)
    let numbers = [
        ("--worker-speed", res.worker_speed, false),
        ("--client-speed", res.client_speed, false),
        ("--memory", res.memory_mb, false),
        ("--bandwidth", res.bandwidth_mbs.unwrap_or(1.0), false),
        ("--rtt", res.rtt_ms, true),
        ("--cold-start", res.cold_start_ms, true),
        ("--client-ms", res.client_ms.unwrap_or(0.0), true),
    ];
    for (flag, value, zero_ok) in numbers {
        if !value.is_finite() || value < 0.0 || (value == 0.0 && !zero_ok) {
            return Err(SimulateError::BadNumber(flag));
        }
    }
    let mut order: Vec<usize> = (0..actions.len()).collect();
    order.sort_by_key(|&i| (actions[i].arrived_us, actions[i].finished_us));
    let actions: Vec<&Action> = order.iter().map(|&i| &actions[i]).collect();
    let hits = actions.iter().filter(|a| a.status == Status::Hit).count();
    if !res.warm && hits > 0 {
        return Err(SimulateError::HitsInColdReplay(hits));
    }
    let (release, lag) = releases(&actions);
    let mut released: Vec<Vec<usize>> = vec![Vec::new(); actions.len()];
    for (i, r) in release.iter().enumerate() {
        if let Some(r) = r {
            released[*r].push(i);
        }
    }
    let rtt = (res.rtt_ms * 1e3) as u64;
    let cold = (res.cold_start_ms * 1e3) as u64;
    let resources = [
        (Res::Client, Resource::new(res.client_cores, 0)),
        (Res::Link, Resource::new(1, 0)),
        (Res::Workers, Resource::new(res.workers, cold)),
        (Res::Local, Resource::new(res.workers, 0)),
    ]
    .into_iter()
    .collect();
    let start = actions[0].arrived_us;
    let mut replay = Replay {
        stages: actions
            .iter()
            .map(|a| stages(cost(a, res), res, rtt))
            .collect(),
        released,
        lag: &lag,
        resources,
        events: (0..actions.len())
            .filter(|&i| release[i].is_none())
            .map(|i| Reverse((actions[i].arrived_us - start, Event::Ready(i))))
            .collect(),
        wall: 0,
        billed: 0,
        runs: 0,
        jobs: res.jobs.unwrap_or(usize::MAX).max(1),
        in_flight: 0,
        held: VecDeque::new(),
    };
    replay.run();
    Ok(prediction(&replay, res))
}

/// The stages of an action under `res`, each with the resource it waits for.
fn stages(c: Cost, res: &Resources, rtt: u64) -> Vec<(Res, u64)> {
    match (res.warm, res.remote) {
        (true, _) => vec![(Res::Client, c.before), (Res::Client, c.after)],
        (false, true) => vec![
            (Res::Client, c.before),
            (Res::Link, c.up),
            (Res::Delay, c.latency),
            (Res::Workers, rtt + c.run),
            (Res::Link, c.down),
            (Res::Client, c.after),
        ],
        (false, false) => vec![
            (Res::Client, c.before),
            (Res::Local, c.run),
            (Res::Client, c.after),
        ],
    }
}

/// The prediction from a finished replay: wall time, what was busiest, the cost.
fn prediction(replay: &Replay<'_>, res: &Resources) -> Prediction {
    let wall = replay.wall.max(1) as f64;
    let share = |r: Res| {
        let r = &replay.resources[&r];
        r.busy as f64 / (wall * r.capacity as f64)
    };
    // Local runs were on the client's cores too.
    let client_busy = share(Res::Client);
    let workers_busy = share(if res.remote { Res::Workers } else { Res::Local });
    let link_busy = share(Res::Link);
    let bottleneck = [
        (client_busy, "client CPU"),
        (
            workers_busy,
            if res.remote { "workers" } else { "local slots" },
        ),
        (link_busy, "upload bandwidth"),
    ]
    .into_iter()
    .filter(|(busy, _)| *busy >= 0.5)
    .max_by(|a, b| a.0.total_cmp(&b.0))
    .map_or(
        "the build's own order (serial stretches, dependencies)",
        |(_, n)| n,
    );
    let dollars = replay.runs as f64 * LAMBDA_REQUEST
        + replay.billed as f64 / 1e6 * res.memory_mb / 1024.0 * LAMBDA_GB_SECOND;
    Prediction {
        workers: res.workers,
        wall_s: replay.wall as f64 / 1e6,
        bottleneck,
        client_busy,
        workers_busy,
        link_busy,
        dollars,
    }
}

/// For each action (in arrival order), the one whose end released it, and how long after.
fn releases(actions: &[&Action]) -> (Vec<Option<usize>>, Vec<u64>) {
    let mut by_end: Vec<usize> = (0..actions.len()).collect();
    by_end.sort_by_key(|&i| actions[i].finished_us);
    let mut release = vec![None; actions.len()];
    let mut lag = vec![0; actions.len()];
    let mut k = 0;
    let mut last: Option<usize> = None;
    for (i, a) in actions.iter().enumerate() {
        while k < by_end.len() && actions[by_end[k]].finished_us <= a.arrived_us {
            last = Some(by_end[k]);
            k += 1;
        }
        if let Some(r) = last.filter(|&r| r != i) {
            release[i] = Some(r);
            lag[i] = a.arrived_us - actions[r].finished_us;
        }
    }
    (release, lag)
}

/// An action's costs under `res`: the trace's, the run divided by the worker's speed when
/// remote, transfers at the link's speed. A remote action traced on a remote backend keeps
/// its worker's fetch and store (worker time) and its client's side of the round trip
/// (`upload`, `download`: latency that holds no worker); its time in the queue is the
/// recording's contention, not a cost.
fn cost(a: &Action, res: &Resources) -> Cost {
    let on_client = |us: u64| (us as f64 / res.client_speed.max(1e-6)) as u64;
    let (before, after) = match res.client_ms {
        Some(ms) => (on_client((ms * 1e3) as u64), 0),
        None => (
            on_client(a.phase_us(Phase::Scan) + a.phase_us(Phase::Lookup)),
            on_client(a.phase_us(Phase::Deliver)),
        ),
    };
    let run = a.phase_us(Phase::Run);
    let (run, latency) = if res.remote {
        (
            (run as f64 / res.worker_speed.max(1e-6)) as u64
                + a.phase_us(Phase::Fetch)
                + a.phase_us(Phase::Store),
            a.phase_us(Phase::Upload) + a.phase_us(Phase::Download),
        )
    } else {
        (on_client(run), 0)
    };
    let transfer = |bytes: u64| {
        res.bandwidth_mbs
            .map_or(0, |mbs| (bytes as f64 / (mbs.max(1e-6) * 1e6) * 1e6) as u64)
    };
    Cost {
        before,
        run,
        latency,
        after,
        up: transfer(a.bytes_up),
        down: transfer(a.bytes_down),
    }
}

/// Worker counts for a sweep up to `max`: 1, 2, 4, ... and `max`.
pub fn sweep_points(max: usize) -> Vec<usize> {
    let mut points: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < max)
        .collect();
    points.push(max.max(1));
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Kind, Span};

    fn compile(arrived: u64, scan: u64, run: u64, deliver: u64) -> Action {
        let mut t = arrived;
        let mut phases = Vec::new();
        for (phase, d) in [
            (Phase::Scan, scan),
            (Phase::Run, run),
            (Phase::Deliver, deliver),
        ] {
            phases.push(Span {
                phase,
                start_us: t,
                end_us: t + d,
            });
            t += d;
        }
        Action {
            kind: Kind::Compile,
            label: format!("{arrived}.c"),
            arrived_us: arrived,
            finished_us: t,
            phases,
            status: Status::Miss,
            worker: None,
            bytes_up: 1_000_000,
            bytes_down: 0,
            dollars: 0.0,
        }
    }

    fn res(workers: usize, remote: bool) -> Resources {
        Resources {
            workers,
            jobs: None,
            remote,
            client_cores: 64,
            rtt_ms: 0.0,
            cold_start_ms: 0.0,
            worker_speed: 1.0,
            client_speed: 1.0,
            client_ms: None,
            bandwidth_mbs: None,
            warm: false,
            memory_mb: 1769.0,
        }
    }

    /// Eight independent 1 s compiles that all arrived at once.
    fn burst() -> Vec<Action> {
        (0..8).map(|_| compile(0, 0, 1_000_000, 0)).collect()
    }

    #[test]
    fn independent_work_divides_over_workers() {
        for (workers, wall) in [(1, 8.0), (2, 4.0), (8, 1.0), (16, 1.0)] {
            let p = simulate(&burst(), &res(workers, true)).unwrap();
            assert!((p.wall_s - wall).abs() < 1e-6, "{workers}: {}", p.wall_s);
        }
    }

    #[test]
    fn a_chain_stays_a_chain_and_keeps_its_gaps() {
        // b arrived 0.5 s after a finished (a link between them), c right after b.
        let a = compile(0, 0, 1_000_000, 0);
        let b = compile(1_500_000, 0, 1_000_000, 0);
        let c = compile(2_500_000, 0, 1_000_000, 0);
        let p = simulate(&[a, b, c], &res(64, true)).unwrap();
        assert!((p.wall_s - 3.5).abs() < 1e-6, "{}", p.wall_s);
        assert!(p.bottleneck.contains("own order"), "{}", p.bottleneck);
    }

    #[test]
    fn a_run_here_shares_the_clients_cores_with_its_own_work() {
        // Four actions of 1 s client work then a 1 s compile, on 2 cores with 2 slots:
        // 8 s of work on 2 cores, not 3 s as if the compiles had cores of their own.
        let actions: Vec<Action> = (0..4)
            .map(|_| compile(0, 1_000_000, 1_000_000, 0))
            .collect();
        let two = Resources {
            client_cores: 2,
            ..res(2, false)
        };
        let p = simulate(&actions, &two).unwrap();
        assert!((p.wall_s - 4.0).abs() < 1e-6, "{}", p.wall_s);
        assert_eq!(p.bottleneck, "client CPU");
        // One slot on two cores: the four compiles one after another, the first once a
        // core is free of the client work queued before it (at 2 s).
        let one_slot = Resources {
            client_cores: 2,
            ..res(1, false)
        };
        let p = simulate(&actions, &one_slot).unwrap();
        assert!((p.wall_s - 6.0).abs() < 1e-6, "{}", p.wall_s);
        assert_eq!(p.bottleneck, "local slots");
    }

    #[test]
    fn a_faster_client_and_a_measured_client_cost_replace_the_traced_ones() {
        let actions: Vec<Action> = (0..8).map(|_| compile(0, 100_000, 1_000_000, 0)).collect();
        // Run here on 2 slots twice as fast: 4 rounds of (0.05 s scan + 0.5 s run), the
        // scans of the next round overlapping the runs.
        let fast_local = Resources {
            client_speed: 2.0,
            client_cores: 2,
            ..res(2, false)
        };
        let p = simulate(&actions, &fast_local).unwrap();
        let slow = simulate(
            &actions,
            &Resources {
                client_cores: 2,
                ..res(2, false)
            },
        )
        .unwrap();
        assert!(
            (p.wall_s * 2.0 - slow.wall_s).abs() < 1e-3,
            "{} {}",
            p.wall_s,
            slow.wall_s
        );
        // Remote, 8 workers, one client core spending 0.25 s per action instead of the
        // traced 0.1 s: 8 × 0.25 s, then the last run.
        let measured = Resources {
            client_cores: 1,
            client_ms: Some(250.0),
            ..res(8, true)
        };
        let p = simulate(&actions, &measured).unwrap();
        assert!((p.wall_s - 3.0).abs() < 1e-6, "{}", p.wall_s);
        let bad = Resources {
            client_speed: 0.0,
            ..res(8, true)
        };
        assert!(matches!(
            simulate(&actions, &bad),
            Err(SimulateError::BadNumber("--client-speed"))
        ));
    }

    #[test]
    fn the_client_the_link_and_cold_starts_limit_remote_builds() {
        let actions: Vec<Action> = (0..8).map(|_| compile(0, 100_000, 1_000_000, 0)).collect();
        let one_core = Resources {
            client_cores: 1,
            ..res(8, true)
        };
        // 8 × 0.1 s of scanning on one core, then the last run: 1.8 s.
        let p = simulate(&actions, &one_core).unwrap();
        assert!((p.wall_s - 1.8).abs() < 1e-6, "{}", p.wall_s);
        let slow_link = Resources {
            bandwidth_mbs: Some(1.0),
            ..res(8, true)
        };
        let p = simulate(&actions, &slow_link).unwrap();
        assert_eq!(p.bottleneck, "upload bandwidth");
        assert!((p.wall_s - 9.1).abs() < 1e-6, "{}", p.wall_s);
        let cold = Resources {
            cold_start_ms: 500.0,
            rtt_ms: 10.0,
            ..res(8, true)
        };
        let p = simulate(&actions, &cold).unwrap();
        assert!((p.wall_s - 1.61).abs() < 1e-6, "{}", p.wall_s);
        assert!(p.dollars > 0.0);
    }

    #[test]
    fn local_slots_share_the_clients_cores() {
        let two_cores = Resources {
            client_cores: 2,
            ..res(8, false)
        };
        let p = simulate(&burst(), &two_cores).unwrap();
        assert!((p.wall_s - 4.0).abs() < 1e-6, "{}", p.wall_s);
    }

    #[test]
    fn a_cold_replay_of_a_warm_trace_is_refused() {
        let mut actions = burst();
        actions[0].status = Status::Hit;
        assert_eq!(
            simulate(&actions, &res(1, true)).unwrap_err(),
            SimulateError::HitsInColdReplay(1)
        );
        assert!(
            simulate(
                &actions,
                &Resources {
                    warm: true,
                    ..res(1, true)
                }
            )
            .is_ok()
        );
    }

    #[test]
    fn the_build_tools_jobs_limit_what_is_in_flight() {
        let two_jobs = Resources {
            jobs: Some(2),
            ..res(8, true)
        };
        let p = simulate(&burst(), &two_jobs).unwrap();
        assert!((p.wall_s - 4.0).abs() < 1e-6, "{}", p.wall_s);
    }

    #[test]
    fn a_recorded_round_trip_is_latency_that_holds_no_worker() {
        let actions: Vec<Action> = (0..8)
            .map(|_| {
                let mut a = compile(0, 0, 1_000_000, 0);
                a.phases.insert(
                    0,
                    Span {
                        phase: Phase::Upload,
                        start_us: 0,
                        end_us: 0,
                    },
                );
                a.phases[0].end_us = 1_000_000;
                for span in &mut a.phases[1..] {
                    span.start_us += 1_000_000;
                    span.end_us += 1_000_000;
                }
                a.finished_us += 1_000_000;
                a
            })
            .collect();
        let p = simulate(&actions, &res(1, true)).unwrap();
        assert!((p.wall_s - 9.0).abs() < 1e-6, "{}", p.wall_s);
    }

    #[test]
    fn sweeps_double_up_to_the_limit() {
        assert_eq!(sweep_points(1), [1]);
        assert_eq!(sweep_points(100), [1, 2, 4, 8, 16, 32, 64, 100]);
    }
}
