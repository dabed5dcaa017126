//! `llama stats`: what llamacc did, from the running daemon or, if none, its saved counters.

use std::io::Write;

use llama_cc::StatsSnapshot;
use llama_core::Config;

use crate::cli::StatsArgs;
use crate::daemon;
use llama_cc::client::{self, DaemonPaths};
use llama_cc::protocol::{Request, Response};

/// Prints the counters (or zeroes them with `--zero`).
pub fn run(config: &Config, args: &StatsArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let paths = DaemonPaths::new(&config.dir());
    if args.zero {
        match client::request(&paths, &Request::ResetStats) {
            Ok(_) => {}
            Err(_) => {
                let _ = std::fs::remove_file(&paths.stats);
            }
        }
        writeln!(out, "llama stats: counters zeroed")?;
        return Ok(0);
    }
    let snapshot = snapshot(&paths)?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &snapshot)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", snapshot.report())?;
    }
    Ok(0)
}

/// The counters: the running daemon's, else those the last one saved.
pub fn snapshot(paths: &DaemonPaths) -> anyhow::Result<StatsSnapshot> {
    Ok(match client::request(paths, &Request::Stats) {
        Ok(Response::Stats(json)) => serde_json::from_str(&json)?,
        _ => daemon::load_stats(&paths.stats),
    })
}
