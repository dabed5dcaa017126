//! Names that are not UTF-8 kept exact end to end, and credentials kept out of
//! `llama config`: the real binary, the local executor, a real store.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use llama_testkit::{stderr, stdout};

/// Runs `cmd` with `input` (any bytes) on its standard input.
fn run_with_bytes(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn llama");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn exact(dir: &Path, name: &[u8]) -> std::path::PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// The names in `dir`, as bytes, sorted.
fn names_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

// See: issue 12, defect 11b
#[test]
fn r12_invoke_ships_non_utf8_names_distinct_and_byte_identical() {
    let w = crate::world();
    let d = w.path("d");
    fs::create_dir(&d).expect("mkdir d");
    fs::write(exact(&d, b"n\xe9"), b"latin-1 e acute\n").expect("write");
    fs::write(exact(&d, b"n\xe8"), b"latin-1 e grave\n").expect("write");
    // The command copies its input directory to an output directory: names and contents
    // cross the tree both ways.
    let out = w.run(&[
        "invoke", "-f", "d", "-o", "out", "fn", "cp", "-r", "d", "out",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = w.path("out");
    assert_eq!(
        names_in(&got),
        [b"n\xe8".to_vec(), b"n\xe9".to_vec()],
        "both names arrive, distinct and exact"
    );
    assert_eq!(
        fs::read(exact(&got, b"n\xe9")).expect("n\\xe9"),
        b"latin-1 e acute\n"
    );
    assert_eq!(
        fs::read(exact(&got, b"n\xe8")).expect("n\\xe8"),
        b"latin-1 e grave\n"
    );
}

// See: issue 12, defect 11b
#[test]
fn r12_xargs_gives_commands_the_exact_bytes_of_non_utf8_lines() {
    let w = crate::world();
    fs::write(exact(&w.work(), b"n\xe9"), b"one\n").expect("write");
    fs::write(exact(&w.work(), b"n\xe8"), b"two\n").expect("write");
    let cmd = w.llama(&[
        "xargs",
        "fn",
        "sh",
        "-c",
        r#"printf '%s|' "$1"; cat "$2" > "$3""#,
        "sh",
        "{{.Line}}",
        "{{.I .Line}}",
        r#"{{.O (printf "out/%s.o" .Line)}}"#,
    ]);
    let out = run_with_bytes(cmd, b"n\xe9\nn\xe8\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = &out.stdout;
    for arg in [&b"n\xe9|"[..], b"n\xe8|"] {
        assert!(
            printed.windows(arg.len()).any(|w| w == arg),
            "the command did not receive {arg:?}: it printed {:?}",
            String::from_utf8_lossy(printed)
        );
    }
    let got = w.path("out");
    assert_eq!(names_in(&got), [b"n\xe8.o".to_vec(), b"n\xe9.o".to_vec()]);
    assert_eq!(
        fs::read(exact(&got, b"n\xe9.o")).expect("n\\xe9.o"),
        b"one\n"
    );
    assert_eq!(
        fs::read(exact(&got, b"n\xe8.o")).expect("n\\xe8.o"),
        b"two\n"
    );
}

// See: issue 12, defect 11b
#[test]
fn r12_a_reapi_backend_refuses_a_non_utf8_name_and_names_it() {
    let w = crate::world();
    let d = w.path("d");
    fs::create_dir(&d).expect("mkdir d");
    fs::write(exact(&d, b"n\xe9"), b"x").expect("write");
    // Refused before any connection: the endpoint is a closed loopback port.
    let out = w
        .llama(&["invoke", "-f", "d", "fn", "ls", "d"])
        .env("LLAMA_BACKEND", "reapi")
        .env("LLAMA_REAPI_ENDPOINT", "grpc://127.0.0.1:1")
        .output()
        .expect("spawn llama");
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(r"input file d/n\xe9") && err.contains("not UTF-8"),
        "{err}"
    );
}

// See: issue 12, defect 11d
#[test]
fn r12_config_never_prints_the_reapi_bearer_token() {
    let w = crate::world();
    let token = "eyJhbGciOiJIUzI1NiJ9.dG9wLXNlY3JldC1sbGFtYQ";
    let file = w.dir.path().join("config/llama/config.toml");
    fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    fs::write(
        &file,
        format!("reapi_headers = \"authorization: Bearer {token}; x-api-key: k-{token}\"\n"),
    )
    .expect("write config");
    for args in [
        &["config"][..],
        &["config", "-shell"],
        &["config", "--json"],
    ] {
        let out = w.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            !text.contains(token),
            "llama {args:?} printed the token:\n{text}"
        );
        assert!(
            text.contains("authorization: Bearer <redacted, 43 bytes>"),
            "{text}"
        );
    }
    // Where the value came from is still shown.
    let table = stdout(&w.run(&["config"]));
    let line = table
        .lines()
        .find(|l| l.starts_with("reapi_headers"))
        .expect("a reapi_headers line");
    assert!(line.contains(&*file.to_string_lossy()), "{line}");
    // A mistyped value is refused without echoing it.
    let bad = w
        .llama(&["config"])
        .env("LLAMA_REAPI_HEADERS", format!("Bearer {token}"))
        .output()
        .expect("spawn llama");
    assert!(!bad.status.success());
    assert!(!stderr(&bad).contains(token), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("LLAMA_REAPI_HEADERS"),
        "{}",
        stderr(&bad)
    );
}
