//! Unit tests of the reapi executor's translation, retry policy and error messages.

use super::*;
use crate::reapi::bytestream::upload_id;
use crate::reapi::retry::{Backoff, lost, root_cause, transient};
use llama_core::{ActionSpec, TreeBuilder};
use std::sync::Arc;

#[test]
fn llama_properties_stay_out_of_the_remote_platform() {
    let spec = |function: &str| ActionSpec {
        arguments: vec!["true".into()],
        platform: vec![(FUNCTION_PROPERTY.into(), function.into())],
        ..Default::default()
    };
    let a = spec("gcc").prepare(TreeBuilder::new().build()).unwrap();
    let b = spec("other").prepare(TreeBuilder::new().build()).unwrap();
    let props = vec![("container-image".to_string(), "docker://x".to_string())];
    let ra = remote_action(&a, "gcc", &props, true).unwrap();
    let rb = remote_action(&b, "other", &props, true).unwrap();
    let names: Vec<&str> = ra
        .action
        .platform
        .iter()
        .flat_map(|p| p.properties.iter().map(|p| p.name.as_str()))
        .collect();
    assert_eq!(names, vec!["container-image"]);
    #[allow(deprecated)]
    let command_platform = ra.command.platform.clone();
    assert_eq!(command_platform, ra.action.platform);
    assert_ne!(
        ra.action_digest, rb.action_digest,
        "the function is in the key"
    );
    assert_eq!(Digest::of_bytes(&ra.command_bytes), ra.command_digest);
    assert!(
        remote_action(&a, "gcc", &props, false)
            .unwrap()
            .action
            .do_not_cache
    );

    let with_stdin = ActionSpec {
        arguments: vec!["cat".into()],
        stdin: Some(Arc::from(&b"x"[..])),
        ..Default::default()
    }
    .prepare(TreeBuilder::new().build())
    .unwrap();
    let e = remote_action(&with_stdin, "f", &[], true).unwrap_err();
    assert!(e.to_string().contains("standard input"), "{e}");
}

#[test]
fn a_broken_connection_is_transient_a_refusal_is_not() {
    assert!(transient(&Status::unavailable("connection refused")));
    assert!(transient(&Status::unknown(
        "h2 protocol error: error reading a body from connection"
    )));
    assert!(!transient(&Status::unknown(
        "the server crashed on your action"
    )));
    assert!(!transient(&Status::failed_precondition(
        "unknown platform property llama-function"
    )));
}

/// A status as tonic makes it from a transport failure: a generic message over the
/// error that says what happened.
fn with_cause(mut status: Status, cause: &str) -> Status {
    status.set_source(Arc::new(std::io::Error::other(cause.to_string())));
    status
}

#[test]
fn a_connection_closed_under_a_cancelled_call_is_transient_a_certificate_is_not() {
    let closed = with_cause(
        Status::cancelled("operation was canceled"),
        "connection closed",
    );
    assert!(transient(&closed) && lost(&closed));
    assert!(!transient(&Status::cancelled("the server cancelled it")));
    let untrusted = Status::unavailable("invalid peer certificate: UnknownIssuer");
    assert!(!transient(&untrusted) && !lost(&untrusted));
    let refused = with_cause(
        Status::unknown("transport error"),
        "received fatal alert: CertificateRequired",
    );
    assert!(!transient(&refused));
    let busy = Status::resource_exhausted("too many requests");
    assert!(transient(&busy) && !lost(&busy));
    assert_eq!(root_cause(&closed).as_deref(), Some("connection closed"));
    assert_eq!(root_cause(&busy), None);
}

fn executor(endpoint: &str) -> (tempfile::TempDir, ReapiExecutor) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
    (dir, ReapiExecutor::new(store, ReapiConfig::new(endpoint)))
}

#[test]
fn tls_failures_name_the_setting_that_mends_them() {
    let (_dir, e) = executor("grpcs://127.0.0.1:1");
    let untrusted = Status::unavailable("invalid peer certificate: UnknownIssuer");
    let message = e.status_error("GetCapabilities", &untrusted).to_string();
    assert!(
        message.contains("grpcs://127.0.0.1:1") && message.contains("reapi_ca"),
        "{message}"
    );
    let closed = with_cause(
        Status::cancelled("operation was canceled"),
        "connection closed",
    );
    let message = e.status_error("GetCapabilities", &closed).to_string();
    assert!(
        message.contains("(connection closed)") && message.contains("reapi_client_cert"),
        "{message}"
    );
    let eof = with_cause(
        Status::unknown("transport error"),
        "peer closed connection without sending TLS close_notify",
    );
    assert!(
        e.tls_hint(&eof)
            .is_some_and(|h| h.contains("reapi_client_cert"))
    );
    let refused = Status::unavailable("tcp connect error: Connection refused (os error 111)");
    assert_eq!(e.tls_hint(&refused), None);
    // Over plaintext, no TLS advice.
    let (_dir, e) = executor("grpc://127.0.0.1:1");
    assert_eq!(e.tls_hint(&closed), None);
    assert_eq!(e.tls_hint(&untrusted), None);
}

#[test]
fn a_lost_connection_is_noticed_once() {
    let (_dir, e) = executor("grpc://127.0.0.1:1");
    e.lost_connection(&Status::resource_exhausted("busy"));
    assert!(
        e.take_notices().is_empty(),
        "an overloaded server is not lost"
    );
    e.lost_connection(&Status::unavailable("tcp connect error"));
    e.lost_connection(&Status::unavailable("tcp connect error"));
    let notices = e.take_notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("lost the connection to grpc://127.0.0.1:1"),
        "{notices:?}"
    );
    assert!(e.take_notices().is_empty());
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_within_a_window_that_starts_again_on_reset() {
    let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
    let mut waited = Vec::new();
    while let Some(d) = b.next() {
        waited.push(d.as_secs());
        tokio::time::sleep(d).await;
    }
    assert_eq!(waited, vec![1, 2, 4]);
    b.reset();
    assert_eq!(b.next(), Some(Duration::from_secs(1)));
}

#[test]
fn upload_ids_are_fresh_and_uuid_shaped() {
    let d = Digest::of_bytes(b"x");
    let (a, b) = (upload_id(&d), upload_id(&d));
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(a.split('-').count(), 5);
}
