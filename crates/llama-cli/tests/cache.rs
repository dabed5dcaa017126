//! `llama cache` end to end: the real daemon and store, real gcc compiles through llamacc.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llama_testkit::{World, stderr, stdout};

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

fn cache_json(w: &World) -> serde_json::Value {
    let out = w.run(&["cache", "--json"]);
    ok(&out);
    serde_json::from_str(&stdout(&out)).expect("cache json")
}

fn counter(w: &World, name: &str) -> u64 {
    let out = w.run(&["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stats json");
    stats["counters"][name].as_u64().unwrap_or(0)
}

/// Compiles `name`.c (a unit of its own) through llamacc, writing it first if it is not
/// there yet: a source changed in the clock tick its compile starts is compiled but not
/// cached, so a new one is left a moment to settle.
fn compile(w: &World, name: &str) {
    let source = format!("{name}.c");
    if !w.path(&source).exists() {
        w.write(
            &source,
            format!("int {name}(void) {{ return 7; }}\n").as_bytes(),
        );
        std::thread::sleep(std::time::Duration::from_millis(60));
    }
    ok(&w
        .llamacc(
            "gcc",
            &[
                "-O2",
                "-c",
                &format!("{name}.c"),
                "-o",
                &format!("{name}.o"),
            ],
        )
        .output()
        .expect("llamacc"));
}

/// Every regular file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files(&path)),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
    out
}

#[test]
fn show_counts_what_compiles_left_and_clear_empties_it() {
    let w = crate::world();
    let empty = cache_json(&w);
    assert_eq!(empty["bytes"], 0, "{empty}");
    assert_eq!(empty["limit"], 10u64 << 30, "{empty}");
    compile(&w, "a");
    compile(&w, "b");
    compile(&w, "a");
    let shown = cache_json(&w);
    assert_eq!(shown["location"], w.store().to_str().unwrap(), "{shown}");
    assert_eq!(
        (
            shown["action_results"].as_u64(),
            shown["manifests"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert!(shown["bytes"].as_u64().unwrap() > 0, "{shown}");
    assert_eq!(
        (shown["hits"].as_u64(), shown["misses"].as_u64()),
        (Some(1), Some(2))
    );
    assert!((shown["hit_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert!(stdout(&w.run(&["cache"])).contains("33.3 %"));

    let out = w.run(&["cache", "clear"]);
    ok(&out);
    assert!(stdout(&out).contains("removed"), "{}", stdout(&out));
    assert_eq!(
        fs::read_dir(w.store().join("explain")).map_or(0, |d| d.count()),
        0,
        "llama explain's records go with the cache"
    );
    let cleared = cache_json(&w);
    assert_eq!(
        (
            cleared["bytes"].as_u64(),
            cleared["action_results"].as_u64()
        ),
        (Some(0), Some(0))
    );
    compile(&w, "a");
    assert_eq!(counter(&w, "misses"), 3, "a cleared cache misses");
}

#[test]
fn evict_removes_only_what_was_not_used_for_that_long() {
    let w = crate::world();
    compile(&w, "old");
    // Two days pass for everything stored so far.
    for file in files(&w.store()) {
        let status = Command::new("touch")
            .args(["-m", "-d", "2 days ago"])
            .arg(&file)
            .status()
            .expect("touch");
        assert!(status.success());
    }
    compile(&w, "new");
    let out = w.run(&["cache", "evict", "--older-than", "1d"]);
    ok(&out);
    assert!(
        stdout(&out).contains("removed 3 entries"),
        "{}",
        stdout(&out)
    );
    let misses = counter(&w, "misses");
    compile(&w, "new");
    compile(&w, "old");
    assert_eq!(counter(&w, "misses"), misses + 1, "old went, new stayed");
    let bad = w.run(&["cache", "evict", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        stderr(&bad).contains("--older-than soon"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn set_limit_persists_in_the_config_file_and_is_checked() {
    let w = crate::world();
    ok(&w.run(&["cache", "set-limit", "20GiB"]));
    assert_eq!(cache_json(&w)["limit"], 20u64 << 30);
    let config = fs::read_to_string(w.dir.path().join("config/llama/config.toml")).expect("config");
    assert!(config.contains("cache_size = \"20GiB\""), "{config}");
    let bad = w.run(&["cache", "set-limit", "lots"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("cache_size"), "{}", stderr(&bad));
    assert_eq!(
        cache_json(&w)["limit"],
        20u64 << 30,
        "a refused limit changes nothing"
    );
    // A limit below what is stored evicts at once what is old enough to go.
    compile(&w, "a");
    ok(&w.run(&["daemon", "stop"]));
    for file in files(&w.store()) {
        let _ = Command::new("touch")
            .args(["-m", "-d", "1 hour ago"])
            .arg(&file)
            .status();
    }
    ok(&w.run(&["cache", "set-limit", "1KiB"]));
    let after = cache_json(&w);
    assert!(after["bytes"].as_u64().unwrap() <= 1024, "{after}");
}

#[test]
fn verify_removes_a_damaged_blob_and_the_next_compile_is_still_right() {
    let w = crate::world();
    compile(&w, "a");
    let plain = Command::new("gcc")
        .args(["-O2", "-c", "a.c", "-o", "plain.o"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    ok(&plain);
    let out = w.run(&["cache", "verify"]);
    ok(&out);
    // Damage every blob, raw or compressed, as a disk error would: one byte more, or one
    // bit off in the middle of a zstd frame.
    let compressed = files(&w.store().join("cas-z"));
    assert!(!compressed.is_empty(), "the object is kept compressed");
    let blobs: Vec<PathBuf> = files(&w.store().join("cas"))
        .into_iter()
        .chain(compressed.iter().cloned())
        .collect();
    for blob in &blobs {
        let mut bytes = fs::read(blob).expect("blob");
        if compressed.contains(blob) {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
        } else {
            bytes.push(b'!');
        }
        fs::set_permissions(blob, fs::Permissions::from_mode(0o644)).expect("chmod");
        fs::write(blob, bytes).expect("damage");
    }
    let out = w.run(&["cache", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(
        report["blobs_removed"].as_u64(),
        Some(blobs.len() as u64),
        "{report}"
    );
    ok(&w.run(&["cache", "verify"]));
    fs::remove_file(w.path("a.o")).expect("rm");
    compile(&w, "a");
    assert_eq!(
        fs::read(w.path("a.o")).expect("a.o"),
        fs::read(w.path("plain.o")).expect("plain.o")
    );
}
