//! `llama doctor` on this machine's backend and on a REAPI server (BuildGrid, and a port
//! where nothing listens). The lambda backend's checks are tested against moto in
//! `lambda_setup.rs`.

use std::process::{Command, Output};

use llama_testkit::harness::ReapiServer;
use llama_testkit::{World, stderr, stdout};

/// `llama doctor ARGS` in `w`, with `env` on top.
fn doctor(w: &World, args: &[&str], env: &dyn Fn(&mut Command)) -> Output {
    let mut cmd = w.llama(&[&["doctor"], args].concat());
    env(&mut cmd);
    cmd.output().expect("llama doctor")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}{}", stdout(out), stderr(out)))
}

/// The status of the check `name` in `doctor --json`'s output.
fn status<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn on_this_machine_everything_is_in_order_and_json_says_the_same() {
    let w = crate::world();
    let out = doctor(&w, &[], &|_| {});
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for line in [
        "ok       backend: local (from default)",
        "ok       store: ",
        "writable, 0 B of cache_size 10.0 GiB used",
        // No daemon ran: doctor starts one, as llamacc would.
        "ok       daemon: started, pid ",
        "ok       compiler: ",
        "everything is in order",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }

    let out = doctor(&w, &["--json"], &|_| {});
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["backend"], "local", "{report:#}");
    assert_eq!(report["problems"], 0, "{report:#}");
    for name in ["backend", "store", "daemon", "compiler"] {
        assert_eq!(status(&report, name), "ok", "{report:#}");
    }
    let daemon = report["checks"][2]["detail"].as_str().unwrap_or_default();
    assert!(daemon.starts_with("running, pid "), "{report:#}");
}

#[test]
fn an_unusable_store_is_a_problem_with_its_fix() {
    let w = crate::world();
    w.write("not-a-dir", b"a file where the store should be\n");
    let out = doctor(&w, &["--json"], &|cmd| {
        cmd.env("LLAMA_DIR", w.path("not-a-dir"));
    });
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(status(&report, "store"), "problem", "{report:#}");
    let store = &report["checks"][1];
    assert!(
        store["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not-a-dir"),
        "{report:#}"
    );
    assert!(
        store["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("LLAMA_DIR"),
        "{report:#}"
    );
}

#[test]
fn on_reapi_buildgrid_answers_and_a_round_trip_runs_per_function() {
    let server = ReapiServer::start(1);
    let w = crate::world();
    let reapi = |cmd: &mut Command| {
        cmd.env("LLAMA_BACKEND", "reapi")
            .env("LLAMA_REAPI_ENDPOINT", server.endpoint())
            .env("LLAMA_REAPI_INSTANCE", server.instance());
    };
    let out = doctor(&w, &["-f", "other"], &reapi);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}\n{}",
        stderr(&out),
        server.log()
    );
    for line in [
        "ok       backend: reapi (from $LLAMA_BACKEND)".to_string(),
        format!("ok       server {}: instance ", server.endpoint()),
        "executes, SHA-256".into(),
        "ok       round trip gcc: uploaded, executed, and its output downloaded and verified"
            .into(),
        "ok       round trip other: ".into(),
        "everything is in order".into(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    // Each round trip ran on a worker: none came from the server's action cache.
    assert_eq!(
        server.worker_log().matches(": OK exit ").count(),
        2,
        "{}",
        server.log()
    );
}

#[test]
fn on_reapi_a_dead_port_fails_naming_the_server_and_what_to_do() {
    let w = crate::world();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let endpoint = format!("grpc://127.0.0.1:{port}");
    let out = doctor(&w, &[], &|cmd| {
        cmd.env("LLAMA_BACKEND", "reapi")
            .env("LLAMA_REAPI_ENDPOINT", &endpoint);
    });
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for line in [
        format!("PROBLEM  server {endpoint}: "),
        "cannot be reached".into(),
        "LLAMA_REAPI_ENDPOINT".into(),
        "fix: check that the server is up".into(),
        "skipped  round trip: the server did not answer".into(),
        "1 problem found".into(),
    ] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
}
