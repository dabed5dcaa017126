//! `llama cache`: the local store's management, as ccache's `-s -C -M --evict-older-than`
//! and sccache's `--show-stats --zero-stats` do it: show where it is, its size, limit,
//! entries and llamacc's hit rate; clear it; evict by age; set its limit (which persists,
//! in the config file); verify it. Each prints a line or a table, or JSON with `--json`.
//!
//! Everything here runs beside a live daemon: the store's removals take its eviction lock
//! and keep its rules (see `llama_core::Store::clear`). Only a new limit needs the daemon
//! to start again, since it opened the store with the old one.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use llama_cc::client::DaemonPaths;
use llama_core::{Config, EntryKind, Removed, Source, Store, StoreUsage, Usage, keys};
use serde::Serialize;

use crate::cli::{CacheAction, CacheArgs};
use crate::daemon::{self, Shutdown};
use crate::stats_cmd;

/// Exit status of `verify` when it removed damaged entries.
const EXIT_DAMAGE_REMOVED: i32 = 1;

/// How `llama cache` names each kind of entry.
fn label(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Blob => "blobs",
        EntryKind::CompressedBlob => "compressed blobs",
        EntryKind::ExecutableCopy => "executable copies",
        EntryKind::ActionResult => "cached results",
        EntryKind::Manifest => "compile manifests",
    }
}

/// Runs the subcommand (show when none is given).
pub fn run(config: &Config, args: &CacheArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let json = args.json;
    match &args.action {
        None | Some(CacheAction::Show) => show(config, json, out),
        Some(CacheAction::Clear) => clear(config, json, out),
        Some(CacheAction::Evict(evict)) => {
            let age = evict
                .age()
                .context("llama cache evict needs --older-than AGE (e.g. 2d)")?;
            evict_older_than(config, age, json, out)
        }
        Some(CacheAction::Limit(limit)) => set_limit(config, &limit.size, json, out),
        Some(CacheAction::Verify) => verify(config, json, out),
        Some(CacheAction::ZeroStats) => {
            stats_cmd::zero(&DaemonPaths::new(&config.dir()));
            emit(out, json, &serde_json::json!({ "zeroed": true }), |out| {
                writeln!(out, "llama cache: llamacc's counters zeroed")
            })
        }
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(config.dir(), config.cache_size()).with_context(|| {
        format!(
            "opening the cache (dir = {}; set LLAMA_DIR or `dir` in {} to use another)",
            config.dir().display(),
            Config::file_path().display()
        )
    })
}

/// Prints `value` as JSON, or the text `text` writes, and exits 0.
fn emit<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<i32> {
    if json {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)?;
    } else {
        text(out)?;
    }
    Ok(0)
}

/// What `llama cache` shows, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Show {
    dir: PathBuf,
    config_file: PathBuf,
    /// Bytes the store holds now, counted.
    size: u64,
    limit: u64,
    /// Where the limit came from (default, the config file, LLAMA_CACHE_SIZE).
    limit_from: String,
    entries: u64,
    usage: StoreUsage,
    /// llamacc's counters that make the hit rate.
    compiles: u64,
    hits: u64,
    misses: u64,
    remote: u64,
    /// hits / (hits + misses + remote), from 0 to 1; null before the first compile.
    hit_rate: Option<f64>,
}

fn show(config: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let store = open_store(config)?;
    let usage = store.usage();
    let stats = stats_cmd::snapshot(&DaemonPaths::new(&config.dir()))?;
    let total = usage.total();
    let report = Show {
        dir: store.root().to_path_buf(),
        config_file: Config::file_path(),
        size: total.bytes,
        limit: store.limit(),
        limit_from: config.source(&keys::CACHE_SIZE).to_string(),
        entries: total.entries,
        compiles: stats.compiles,
        hits: stats.get("hits"),
        misses: stats.get("misses"),
        remote: stats.get("remote"),
        hit_rate: stats.hit_rate(),
        usage,
    };
    emit(out, json, &report, |out| show_text(&report, out))
}

fn show_text(r: &Show, out: &mut dyn Write) -> std::io::Result<()> {
    let percent = 100.0 * r.size as f64 / r.limit.max(1) as f64;
    writeln!(out, "{:<22} {}", "cache directory", r.dir.display())?;
    writeln!(out, "{:<22} {}", "config file", r.config_file.display())?;
    writeln!(
        out,
        "{:<22} {} of {} ({percent:.1}%; limit from {})",
        "size",
        human(r.size),
        human(r.limit),
        r.limit_from
    )?;
    writeln!(out, "{:<22} {}", "entries", r.entries)?;
    for kind in EntryKind::ALL {
        let Usage { entries, bytes } = r.usage.of(kind);
        writeln!(
            out,
            "  {:<20} {entries:>8} {:>12}",
            label(kind),
            human(bytes)
        )?;
    }
    match r.hit_rate {
        Some(rate) => writeln!(
            out,
            "{:<22} {:.1}% ({} hits, {} misses, {} compiled remotely)",
            "llamacc hit rate",
            100.0 * rate,
            r.hits,
            r.misses,
            r.remote
        ),
        None => writeln!(
            out,
            "{:<22} no compile through the cache yet",
            "llamacc hit rate"
        ),
    }
}

fn clear(config: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let store = open_store(config)?;
    let removed = store.clear().context("clearing the cache")?;
    emit(out, json, &removed, |out| {
        writeln!(
            out,
            "llama cache: removed {} entries ({}) from {}",
            removed.entries,
            human(removed.bytes),
            store.root().display()
        )
    })
}

/// What `evict` did, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Evicted {
    older_than_secs: u64,
    removed: Removed,
    remaining: Usage,
}

fn evict_older_than(
    config: &Config,
    age: Duration,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let store = open_store(config)?;
    let removed = store
        .evict_older_than(age)
        .context("evicting from the cache")?;
    let report = Evicted {
        older_than_secs: age.as_secs(),
        removed,
        remaining: store.usage().total(),
    };
    emit(out, json, &report, |out| {
        writeln!(
            out,
            "llama cache: removed {} entries ({}) not used in the last {}; {} entries ({}) remain",
            removed.entries,
            human(removed.bytes),
            humantime::format_duration(age),
            report.remaining.entries,
            human(report.remaining.bytes)
        )
    })
}

/// What `limit` did, as `--json` prints it.
#[derive(Debug, Serialize)]
struct LimitSet {
    config_file: PathBuf,
    limit: u64,
    evicted: u64,
    /// `stopped`, `draining` (still finishing compiles) or `not_running`.
    daemon: &'static str,
    /// The variable that overrides the file in this environment, if set.
    overridden_by: Option<&'static str>,
}

fn set_limit(config: &Config, size: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let file = Config::file_path();
    Config::update_file(&file, &[(keys::CACHE_SIZE.name(), size)])
        .with_context(|| format!("writing cache_size to {}", file.display()))?;
    let limit = keys::CACHE_SIZE
        .parse(size)
        .map_err(|expected| anyhow::anyhow!("cache_size {size:?}: expected {expected}"))?;
    let overridden_by = match config.source(&keys::CACHE_SIZE) {
        Source::Env(var) => Some(var),
        _ => None,
    };
    // The daemon opened the store with the old limit: it finishes its compiles and exits,
    // and the next compile starts one that reads the new limit.
    let daemon = match daemon::shutdown(&DaemonPaths::new(&config.dir())) {
        Shutdown::NotRunning => "not_running",
        Shutdown::Stopped => "stopped",
        Shutdown::Draining => "draining",
    };
    let store = Store::open(config.dir(), limit)
        .with_context(|| format!("opening the cache at {}", config.dir().display()))?;
    let evicted = match store.usage().total().bytes > limit {
        true => store.evict().context("evicting down to the new limit")?,
        false => 0,
    };
    let report = LimitSet {
        config_file: file,
        limit,
        evicted,
        daemon,
        overridden_by,
    };
    emit(out, json, &report, |out| limit_text(&report, out))?;
    if let Some(var) = overridden_by {
        eprintln!(
            "llama cache: warning: {var} is set in this environment and overrides the file; unset it for the new limit to apply"
        );
    }
    Ok(0)
}

fn limit_text(r: &LimitSet, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "llama cache: limit set to {} (cache_size in {})",
        human(r.limit),
        r.config_file.display()
    )?;
    if r.evicted > 0 {
        writeln!(out, "  evicted {} to fit", human(r.evicted))?;
    }
    match r.daemon {
        "stopped" => writeln!(
            out,
            "  stopped the daemon; the next compile starts one with the new limit"
        ),
        "draining" => writeln!(
            out,
            "  asked the daemon to stop; it applies the new limit once its compiles in flight end"
        ),
        _ => Ok(()),
    }
}

/// What `verify` found, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Verified {
    #[serde(flatten)]
    report: llama_core::VerifyReport,
    /// True when nothing was damaged (the exit status is then 0, else 1).
    intact: bool,
}

fn verify(config: &Config, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let store = open_store(config)?;
    let report = store.verify_all().context("verifying the cache")?;
    let r = Verified {
        intact: report.removed.is_empty(),
        report,
    };
    emit(out, json, &r, |out| {
        let v = &r.report;
        writeln!(
            out,
            "llama cache: {} blobs and {} records intact; removed {} damaged blobs and {} damaged records",
            v.blobs_ok, v.records_ok, v.blobs_removed, v.records_removed
        )?;
        for path in &v.removed {
            writeln!(out, "  removed {}", path.display())?;
        }
        Ok(())
    })?;
    Ok(if r.intact { 0 } else { EXIT_DAMAGE_REMOVED })
}

/// `bytes` in binary units, one decimal (`3.4 MiB`), as people read sizes.
fn human(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(10 << 30), "10.0 GiB");
    }
}
