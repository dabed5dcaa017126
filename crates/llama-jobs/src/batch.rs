//! `llama xargs`'s jobs: one per input line, at most N at once, each rendered, turned into
//! an action and run through the Engine, its end reported on a channel. What is printed,
//! and when to halt, is the caller's (the receiving end of that channel).

use std::error::Error;
use std::io::{self, BufRead};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use llama_core::{Digest, HashCache, TreeBuilder};
use llama_exec::{Delivered, Engine};
use tokio::sync::{AcquireError, Semaphore, mpsc, watch};

use crate::action::{JobAction, JobSpec, job_action};
use crate::joblog::JobId;
use crate::retry::run_with_retries;
use crate::ship::Shipment;
use crate::template::{ArgTemplates, JobContext};

/// Where jobs run: the front end's Engine and hash cache, shared by every job.
pub trait JobHost: Send + Sync + 'static {
    /// The engine every job goes through.
    fn engine(&self) -> &Engine;
    /// The digests of local files, for the inputs jobs ship.
    fn hash_cache(&self) -> &HashCache;
}

/// Everything a job needs, shared by all jobs of one run.
pub struct Batch<H> {
    /// The engine and hash cache.
    pub host: Arc<H>,
    /// The command's arguments, rendered once per line.
    pub templates: ArgTemplates,
    /// The files every job gets (`-f`).
    pub base_tree: TreeBuilder,
    /// The `llama-function` platform property.
    pub function: String,
    /// The command's environment ([`path_env`](crate::path_env)).
    pub env: Vec<(String, String)>,
    /// Programs shipped with every job.
    pub ship: Shipment,
    /// Retries of an infrastructure failure per job.
    pub retries: u32,
    /// Jobs at once (at least 1).
    pub parallel: usize,
}

/// How a job ended.
pub enum JobEnd {
    /// The command ran (now or earlier, from the cache).
    Ran {
        /// Its result and the outputs it did or did not produce.
        delivered: Box<Delivered>,
        /// The action's digest (for `-logs`).
        action: Digest,
    },
    /// It could not run: a template needed a missing file, or the infrastructure failed
    /// beyond the retries.
    Error(String),
    /// `--halt now` killed it.
    Killed,
}

/// A finished job.
pub struct Done {
    /// The job's 0-based position in the input.
    pub idx: usize,
    /// Its input line, in llama's escaped form where it is not UTF-8.
    pub line: String,
    /// How it ended.
    pub end: JobEnd,
    /// Wall time from start to end.
    pub seconds: f64,
}

impl Done {
    /// The command ran, exited 0 and produced every declared output.
    pub fn succeeded(&self) -> bool {
        match &self.end {
            JobEnd::Ran { delivered, .. } => {
                delivered.finished.termination.success() && delivered.missing.is_empty()
            }
            JobEnd::Error(_) | JobEnd::Killed => false,
        }
    }

    /// The result came from the action cache.
    pub fn cached(&self) -> bool {
        matches!(&self.end, JobEnd::Ran { delivered, .. } if delivered.finished.cached)
    }

    /// The command's shell status, or -1 when it did not run.
    pub fn exit_status(&self) -> i32 {
        match &self.end {
            JobEnd::Ran { delivered, .. } => delivered.finished.termination.shell_status(),
            JobEnd::Error(_) | JobEnd::Killed => -1,
        }
    }

    /// Which job, for messages.
    pub fn who(&self) -> JobId<'_> {
        JobId {
            idx: self.idx,
            line: &self.line,
        }
    }
}

/// Why the dispatcher stopped before the input ended.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Standard input (or whatever the lines come from) could not be read.
    #[error("reading input lines from standard input")]
    ReadLines(#[source] io::Error),
    /// The job slots were closed (a bug: they never are).
    #[error(transparent)]
    Slots(#[from] AcquireError),
}

/// What the dispatcher listens to besides the lines.
pub struct Control {
    /// Becomes true on `--halt now`: running jobs are dropped, which kills their commands.
    pub cancel: watch::Receiver<bool>,
    /// Set on any halt: no further job starts.
    pub halted: Arc<AtomicBool>,
}

/// Starts a job for each line, at most `batch.parallel` at once, and sends each end on
/// `done`. `on_start` is called as each job starts (a progress bar's length).
///
/// # Errors
///
/// Reading a line failed; the jobs already started still end and are reported.
pub async fn dispatch<H: JobHost>(
    batch: Arc<Batch<H>>,
    mut lines: mpsc::Receiver<io::Result<String>>,
    done: mpsc::UnboundedSender<Done>,
    control: Control,
    on_start: impl Fn(),
) -> Result<(), BatchError> {
    let slots = Arc::new(Semaphore::new(batch.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut idx = 0usize;
    while let Some(line) = lines.recv().await {
        let line = line.map_err(BatchError::ReadLines)?;
        let permit = slots.clone().acquire_owned().await?;
        if control.halted.load(Ordering::SeqCst) {
            break;
        }
        on_start();
        let job = JobContext { line, idx };
        idx += 1;
        let batch = batch.clone();
        let done = done.clone();
        let mut cancel = control.cancel.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            // Dropping the job's future on --halt now kills its command.
            let end = tokio::select! {
                end = run_job(&batch, &job) => end,
                _ = cancel.wait_for(|c| *c) => JobEnd::Killed,
            };
            drop(permit);
            let _ = done.send(Done {
                idx: job.idx,
                line: job.line,
                end,
                seconds: started.elapsed().as_secs_f64(),
            });
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Lines read on a plain thread from what `open` returns (standard input). A last line
/// without a newline is a line too; only the one trailing `\n` is removed.
pub fn read_lines<R: BufRead>(
    open: impl FnOnce() -> R + Send + 'static,
) -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut input = open();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
                Ok(0) => return,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    // Escaped, not lossy: a line that is not UTF-8 must name its file exactly.
                    let line = llama_core::encode_name(&buf).into_owned();
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

async fn run_job<H: JobHost>(batch: &Arc<Batch<H>>, job: &JobContext) -> JobEnd {
    let prep_batch = batch.clone();
    let ctx = job.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&prep_batch, &ctx)).await;
    let action = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return JobEnd::Error(e),
        Err(e) => return JobEnd::Error(format!("preparing the job failed: {e}")),
    };
    let id = JobId {
        idx: job.idx,
        line: &job.line,
    };
    match run_with_retries(batch.host.engine(), &action, id, batch.retries).await {
        Ok(delivered) => JobEnd::Ran {
            delivered: Box::new(delivered),
            action: action.action.action_digest,
        },
        Err(e) => JobEnd::Error(e.to_string()),
    }
}

/// Renders the templates for one line and encodes the action; an error as one line with
/// its causes.
fn prepare<H: JobHost>(batch: &Batch<H>, job: &JobContext) -> Result<JobAction, String> {
    let rendered = batch.templates.render(job).map_err(|e| chain(&e))?;
    job_action(
        batch.host.hash_cache(),
        batch.base_tree.clone(),
        rendered,
        JobSpec {
            function: &batch.function,
            env: &batch.env,
            stdin: None,
            outputs: Vec::new(),
            ship: Some(&batch.ship).filter(|s| !s.is_empty()),
        },
    )
    .map_err(|e| chain(&e))
}

/// An error and its causes, `: `-separated (as anyhow's `{:#}` shows them).
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[test]
    fn an_error_shows_with_its_causes() {
        assert_eq!(chain(&Outer(io::Error::other("inner"))), "outer: inner");
    }

    #[tokio::test]
    async fn lines_keep_a_last_line_without_newline_and_escape_non_utf8() {
        let mut rx = read_lines(|| io::Cursor::new(b"a\n\xff\nlast".to_vec()));
        let mut got = Vec::new();
        while let Some(line) = rx.recv().await {
            got.push(line.unwrap());
        }
        assert_eq!(got[0], "a");
        assert_eq!(llama_core::decode_name(&got[1]).unwrap().as_ref(), b"\xff");
        assert_eq!(got[2], "last");
        assert_eq!(got.len(), 3);
    }
}
