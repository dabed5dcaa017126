//! llamacc on the lambda backend, on a real project: lua5.4 built with `make -j16
//! CC=llamacc` against s3s-fs, cargo-lambda's emulator and real `llama-runtime` processes
//! (one of them chrooted into a Debian root with no compiler), and what happens to a build
//! when the backend fails.
//!
//! The lua sources come from scripts/corpus-fetch (cached under bench/cache).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::lambda::{Cloud, throttling_proxy};
use llama_testkit::harness::LambdaEmulator;
use llama_testkit::proxy::{HttpProxy, Reply, Response};
use llama_testkit::{World, stderr};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> Command {
    Command::new(repo().join("scripts").join(name))
}

fn check(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = stdout.lines().rev().take(20).collect();
        panic!(
            "{what} failed:\n--- stderr:\n{}\n--- stdout (last lines):\n{}",
            stderr(&out),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    out
}

/// A pristine tree of `corpus` (scripts/corpus-tree) at `dest`.
pub(crate) fn corpus_tree(corpus: &str, dest: &Path) {
    let mut fetch = script("corpus-fetch");
    fetch.arg(corpus);
    check(fetch, &format!("scripts/corpus-fetch {corpus}"));
    let mut tree = script("corpus-tree");
    tree.arg(corpus).arg(dest);
    check(tree, &format!("scripts/corpus-tree {corpus}"));
}

/// `scripts/corpus-build CORPUS TREE CC CXX 16` with the world's isolation (its LLAMA_DIR,
/// no leaked settings) and `env` on top.
pub(crate) fn build_corpus(
    w: &World,
    corpus: &str,
    tree: &Path,
    compilers: (&str, &str),
    env: &dyn Fn(&mut Command),
) -> Output {
    build_corpus_with_jobs(w, corpus, tree, compilers, 16, env)
}

/// [`build_corpus`] with `make -jJOBS`.
pub(crate) fn build_corpus_with_jobs(
    w: &World,
    corpus: &str,
    tree: &Path,
    (cc, cxx): (&str, &str),
    jobs: usize,
    env: &dyn Fn(&mut Command),
) -> Output {
    let mut cmd = w.llama(&[]);
    let mut build = script("corpus-build");
    build
        .arg(corpus)
        .arg(tree)
        .args([cc, cxx, &jobs.to_string()])
        .current_dir(tree);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => build.env(k, v),
            None => build.env_remove(k),
        };
    }
    cmd = build;
    cmd.env("LLAMACC_LOCAL_CC", "gcc")
        .env("LLAMACC_LOCAL_CXX", "g++")
        .env("LLAMACC_FUNCTION", "_");
    env(&mut cmd);
    check(cmd, &format!("building {corpus} with {cc}"))
}

fn build_lua(w: &World, tree: &Path, cc: &str, env: &dyn Fn(&mut Command)) -> Output {
    build_corpus(w, "lua", tree, (cc, cc), env)
}

/// The corpus' own clean target (`make clean`), keeping its configuration.
pub(crate) fn clean_corpus(corpus: &str, tree: &Path) {
    let mut cmd = script("corpus-build");
    cmd.arg(corpus).arg(tree).arg("--clean");
    check(cmd, &format!("cleaning {corpus}"));
}

fn clean_lua(tree: &Path) {
    clean_corpus("lua", tree);
}

/// Every object of `b` is byte-identical to `a`'s (scripts/compare-objects).
pub(crate) fn compare_objects(a: &Path, b: &Path) {
    compare_corpus_objects(None, a, b);
}

/// [`compare_objects`], but objects known to name the compiler in `corpus` may differ
/// (`scripts/compare-objects --corpus`).
pub(crate) fn compare_corpus_objects(corpus: Option<&str>, a: &Path, b: &Path) {
    let mut cmd = script("compare-objects");
    if let Some(corpus) = corpus {
        cmd.args(["--corpus", corpus]);
    }
    cmd.arg(a).arg(b);
    let out = cmd.output().expect("compare-objects");
    assert!(
        out.status.success(),
        "objects differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// `llama stats --json` of the world's daemon (or its saved counters).
pub(crate) fn stats(w: &World, dir: &Path) -> serde_json::Value {
    let out = w
        .llama(&["stats", "--json"])
        .env("LLAMA_DIR", dir)
        .output()
        .expect("llama stats");
    serde_json::from_slice(&out.stdout).expect("stats json")
}

pub(crate) fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats["counters"][name].as_u64().unwrap_or(0)
}

/// Asserts that the include scanner listed the inputs of every remote compile of a build
/// that succeeded: `-M` was asked only for compiles the compiler rejected (configure-style
/// checks), and no header was missed.
pub(crate) fn assert_scanned_all(stats: &serde_json::Value, what: &str) {
    let scanner = stats["scanner"].as_object().cloned().unwrap_or_default();
    let count = |key: &str| scanner.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
    let asked: u64 = scanner
        .iter()
        .filter(|(k, _)| *k != "walked")
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(count("missed"), 0, "{what}: a header missed: {stats:#}");
    assert!(
        count("walked") >= counter(stats, "remote") && asked <= counter(stats, "compile_errors"),
        "{what}: every remote compile's headers listed by the scanner: {stats:#}"
    );
}

pub(crate) fn stop_daemon(w: &World, dir: &Path) {
    let _ = w.llama(&["daemon", "stop"]).env("LLAMA_DIR", dir).output();
}

/// The reference: `corpus` built with plain gcc and g++ at `tree`, moved to `tree.ref`; a
/// pristine tree is left at `tree`.
pub(crate) fn reference_corpus(w: &World, corpus: &str, tree: &Path) -> PathBuf {
    reference_corpus_with(w, corpus, tree, ("gcc", "g++"))
}

/// [`reference_corpus`] built with these compilers.
pub(crate) fn reference_corpus_with(
    w: &World,
    corpus: &str,
    tree: &Path,
    compilers: (&str, &str),
) -> PathBuf {
    corpus_tree(corpus, tree);
    build_corpus(w, corpus, tree, compilers, &|_| {});
    let reference = tree.with_extension("ref");
    fs::rename(tree, &reference).expect("move the reference aside");
    corpus_tree(corpus, tree);
    reference
}

fn reference_build(w: &World, tree: &Path) -> PathBuf {
    reference_corpus(w, "lua", tree)
}

fn objects(tree: &Path) -> usize {
    fs::read_dir(tree.join("src"))
        .expect("src/")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "o"))
        .count()
}

#[test]
fn lua_on_lambda_is_identical_then_served_by_s3_and_uploads_each_file_once() {
    let cloud = Cloud::start(4);
    let w = crate::world();
    let tree = w.dir.path().join("lua");
    let reference = reference_build(&w, &tree);
    let compiles = objects(&reference) as u64;
    assert!(compiles >= 30, "lua has {compiles} objects");
    let llamacc = env!("CARGO_BIN_EXE_llamacc");
    let dir_a = w.dir.path().join("llama-a");
    let dir_b = w.dir.path().join("llama-b");
    let cloud = &cloud;
    let on = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |cmd: &mut Command| {
            cloud.client(cmd);
            // Nothing may quietly compile here instead. As many invocations in flight as
            // there are runtimes: the emulator, unlike Lambda, does not scale out, and
            // times out what waits in its queue.
            cmd.env("LLAMA_DIR", &dir)
                .env("LLAMACC_LOCAL_FALLBACK", "0")
                .env("LLAMA_REMOTE_JOBS", "4");
        }
    };

    // 1. Every compile on Lambda: objects identical to gcc's.
    build_lua(&w, &tree, llamacc, &on(&dir_a));
    compare_objects(&reference, &tree);
    let s = stats(&w, &dir_a);
    assert_eq!(counter(&s, "remote"), compiles, "{s:#}\n{}", cloud.logs());
    assert_scanned_all(&s, "lua");
    assert_eq!(cloud.invocations() as u64, compiles, "{}", cloud.logs());
    assert!(s["cost"]["dollars"].as_f64().unwrap_or(0.0) > 0.0, "{s:#}");

    // 2. Another machine (a new LLAMA_DIR): every compile served from the S3 action cache.
    clean_lua(&tree);
    build_lua(&w, &tree, llamacc, &on(&dir_b));
    compare_objects(&reference, &tree);
    let s = stats(&w, &dir_b);
    assert_eq!(counter(&s, "hits"), compiles, "{s:#}");
    assert_eq!(
        s["cost"]["remote_cache_hits"].as_f64(),
        Some(compiles as f64),
        "{s:#}"
    );
    assert_eq!(
        cloud.invocations() as u64,
        compiles,
        "no new invocation: {}",
        cloud.logs()
    );
    stop_daemon(&w, &dir_b);

    // 3. The first machine's daemon restarts and every source changes: every compile runs
    // again, and still no header or toolchain file goes up a second time.
    stop_daemon(&w, &dir_a);
    for entry in fs::read_dir(tree.join("src")).expect("src/").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "c") {
            let mut text = fs::read_to_string(&path).expect("read source");
            text.push_str("\n/* changed */\n");
            fs::write(&path, text).expect("write source");
        }
    }
    clean_lua(&tree);
    build_lua(&w, &tree, llamacc, &on(&dir_a));
    assert_eq!(cloud.invocations() as u64, 2 * compiles, "{}", cloud.logs());
    let mut puts: HashMap<String, usize> = HashMap::new();
    for r in cloud.s3.requests() {
        if let (true, Some(key)) = (
            r.op == "PutObject" || r.op == "CompleteMultipartUpload",
            r.key,
        ) {
            *puts.entry(key).or_default() += 1;
        }
    }
    let twice: Vec<String> = puts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(key, n)| {
            let path = cloud.s3.root().join(cloud.s3.bucket()).join(key);
            let head: Vec<u8> = fs::read(&path)
                .unwrap_or_default()
                .into_iter()
                .take(60)
                .collect();
            format!("{key} ({n} times): {:?}", String::from_utf8_lossy(&head))
        })
        .collect();
    assert!(
        twice.is_empty(),
        "uploaded more than once:\n{}",
        twice.join("\n")
    );
    stop_daemon(&w, &dir_a);
    eprintln!(
        "lua on lambda: {compiles} compiles, {} objects put in S3 over three builds",
        puts.len()
    );
}

#[test]
fn lua_builds_with_gcc_and_clang_through_a_runtime_chrooted_into_a_root_without_a_compiler() {
    if !nix_root() {
        eprintln!("SKIPPED: chroot needs root (CI runs as root)");
        return;
    }
    let w = crate::world();
    let cloud = Cloud::start_jailed(
        &w,
        &[
            "usr/bin/gcc",
            "usr/bin/cc",
            "usr/bin/as",
            "usr/bin/clang",
            "usr/lib/gcc",
            "usr/lib/llvm-14",
            "usr/include/stdio.h",
        ],
    );
    // gcc, then clang: each toolchain shipped whole, nothing taken from the root.
    for cc in ["gcc", "clang"] {
        let tree = w.dir.path().join(format!("lua-{cc}"));
        let reference = reference_corpus_with(&w, "lua", &tree, (cc, cc));
        let dir = w.dir.path().join(format!("llama-{cc}"));
        build_lua(&w, &tree, env!("CARGO_BIN_EXE_llamacc"), &|cmd| {
            cloud.client(cmd);
            cmd.env("LLAMA_DIR", &dir)
                .env("LLAMACC_LOCAL_CC", cc)
                .env("LLAMACC_LOCAL_FALLBACK", "0")
                .env("LLAMA_REMOTE_JOBS", "2");
        });
        compare_objects(&reference, &tree);
        let s = stats(&w, &dir);
        assert_eq!(
            counter(&s, "remote"),
            objects(&reference) as u64,
            "{cc}: {s:#}\n{}",
            cloud.logs()
        );
        stop_daemon(&w, &dir);
    }
}

pub(crate) fn nix_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

// --- faults -------------------------------------------------------------------------------

/// Eight small C files and a Makefile: enough compiles to show a fault is said once.
pub(crate) fn small_project(w: &World) {
    let mut objs = Vec::new();
    for i in 0..8 {
        w.write(
            &format!("f{i}.c"),
            format!("#include <stdio.h>\n#include \"common.h\"\nint f{i}(void) {{ return printf(\"%d\\n\", COMMON + {i}); }}\n").as_bytes(),
        );
        objs.push(format!("f{i}.o"));
    }
    w.write("common.h", b"#define COMMON 40\n");
    w.write(
        "Makefile",
        format!(
            "all: {objs}\n%.o: %.c common.h\n\t$(CC) -O2 -c $< -o $@\nclean:\n\trm -f *.o\n",
            objs = objs.join(" ")
        )
        .as_bytes(),
    );
}

/// `make -j4 CC=llamacc` of the small project with `env`; the build must succeed, with
/// objects identical to gcc's. Returns make's stderr.
pub(crate) fn build_small(w: &World, env: &dyn Fn(&mut Command)) -> String {
    let reference = |name: &str| {
        let out = Command::new("gcc")
            .args([
                "-O2",
                "-c",
                &format!("{name}.c"),
                "-o",
                &format!("{name}.ref"),
            ])
            .current_dir(w.work())
            .output()
            .expect("gcc");
        assert!(out.status.success());
    };
    let mut cmd = w.llama(&[]);
    let mut make = Command::new("make");
    make.args(["-j4", &format!("CC={}", env!("CARGO_BIN_EXE_llamacc"))])
        .current_dir(w.work());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => make.env(k, v),
            None => make.env_remove(k),
        };
    }
    cmd = make;
    cmd.env("LLAMACC_LOCAL_CC", "gcc")
        .env("LLAMACC_FUNCTION", "_");
    env(&mut cmd);
    let out = cmd.output().expect("make");
    let err = stderr(&out);
    assert!(out.status.success(), "the build failed:\n{err}");
    for i in 0..8 {
        reference(&format!("f{i}"));
        assert!(
            fs::read(w.path(&format!("f{i}.o"))).unwrap()
                == fs::read(w.path(&format!("f{i}.ref"))).unwrap(),
            "f{i}.o differs from gcc's"
        );
    }
    err
}

/// The build completed on this machine, and said why exactly once.
pub(crate) fn fell_back_once(w: &World, err: &str, cause: &str) {
    assert_eq!(
        err.matches("compiling on this machine instead").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains(cause), "names the cause ({cause}): {err}");
    let s = stats(w, &w.store());
    assert!(counter(&s, "remote_fallbacks") >= 1, "{s:#}");
    assert_eq!(
        counter(&s, "remote_fallbacks") + counter(&s, "remote"),
        8,
        "{s:#}"
    );
}

/// A Lambda runtime that takes invocations and never answers them: the function times out.
const HANGING_RUNTIME: &str = r#"
import os, time, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(api + "/2018-06-01/runtime/invocation/next") as r:
        r.read()
    time.sleep(3600)
"#;

/// A Lambda runtime that dies with each invocation it takes (and is started again).
const CRASHING_RUNTIME: &str = r#"
import os, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
with urllib.request.urlopen(api + "/2018-06-01/runtime/invocation/next") as r:
    r.read()
os._exit(137)
"#;

#[test]
fn a_function_timeout_falls_back_to_compiling_here_said_once() {
    let mut cloud = Cloud::start_with(LambdaEmulator::start_with_invoke_timeout(2), 0);
    for _ in 0..4 {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", HANGING_RUNTIME]);
        cloud.runtime_env(&mut cmd);
        cloud.start_runtime(cmd);
    }
    let w = crate::world();
    small_project(&w);
    let err = build_small(&w, &|cmd| cloud.client(cmd));
    fell_back_once(&w, &err, "HTTP 408");
}

#[test]
fn a_runtime_crash_falls_back_to_compiling_here_said_once() {
    let mut cloud = Cloud::start_with(LambdaEmulator::start_with_invoke_timeout(2), 0);
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "while :; do python3 -c \"$0\"; done",
        CRASHING_RUNTIME,
    ]);
    cloud.runtime_env(&mut cmd);
    cloud.start_runtime(cmd);
    let w = crate::world();
    small_project(&w);
    let err = build_small(&w, &|cmd| cloud.client(cmd));
    fell_back_once(&w, &err, "lambda");
}

#[test]
fn throttling_beyond_the_retries_falls_back_to_compiling_here_said_once() {
    let cloud = Cloud::start(1);
    let proxy = throttling_proxy(cloud.lambda.addr(), usize::MAX);
    let w = crate::world();
    small_project(&w);
    let err = build_small(&w, &|cmd| cloud.client_via(cmd, &proxy.endpoint()));
    fell_back_once(&w, &err, "TooManyRequests");
}

#[test]
fn s3_unavailable_falls_back_to_compiling_here_said_once() {
    let cloud = Cloud::start(1);
    let w = crate::world();
    small_project(&w);
    let err = build_small(&w, &|cmd| {
        cloud.client(cmd);
        // Every S3 request meets a 503 SlowDown.
        cmd.env("AWS_ENDPOINT_URL_S3", slowdown_endpoint());
    });
    fell_back_once(&w, &err, "503");
}

/// An endpoint answering every request with S3's 503 SlowDown.
fn slowdown_endpoint() -> String {
    // The proxy lives as long as the test binary (its threads are detached).
    HttpProxy::start(None, |_, _| Reply::Respond(Response::s3_slow_down())).endpoint()
}

// --- real AWS -------------------------------------------------------------------------------

/// The original's invoke example and the small project through llamacc, against real AWS:
/// run when a bucket and a function (whose runtime is llama-runtime) are named, with
/// credentials from the SDK's usual places. Otherwise it says why it did nothing (and
/// scripts/test says so too).
#[test]
fn real_aws() {
    let (Ok(bucket), Ok(function)) = (
        std::env::var("LLAMA_TEST_AWS_BUCKET"),
        std::env::var("LLAMA_TEST_AWS_FUNCTION"),
    ) else {
        eprintln!(
            "real_aws: skipped: set LLAMA_TEST_AWS_BUCKET and LLAMA_TEST_AWS_FUNCTION (and AWS \
             credentials) to run the lambda tests against real AWS"
        );
        return;
    };
    let prefix = format!("llama-test-{}", std::process::id());
    let home = std::env::var("HOME").unwrap_or_default();
    let aws = |cmd: &mut Command| {
        cmd.env("LLAMA_BACKEND", "lambda")
            .env("LLAMA_OBJECT_STORE", format!("s3://{bucket}/{prefix}"));
        // The world has a HOME of its own: point the SDK at the user's files.
        for (var, file) in [
            ("AWS_CONFIG_FILE", ".aws/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        ] {
            if std::env::var_os(var).is_none() {
                cmd.env(var, Path::new(&home).join(file));
            }
        }
    };
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let mut cmd = w.llama(&crate::lambda::invoke_example(&function));
    aws(&mut cmd);
    let out = cmd.output().expect("llama invoke");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(w.path("OUTPUT")).unwrap(),
        llama_testkit::sha256sum_line(&w.path("INPUT"), "INPUT")
    );

    small_project(&w);
    let err = build_small(&w, &|cmd| {
        aws(cmd);
        cmd.env("LLAMACC_FUNCTION", &function)
            .env("LLAMACC_LOCAL_FALLBACK", "0");
    });
    let s = stats(&w, &w.store());
    assert_eq!(counter(&s, "remote"), 8, "{s:#}\n{err}");
    eprintln!("real_aws: s3://{bucket}/{prefix}: {}", s["cost"]);
}

// --- xargs through the same faults ----------------------------------------------------------

/// A proxy in front of S3 that answers the first `fail` requests with 503 SlowDown and
/// forwards the rest byte for byte (the Host header included: it is signed).
fn flaky_s3(upstream: std::net::SocketAddr, fail: usize) -> String {
    HttpProxy::start(Some(upstream), move |n, _| {
        if n < fail {
            Reply::Respond(Response::s3_slow_down())
        } else {
            Reply::Forward
        }
    })
    .endpoint()
}

#[test]
fn xargs_jobs_complete_through_s3_503s_and_a_function_timeout() {
    use llama_testkit::{run_with_stdin, stdout};
    // One runtime hangs on what it takes (the function times out: 408 after 2 s), one works.
    let mut cloud = Cloud::start_with(LambdaEmulator::start_with_invoke_timeout(2), 1);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", HANGING_RUNTIME]);
    cloud.runtime_env(&mut cmd);
    cloud.start_runtime(cmd);
    let w = crate::world();
    let input: String = (0..6).map(|i| format!("job{i}\n")).collect();
    let mut cmd = w.llama(&[
        "xargs",
        "-k",
        "-j",
        "2",
        "--retries",
        "3",
        "_",
        "echo",
        "{{.Line}}",
        "done",
    ]);
    cloud.client(&mut cmd);
    // The first 15 S3 requests meet 503 SlowDown: more than one request's own retries.
    cmd.env("AWS_ENDPOINT_URL_S3", flaky_s3(cloud.s3.addr(), 15));
    let out = run_with_stdin(cmd, &input);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}\n{}", cloud.logs());
    let want: String = (0..6).map(|i| format!("job{i} done\n")).collect();
    assert_eq!(stdout(&out), want);
    assert!(err.contains("retry 1 of 3"), "retried: {err}");
}
