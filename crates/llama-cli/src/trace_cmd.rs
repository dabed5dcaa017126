//! `llama trace`: the builds traced under `$LLAMA_DIR/traces`, exported, reported, replayed.

use std::io::Write;

use anyhow::Context as _;
use llama_core::Config;
use llama_trace::{Limits, Resources, TraceLog, report, simulate};

use crate::cli::{SimulateArgs, TraceAction, TraceArgs};

/// Runs one `llama trace` subcommand, writing to `out`.
pub fn run(config: &Config, args: &TraceArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let log = TraceLog::new(&config.dir(), Limits::default());
    match &args.action {
        TraceAction::List { json } => list(&log, *json, out),
        TraceAction::Export { build } => {
            let loaded = log.load(&chosen(&log, build.as_deref())?)?;
            let trace = llama_trace::chrome::export(&loaded.build, &loaded.actions);
            json_line(out, &trace, false)?;
            Ok(0)
        }
        TraceAction::Report { build, json } => {
            let loaded = log.load(&chosen(&log, build.as_deref())?)?;
            let report = report::report(&loaded.build, &loaded.actions, loaded.skipped);
            if *json {
                json_line(out, &report, true)?;
            } else {
                write!(out, "{}", report.text())?;
            }
            Ok(0)
        }
        TraceAction::Simulate(sim) => replay(&log, sim, out),
    }
}

/// Writes `value` as JSON and a newline; a closed pipe stays an I/O error, which the exit
/// status treats as success (`llama trace export | head`).
fn json_line(
    out: &mut dyn Write,
    value: &impl serde::Serialize,
    pretty: bool,
) -> anyhow::Result<()> {
    let mut bytes = if pretty {
        serde_json::to_vec_pretty(value)?
    } else {
        serde_json::to_vec(value)?
    };
    bytes.push(b'\n');
    out.write_all(&bytes)?;
    Ok(())
}

/// The build named, or the newest.
fn chosen(log: &TraceLog, build: Option<&str>) -> anyhow::Result<String> {
    match build {
        Some(b) => Ok(b.to_string()),
        None => Ok(log.latest()?),
    }
}

fn list(log: &TraceLog, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let builds = log.builds()?;
    if json {
        let rows: Vec<serde_json::Value> = builds
            .iter()
            .map(|b| {
                serde_json::json!({
                    "build": b.build,
                    "bytes": b.bytes,
                    "modified": b.modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                })
            })
            .collect();
        json_line(out, &rows, true)?;
        return Ok(0);
    }
    if builds.is_empty() {
        writeln!(out, "no builds traced yet in {}", log.dir().display())?;
    }
    for b in builds {
        let age = b.modified.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        writeln!(
            out,
            "{:<40} {:>10} bytes  {:>8} s ago",
            b.build, b.bytes, age
        )?;
    }
    Ok(0)
}

fn replay(log: &TraceLog, args: &SimulateArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let build = chosen(log, args.build.as_deref())?;
    let loaded = log.load(&build)?;
    let cores = args.client_cores.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let points = if args.sweep {
        simulate::sweep_points(args.workers)
    } else {
        vec![args.workers]
    };
    let mut predictions = Vec::new();
    for workers in points {
        let res = Resources {
            workers,
            jobs: args.jobs,
            remote: args.remote,
            client_cores: cores,
            rtt_ms: args.rtt,
            cold_start_ms: args.cold_start,
            worker_speed: args.worker_speed,
            client_speed: args.client_speed,
            client_ms: args.client_ms,
            bandwidth_mbs: args.bandwidth,
            warm: args.cache == "warm",
            memory_mb: args.memory,
        };
        predictions.push(
            simulate::simulate(&loaded.actions, &res)
                .with_context(|| format!("replaying build {build}"))?,
        );
    }
    if args.json {
        json_line(out, &predictions, true)?;
        return Ok(0);
    }
    writeln!(
        out,
        "build {build} ({} actions), {} on {}, {cores} client cores:",
        loaded.actions.len(),
        args.cache,
        if args.remote {
            "remote workers"
        } else {
            "local slots"
        }
    )?;
    writeln!(
        out,
        "{:>8} {:>10} {:>10}  bottleneck",
        "workers", "wall (s)", "cost ($)"
    )?;
    for p in &predictions {
        writeln!(
            out,
            "{:>8} {:>10.2} {:>10.4}  {}",
            p.workers, p.wall_s, p.dollars, p.bottleneck
        )?;
    }
    Ok(0)
}
