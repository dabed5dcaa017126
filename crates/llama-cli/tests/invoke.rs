//! `llama invoke` end to end: the real binary, real commands, a real on-disk store.

use std::fs;

use llama_testkit::{SmallDisk, assert_store_consistent, sha256sum_line, stderr, stdout};

#[test]
fn the_originals_readme_example() {
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let out = w.run(&[
        "invoke",
        "-f",
        "INPUT",
        "-o",
        "OUTPUT",
        "gcc",
        "sh",
        "-c",
        "sha256sum INPUT > OUTPUT",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = fs::read_to_string(w.path("OUTPUT")).expect("OUTPUT written");
    assert_eq!(got, sha256sum_line(&w.path("INPUT"), "INPUT"));
}

#[test]
fn exit_status_is_the_commands() {
    let w = crate::world();
    assert_eq!(
        w.run(&["invoke", "gcc", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(w.run(&["invoke", "gcc", "true"]).status.code(), Some(0));
    let missing = w.run(&["invoke", "gcc", "no-such-tool-anywhere"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(stderr(&missing).contains("no-such-tool-anywhere: command not found"));
}

#[test]
fn a_signal_is_reported_as_such() {
    let w = crate::world();
    let out = w.run(&["invoke", "gcc", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(
        stderr(&out).contains("killed by signal 9 (SIGKILL)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_timeout_is_reported_as_such() {
    let w = crate::world();
    let out = w
        .llama(&["invoke", "gcc", "sleep", "30"])
        .env("LLAMA_ACTION_TIMEOUT", "500ms")
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(124));
    assert!(stderr(&out).contains("timed out after"), "{}", stderr(&out));
}

#[test]
fn the_same_invoke_twice_runs_once() {
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let counter = w.dir.path().join("runs");
    let script = format!(
        "echo run >> {}; sha256sum INPUT | tee OUTPUT",
        counter.display()
    );
    let args = [
        "invoke", "-f", "INPUT", "-o", "OUTPUT", "gcc", "sh", "-c", &script,
    ];
    let first = w.run(&args);
    let second = w.run(&[&args[..1], &["-logs"], &args[1..]].concat());
    assert!(first.status.success() && second.status.success());
    assert_eq!(fs::read_to_string(&counter).expect("counter"), "run\n");
    assert_eq!(stdout(&first), stdout(&second), "the hit replays stdout");
    assert!(stderr(&second).contains("served from the action cache"));
    // Another FUNCTION is another platform: not the same action.
    let other = w.run(&[&args[..5], &["clang"], &args[6..]].concat());
    assert!(other.status.success());
    assert_eq!(fs::read_to_string(&counter).expect("counter"), "run\nrun\n");
    // --no-cache runs again.
    let forced = w.run(&[&args[..1], &["-no-cache"], &args[1..]].concat());
    assert!(forced.status.success());
    assert_eq!(
        fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count(),
        3
    );
    // A changed input is a new action.
    w.write("INPUT", b"changed\n");
    assert!(w.run(&args).status.success());
    assert_eq!(
        fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count(),
        4
    );
    assert_eq!(
        fs::read_to_string(w.path("OUTPUT")).expect("OUTPUT"),
        sha256sum_line(&w.path("INPUT"), "INPUT")
    );
}

#[test]
fn failures_run_again_every_time() {
    let w = crate::world();
    let counter = w.dir.path().join("runs");
    let script = format!("echo run >> {}; exit 3", counter.display());
    for _ in 0..2 {
        assert_eq!(
            w.run(&["invoke", "f", "sh", "-c", &script]).status.code(),
            Some(3)
        );
    }
    assert_eq!(
        fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count(),
        2
    );
}

#[test]
fn a_corrupted_blob_is_detected_removed_and_the_action_runs_again() {
    let w = crate::world();
    let counter = w.dir.path().join("runs");
    let script = format!("echo run >> {}; echo precious > OUT", counter.display());
    let args = ["invoke", "-o", "OUT", "f", "sh", "-c", &script];
    assert!(w.run(&args).status.success());
    let blob = llama_testkit::files_under(&w.store().join("cas"))
        .into_iter()
        .find(|p| fs::read(p).ok().as_deref() == Some(b"precious\n"))
        .expect("output blob in the store");
    fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let mut data = fs::read(&blob).expect("read");
    data[0] ^= 0x20;
    fs::write(&blob, data).expect("flip a byte");

    let again = w.run(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("corrupt"), "{}", stderr(&again));
    assert_eq!(
        fs::read_to_string(w.path("OUT")).expect("OUT"),
        "precious\n"
    );
    assert_eq!(
        fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count(),
        2
    );
    assert_store_consistent(&w.store());
}

#[test]
fn files_map_directories_and_stdin() {
    let w = crate::world();
    w.write("src/a.txt", b"A\n");
    w.write("src/sub/b.txt", b"B\n");
    let out = w
        .llama(&[
            "invoke",
            "-stdin",
            "-f",
            "src:in",
            "-o",
            "result:out",
            "fn",
            "sh",
            "-c",
            "mkdir out && cat in/a.txt in/sub/b.txt - > out/all && ls -R in > out/listing",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"from stdin\n")?;
            child.wait_with_output()
        })
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(w.path("result/all")).expect("all"),
        "A\nB\nfrom stdin\n"
    );
    assert!(
        fs::read_to_string(w.path("result/listing"))
            .expect("listing")
            .contains("b.txt")
    );
}

#[test]
fn arguments_are_templates_as_in_the_original() {
    let w = crate::world();
    w.write("data.txt", b"42\n");
    let out = w.run(&[
        "invoke",
        "fn",
        "sh",
        "-c",
        "cat {{.I \"data.txt\"}} > {{.O \"copy.txt\"}}",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(w.path("copy.txt")).expect("copy"),
        "42\n"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_no_partial_file() {
    let w = crate::world();
    w.write("INPUT", b"x");
    let cases: &[(&[&str], &str)] = &[
        (
            &["invoke", "-f", "missing.txt", "gcc", "true"],
            "missing.txt does not exist",
        ),
        (
            &["invoke", "-f", "INPUT:../up", "gcc", "true"],
            "must not contain '..'",
        ),
        (
            &["invoke", "-f", "INPUT:/abs", "gcc", "true"],
            "must be relative",
        ),
        (
            &["invoke", "-o", "OUT:../x", "gcc", "true"],
            "must not contain '..'",
        ),
        (
            &["invoke", "-f", "/etc/hostname", "gcc", "true"],
            "/etc/hostname:NAME",
        ),
        (
            &["invoke", "-o", "OUT", "gcc", "sh", "-c", "echo > other"],
            "did not produce OUT",
        ),
        (&["invoke", "gcc", "echo", "{{.Nope}}"], "argument 2"),
    ];
    for (args, needle) in cases {
        let out = w.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(
            !w.path("OUT").exists(),
            "{args:?} left a file at a LOCAL path"
        );
    }
    // A command that fails still delivers what it did produce.
    let out = w.run(&[
        "invoke",
        "-o",
        "OUT",
        "-o",
        "NEVER",
        "gcc",
        "sh",
        "-c",
        "echo partial > OUT; exit 2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read_to_string(w.path("OUT")).expect("OUT"), "partial\n");
    assert!(!w.path("NEVER").exists());
}

#[test]
fn an_unusable_cache_directory_is_named() {
    let w = crate::world();
    let blocker = w.dir.path().join("a-file");
    fs::write(&blocker, b"").expect("write");
    let out = w
        .llama(&["invoke", "gcc", "true"])
        .env("LLAMA_DIR", blocker.join("store"))
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("a-file/store") && err.contains("LLAMA_DIR"),
        "{err}"
    );
}

#[test]
fn a_full_cache_directory_is_named() {
    let w = crate::world();
    let Some(disk) = SmallDisk::mount(w.dir.path().join("small"), "64k") else {
        return;
    };
    w.write("big", &vec![7u8; 200_000]);
    let out = w
        .llama(&[
            "invoke", "-f", "big", "-o", "copy", "gcc", "cp", "big", "copy",
        ])
        .env("LLAMA_DIR", disk.path.join("store"))
        .output()
        .expect("spawn");
    drop(disk);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("is full") && err.contains("LLAMA_DIR"),
        "{err}"
    );
    assert!(!w.path("copy").exists());
}

#[test]
fn sixty_four_concurrent_invokes_share_one_store() {
    let w = crate::world();
    w.write("shared.txt", b"shared input\n");
    for i in 0..64 {
        w.write(&format!("in{i}.txt"), format!("input {i}\n").as_bytes());
    }
    let children: Vec<_> = (0..64)
        .map(|i| {
            let input = format!("in{i}.txt");
            let output = format!("out{i}.txt");
            // Half the jobs are the same action, so they race on the same cache entry.
            let script = if i % 2 == 0 {
                "cat shared.txt > OUT".to_string()
            } else {
                format!("cat shared.txt {input} > OUT")
            };
            w.llama(&[
                "invoke",
                "-f",
                "shared.txt",
                "-f",
                &input,
                "-o",
                &format!("{output}:OUT"),
                "fn",
                "sh",
                "-c",
                &script,
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "job {i}: {}", stderr(&out));
        let got = fs::read_to_string(w.path(&format!("out{i}.txt"))).expect("output");
        let want = if i % 2 == 0 {
            "shared input\n".to_string()
        } else {
            format!("shared input\ninput {i}\n")
        };
        assert_eq!(got, want, "job {i}");
    }
    assert_store_consistent(&w.store());
}

#[test]
fn config_shows_values_and_their_sources() {
    let w = crate::world();
    let cfg = w.dir.path().join("config/llama");
    fs::create_dir_all(&cfg).expect("mkdir");
    fs::write(cfg.join("config.toml"), "jobs = 3\n").expect("write");
    let out = w
        .llama(&["config"])
        .env("LLAMA_CACHE_SIZE", "2GiB")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("jobs") && text.contains("config.toml"),
        "{text}"
    );
    assert!(
        text.contains("\"2GiB\"") && text.contains("$LLAMA_CACHE_SIZE"),
        "{text}"
    );
    let bad = w
        .llama(&["config"])
        .env("LLAMA_JOBS", "zero")
        .output()
        .expect("spawn");
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("LLAMA_JOBS"), "{}", stderr(&bad));
    let shell = w.run(&["config", "-shell"]);
    assert!(
        stdout(&shell).contains("llama_jobs='3'"),
        "{}",
        stdout(&shell)
    );

    // The same, for scripts: each setting's value, source and variable.
    let out = w
        .llama(&["config", "--json"])
        .env("LLAMA_CACHE_SIZE", "2GiB")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("config --json");
    let settings = &json["settings"];
    assert_eq!(settings["jobs"]["value"], "3", "{json:#}");
    assert_eq!(settings["jobs"]["source"], "file", "{json:#}");
    assert!(
        settings["jobs"]["from"]
            .as_str()
            .is_some_and(|f| f.ends_with("config/llama/config.toml")),
        "{json:#}"
    );
    assert_eq!(settings["cache_size"]["value"], "2GiB", "{json:#}");
    assert_eq!(settings["cache_size"]["source"], "env", "{json:#}");
    assert_eq!(
        settings["cache_size"]["from"], "LLAMA_CACHE_SIZE",
        "{json:#}"
    );
    assert_eq!(settings["backend"]["source"], "default", "{json:#}");
    assert_eq!(settings["backend"]["env"], "LLAMA_BACKEND", "{json:#}");
    assert_eq!(json["file_present"], true, "{json:#}");
}
