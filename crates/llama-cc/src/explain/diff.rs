//! Comparing two compiles' keys part by part, and choosing the earlier compile closest to
//! the one explained.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::render::{summary, time};
use super::{CompilerKey, KeyParts, KeyRecord};
use crate::manifest::Entry;
use crate::stats::Outcome;

/// Why one compile of an output was, or was not, served from the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The output file.
    pub output: String,
    /// When it was compiled (RFC 3339, UTC).
    pub time: String,
    /// What came of it: the counter of `llama stats` (`hits`, `misses`, ...).
    pub outcome: String,
    /// The same in words, with the reason when there is one.
    pub summary: String,
    /// `llama stats`' reason, when the outcome has one.
    pub reason: Option<String>,
    /// The compiler's exit status, when the daemon ran it.
    pub exit_code: Option<i32>,
    /// The earlier compile it is compared with, when there is one to compare with.
    pub compared_with: Option<Earlier>,
    /// Each part of the key that differs from it.
    pub differences: Vec<Difference>,
    /// What the comparison says about the outcome.
    pub conclusion: Conclusion,
}

/// The earlier compile an explanation compares with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Earlier {
    /// When it was compiled (RFC 3339, UTC).
    pub time: String,
    /// What came of it (`llama stats`' counter).
    pub outcome: String,
    /// The same in words.
    pub summary: String,
    /// Whether its result went into the cache.
    pub cached: bool,
}

/// What the comparison says about the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Conclusion {
    /// Served from the cache; `reused`: when the compile that made the result ran, if its
    /// record is still kept.
    Hit {
        /// When the result was made (RFC 3339).
        reused: Option<String>,
    },
    /// llamacc ran the compiler directly, before any key was made: the summary says why.
    NotKeyed,
    /// No earlier compile of this output that went through the cache is recorded.
    FirstCompile,
    /// The differences listed are why the key did not match.
    Changed,
    /// Nothing recorded differs from the closest earlier compile, which was not cached
    /// itself (it failed, or was not cacheable).
    EarlierNotCached,
    /// Nothing recorded differs from the closest earlier compile, whose result was cached:
    /// the result (or the manifest entry leading to it) is no longer in the cache.
    ResultGone,
    /// Nothing differs up to the headers, and the headers cannot be compared: one of the two
    /// compiles has no header list (a failed compile records none; an old one may have
    /// been evicted).
    HeadersUnknown,
}

/// One part of a compile's key that differs from the earlier compile's. Digests are
/// SHA-256, in hex; `None` for a file that is absent on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    /// Another compiler program.
    CompilerPath {
        /// The earlier compiler.
        was: String,
        /// This one.
        now: String,
    },
    /// The C driver (`llamacc`) on one side, the C++ driver (`llamac++`) on the other.
    Driver {
        /// The earlier compile ran the C++ driver.
        was_cxx: bool,
        /// This one did.
        now_cxx: bool,
    },
    /// The compiler reports another version.
    CompilerVersion {
        /// The first line of its `--version` then.
        was: String,
        /// And now.
        now: String,
    },
    /// A file of the compiler (its driver, `cc1`, `as`) has other content.
    CompilerFile {
        /// The file.
        path: String,
        /// Its digest then.
        was: Option<String>,
        /// Its digest now.
        now: Option<String>,
        /// The compiler's version line.
        version: String,
    },
    /// The compiler's identity differs, and none of the above says how (its `--version`
    /// text differs past the first line).
    CompilerIdentity {
        /// The identity digest then.
        was: String,
        /// And now.
        now: String,
    },
    /// The argument at `index` (from 1, after the compiler) is another.
    Argument {
        /// Where it is now.
        index: usize,
        /// What it was.
        was: String,
        /// What it is.
        now: String,
    },
    /// An argument that was not there.
    ArgumentAdded {
        /// Where it is now.
        index: usize,
        /// The argument.
        now: String,
    },
    /// An argument no longer there.
    ArgumentRemoved {
        /// Where it was.
        index: usize,
        /// The argument.
        was: String,
    },
    /// A variable of the key is set to another value, or set or unset.
    Environment {
        /// Its name.
        name: String,
        /// Its value then.
        was: Option<String>,
        /// Its value now.
        now: Option<String>,
    },
    /// The working directory.
    Directory {
        /// Then.
        was: String,
        /// Now.
        now: String,
    },
    /// `$PWD`, which objects record when it names the directory through a symlink.
    LogicalDirectory {
        /// Then.
        was: Option<String>,
        /// Now.
        now: Option<String>,
    },
    /// Another source file for the same output.
    Source {
        /// The earlier source.
        was: String,
        /// This one.
        now: String,
    },
    /// The source's content.
    SourceContent {
        /// The source.
        path: String,
        /// Its digest then.
        was: String,
        /// Its digest now.
        now: String,
    },
    /// The content of a file a flag makes the compiler read (`-include`, a profile, ...).
    InputFile {
        /// The file.
        path: String,
        /// Its digest then.
        was: String,
        /// Its digest now.
        now: String,
    },
    /// A header's content.
    Header {
        /// The header.
        path: String,
        /// Its digest then.
        was: String,
        /// Its digest now.
        now: String,
    },
    /// A header that did not exist is now read, found before one the earlier compile read.
    ShadowingHeader {
        /// The new header.
        path: String,
        /// The header it hides, when one of the earlier compile's is no longer read.
        shadows: Option<String>,
    },
    /// A header that the earlier compile did not read is read now.
    HeaderAdded {
        /// The header.
        path: String,
    },
    /// A header the earlier compile read is no longer read.
    HeaderDropped {
        /// The header.
        path: String,
    },
    /// A file `__has_include` found is no longer found.
    HeaderGone {
        /// The file.
        path: String,
    },
    /// The system include directories changed (a compile under `-MMD` keys their state,
    /// not each system header).
    SystemHeaders,
    /// The machine's CPU, which `-march=native` stands for.
    Cpu,
}

/// A compile record, with its header list when it has one.
pub type Loaded<'a> = (&'a KeyRecord, Option<Entry>);

/// Explains `current` against the `earlier` compiles of its output (newest first).
pub fn explain(current: &Loaded<'_>, earlier: &[Loaded<'_>]) -> Explanation {
    let (record, headers) = current;
    let mut x = Explanation {
        output: record.output.clone(),
        time: time(record),
        outcome: record.outcome.clone(),
        summary: summary(record),
        reason: record.reason.clone(),
        exit_code: record.exit_code,
        compared_with: None,
        differences: Vec::new(),
        conclusion: Conclusion::FirstCompile,
    };
    if Outcome::from_name(&record.outcome) == Some(Outcome::Hit) {
        x.conclusion = Conclusion::Hit {
            reused: made_by(headers.as_ref(), earlier).map(time),
        };
        return x;
    }
    if record.key.is_none() {
        x.conclusion = Conclusion::NotKeyed;
        return x;
    }
    // Closest: an earlier compile whose result was cached (only those could have been
    // hits), then the fewest differences, then the newest.
    let closest = earlier
        .iter()
        .filter(|(r, _)| r.key.is_some())
        .enumerate()
        .map(|(age, e)| (e, differences(e, current), age))
        .min_by_key(|((r, _), diffs, age)| (!cached(r), diffs.len(), *age));
    let Some(((was, was_headers), differences, _)) = closest else {
        return x;
    };
    x.compared_with = Some(Earlier {
        time: time(was),
        outcome: was.outcome.clone(),
        summary: summary(was),
        cached: cached(was),
    });
    x.conclusion = if !differences.is_empty() {
        Conclusion::Changed
    } else if !cached(was) {
        Conclusion::EarlierNotCached
    } else if headers.is_none() || was_headers.is_none() {
        Conclusion::HeadersUnknown
    } else {
        Conclusion::ResultGone
    };
    x.differences = differences;
    x
}

/// Whether a cached result existed after the compile of `record`.
fn cached(record: &KeyRecord) -> bool {
    match Outcome::from_name(&record.outcome) {
        Some(Outcome::Hit | Outcome::Miss | Outcome::Remote | Outcome::Fallback) => true,
        Some(
            Outcome::Uncacheable
            | Outcome::CompileError
            | Outcome::Local
            | Outcome::Error
            | Outcome::RemoteError,
        )
        | None => false,
    }
}

/// The earlier compile that made the result a hit delivered: the newest that compiled the
/// same action.
fn made_by<'a>(entry: Option<&Entry>, earlier: &'a [Loaded<'_>]) -> Option<&'a KeyRecord> {
    let action = entry?.action;
    earlier
        .iter()
        .find(|(r, e)| {
            e.as_ref().is_some_and(|e| e.action == action)
                && Outcome::from_name(&r.outcome) != Some(Outcome::Hit)
                && cached(r)
        })
        .map(|(r, _)| *r)
}

/// Every part of the key that differs from `was` to `now`.
fn differences(was: &Loaded<'_>, now: &Loaded<'_>) -> Vec<Difference> {
    let (a, b) = (was.0, now.0);
    let (Some(ka), Some(kb)) = (&a.key, &b.key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    compiler(&ka.compiler, &kb.compiler, &mut out);
    arguments(&a.args, &b.args, &mut out);
    environment(&ka.env, &kb.env, &mut out);
    directory(a, ka, b, kb, &mut out);
    inputs(&ka.files, &kb.files, &mut out);
    if ka.native_cpu != kb.native_cpu {
        out.push(Difference::Cpu);
    }
    if let (Some(ha), Some(hb)) = (&was.1, &now.1) {
        let keyed: HashSet<&str> = ka
            .files
            .iter()
            .chain(&kb.files)
            .map(|(p, _)| p.as_str())
            .collect();
        headers(ha, hb, &keyed, &mut out);
    }
    out
}

fn compiler(was: &CompilerKey, now: &CompilerKey, out: &mut Vec<Difference>) {
    let before = out.len();
    if was.path != now.path {
        out.push(Difference::CompilerPath {
            was: was.path.clone(),
            now: now.path.clone(),
        });
    }
    if was.cxx != now.cxx {
        out.push(Difference::Driver {
            was_cxx: was.cxx,
            now_cxx: now.cxx,
        });
    }
    if was.version != now.version {
        out.push(Difference::CompilerVersion {
            was: was.version.clone(),
            now: now.version.clone(),
        });
    } else if was.path == now.path {
        // The same program at the same version, rebuilt or patched: say which file.
        let files = |k: &CompilerKey| -> Vec<(String, Option<String>)> {
            k.files
                .iter()
                .map(|(p, d)| (p.clone(), Some(hex(d))))
                .collect()
        };
        for (path, was_digest, now_digest) in changed_files(&files(was), &files(now)) {
            out.push(Difference::CompilerFile {
                path,
                was: was_digest,
                now: now_digest,
                version: now.version.clone(),
            });
        }
    }
    if out.len() == before && was.identity != now.identity {
        out.push(Difference::CompilerIdentity {
            was: hex(&was.identity),
            now: hex(&now.identity),
        });
    }
}

/// The keys of `was` and `now` whose values differ (absent on one side: `None`), in the
/// order of `now` and then of what only `was` has.
fn changed_files<V: PartialEq + Clone>(
    was: &[(String, Option<V>)],
    now: &[(String, Option<V>)],
) -> Vec<(String, Option<V>, Option<V>)> {
    let old: HashMap<&str, &Option<V>> = was.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new: HashSet<&str> = now.iter().map(|(k, _)| k.as_str()).collect();
    let mut out: Vec<_> = now
        .iter()
        .filter_map(|(k, v)| {
            let before = old.get(k.as_str()).copied().cloned().flatten();
            (before != *v).then(|| (k.clone(), before, v.clone()))
        })
        .collect();
    out.extend(
        was.iter()
            .filter(|(k, v)| !new.contains(k.as_str()) && v.is_some())
            .map(|(k, v)| (k.clone(), v.clone(), None)),
    );
    out
}

/// Past this many cells (earlier × current arguments, after the common ends are cut),
/// arguments are compared position by position instead of by their longest common
/// subsequence.
const MAX_DIFF_CELLS: usize = 1 << 22;

/// One step of an edit script between two argument lists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Keep,
    Remove(usize),
    Add(usize),
}

fn arguments(was: &[String], now: &[String], out: &mut Vec<Difference>) {
    let head = was.iter().zip(now).take_while(|(a, b)| a == b).count();
    let tail = was[head..]
        .iter()
        .rev()
        .zip(now[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let a = &was[head..was.len() - tail];
    let b = &now[head..now.len() - tail];
    let steps = if a.len().saturating_mul(b.len()) <= MAX_DIFF_CELLS {
        edit_script(a, b)
    } else {
        positional_script(a.len(), b.len())
    };
    // Each run of removals and additions between kept arguments pairs up as changes; what
    // is left over was removed or added.
    let mut run: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for step in steps.iter().copied().chain([Step::Keep]) {
        match step {
            Step::Remove(i) => run.0.push(i),
            Step::Add(j) => run.1.push(j),
            Step::Keep => {
                let (removed, added) = std::mem::take(&mut run);
                let paired = removed.len().min(added.len());
                for (&i, &j) in removed.iter().zip(&added) {
                    out.push(Difference::Argument {
                        index: head + j + 1,
                        was: a[i].clone(),
                        now: b[j].clone(),
                    });
                }
                out.extend(
                    removed[paired..]
                        .iter()
                        .map(|&i| Difference::ArgumentRemoved {
                            index: head + i + 1,
                            was: a[i].clone(),
                        }),
                );
                out.extend(added[paired..].iter().map(|&j| Difference::ArgumentAdded {
                    index: head + j + 1,
                    now: b[j].clone(),
                }));
            }
        }
    }
}

/// The shortest edit script from `a` to `b` (by their longest common subsequence).
fn edit_script(a: &[String], b: &[String]) -> Vec<Step> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j, mut steps) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            steps.push(Step::Keep);
            (i, j) = (i + 1, j + 1);
        } else if j == m || (i < n && lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            steps.push(Step::Remove(i));
            i += 1;
        } else {
            steps.push(Step::Add(j));
            j += 1;
        }
    }
    steps
}

/// Every argument of `a` replaced by the one at its position in `b` (for lists too long to
/// align).
fn positional_script(n: usize, m: usize) -> Vec<Step> {
    (0..n)
        .map(Step::Remove)
        .chain((0..m).map(Step::Add))
        .collect()
}

fn environment(was: &[(String, String)], now: &[(String, String)], out: &mut Vec<Difference>) {
    let side = |e: &[(String, String)]| -> Vec<(String, Option<String>)> {
        e.iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect()
    };
    let mut changed = changed_files(&side(was), &side(now));
    changed.sort_by(|x, y| x.0.cmp(&y.0));
    out.extend(
        changed
            .into_iter()
            .map(|(name, was, now)| Difference::Environment { name, was, now }),
    );
}

fn directory(
    a: &KeyRecord,
    ka: &KeyParts,
    b: &KeyRecord,
    kb: &KeyParts,
    out: &mut Vec<Difference>,
) {
    if a.cwd != b.cwd {
        out.push(Difference::Directory {
            was: a.cwd.clone(),
            now: b.cwd.clone(),
        });
    }
    if ka.pwd != kb.pwd {
        out.push(Difference::LogicalDirectory {
            was: ka.pwd.clone(),
            now: kb.pwd.clone(),
        });
    }
}

/// The source first, then the files flags name; a file named on one side only is an
/// argument difference, said there.
fn inputs(was: &[(String, [u8; 32])], now: &[(String, [u8; 32])], out: &mut Vec<Difference>) {
    let (Some((src_a, hash_a)), Some((src_b, hash_b))) = (was.first(), now.first()) else {
        return;
    };
    if src_a != src_b {
        out.push(Difference::Source {
            was: src_a.clone(),
            now: src_b.clone(),
        });
    } else if hash_a != hash_b {
        out.push(Difference::SourceContent {
            path: src_b.clone(),
            was: hex(hash_a),
            now: hex(hash_b),
        });
    }
    let old: HashMap<&str, &[u8; 32]> = was[1..].iter().map(|(p, h)| (p.as_str(), h)).collect();
    for (path, hash) in &now[1..] {
        if let Some(before) = old.get(path.as_str())
            && *before != hash
        {
            out.push(Difference::InputFile {
                path: path.clone(),
                was: hex(before),
                now: hex(hash),
            });
        }
    }
}

/// The headers of two manifest entries, leaving out the files the key names itself.
fn headers(was: &Entry, now: &Entry, keyed: &HashSet<&str>, out: &mut Vec<Difference>) {
    let old: HashMap<&str, &[u8; 32]> =
        was.inputs.iter().map(|(p, h, _)| (p.as_str(), h)).collect();
    let current: HashSet<&str> = now.inputs.iter().map(|(p, _, _)| p.as_str()).collect();
    let mut new = Vec::new();
    for (path, hash, _) in &now.inputs {
        if keyed.contains(path.as_str()) {
            continue;
        }
        match old.get(path.as_str()) {
            Some(before) if *before != hash => out.push(Difference::Header {
                path: path.clone(),
                was: hex(before),
                now: hex(hash),
            }),
            Some(_) => {}
            None => new.push(path.as_str()),
        }
    }
    let mut unread: Vec<&str> = was
        .inputs
        .iter()
        .map(|(p, _, _)| p.as_str())
        .filter(|p| !current.contains(p) && !keyed.contains(p))
        .collect();
    for path in new {
        if was.absent.iter().any(|a| a == path) {
            let shadows = best_suffix_match(path, &unread);
            unread.retain(|p| Some(*p) != shadows);
            out.push(Difference::ShadowingHeader {
                path: path.to_string(),
                shadows: shadows.map(str::to_string),
            });
        } else {
            out.push(Difference::HeaderAdded {
                path: path.to_string(),
            });
        }
    }
    out.extend(unread.into_iter().map(|p| Difference::HeaderDropped {
        path: p.to_string(),
    }));
    out.extend(
        was.present
            .iter()
            .filter(|p| !now.present.contains(p))
            .map(|p| Difference::HeaderGone { path: p.clone() }),
    );
    if was.system.is_some() && now.system.is_some() && was.system != now.system {
        out.push(Difference::SystemHeaders);
    }
}

/// The path among `candidates` that ends with the most of `path`'s last components (at
/// least its file name): the header an `#include` found before a new one shadowed it.
fn best_suffix_match<'a>(path: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let common = |c: &str| {
        path.rsplit('/')
            .zip(c.rsplit('/'))
            .take_while(|(x, y)| x == y)
            .count()
    };
    candidates
        .iter()
        .map(|c| (common(c), *c))
        .filter(|(n, _)| *n > 0)
        .max_by_key(|(n, _)| *n)
        .map(|(_, c)| c)
}

/// A SHA-256 in hex.
pub(super) fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(String::from).collect()
    }

    fn diff_args(was: &str, now: &str) -> Vec<Difference> {
        let mut out = Vec::new();
        arguments(&args(was), &args(now), &mut out);
        out
    }

    #[test]
    fn arguments_are_aligned_before_they_are_compared() {
        assert_eq!(
            diff_args("-O2 -c main.c", "-O3 -c main.c"),
            [Difference::Argument {
                index: 1,
                was: "-O2".into(),
                now: "-O3".into()
            }]
        );
        assert_eq!(
            diff_args("-c main.c -o main.o", "-DX -c main.c -g -o main.o"),
            [
                Difference::ArgumentAdded {
                    index: 1,
                    now: "-DX".into()
                },
                Difference::ArgumentAdded {
                    index: 4,
                    now: "-g".into()
                },
            ]
        );
        assert_eq!(
            diff_args("-g -c main.c", "-c main.c"),
            [Difference::ArgumentRemoved {
                index: 1,
                was: "-g".into()
            }]
        );
        assert!(diff_args("-c main.c", "-c main.c").is_empty());
    }

    fn entry(inputs: &[(&str, u8)], absent: &[&str], action: u8) -> Entry {
        Entry {
            inputs: inputs
                .iter()
                .map(|(p, h)| (p.to_string(), [*h; 32], 1))
                .collect(),
            absent: absent.iter().map(|p| p.to_string()).collect(),
            present: vec![],
            system: None,
            action: ([action; 32], 1),
        }
    }

    #[test]
    fn a_new_header_in_an_earlier_directory_is_named_with_the_one_it_shadows() {
        let was = entry(
            &[("/w/main.c", 3), ("/w/inc/a.h", 5), ("/w/inc/sys/b.h", 6)],
            &["/w/first/sys/b.h", "/w/first/a.h"],
            1,
        );
        let now = entry(
            &[("/w/main.c", 3), ("/w/inc/a.h", 7), ("/w/first/sys/b.h", 8)],
            &["/w/first/a.h"],
            2,
        );
        let mut out = Vec::new();
        headers(&was, &now, &HashSet::from(["/w/main.c"]), &mut out);
        assert_eq!(
            out,
            [
                Difference::Header {
                    path: "/w/inc/a.h".into(),
                    was: hex(&[5; 32]),
                    now: hex(&[7; 32])
                },
                Difference::ShadowingHeader {
                    path: "/w/first/sys/b.h".into(),
                    shadows: Some("/w/inc/sys/b.h".into())
                },
            ]
        );
    }

    #[test]
    fn the_closest_cached_compile_is_compared_and_a_hit_names_its_maker() {
        let mut debug = record(1, &["-g", "-c", "main.c"]);
        let release = record(2, &["-O2", "-c", "main.c"]);
        let mut failed = record(3, &["-g", "-c", "main.c"]);
        failed.outcome = "compile_errors".into();
        let now = record(4, &["-g", "-c", "main.c", "-DX"]);
        let earlier = [(&failed, None), (&release, None), (&debug, None)];
        let x = explain(&(&now, None), &earlier);
        assert_eq!(x.conclusion, Conclusion::Changed);
        assert_eq!(x.compared_with.expect("compared").time, time(&debug));
        assert_eq!(
            x.differences,
            [Difference::ArgumentAdded {
                index: 4,
                now: "-DX".into()
            }]
        );
        // Nothing differs from a cached compile: its result is gone.
        let again = record(5, &["-g", "-c", "main.c"]);
        let e = entry(&[("/w/main.c", 3)], &[], 9);
        let x = explain(&(&again, Some(e.clone())), &[(&debug, Some(e.clone()))]);
        assert_eq!(x.conclusion, Conclusion::ResultGone);
        debug.outcome = "uncacheable".into();
        let x = explain(&(&again, Some(e.clone())), &[(&debug, Some(e.clone()))]);
        assert_eq!(x.conclusion, Conclusion::EarlierNotCached);
        // A hit names the compile that made its result.
        let mut hit = record(6, &["-g", "-c", "main.c"]);
        hit.outcome = "hits".into();
        let x = explain(&(&hit, Some(e.clone())), &[(&again, Some(e))]);
        assert_eq!(
            x.conclusion,
            Conclusion::Hit {
                reused: Some(time(&again))
            }
        );
        assert!(explain(&(&now, None), &[]).conclusion == Conclusion::FirstCompile);
    }

    #[test]
    fn a_rebuilt_compiler_names_its_file() {
        let mut was = record(1, &["-c", "main.c"]).key.expect("key").compiler;
        let mut now = was.clone();
        now.identity = [9; 32];
        now.files[0].1 = [8; 32];
        let mut out = Vec::new();
        compiler(&was, &now, &mut out);
        assert_eq!(
            out,
            [Difference::CompilerFile {
                path: "/usr/bin/gcc".into(),
                was: Some(hex(&[2; 32])),
                now: Some(hex(&[8; 32])),
                version: "gcc 12".into()
            }]
        );
        was.version = "gcc 11".into();
        out.clear();
        compiler(&was, &now, &mut out);
        assert!(matches!(out[..], [Difference::CompilerVersion { .. }]));
    }
}
