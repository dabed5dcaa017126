//! The test servers themselves (llama-testkit): they start, answer as the Lambda
//! executor's and the set-up commands' tests expect, and stop. A failure here is about the
//! harness or its install (scripts/install-test-servers), not about llama.

use std::process::Command;
use std::time::{Duration, Instant};

use llama_testkit::harness::{LambdaEmulator, MotoServer, OciRegistry, S3Server, Server, http};

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

/// Runs `f` on a runtime of its own: the tests here are plain `#[test]`s, since the servers
/// start with blocking waits.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

#[test]
fn moto_answers_the_rust_sdk() {
    use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};

    let moto = MotoServer::start();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let config = http(moto.addr(), "GET", "/moto-api/config", &[], b"", TIMEOUT).expect("GET");
    assert!(
        config.text().contains(r#""lambda": {"use_docker": false}"#),
        "{}",
        config.text()
    );

    // Everything given, nothing read from this process's environment or profile.
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(Region::new(moto.region()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            MotoServer::ACCESS_KEY,
            MotoServer::SECRET_KEY,
            None,
            None,
            "moto",
        )))
        .build();
    let (identity, stacks) = block_on(async {
        let identity = aws_sdk_sts::Client::new(&sdk)
            .get_caller_identity()
            .send()
            .await;
        let stacks = aws_sdk_cloudformation::Client::new(&sdk)
            .list_stacks()
            .send()
            .await;
        (identity, stacks)
    });
    let identity = identity.unwrap_or_else(|e| panic!("GetCallerIdentity: {e:?}\n{}", moto.log()));
    assert_eq!(identity.account(), Some(MotoServer::ACCOUNT_ID));
    assert_eq!(identity.arn(), Some("arn:aws:sts::123456789012:user/moto"));
    let stacks = stacks.unwrap_or_else(|e| panic!("ListStacks: {e:?}\n{}", moto.log()));
    assert!(stacks.stack_summaries().is_empty(), "{stacks:?}");
}

/// Set when this test binary runs again as the child of
/// [`moto_env_is_all_the_rust_sdk_needs`].
const SDK_CHILD: &str = "LLAMA_TEST_SDK_CHILD";

/// [`MotoServer::apply_env`] alone configures the SDK's default chain, as llama loads it.
/// The chain reads the process's environment, so the SDK runs in a child: this test binary
/// again, running only this test, which then takes the other branch.
#[test]
fn moto_env_is_all_the_rust_sdk_needs() {
    if std::env::var_os(SDK_CHILD).is_some() {
        let identity = block_on(async {
            let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            aws_sdk_sts::Client::new(&sdk)
                .get_caller_identity()
                .send()
                .await
        });
        match identity {
            Ok(identity) => println!("account={}", identity.account().unwrap_or("")),
            Err(e) => panic!("GetCallerIdentity: {e:?}"),
        }
        return;
    }

    let moto = MotoServer::start();
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    let this_test = "harness_smoke::moto_env_is_all_the_rust_sdk_needs";
    cmd.args(["--exact", this_test, "--nocapture", "--test-threads", "1"])
        .env(SDK_CHILD, "1");
    moto.apply_env(&mut cmd);
    let started = Instant::now();
    let out = cmd.output().expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("account=123456789012"),
        "the child ({}):\n{stdout}{}\nmoto:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        moto.log()
    );
    // No detour through instance metadata or a real endpoint, which would take seconds.
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
}

#[test]
fn registry_answers_and_stores_a_blob() {
    let registry = OciRegistry::start();
    assert_eq!(registry.url(), format!("http://{}", registry.host_port()));

    let v2 = http(registry.addr(), "GET", "/v2/", &[], b"", TIMEOUT).expect("GET /v2/");
    assert_eq!(v2.status, 200, "{}\n{}", v2.text(), registry.log());
    assert_eq!(v2.text(), "{}");
    assert_eq!(
        v2.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );

    // A monolithic upload: POST for an upload URL, PUT the whole blob there with its digest.
    let blob = b"llama";
    let digest = format!("sha256:{}", llama_core::Digest::of_bytes(blob).hex());
    let start = http(
        registry.addr(),
        "POST",
        "/v2/llama-test/blobs/uploads/",
        &[],
        b"",
        TIMEOUT,
    )
    .expect("POST upload");
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").expect("Location").to_string();
    let path = location.strip_prefix(&registry.url()).unwrap_or(&location);
    let put = http(
        registry.addr(),
        "PUT",
        &format!("{path}&digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        blob,
        TIMEOUT,
    )
    .expect("PUT blob");
    assert_eq!(put.status, 201, "{}\n{}", put.text(), registry.log());
    let get = http(
        registry.addr(),
        "GET",
        &format!("/v2/llama-test/blobs/{digest}"),
        &[],
        b"",
        TIMEOUT,
    )
    .expect("GET blob");
    assert_eq!(get.status, 200, "{}", get.text());
    assert_eq!(get.body, blob);
    assert!(
        registry
            .storage()
            .join("docker/registry/v2/repositories/llama-test")
            .is_dir()
    );
}
