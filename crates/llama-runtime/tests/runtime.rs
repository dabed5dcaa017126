//! `llama-runtime` without S3 or an emulator: the service called directly, and the real
//! binary against a small fake of the Lambda Runtime API, in both forms of
//! `AWS_LAMBDA_RUNTIME_API` (real Lambda's `host:port`, an emulator's URL with a prefix).
//!
//! (These tests also make `cargo test --workspace` build the `llama-runtime` binary, which
//! llama-cli's lambda tests run.)

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use llama_core::{ActionSpec, Digest, PreparedAction, TreeBuilder, reapi};
use llama_runtime::{FailureKind, Service, Settings, wire};
use llama_testkit::proxy::{HttpProxy, Reply, Response};
use prost::Message;

fn action(script: &str, stdin: Option<&[u8]>, timeout: Option<Duration>) -> PreparedAction {
    let mut tree = TreeBuilder::new();
    tree.add_bytes(Arc::from(&b"hi\n"[..]), "dir/in", false)
        .unwrap();
    ActionSpec {
        arguments: vec!["/bin/sh".into(), "-c".into(), script.into()],
        output_paths: vec!["out".into()],
        stdin: stdin.map(Arc::from),
        timeout,
        ..Default::default()
    }
    .prepare(tree.build())
    .unwrap()
}

fn blob<'a>(response: &'a wire::Response, digest: Option<&reapi::Digest>) -> &'a [u8] {
    let digest = Digest::from_field(digest).unwrap();
    if digest.size() == 0 {
        return b"";
    }
    &response
        .blobs
        .iter()
        .find(|b| b.digest == digest.to_string())
        .unwrap_or_else(|| panic!("{digest} is not inline"))
        .data
        .0
}

fn result(response: &wire::Response) -> reapi::ActionResult {
    reapi::ActionResult::decode(&response.result.0[..]).unwrap()
}

#[tokio::test]
async fn runs_with_stdin_and_returns_outputs_inline_and_stays_warm() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).unwrap();
    let a = action(
        "cat dir/in - > out; echo to-stderr >&2; echo to-stdout",
        Some(b"from stdin\n"),
        None,
    );
    let response = service
        .handle(wire::Request::everything_inline(&a).unwrap())
        .await
        .unwrap();
    assert_eq!(response.termination, wire::WireTermination::Exited(0));
    assert!(response.cold);
    assert_eq!(response.memory_mb, 1769);
    let r = result(&response);
    assert_eq!(blob(&response, r.stdout_digest.as_ref()), b"to-stdout\n");
    assert_eq!(blob(&response, r.stderr_digest.as_ref()), b"to-stderr\n");
    assert_eq!(r.output_files.len(), 1);
    assert_eq!(
        blob(&response, r.output_files[0].digest.as_ref()),
        b"hi\nfrom stdin\n"
    );
    assert_eq!(r.execution_metadata.unwrap().worker, "lambda:llama-runtime");

    // Warm: the inputs are in the cache, so a request that carries none still runs.
    let b = action("exit 5", None, None);
    let mut request = wire::Request::everything_inline(&b).unwrap();
    let response = service.handle(request.clone()).await.unwrap();
    assert!(!response.cold);
    assert_eq!(response.termination, wire::WireTermination::Exited(5));
    request.blobs.clear();
    let again = service.handle(request).await.unwrap();
    assert_eq!(again.termination, wire::WireTermination::Exited(5));
}

/// Inputs are links to the runtime's verified cache, not copies: a command that writes
/// through one (root ignores the read-only bit; anyone can chmod first) damages only its own
/// run. The changed blob leaves the cache, so the next action does not see it: it is asked
/// for again, and gets the original once sent.
#[tokio::test]
async fn an_input_written_to_is_dropped_from_the_cache_not_served_again() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).unwrap();
    let vandal = action(
        "chmod u+w dir/in && echo changed > dir/in && cat dir/in > out",
        None,
        None,
    );
    let response = service
        .handle(wire::Request::everything_inline(&vandal).unwrap())
        .await
        .unwrap();
    assert_eq!(response.termination, wire::WireTermination::Exited(0));
    let r = result(&response);
    assert_eq!(
        blob(&response, r.output_files[0].digest.as_ref()),
        b"changed\n"
    );
    assert!(response.timings.overhead_us > 0, "{:?}", response.timings);

    let reader = action("cat dir/in > out", None, None);
    let mut request = wire::Request::everything_inline(&reader).unwrap();
    request.blobs.clear();
    let err = service.handle(request).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::MissingBlobs, "{err:?}");
    let response = service
        .handle(wire::Request::everything_inline(&reader).unwrap())
        .await
        .unwrap();
    let r = result(&response);
    assert_eq!(blob(&response, r.output_files[0].digest.as_ref()), b"hi\n");
}

#[tokio::test]
async fn the_deadline_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).unwrap();
    let a = action("sleep 5", None, Some(Duration::from_millis(300)));
    let response = service
        .handle(wire::Request::everything_inline(&a).unwrap())
        .await
        .unwrap();
    assert_eq!(response.termination, wire::WireTermination::TimedOut(300));
    assert!(response.timings.run_ms < 4000, "{:?}", response.timings);
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).unwrap();
    let a = action("true", None, None);

    let err = service
        .handle_json(serde_json::json!({"hello": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    assert!(err.message.contains("not a llama request"), "{err}");

    let mut lying = wire::Request::everything_inline(&a).unwrap();
    lying.blobs[0].data.0.push(b'!');
    let err = service.handle(lying).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::BadRequest);
    assert!(err.message.contains("does not match"), "{err}");

    let mut future = wire::Request::everything_inline(&a).unwrap();
    future.v = 2;
    let err = service.handle(future).await.unwrap_err();
    assert!(err.message.contains("wire version"), "{err}");

    // Inputs neither inline nor in an object store.
    let mut missing = wire::Request::everything_inline(&a).unwrap();
    missing.blobs.clear();
    let err = service.handle(missing).await.unwrap_err();
    assert_eq!(err.kind, FailureKind::MissingBlobs);
    assert_eq!(err.kind.name(), llama_exec::MISSING_BLOBS_ERROR);
}

#[tokio::test]
async fn outputs_too_big_to_return_without_a_store_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Settings::for_cache(dir.path().join("cache"))).unwrap();
    let a = action("head -c 2000000 /dev/zero > out", None, None);
    let err = service
        .handle(wire::Request::everything_inline(&a).unwrap())
        .await
        .unwrap_err();
    assert!(err.message.contains("too large to return inline"), "{err}");
}

// --- the binary against a fake Runtime API ---------------------------------------------------

/// What the runtime sent back.
#[derive(Debug)]
struct Posted {
    path: String,
    body: Vec<u8>,
}

/// Serves `event` once on `/next` (under `prefix`), then holds further polls; every POST is
/// sent down the channel.
fn fake_runtime_api(
    listener: TcpListener,
    prefix: &'static str,
    event: Vec<u8>,
) -> mpsc::Receiver<Posted> {
    let (tx, rx) = mpsc::channel();
    let served = std::sync::atomic::AtomicBool::new(false);
    let next = format!("{prefix}/2018-06-01/runtime/invocation/next");
    HttpProxy::start_on(listener, None, move |_, request| {
        if request.method == "GET" && request.path == next {
            if served.swap(true, std::sync::atomic::Ordering::SeqCst) {
                // Long-poll forever, as the Runtime API does between invocations.
                return Reply::Hold;
            }
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            return Reply::Respond(
                Response::new(200, "OK")
                    .header("Content-Type", "application/json")
                    .header("Lambda-Runtime-Aws-Request-Id", "req-1")
                    .header("Lambda-Runtime-Deadline-Ms", &deadline.to_string())
                    .header(
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:000000000000:function:test",
                    )
                    .header(
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000",
                    )
                    .body(&event),
            );
        }
        let _ = tx.send(Posted {
            path: request.path.clone(),
            body: request.body.clone(),
        });
        Reply::Respond(Response::new(202, "Accepted"))
    });
    rx
}

struct Runtime(Child);

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_runtime(api: &str, cache: &std::path::Path) -> Runtime {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llama-runtime"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("AWS_LAMBDA_RUNTIME_API", api)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")
        .env("AWS_LAMBDA_FUNCTION_NAME", "test")
        .env("LLAMA_RUNTIME_CACHE", cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Runtime(cmd.spawn().expect("spawn llama-runtime"))
}

fn invoke_through_the_binary(form: &str, prefix: &'static str, event: Vec<u8>) -> Posted {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let posted = fake_runtime_api(listener, prefix, event);
    let api = match form {
        "host:port" => addr.to_string(),
        _ => format!("http://{addr}{prefix}"),
    };
    let _runtime = start_runtime(&api, &dir.path().join("cache"));
    posted
        .recv_timeout(Duration::from_secs(30))
        .expect("the runtime answered within 30 s")
}

#[test]
fn real_lambdas_host_and_port_form() {
    let a = action("cat dir/in", None, None);
    let event = serde_json::to_vec(&wire::Request::everything_inline(&a).unwrap()).unwrap();
    let posted = invoke_through_the_binary("host:port", "", event);
    assert_eq!(posted.path, "/2018-06-01/runtime/invocation/req-1/response");
    let response: wire::Response = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(response.termination, wire::WireTermination::Exited(0));
    assert_eq!(response.memory_mb, 3008);
    assert!(response.cold);
    let r = result(&response);
    assert_eq!(blob(&response, r.stdout_digest.as_ref()), b"hi\n");
    assert_eq!(r.execution_metadata.unwrap().worker, "lambda:test");
}

#[test]
fn an_emulators_url_with_a_path_prefix() {
    let a = action("cat dir/in", None, None);
    let event = serde_json::to_vec(&wire::Request::everything_inline(&a).unwrap()).unwrap();
    let posted = invoke_through_the_binary("url", "/.rt", event);
    assert_eq!(
        posted.path,
        "/.rt/2018-06-01/runtime/invocation/req-1/response"
    );
    let response: wire::Response = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(response.termination, wire::WireTermination::Exited(0));
}

#[test]
fn a_bad_request_is_a_function_error_naming_the_problem() {
    let posted = invoke_through_the_binary("url", "/p", br#"{"not":"llama"}"#.to_vec());
    assert_eq!(posted.path, "/p/2018-06-01/runtime/invocation/req-1/error");
    let error: serde_json::Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(error["errorType"], "BadRequest");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.contains("not a llama request"), "{message}");
}

#[test]
fn no_runtime_api_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llama-runtime"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("LLAMA_RUNTIME_CACHE", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_LAMBDA_RUNTIME_API is not set"), "{err}");
}

/// The glibc the binary needs must be no newer than Amazon Linux 2023's (2.34), the base of
/// Lambda's `provided.al2023` runtime; Debian 12 has 2.36. See main.rs for the build.
#[test]
fn runs_on_amazon_linux_2023s_glibc() {
    let out = Command::new("objdump")
        .arg("-T")
        .arg(env!("CARGO_BIN_EXE_llama-runtime"))
        .output()
        .expect("objdump (binutils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let newest = text
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("dynamic symbols with glibc versions");
    assert!(
        newest <= (2, 34),
        "llama-runtime needs GLIBC_{}.{}, newer than Amazon Linux 2023's 2.34: build on Debian 12 \
         or statically (see crates/llama-runtime/src/main.rs)",
        newest.0,
        newest.1
    );
}
