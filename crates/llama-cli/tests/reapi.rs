//! The reapi backend end to end: the real `llama` binary against BuildGrid 0.4.4 with
//! PostgreSQL 15 and the Bots-API test worker, all on loopback, started and stopped here
//! (llama-testkit `ReapiServer`; install them with scripts/install-test-servers).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::lambda::{XARGS_JOB, invoke_example, outputs, xargs_locally};
use crate::lambda_cc::{build_small, counter, fell_back_once, small_project, stats, stop_daemon};
use llama_testkit::harness::{ReapiServer, ReapiTls};
use llama_testkit::{World, run_with_stdin, sha256sum_line, stderr, stdout};

/// `cmd` (a llama command of a [`World`]) on the reapi backend, talking to `server`.
fn client(server: &ReapiServer, cmd: &mut Command) {
    cmd.env("LLAMA_BACKEND", "reapi")
        .env("LLAMA_REAPI_ENDPOINT", server.endpoint())
        .env("LLAMA_REAPI_INSTANCE", server.instance());
}

/// Leases the worker ran ("... OK exit N" per lease).
fn executions(server: &ReapiServer) -> usize {
    server.worker_log().matches(": OK exit ").count()
}

#[test]
fn the_originals_invoke_example_then_the_remote_action_cache() {
    let server = ReapiServer::start(1);
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let expected = sha256sum_line(&w.path("INPUT"), "INPUT");

    // On BuildGrid, with a store of its own: one execution.
    let started = Instant::now();
    let mut cmd = w.llama(&invoke_example("gcc"));
    client(&server, &mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("reapi-store-1"));
    let out = cmd.output().expect("llama");
    let first = started.elapsed();
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    assert_eq!(executions(&server), 1, "{}", server.log());
    let err = stderr(&out);
    assert!(err.contains("reapi: 1 execution, "), "{err}");

    // A fresh local store (another machine): served from BuildGrid's action cache.
    fs::remove_file(w.path("OUTPUT")).unwrap();
    let started = Instant::now();
    let mut cmd = w.llama(&invoke_example("gcc"));
    client(&server, &mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("reapi-store-2"));
    let out = cmd.output().expect("llama");
    let second = started.elapsed();
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    assert_eq!(
        executions(&server),
        1,
        "no second execution: {}",
        server.log()
    );
    let err = stderr(&out);
    assert!(
        err.contains("reapi: 0 executions, ") && err.contains("1 from the remote action cache"),
        "{err}"
    );

    // Another function is another cache key (llama-function travels in the Action's salt,
    // not in the platform BuildGrid would reject).
    let mut cmd = w.llama(&invoke_example("clang"));
    client(&server, &mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("reapi-store-2"));
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(executions(&server), 2, "{}", server.log());
    eprintln!("invoke on BuildGrid: {first:?} first, {second:?} from the remote action cache");
}

#[test]
fn stdin_is_refused_with_a_clear_error() {
    let server = ReapiServer::start(1);
    let w = crate::world();
    let mut cmd = w.llama(&["invoke", "-stdin", "gcc", "cat"]);
    client(&server, &mut cmd);
    let out = run_with_stdin(cmd, "data\n");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("standard input"), "{err}");
    assert_eq!(executions(&server), 0, "{}", server.log());
}

#[test]
fn xargs_of_10_jobs_matches_local() {
    let server = ReapiServer::start(2);
    let w = crate::world();
    let (lines, local, local_outputs) = xargs_locally(&w, 10);

    let started = Instant::now();
    let mut cmd = w.llama(XARGS_JOB);
    client(&server, &mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("reapi-store"));
    let remote = run_with_stdin(cmd, &lines);
    assert!(
        remote.status.success(),
        "{}\n{}",
        stderr(&remote),
        server.log()
    );
    assert_eq!(stdout(&remote), stdout(&local));
    assert_eq!(outputs(&w), local_outputs);
    assert_eq!(executions(&server), 10, "{}", server.log());
    eprintln!("xargs of 10 jobs on BuildGrid: {:?}", started.elapsed());
}

#[test]
fn an_unreachable_server_is_named_with_what_to_do() {
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = w.llama(&invoke_example("gcc"));
    cmd.env("LLAMA_BACKEND", "reapi")
        .env("LLAMA_REAPI_ENDPOINT", format!("grpc://127.0.0.1:{port}"));
    let started = Instant::now();
    let out = cmd.output().expect("llama");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("grpc://127.0.0.1:{port}")) && err.contains("LLAMA_REAPI_ENDPOINT"),
        "{err}"
    );
    eprintln!("gave up after {:?}", started.elapsed());

    // No endpoint at all says how to set one.
    let mut cmd = w.llama(&invoke_example("gcc"));
    cmd.env("LLAMA_BACKEND", "reapi");
    let out = cmd.output().expect("llama");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("LLAMA_REAPI_ENDPOINT=grpc://"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn llamacc_compiles_on_buildgrid_with_objects_identical_to_gccs() {
    let server = ReapiServer::start(2);
    let w = crate::world();
    small_project(&w);
    // A directive the include scanner does not model: this file's headers come from -M.
    w.write(
        "f7.c",
        b"#assert machine(llama)\n#include <stdio.h>\n#include \"common.h\"\nint f7(void) { return printf(\"%d\\n\", COMMON + 7); }\n",
    );
    let started = Instant::now();
    let err = build_small(&w, &|cmd| {
        client(&server, cmd);
        cmd.env("LLAMACC_LOCAL_FALLBACK", "0");
    });
    let elapsed = started.elapsed();
    let s = stats(&w, &w.store());
    stop_daemon(&w, &w.store());
    assert_eq!(counter(&s, "remote"), 8, "{s:#}\n{err}\n{}", server.log());
    assert_eq!(counter(&s, "remote_fallbacks"), 0, "{s:#}\n{err}");
    assert_eq!(s["scanner"]["walked"], 7, "{s:#}");
    assert_eq!(s["scanner"]["directive"], 1, "{s:#}");
    assert_eq!(executions(&server), 8, "{}", server.log());
    // A REAPI cluster bills nothing llama can know: no dollar figure, not Lambda's price.
    assert_eq!(s["cost"]["invocations"], 8.0, "{s:#}");
    assert!(s["cost"].get("dollars").is_none(), "{s:#}");
    // The compiler itself (cc1, tens of MB) went up with ByteStream Write: no batch carries
    // a blob over 4 MiB.
    let biggest = llama_testkit::files_under(&server.cas_dir())
        .iter()
        .filter_map(|p| fs::metadata(p).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0);
    assert!(
        biggest > 4 << 20,
        "largest blob in BuildGrid's CAS: {biggest} bytes"
    );
    eprintln!("8 compiles on BuildGrid (toolchain shipped as inputs): {elapsed:?}");
}

#[test]
fn the_server_killed_mid_run_the_jobs_still_complete_said_once() {
    let mut server = ReapiServer::start(4);
    let w = crate::world();
    let (lines, local, local_outputs) = xargs_locally(&w, 10);
    let job: Vec<&str> = XARGS_JOB
        .iter()
        .map(|a| {
            if a.starts_with("sha256sum") {
                "sleep 3; sha256sum \"$0\" > \"$1\"; echo job {{.Idx}} of {{.Line}}: $(wc -c < \"$0\") bytes"
            } else {
                a
            }
        })
        .collect();

    let mut cmd = w.llama(&job);
    client(&server, &mut cmd);
    cmd.env("LLAMA_DIR", w.dir.path().join("reapi-store"));
    let run = std::thread::spawn(move || run_with_stdin(cmd, &lines));
    // Kill BuildGrid while the first leases sleep (the client starts and uploads in well
    // under a second here), and bring it back.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.kill_server();
    std::thread::sleep(std::time::Duration::from_secs(1));
    server.restart_server();
    let remote = run.join().expect("llama xargs");
    let err = stderr(&remote);
    assert!(remote.status.success(), "{err}\n{}", server.log());
    assert_eq!(stdout(&remote), stdout(&local));
    assert_eq!(outputs(&w), local_outputs);
    assert_eq!(
        err.matches("lost the connection to").count(),
        1,
        "said once: {err}"
    );
    eprintln!("{err}");
}

#[test]
fn a_rejected_platform_property_is_named() {
    let server = ReapiServer::start(1);
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let mut cmd = w.llama(&invoke_example("gcc"));
    client(&server, &mut cmd);
    cmd.env(
        "LLAMA_REAPI_PLATFORM",
        "gcc: OSFamily=linux, no-such-property=1",
    );
    let out = cmd.output().expect("llama");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no-such-property") && err.contains("LLAMA_REAPI_PLATFORM"),
        "{err}"
    );
    assert_eq!(executions(&server), 0, "{}", server.log());

    // Accepted properties of the function run.
    let mut cmd = w.llama(&invoke_example("gcc"));
    client(&server, &mut cmd);
    cmd.env("LLAMA_REAPI_PLATFORM", "gcc: OSFamily=linux, ISA=x86-64");
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(executions(&server), 1, "{}", server.log());
    eprintln!("{err}");
}

#[test]
fn blobs_the_server_lost_are_uploaded_again() {
    let server = ReapiServer::start(2);
    let w = crate::world();
    small_project(&w);
    let env = |cmd: &mut Command| {
        client(&server, cmd);
        cmd.env("LLAMACC_LOCAL_FALLBACK", "0");
    };
    build_small(&w, &env);
    // The daemon now believes the toolchain is in the server's CAS: take it away.
    // (The test worker keeps its own blob cache beside BuildGrid's CAS, in work/cache: that
    // goes too, as on a fresh bot.)
    let worker_cache = server.cas_dir().with_file_name("work").join("cache");
    for blob in llama_testkit::files_under(&server.cas_dir())
        .into_iter()
        .chain(llama_testkit::files_under(&worker_cache))
    {
        fs::remove_file(blob).unwrap();
    }
    w.write("common.h", b"#define COMMON 41\n");
    let err = build_small(&w, &env);
    let s = stats(&w, &w.store());
    stop_daemon(&w, &w.store());
    assert_eq!(counter(&s, "remote"), 16, "{s:#}\n{err}\n{}", server.log());
    assert_eq!(counter(&s, "remote_fallbacks"), 0, "{s:#}\n{err}");
    // The client's known-present set was stale: BuildGrid refused an Execute for want of
    // the Command, and the client uploaded again instead of failing the compile.
    assert!(
        server
            .server_log()
            .contains("Could not get command from storage"),
        "{}",
        server.log()
    );
}

#[test]
fn an_unreachable_server_falls_back_to_compiling_here_said_once() {
    let w = crate::world();
    small_project(&w);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = build_small(&w, &|cmd| {
        cmd.env("LLAMA_BACKEND", "reapi")
            .env("LLAMA_REAPI_ENDPOINT", format!("grpc://127.0.0.1:{port}"));
    });
    fell_back_once(&w, &err, "LLAMA_REAPI_ENDPOINT");
    stop_daemon(&w, &w.store());
    eprintln!("{err}\nbuilt here after {:?}", started.elapsed());
}

/// lua and leveldb through BuildGrid: every compile remote (no fallback allowed), objects
/// identical to plain gcc/g++; then `make clean` and a new LLAMA_DIR (another machine): every
/// compile is served by BuildGrid's action cache, nothing executes.
#[test]
fn lua_and_leveldb_on_buildgrid_are_identical_then_all_remote_cache_hits() {
    use crate::lambda_cc::{build_corpus, clean_corpus, compare_objects, reference_corpus};
    let server = ReapiServer::start(2);
    let w = crate::world();
    let (llamacc, llamacxx) = (env!("CARGO_BIN_EXE_llamacc"), llamacxx(&w));
    let server = &server;
    for corpus in ["lua", "leveldb"] {
        let tree = w.dir.path().join(corpus);
        let reference = reference_corpus(&w, corpus, &tree);
        let on = |dir: std::path::PathBuf| {
            move |cmd: &mut Command| {
                client(server, cmd);
                cmd.env("LLAMA_DIR", &dir)
                    .env("LLAMACC_LOCAL_FALLBACK", "0")
                    .env("LLAMA_REMOTE_JOBS", "4");
            }
        };
        let first = w.dir.path().join(format!("{corpus}-llama-1"));
        build_corpus(&w, corpus, &tree, (llamacc, &llamacxx), &on(first.clone()));
        compare_objects(&reference, &tree);
        let s = stats(&w, &first);
        let remote = counter(&s, "remote");
        assert!(remote > 0, "{corpus}: {s:#}");
        crate::lambda_cc::assert_scanned_all(&s, corpus);
        stop_daemon(&w, &first);

        let ran = executions(server);
        clean_corpus(corpus, &tree);
        let second = w.dir.path().join(format!("{corpus}-llama-2"));
        build_corpus(&w, corpus, &tree, (llamacc, &llamacxx), &on(second.clone()));
        compare_objects(&reference, &tree);
        let s = stats(&w, &second);
        assert_eq!(counter(&s, "remote"), 0, "{corpus}: all hits: {s:#}");
        assert!(counter(&s, "hits") > 0, "{corpus}: {s:#}");
        assert_eq!(executions(server), ran, "{corpus}: nothing executed again");
        stop_daemon(&w, &second);
        eprintln!(
            "{corpus} on BuildGrid: {remote} remote compiles, then {} remote cache hits",
            counter(&s, "hits")
        );
    }
}

/// The corpora the clang and preprocess tests build: lua and leveldb, or the
/// space-separated names in `LLAMA_TEST_REMOTE_CORPORA` (`git`, for the heavier check).
fn remote_corpora() -> Vec<String> {
    std::env::var("LLAMA_TEST_REMOTE_CORPORA")
        .unwrap_or_else(|_| "lua leveldb".into())
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// lua and leveldb built with clang through BuildGrid: every compile remote (no fallback
/// allowed), the clang driver, its libraries and gcc's installation marker shipped, objects
/// and depfiles identical to plain clang/clang++'s.
#[test]
fn lua_and_leveldb_with_clang_on_buildgrid_are_identical() {
    use crate::lambda_cc::{build_corpus, compare_objects, reference_corpus_with};
    let server = ReapiServer::start(2);
    let w = crate::world();
    let (llamacc, llamacxx) = (env!("CARGO_BIN_EXE_llamacc"), llamacxx(&w));
    for corpus in remote_corpora() {
        let corpus = corpus.as_str();
        let tree = w.dir.path().join(format!("{corpus}-clang"));
        let reference = reference_corpus_with(&w, corpus, &tree, ("clang", "clang++"));
        let dir = w.dir.path().join(format!("{corpus}-clang-llama"));
        build_corpus(&w, corpus, &tree, (llamacc, &llamacxx), &|cmd| {
            client(&server, cmd);
            cmd.env("LLAMA_DIR", &dir)
                .env("LLAMACC_LOCAL_CC", "clang")
                .env("LLAMACC_LOCAL_CXX", "clang++")
                .env("LLAMACC_LOCAL_FALLBACK", "0")
                .env("LLAMA_REMOTE_JOBS", "4");
        });
        compare_objects(&reference, &tree);
        assert_same_depfiles(&reference, &tree);
        let s = stats(&w, &dir);
        assert!(counter(&s, "remote") > 0, "{corpus}: {s:#}");
        crate::lambda_cc::assert_scanned_all(&s, corpus);
        stop_daemon(&w, &dir);
        eprintln!(
            "{corpus} with clang on BuildGrid: {} remote compiles",
            counter(&s, "remote")
        );
    }
}

/// `LLAMACC_LOCAL_PREPROCESS` with gcc and `LLAMACC_FULL_PREPROCESS` with clang on lua and
/// leveldb, the other two pairings on lua, through BuildGrid: every compile remote and
/// preprocessed here (neither corpus builds with debug information), objects and depfiles
/// identical to plain builds'.
#[test]
fn lua_and_leveldb_preprocessed_here_on_buildgrid_are_identical() {
    use crate::lambda_cc::{build_corpus, compare_objects, reference_corpus_with};
    let server = ReapiServer::start(2);
    let w = crate::world();
    let (llamacc, llamacxx) = (env!("CARGO_BIN_EXE_llamacc"), llamacxx(&w));
    let lua = vec!["lua".to_string()];
    for (cc, cxx, setting, corpora) in [
        ("gcc", "g++", "LLAMACC_LOCAL_PREPROCESS", remote_corpora()),
        (
            "clang",
            "clang++",
            "LLAMACC_FULL_PREPROCESS",
            remote_corpora(),
        ),
        ("gcc", "g++", "LLAMACC_FULL_PREPROCESS", lua.clone()),
        ("clang", "clang++", "LLAMACC_LOCAL_PREPROCESS", lua),
    ] {
        for corpus in corpora {
            let corpus = corpus.as_str();
            let name = format!("{corpus}-{cc}-{setting}");
            let tree = w.dir.path().join(&name);
            let reference = reference_corpus_with(&w, corpus, &tree, (cc, cxx));
            let dir = w.dir.path().join(format!("{name}-llama"));
            let out = build_corpus(&w, corpus, &tree, (llamacc, &llamacxx), &|cmd| {
                client(&server, cmd);
                cmd.env("LLAMA_DIR", &dir)
                    .env("LLAMACC_LOCAL_CC", cc)
                    .env("LLAMACC_LOCAL_CXX", cxx)
                    .env(setting, "1")
                    .env("LLAMACC_LOCAL_FALLBACK", "0")
                    .env("LLAMA_REMOTE_JOBS", "4");
            });
            compare_objects(&reference, &tree);
            assert_same_depfiles(&reference, &tree);
            let s = stats(&w, &dir);
            let remote = counter(&s, "remote");
            assert!(remote > 0, "{name}: {s:#}");
            // CMake's failing checks may compile remotely too, preprocessed like the rest.
            let preprocessed = s["scanner"]["preprocessed-here"].as_u64().unwrap_or(0);
            assert!(
                (remote..=remote + counter(&s, "compile_errors")).contains(&preprocessed),
                "{name}: every remote compile preprocessed here: {s:#}"
            );
            let said = stderr(&out);
            assert!(!said.contains(setting), "{name}: nothing declined: {said}");
            stop_daemon(&w, &dir);
            eprintln!("{name} with {setting} on BuildGrid: {remote} remote compiles");
        }
    }
}

/// Every depfile under `reference` is byte-identical to the one at the same place in
/// `tree`.
fn assert_same_depfiles(reference: &Path, tree: &Path) {
    let mut compared = 0;
    for entry in walkdir(reference) {
        if entry.extension().is_none_or(|x| x != "d") {
            continue;
        }
        let relative = entry.strip_prefix(reference).unwrap();
        // The reference was built at `tree` and moved aside: both name `tree`.
        let want = fs::read_to_string(&entry).unwrap();
        let got = fs::read_to_string(tree.join(relative))
            .unwrap_or_else(|e| panic!("{}: {e}", relative.display()));
        assert_eq!(got, want, "{}", relative.display());
        compared += 1;
    }
    eprintln!("{compared} depfiles identical");
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// The lines of a build's stderr that llama itself wrote (llamacc's notes, llama's
/// warnings), as opposed to make's and the compiler's.
fn llama_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("llamacc:") || l.starts_with("llama:"))
        .collect()
}

/// `make -j8 CC=llamacc` of lua through BuildGrid, and BuildGrid SIGKILLed once a few
/// compiles have run there, then started again, as its supervisor would (the realistic
/// crash; a server that stays down is `an_unreachable_server_falls_back_...`). Its
/// scheduler is in PostgreSQL: the compiles in flight resume with WaitExecution, the others
/// wait for it, none falls back. The build completes with objects identical to gcc's, and
/// says what happened exactly once, naming the server.
#[test]
fn buildgrid_killed_mid_build_the_build_completes_identical_said_once() {
    use crate::lambda_cc::{build_corpus_with_jobs, compare_objects, reference_corpus};
    let mut server = ReapiServer::start(2);
    let w = crate::world();
    let tree = w.dir.path().join("lua");
    let reference = reference_corpus(&w, "lua", &tree);
    let (endpoint, instance) = (server.endpoint(), server.instance().to_string());
    let env = |cmd: &mut Command| {
        cmd.env("LLAMA_BACKEND", "reapi")
            .env("LLAMA_REAPI_ENDPOINT", &endpoint)
            .env("LLAMA_REAPI_INSTANCE", &instance)
            .env("LLAMA_REMOTE_JOBS", "8");
    };
    let llamacc = env!("CARGO_BIN_EXE_llamacc");
    let (out, at_kill) = std::thread::scope(|scope| {
        let build =
            scope.spawn(|| build_corpus_with_jobs(&w, "lua", &tree, (llamacc, llamacc), 8, &env));
        // Bounded: the worker logs each lease it completes.
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        while executions(&server) < 4 {
            assert!(
                !build.is_finished(),
                "the build finished before BuildGrid could be killed:\n{}",
                server.log()
            );
            assert!(
                Instant::now() < deadline,
                "no 4 remote compiles in 10 minutes:\n{}",
                server.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let at_kill = executions(&server);
        server.kill_server();
        std::thread::sleep(std::time::Duration::from_secs(1));
        server.restart_server();
        let out = build
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (out, at_kill)
    });
    let err = stderr(&out);
    compare_objects(&reference, &tree);
    let s = stats(&w, &w.store());
    stop_daemon(&w, &w.store());
    assert_eq!(
        counter(&s, "remote_fallbacks"),
        0,
        "{s:#}\n{err}\n{}",
        server.log()
    );
    assert!(
        executions(&server) > at_kill,
        "compiles ran after the restart: {}",
        server.log()
    );
    let said = llama_lines(&err);
    assert_eq!(said.len(), 1, "said once:\n{err}");
    assert!(
        said[0].contains(&server.endpoint()) && said[0].contains("lost the connection"),
        "names the server and what happened: {}",
        said[0]
    );
    eprintln!(
        "killed after {at_kill} remote compiles; {} remote in all; the build said:\n{}",
        counter(&s, "remote"),
        said[0]
    );
}

/// A throwaway PKI, made with the openssl CLI: a CA; a server certificate for 127.0.0.1 (an
/// IP SAN, as rustls checks) and a client certificate, both signed by it; and another CA,
/// which signed neither.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (Debian's openssl package)");
            assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=llama test {ca}"),
            );
            let mut args = vec![
                "req", "-x509", "-days", "2", "-subj", &subject, "-keyout", &key, "-out", &pem,
            ];
            args.extend(ec);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args);
        }
        for (name, extensions) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            fs::write(
                dir.path().join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"
                ),
            )
            .expect("write extensions");
            let subject = format!("/CN=llama test {name}");
            let mut args = vec!["req", "-subj", &subject, "-keyout", &key, "-out", &csr];
            args.extend(ec);
            openssl(&args);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// BuildGrid's TLS files; `mtls`: client certificates signed by the CA are required.
    fn server(&self, mtls: bool) -> ReapiTls {
        ReapiTls {
            cert: self.path("server.pem").into(),
            key: self.path("server.key").into(),
            client_ca: mtls.then(|| self.path("ca.pem").into()),
        }
    }
}

/// `cmd` on the reapi backend, talking to `server`'s TLS port.
fn tls_client(server: &ReapiServer, cmd: &mut Command) {
    cmd.env("LLAMA_BACKEND", "reapi")
        .env("LLAMA_REAPI_ENDPOINT", server.tls_endpoint())
        .env("LLAMA_REAPI_INSTANCE", server.instance());
}

#[test]
fn grpcs_with_reapi_ca_works_without_it_the_failure_names_the_key() {
    let pki = Pki::new();
    let server = ReapiServer::start_tls(1, pki.server(false));
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let expected = sha256sum_line(&w.path("INPUT"), "INPUT");

    let mut cmd = w.llama(&invoke_example("gcc"));
    tls_client(&server, &mut cmd);
    cmd.env("LLAMA_REAPI_CA", pki.path("ca.pem"));
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
    assert_eq!(executions(&server), 1, "{}", server.log());

    // The system's roots do not know the test CA; nor does another CA.
    for ca in [None, Some(pki.path("other-ca.pem"))] {
        let mut cmd = w.llama(&invoke_example("gcc"));
        tls_client(&server, &mut cmd);
        // A store of its own: the local action cache would answer without the server.
        cmd.env(
            "LLAMA_DIR",
            w.dir.path().join(format!("store-{}", ca.is_some())),
        );
        if let Some(ca) = &ca {
            cmd.env("LLAMA_REAPI_CA", ca);
        }
        let out = cmd.output().expect("llama");
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&server.tls_endpoint()) && err.contains("reapi_ca"),
            "names the server and the key: {err}"
        );
        eprintln!("without the CA ({ca:?}): {err}");
    }
    assert_eq!(executions(&server), 1, "{}", server.log());

    // A CA file that is not there is named, with its key, before any connection.
    let missing = pki.path("no-such-ca.pem");
    let mut cmd = w.llama(&invoke_example("gcc"));
    tls_client(&server, &mut cmd);
    cmd.env("LLAMA_REAPI_CA", &missing);
    let out = cmd.output().expect("llama");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("reapi_ca") && err.contains("LLAMA_REAPI_CA") && err.contains(&missing),
        "{err}"
    );
}

#[test]
fn grpcs_with_mtls_the_client_certificate_works_and_its_absence_is_named() {
    let pki = Pki::new();
    let server = ReapiServer::start_tls(1, pki.server(true));
    let w = crate::world();
    w.write("INPUT", b"hello\n");

    let mut cmd = w.llama(&invoke_example("gcc"));
    tls_client(&server, &mut cmd);
    cmd.env("LLAMA_REAPI_CA", pki.path("ca.pem"));
    let out = cmd.output().expect("llama");
    assert!(!out.status.success(), "no client certificate: refused");
    let err = stderr(&out);
    assert!(
        err.contains(&server.tls_endpoint()) && err.contains("reapi_client_cert"),
        "names the server and the key: {err}"
    );
    eprintln!("without a client certificate: {err}");
    assert_eq!(executions(&server), 0, "{}", server.log());

    let mut cmd = w.llama(&invoke_example("gcc"));
    tls_client(&server, &mut cmd);
    cmd.env("LLAMA_REAPI_CA", pki.path("ca.pem"))
        .env("LLAMA_REAPI_CLIENT_CERT", pki.path("client.pem"))
        .env("LLAMA_REAPI_CLIENT_KEY", pki.path("client.key"));
    let out = cmd.output().expect("llama");
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    assert_eq!(
        fs::read_to_string(w.path("OUTPUT")).unwrap(),
        sha256sum_line(&w.path("INPUT"), "INPUT")
    );
    assert_eq!(executions(&server), 1, "{}", server.log());
}

/// Each Action in `server`'s CAS: its `do_not_cache`, and whether BuildGrid's action cache
/// has a result for it. (BuildGrid keeps one file per blob; a blob that decodes as an Action
/// naming a command and an input root is taken for one.)
fn actions_in_cas(server: &ReapiServer) -> Vec<(bool, bool)> {
    const SCRIPT: &str = r#"
import hashlib, os, sys, grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
cas, address, instance = sys.argv[1:4]
cache = re_grpc.ActionCacheStub(grpc.insecure_channel(address))
for root, _, files in os.walk(cas):
    for name in files:
        with open(os.path.join(root, name), "rb") as f:
            data = f.read()
        action = re.Action()
        try:
            action.ParseFromString(data)
        except Exception:
            continue
        if len(action.command_digest.hash) != 64 or len(action.input_root_digest.hash) != 64:
            continue
        digest = re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        try:
            cache.GetActionResult(re.GetActionResultRequest(instance_name=instance, action_digest=digest))
            cached = True
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            cached = False
        print(action.do_not_cache, cached)
"#;
    let out = Command::new(server.python())
        .args(["-c", SCRIPT])
        .arg(server.cas_dir())
        .arg(server.addr().to_string())
        .arg(server.instance())
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut actions: Vec<(bool, bool)> = stdout(&out)
        .lines()
        .map(|l| (l.starts_with("True"), l.ends_with("True")))
        .collect();
    actions.sort();
    actions
}

#[test]
fn reapi_cache_switches_read_off_executes_again_write_off_caches_nothing() {
    let server = ReapiServer::start(1);
    let w = crate::world();
    w.write("INPUT", b"hello\n");
    let expected = sha256sum_line(&w.path("INPUT"), "INPUT");
    // Each run with a store of its own (another machine): the local action cache stays out.
    let run = |n: usize, settings: &[(&str, &str)]| {
        let mut cmd = w.llama(&invoke_example("gcc"));
        client(&server, &mut cmd);
        cmd.env("LLAMA_DIR", w.dir.path().join(format!("store-{n}")));
        for (k, v) in settings {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("llama");
        assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
        assert_eq!(fs::read_to_string(w.path("OUTPUT")).unwrap(), expected);
        stderr(&out)
    };
    let write_off = [("LLAMA_REAPI_CACHE_WRITE", "0")];

    // Write off: the Action goes with do_not_cache, and BuildGrid records no result for it;
    // a second run, reading the cache as by default, finds nothing and executes again.
    run(1, &write_off);
    assert_eq!(executions(&server), 1, "{}", server.log());
    assert_eq!(actions_in_cas(&server), vec![(true, false)]);
    let err = run(2, &write_off);
    assert_eq!(executions(&server), 2, "not a hit: {err}\n{}", server.log());

    // Defaults: executed (do_not_cache is part of the Action, hence of its key) and cached;
    // read off (`false`, as in a config file): executed again although the cache has it.
    run(3, &[]);
    assert_eq!(executions(&server), 3, "{}", server.log());
    assert_eq!(actions_in_cas(&server), vec![(false, true), (true, false)]);
    let err = run(4, &[("LLAMA_REAPI_CACHE_READ", "false")]);
    assert_eq!(executions(&server), 4, "{err}\n{}", server.log());
    assert!(err.contains("reapi: 1 execution, "), "{err}");

    // Read back on: served from the action cache.
    let err = run(5, &[("LLAMA_REAPI_CACHE_READ", "yes")]);
    assert_eq!(executions(&server), 4, "{err}\n{}", server.log());
    assert!(err.contains("1 from the remote action cache"), "{err}");
}

/// `llamac++`: a link to llamacc named for C++ (the name decides).
fn llamacxx(w: &World) -> String {
    let link = w.dir.path().join("bin/llamac++");
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir bin");
    let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_llamacc"), &link);
    link.to_string_lossy().into_owned()
}

/// CPU seconds the children this process waited for have used so far (make, gcc, llamacc).
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given and cannot fail with RUSAGE_CHILDREN.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of the daemon of `dir` and its children (the dependency scans).
fn daemon_cpu(w: &World, dir: &std::path::Path) -> f64 {
    let out = w
        .llama(&["daemon", "status"])
        .env("LLAMA_DIR", dir)
        .output()
        .expect("llama daemon status");
    let text = stdout(&out) + &stderr(&out);
    let Some(pid) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid").map(|p| p.trim().to_string()))
    else {
        return 0.0;
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after "pid (comm)".
    let ticks: f64 = fields
        .iter()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf cannot fail for _SC_CLK_TCK.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// bench/reapi.sh: a corpus (`LLAMA_BENCH_CORPUS`, default lua) through BuildGrid, the
/// client's CPU, bytes and calls per compile, cold and from a second machine, with the
/// inputs listed by the compiler's `-M` and by the include scanner, next to plain gcc.
/// Prints a markdown table.
#[test]
#[ignore = "a benchmark: bench/reapi.sh runs it"]
fn bench_over_reapi() {
    use crate::lambda_cc::{build_corpus, clean_corpus, compare_corpus_objects, corpus_tree};
    let corpus = std::env::var("LLAMA_BENCH_CORPUS").unwrap_or_else(|_| "lua".into());
    let w = crate::world();
    let tree = w.dir.path().join(&corpus);
    corpus_tree(&corpus, &tree);
    let (llamacc, llamacxx) = (env!("CARGO_BIN_EXE_llamacc"), llamacxx(&w));
    let mut rows = Vec::new();

    // The plain build, moved aside: every llamacc build's objects must be identical to it.
    let before = children_cpu();
    build_corpus(&w, &corpus, &tree, ("gcc", "g++"), &|_| {});
    let gcc_cpu = children_cpu() - before;
    let reference = tree.with_extension("ref");
    fs::rename(&tree, &reference).expect("move the reference aside");
    corpus_tree(&corpus, &tree);
    let mut gcc = None;
    // The tree is pristine for the first build: a CMake corpus has no build directory to
    // clean yet.
    let mut built = false;

    // The third: the source preprocessed here (LLAMACC_LOCAL_PREPROCESS), no header shipped.
    for (lister, scanner, preprocess) in [
        ("-M", "0", "0"),
        ("scanner", "1", "0"),
        ("preprocessed here", "1", "1"),
    ] {
        // A fresh server for each lister: the second does not find the first's blobs.
        let server = ReapiServer::start(2);
        for (name, n) in [("first", 1), ("second (new LLAMA_DIR)", 2)] {
            if std::mem::replace(&mut built, true) {
                clean_corpus(&corpus, &tree);
            }
            let dir = w
                .dir
                .path()
                .join(format!("llama-{scanner}{preprocess}-{n}"));
            let before = children_cpu();
            build_corpus(&w, &corpus, &tree, (llamacc, &llamacxx), &|cmd| {
                client(&server, cmd);
                cmd.env("LLAMA_DIR", &dir)
                    .env("LLAMACC_LOCAL_FALLBACK", "0")
                    .env("LLAMACC_INCLUDE_SCANNER", scanner)
                    .env("LLAMACC_LOCAL_PREPROCESS", preprocess);
            });
            let daemon = daemon_cpu(&w, &dir);
            compare_corpus_objects(Some(&corpus), &reference, &tree);
            let s = stats(&w, &dir);
            let compiles = (counter(&s, "remote")
                + counter(&s, "hits")
                + counter(&s, "compile_errors"))
            .max(1) as f64;
            let cpu = (children_cpu() - before + daemon) * 1000.0 / compiles;
            let gcc = *gcc.get_or_insert_with(|| {
                let gcc = gcc_cpu * 1000.0 / compiles;
                rows.push(format!("| gcc | {gcc:.1} | 1.00 | | 0 | 0 | 0 | 0 | 0 | |"));
                gcc
            });
            let cost = |k: &str| s["cost"][k].as_f64().unwrap_or(0.0);
            let scanned = s["scanner"].as_object().cloned().unwrap_or_default();
            let walked = scanned.get("walked").and_then(|v| v.as_u64()).unwrap_or(0);
            let asked: u64 = scanned
                .iter()
                .filter(|(k, _)| *k != "walked" && *k != "preprocessed-here")
                .filter_map(|(_, v)| v.as_u64())
                .sum();
            rows.push(format!(
                "| {lister} {name} | {cpu:.1} | {:.2} | {:.1} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {walked} / {asked} |",
                cpu / gcc,
                daemon * 1000.0 / compiles,
                cost("bytes_up") / compiles,
                cost("bytes_down") / compiles,
                cost("calls") / compiles,
                cost("invocations"),
                cost("remote_cache_hits"),
            ));
            stop_daemon(&w, &dir);
        }
    }
    // On a line of its own: the test harness has just printed the test's name.
    println!();
    println!(
        "| {corpus}, -j16, BuildGrid (2 bots) | client CPU ms / compile | × gcc | of it, daemon | bytes up / compile | bytes down / compile | calls / compile | executions | remote cache hits | headers by scanner / -M |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// `llama trace simulate` against BuildGrid (bench/trace-calibrate.sh --reapi runs it):
/// the corpus built with one bot at -j16 is replayed with two bots at -j16 and at -j2, and
/// both are then built for real on fresh servers and stores. Prints a markdown table.
#[test]
#[ignore = "a benchmark: bench/trace-calibrate.sh --reapi"]
fn calibrate_trace_over_buildgrid() {
    use crate::lambda_cc::{build_corpus_with_jobs, corpus_tree};
    let corpus = std::env::var("LLAMA_BENCH_CORPUS").unwrap_or_else(|_| "lua".into());
    let w = crate::world();
    let tree = w.dir.path().join(&corpus);
    let (llamacc, llamacxx) = (env!("CARGO_BIN_EXE_llamacc"), llamacxx(&w));
    let traces = w.dir.path().join("traces");
    fs::create_dir_all(&traces).expect("traces dir");
    // Builds on a fresh server of `bots` and a fresh store; returns the trace's wall time.
    let build = |name: &str, bots: usize, jobs: usize| -> f64 {
        let server = ReapiServer::start(bots);
        let dir = w.dir.path().join(format!("llama-{name}"));
        let _ = fs::remove_dir_all(&tree);
        corpus_tree(&corpus, &tree);
        build_corpus_with_jobs(&w, &corpus, &tree, (llamacc, &llamacxx), jobs, &|cmd| {
            client(&server, cmd);
            cmd.env("LLAMA_DIR", &dir)
                .env("LLAMACC_LOCAL_FALLBACK", "0")
                .env("LLAMACC_BUILD_ID", name);
        });
        stop_daemon(&w, &dir);
        let file = format!("{name}.jsonl");
        fs::copy(dir.join("traces").join(&file), traces.join(&file)).expect("keep the trace");
        trace_json(&w, &["trace", "report", name, "--json"])["wall_s"]
            .as_f64()
            .expect("wall")
    };
    let recorded = build("bots1-j16", 1, 16);
    // The recording's own report, for reading the table.
    let report = w
        .llama(&["trace", "report", "bots1-j16"])
        .env("LLAMA_DIR", w.dir.path())
        .output()
        .expect("llama trace report");
    eprintln!("{}", stdout(&report));
    let predict = |jobs: &str| {
        trace_json(
            &w,
            &[
                "trace",
                "simulate",
                "bots1-j16",
                "--remote",
                "--workers",
                "2",
                "--client-cores",
                "2",
                "--jobs",
                jobs,
                "--json",
            ],
        )[0]
        .clone()
    };
    let rows = [("bots2-j16", "16"), ("bots2-j2", "2")].map(|(name, jobs)| {
        let predicted = predict(jobs);
        let measured = build(name, 2, jobs.parse().expect("jobs"));
        let wall = predicted["wall_s"].as_f64().expect("wall");
        format!(
            "| {corpus} | 1 bot, -j16: {recorded:.2} | 2 bots, -j{jobs} | {wall:.2} | {measured:.2} | {:+.1} % | {} |",
            (wall - measured) / measured * 100.0,
            predicted["bottleneck"].as_str().unwrap_or("")
        )
    });
    println!();
    println!(
        "| corpus | recorded (s) | replayed as | predicted (s) | measured (s) | error | bottleneck predicted |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// A `llama` command's JSON output, its traces read from the calibration's own directory.
fn trace_json(w: &World, args: &[&str]) -> serde_json::Value {
    let out = w
        .llama(args)
        .env("LLAMA_DIR", w.dir.path())
        .output()
        .expect("llama trace");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}
