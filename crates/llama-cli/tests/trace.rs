//! Build traces end to end: lua built through llamacc, traced, then reported, exported in
//! the Trace Event format and replayed.

use std::collections::BTreeMap;
use std::fs;

use llama_testkit::{stderr, stdout};

use crate::lambda_cc::{build_corpus, corpus_tree, stop_daemon};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).expect("json")
}

/// The seconds corpus-build says the build took (make's own wall time).
fn built_in(out: &std::process::Output) -> f64 {
    stderr(out)
        .lines()
        .find_map(|l| l.split(" built in ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("corpus-build's time")
}

#[test]
fn a_lua_build_is_traced_reported_exported_and_replayed() {
    let w = crate::world();
    let tree = w.dir.path().join("lua");
    corpus_tree("lua", &tree);
    let llamacc = env!("CARGO_BIN_EXE_llamacc");
    let out = build_corpus(&w, "lua", &tree, (llamacc, llamacc), &|cmd| {
        cmd.env("LLAMACC_BUILD_ID", "lua-x");
    });
    let wall = built_in(&out);
    // The daemon writes traces on a thread of its own; stopping it writes what is queued.
    stop_daemon(&w, &w.store());

    let listed = json(&w.run(&["trace", "list", "--json"]));
    assert_eq!(listed[0]["build"], "lua-x", "{listed}");
    let report = json(&w.run(&["trace", "report", "lua-x", "--json"]));
    let actions = report["actions"].as_u64().expect("actions");
    assert!(actions >= 30, "{report}");
    assert_eq!(
        report["by_status"]["miss"].as_u64(),
        Some(actions),
        "{report}"
    );
    // From the first compile's arrival to the last one's answer; the build's own wall time
    // adds make's start and the final archive and links.
    let traced = report["wall_s"].as_f64().expect("wall");
    assert!(
        (traced - wall).abs() <= 0.05 * wall,
        "trace says {traced:.2} s, the build took {wall:.2} s"
    );
    // The report's phase totals are the actions' own phases, summed.
    let raw = fs::read_to_string(w.store().join("traces/lua-x.jsonl")).expect("trace file");
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in raw.lines() {
        let action: serde_json::Value = serde_json::from_str(line).expect("action line");
        for span in action["phases"].as_array().expect("phases") {
            let us = span["end_us"].as_u64().unwrap() - span["start_us"].as_u64().unwrap();
            *sums
                .entry(span["phase"].as_str().unwrap().into())
                .or_default() += us as f64 / 1e6;
        }
    }
    assert!(
        sums.contains_key("run") && sums.contains_key("lookup"),
        "{sums:?}"
    );
    for (phase, total) in &sums {
        let reported = report["phase_s"][phase].as_f64().unwrap_or(0.0);
        assert!(
            (reported - total).abs() < 1e-6,
            "{phase}: {reported} vs {total}"
        );
    }

    let trace = json(&w.run(&["trace", "export", "lua-x"]));
    assert_trace_event_format(&trace, actions);

    let one = json(&w.run(&["trace", "simulate", "lua-x", "--workers", "1", "--json"]));
    let two = json(&w.run(&[
        "trace",
        "simulate",
        "lua-x",
        "--workers",
        "2",
        "--client-cores",
        "2",
        "--json",
    ]));
    let (one, two) = (
        one[0]["wall_s"].as_f64().unwrap(),
        two[0]["wall_s"].as_f64().unwrap(),
    );
    assert!(two > 0.0 && two <= one, "1 slot {one} s, 2 slots {two} s");
    let warm = w.run(&[
        "trace",
        "simulate",
        "lua-x",
        "--cache",
        "warm",
        "--sweep",
        "--workers",
        "8",
    ]);
    assert!(stdout(&warm).contains("bottleneck"), "{}", stdout(&warm));
    let unknown = w.run(&["trace", "report", "nope"]);
    assert_eq!(unknown.status.code(), Some(125));
    assert!(
        stderr(&unknown).contains("llama trace list"),
        "{}",
        stderr(&unknown)
    );
}

/// What Perfetto's JSON importer and chrome://tracing need: a `traceEvents` array whose
/// complete events have a name, a phase, non-negative times and a process and thread, with
/// one event per action and the phases nested inside their action on its track.
fn assert_trace_event_format(trace: &serde_json::Value, actions: u64) {
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    let mut per_action = 0;
    let mut open: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        assert!(["X", "M"].contains(&ph), "{e}");
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
        if ph == "M" {
            continue;
        }
        let (ts, dur) = (
            e["ts"].as_u64().expect("ts"),
            e["dur"].as_u64().expect("dur"),
        );
        assert!(e["name"].is_string(), "{e}");
        let tid = e["tid"].as_u64().unwrap();
        if e["cat"] == "phase" {
            let (start, end) = open[&tid];
            assert!(
                ts >= start && ts + dur <= end,
                "phase outside its action: {e}"
            );
        } else {
            per_action += 1;
            open.insert(tid, (ts, ts + dur));
        }
    }
    assert_eq!(per_action, actions);
}

#[test]
fn xargs_and_invoke_jobs_are_traced() {
    let w = crate::world();
    let mut xargs = w.llama(&["xargs", "--build-id", "xb", "f", "echo", "{{.Line}}"]);
    xargs.stdin(std::process::Stdio::piped());
    let mut child = xargs
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("xargs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"a\nb\nc\n").expect("lines");
    }
    let out = child.wait_with_output().expect("xargs");
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&w.run(&["trace", "report", "xb", "--json"]));
    assert_eq!(report["actions"], 3, "{report}");
    assert_eq!(report["by_status"]["miss"], 3, "{report}");

    let out = w.run(&["invoke", "f", "sh", "-c", "echo hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = w.run(&["invoke", "f", "sh", "-c", "echo hi"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json(&w.run(&["trace", "report", "invoke", "--json"]));
    assert_eq!(report["actions"], 2, "{report}");
    assert_eq!(report["by_status"]["hit"], 1, "{report}");
}
