//! The lambda backend end to end: the real `llama` binary against s3s-fs (S3 that checks
//! signatures), cargo-lambda's Invoke and Runtime API emulator, and real `llama-runtime`
//! processes serving the function `_` — all on loopback, started and stopped here
//! (llama-testkit; install them with scripts/install-test-servers).
//!
//! The runtime binary is found next to `llama` in the target directory. `cargo test
//! --workspace` builds it (llama-runtime has tests of its own, which makes cargo build its
//! binary); `cargo test -p llama-cli` alone does not: run `cargo build -p llama-runtime`
//! first, or the tests say so.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use llama_testkit::harness::{LambdaEmulator, S3Server, Server};
use llama_testkit::proxy::{HttpProxy, Reply, Response};
use llama_testkit::{World, letters, run_with_stdin, sha256sum_line, stderr, stdout};

/// The `llama-runtime` binary built beside `llama`.
pub(crate) fn runtime_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_llama")).with_file_name("llama-runtime");
    assert!(
        bin.is_file(),
        "{} not found: `cargo test --workspace` builds it; with `cargo test -p llama-cli`, \
         run `cargo build -p llama-runtime` first",
        bin.display()
    );
    bin
}

/// S3, the Lambda emulator and the runtimes serving `_`, each runtime with its own blob
/// cache (as separate Lambda sandboxes have).
pub(crate) struct Cloud {
    pub(crate) s3: S3Server,
    pub(crate) lambda: LambdaEmulator,
    pub(crate) runtimes: Vec<Server>,
    pub(crate) dir: tempfile::TempDir,
}

impl Cloud {
    pub(crate) fn start(runtimes: usize) -> Cloud {
        Self::start_with(LambdaEmulator::start(), runtimes)
    }

    pub(crate) fn start_with(lambda: LambdaEmulator, runtimes: usize) -> Cloud {
        let mut cloud = Cloud {
            s3: S3Server::start(),
            lambda,
            runtimes: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for _ in 0..runtimes {
            cloud.add_runtime();
        }
        cloud
    }

    /// A cloud whose two runtimes run chrooted into a private copy of the minimal Debian
    /// root, which must not hold any of `absent` (so what works there was shipped).
    pub(crate) fn start_jailed(w: &World, absent: &[&str]) -> Cloud {
        let mut cloud = Cloud::start(0);
        let jail = w.dir.path().join("jail");
        let out = Command::new("cp")
            .arg("-a")
            .arg(llama_testkit::harness::minbase_root())
            .arg(&jail)
            .output()
            .expect("cp");
        assert!(out.status.success(), "copying the root: {}", stderr(&out));
        for path in absent {
            assert!(!jail.join(path).exists(), "the root has {path}");
        }
        fs::copy(runtime_bin(), jail.join("usr/local/bin/llama-runtime")).expect("copy runtime");
        for n in 0..2 {
            let mut cmd = Command::new("chroot");
            cmd.arg(&jail).arg("/usr/local/bin/llama-runtime");
            cloud.runtime_env(&mut cmd);
            cmd.env("LLAMA_RUNTIME_CACHE", format!("/tmp/cache-{n}"));
            cloud.start_runtime(cmd);
        }
        cloud
    }

    /// Starts one more `llama-runtime` polling the emulator.
    pub(crate) fn add_runtime(&mut self) {
        let mut cmd = Command::new(runtime_bin());
        self.runtime_env(&mut cmd);
        self.start_runtime(cmd);
    }

    pub(crate) fn start_runtime(&mut self, mut cmd: Command) {
        let n = self.runtimes.len();
        cmd.env(
            "LLAMA_RUNTIME_CACHE",
            self.dir.path().join(format!("cache-{n}")),
        );
        let log = self.dir.path().join(format!("runtime-{n}.log"));
        self.runtimes
            .push(Server::spawn("llama-runtime", cmd, &log));
    }

    /// The environment Lambda would give the runtime, with S3 on loopback.
    pub(crate) fn runtime_env(&self, cmd: &mut Command) {
        clear_aws(cmd);
        cmd.envs(self.lambda.runtime_env())
            .env("AWS_ENDPOINT_URL_S3", self.s3.endpoint())
            .env("AWS_ACCESS_KEY_ID", self.s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.s3.secret_key())
            .env("AWS_REGION", self.s3.region());
    }

    /// `cmd` (a llama command of a [`World`]) on the lambda backend.
    pub(crate) fn client(&self, cmd: &mut Command) {
        self.client_via(cmd, &self.lambda.invoke_endpoint());
    }

    pub(crate) fn client_via(&self, cmd: &mut Command, lambda_endpoint: &str) {
        clear_aws(cmd);
        cmd.env("LLAMA_BACKEND", "lambda")
            .env(
                "LLAMA_OBJECT_STORE",
                format!("s3://{}/test", self.s3.bucket()),
            )
            .env("AWS_ENDPOINT_URL_S3", self.s3.endpoint())
            .env("AWS_ENDPOINT_URL_LAMBDA", lambda_endpoint)
            .env("AWS_ACCESS_KEY_ID", self.s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.s3.secret_key())
            .env("AWS_REGION", self.s3.region());
    }

    /// Invocations the runtimes served: each logs one line per action it ran, "action
    /// HASH/SIZE: exited with status 0 (fetch N ms, run N ms, upload N ms)".
    pub(crate) fn invocations(&self) -> usize {
        self.runtime_logs().matches(" (fetch ").count()
    }

    pub(crate) fn runtime_logs(&self) -> String {
        self.runtimes.iter().map(Server::log).collect()
    }

    /// Everything a failure message needs.
    pub(crate) fn logs(&self) -> String {
        format!(
            "--- runtimes:\n{}\n--- emulator:\n{}",
            self.runtime_logs(),
            self.lambda.log()
        )
    }
}

fn clear_aws(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
}

/// The original's invoke example: `llama invoke -f INPUT -o OUTPUT gcc sh -c 'sha256sum
/// INPUT > OUTPUT'`, with `_` as the function.
/// The original's invoke example on `function`.
pub(crate) fn invoke_example(function: &str) -> Vec<&str> {
    let mut args = vec!["invoke", "-logs", "-f", "INPUT", "-o", "OUTPUT", function];
    args.extend(["sh", "-c", "sha256sum INPUT > OUTPUT"]);
    args
}

#[test]
fn the_originals_invoke_example_then_the_s3_action_cache() {
    let cloud = Cloud::start(1);
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let expected = sha256sum_line(&w.path("INPUT"), "INPUT");

    // Locally, for reference.
    let local = w.run(&invoke_example("_"));
    assert!(local.status.success(), "{}", stderr(&local));
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    fs::remove_file(w.path("OUTPUT")).unwrap();

    // On Lambda, with a store of its own: one invocation.
    let started = Instant::now();
    let mut cmd = w.llama(&invoke_example("_"));
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("lambda-store-1"));
    let out = cmd.output().expect("llama");
    let first = started.elapsed();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    assert_eq!(cloud.invocations(), 1, "{}", cloud.logs());
    let err = stderr(&out);
    assert!(err.contains("executor: lambda"), "{err}");
    assert!(err.contains("on lambda:_"), "{err}");
    assert!(err.contains("llama: lambda: 1 invocation, "), "{err}");
    // The input, the output and the action-cache entry are in S3.
    let keys = cloud.s3.object_keys();
    assert!(keys.iter().any(|k| k.starts_with("test/ac/")), "{keys:?}");
    assert!(cloud.s3.put_count("test/ac/") == 1, "{}", cloud.s3.log());

    // A fresh local store (another machine): served from the S3 action cache, no invocation.
    fs::remove_file(w.path("OUTPUT")).unwrap();
    let started = Instant::now();
    let mut cmd = w.llama(&invoke_example("_"));
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("lambda-store-2"));
    let out = cmd.output().expect("llama");
    let second = started.elapsed();
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    assert_eq!(
        cloud.invocations(),
        1,
        "no second invocation: {}",
        cloud.logs()
    );
    let err = stderr(&out);
    assert!(err.contains("(served from the action cache)"), "{err}");
    assert!(
        err.contains("lambda: 0 invocations, 0.0 GB-s, ")
            && err.contains("1 from the S3 action cache"),
        "{err}"
    );
    eprintln!("invoke on lambda: {first:?} first, {second:?} from the S3 action cache");
}

/// Jobs (output in input order, -k), each hashing its own input into an output file and
/// printing a line.
pub(crate) const XARGS_JOB: &[&str] = &[
    "xargs",
    "-k",
    "_",
    "sh",
    "-c",
    "sha256sum \"$0\" > \"$1\"; echo job {{.Idx}} of {{.Line}}: $(wc -c < \"$0\") bytes",
    "{{.I .Line}}",
    "{{.O (printf \"out/%s.sha\" .Line)}}",
];

/// `n` input files of different sizes, and their names, one per line.
pub(crate) fn xargs_inputs(w: &World, n: usize) -> String {
    let mut lines = String::new();
    for i in 0..n {
        let name = format!("in-{i:02}");
        w.write(&name, format!("input {i}\n").repeat(i + 1).as_bytes());
        lines.push_str(&name);
        lines.push('\n');
    }
    lines
}

/// The files under `out/`, sorted, with their contents.
/// The xargs job over `n` fresh inputs, run on this machine: the input lines, the run, and
/// the outputs it wrote (removed again, for a remote run to write them).
pub(crate) fn xargs_locally(
    w: &World,
    n: usize,
) -> (String, std::process::Output, Vec<(String, String)>) {
    let lines = xargs_inputs(w, n);
    let local = run_with_stdin(w.llama(XARGS_JOB), &lines);
    assert!(local.status.success(), "{}", stderr(&local));
    let written = outputs(w);
    assert_eq!(written.len(), n);
    fs::remove_dir_all(w.path("out")).expect("remove out/");
    (lines, local, written)
}

pub(crate) fn outputs(w: &World) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = fs::read_dir(w.path("out"))
        .expect("out/")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read_to_string(e.path()).expect("read output"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn xargs_over_50_jobs_matches_local_then_is_all_cached() {
    let cloud = Cloud::start(4);
    let w = crate::world();
    let (lines, local, local_outputs) = xargs_locally(&w, 50);

    let started = Instant::now();
    let mut cmd = w.llama(XARGS_JOB);
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("lambda-store-1"));
    let remote = run_with_stdin(cmd, &lines);
    let first = started.elapsed();
    assert!(
        remote.status.success(),
        "{}\n{}",
        stderr(&remote),
        cloud.logs()
    );
    assert_eq!(stdout(&remote), stdout(&local));
    assert_eq!(outputs(&w), local_outputs);
    assert_eq!(cloud.invocations(), 50, "{}", cloud.logs());
    let err = stderr(&remote);
    assert!(
        err.contains("llama xargs: lambda: 50 invocations, "),
        "{err}"
    );

    fs::remove_dir_all(w.path("out")).unwrap();
    let started = Instant::now();
    let mut cmd = w.llama(XARGS_JOB);
    cloud.client(&mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("lambda-store-2"));
    let again = run_with_stdin(cmd, &lines);
    let second = started.elapsed();
    assert!(
        again.status.success(),
        "{}\n{}",
        stderr(&again),
        cloud.logs()
    );
    assert_eq!(stdout(&again), stdout(&local));
    assert_eq!(outputs(&w), local_outputs);
    assert_eq!(cloud.invocations(), 50, "all cached: {}", cloud.logs());
    let err = stderr(&again);
    assert!(
        err.contains("lambda: 0 invocations, ") && err.contains("50 from the S3 action cache"),
        "{err}"
    );
    eprintln!("xargs of 50 jobs on lambda: {first:?} first, {second:?} from the S3 action cache");
}

/// A job that kills the runtime serving it the first time it runs (the marker directory
/// makes the second run harmless).
fn kill_once_script(marker: &Path) -> String {
    format!(
        "if mkdir {} 2>/dev/null; then kill -9 $PPID; sleep 1; fi; echo {{{{.Line}}}} survived",
        marker.display()
    )
}

#[test]
fn a_runtime_killed_mid_invocation_is_retried_and_reported_once() {
    // The emulator gives up on an invocation 3 s after its runtime died (408).
    let cloud = Cloud::start_with(LambdaEmulator::start_with_invoke_timeout(3), 2);
    let w = crate::world();
    let marker = w.dir.path().join("killed");
    let mut cmd = w.llama(&[
        "xargs",
        "-k",
        "--retries",
        "2",
        "_",
        "sh",
        "-c",
        &kill_once_script(&marker),
    ]);
    cloud.client(&mut cmd);
    let out = run_with_stdin(cmd, "a\nb\nc\n");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(stdout(&out), "a survived\nb survived\nc survived\n");
    assert!(marker.exists(), "a runtime was killed");
    let err = stderr(&out);
    assert_eq!(err.matches("retry 1 of 2").count(), 1, "{err}");
    assert!(
        err.contains("function _ gave no answer (HTTP 408"),
        "says what happened: {err}"
    );
}

/// A Lambda runtime that reports a function error for its first invocation and then
/// becomes `llama-runtime` (exec), as a runtime that failed once would behave.
const FAIL_ONCE_THEN_RUNTIME: &str = r#"
import json, os, sys, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
with urllib.request.urlopen(api + "/2018-06-01/runtime/invocation/next") as r:
    rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
    r.read()
body = json.dumps({"errorType": "Injected", "errorMessage": "the disk is on fire"}).encode()
url = api + "/2018-06-01/runtime/invocation/" + rid + "/error"
urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST")).read()
os.execv(sys.argv[1], [sys.argv[1]])
"#;

#[test]
fn a_function_error_is_an_infrastructure_failure_retried_by_default() {
    let mut cloud = Cloud::start(0);
    let mut cmd = Command::new("python3");
    cmd.args(["-c", FAIL_ONCE_THEN_RUNTIME]).arg(runtime_bin());
    cloud.runtime_env(&mut cmd);
    cloud.start_runtime(cmd);
    let w = crate::world();
    // No --retries: a remote backend retries infrastructure failures twice by default.
    let mut cmd = w.llama(&["xargs", "_", "sh", "-c", "echo {{.Line}}; exit 3"]);
    cloud.client(&mut cmd);
    let out = run_with_stdin(cmd, "x\n");
    // The command's own failure (exit 3) is reported as such, after the function error was
    // retried once (the command's own failure never is).
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\n{}",
        stderr(&out),
        cloud.logs()
    );
    assert_eq!(stdout(&out), "x\n");
    let err = stderr(&out);
    assert!(
        err.contains("function _ failed (Injected): the disk is on fire; retry 1 of 2"),
        "{err}"
    );
    assert_eq!(err.matches("disk is on fire").count(), 1, "{err}");
    assert!(err.contains("the command exited with status 3"), "{err}");
    assert_eq!(cloud.invocations(), 1, "{}", cloud.logs());

    // With --retries 0, the function error is the job's failure, and names the function.
    let mut cmd = Command::new("python3");
    cmd.args(["-c", FAIL_ONCE_THEN_RUNTIME]).arg(runtime_bin());
    cloud.runtime_env(&mut cmd);
    cloud.start_runtime(cmd);
    // The first runtime (now llama-runtime) must not take this invocation: stop it.
    cloud.runtimes.remove(0);
    let mut cmd = w.llama(&["xargs", "--retries", "0", "_", "echo", "{{.Line}}"]);
    cloud.client(&mut cmd);
    let out = run_with_stdin(cmd, "y\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("llama xargs: job 0 (line \"y\"): lambda: function _ failed (Injected)"),
        "{err}"
    );
}

/// A proxy in front of the emulator's Invoke API that answers the first `throttle` invokes
/// with 429 TooManyRequestsException, as Lambda does past the account's concurrency.
pub(crate) fn throttling_proxy(upstream: SocketAddr, throttle: usize) -> HttpProxy {
    HttpProxy::start(Some(upstream), move |n, _| {
        if n >= throttle {
            return Reply::Forward;
        }
        Reply::Respond(
            Response::new(429, "Too Many Requests")
                .header("x-amzn-ErrorType", "TooManyRequestsException")
                .header("Content-Type", "application/json")
                .body(br#"{"Type":"User","message":"Rate Exceeded."}"#),
        )
    })
}

#[test]
fn throttling_is_retried_with_backoff_and_reported_once() {
    let cloud = Cloud::start(2);
    let proxy = throttling_proxy(cloud.lambda.addr(), 6);
    let w = crate::world();
    let mut cmd = w.llama(&["xargs", "-k", "-j", "3", "_", "echo", "{{.Line}}"]);
    cloud.client_via(&mut cmd, &proxy.endpoint());
    let out = run_with_stdin(cmd, "1\n2\n3\n4\n5\n6\n");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(stdout(&out), "1\n2\n3\n4\n5\n6\n");
    assert!(proxy.requests() >= 12, "6 throttled, then 6 served");
    let err = stderr(&out);
    assert_eq!(
        err.matches("throttling invocations (TooManyRequestsException)")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("llama xargs: lambda: 6 invocations"), "{err}");
}

#[test]
fn big_blobs_go_up_in_parts_once_and_stdin_reaches_the_command() {
    let cloud = Cloud::start(1);
    let w = crate::world();
    let big = letters(20 << 20);
    w.write("big", &big);
    let big_key = format!("test/cas/{}", llama_core::Digest::of_bytes(&big).hex());

    // 20 MiB in (uploaded by llama in parts), 20 MiB out (uploaded by the runtime in parts,
    // downloaded by llama).
    let mut cmd = w.llama(&[
        "invoke",
        "-f",
        "big",
        "-o",
        "upper",
        "_",
        "sh",
        "-c",
        "tr a-z A-Z < big > upper",
    ]);
    cloud.client(&mut cmd);
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert!(
        fs::read(w.path("upper")).unwrap() == big.to_ascii_uppercase(),
        "the output differs"
    );
    assert_eq!(
        cloud.s3.count("UploadPart", "test/cas/"),
        4,
        "{}",
        cloud.s3.log()
    );
    assert_eq!(cloud.s3.put_count(&big_key), 1);
    assert_eq!(cloud.s3.count("HeadObject", &big_key), 1);

    // Another llama process sharing the store knows the blob is there: no HEAD, no PUT.
    let mut cmd = w.llama(&["invoke", "-f", "big", "_", "wc", "-c", "big"]);
    cloud.client(&mut cmd);
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(stdout(&out), format!("{} big\n", big.len()));
    assert_eq!(cloud.s3.put_count(&big_key), 1);
    assert_eq!(
        cloud.s3.count("HeadObject", &big_key),
        1,
        "{}",
        cloud.s3.log()
    );

    // -stdin: the bytes travel as the stdin blob and are fed to the command.
    let mut cmd = w.llama(&["invoke", "-stdin", "_", "tr", "a-z", "A-Z"]);
    cloud.client(&mut cmd);
    let out = run_with_stdin(cmd, "piped in\n");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cloud.logs());
    assert_eq!(stdout(&out), "PIPED IN\n");
}

#[test]
fn a_missing_object_store_says_how_to_set_one() {
    let w = crate::world();
    let mut cmd = w.llama(&["invoke", "_", "true"]);
    cmd.env("LLAMA_BACKEND", "lambda");
    let out = cmd.output().expect("llama");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("LLAMA_OBJECT_STORE=s3://BUCKET/PREFIX") && err.contains("llama bootstrap"),
        "{err}"
    );
    let mut cmd = w.llama(&["invoke", "_", "true"]);
    cmd.env("LLAMA_BACKEND", "lambda")
        .env("LLAMA_OBJECT_STORE", "my-bucket/x");
    let err = stderr(&cmd.output().expect("llama"));
    assert!(err.contains("must start with s3://"), "{err}");
}
