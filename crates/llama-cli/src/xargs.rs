//! `llama xargs`: one action per input line, run in parallel through the engine, each job's
//! output printed whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llama_core::{Digest, TreeBuilder, display_name};
use llama_exec::{CachePolicy, Delivered};
use llama_jobs::template::{ArgTemplates, JobContext};
use llama_jobs::{
    JobAction, JobId, JobLog, JobRecord, JobSpec, job_action, parse_halt, parse_mapping, path_env,
    run_with_retries,
};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::cli::XargsArgs;
use crate::context::Context;

/// GNU parallel's cap: exit statuses above it would be mistaken for signals.
const MAX_FAILED_STATUS: usize = 101;

/// The engine's cache policy for the flags given.
pub fn policy(args: &XargsArgs) -> CachePolicy {
    CachePolicy {
        read: !args.no_cache,
        write: true,
    }
}

/// One input line.
struct Job {
    idx: usize,
    line: String,
}

/// How a job ended.
enum JobEnd {
    /// The command ran (now or earlier, from the cache).
    Ran {
        delivered: Box<Delivered>,
        action: Digest,
    },
    /// It could not run: a template needed a missing file, or the infrastructure failed
    /// beyond the retries.
    Error(String),
    /// `--halt now` killed it.
    Killed,
}

struct Done {
    idx: usize,
    line: String,
    end: JobEnd,
    seconds: f64,
}

impl Done {
    fn succeeded(&self) -> bool {
        match &self.end {
            JobEnd::Ran { delivered, .. } => {
                delivered.finished.termination.success() && delivered.missing.is_empty()
            }
            JobEnd::Error(_) | JobEnd::Killed => false,
        }
    }

    fn cached(&self) -> bool {
        matches!(&self.end, JobEnd::Ran { delivered, .. } if delivered.finished.cached)
    }

    fn exit_status(&self) -> i32 {
        match &self.end {
            JobEnd::Ran { delivered, .. } => delivered.finished.termination.shell_status(),
            JobEnd::Error(_) | JobEnd::Killed => -1,
        }
    }

    fn who(&self) -> JobId<'_> {
        JobId {
            idx: self.idx,
            line: &self.line,
        }
    }
}

/// Everything a job needs, shared by all jobs.
struct Shared {
    ctx: Arc<Context>,
    templates: ArgTemplates,
    base_tree: TreeBuilder,
    function: String,
    path_env: Vec<(String, String)>,
    retries: u32,
}

/// Runs `llama xargs` and returns the exit status.
pub async fn run(ctx: Arc<Context>, args: XargsArgs, jobs: usize) -> anyhow::Result<i32> {
    // Everything that can be wrong with the command line is found before any job runs.
    let templates = ArgTemplates::parse(&args.command)?;
    let halt = args.halt.as_deref().map(parse_halt).transpose()?;
    let mut base_tree = TreeBuilder::new();
    for spec in &args.files {
        let m = parse_mapping("-f", spec)?;
        base_tree
            .add_path(&ctx.hash_cache, &m.local, &m.remote)
            .with_context(|| format!("-f {spec}"))?;
    }
    let mut joblog = match &args.joblog {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("--joblog {}: cannot create it", path.display()))?;
            Some(JobLog::new(BufWriter::new(file))?)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        templates,
        base_tree,
        function: args.function.clone(),
        path_env: path_env(),
        retries: args.retries,
    });

    let on_terminal = io::stderr().is_terminal();
    let progress = Progress::new(on_terminal);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let halted = Arc::new(AtomicBool::new(false));
    let dispatcher = tokio::spawn(dispatch(
        shared.clone(),
        jobs,
        done_tx,
        cancel_rx,
        halted.clone(),
        progress.bar.clone(),
    ));

    let started = Instant::now();
    let mut counts = Counts::default();
    let mut pending: BTreeMap<usize, Done> = BTreeMap::new();
    let mut next_to_print = 0usize;
    while let Some(done) = done_rx.recv().await {
        counts.record(&done);
        progress.update(&counts);
        if let Some(log) = joblog.as_mut() {
            log.record(&JobRecord {
                id: done.who(),
                exit: done.exit_status(),
                seconds: done.seconds,
                cached: done.cached(),
            })?;
        }
        if let Some(h) = halt
            && !done.succeeded()
            && counts.failed >= h.failures
            && !halted.swap(true, Ordering::SeqCst)
        {
            progress.println(&format!(
                "llama xargs: halting after {} failed job(s){}",
                counts.failed,
                if h.kill_running {
                    "; killing running jobs"
                } else {
                    "; waiting for running jobs"
                }
            ));
            if h.kill_running {
                let _ = cancel_tx.send(true);
            }
        }
        if args.keep_order {
            pending.insert(done.idx, done);
            while let Some(d) = pending.remove(&next_to_print) {
                progress.suspend(|| print_job(&shared, &d, args.logs))?;
                next_to_print += 1;
            }
        } else {
            progress.suspend(|| print_job(&shared, &done, args.logs))?;
        }
    }
    // Jobs a halt never started leave gaps; print what is left, still in order.
    for d in pending.into_values() {
        progress.suspend(|| print_job(&shared, &d, args.logs))?;
    }
    dispatcher
        .await
        .map_err(|e| anyhow::anyhow!("job dispatcher failed: {e}"))??;
    progress.finish();
    if on_terminal || args.logs {
        eprintln!(
            "llama xargs: {} jobs in {:.1}s: {} ran, {} cached, {} failed",
            counts.total(),
            started.elapsed().as_secs_f64(),
            counts.ran,
            counts.cached,
            counts.failed
        );
    }
    if let Some(usage) = ctx.engine.usage() {
        eprintln!("llama xargs: {usage}");
    }
    Ok(counts.failed.min(MAX_FAILED_STATUS) as i32)
}

/// Reads lines and starts a job for each, at most `jobs` at once.
async fn dispatch(
    shared: Arc<Shared>,
    jobs: usize,
    done_tx: mpsc::UnboundedSender<Done>,
    cancel: watch::Receiver<bool>,
    halted: Arc<AtomicBool>,
    bar: ProgressBar,
) -> anyhow::Result<()> {
    let mut lines = read_lines();
    let slots = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut idx = 0usize;
    while let Some(line) = lines.recv().await {
        let line = line.context("reading input lines from standard input")?;
        let permit = slots.clone().acquire_owned().await?;
        if halted.load(Ordering::SeqCst) {
            break;
        }
        bar.inc_length(1);
        let job = Job { idx, line };
        idx += 1;
        let shared = shared.clone();
        let done_tx = done_tx.clone();
        let mut cancel = cancel.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            // Dropping the job's future on --halt now kills its command.
            let end = tokio::select! {
                end = run_job(&shared, &job) => end,
                _ = cancel.wait_for(|c| *c) => JobEnd::Killed,
            };
            drop(permit);
            let _ = done_tx.send(Done {
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

/// Lines of standard input, read on a plain thread. A last line without a newline is a
/// line too; only the one trailing `\n` is removed.
fn read_lines() -> mpsc::Receiver<io::Result<String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
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

async fn run_job(shared: &Arc<Shared>, job: &Job) -> JobEnd {
    let prep_shared = shared.clone();
    let ctx = JobContext {
        line: job.line.clone(),
        idx: job.idx,
    };
    let prepared = tokio::task::spawn_blocking(move || prepare(&prep_shared, &ctx)).await;
    let action = match prepared {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return JobEnd::Error(format!("{e:#}")),
        Err(e) => return JobEnd::Error(format!("preparing the job failed: {e}")),
    };
    let id = JobId {
        idx: job.idx,
        line: &job.line,
    };
    match run_with_retries(&shared.ctx.engine, &action, id, shared.retries).await {
        Ok(delivered) => JobEnd::Ran {
            delivered: Box::new(delivered),
            action: action.action.action_digest,
        },
        Err(e) => JobEnd::Error(e.to_string()),
    }
}

/// Renders the templates for one line and encodes the action.
fn prepare(shared: &Shared, job: &JobContext) -> anyhow::Result<JobAction> {
    let rendered = shared.templates.render(job)?;
    Ok(job_action(
        &shared.ctx.hash_cache,
        shared.base_tree.clone(),
        rendered,
        JobSpec {
            function: &shared.function,
            env: &shared.path_env,
            stdin: None,
            outputs: Vec::new(),
        },
    )?)
}

/// Prints one job's output whole, then why it failed, if it did.
fn print_job(shared: &Shared, done: &Done, logs: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    match &done.end {
        JobEnd::Ran { delivered, action } => {
            crate::replay::replay(
                shared.ctx.engine.store(),
                &delivered.finished.result,
                &mut out,
                &mut err,
            )?;
            if logs {
                crate::replay::print_log(
                    &mut err,
                    &done.who().to_string(),
                    shared.ctx.engine.executor_name(),
                    action,
                    &delivered.finished,
                )?;
            }
            let termination = delivered.finished.termination;
            if !termination.success() {
                writeln!(
                    err,
                    "llama xargs: {}: the command {termination}",
                    done.who()
                )?;
            } else if !delivered.missing.is_empty() {
                let names: Vec<String> = delivered
                    .missing
                    .iter()
                    .map(|m| display_name(&m.remote))
                    .collect();
                writeln!(
                    err,
                    "llama xargs: {}: the command succeeded but did not produce {}; nothing was written",
                    done.who(),
                    names.join(", ")
                )?;
            }
        }
        JobEnd::Error(message) => writeln!(err, "llama xargs: {}: {message}", done.who())?,
        JobEnd::Killed => writeln!(err, "llama xargs: {}: killed by --halt", done.who())?,
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    ran: usize,
    cached: usize,
    failed: usize,
    not_run: usize,
}

impl Counts {
    fn record(&mut self, done: &Done) {
        match &done.end {
            JobEnd::Ran { delivered, .. } if delivered.finished.cached => self.cached += 1,
            JobEnd::Ran { .. } => self.ran += 1,
            JobEnd::Error(_) | JobEnd::Killed => self.not_run += 1,
        }
        if !done.succeeded() {
            self.failed += 1;
        }
    }

    fn total(&self) -> usize {
        self.ran + self.cached + self.not_run
    }
}

/// The progress bar on stderr, drawn only on a terminal.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(on_terminal: bool) -> Progress {
        let bar = if on_terminal {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} done, {msg} [{elapsed_precise}, ETA {eta}]",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    fn update(&self, counts: &Counts) {
        self.bar.set_position(counts.total() as u64);
        let running = self
            .bar
            .length()
            .unwrap_or(0)
            .saturating_sub(counts.total() as u64);
        self.bar.set_message(format!(
            "{running} running, {} failed, {} cached",
            counts.failed, counts.cached
        ));
    }

    fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        self.bar.suspend(f)
    }

    fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
