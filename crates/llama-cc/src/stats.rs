//! Counters for every outcome of a compile, ccache-style: each has a stable name, a
//! description, and is incremented in one place per compile.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What happened to one compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache without running the compiler.
    Hit,
    /// Compiled, and the result recorded.
    Miss,
    /// Compiled, but the result could not be cached (the reason is counted too).
    Uncacheable,
    /// The compiler reported an error (never cached, never retried).
    CompileError,
    /// Handed back to run the real compiler directly (the reason is counted too).
    Local,
    /// llamacc's own machinery failed and the compiler ran directly instead.
    Error,
    /// Compiled by the remote backend, and the result recorded.
    Remote,
    /// The remote backend failed; compiled on this machine instead.
    Fallback,
    /// The remote backend failed and local fallback is off (`LLAMACC_LOCAL_FALLBACK=0`).
    RemoteError,
}

/// Why the daemon itself (not the argument parser) kept a compile out of the cache: each is
/// counted under its [`TrustReason::name`] among the reasons `llama stats` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustReason {
    /// An input's mtime or ctime was at or after the moment the compiler started: what the
    /// compiler read may not be what was hashed, so the result is delivered, not recorded.
    InputTooNew,
    /// An output path or a command-line input steps out of a symlinked directory with `..`:
    /// the kernel resolves it where a lexical reading would not, so the compiler runs
    /// directly.
    DotDotThroughSymlink,
    /// An output path names a directory that does not exist: the compiler reports it.
    UnresolvableOutput,
    /// `$PWD` names the working directory through a symlink, and the compiler writes that
    /// name into objects: a remote compiler cannot, so the compile stays here.
    LogicalDirectory,
}

impl TrustReason {
    /// The stable name counted in `llama stats` (`reasons` of `--json`).
    pub fn name(self) -> &'static str {
        match self {
            TrustReason::InputTooNew => "input-too-new",
            TrustReason::DotDotThroughSymlink => "dotdot-through-symlink",
            TrustReason::UnresolvableOutput => "unresolvable-output",
            TrustReason::LogicalDirectory => "logical-directory",
        }
    }
}

/// Why the daemon ran a compile directly, or compiled it without recording the result,
/// for a reason the arguments alone do not give ([`crate::LocalReason`] names those). Each
/// is counted under its [`CannotCache::name`] among the reasons `llama stats` lists; the
/// detail (which file, which variable) goes to messages only, so the names stay a fixed set.
///
/// | variant                  | name                               | counted with         |
/// |--------------------------|------------------------------------|----------------------|
/// | `LocalSetting`           | `LLAMACC_LOCAL`                    | local                |
/// | `DependenciesOutput`     | `environment DEPENDENCIES_OUTPUT`  | local                |
/// | `SunproDependencies`     | `environment SUNPRO_DEPENDENCIES`  | local                |
/// | `CompilerNotFound`       | `compiler not found`               | local                |
/// | `InputNotRegularFile`    | `input not a regular file`         | local                |
/// | `UnreadableInput`        | `unreadable input`                 | local, uncacheable   |
/// | `NoDepfile`              | `no depfile written`               | uncacheable          |
/// | `AssemblerInclude`       | `assembler .include`               | uncacheable          |
/// | `TimeMacros`             | `__DATE__/__TIME__`                | uncacheable          |
/// | `AssemblerIncbin`        | `assembler .incbin`                | uncacheable          |
/// | `ComputedHasInclude`     | `computed __has_include`           | uncacheable          |
/// | `Trust(reason)`          | [`TrustReason::name`]              | local, uncacheable   |
///
/// A reason met while preparing a remote compile is counted with the miss that compiled
/// here instead ([`NotRemote::Cannot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CannotCache {
    /// `LLAMACC_LOCAL` is set: every compile runs directly.
    LocalSetting,
    /// `DEPENDENCIES_OUTPUT` makes the compiler write a depfile llamacc does not know of.
    DependenciesOutput,
    /// `SUNPRO_DEPENDENCIES`, the same with system headers.
    SunproDependencies,
    /// The compiler is not in the client's `PATH` (the shell would say so too).
    CompilerNotFound,
    /// The source, a forced include or a file input is a device or a directory
    /// (`-x c /dev/null`, as configure scripts probe).
    InputNotRegularFile,
    /// An input cannot be read: the compiler reports it better.
    UnreadableInput,
    /// The compiler wrote no depfile, so what it read is unknown.
    NoDepfile,
    /// Plain assembly that pulls files in with `.include`, which no depfile lists.
    AssemblerInclude,
    /// An input uses `__DATE__`, `__TIME__` or `__TIMESTAMP__`: the output changes every
    /// second.
    TimeMacros,
    /// An input uses the assembler's `.incbin`, which reads a file no depfile lists.
    AssemblerIncbin,
    /// An input tests `__has_include` with a macro: which files matter cannot be known.
    ComputedHasInclude,
    /// A trust check failed.
    Trust(TrustReason),
}

impl CannotCache {
    /// The stable name counted in `llama stats` (`reasons` of `--json`).
    pub fn name(self) -> &'static str {
        match self {
            CannotCache::LocalSetting => "LLAMACC_LOCAL",
            CannotCache::DependenciesOutput => "environment DEPENDENCIES_OUTPUT",
            CannotCache::SunproDependencies => "environment SUNPRO_DEPENDENCIES",
            CannotCache::CompilerNotFound => "compiler not found",
            CannotCache::InputNotRegularFile => "input not a regular file",
            CannotCache::UnreadableInput => "unreadable input",
            CannotCache::NoDepfile => "no depfile written",
            CannotCache::AssemblerInclude => "assembler .include",
            CannotCache::TimeMacros => "__DATE__/__TIME__",
            CannotCache::AssemblerIncbin => "assembler .incbin",
            CannotCache::ComputedHasInclude => "computed __has_include",
            CannotCache::Trust(reason) => reason.name(),
        }
    }
}

impl From<TrustReason> for CannotCache {
    fn from(reason: TrustReason) -> Self {
        CannotCache::Trust(reason)
    }
}

/// Why a miss compiled on this machine although a remote executor is set. Each is counted
/// under its [`NotRemote::name`] beside the outcome (`misses`, or `remote_fallbacks` /
/// `remote_errors` for `Failed`); the detail goes to `LLAMACC_VERBOSE` and the log.
///
/// | variant             | name                                 |
/// |---------------------|--------------------------------------|
/// | `Cannot(reason)`    | [`CannotCache::name`]                |
/// | `Arguments`         | `not-remote:arguments`               |
/// | `LocalSearchEnv`    | `not-remote:local-search-env`        |
/// | `OldDwarfAbsolute`  | `not-remote:old-dwarf-absolute-source` |
/// | `Toolchain`         | `not-remote:toolchain`               |
/// | `DependencyScan`    | `not-remote:dependency-scan`         |
/// | `Inputs`            | `not-remote:inputs`                  |
/// | `LocalStore`        | `not-remote:local-store`             |
/// | `Failed`            | `remote failed`                      |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRemote {
    /// What the remote compile would read cannot be known or shipped (a trust check, no
    /// depfile, an input's content).
    Cannot(CannotCache),
    /// An argument names something of this machine that cannot be rebased under the remote
    /// input root.
    Arguments,
    /// A variable such as `CPATH` makes the compiler search directories of this machine.
    LocalSearchEnv,
    /// DWARF before version 5 with an absolute source path: gcc 12 would name the source
    /// twice in the object (PR101575), unlike a local compile.
    OldDwarfAbsolute,
    /// The compiler's toolchain cannot be found or shipped.
    Toolchain,
    /// The local compiler could not list what the compile reads.
    DependencyScan,
    /// An input could not be hashed or placed in the input tree.
    Inputs,
    /// The local store could not record what the remote compile returned (a full disk):
    /// this machine's fault, not the backend's, so the backend is not marked as failing.
    LocalStore,
    /// The remote backend failed (or failed moments ago).
    Failed,
}

impl NotRemote {
    /// The stable name counted in `llama stats` (`reasons` of `--json`).
    pub fn name(self) -> &'static str {
        match self {
            NotRemote::Cannot(reason) => reason.name(),
            NotRemote::Arguments => "not-remote:arguments",
            NotRemote::LocalSearchEnv => "not-remote:local-search-env",
            NotRemote::OldDwarfAbsolute => "not-remote:old-dwarf-absolute-source",
            NotRemote::Toolchain => "not-remote:toolchain",
            NotRemote::DependencyScan => "not-remote:dependency-scan",
            NotRemote::Inputs => "not-remote:inputs",
            NotRemote::LocalStore => "not-remote:local-store",
            NotRemote::Failed => "remote failed",
        }
    }
}

/// The reason counted with [`Outcome::Error`]: llamacc's own machinery failed (the message
/// says how).
pub const ERROR_REASON: &str = "error";

/// The names of what a remote backend consumed, in [`StatsSnapshot::cost`]: each is
/// spelled here once, for the daemon that fills them and the report that shows them.
pub mod cost {
    /// Executions the backend started.
    pub const INVOCATIONS: &str = "invocations";
    /// Actions the backend's own action cache served.
    pub const REMOTE_CACHE_HITS: &str = "remote_cache_hits";
    /// Lambda compute, in GB-seconds.
    pub const GB_SECONDS: &str = "gb_seconds";
    /// Requests to the object store.
    pub const S3_REQUESTS: &str = "s3_requests";
    /// Bytes uploaded.
    pub const BYTES_UP: &str = "bytes_up";
    /// Bytes downloaded.
    pub const BYTES_DOWN: &str = "bytes_down";
    /// Calls to a REAPI server.
    pub const CALLS: &str = "calls";
    /// The cost at list prices, in dollars.
    pub const DOLLARS: &str = "dollars";
}

/// Each counter: (name in `llama stats --json`, description in `llama stats`).
const COUNTERS: &[(Outcome, &str, &str)] = &[
    (Outcome::Hit, "hits", "served from the cache"),
    (Outcome::Miss, "misses", "compiled and cached"),
    (
        Outcome::Uncacheable,
        "uncacheable",
        "compiled, result not cacheable",
    ),
    (
        Outcome::CompileError,
        "compile_errors",
        "compile errors (not cached)",
    ),
    (Outcome::Remote, "remote", "compiled remotely and cached"),
    (
        Outcome::Fallback,
        "remote_fallbacks",
        "remote failed, compiled here",
    ),
    (
        Outcome::RemoteError,
        "remote_errors",
        "remote failed, not compiled (no fallback)",
    ),
    (Outcome::Local, "local", "run by the real compiler directly"),
    (
        Outcome::Error,
        "errors",
        "llamacc errors (fell back to the compiler)",
    ),
];

/// A snapshot of the counters, as `llama stats --json` prints it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Every compile llamacc saw.
    pub compiles: u64,
    /// Counter name → count.
    pub counters: BTreeMap<String, u64>,
    /// Why compiles ran directly or could not be cached → count.
    pub reasons: BTreeMap<String, u64>,
    /// Compiler time the hits did not spend, in seconds.
    pub time_saved_secs: f64,
    /// What the remote backend consumed and cost (`invocations`, `gb_seconds`,
    /// `s3_requests`, `bytes_up`, `bytes_down`, `remote_cache_hits`, `calls`, and `dollars`
    /// only on a backend with list prices, Lambda); empty on this machine's backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost: BTreeMap<String, f64>,
    /// How remote compiles' inputs were listed: [`scan::WALKED`] by the include scanner,
    /// [`scan::MISSED`] found short by the compiler after a failed compile, any other key a
    /// reason the compiler's `-M` was asked instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scanner: BTreeMap<String, u64>,
}

/// The include scanner's counters that are not reasons to ask `-M`.
pub mod scan {
    /// Inputs listed by the scanner's walk.
    pub const WALKED: &str = "walked";
    /// A failed remote compile whose inputs the compiler's `-M` found short: the scanner
    /// missed a header (a bug: it is compiled again with the compiler's list).
    pub const MISSED: &str = "missed";
    /// `LLAMACC_INCLUDE_SCANNER=0`: the compiler's `-M` was asked.
    pub const SWITCHED_OFF: &str = "switched-off";
    /// `LLAMACC_LOCAL_PREPROCESS` / `FULL_PREPROCESS`: the source was preprocessed here and
    /// shipped without its headers.
    pub const PREPROCESSED: &str = "preprocessed-here";
}

/// How `llama stats` shows each cost entry: (name, label, decimals).
const COST_LINES: &[(&str, &str, usize)] = &[
    (cost::INVOCATIONS, "remote invocations", 0),
    (
        cost::REMOTE_CACHE_HITS,
        "served by the remote action cache",
        0,
    ),
    (cost::GB_SECONDS, "compute (GB-seconds)", 1),
    (cost::S3_REQUESTS, "object store requests", 0),
    (cost::BYTES_UP, "bytes uploaded", 0),
    (cost::BYTES_DOWN, "bytes downloaded", 0),
    (cost::CALLS, "calls to the REAPI server", 0),
    (cost::DOLLARS, "cost at list prices ($)", 4),
];

/// The live counters of a daemon.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<StatsSnapshot>,
}

impl Stats {
    /// Starts from a saved snapshot.
    pub fn from_snapshot(snapshot: StatsSnapshot) -> Stats {
        Stats {
            inner: Mutex::new(snapshot),
        }
    }

    /// Records one compile's outcome, with its reason when it has one, and the compiler
    /// time a hit saved.
    pub fn record(&self, outcome: Outcome, reason: Option<&str>, saved_secs: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.compiles += 1;
        let name = counter_name(outcome);
        *s.counters.entry(name.to_string()).or_default() += 1;
        if let Some(reason) = reason {
            *s.reasons.entry(reason.to_string()).or_default() += 1;
        }
        s.time_saved_secs += saved_secs.max(0.0);
    }

    /// Counts one listing of a remote compile's inputs under `key` (see [`scan`]).
    pub fn count_scan(&self, key: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *s.scanner.entry(key.to_string()).or_default() += 1;
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = StatsSnapshot::default();
    }
}

fn counter_name(outcome: Outcome) -> &'static str {
    COUNTERS
        .iter()
        .find(|(o, _, _)| *o == outcome)
        .map(|(_, name, _)| *name)
        .unwrap_or("unknown")
}

impl Outcome {
    /// What it means, as `llama stats` and `LLAMACC_VERBOSE` say it.
    pub fn description(self) -> &'static str {
        COUNTERS
            .iter()
            .find(|(o, _, _)| *o == self)
            .map(|(_, _, d)| *d)
            .unwrap_or("unknown")
    }
}

impl StatsSnapshot {
    /// A counter's value by name.
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The human-readable report of `llama stats`.
    pub fn report(&self) -> String {
        let mut out = format!("{:<44} {:>8}\n", "compiles", self.compiles);
        for (_, name, description) in COUNTERS {
            out.push_str(&format!("  {:<42} {:>8}\n", description, self.get(name)));
        }
        if !self.reasons.is_empty() {
            out.push_str("why compiles ran directly or were not cached:\n");
            for (reason, n) in &self.reasons {
                out.push_str(&format!("  {reason:<42} {n:>8}\n"));
            }
        }
        if !self.cost.is_empty() {
            out.push_str("remote backend:\n");
            // Each backend fills its own entries (a REAPI server bills no dollars, Lambda
            // takes no REAPI calls): the others stay out of the report.
            for (name, label, decimals) in COST_LINES {
                let v = self.cost.get(*name).copied().unwrap_or(0.0);
                if v == 0.0 && *name != cost::INVOCATIONS {
                    continue;
                }
                out.push_str(&format!("  {label:<42} {v:>8.decimals$}\n"));
            }
        }
        if !self.scanner.is_empty() {
            out.push_str("remote compiles' headers:\n");
            for (key, n) in &self.scanner {
                let label = match key.as_str() {
                    scan::WALKED => "listed by the include scanner".to_string(),
                    scan::MISSED => "MISSED by the scanner (please report)".to_string(),
                    scan::PREPROCESSED => "preprocessed here, sent without headers".to_string(),
                    reason => format!("asked -M: {reason}"),
                };
                out.push_str(&format!("  {label:<42} {n:>8}\n"));
            }
        }
        let cacheable = self.get("hits") + self.get("misses") + self.get("remote");
        if cacheable > 0 {
            out.push_str(&format!(
                "{:<44} {:>7.1}%\n",
                "hit rate",
                100.0 * self.get("hits") as f64 / cacheable as f64
            ));
        }
        out.push_str(&format!(
            "{:<44} {:>7.1}s\n",
            "compiler time saved", self.time_saved_secs
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_one_counter() {
        for o in [
            Outcome::Hit,
            Outcome::Miss,
            Outcome::Uncacheable,
            Outcome::CompileError,
            Outcome::Local,
            Outcome::Error,
            Outcome::Remote,
            Outcome::Fallback,
            Outcome::RemoteError,
        ] {
            assert_eq!(COUNTERS.iter().filter(|(x, _, _)| *x == o).count(), 1);
        }
    }

    #[test]
    fn record_and_report() {
        let s = Stats::default();
        s.record(Outcome::Hit, None, 0.5);
        s.record(Outcome::Local, Some("link"), 0.0);
        let snap = s.snapshot();
        assert_eq!(snap.compiles, 2);
        assert_eq!(snap.get("hits"), 1);
        assert!(snap.report().contains("link"));
    }

    #[test]
    fn trust_reasons_have_distinct_names() {
        let all = [
            TrustReason::InputTooNew,
            TrustReason::DotDotThroughSymlink,
            TrustReason::UnresolvableOutput,
            TrustReason::LogicalDirectory,
        ];
        let mut names: Vec<_> = all.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn daemon_reasons_have_distinct_names() {
        let cannot = [
            CannotCache::LocalSetting,
            CannotCache::DependenciesOutput,
            CannotCache::SunproDependencies,
            CannotCache::CompilerNotFound,
            CannotCache::InputNotRegularFile,
            CannotCache::UnreadableInput,
            CannotCache::NoDepfile,
            CannotCache::AssemblerInclude,
            CannotCache::TimeMacros,
            CannotCache::AssemblerIncbin,
            CannotCache::ComputedHasInclude,
            CannotCache::Trust(TrustReason::InputTooNew),
            CannotCache::Trust(TrustReason::DotDotThroughSymlink),
            CannotCache::Trust(TrustReason::UnresolvableOutput),
            CannotCache::Trust(TrustReason::LogicalDirectory),
        ];
        let not_remote = [
            NotRemote::Arguments,
            NotRemote::LocalSearchEnv,
            NotRemote::OldDwarfAbsolute,
            NotRemote::Toolchain,
            NotRemote::DependencyScan,
            NotRemote::Inputs,
            NotRemote::Failed,
        ];
        let mut names: Vec<_> = cannot
            .iter()
            .map(|r| r.name())
            .chain(not_remote.iter().map(|r| r.name()))
            .chain([ERROR_REASON])
            .collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}
