//! Checks the include scanner against the compiler, one compile at a time, inside a real
//! build: `make CC="scan_check gcc"` (see bench/scan-check.sh).
//!
//! For each compile it walks the includes with `llama_cc::scanner`, asks the compiler the
//! same with `-M`, appends one line to the file `$SCAN_CHECK_LOG`, and then runs the compile
//! itself, so the build goes on as with the compiler alone. A line is tab-separated:
//! `ok|missed|fallback`, headers gcc read, headers the scanner listed beyond them, the
//! source, and the missed files or why the scanner gave up.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use llama_cc::scanner::setup::{self, Plan, Probed};
use llama_cc::scanner::walk::{self, DiskFiles, GiveUp, Start};
use llama_cc::{Driver, Family, Language};

fn main() -> ExitCode {
    let mut argv = std::env::args_os().skip(1);
    let Some(compiler) = argv.next() else {
        eprintln!("usage: scan_check COMPILER ARGS... (with SCAN_CHECK_LOG set to a file)");
        return ExitCode::from(2);
    };
    let args: Vec<OsString> = argv.collect();
    if let Some(log) = std::env::var_os("SCAN_CHECK_LOG") {
        let line = check(&compiler, &args);
        if let Some(line) = line {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
            if let Err(e) = written {
                eprintln!("scan_check: {}: {e}", Path::new(&log).display());
            }
        }
    }
    let err = Command::new(&compiler).args(&args).exec();
    eprintln!("scan_check: {}: {err}", compiler.to_string_lossy());
    ExitCode::from(127)
}

/// The log line of one compile; `None` when it is not a compile the scanner would serve.
fn check(compiler: &OsString, args: &[OsString]) -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    let name = Path::new(compiler)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let driver = Driver {
        family: if name.contains("clang") {
            Family::Clang
        } else {
            Family::Gcc
        },
        cxx: name.contains("++"),
    };
    let plan = setup::plan(args, &cwd, driver).ok()?;
    // A device as the source (`-x c /dev/null`, as configure checks and kbuild's cc-option
    // compile) is never cached, so never scanned.
    if !plan.language.is_preprocessed_by_compiler() || !plan.source.is_file() {
        return None;
    }
    let source = plan.source.display().to_string();
    let gcc = match compiler_deps(compiler, &plan, &cwd) {
        Some(deps) => deps,
        None => return Some(format!("skipped\t0\t0\t{source}\tthe compiler's -M failed")),
    };
    Some(match scan(compiler, &plan, &cwd) {
        Ok(listed) => {
            let ours: BTreeSet<PathBuf> = listed.iter().map(|p| canonical(&cwd, p)).collect();
            let missed: Vec<String> = gcc
                .difference(&ours)
                .map(|p| p.display().to_string())
                .collect();
            let extra = ours.difference(&gcc).count();
            let status = if missed.is_empty() { "ok" } else { "missed" };
            format!(
                "{status}\t{}\t{extra}\t{source}\t{}",
                gcc.len(),
                missed.join(" ")
            )
        }
        Err(why) => format!(
            "fallback\t{}\t0\t{source}\t{}: {why}",
            gcc.len(),
            why.name()
        ),
    })
}

/// Why a compile was not decided by the walk.
#[derive(Debug)]
enum Failure {
    /// The walk gave up (the daemon would ask `-M`).
    GiveUp(GiveUp),
    /// A probe of the compiler failed (the daemon would ask `-M` too).
    Probe(String),
}

impl Failure {
    fn name(&self) -> &'static str {
        match self {
            Failure::GiveUp(g) => g.name(),
            Failure::Probe(_) => "probe",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::GiveUp(g) => write!(f, "{g}"),
            Failure::Probe(why) => write!(f, "{why}"),
        }
    }
}

/// Walks again after asking the compiler the feature tests a walk met: each answer can
/// make a branch live that holds more (libstdc++ needs several rounds for a cold cache).
const MAX_FEATURE_ROUNDS: usize = 10;

/// What the walk lists, asking the compiler only what it would ask once per compiler and
/// flags: predefined macros, the search chain, feature tests.
fn scan(compiler: &OsString, plan: &Plan, cwd: &Path) -> Result<Vec<PathBuf>, Failure> {
    let lang = plan.language.gcc_name();
    let probe = |extra: &[&str], file: &str| {
        Command::new(compiler)
            .current_dir(cwd)
            .args(&plan.macros.probe_args)
            .args(extra)
            .args(["-x", lang, file])
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    // One run: the macros on stdout, the search chain on stderr, and in a depfile what is
    // read before the source unasked.
    let deps = tempfile::NamedTempFile::new().map_err(|e| Failure::Probe(e.to_string()))?;
    let deps_path = deps.path().to_string_lossy().into_owned();
    let mut flags: Vec<&str> = setup::PROBE_FLAGS.to_vec();
    flags.extend(["-MD", "-MF", &deps_path]);
    let out = probe(&flags, "/dev/null")
        .ok_or_else(|| Failure::Probe("the compiler's probe of /dev/null failed".into()))?;
    let depfile = std::fs::read_to_string(deps.path()).unwrap_or_default();
    let Probed {
        mut macros,
        mut search,
        preincluded,
    } = Probed::read(&out.stdout, &out.stderr, &depfile, cwd);
    search.including_dir_first = !plan.includes.no_source_dir;
    setup::apply(&mut macros, &plan.macros.ops);
    let forced: Vec<PathBuf> = preincluded
        .into_iter()
        .chain(plan.forced.iter().cloned())
        .collect();
    let mut features = HashMap::new();
    let mut files = DiskFiles::default();
    for _ in 0..MAX_FEATURE_ROUNDS {
        let start = Start {
            macros: macros.clone(),
            forced: &forced,
            cplusplus: lang == "c++",
            cwd,
            assembler: plan.language == Language::AsmWithCpp,
            features: &features,
        };
        match walk::walk(&plan.source, start, &search, &mut files) {
            Err(GiveUp::Features(tests)) => answer(&probe, &tests, &mut features)?,
            other => return other.map(|s| s.read).map_err(Failure::GiveUp),
        }
    }
    Err(Failure::Probe(format!(
        "feature tests still unanswered after {MAX_FEATURE_ROUNDS} rounds"
    )))
}

/// Asks the compiler `tests` in one preprocessing of a generated file.
fn answer(
    probe: &dyn Fn(&[&str], &str) -> Option<std::process::Output>,
    tests: &[(String, String)],
    into: &mut HashMap<(String, String), i64>,
) -> Result<(), Failure> {
    let failed = |why: String| Failure::Probe(format!("asking feature tests: {why}"));
    let dir = tempfile::tempdir().map_err(|e| failed(e.to_string()))?;
    let file = dir.path().join("features");
    std::fs::write(&file, setup::feature_probe(tests)).map_err(|e| failed(e.to_string()))?;
    let out = probe(&["-dM", "-E"], &file.to_string_lossy())
        .ok_or_else(|| failed("the compiler failed".into()))?;
    into.extend(setup::feature_answers(&out.stdout, tests));
    Ok(())
}

/// The headers the compiler's `-M` lists for the compile.
fn compiler_deps(compiler: &OsString, plan: &Plan, cwd: &Path) -> Option<BTreeSet<PathBuf>> {
    let dir = tempfile::tempdir().ok()?;
    let depfile = dir.path().join("deps.d");
    let out = Command::new(compiler)
        .current_dir(cwd)
        .args(&plan.discovery)
        .arg("-M")
        .arg("-MF")
        .arg(&depfile)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&depfile).ok()?;
    Some(
        llama_cc::prerequisites(&text)
            .iter()
            .map(|p| canonical(cwd, Path::new(p)))
            .collect(),
    )
}

fn canonical(cwd: &Path, path: &Path) -> PathBuf {
    std::fs::canonicalize(cwd.join(path)).unwrap_or_else(|_| path.to_path_buf())
}
