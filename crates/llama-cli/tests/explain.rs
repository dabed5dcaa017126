//! `llama explain` and `LLAMACC_DEBUG=1` end to end: real gcc, a real daemon, a real store.
//! Each test compiles once, changes one part of the key, compiles again, and asserts that
//! the explanation names that part and nothing else.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use llama_core::Digest;
use llama_testkit::{World, stderr, stdout};

const HEADER: &str = "#define ANSWER 42\nint helper(int);\n";
const SOURCE: &str = "#include \"answer.h\"\nint main(void) { return helper(ANSWER); }\n";
const ARGS: &[&str] = &[
    "-O2",
    "-Ifirst",
    "-Iinclude",
    "-c",
    "src/main.c",
    "-o",
    "main.o",
];

fn project(w: &World) {
    w.write("src/main.c", SOURCE.as_bytes());
    w.write("include/answer.h", HEADER.as_bytes());
    fs::create_dir_all(w.path("first")).expect("mkdir first");
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// Compiles with gcc through llamacc, with `env` added.
fn compile(w: &World, env: &[(&str, &str)], args: &[&str]) {
    let mut cmd = w.llamacc("gcc", args);
    cmd.envs(env.iter().copied());
    ok(&cmd.output().expect("llamacc"));
}

/// An edit within the file system's clock tick of a compile is not trusted (the compile is
/// then not cached): edits here are older than the compiles that follow them.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(60));
}

/// `llama explain ARGS` in words.
fn explain(w: &World, args: &[&str]) -> String {
    let out = w.run(&[&["explain"], args].concat());
    ok(&out);
    stdout(&out)
}

/// `llama explain --json PATH`.
fn explain_json(w: &World, path: &str) -> serde_json::Value {
    let out = w.run(&["explain", "--json", path]);
    ok(&out);
    serde_json::from_str(&stdout(&out)).expect("explain json")
}

/// The differences `llama explain --json PATH` lists, after checking it explains a miss.
fn differences(w: &World, path: &str) -> serde_json::Value {
    let x = explain_json(w, path);
    assert_eq!(x["outcome"], "misses", "{x:#}");
    assert_eq!(x["conclusion"]["kind"], "changed", "{x:#}");
    x["differences"].clone()
}

fn sha256(data: &[u8]) -> String {
    Digest::of_bytes(data).hex()
}

/// The working directory, as the records spell it.
fn work(w: &World) -> String {
    fs::canonicalize(w.work())
        .expect("canonical work dir")
        .display()
        .to_string()
}

#[test]
fn a_second_compile_is_explained_as_a_hit_and_the_first_as_the_first() {
    let w = crate::world();
    project(&w);
    compile(&w, &[], ARGS);
    let first = explain_json(&w, "main.o");
    assert_eq!(first["outcome"], "misses");
    assert_eq!(first["conclusion"]["kind"], "first-compile");
    compile(&w, &[], ARGS);
    let x = explain_json(&w, "main.o");
    assert_eq!(x["outcome"], "hits");
    assert_eq!(x["conclusion"]["kind"], "hit");
    assert_eq!(x["conclusion"]["reused"], first["time"]);
    let text = explain(&w, &["main.o"]);
    assert!(text.contains("hit: served from the cache"), "{text}");
}

#[test]
fn a_compiler_upgrade_names_the_file_and_both_digests() {
    let w = crate::world();
    project(&w);
    let old = b"#!/bin/sh\nexec gcc \"$@\"\n";
    let new = b"#!/bin/sh\n# 12.3, rebuilt\nexec gcc \"$@\"\n";
    let cc = w.path("bin/cc");
    w.write("bin/cc", old);
    fs::set_permissions(&cc, fs::Permissions::from_mode(0o755)).expect("chmod");
    let cc = cc.to_str().expect("utf-8 path");
    compile(&w, &[("LLAMACC_LOCAL_CC", cc)], ARGS);
    w.write("bin/cc", new);
    settle();
    compile(&w, &[("LLAMACC_LOCAL_CC", cc)], ARGS);
    let diffs = differences(&w, "main.o");
    assert_eq!(diffs.as_array().map(Vec::len), Some(1), "{diffs:#}");
    assert_eq!(diffs[0]["kind"], "compiler-file");
    assert_eq!(diffs[0]["path"], format!("{}/bin/cc", work(&w)));
    assert_eq!(diffs[0]["was"], sha256(old));
    assert_eq!(diffs[0]["now"], sha256(new));
    let text = explain(&w, &["main.o"]);
    assert!(
        text.contains(&format!("the compiler changed: {}/bin/cc", work(&w))),
        "{text}"
    );
    assert!(
        text.contains(&sha256(old)) && text.contains(&sha256(new)),
        "{text}"
    );
}

#[test]
fn a_changed_flag_is_named_with_its_position() {
    let w = crate::world();
    project(&w);
    compile(&w, &[], ARGS);
    let mut args = ARGS.to_vec();
    args[0] = "-O3";
    compile(&w, &[], &args);
    let diffs = differences(&w, "main.o");
    assert_eq!(
        diffs,
        serde_json::json!([{"kind": "argument", "index": 1, "was": "-O2", "now": "-O3"}])
    );
    let text = explain(&w, &["main.o"]);
    assert!(text.contains("argument 1 changed: -O2 → -O3"), "{text}");
}

#[test]
fn a_variable_of_the_key_is_named_and_no_other_is_recorded() {
    let w = crate::world();
    project(&w);
    // TZ reaches the daemon (the compiler needs it) but is not part of the key.
    compile(
        &w,
        &[("SOURCE_DATE_EPOCH", "1"), ("TZ", "Secret/Zone")],
        ARGS,
    );
    compile(
        &w,
        &[("SOURCE_DATE_EPOCH", "2"), ("TZ", "Secret/Zone")],
        ARGS,
    );
    let diffs = differences(&w, "main.o");
    assert_eq!(
        diffs,
        serde_json::json!([{"kind": "environment", "name": "SOURCE_DATE_EPOCH", "was": "1", "now": "2"}])
    );
    let text = explain(&w, &["main.o"]);
    assert!(
        text.contains("environment variable SOURCE_DATE_EPOCH changed: \"1\" → \"2\""),
        "{text}"
    );
    let recorded = fs::read_dir(w.store().join("explain"))
        .expect("explain records")
        .flatten()
        .flat_map(|shard| fs::read_dir(shard.path()).expect("shard").flatten())
        .map(|f| fs::read(f.path()).expect("record"))
        .collect::<Vec<_>>()
        .concat();
    assert!(!recorded.is_empty());
    assert!(
        !String::from_utf8_lossy(&recorded).contains("Secret/Zone"),
        "a variable outside the key was recorded"
    );
}

#[test]
fn a_changed_header_is_named_with_both_digests() {
    let w = crate::world();
    project(&w);
    compile(&w, &[], ARGS);
    let new = b"#define ANSWER 43\nint helper(int);\n";
    w.write("include/answer.h", new);
    settle();
    compile(&w, &[], ARGS);
    let diffs = differences(&w, "main.o");
    assert_eq!(
        diffs,
        serde_json::json!([{
            "kind": "header",
            "path": format!("{}/include/answer.h", work(&w)),
            "was": sha256(HEADER.as_bytes()),
            "now": sha256(new),
        }])
    );
    let text = explain(&w, &["main.o"]);
    assert!(
        text.contains(&format!("header {}/include/answer.h changed", work(&w))),
        "{text}"
    );
}

#[test]
fn a_new_shadowing_header_is_named_with_the_one_it_hides() {
    let w = crate::world();
    project(&w);
    compile(&w, &[], ARGS);
    // A header earlier on the include path now wins.
    w.write("first/answer.h", b"#define ANSWER 7\nint helper(int);\n");
    settle();
    compile(&w, &[], ARGS);
    let diffs = differences(&w, "main.o");
    assert_eq!(
        diffs,
        serde_json::json!([{
            "kind": "shadowing-header",
            "path": format!("{}/first/answer.h", work(&w)),
            "shadows": format!("{}/include/answer.h", work(&w)),
        }])
    );
    let text = explain(&w, &["main.o"]);
    assert!(
        text.contains(&format!(
            "a new header {0}/first/answer.h now shadows {0}/include/answer.h",
            work(&w)
        )),
        "{text}"
    );
}

#[test]
fn another_working_directory_is_named() {
    let w = crate::world();
    project(&w);
    let root = work(&w);
    let (include, source, object) = (
        format!("-I{root}/include"),
        format!("{root}/src/main.c"),
        format!("{root}/main.o"),
    );
    let args = ["-c", &include, &source, "-o", &object];
    compile(&w, &[], &args);
    fs::create_dir_all(w.path("sub")).expect("mkdir sub");
    let mut in_sub = w.llamacc("gcc", &args);
    ok(&in_sub.current_dir(w.path("sub")).output().expect("llamacc"));
    let diffs = differences(&w, "main.o");
    assert_eq!(
        diffs,
        serde_json::json!([{"kind": "directory", "was": root, "now": format!("{root}/sub")}])
    );
    let text = explain(&w, &["main.o"]);
    assert!(
        text.contains(&format!(
            "the working directory changed: {root} → {root}/sub"
        )),
        "{text}"
    );
}

#[test]
fn a_result_evicted_from_the_cache_is_said_to_be_gone() {
    let w = crate::world();
    project(&w);
    compile(&w, &[], ARGS);
    fs::remove_dir_all(w.store().join("ac")).expect("clear the action cache");
    compile(&w, &[], ARGS);
    let x = explain_json(&w, "main.o");
    assert_eq!(x["outcome"], "misses");
    assert_eq!(x["conclusion"]["kind"], "result-gone", "{x:#}");
    assert_eq!(x["differences"], serde_json::json!([]));
}

#[test]
fn a_directory_names_its_last_compile_and_an_unknown_output_fails() {
    let w = crate::world();
    project(&w);
    fs::create_dir_all(w.path("obj")).expect("mkdir obj");
    compile(&w, &[], &["-Iinclude", "-c", "src/main.c", "-o", "obj/a.o"]);
    compile(
        &w,
        &[],
        &["-Iinclude", "-O1", "-c", "src/main.c", "-o", "obj/b.o"],
    );
    let x = explain_json(&w, "obj");
    assert_eq!(x["output"], format!("{}/obj/b.o", work(&w)));
    // A link is explained by its output too.
    compile(
        &w,
        &[],
        &[
            "-o",
            "prog",
            "obj/a.o",
            "-Wl,--unresolved-symbols=ignore-all",
        ],
    );
    let text = explain(&w, &["prog"]);
    assert!(
        text.contains("llamacc ran the compiler directly (link)"),
        "{text}"
    );
    let out = w.run(&["explain", "obj/none.o"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no compile of obj/none.o is recorded"));
}

#[test]
fn llamacc_debug_writes_each_explanation_to_the_log() {
    let w = crate::world();
    project(&w);
    let log = w.store().join("debug.log");
    compile(&w, &[], ARGS);
    assert!(!log.exists(), "written without LLAMACC_DEBUG");
    let mut args = ARGS.to_vec();
    args[0] = "-O3";
    compile(&w, &[("LLAMACC_DEBUG", "1")], &args);
    compile(&w, &[("LLAMACC_DEBUG", "1")], &args);
    let text = fs::read_to_string(&log).expect("debug.log");
    let miss = text.find("argument 1 changed: -O2 → -O3").expect(&text);
    let hit = text.find("hit: served from the cache").expect(&text);
    assert!(miss < hit, "{text}");
    // The log says what `llama explain` says.
    assert!(
        text.trim_end()
            .ends_with(explain(&w, &["main.o"]).trim_end()),
        "{text}"
    );
    let meta = fs::metadata(&log).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}
