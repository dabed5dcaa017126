//! llamacc end to end: real gcc and clang, a real daemon, a real store.

use std::fs;
use std::process::{Command, Output};

use llama_testkit::{World, stderr, stdout};

const HEADER: &str = "#define ANSWER 42\nint helper(int);\n";
const SOURCE: &str = "#include <stdio.h>\n#include \"answer.h\"\nint main(void) { printf(\"%d\\n\", ANSWER); return helper(0); }\n";

fn project(w: &World) {
    w.write("src/main.c", SOURCE.as_bytes());
    w.write("include/answer.h", HEADER.as_bytes());
}

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// `llama stats --json` of this world.
fn stats(w: &World) -> serde_json::Value {
    let out = w.run(&["stats", "--json"]);
    ok(&out);
    serde_json::from_str(&stdout(&out)).expect("stats json")
}

/// The pid `llama daemon status` reports.
fn daemon_pid(status: &Output) -> i32 {
    stdout(status)
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid"))
        .and_then(|p| p.trim().parse().ok())
        .expect("daemon pid")
}

fn counter(w: &World, name: &str) -> u64 {
    stats(w)["counters"][name].as_u64().unwrap_or(0)
}

/// Compiles with plain `cc` and then with llamacc (twice: a miss, then a hit) at the same
/// paths, and asserts the objects (and depfiles) are byte-identical.
fn assert_identical_to_plain(w: &World, cc: &str, args: &[&str], outputs: &[&str]) {
    let plain = Command::new(cc)
        .args(args)
        .current_dir(w.work())
        .output()
        .expect("plain compiler");
    ok(&plain);
    let reference: Vec<Vec<u8>> = outputs
        .iter()
        .map(|o| fs::read(w.path(o)).expect("plain output"))
        .collect();
    for round in ["miss", "hit"] {
        for o in outputs {
            let _ = fs::remove_file(w.path(o));
        }
        let out = w.llamacc(cc, args).output().expect("llamacc");
        ok(&out);
        for (o, want) in outputs.iter().zip(&reference) {
            let got = fs::read(w.path(o)).unwrap_or_else(|_| panic!("{round}: {o} not written"));
            assert!(got == *want, "{round}: {o} differs from plain {cc}'s");
        }
    }
}

#[test]
fn objects_are_identical_to_gcc_and_the_second_compile_is_a_hit() {
    let w = crate::world();
    project(&w);
    let args = ["-O2", "-g", "-Iinclude", "-c", "src/main.c", "-o", "main.o"];
    assert_identical_to_plain(&w, "gcc", &args, &["main.o"]);
    assert_eq!(counter(&w, "misses"), 1);
    assert_eq!(counter(&w, "hits"), 1);
}

#[test]
fn objects_are_identical_to_clang() {
    let w = crate::world();
    project(&w);
    let args = ["-O1", "-g", "-Iinclude", "-c", "src/main.c", "-o", "main.o"];
    assert_identical_to_plain(&w, "clang", &args, &["main.o"]);
    assert_eq!(counter(&w, "hits"), 1);
}

#[test]
fn depfiles_are_identical_in_every_spelling() {
    let w = crate::world();
    project(&w);
    let spellings: &[&[&str]] = &[
        &[
            "-Iinclude",
            "-MMD",
            "-MP",
            "-c",
            "src/main.c",
            "-o",
            "main.o",
        ],
        &[
            "-Iinclude",
            "-MD",
            "-MF",
            "deps/main.d",
            "-MT",
            "main.o",
            "-c",
            "src/main.c",
            "-o",
            "main.o",
        ],
        &[
            "-Iinclude",
            "-Wp,-MMD,deps/.main.o.d",
            "-c",
            "-o",
            "main.o",
            "src/main.c",
        ],
    ];
    let depfiles = ["main.d", "deps/main.d", "deps/.main.o.d"];
    fs::create_dir_all(w.path("deps")).expect("mkdir");
    for (args, dep) in spellings.iter().zip(depfiles) {
        assert_identical_to_plain(&w, "gcc", args, &["main.o", dep]);
    }
}

#[test]
fn a_changed_header_is_a_miss_and_changing_it_back_a_hit() {
    let w = crate::world();
    project(&w);
    let args = ["-Iinclude", "-c", "src/main.c", "-o", "main.o"];
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    // An edit within the file system's clock tick of a compile is not trusted (issue 12,
    // defect 2): the edits here are older than the compiles that follow them.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(60));
    w.write("include/answer.h", b"#define ANSWER 43\nint helper(int);\n");
    settle();
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_eq!(counter(&w, "misses"), 2);
    w.write("include/answer.h", HEADER.as_bytes());
    settle();
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_eq!(counter(&w, "hits"), 1);
}

#[test]
fn a_new_header_shadowing_an_old_one_is_noticed() {
    let w = crate::world();
    project(&w);
    fs::create_dir_all(w.path("first")).expect("mkdir");
    let args = ["-Ifirst", "-Iinclude", "-c", "src/main.c", "-o", "main.o"];
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    let before = fs::read(w.path("main.o")).expect("object");
    // A header earlier on the include path now wins: the object must change.
    w.write("first/answer.h", b"#define ANSWER 7\nint helper(int);\n");
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_ne!(fs::read(w.path("main.o")).expect("object"), before);
    assert_eq!(counter(&w, "hits"), 0);
}

/// Found by `llama explain`'s tests: with the source's directory above the include
/// directories (`a.c` beside `first/` and `include/`), every header lay under the first
/// directory searched, so no earlier candidate was recorded and a header that appeared in
/// `first/` was never noticed: the old object was served.
#[test]
fn a_new_header_shadowing_one_under_the_sources_directory_is_noticed() {
    let w = crate::world();
    w.write(
        "main.c",
        b"#include \"answer.h\"\nint main(void) { return ANSWER; }\n",
    );
    w.write("include/answer.h", b"#define ANSWER 42\n");
    fs::create_dir_all(w.path("first")).expect("mkdir");
    std::thread::sleep(std::time::Duration::from_millis(60));
    let args = ["-Ifirst", "-Iinclude", "-c", "main.c", "-o", "main.o"];
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    w.write("first/answer.h", b"#define ANSWER 7\n");
    std::thread::sleep(std::time::Duration::from_millis(60));
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    let plain = Command::new("gcc")
        .args(["-Ifirst", "-Iinclude", "-c", "main.c", "-o", "plain.o"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    ok(&plain);
    assert_eq!(
        fs::read(w.path("main.o")).expect("main.o"),
        fs::read(w.path("plain.o")).expect("plain.o"),
        "the object of the shadowing header"
    );
    assert_eq!(counter(&w, "hits"), 0);
}

#[test]
fn compile_errors_keep_the_compilers_diagnostics_and_status_and_are_not_cached() {
    let w = crate::world();
    w.write("bad.c", b"int main(void) { return undefined_thing; }\n");
    let plain = Command::new("gcc")
        .args(["-c", "bad.c", "-o", "bad.o"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    for _ in 0..2 {
        let out = w
            .llamacc("gcc", &["-c", "bad.c", "-o", "bad.o"])
            .output()
            .expect("llamacc");
        assert_eq!(out.status.code(), plain.status.code());
        assert_eq!(stderr(&out), stderr(&plain));
    }
    assert_eq!(counter(&w, "compile_errors"), 2);
    assert_eq!(counter(&w, "hits"), 0);
}

#[test]
fn warnings_are_replayed_on_a_hit() {
    let w = crate::world();
    w.write("warn.c", b"int f(void) { int unused; return 0; }\n");
    let args = ["-Wall", "-c", "warn.c", "-o", "warn.o"];
    let first = w.llamacc("gcc", &args).output().expect("llamacc");
    let second = w.llamacc("gcc", &args).output().expect("llamacc");
    ok(&second);
    assert!(stderr(&first).contains("unused"), "{}", stderr(&first));
    assert_eq!(stderr(&first), stderr(&second));
    assert_eq!(counter(&w, "hits"), 1);
}

#[test]
fn links_and_preprocessing_run_the_compiler_directly_with_a_reason() {
    let w = crate::world();
    w.write("prog.c", b"int main(void) { return 3; }\n");
    ok(&w
        .llamacc("gcc", &["-o", "prog", "prog.c"])
        .output()
        .expect("link"));
    let run = Command::new(w.path("prog")).output().expect("run prog");
    assert_eq!(run.status.code(), Some(3));
    let pre = w
        .llamacc("gcc", &["-E", "prog.c"])
        .output()
        .expect("preprocess");
    ok(&pre);
    assert!(stdout(&pre).contains("main"));
    let s = stats(&w);
    assert_eq!(s["counters"]["local"].as_u64(), Some(2), "{s}");
    let reasons = s["reasons"].as_object().expect("reasons");
    assert_eq!(reasons.len(), 2, "{s}");
}

#[test]
fn the_compilers_own_failures_come_through_unchanged() {
    let w = crate::world();
    w.write("ok.c", b"int x;\n");
    // -o into a directory that does not exist: gcc's message and status.
    let plain = Command::new("gcc")
        .args(["-c", "ok.c", "-o", "nodir/ok.o"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    let ours = w
        .llamacc("gcc", &["-c", "ok.c", "-o", "nodir/ok.o"])
        .output()
        .expect("llamacc");
    assert_eq!(ours.status.code(), plain.status.code());
    assert_eq!(stderr(&ours), stderr(&plain));
    // An unreadable (missing) source.
    let plain = Command::new("gcc")
        .args(["-c", "missing.c"])
        .current_dir(w.work())
        .output()
        .expect("gcc");
    let ours = w
        .llamacc("gcc", &["-c", "missing.c"])
        .output()
        .expect("llamacc");
    assert_eq!(ours.status.code(), plain.status.code());
    assert_eq!(stderr(&ours), stderr(&plain));
    // A compiler that does not exist: a shell's status and a message naming it.
    let out = w
        .llamacc("no-such-cc", &["-c", "ok.c"])
        .output()
        .expect("llamacc");
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("no-such-cc"), "{}", stderr(&out));
}

#[test]
fn gccs_default_output_name_is_in_the_current_directory() {
    let w = crate::world();
    project(&w);
    ok(&w
        .llamacc("gcc", &["-Iinclude", "-c", "src/main.c"])
        .output()
        .expect("llamacc"));
    assert!(w.path("main.o").exists());
    assert!(!w.path("src/main.o").exists());
}

#[test]
fn time_macros_are_not_cached() {
    let w = crate::world();
    w.write("when.c", b"const char *built = __DATE__ \" \" __TIME__;\n");
    for _ in 0..2 {
        ok(&w
            .llamacc("gcc", &["-c", "when.c"])
            .output()
            .expect("llamacc"));
    }
    assert_eq!(counter(&w, "hits"), 0);
    assert_eq!(counter(&w, "uncacheable"), 2);
}

#[test]
fn an_unknown_llamacc_variable_warns_once() {
    let w = crate::world();
    w.write("a.c", b"int a;\n");
    w.write("b.c", b"int b;\n");
    let first = w
        .llamacc("gcc", &["-c", "a.c"])
        .env("LLAMACC_COLOUR", "1")
        .output()
        .expect("llamacc");
    let second = w
        .llamacc("gcc", &["-c", "b.c"])
        .env("LLAMACC_COLOUR", "1")
        .output()
        .expect("llamacc");
    ok(&first);
    ok(&second);
    assert!(
        stderr(&first).contains("LLAMACC_COLOUR"),
        "{}",
        stderr(&first)
    );
    assert!(
        !stderr(&second).contains("LLAMACC_COLOUR"),
        "{}",
        stderr(&second)
    );
}

#[test]
fn llamacxx_compiles_cxx_and_llamacc_local_bypasses_the_cache() {
    let w = crate::world();
    w.write(
        "a.cc",
        b"#include <vector>\nint f() { return std::vector<int>(3).size(); }\n",
    );
    let link = w.dir.path().join("llamac++");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_llamacc"), &link).expect("symlink");
    // The world's environment, with the program swapped for the link.
    let template = w.llamacc("gcc", &[]);
    let cmd = Command::new(&link)
        .args(["-c", "a.cc", "-o", "a.o"])
        .envs(
            template
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .current_dir(w.work())
        .output()
        .expect("llamac++");
    ok(&cmd);
    let plain = Command::new("g++")
        .args(["-c", "a.cc", "-o", "plain.o"])
        .current_dir(w.work())
        .output()
        .expect("g++");
    ok(&plain);
    assert_eq!(
        fs::read(w.path("a.o")).expect("a.o"),
        fs::read(w.path("plain.o")).expect("plain.o")
    );
    ok(&w
        .llamacc("gcc", &["-c", "a.cc", "-o", "b.o"])
        .env("LLAMACC_LOCAL", "1")
        .output()
        .expect("llamacc"));
    assert_eq!(
        stats(&w)["compiles"].as_u64(),
        Some(1),
        "LLAMACC_LOCAL never reaches the daemon"
    );
}

/// Runs `program` with this world's environment (as `w.llamacc` sets it up, with
/// `LLAMACC_LOCAL_CC` naming no compiler: only the launcher form or the link can name one)
/// and `PATH` starting with `first_on_path`.
fn run_as(
    w: &World,
    program: &std::path::Path,
    args: &[&str],
    first_on_path: &std::path::Path,
) -> Output {
    run_as_cmd(w, program, args, first_on_path)
        .output()
        .expect("llamacc")
}

fn run_as_cmd(
    w: &World,
    program: &std::path::Path,
    args: &[&str],
    first_on_path: &std::path::Path,
) -> Command {
    let template = w.llamacc("/nonexistent/cc", &[]);
    let path = std::env::join_paths(std::iter::once(first_on_path.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(
            template
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("PATH", path)
        .current_dir(w.work());
    cmd
}

#[test]
fn the_launcher_form_and_a_masquerading_link_are_cached() {
    let w = crate::world();
    project(&w);
    w.write(
        "a.cc",
        b"#include <vector>\nint f() { return std::vector<int>(3).size(); }\n",
    );
    let mask = w.dir.path().join("mask");
    fs::create_dir_all(&mask).expect("mask dir");
    for name in ["gcc", "g++"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_llamacc"), mask.join(name)).expect("link");
    }
    let llamacc = std::path::Path::new(env!("CARGO_BIN_EXE_llamacc"));
    let args = ["-O2", "-Iinclude", "-c", "src/main.c", "-o", "main.o"];
    ok(&Command::new("gcc")
        .args(args)
        .current_dir(w.work())
        .output()
        .expect("gcc"));
    let plain = fs::read(w.path("main.o")).expect("plain main.o");

    // ccache's launcher form, with a `gcc` link to llamacc first on PATH: the real gcc.
    fs::remove_file(w.path("main.o")).expect("rm");
    ok(&run_as(&w, llamacc, &[&["gcc"][..], &args].concat(), &mask));
    assert_eq!(fs::read(w.path("main.o")).expect("main.o"), plain);
    assert_eq!((counter(&w, "misses"), counter(&w, "hits")), (1, 0));
    // The link itself: the same gcc, so the same compile.
    fs::remove_file(w.path("main.o")).expect("rm");
    ok(&run_as(&w, &mask.join("gcc"), &args, &mask));
    assert_eq!(fs::read(w.path("main.o")).expect("main.o"), plain);
    assert_eq!((counter(&w, "misses"), counter(&w, "hits")), (1, 1));
    // Plain llamacc whose LLAMACC_LOCAL_CC finds the link first on PATH: the daemon looks
    // past it to the real gcc (cached under llamacc's identity, an upgraded gcc would
    // never miss).
    fs::remove_file(w.path("main.o")).expect("rm");
    let mut plain_form = run_as_cmd(&w, llamacc, &args, &mask);
    ok(&plain_form
        .env("LLAMACC_LOCAL_CC", "gcc")
        .output()
        .expect("llamacc"));
    assert_eq!(fs::read(w.path("main.o")).expect("main.o"), plain);
    assert_eq!((counter(&w, "misses"), counter(&w, "hits")), (1, 2));

    // C++ through `llamacc g++`, the g++ link and the llamacxx binary: one miss, two hits.
    let cxx = ["-c", "a.cc", "-o", "a.o"];
    ok(&Command::new("g++")
        .args(cxx)
        .current_dir(w.work())
        .output()
        .expect("g++"));
    let plain_cxx = fs::read(w.path("a.o")).expect("plain a.o");
    ok(&run_as(&w, llamacc, &[&["g++"][..], &cxx].concat(), &mask));
    ok(&run_as(&w, &mask.join("g++"), &cxx, &mask));
    let llamacxx = run_as_cmd(
        &w,
        std::path::Path::new(env!("CARGO_BIN_EXE_llamacxx")),
        &cxx,
        &mask,
    )
    .env("LLAMACC_LOCAL_CXX", "g++")
    .output()
    .expect("llamacxx");
    ok(&llamacxx);
    assert_eq!(fs::read(w.path("a.o")).expect("a.o"), plain_cxx);
    assert_eq!((counter(&w, "misses"), counter(&w, "hits")), (2, 4));

    // A link with nothing real behind it says so instead of starting itself for ever.
    let out = run_as_cmd(&w, &mask.join("gcc"), &args, &mask)
        .env("PATH", &mask)
        .output()
        .expect("masked gcc");
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no other gcc is on PATH"),
        "{}",
        stderr(&out)
    );
    // llamacc named as its own compiler is refused, not run again.
    let out = w
        .llamacc(env!("CARGO_BIN_EXE_llamacc"), &args)
        .output()
        .expect("llamacc");
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is llamacc itself"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_killed_daemon_is_replaced_and_the_build_goes_on() {
    let w = crate::world();
    w.write("a.c", b"int a;\n");
    w.write("b.c", b"int b;\n");
    ok(&w.llamacc("gcc", &["-c", "a.c"]).output().expect("llamacc"));
    let status = w.run(&["daemon", "status"]);
    let pid = daemon_pid(&status);
    // SAFETY: kill(2) on the daemon's pid; no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    ok(&w.llamacc("gcc", &["-c", "b.c"]).output().expect("llamacc"));
    assert!(w.path("b.o").exists());
    let status = w.run(&["daemon", "status"]);
    assert!(status.status.success(), "a new daemon runs");
    assert!(!stdout(&status).contains(&format!("pid       {pid}\n")));
}

#[test]
fn daemon_start_status_stop() {
    let w = crate::world();
    assert_eq!(w.run(&["daemon", "status"]).status.code(), Some(1));
    ok(&w.run(&["daemon", "start"]));
    let status = w.run(&["daemon", "status"]);
    ok(&status);
    assert!(stdout(&status).contains("running"));
    let socket = w.store().join("daemon.sock");
    let mode = fs::metadata(&socket).expect("socket").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    ok(&w.run(&["daemon", "stop"]));
    assert_eq!(w.run(&["daemon", "status"]).status.code(), Some(1));
}

#[test]
fn the_originals_daemon_flags_work_or_are_refused_with_the_way_out() {
    let w = crate::world();
    assert_eq!(w.run(&["daemon", "-ping"]).status.code(), Some(1));
    ok(&w.run(&["daemon", "-autostart", "-detach", "-idle-timeout", "1h"]));
    let ping = w.run(&["daemon", "-ping"]);
    ok(&ping);
    assert!(stdout(&ping).contains("running"), "{}", stdout(&ping));
    // Already running: -autostart in the foreground has nothing to do.
    ok(&w.run(&["daemon", "-autostart"]));
    let stats = w.run(&["daemon", "-stats"]);
    ok(&stats);
    assert!(stdout(&stats).contains("compiles"), "{}", stdout(&stats));
    for (flags, says) in [
        (&["-path", "/tmp/x.sock"][..], "set LLAMA_DIR instead"),
        (&["-cc-concurrency", "4"][..], "remote_jobs"),
        (&[][..], "give one action"),
        (&["-ping", "-shutdown"][..], "give one action"),
        (&["-start", "-idle-timeout", "soon"][..], "-idle-timeout"),
    ] {
        let out = w.run(&[&["daemon"][..], flags].concat());
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{flags:?}: {}", stderr(&out));
    }
    ok(&w.run(&["daemon", "-shutdown"]));
    assert_eq!(w.run(&["daemon", "status"]).status.code(), Some(1));
}

#[test]
fn has_include_sees_a_header_appear_and_disappear() {
    let w = crate::world();
    w.write(
        "probe.c",
        b"#if __has_include(\"optional.h\")\nint which = 1;\n#else\nint which = 2;\n#endif\n",
    );
    let args = ["-c", "probe.c", "-o", "probe.o"];
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    let without = fs::read(w.path("probe.o")).expect("object");
    // The header appears: not a hit, and the object changes.
    w.write("optional.h", b"/* now here */\n");
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    let with = fs::read(w.path("probe.o")).expect("object");
    assert_ne!(with, without);
    assert_eq!(counter(&w, "hits"), 0);
    // And goes again: the first result is the right one, from the cache.
    fs::remove_file(w.path("optional.h")).expect("rm");
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_eq!(fs::read(w.path("probe.o")).expect("object"), without);
    assert_eq!(counter(&w, "hits"), 1);
}

#[test]
fn include_next_and_computed_includes_are_followed() {
    let w = crate::world();
    w.write("a/wrap.h", b"#define FROM_A 1\n#include_next <wrap.h>\n");
    w.write("b/wrap.h", b"#define FROM_B 2\n");
    w.write("cfg/pick.h", b"#define HEADER \"chosen.h\"\n");
    w.write("cfg/chosen.h", b"#define CHOSEN 3\n");
    w.write(
        "main.c",
        b"#include <wrap.h>\n#include \"pick.h\"\n#include HEADER\nint v = FROM_A + FROM_B + CHOSEN;\n",
    );
    let args = ["-Ia", "-Ib", "-Icfg", "-c", "main.c", "-o", "main.o"];
    assert_identical_to_plain(&w, "gcc", &args, &["main.o"]);
    // The header #include_next reaches changes: a miss, and a new object.
    let before = fs::read(w.path("main.o")).expect("object");
    w.write("b/wrap.h", b"#define FROM_B 20\n");
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_ne!(fs::read(w.path("main.o")).expect("object"), before);
    // So does the one the computed include names.
    let before = fs::read(w.path("main.o")).expect("object");
    w.write("cfg/chosen.h", b"#define CHOSEN 30\n");
    ok(&w.llamacc("gcc", &args).output().expect("llamacc"));
    assert_ne!(fs::read(w.path("main.o")).expect("object"), before);
    assert_eq!(
        counter(&w, "hits"),
        1,
        "only the identical-to-plain check's second compile"
    );
}

#[test]
fn a_daemon_killed_during_a_compile_is_replaced_and_the_compile_finishes() {
    let w = crate::world();
    w.write("a.c", b"int a;\n");
    // A compiler that takes long enough to kill the daemon while it runs.
    let slow = w.dir.path().join("slowcc");
    // Only compiles are slow, not the probes of its identity.
    fs::write(
        &slow,
        "#!/bin/sh\ncase \" $* \" in *\" -c \"*) sleep 2 ;; esac\nexec gcc \"$@\"\n",
    )
    .expect("write");
    fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    ok(&w.run(&["daemon", "start"]));
    let pid = daemon_pid(&w.run(&["daemon", "status"]));
    let compile = w
        .llamacc(slow.to_str().expect("utf-8"), &["-c", "a.c", "-o", "a.o"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("llamacc");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: kill(2) on the daemon's pid; no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let out = compile.wait_with_output().expect("wait");
    ok(&out);
    assert!(w.path("a.o").exists());
    let status = w.run(&["daemon", "status"]);
    assert!(status.status.success(), "a new daemon runs");
}

#[test]
fn without_a_usable_store_llamacc_compiles_directly_and_says_so_once() {
    let w = crate::world();
    w.write("a.c", b"int a;\n");
    w.write("b.c", b"int b;\n");
    // A store that cannot be created: its parent is a file.
    let blocker = w.dir.path().join("not-a-dir");
    fs::write(&blocker, b"").expect("write");
    let store = blocker.join("store");
    let first = w
        .llamacc("gcc", &["-c", "a.c"])
        .env("LLAMA_DIR", &store)
        .output()
        .expect("llamacc");
    let second = w
        .llamacc("gcc", &["-c", "b.c"])
        .env("LLAMA_DIR", &store)
        .output()
        .expect("llamacc");
    ok(&first);
    ok(&second);
    assert!(w.path("a.o").exists() && w.path("b.o").exists());
    assert!(
        stderr(&first).contains("running the compiler directly"),
        "{}",
        stderr(&first)
    );
    assert_eq!(stderr(&second), "", "said once, not once per file");
}
