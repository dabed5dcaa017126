//! Build traces end to end: lua built through llamacc, traced, then reported, exported in
//! the Trace Event format and replayed.

use std::collections::BTreeMap;
use std::fs;

use llama_testkit::{stderr, stdout};

use std::process::Command;
use std::time::Instant;

use crate::lambda_cc::{corpus_tree, stop_daemon};

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).expect("json")
}

#[test]
fn a_lua_build_is_traced_reported_exported_and_replayed() {
    let w = crate::world();
    let tree = w.dir.path().join("lua");
    corpus_tree("lua", &tree);
    // lua's objects only (its `o` target), so that make's own time is the compiles': the
    // archive and links that follow them are not compiles and are not traced.
    let llamacc = env!("CARGO_BIN_EXE_llamacc");
    let mut make = Command::new("make");
    make.args(["-C", "src", "-j16", "o", "SYSCFLAGS=-DLUA_USE_LINUX"])
        .arg(format!("CC={llamacc} -std=gnu99"))
        .current_dir(&tree);
    for (k, v) in w.llama(&[]).get_envs() {
        match v {
            Some(v) => make.env(k, v),
            None => make.env_remove(k),
        };
    }
    make.env("LLAMACC_LOCAL_CC", "gcc")
        .env("LLAMACC_BUILD_ID", "lua-x");
    let started = Instant::now();
    let out = make.output().expect("make");
    let wall = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", stderr(&out));
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
    // From the first compile's arrival to the last one's answer; make's own time adds its
    // start and the first and last llamacc's.
    let traced = report["wall_s"].as_f64().expect("wall");
    eprintln!("lua: the trace's wall {traced:.3} s, make's {wall:.3} s");
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
    let out = llama_testkit::run_with_stdin(
        w.llama(&["xargs", "--build-id", "xb", "f", "echo", "{{.Line}}"]),
        "a\nb\nc\n",
    );
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

#[test]
fn the_originals_global_flags_work() {
    let w = crate::world();
    // -trace FILE: the actions also land in FILE, one JSON object per line.
    let file = w.dir.path().join("t.jsonl");
    let out = llama_testkit::run_with_stdin(
        w.llama(&[
            "-trace",
            file.to_str().unwrap(),
            "xargs",
            "f",
            "echo",
            "{{.Line}}",
        ]),
        "a\nb\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = fs::read_to_string(&file).expect("-trace file");
    assert_eq!(lines.lines().count(), 2, "{lines}");
    for line in lines.lines() {
        let action: serde_json::Value = serde_json::from_str(line).expect("an action");
        assert_eq!(action["kind"], "xargs");
    }
    // -s3-concurrency sets s3_concurrency, and is checked like it.
    let config = w.run(&["-s3-concurrency", "4", "config"]);
    assert!(
        stdout(&config).contains("s3_concurrency      = \"4\"")
            && stdout(&config).contains("from flag -s3-concurrency"),
        "{}",
        stdout(&config)
    );
    assert_eq!(
        w.run(&["-s3-concurrency", "0", "config"]).status.code(),
        Some(125)
    );
    // -debug-aws is accepted everywhere.
    assert!(w.run(&["-debug-aws", "config"]).status.success());
}
