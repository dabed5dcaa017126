//! Explanations in plain words: what `llama explain` prints and `LLAMACC_DEBUG=1` logs.

use std::fmt;

use super::diff::{Conclusion, Difference, Explanation};
use super::{KeyRecord, RECORDS_PER_OUTPUT};
use crate::stats::Outcome;

/// Differences past this many are counted, not listed, in text (`--json` lists them all):
/// a compiler upgrade can change every system header.
const MAX_LISTED: usize = 30;

/// When `record`'s compile ran (RFC 3339, UTC, to the millisecond: a build compiles many
/// files a second).
pub(super) fn time(record: &KeyRecord) -> String {
    humantime::format_rfc3339_millis(record.time()).to_string()
}

/// What came of a compile, in words.
pub(super) fn summary(record: &KeyRecord) -> String {
    let reason = record.reason.as_deref();
    let because = |what: &str| match reason {
        Some(r) => format!("{what} ({r})"),
        None => what.to_string(),
    };
    let Some(outcome) = Outcome::from_name(&record.outcome) else {
        return record.outcome.clone();
    };
    match outcome {
        Outcome::Hit => "hit: served from the cache".into(),
        Outcome::Miss => because("miss: compiled here and cached"),
        Outcome::Remote => "miss: compiled remotely and cached".into(),
        Outcome::Fallback => because("miss: the remote backend failed, compiled here and cached"),
        Outcome::Uncacheable => because("compiled, but the result cannot be cached"),
        Outcome::CompileError => format!(
            "the compiler failed (exit status {}): a failed compile is never cached",
            record
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string())
        ),
        Outcome::Local => because("not cached: llamacc ran the compiler directly"),
        Outcome::Error => because("not cached: llamacc failed and ran the compiler directly"),
        Outcome::RemoteError => {
            because("not compiled: the remote backend failed and LLAMACC_LOCAL_FALLBACK=0")
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} (compiled {})", self.output, self.time)?;
        writeln!(f, "  {}", self.summary)?;
        let earlier = self.compared_with.as_ref();
        let when = earlier.map_or("", |e| e.time.as_str());
        match &self.conclusion {
            Conclusion::Hit { reused: Some(t) } => {
                writeln!(f, "  the result was made by the compile of {t}")
            }
            Conclusion::Hit { reused: None } | Conclusion::NotKeyed => Ok(()),
            Conclusion::FirstCompile => writeln!(
                f,
                "  no earlier compile of this output through the cache is recorded, so there is \
                 nothing to compare with (llama keeps the last {RECORDS_PER_OUTPUT} compiles of \
                 each output, and evicts old records with the cache)"
            ),
            Conclusion::Changed => {
                writeln!(
                    f,
                    "  what differs from the closest earlier compile ({when}, {}):",
                    earlier.map_or("", |e| e.summary.as_str())
                )?;
                self.list_differences(f)
            }
            Conclusion::EarlierNotCached => writeln!(
                f,
                "  nothing in the key differs from the compile of {when}, but that one was not \
                 cached either: {}",
                earlier.map_or("", |e| e.summary.as_str())
            ),
            Conclusion::ResultGone => writeln!(
                f,
                "  nothing in the key differs from the compile of {when}, which was cached: its \
                 result is no longer in the cache (evicted to keep the cache within cache_size, \
                 or the cache was cleared)"
            ),
            Conclusion::HeadersUnknown => writeln!(
                f,
                "  nothing in the key differs from the compile of {when} up to the headers, and \
                 their digests cannot be compared: a failed or uncacheable compile records no \
                 header list, and an old one may have been evicted"
            ),
        }
    }
}

impl Explanation {
    fn list_differences(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.differences.iter().take(MAX_LISTED) {
            let (headline, details) = d.words();
            writeln!(f, "  - {headline}")?;
            for line in details {
                writeln!(f, "      {line}")?;
            }
        }
        if self.differences.len() > MAX_LISTED {
            writeln!(
                f,
                "  ... and {} more (--json lists them all)",
                self.differences.len() - MAX_LISTED
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (headline, details) = self.words();
        write!(f, "{headline}")?;
        for line in details {
            write!(f, "; {line}")?;
        }
        Ok(())
    }
}

/// A digest as written, or what its absence means.
fn digest(d: Option<&String>) -> String {
    d.map_or_else(|| "(absent)".to_string(), |d| format!("sha256:{d}"))
}

/// A value as written, quoted so that spaces and empty values show.
fn value(v: Option<&String>) -> String {
    v.map_or_else(|| "(not set)".to_string(), |v| format!("{v:?}"))
}

fn driver(cxx: bool) -> &'static str {
    if cxx {
        "the C++ driver (llamac++)"
    } else {
        "the C driver (llamacc)"
    }
}

impl Difference {
    /// A headline, and the lines under it (digests, which are long).
    fn words(&self) -> (String, Vec<String>) {
        let was_now = |was: Option<&String>, now: Option<&String>| {
            vec![
                format!("was {}", digest(was)),
                format!("now {}", digest(now)),
            ]
        };
        match self {
            Difference::CompilerPath { was, now } => (
                format!("the compiler is another program: {was} before, {now} now"),
                vec![],
            ),
            Difference::Driver { was_cxx, now_cxx } => (
                format!(
                    "the compile went through {}, and before through {}",
                    driver(*now_cxx),
                    driver(*was_cxx)
                ),
                vec![],
            ),
            Difference::CompilerVersion { was, now } => (
                format!("the compiler was upgraded: {was:?} before, {now:?} now"),
                vec![],
            ),
            Difference::CompilerFile {
                path,
                was,
                now,
                version,
            } => (
                format!("the compiler changed: {path} has other content ({version})"),
                was_now(was.as_ref(), now.as_ref()),
            ),
            Difference::CompilerIdentity { was, now } => (
                "the compiler's identity changed: its --version output differs past the first line"
                    .to_string(),
                was_now(Some(was), Some(now)),
            ),
            Difference::Argument { index, was, now } => {
                (format!("argument {index} changed: {was} → {now}"), vec![])
            }
            Difference::ArgumentAdded { index, now } => {
                (format!("argument {index} is new: {now}"), vec![])
            }
            Difference::ArgumentRemoved { index, was } => (
                format!("argument {was} was removed (it was argument {index})"),
                vec![],
            ),
            Difference::Environment { name, was, now } => (
                format!(
                    "environment variable {name} changed: {} → {}",
                    value(was.as_ref()),
                    value(now.as_ref())
                ),
                vec![],
            ),
            Difference::Directory { was, now } => (
                format!("the working directory changed: {was} → {now}"),
                vec![],
            ),
            Difference::LogicalDirectory { was, now } => (
                format!(
                    "$PWD (recorded in objects when it names the directory through a symlink) \
                     changed: {} → {}",
                    value(was.as_ref()),
                    value(now.as_ref())
                ),
                vec![],
            ),
            Difference::Source { was, now } => {
                (format!("the source is another file: {was} → {now}"), vec![])
            }
            Difference::SourceContent { path, was, now } => (
                format!("the source {path} changed"),
                was_now(Some(was), Some(now)),
            ),
            Difference::InputFile { path, was, now } => (
                format!("{path}, which a flag makes the compiler read, changed"),
                was_now(Some(was), Some(now)),
            ),
            Difference::Header { path, was, now } => (
                format!("header {path} changed"),
                was_now(Some(was), Some(now)),
            ),
            Difference::ShadowingHeader {
                path,
                shadows: Some(old),
            } => (format!("a new header {path} now shadows {old}"), vec![]),
            Difference::ShadowingHeader {
                path,
                shadows: None,
            } => (
                format!("a new header {path}, absent before, is now read"),
                vec![],
            ),
            Difference::HeaderAdded { path } => (
                format!("header {path} is read now, and was not before"),
                vec![],
            ),
            Difference::HeaderDropped { path } => {
                (format!("header {path} is no longer read"), vec![])
            }
            Difference::HeaderGone { path } => (
                format!("{path}, which __has_include found before, is no longer found"),
                vec![],
            ),
            Difference::SystemHeaders => (
                "the system include directories changed (a system header was added, removed \
                 or changed)"
                    .to_string(),
                vec![],
            ),
            Difference::Cpu => (
                "the CPU that -march=native (or -mtune, -mcpu) stands for changed".to_string(),
                vec![],
            ),
        }
    }
}
