//! `llama explain` end to end: real gcc compiles through llamacc, each changed in one part
//! of its key, and the cause named.

use std::fs;
use std::process::{Command, Output};

use llama_testkit::{World, stderr, stdout};

const ARGS: &[&str] = &["-Ifirst", "-Iinclude", "-O1", "-c", "a.c", "-o", "a.o"];

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// A unit including a header from `include/`, with an empty `first/` searched before it.
fn project(w: &World) {
    w.write("a.c", b"#include \"x.h\"\nint f(void) { return X; }\n");
    w.write("include/x.h", b"#define X 1\n");
    fs::create_dir_all(w.path("first")).expect("mkdir");
    settle();
}

/// Files changed in the clock tick a compile starts are not trusted: let them age.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(60));
}

fn compile(w: &World, args: &[&str], env: &[(&str, &str)]) {
    let mut cmd = w.llamacc("gcc", args);
    cmd.envs(env.iter().copied());
    ok(&cmd.output().expect("llamacc"));
}

/// `llama explain a.o`'s text.
fn explained(w: &World) -> String {
    let out = w.run(&["explain", "a.o"]);
    ok(&out);
    stdout(&out)
}

/// Compiles once, changes one thing with `change`, compiles again, and returns the
/// explanation of the second compile.
fn after(change: impl FnOnce(&World) -> (Vec<String>, Vec<(String, String)>)) -> String {
    let w = crate::world();
    project(&w);
    compile(&w, ARGS, &[]);
    let (args, env) = change(&w);
    settle();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    compile(&w, &args, &env);
    explained(&w)
}

fn same_args() -> Vec<String> {
    ARGS.iter().map(|a| a.to_string()).collect()
}

#[test]
fn a_hit_is_said_to_be_one_and_the_first_compile_has_no_earlier() {
    let w = crate::world();
    project(&w);
    compile(&w, ARGS, &[]);
    assert!(
        explained(&w).contains("it was the first"),
        "{}",
        explained(&w)
    );
    compile(&w, ARGS, &[]);
    // A hit's record is written off the compile's path: it lands a moment later.
    let mut text = explained(&w);
    for _ in 0..100 {
        if text.contains("served from the cache") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        text = explained(&w);
    }
    assert!(text.contains("served from the cache"), "{text}");
    let none = w.run(&["explain", "nothing.o"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stdout(&none).contains("no compile of"), "{}", stdout(&none));
    // A directory: its last compile.
    let out = w.run(&["explain", "."]);
    ok(&out);
    assert!(stdout(&out).contains("a.o"), "{}", stdout(&out));
}

#[test]
fn a_changed_flag_is_named_with_both_values() {
    let text = after(|_| {
        let mut args = same_args();
        args[2] = "-O2".into();
        (args, Vec::new())
    });
    assert!(text.contains("argument 3 changed: -O1 → -O2"), "{text}");
}

#[test]
fn a_changed_header_is_named_with_both_digests() {
    let text = after(|w| {
        w.write("include/x.h", b"#define X 2\n");
        (same_args(), Vec::new())
    });
    assert!(
        text.contains("/work/include/x.h changed: its content was"),
        "{text}"
    );
}

#[test]
fn a_new_shadowing_header_is_named_with_the_one_it_shadows() {
    let text = after(|w| {
        w.write("first/x.h", b"#define X 3\n");
        (same_args(), Vec::new())
    });
    assert!(
        text.contains("a new header")
            && text.contains("first/x.h now shadows")
            && text.contains("include/x.h"),
        "{text}"
    );
}

#[test]
fn a_changed_environment_variable_is_named() {
    let text = after(|_| (same_args(), vec![("LANG".into(), "C".into())]));
    assert!(text.contains("environment variable LANG"), "{text}");
}

#[test]
fn another_directory_is_named() {
    let w = crate::world();
    project(&w);
    compile(&w, ARGS, &[]);
    // The same object, compiled from a subdirectory.
    fs::create_dir_all(w.path("sub")).expect("mkdir");
    let args = [
        "-I../first",
        "-I../include",
        "-O1",
        "-c",
        "../a.c",
        "-o",
        "../a.o",
    ];
    let mut cmd = w.llamacc("gcc", &args);
    cmd.current_dir(w.path("sub"));
    ok(&cmd.output().expect("llamacc"));
    let text = explained(&w);
    assert!(text.contains("the directory changed"), "{text}");
    assert!(
        text.contains("argument 1 changed: -Ifirst → -I../first"),
        "{text}"
    );
}

#[test]
fn an_upgraded_compiler_is_named() {
    let w = crate::world();
    project(&w);
    // A compiler of our own: gcc behind a script whose content an "upgrade" changes.
    let cc = w.path("bin/cc");
    let write_cc = |version: &str| {
        fs::create_dir_all(w.path("bin")).expect("mkdir");
        fs::write(
            &cc,
            format!("#!/bin/sh\n# version {version}\nexec gcc \"$@\"\n"),
        )
        .expect("cc");
        let status = Command::new("chmod")
            .arg("755")
            .arg(&cc)
            .status()
            .expect("chmod");
        assert!(status.success());
    };
    write_cc("1");
    settle();
    let cc_path = cc.to_str().expect("utf-8").to_string();
    compile(&w, ARGS, &[("LLAMACC_LOCAL_CC", &cc_path)]);
    write_cc("2");
    settle();
    compile(&w, ARGS, &[("LLAMACC_LOCAL_CC", &cc_path)]);
    let text = explained(&w);
    assert!(text.contains("changed (an upgrade?)"), "{text}");
    // Another compiler altogether.
    compile(&w, ARGS, &[]);
    let text = explained(&w);
    assert!(text.contains("the compiler changed"), "{text}");
}

#[test]
fn llamacc_debug_writes_the_explanation_of_each_compile() {
    let w = crate::world();
    project(&w);
    compile(&w, ARGS, &[("LLAMACC_DEBUG", "1")]);
    w.write("include/x.h", b"#define X 9\n");
    settle();
    compile(&w, ARGS, &[("LLAMACC_DEBUG", "1")]);
    let log = fs::read_to_string(w.store().join("debug.log")).expect("debug.log");
    assert!(log.contains("it was the first"), "{log}");
    assert!(log.contains("include/x.h changed"), "{log}");
    let json = w.run(&["explain", "--json", "a.o"]);
    ok(&json);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(value["records"].as_array().map(Vec::len), Some(2));
    assert!(
        value["differences"][0]
            .as_str()
            .unwrap_or("")
            .contains("x.h changed")
    );
}
