//! `llama cache`: the local store seen as a cache, as ccache's `-s -C -M
//! --evict-older-than` and sccache's `--show-stats` show and manage theirs.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use llama_cc::client::DaemonPaths;
use llama_core::{Config, Source, Store, keys};
use serde_json::json;

use crate::cli::{CacheAction, CacheArgs};
use crate::daemon;

/// Runs one `llama cache` subcommand, writing to `out`.
pub fn run(config: &Config, args: &CacheArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let open = |config: &Config| {
        Store::open(config.dir(), config.cache_size())
            .with_context(|| format!("opening the store (dir = {})", config.dir().display()))
    };
    match &args.action {
        None => show(config, &open(config)?, args.json, out),
        Some(CacheAction::Show { json }) => show(config, &open(config)?, *json || args.json, out),
        Some(CacheAction::Clear) => {
            // The daemon keeps manifests and compiler identities in memory: a clear it
            // did not see would leave it answering from them.
            if daemon::is_running(config) {
                daemon::stop(config)?;
            }
            let store = open(config)?.with_eviction_grace(Duration::ZERO);
            let (entries, bytes) = store.evict_older_than(Duration::ZERO)?;
            llama_cc::explain::prune(&config.dir(), Duration::ZERO);
            writeln!(
                out,
                "llama cache: removed {entries} entries ({})",
                size(bytes)
            )?;
            Ok(0)
        }
        Some(CacheAction::Evict { older_than }) => {
            let age = humantime::parse_duration(older_than.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "--older-than {older_than}: {e} (a duration such as 7d, 12h or 90m)"
                )
            })?;
            let (entries, bytes) = open(config)?.evict_older_than(age)?;
            llama_cc::explain::prune(&config.dir(), age);
            writeln!(
                out,
                "llama cache: removed {entries} entries not used for {} ({})",
                humantime::format_duration(age),
                size(bytes)
            )?;
            Ok(0)
        }
        Some(CacheAction::SetLimit { size: limit }) => set_limit(limit, out),
        Some(CacheAction::Verify { json }) => verify(&open(config)?, *json || args.json, out),
    }
}

fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).to_string()
}

/// The hits and misses llamacc counted, from the daemon or its saved counters.
fn hit_rate(config: &Config) -> (u64, u64) {
    let paths = DaemonPaths::new(&config.dir());
    let snapshot = crate::stats_cmd::snapshot(&paths).unwrap_or_default();
    let count = |k: &str| snapshot.counters.get(k).copied().unwrap_or(0);
    (count("hits"), count("misses") + count("remote"))
}

fn show(config: &Config, store: &Store, as_json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let usage = store.usage();
    let limit = config.cache_size();
    let (hits, misses) = hit_rate(config);
    let rate = if hits + misses == 0 {
        None
    } else {
        Some(hits as f64 / (hits + misses) as f64)
    };
    if as_json {
        let value = json!({
            "location": config.dir(),
            "bytes": usage.bytes,
            "limit": limit,
            "limit_source": config.source(&keys::CACHE_SIZE).to_string(),
            "action_results": usage.action_results,
            "manifests": usage.manifests,
            "blobs": usage.blobs,
            "compressed_blobs": usage.compressed_blobs,
            "executables": usage.executables,
            "hits": hits,
            "misses": misses,
            "hit_rate": rate,
        });
        let mut bytes = serde_json::to_vec_pretty(&value)?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
        return Ok(0);
    }
    writeln!(out, "location            {}", config.dir().display())?;
    writeln!(
        out,
        "size                {} of {} ({:.0} %)",
        size(usage.bytes),
        size(limit),
        usage.bytes as f64 * 100.0 / limit.max(1) as f64
    )?;
    writeln!(out, "cached results      {}", usage.action_results)?;
    writeln!(out, "llamacc manifests   {}", usage.manifests)?;
    writeln!(
        out,
        "blobs               {} ({} zstd-compressed)",
        usage.blobs + usage.compressed_blobs + usage.executables,
        usage.compressed_blobs
    )?;
    match rate {
        Some(r) => writeln!(
            out,
            "llamacc hit rate    {:.1} % ({hits} hits, {misses} misses; `llama stats` for more)",
            r * 100.0
        )?,
        None => writeln!(out, "llamacc hit rate    no compiles counted yet")?,
    }
    Ok(0)
}

fn set_limit(limit: &str, out: &mut dyn Write) -> anyhow::Result<i32> {
    let path = Config::file_path();
    Config::update_file(&path, &[(keys::CACHE_SIZE.name(), limit)])
        .with_context(|| format!("setting cache_size in {}", path.display()))?;
    let config = Config::load().with_context(|| format!("reading {}", path.display()))?;
    if matches!(config.source(&keys::CACHE_SIZE), Source::Env(_)) {
        writeln!(
            out,
            "llama cache: note: LLAMA_CACHE_SIZE is set in this environment and overrides the file"
        )?;
    }
    let store = Store::open(config.dir(), config.cache_size())?;
    let freed = store.evict()?;
    writeln!(
        out,
        "llama cache: cache_size = {limit} in {}; {} evicted now",
        path.display(),
        size(freed)
    )?;
    // The daemon reads cache_size when it starts.
    if daemon::is_running(&config) {
        writeln!(
            out,
            "llama cache: the running daemon keeps its limit until it restarts (`llama daemon stop`)"
        )?;
    }
    Ok(0)
}

fn verify(store: &Store, as_json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let report = store.verify_all()?;
    let damaged = report.blobs_removed + report.records_removed;
    if as_json {
        let value = json!({
            "blobs_ok": report.blobs_ok,
            "blobs_removed": report.blobs_removed,
            "records_ok": report.records_ok,
            "records_removed": report.records_removed,
        });
        let mut bytes = serde_json::to_vec_pretty(&value)?;
        bytes.push(b'\n');
        out.write_all(&bytes)?;
    } else {
        writeln!(
            out,
            "llama cache: {} blobs and {} records whole; {} blobs and {} records damaged, removed",
            report.blobs_ok, report.records_ok, report.blobs_removed, report.records_removed
        )?;
    }
    Ok(if damaged > 0 { 1 } else { 0 })
}
