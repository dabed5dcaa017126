//! The reapi backend end to end: the real `llama` binary against BuildGrid 0.4.4 with
//! PostgreSQL 15 and the Bots-API test worker, all on loopback, started and stopped here
//! (util/harness.rs `ReapiServer`; install them with scripts/install-test-servers).

use std::fs;
use std::process::Command;
use std::time::Instant;

use crate::lambda::{XARGS_JOB, outputs, xargs_inputs};
use crate::lambda_cc::{build_small, counter, fell_back_once, small_project, stats, stop_daemon};
use crate::util::harness::ReapiServer;
use crate::util::{World, run_with_stdin, sha256sum_line, stderr, stdout};

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

/// The original's invoke example: `llama invoke -f INPUT -o OUTPUT FUNCTION sh -c 'sha256sum
/// INPUT > OUTPUT'`.
const INVOKE_EXAMPLE: &[&str] = &[
    "invoke",
    "-logs",
    "-f",
    "INPUT",
    "-o",
    "OUTPUT",
    "gcc",
    "sh",
    "-c",
    "sha256sum INPUT > OUTPUT",
];

#[test]
fn the_originals_invoke_example_then_the_remote_action_cache() {
    let server = ReapiServer::start(1);
    let w = World::new();
    w.write("INPUT", b"hello\n");
    let expected = sha256sum_line(&w.path("INPUT"), "INPUT");

    // On BuildGrid, with a store of its own: one execution.
    let started = Instant::now();
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let mut other = INVOKE_EXAMPLE.to_vec();
    other[6] = "clang";
    let mut cmd = w.llama(&other);
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
    let w = World::new();
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
    let w = World::new();
    let lines = xargs_inputs(&w, 10);

    let local = run_with_stdin(w.llama(XARGS_JOB), &lines);
    assert!(local.status.success(), "{}", stderr(&local));
    let local_outputs = outputs(&w);
    assert_eq!(local_outputs.len(), 10);
    fs::remove_dir_all(w.path("out")).unwrap();

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
    let w = World::new();
    w.write("INPUT", b"hello\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let w = World::new();
    small_project(&w);
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
    assert_eq!(executions(&server), 8, "{}", server.log());
    // The compiler itself (cc1, tens of MB) went up with ByteStream Write: no batch carries
    // a blob over 4 MiB.
    let biggest = crate::util::files_under(&server.cas_dir())
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
    let w = World::new();
    let lines = xargs_inputs(&w, 10);
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
    let local = run_with_stdin(w.llama(XARGS_JOB), &lines);
    assert!(local.status.success(), "{}", stderr(&local));
    let local_outputs = outputs(&w);
    fs::remove_dir_all(w.path("out")).unwrap();

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
    let w = World::new();
    w.write("INPUT", b"hello\n");
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let mut cmd = w.llama(INVOKE_EXAMPLE);
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
    let w = World::new();
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
    for blob in crate::util::files_under(&server.cas_dir())
        .into_iter()
        .chain(crate::util::files_under(&worker_cache))
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
    let w = World::new();
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
    let w = World::new();
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

/// bench/reapi.sh: lua through BuildGrid, the client's CPU, bytes and calls per compile,
/// cold and from a second machine, next to plain gcc. Prints a markdown table.
#[test]
#[ignore = "a benchmark: bench/reapi.sh runs it"]
fn bench_lua_over_reapi() {
    use crate::lambda_cc::{build_corpus, clean_corpus, corpus_tree};
    let server = ReapiServer::start(2);
    let w = World::new();
    let tree = w.dir.path().join("lua");
    corpus_tree("lua", &tree);
    let compiles = 34.0;
    let llamacc = env!("CARGO_BIN_EXE_llamacc");
    let mut rows = Vec::new();

    let before = children_cpu();
    build_corpus(&w, "lua", &tree, ("gcc", "gcc"), &|_| {});
    let gcc = (children_cpu() - before) * 1000.0 / compiles;
    rows.push(format!("| gcc | {gcc:.1} | 1.00 | 0 | 0 | 0 | 0 | 0 |"));

    for (name, n) in [("first", 1), ("second (new LLAMA_DIR)", 2)] {
        clean_corpus("lua", &tree);
        let dir = w.dir.path().join(format!("llama-{n}"));
        let before = children_cpu();
        build_corpus(&w, "lua", &tree, (llamacc, llamacc), &|cmd| {
            client(&server, cmd);
            cmd.env("LLAMA_DIR", &dir)
                .env("LLAMACC_LOCAL_FALLBACK", "0");
        });
        let cpu = (children_cpu() - before + daemon_cpu(&w, &dir)) * 1000.0 / compiles;
        let s = stats(&w, &dir);
        let cost = |k: &str| s["cost"][k].as_f64().unwrap_or(0.0);
        rows.push(format!(
            "| {name} | {cpu:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.0} | {:.0} |",
            cpu / gcc,
            cost("bytes_up") / compiles,
            cost("bytes_down") / compiles,
            cost("calls") / compiles,
            cost("invocations"),
            cost("remote_cache_hits"),
        ));
        stop_daemon(&w, &dir);
    }
    // On a line of its own: the test harness has just printed the test's name.
    println!();
    println!(
        "| lua, -j16, BuildGrid (2 bots) | client CPU ms / compile | × gcc | bytes up / compile | bytes down / compile | calls / compile | executions | remote cache hits |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
