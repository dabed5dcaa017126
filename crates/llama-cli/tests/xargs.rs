//! `llama xargs` end to end: the real binary, real tools (optipng), a real store.

use std::fs;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use llama_testkit::{SmallDisk, World, run_with_stdin, stderr, stdout};

/// `llama xargs ARGS` with `input` on its standard input.
fn xargs(w: &World, args: &[&str], input: &str) -> Output {
    run_with_stdin(w.llama(&[&["xargs"], args].concat()), input)
}

#[test]
fn a_last_line_without_a_newline_is_a_job_too() {
    let w = crate::world();
    let out = xargs(&w, &["f", "echo", "{{.Line}}"], "a\nb\nlast");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut lines: Vec<_> = stdout(&out).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["a", "b", "last"]);
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: run scripts/test, which installs it"
    );
}

#[test]
fn the_originals_optipng_example_matches_optipng_run_directly() {
    require("optipng");
    let w = crate::world();
    let names = llama_testkit::pngs::make_pngs(&w.work(), 120);
    // The reference: Debian's optipng run directly on a copy of each image.
    let direct = w.dir.path().join("direct");
    fs::create_dir_all(&direct).expect("mkdir");
    for name in &names {
        let status = Command::new("optipng")
            .args(["-quiet", "-out"])
            .arg(direct.join(name))
            .arg(w.path(name))
            .status()
            .expect("optipng");
        assert!(status.success(), "optipng {name}");
    }
    let listing = names.join("\n") + "\n";
    let joblog = w.dir.path().join("joblog");
    let args = [
        "-j",
        "8",
        "--joblog",
        joblog.to_str().expect("utf-8"),
        "optipng",
        "optipng",
        "{{.I .Line}}",
        "-out",
        "{{.O (printf \"optimized/%s\" .Line)}}",
    ];
    let out = xargs(&w, &args, &listing);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in &names {
        let ours = fs::read(w.path(&format!("optimized/{name}"))).expect("optimized image");
        let theirs = fs::read(direct.join(name)).expect("direct image");
        assert!(ours == theirs, "{name} differs from optipng run directly");
    }
    let log = fs::read_to_string(&joblog).expect("joblog");
    assert_eq!(log.lines().count(), names.len() + 1);
    assert!(
        log.lines().skip(1).all(|l| l.ends_with("\tfalse")),
        "first run: nothing cached"
    );

    // Again over unchanged inputs: nothing runs, and the joblog and -logs say so.
    fs::remove_dir_all(w.path("optimized")).expect("rm");
    let again = xargs(&w, &[&["-logs"], &args[..]].concat(), &listing);
    assert!(again.status.success(), "{}", stderr(&again));
    let log = fs::read_to_string(&joblog).expect("joblog");
    assert!(log.lines().skip(1).all(|l| l.ends_with("\ttrue")), "{log}");
    assert!(stderr(&again).contains(&format!("0 ran, {} cached, 0 failed", names.len())));
    for name in &names {
        assert!(
            w.path(&format!("optimized/{name}")).exists(),
            "{name} restored from cache"
        );
    }
}

/// `--joblog FILE` replaces FILE; `--joblog +FILE` appends, with one header (GNU parallel's
/// spellings).
#[test]
fn joblog_replaces_its_file_and_plus_appends() {
    let w = crate::world();
    let log = w.dir.path().join("jobs.log");
    let plain = log.to_str().expect("utf-8").to_string();
    let plus = format!("+{plain}");
    let lines = |text: &str| text.lines().map(String::from).collect::<Vec<_>>();
    for (spec, runs, want) in [(&plain, 2, 3), (&plus, 2, 5)] {
        let _ = fs::remove_file(&log);
        for _ in 0..runs {
            let out = xargs(&w, &["--joblog", spec, "f", "true", "{{.Line}}"], "a\nb\n");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let text = fs::read_to_string(&log).expect("joblog");
        let got = lines(&text);
        assert_eq!(got.len(), want, "{spec}: {text}");
        assert_eq!(
            got.iter().filter(|l| l.starts_with("Idx\t")).count(),
            1,
            "{text}"
        );
    }
}

#[test]
fn output_is_whole_per_job_and_k_keeps_input_order() {
    let w = crate::world();
    // Each job prints three lines with pauses, later lines finishing first.
    let script = "for i in 1 2 3; do echo {{.Line}}-$i; sleep 0.0{{.Line}}; done";
    let input = "5\n4\n3\n2\n1\n";
    let out = xargs(&w, &["-j", "5", "f", "sh", "-c", script], input);
    assert!(out.status.success());
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 15);
    for block in lines.chunks(3) {
        let job = block[0].split('-').next().unwrap_or_default().to_string();
        assert_eq!(
            block,
            [1, 2, 3].map(|i| format!("{job}-{i}")),
            "interleaved: {lines:?}"
        );
    }
    let kept = xargs(
        &w,
        &["-k", "-j", "5", "--no-cache", "f", "sh", "-c", script],
        input,
    );
    let firsts: Vec<String> = stdout(&kept).lines().step_by(3).map(String::from).collect();
    assert_eq!(firsts, ["5-1", "4-1", "3-1", "2-1", "1-1"]);
}

#[test]
fn exit_status_counts_failed_jobs_up_to_101() {
    let w = crate::world();
    let out = xargs(&w, &["f", "sh", "-c", "exit {{.Line}}"], "0\n1\n2\n0\n3\n");
    assert_eq!(out.status.code(), Some(3));
    let many: String = (0..105).map(|i| format!("{i}\n")).collect();
    let out = xargs(
        &w,
        &[
            "-j",
            "4",
            "f",
            "sh",
            "-c",
            "echo {{.Line}} >/dev/null; exit 1",
        ],
        &many,
    );
    assert_eq!(out.status.code(), Some(101));
}

#[test]
fn a_missing_input_fails_that_job_only_and_names_line_and_file() {
    let w = crate::world();
    w.write("here.txt", b"present\n");
    let out = xargs(&w, &["f", "cat", "{{.I .Line}}"], "here.txt\ngone.txt\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "present\n");
    let err = stderr(&out);
    assert!(
        err.contains("line \"gone.txt\"") && err.contains("\"gone.txt\" does not exist"),
        "{err}"
    );
}

#[test]
fn bad_templates_fail_before_any_job_runs() {
    let w = crate::world();
    let marker = w.dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let cases: &[(&[&str], &str)] = &[
        (&["f", "sh", "-c", &touch, "{{.Line"], "column"),
        (
            &["f", "sh", "-c", &touch, "{{shout .Line}}"],
            "function \"shout\" not defined",
        ),
        (
            &["f", "sh", "-c", &touch, "{{.O \"../up\"}}"],
            "inside the working directory",
        ),
        (&["f", "sh", "-c", &touch, "{{.O \"/abs\"}}"], "absolute"),
    ];
    for (args, needle) in cases {
        let out = xargs(&w, args, "a\nb\n");
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("argument 4") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!marker.exists(), "a job ran despite a bad template");
    }
    // An output path that escapes only once rendered is refused for that job.
    let out = xargs(&w, &["f", "touch", "{{.O .Line}}"], "../escape\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"..\" is not allowed"),
        "{}",
        stderr(&out)
    );
    assert!(!w.dir.path().join("escape").exists());
}

#[test]
fn halt_now_stops_at_the_first_failure() {
    let w = crate::world();
    let counter = w.dir.path().join("started");
    let script = format!(
        "echo x >> {}; if [ {{{{.Line}}}} = 0 ]; then exit 1; fi; sleep 5.4321",
        counter.display()
    );
    let input: String = (0..20).map(|i| format!("{i}\n")).collect();
    let started = std::time::Instant::now();
    let out = xargs(
        &w,
        &["-j", "2", "--halt", "now,fail=1", "f", "sh", "-c", &script],
        &input,
    );
    assert!(
        out.status.code().is_some_and(|c| c >= 1),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "running jobs must be killed"
    );
    let ran = fs::read_to_string(&counter)
        .expect("counter")
        .lines()
        .count();
    assert!(ran < 20, "no new jobs after the halt ({ran} started)");
    assert!(
        stderr(&out).contains("halting after 1 failed job"),
        "{}",
        stderr(&out)
    );
    // Killed with everything they started: no job's sleep outlives llama.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let left = Command::new("pgrep")
        .args(["-f", "sleep 5.4321"])
        .output()
        .expect("pgrep");
    assert!(
        stdout(&left).trim().is_empty(),
        "left running: {}",
        stdout(&left)
    );
}

#[test]
fn shared_files_reach_every_job() {
    let w = crate::world();
    w.write("tool.sh", b"echo tool says $1\n");
    let out = xargs(
        &w,
        &[
            "-k",
            "-f",
            "tool.sh:bin/tool.sh",
            "f",
            "sh",
            "bin/tool.sh",
            "{{.Line}}",
        ],
        "x\ny\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "tool says x\ntool says y\n");
    let missing = xargs(&w, &["-f", "nope.sh", "f", "true"], "x\n");
    assert_eq!(missing.status.code(), Some(125));
    assert!(stderr(&missing).contains("nope.sh"));
}

#[test]
fn a_progress_bar_on_a_terminal_and_nothing_extra_otherwise() {
    require("script");
    let w = crate::world();
    let quiet = xargs(&w, &["f", "echo", "{{.Line}}"], "1\n2\n3\n");
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "", "nothing extra when not on a terminal");

    // `script` gives the command a pseudo-terminal, as a user's shell would.
    let llama = env!("CARGO_BIN_EXE_llama");
    let line = format!("seq 30 | {llama} xargs -j 2 f sh -c 'sleep 0.05; echo {{{{.Line}}}}'");
    let typescript = w.dir.path().join("typescript");
    let status = Command::new("script")
        .args(["-qec", &line])
        .arg(&typescript)
        .current_dir(w.work())
        .env("LLAMA_DIR", w.store())
        .env("TERM", "xterm")
        .stdout(Stdio::null())
        .status()
        .expect("script");
    assert!(status.success());
    let screen = fs::read_to_string(&typescript).expect("typescript");
    assert!(
        screen.contains("done, ") && screen.contains(" running, "),
        "{screen}"
    );
    assert!(screen.contains("llama xargs: 30 jobs in"), "{screen}");
}

#[test]
fn retries_cover_infrastructure_failures_only() {
    let w = crate::world();
    // A command's own failure: run once, never retried.
    let counter = w.dir.path().join("runs");
    let script = format!("echo run >> {}; exit 4", counter.display());
    let out = xargs(&w, &["--retries", "3", "f", "sh", "-c", &script], "x\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(&counter)
            .expect("counter")
            .lines()
            .count(),
        1
    );

    // A store that is full is the infrastructure failing: retried, then reported.
    let Some(disk) = SmallDisk::mount(w.dir.path().join("small"), "256k") else {
        return;
    };
    // The input cannot be stored, so the command never starts.
    w.write("big", &vec![1u8; 400_000]);
    let runs = w.dir.path().join("big-runs");
    let script = format!("echo run >> {}; cat \"$0\" > /dev/null", runs.display());
    let out = w
        .llama(&[
            "xargs",
            "--retries",
            "2",
            "f",
            "sh",
            "-c",
            &script,
            "{{.I .Line}}",
        ])
        .env("LLAMA_DIR", disk.path.join("store"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().expect("stdin").write_all(b"big\n")?;
            child.wait_with_output()
        })
        .expect("run");
    drop(disk);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("retry 1 of 2") && err.contains("retry 2 of 2"),
        "{err}"
    );
    assert!(err.contains("is full"), "{err}");
    assert!(!runs.exists(), "the command must not have run");
}
