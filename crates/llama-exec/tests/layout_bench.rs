//! bench/runtime-layout.sh: what laying out an action's inputs costs the local executor (and
//! so the Lambda runtime, which runs actions through it), by copy and by link, on a
//! compile's shape of inputs: this machine's gcc toolchain (the driver, cc1, as, ld and
//! their shared libraries, ~45 MB, executable) and ~700 headers from /usr/include.
//! Ignored by the test suite; prints a markdown table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llama_core::{ActionSpec, PreparedAction, Store, TreeBuilder};
use llama_exec::{Executor, LocalExecutor};

/// Headers in the tree: a kernel unit reads 300–800.
const HEADERS: usize = 700;
/// Actions timed per layout.
const RUNS: usize = 20;

fn gcc_program(name: &str) -> Option<PathBuf> {
    let out = Command::new("gcc")
        .arg(format!("-print-prog-name={name}"))
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let path = if path.is_absolute() {
        path
    } else {
        let which = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()?;
        PathBuf::from(String::from_utf8_lossy(&which.stdout).trim())
    };
    std::fs::canonicalize(path).ok()
}

/// The shared libraries `ldd` lists for `program`.
fn libraries(program: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(program).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .filter_map(|w| std::fs::canonicalize(w).ok())
        .collect()
}

fn headers(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= HEADERS {
            return;
        }
        if p.is_dir() {
            headers(&p, out);
        } else if p.extension().is_some_and(|e| e == "h") && p.is_file() {
            out.push(p);
        }
    }
}

fn action(store: &Store) -> (PreparedAction, usize, u64) {
    let mut programs: Vec<PathBuf> = ["gcc", "cc1", "as", "ld"]
        .iter()
        .filter_map(|p| gcc_program(p))
        .collect();
    let libs: Vec<PathBuf> = programs.iter().flat_map(|p| libraries(p)).collect();
    programs.extend(libs);
    programs.sort();
    programs.dedup();
    let mut inputs = Vec::new();
    headers(Path::new("/usr/include"), &mut inputs);
    let mut tree = TreeBuilder::new();
    let (mut files, mut bytes) = (0, 0);
    for (path, executable) in programs
        .iter()
        .map(|p| (p, true))
        .chain(inputs.iter().map(|p| (p, false)))
    {
        let digest = store.put_file(path, None).expect("store input");
        let remote = path.to_string_lossy().trim_start_matches('/').to_string();
        tree.add_known(&remote, digest, executable, path.clone())
            .expect("add input");
        files += 1;
        bytes += digest.size();
    }
    let prepared = ActionSpec {
        arguments: vec!["/bin/true".into()],
        ..Default::default()
    }
    .prepare(tree.build())
    .expect("action");
    (prepared, files, bytes)
}

fn command_time(outcome: &llama_exec::ExecOutcome) -> Duration {
    let meta = outcome
        .result
        .execution_metadata
        .as_ref()
        .expect("metadata");
    let at = |t: Option<&llama_core::protobuf::Timestamp>| {
        let t = t.expect("timestamp");
        Duration::new(t.seconds as u64, t.nanos as u32)
    };
    at(meta.execution_completed_timestamp.as_ref())
        .saturating_sub(at(meta.execution_start_timestamp.as_ref()))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: bench/runtime-layout.sh runs it"]
async fn bench_input_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store"), u64::MAX).expect("store");
    let (prepared, files, bytes) = action(&store);
    let mut rows = Vec::new();
    for (name, link) in [("copy", false), ("link", true)] {
        let executor =
            LocalExecutor::new(store.clone(), 1, Duration::from_secs(60)).with_linked_inputs(link);
        // One untimed run: the executable copies are made once per store.
        executor.execute(&prepared).await.expect("warm-up");
        let mut overheads = Vec::new();
        for _ in 0..RUNS {
            let started = Instant::now();
            let outcome = executor.execute(&prepared).await.expect("execute");
            overheads.push(started.elapsed().saturating_sub(command_time(&outcome)));
        }
        overheads.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        rows.push((name, ms(overheads[RUNS / 2]), ms(overheads[RUNS * 9 / 10])));
    }
    let base = rows[0].1;
    println!();
    println!(
        "| {files} inputs, {:.1} MB, {RUNS} actions each | overhead per action, median ms | p90 ms | × copy |",
        bytes as f64 / 1e6
    );
    println!("|---|---|---|---|");
    for (name, median, p90) in rows {
        println!("| {name} | {median:.1} | {p90:.1} | {:.2} |", median / base);
    }
}
