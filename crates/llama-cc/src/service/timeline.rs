//! The trace of each compile: the service marks the end of each phase as it goes
//! ([`mark`]), in a timeline local to the compile's task, and hands the finished timeline
//! to a [`Tracer`], which appends it to the build's trace on a thread of its own, so a
//! compile never waits for the trace file.
//!
//! A compile belongs to the build `LLAMACC_BUILD_ID` names; without one, to the run of
//! compiles with no gap longer than [`BUILD_GAP_US`].

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use llama_core::protobuf::Timestamp;
use llama_core::reapi::ExecutedActionMetadata;
use llama_trace::{Action, Kind, Limits, Phase, Span, Status, TraceLog, Writer};

use crate::stats::Outcome;

/// A gap between compiles longer than this starts a new build.
pub(crate) const BUILD_GAP_US: u64 = 5_000_000;

tokio::task_local! {
    static TIMELINE: RefCell<Timeline>;
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One compile's phases so far.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    arrived_us: u64,
    last_us: u64,
    spans: Vec<Span>,
    label: String,
    worker: Option<String>,
}

impl Timeline {
    fn mark(&mut self, phase: Phase) {
        let now = now_us().max(self.last_us);
        match self.spans.last_mut() {
            // Consecutive marks of one phase are one span.
            Some(last) if last.phase == phase => last.end_us = now,
            _ => self.spans.push(Span {
                phase,
                start_us: self.last_us,
                end_us: now,
            }),
        }
        self.last_us = now;
    }
}

/// Ends the current phase of this task's compile: the time since the last mark was
/// `phase`. Outside a traced compile, nothing.
pub(crate) fn mark(phase: Phase) {
    let _ = TIMELINE.try_with(|t| t.borrow_mut().mark(phase));
}

/// Names this task's compile (its source).
pub(crate) fn label(text: String) {
    let _ = TIMELINE.try_with(|t| t.borrow_mut().label = text);
}

/// Ends a remote round trip, split by what the worker reports of it: waiting in the
/// queue, fetching inputs, running, storing outputs (durations by the server's clock);
/// the rest of the round trip, before them, is the client's side of it (uploads, the
/// calls, the download), counted as `upload`. Without a report, all of it is `run`.
pub(crate) fn mark_remote(meta: Option<&ExecutedActionMetadata>) {
    let _ = TIMELINE.try_with(|t| {
        let mut t = t.borrow_mut();
        let Some(meta) = meta else {
            return t.mark(Phase::Run);
        };
        if !meta.worker.is_empty() {
            t.worker = Some(meta.worker.clone());
        }
        let span = |a: &Option<Timestamp>, b: &Option<Timestamp>| match (a, b) {
            (Some(a), Some(b)) => micros(b).saturating_sub(micros(a)),
            _ => 0,
        };
        let worker = [
            (
                Phase::Queue,
                span(&meta.queued_timestamp, &meta.worker_start_timestamp),
            ),
            (
                Phase::Fetch,
                span(
                    &meta.input_fetch_start_timestamp,
                    &meta.input_fetch_completed_timestamp,
                ),
            ),
            (
                Phase::Run,
                span(
                    &meta.execution_start_timestamp,
                    &meta.execution_completed_timestamp,
                ),
            ),
            (
                Phase::Store,
                span(
                    &meta.output_upload_start_timestamp,
                    &meta.output_upload_completed_timestamp,
                ),
            ),
        ];
        let now = now_us().max(t.last_us);
        let total = now - t.last_us;
        let reported: u64 = worker.iter().map(|(_, us)| us).sum();
        // A report longer than the round trip (clocks apart) is scaled into it.
        let scale = if reported > total {
            total as f64 / reported as f64
        } else {
            1.0
        };
        let mut at = t.last_us + total - (reported as f64 * scale) as u64;
        let start_us = t.last_us;
        t.spans.push(Span {
            phase: Phase::Upload,
            start_us,
            end_us: at,
        });
        for (phase, us) in worker.into_iter().filter(|(_, us)| *us > 0) {
            let end = (at + (us as f64 * scale) as u64).min(now);
            t.spans.push(Span {
                phase,
                start_us: at,
                end_us: end,
            });
            at = end;
        }
        t.last_us = now;
    });
}

fn micros(t: &Timestamp) -> u64 {
    (t.seconds.max(0) as u64) * 1_000_000 + (t.nanos.max(0) as u64) / 1_000
}

/// Runs `compile` with a timeline of its own, and returns the timeline with its result.
pub(crate) async fn traced<F: Future>(compile: F) -> (F::Output, Timeline) {
    let now = now_us();
    let start = Timeline {
        arrived_us: now,
        last_us: now,
        ..Timeline::default()
    };
    TIMELINE
        .scope(RefCell::new(start), async {
            let out = compile.await;
            let timeline = TIMELINE.with(|t| std::mem::take(&mut *t.borrow_mut()));
            (out, timeline)
        })
        .await
}

/// How an outcome shows in a trace.
fn status(outcome: Outcome) -> Status {
    match outcome {
        Outcome::Hit => Status::Hit,
        Outcome::Miss | Outcome::Fallback => Status::Miss,
        Outcome::Remote => Status::Remote,
        Outcome::Uncacheable | Outcome::Local => Status::Direct,
        Outcome::CompileError | Outcome::Error | Outcome::RemoteError => Status::Error,
    }
}

/// Appends finished compiles to their build's trace, on a thread of its own.
pub(crate) struct Tracer {
    writer: Writer,
    /// The automatic build now: its name and when its last compile finished.
    current: Mutex<(String, u64)>,
}

impl Tracer {
    /// Traces into `llama_dir/traces`.
    pub(crate) fn new(llama_dir: &Path) -> Tracer {
        Tracer {
            writer: Writer::new(TraceLog::new(llama_dir, Limits::default())),
            current: Mutex::new((String::new(), 0)),
        }
    }

    /// Records a finished compile in `build` (else the automatic build of the moment).
    pub(crate) fn record(&self, build: Option<&str>, timeline: Timeline, outcome: Outcome) {
        let finished_us = now_us().max(timeline.last_us);
        let build = match build {
            Some(b) => b.to_string(),
            None => self.automatic_build(timeline.arrived_us, finished_us),
        };
        let action = Action {
            kind: Kind::Compile,
            label: timeline.label,
            arrived_us: timeline.arrived_us,
            finished_us,
            phases: timeline.spans,
            status: status(outcome),
            worker: timeline.worker,
            bytes_up: 0,
            bytes_down: 0,
            dollars: 0.0,
        };
        self.writer.send(&build, action);
    }

    /// The automatic build a compile arriving at `arrived_us` belongs to: the current one,
    /// unless nothing finished for longer than [`BUILD_GAP_US`].
    fn automatic_build(&self, arrived_us: u64, finished_us: u64) -> String {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (name, last) = &mut *current;
        if name.is_empty() || arrived_us > last.saturating_add(BUILD_GAP_US) {
            *name = format!("auto-{}", arrived_us / 1_000_000);
        }
        *last = (*last).max(finished_us);
        name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_make_consecutive_spans_and_repeated_marks_merge() {
        let ((), t) = traced(async {
            label("a.c".into());
            mark(Phase::Lookup);
            mark(Phase::Lookup);
            mark(Phase::Run);
            mark(Phase::Deliver);
        })
        .await;
        let phases: Vec<Phase> = t.spans.iter().map(|s| s.phase).collect();
        assert_eq!(phases, [Phase::Lookup, Phase::Run, Phase::Deliver]);
        assert!(t.spans.windows(2).all(|w| w[0].end_us == w[1].start_us));
        assert_eq!(t.spans[0].start_us, t.arrived_us);
        assert_eq!(t.label, "a.c");
        // Outside a traced compile a mark is nothing.
        mark(Phase::Run);
    }

    #[tokio::test]
    async fn a_remote_round_trip_is_split_by_what_the_worker_reports() {
        let at = |us: i64| {
            Some(Timestamp {
                seconds: us / 1_000_000,
                nanos: (us % 1_000_000 * 1000) as i32,
            })
        };
        // The worker's clock is an hour off: only its durations count.
        let base = 3_600_000_000;
        let meta = ExecutedActionMetadata {
            worker: "bot-1".into(),
            input_fetch_start_timestamp: at(base),
            input_fetch_completed_timestamp: at(base + 1_000),
            execution_start_timestamp: at(base + 1_000),
            execution_completed_timestamp: at(base + 5_000),
            output_upload_start_timestamp: at(base + 5_000),
            output_upload_completed_timestamp: at(base + 6_000),
            ..Default::default()
        };
        let ((), t) = traced(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            mark_remote(Some(&meta));
        })
        .await;
        let phases: Vec<(Phase, u64)> = t.spans.iter().map(|s| (s.phase, s.us())).collect();
        assert_eq!(phases[0].0, Phase::Upload);
        assert_eq!(
            phases[1..],
            [
                (Phase::Fetch, 1_000),
                (Phase::Run, 4_000),
                (Phase::Store, 1_000)
            ]
        );
        assert!(t.spans.windows(2).all(|w| w[0].end_us == w[1].start_us));
        assert_eq!(t.worker.as_deref(), Some("bot-1"));
        // No report: all of it is the run.
        let ((), t) = traced(async { mark_remote(None) }).await;
        assert_eq!(t.spans[0].phase, Phase::Run);
    }

    #[test]
    fn a_gap_starts_a_new_automatic_build() {
        let dir = tempfile::tempdir().unwrap();
        let tracer = Tracer::new(dir.path());
        let first = tracer.automatic_build(10_000_000, 11_000_000);
        assert_eq!(tracer.automatic_build(12_000_000, 13_000_000), first);
        let later = tracer.automatic_build(13_000_000 + BUILD_GAP_US + 1, 20_000_000);
        assert_ne!(later, first);
    }
}
