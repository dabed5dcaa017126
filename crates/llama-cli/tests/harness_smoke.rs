//! The test servers themselves (util/harness.rs): they start, answer as the Lambda
//! executor's tests expect, and stop. A failure here is about the harness or its install
//! (scripts/install-test-servers), not about llama.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::harness::{LambdaEmulator, S3Server, Server, http};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn s3_rejects_an_unsigned_request() {
    let s3 = S3Server::start();
    assert!(s3.root().join(s3.bucket()).is_dir());
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));

    let path = format!("/{}/some/key", s3.bucket());
    let resp = http(s3.addr(), "GET", &path, &[], b"", TIMEOUT).expect("GET");
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("AccessDenied"), "{}", resp.text());

    let put = http(s3.addr(), "PUT", &path, &[], b"data", TIMEOUT).expect("PUT");
    assert_eq!(put.status, 403, "{}", put.text());
    assert!(s3.object_keys().is_empty());
    // Rejected requests are not counted as requests.
    assert_eq!(s3.put_count(""), 0, "{}", s3.log());
    assert!(s3.requests().is_empty(), "{:?}", s3.requests());
}

/// A Lambda custom runtime in a few lines, speaking the Runtime API: echoes each event back,
/// or reports a function error when the event contains "fail".
const ECHO_RUNTIME: &str = r#"
import json, os, urllib.request
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
base = api if "://" in api else "http://" + api
while True:
    with urllib.request.urlopen(base + "/2018-06-01/runtime/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = r.read()
    if b"fail" in event:
        url = base + "/2018-06-01/runtime/invocation/" + rid + "/error"
        body = json.dumps({"errorMessage": "asked to fail", "errorType": "Failure"})
    else:
        url = base + "/2018-06-01/runtime/invocation/" + rid + "/response"
        body = json.dumps({"echo": event.decode()})
    urllib.request.urlopen(urllib.request.Request(url, data=body.encode(), method="POST")).read()
"#;

#[test]
fn lambda_emulator_hands_invocations_to_a_runtime() {
    let started = Instant::now();
    let lambda = LambdaEmulator::start();
    assert_eq!(
        lambda.runtime_api(),
        format!("{}/.rt", lambda.invoke_endpoint())
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", ECHO_RUNTIME]).envs(lambda.runtime_env());
    let runtime = Server::spawn("the echo runtime", cmd, &dir.path().join("runtime.log"));

    let path = format!(
        "/2015-03-31/functions/{}/invocations",
        LambdaEmulator::FUNCTION
    );
    let ok = http(lambda.addr(), "POST", &path, &[], br#"{"n":1}"#, TIMEOUT).expect("invoke");
    assert_eq!(ok.status, 200, "{}\nruntime: {}", ok.text(), runtime.log());
    assert_eq!(ok.text(), r#"{"echo": "{\"n\":1}"}"#);

    // A function error: HTTP 500 with the runtime's error document, and no
    // X-Amz-Function-Error header (real Lambda would answer 200 with that header).
    let err = http(lambda.addr(), "POST", &path, &[], b"fail", TIMEOUT).expect("invoke");
    assert_eq!(
        err.status,
        500,
        "{}\nruntime: {}",
        err.text(),
        runtime.log()
    );
    assert!(err.text().contains("asked to fail"), "{}", err.text());
    assert_eq!(err.header("x-amz-function-error"), None);

    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
}
