//! `llama cache` end to end: real gcc through llamacc and its daemon, then each of the
//! command's jobs on that store: show, clear, evict by age, set the limit, verify.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use llama_testkit::{World, files_under, stderr, stdout};

const DAY: u64 = 24 * 3600;

fn ok(out: &Output) {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
}

fn json(w: &World, args: &[&str]) -> serde_json::Value {
    let out = w.run(args);
    ok(&out);
    serde_json::from_str(&stdout(&out)).expect("json")
}

fn counter(w: &World, name: &str) -> u64 {
    json(w, &["stats", "--json"])["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// A C source whose object differs by `n`.
fn source(w: &World, n: usize) -> String {
    let name = format!("unit{n}.c");
    let text = format!(
        "#include <stdio.h>\nint unit{n}(int x) {{ printf(\"%d\\n\", x * {n}); return x + {n}; }}\n"
    );
    w.write(&name, text.as_bytes());
    name
}

/// Compiles `src` through llamacc and asserts the object is the one plain gcc makes.
fn compile_checked(w: &World, src: &str) {
    let object = src.replace(".c", ".o");
    let plain = Command::new("gcc")
        .args(["-O2", "-c", src, "-o", "plain.o"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    ok(&plain);
    let _ = fs::remove_file(w.path(&object));
    let out = w
        .llamacc("gcc", &["-O2", "-c", src, "-o", &object])
        .output()
        .expect("llamacc");
    ok(&out);
    let want = fs::read(w.path("plain.o")).expect("plain object");
    let got = fs::read(w.path(&object)).expect("llamacc's object");
    assert!(got == want, "{object} differs from plain gcc's");
}

/// The files of the store's entries (blobs, records), not its lock and state files.
fn entries(store: &Path) -> Vec<PathBuf> {
    ["cas", "cas-z", "cas-x", "ac", "manifests"]
        .iter()
        .flat_map(|d| files_under(&store.join(d)))
        .collect()
}

/// Makes every entry of the store look last used `secs` ago.
fn age_entries(store: &Path, secs: u64) {
    let then = SystemTime::now() - Duration::from_secs(secs);
    for path in entries(store) {
        File::open(&path)
            .and_then(|f| f.set_modified(then))
            .expect("age an entry");
    }
}

#[test]
fn show_reports_location_size_limit_entries_and_hit_rate() {
    let w = crate::world();
    let units: Vec<String> = (1..=2).map(|n| source(&w, n)).collect();
    for unit in &units {
        compile_checked(&w, unit);
    }
    compile_checked(&w, &units[0]);
    let shown = json(&w, &["cache", "--json"]);
    assert_eq!(shown["dir"], w.store().to_string_lossy().as_ref());
    assert_eq!(shown["limit"], 10u64 << 30, "the default cache_size");
    assert_eq!(shown["limit_from"], "default");
    let blobs = &shown["usage"];
    assert_eq!(
        blobs["blobs"]["entries"].as_u64().unwrap_or(0)
            + blobs["compressed_blobs"]["entries"].as_u64().unwrap_or(0),
        2,
        "two objects: {shown}"
    );
    assert_eq!(shown["usage"]["action_results"]["entries"], 2);
    let on_disk: u64 = entries(&w.store())
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(shown["size"], on_disk);
    assert_eq!(shown["entries"], entries(&w.store()).len());
    assert_eq!(
        (shown["hits"].as_u64(), shown["misses"].as_u64()),
        (Some(1), Some(2))
    );
    let rate = shown["hit_rate"].as_f64().expect("a hit rate");
    assert!((rate - 1.0 / 3.0).abs() < 1e-9, "hit rate {rate}");
    // The same through ccache's and sccache's spellings, as text.
    for spelling in [&["cache"][..], &["cache", "-s"], &["cache", "--show-stats"]] {
        let out = w.run(spelling);
        ok(&out);
        let text = stdout(&out);
        assert!(text.contains(&w.store().display().to_string()), "{text}");
        assert!(text.contains("of 10.0 GiB"), "{text}");
        assert!(text.contains("33.3% (1 hits, 2 misses"), "{text}");
    }
}

#[test]
fn clear_empties_the_cache_and_the_next_compile_misses() {
    let w = crate::world();
    let unit = source(&w, 1);
    compile_checked(&w, &unit);
    compile_checked(&w, &unit);
    assert_eq!(counter(&w, "hits"), 1);
    // The daemon is running and keeps running through the clear.
    let cleared = json(&w, &["cache", "clear", "--json"]);
    assert!(cleared["entries"].as_u64() > Some(0), "{cleared}");
    assert!(entries(&w.store()).is_empty(), "{:?}", entries(&w.store()));
    assert_eq!(json(&w, &["cache", "--json"])["size"], 0);
    compile_checked(&w, &unit);
    assert_eq!(
        counter(&w, "misses"),
        2,
        "the compile after clear is a miss"
    );
    compile_checked(&w, &unit);
    assert_eq!(counter(&w, "hits"), 2, "and it is cached again");
    ok(&w.run(&["cache", "-C"]));
    assert!(entries(&w.store()).is_empty());
}

#[test]
fn compiles_during_clears_deliver_the_right_object() {
    let w = crate::world();
    let units: Vec<String> = (1..=3).map(|n| source(&w, n)).collect();
    for unit in &units {
        compile_checked(&w, unit);
    }
    let llama = w.binaries().llama.clone();
    let store = w.store();
    let config = w.dir.path().join("config");
    let clearer = std::thread::spawn(move || {
        for _ in 0..15 {
            let out = Command::new(&llama)
                .args(["cache", "clear"])
                .env("LLAMA_DIR", &store)
                .env("XDG_CONFIG_HOME", &config)
                .output()
                .expect("llama cache clear");
            assert!(out.status.success(), "{}", stderr(&out));
        }
    });
    for round in 0..8 {
        for unit in &units {
            compile_checked(&w, unit);
        }
        eprintln!("round {round} done");
    }
    clearer.join().expect("clearer");
}

#[test]
fn evict_older_than_removes_only_entries_unused_that_long() {
    let w = crate::world();
    let (old, new) = (source(&w, 1), source(&w, 2));
    compile_checked(&w, &old);
    let old_entries = entries(&w.store()).len() as u64;
    age_entries(&w.store(), 3 * DAY);
    compile_checked(&w, &new);
    let evicted = json(&w, &["cache", "evict", "--older-than", "2d", "--json"]);
    assert_eq!(evicted["removed"]["entries"], old_entries, "{evicted}");
    assert_eq!(
        evicted["remaining"]["entries"],
        entries(&w.store()).len(),
        "{evicted}"
    );
    let misses = counter(&w, "misses");
    compile_checked(&w, &new);
    assert_eq!(counter(&w, "hits"), 1, "the young entry stayed");
    compile_checked(&w, &old);
    assert_eq!(counter(&w, "misses"), misses + 1, "the old entry went");
    // ccache's spelling; nothing is that old now.
    let out = w.run(&["cache", "--evict-older-than", "1d"]);
    ok(&out);
    assert!(
        stdout(&out).contains("removed 0 entries"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_new_limit_persists_and_is_obeyed() {
    let w = crate::world();
    let units: Vec<String> = (1..=12).map(|n| source(&w, n)).collect();
    for unit in &units {
        compile_checked(&w, unit);
    }
    let held = json(&w, &["cache", "--json"])["size"]
        .as_u64()
        .expect("size");
    // Past the eviction grace: only age protects entries in use, and these are not.
    age_entries(&w.store(), 3600);
    let limit = held / 2;
    let set = json(&w, &["cache", "limit", &limit.to_string(), "--json"]);
    assert_eq!(set["limit"], limit);
    assert_eq!(set["daemon"], "stopped", "the daemon held the old limit");
    let file = w.dir.path().join("config/llama/config.toml");
    let text = fs::read_to_string(&file).expect("config file");
    assert!(
        text.contains(&format!("cache_size = \"{limit}\"")),
        "{text}"
    );
    let shown = json(&w, &["cache", "--json"]);
    assert_eq!(shown["limit"], limit, "the limit persists");
    assert!(
        shown["limit_from"]
            .as_str()
            .is_some_and(|s| s.ends_with("config.toml"))
    );
    assert!(
        shown["size"].as_u64() <= Some(limit),
        "evicted down to it: {shown}"
    );
    // The daemon the next compile starts keeps the store under the new limit.
    ok(&w.run(&["cache", "-M", &(held / 4).to_string()]));
    age_entries(&w.store(), 3600);
    compile_checked(&w, &units[0]);
    compile_checked(&w, &source(&w, 13));
    let size = json(&w, &["cache", "--json"])["size"]
        .as_u64()
        .expect("size");
    assert!(size <= held / 4, "{size} bytes held, limit {}", held / 4);
    // A size that is not one is refused before anything is written.
    let out = w.run(&["cache", "limit", "lots"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("10GiB"), "{}", stderr(&out));
    assert!(
        fs::read_to_string(&file)
            .expect("config")
            .contains(&(held / 4).to_string())
    );
}

/// Writes `cache_compression` to the world's config file.
fn set_compression(w: &World, on: bool) {
    let dir = w.dir.path().join("config/llama");
    fs::create_dir_all(&dir).expect("config dir");
    fs::write(
        dir.join("config.toml"),
        format!("cache_compression = {on}\n"),
    )
    .expect("config");
}

#[test]
fn verify_removes_a_corrupted_blob_names_it_and_the_next_compile_is_right() {
    for compressed in [true, false] {
        let w = crate::world();
        set_compression(&w, compressed);
        verify_finds_damage(&w, compressed);
    }
}

fn verify_finds_damage(w: &World, compressed: bool) {
    let unit = source(w, 1);
    compile_checked(w, &unit);
    let object = fs::read(w.path("unit1.o")).expect("object");
    let hex = llama_core::Digest::of_bytes(&object).hex();
    let dir = if compressed { "cas-z" } else { "cas" };
    let blob = w.store().join(dir).join(&hex[..2]).join(&hex);
    let mut damaged = fs::read(&blob).expect("the object's blob");
    assert_eq!(damaged == object, !compressed, "stored as {dir}");
    // One bit off in the middle: only a re-hash (or the decoder) sees it.
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x10;
    fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    fs::write(&blob, &damaged).expect("damage the blob");

    let out = w.run(&["cache", "verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&blob.display().to_string()), "{text}");
    assert!(text.contains("removed 1 damaged blobs"), "{text}");
    assert!(!blob.exists());
    compile_checked(w, &unit);
    compile_checked(w, &unit);
    assert_eq!(counter(w, "hits"), 1);
    let verified = w.run(&["cache", "verify", "--json"]);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    let report: serde_json::Value = serde_json::from_str(&stdout(&verified)).expect("json");
    assert_eq!(report["intact"], true);
    assert_eq!(report["blobs_removed"], 0);
    assert!(report["blobs_ok"].as_u64() >= Some(1));
}

#[test]
fn zero_stats_zeroes_llamaccs_counters() {
    let w = crate::world();
    let unit = source(&w, 1);
    compile_checked(&w, &unit);
    compile_checked(&w, &unit);
    ok(&w.run(&["cache", "-z"]));
    let shown = json(&w, &["cache", "--json"]);
    assert_eq!(
        (shown["hits"].as_u64(), shown["misses"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(shown["hit_rate"].is_null());
    assert!(
        shown["entries"].as_u64() > Some(0),
        "the cache itself stays"
    );
}
