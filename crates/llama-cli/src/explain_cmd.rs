//! `llama explain`: why a compile missed, from the keys llamacc remembers per object.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use llama_cc::explain::{self, KeyRecord};
use llama_core::Config;
use serde_json::json;

use crate::cli::ExplainArgs;

/// Record files read when looking for a directory's last compile.
const MAX_SCANNED: usize = 100_000;

/// Explains the last compile of `args.path`.
pub fn run(config: &Config, args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let path = cwd.join(&args.path);
    let llama_dir = config.dir();
    let records = if path.is_dir() {
        last_in(&llama_dir, &path)
    } else {
        explain::load(&llama_dir, &path)
    };
    if args.json {
        let differences = match (records.first(), records.get(1)) {
            (Some(now), Some(before)) if !now.hit => explain::differences(before, now),
            _ => Vec::new(),
        };
        let mut bytes = serde_json::to_vec_pretty(&json!({
            "records": records,
            "differences": differences,
        }))?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
    } else if records.is_empty() {
        writeln!(
            out,
            "llama explain: no compile of {} through llamacc is recorded in {} (llamacc remembers the last four compiles of each object it cached or tried to)",
            path.display(),
            explain::dir(&llama_dir).display()
        )?;
    } else {
        write!(out, "{}", explain::explain(&records))?;
    }
    Ok(if records.is_empty() { 1 } else { 0 })
}

/// The records of the newest compile whose object or working directory is `dir`.
fn last_in(llama_dir: &Path, dir: &Path) -> Vec<KeyRecord> {
    let Ok(entries) = std::fs::read_dir(explain::dir(llama_dir)) else {
        return Vec::new();
    };
    let in_dir = |r: &KeyRecord| r.cwd == dir || r.output.parent() == Some(dir);
    entries
        .flatten()
        .take(MAX_SCANNED)
        .map(|e| explain::read_file(&e.path()))
        .filter(|records: &Vec<KeyRecord>| records.first().is_some_and(in_dir))
        .max_by_key(|records| records.first().map_or(0, |r| r.at))
        .unwrap_or_default()
}
