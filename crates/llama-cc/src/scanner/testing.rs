//! Test helpers shared by the scanner's tests: the real file system and what the real gcc
//! says (its predefined macros, search path and feature tests).

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::directives::{self, Directive, Directives};
use super::macros::MacroTable;
use super::setup::{PROBE_FLAGS, Probed};
use super::walk::{Files, SearchPath};

/// The real file system, directives extracted on each read.
pub(crate) struct Disk;

impl Files for Disk {
    fn directives(&mut self, path: &Path) -> Option<Arc<Directives>> {
        if !fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return None;
        }
        fs::read(path)
            .ok()
            .map(|t| Arc::new(directives::extract(&t)))
    }
}

/// The macros `#define` lines define.
pub(crate) fn macros_of(text: &str) -> MacroTable {
    directives::extract(text.as_bytes())
        .list
        .into_iter()
        .filter_map(|d| match d {
            Directive::Define { name, def } => Some((name, (*def).clone())),
            _ => None,
        })
        .collect()
}

/// What gcc says about a language and flags: its predefined macros, its search path, and
/// the files it reads before the source unasked.
pub(crate) fn gcc_start(
    language: &str,
    flags: &[&str],
    cwd: &Path,
) -> Option<(MacroTable, SearchPath, Vec<PathBuf>)> {
    let run = |extra: &[&str]| {
        Command::new("gcc")
            .current_dir(cwd)
            .args(flags)
            .args(["-x", language])
            .args(extra)
            .arg("/dev/null")
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let deps = tempfile::NamedTempFile::new().expect("temporary file");
    let deps_path = deps.path().to_string_lossy().into_owned();
    let mut extra: Vec<&str> = PROBE_FLAGS.to_vec();
    extra.extend(["-MD", "-MF", &deps_path]);
    let out = run(&extra)?;
    let depfile = fs::read_to_string(deps.path()).expect("depfile");
    let probed = Probed::read(&out.stdout, &out.stderr, &depfile, cwd);
    Some((probed.macros, probed.search, probed.preincluded))
}

/// Asks gcc the feature tests a walk met.
pub(crate) fn gcc_features(
    language: &str,
    flags: &[&str],
    cwd: &Path,
    tests: &[(String, String)],
    into: &mut HashMap<(String, String), i64>,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe");
    fs::write(&probe, super::setup::feature_probe(tests)).expect("write");
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.extend(["-x", language, "-dM", "-E"].map(OsString::from));
    args.push(probe.into_os_string());
    let out = gcc(cwd, &args);
    into.extend(super::setup::feature_answers(&out.stdout, tests));
}

/// The files a gcc depfile lists (after its target), each resolved against `cwd` and
/// through links.
pub(crate) fn depfile_paths(text: &str, cwd: &Path) -> BTreeSet<PathBuf> {
    text.replace("\\\n", " ")
        .split_whitespace()
        .skip(1)
        .map(|p| canonical(cwd, Path::new(p)))
        .collect()
}

/// `path` against `cwd`, through links (as given when that fails).
pub(crate) fn canonical(cwd: &Path, path: &Path) -> PathBuf {
    fs::canonicalize(cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Asserts that `listed` names every file of `gcc` (both resolved through links); returns
/// the listed set.
pub(crate) fn assert_covers(
    gcc: &BTreeSet<PathBuf>,
    listed: &[PathBuf],
    cwd: &Path,
) -> BTreeSet<PathBuf> {
    let ours: BTreeSet<PathBuf> = listed.iter().map(|p| canonical(cwd, p)).collect();
    let missed: Vec<_> = gcc.difference(&ours).collect();
    assert!(missed.is_empty(), "the scanner missed {missed:?}");
    ours
}

/// gcc run in `cwd` with `args`, which must succeed.
pub(crate) fn gcc(cwd: &Path, args: &[OsString]) -> std::process::Output {
    let out = Command::new("gcc")
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("gcc runs");
    assert!(
        out.status.success(),
        "gcc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
