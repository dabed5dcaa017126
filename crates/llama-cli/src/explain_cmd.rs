//! `llama explain`: why a compile hit or missed, read from the key records the daemon
//! keeps in the store (no daemon needed).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use llama_cc::explain::{Explanation, KeyLog, KeyRecord, output_path};
use llama_core::{Config, Store};

use crate::cli::ExplainArgs;

/// Explains the last compile of `args.path` (or every one kept, with `--all`). Returns 1,
/// having said so, when none is recorded.
pub fn run(config: &Config, args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let dir = config.dir();
    let path = std::env::current_dir()
        .context("reading the current directory")?
        .join(&args.path);
    // A store that was never made holds no record, and explaining must not make one.
    let log = if dir.is_dir() {
        let store = Store::open(&dir, config.cache_size())
            .with_context(|| format!("opening the store (dir = {})", dir.display()))?;
        Some(KeyLog::new(store))
    } else {
        None
    };
    let history = match &log {
        Some(log) => history(log, &path)?,
        None => Vec::new(),
    };
    let Some(log) = log.filter(|_| !history.is_empty()) else {
        eprintln!(
            "llama explain: no compile of {} is recorded in {}: llamacc records every compile \
             it sees with this LLAMA_DIR; compile through llamacc first, and name the output \
             file (the -o of the compile) or its directory",
            args.path.display(),
            dir.display()
        );
        return Ok(1);
    };
    let count = if args.all { history.len() } else { 1 };
    let explanations: Vec<Explanation> = (0..count)
        .filter_map(|i| log.explain(&history[i..]))
        .collect();
    if args.json {
        if args.all {
            serde_json::to_writer_pretty(&mut *out, &explanations)?;
        } else {
            serde_json::to_writer_pretty(&mut *out, &explanations[0])?;
        }
        writeln!(out)?;
    } else {
        let text: Vec<String> = explanations.iter().map(ToString::to_string).collect();
        write!(out, "{}", text.join("\n"))?;
    }
    Ok(0)
}

/// The compiles of the output at `path`, or of the last compile in the directory `path`.
fn history(log: &KeyLog, path: &Path) -> anyhow::Result<Vec<KeyRecord>> {
    let found = if path.is_dir() {
        log.latest_in(path)?
    } else {
        log.history(&output_path(path))?
    };
    Ok(found)
}
