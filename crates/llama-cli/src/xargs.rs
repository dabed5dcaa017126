//! `llama xargs`: one action per input line, run in parallel through the engine, each job's
//! output printed whole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llama_core::{HashCache, TreeBuilder, display_name};
use llama_exec::{CachePolicy, Engine};
use llama_jobs::template::ArgTemplates;
use llama_jobs::{
    Batch, Control, Done, JobEnd, JobHost, JobLog, JobRecord, dispatch, parse_halt, parse_mapping,
    path_env, read_lines,
};
use tokio::sync::{mpsc, watch};

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

/// Jobs run through the context's engine and hash cache.
impl JobHost for Context {
    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn hash_cache(&self) -> &HashCache {
        &self.hash_cache
    }
}

/// The jobs' common part: templates, `-f` files, shipped programs, retries.
async fn batch(
    ctx: &Arc<Context>,
    args: &XargsArgs,
    jobs: usize,
) -> anyhow::Result<Batch<Context>> {
    let templates = ArgTemplates::parse(&args.command)?;
    let mut base_tree = TreeBuilder::new();
    for spec in &args.files {
        let m = parse_mapping("-f", spec)?;
        base_tree
            .add_path(&ctx.hash_cache, &m.local, &m.remote)
            .with_context(|| format!("-f {spec}"))?;
    }
    let ship = crate::ship::shipment(
        ctx,
        &args.ship,
        args.command.first().map(String::as_str),
        args.no_ship,
    )
    .await?;
    // Added once here: every job's tree starts from this one.
    ship.add_to(&mut base_tree, &ctx.hash_cache)
        .context("laying out the shipped programs")?;
    Ok(Batch {
        host: ctx.clone(),
        templates,
        base_tree,
        function: args.function.clone(),
        env: path_env(),
        ship,
        // Infrastructure failures of a remote backend are retried twice unless told.
        retries: args.retries.unwrap_or(if ctx.remote { 2 } else { 0 }),
        parallel: jobs,
    })
}

/// Runs `llama xargs` and returns the exit status.
pub async fn run(ctx: Arc<Context>, args: XargsArgs, jobs: usize) -> anyhow::Result<i32> {
    // Everything that can be wrong with the command line is found before any job runs.
    let halt = args.halt.as_deref().map(parse_halt).transpose()?;
    let batch = Arc::new(batch(&ctx, &args, jobs).await?);
    let mut joblog = args.joblog.as_deref().map(open_joblog).transpose()?;

    let on_terminal = io::stderr().is_terminal();
    let progress = Progress::new(on_terminal);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let halted = Arc::new(AtomicBool::new(false));
    let bar = progress.bar.clone();
    let dispatcher = tokio::spawn(dispatch(
        batch,
        read_lines(|| io::stdin().lock()),
        done_tx,
        Control {
            cancel: cancel_rx,
            halted: halted.clone(),
        },
        move || bar.inc_length(1),
    ));

    let started = Instant::now();
    let build = args.build_id.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        format!("xargs-{}", now.map_or(0, |d| d.as_secs()))
    });
    let mut counts = Counts::default();
    let mut pending: BTreeMap<usize, Done> = BTreeMap::new();
    let mut next_to_print = 0usize;
    while let Some(done) = done_rx.recv().await {
        counts.record(&done);
        progress.update(&counts);
        let delivered = match &done.end {
            JobEnd::Ran { delivered, .. } => Some(&**delivered),
            JobEnd::Error(_) | JobEnd::Killed => None,
        };
        ctx.traces.send(
            &build,
            crate::replay::job_trace(
                llama_trace::Kind::Xargs,
                done.line.clone(),
                done.seconds,
                delivered,
                ctx.remote,
            ),
        );
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
                progress.suspend(|| print_job(&ctx, &d, args.logs))?;
                next_to_print += 1;
            }
        } else {
            progress.suspend(|| print_job(&ctx, &done, args.logs))?;
        }
    }
    // Jobs a halt never started leave gaps; print what is left, still in order.
    for d in pending.into_values() {
        progress.suspend(|| print_job(&ctx, &d, args.logs))?;
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

/// Prints one job's output whole, then why it failed, if it did.
fn print_job(ctx: &Context, done: &Done, logs: bool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    match &done.end {
        JobEnd::Ran { delivered, action } => {
            crate::replay::replay(
                ctx.engine.store(),
                &delivered.finished.result,
                &mut out,
                &mut err,
            )?;
            if logs {
                crate::replay::print_log(
                    &mut err,
                    &done.who().to_string(),
                    ctx.engine.executor_name(),
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

/// The joblog: `FILE` is replaced; `+FILE` is appended to, its header written only when it
/// is empty (GNU parallel's spelling).
fn open_joblog(spec: &std::path::Path) -> anyhow::Result<JobLog<BufWriter<File>>> {
    use std::os::unix::ffi::OsStrExt;
    let (append, path) = match spec.as_os_str().as_bytes() {
        [b'+', rest @ ..] => (
            true,
            std::path::PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
        ),
        _ => (false, spec.to_path_buf()),
    };
    let file = match append {
        true => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path),
        false => File::create(&path),
    }
    .with_context(|| format!("--joblog {}: cannot open it for writing", path.display()))?;
    let empty = file.metadata().map(|m| m.len() == 0).unwrap_or(true);
    let w = BufWriter::new(file);
    Ok(match append && !empty {
        true => JobLog::continuing(w),
        false => JobLog::new(w)?,
    })
}
