//! The daemon and its client against a hostile local user and hostile clients: where the
//! socket lives, what llamacc sends, and what a connection can cost the daemon. Another
//! user is simulated as root: a directory of another mode or owner, bind-mounted (in a
//! private mount namespace of llamacc alone) where llamacc looks for its daemon.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use llama_cc::protocol::{self, CompileReply, CompileRequest, Request, Response};

use llama_testkit::{World, stderr, stdout};

const SOURCE: &[u8] = b"int answer(void) { return 42; }\n";

fn ok(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// `gcc ARGS` in the world's work directory: the object llamacc must match.
fn plain_gcc(w: &World, args: &[&str]) -> Vec<u8> {
    let out = Command::new("gcc")
        .args(args)
        .current_dir(w.work())
        .output()
        .expect("gcc");
    ok(&out);
    fs::read(w.path("plain.o")).expect("plain.o")
}

/// The socket name llamacc uses for a store whose `daemon.sock` would be too long.
fn fallback_socket_name(store: &Path) -> String {
    let digest = llama_core::Digest::of_bytes(store.as_os_str().as_encoded_bytes());
    format!("{}.sock", &digest.hex()[..16])
}

/// A listener posing as the daemon on `socket`: it records every compile it is sent and
/// answers it with `answer`. Stops when dropped.
struct FakeDaemon {
    seen: Arc<Mutex<Vec<CompileRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn listen(socket: &Path, answer: fn() -> Response) -> FakeDaemon {
        let listener = UnixListener::bind(socket).expect("bind the fake daemon");
        listener.set_nonblocking(true).expect("nonblocking");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut conn, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    if let Ok((_, Request::Compile(msg))) =
                        protocol::read_frame::<Request>(&mut conn)
                    {
                        seen.lock().expect("seen").push(msg);
                        let _ = protocol::write_frame(&mut conn, &answer());
                    }
                }
            })
        };
        FakeDaemon {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn compiles(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What an attacker answers: a program of its choosing, here one that creates the file
/// `$R12_WITNESS` names.
fn run_the_attackers_program() -> Response {
    Response::Compiled(CompileReply::RunLocally {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "touch \"$R12_WITNESS\"".into()],
        reason: "attacker".into(),
        notes: Vec::new(),
    })
}

/// Runs `cmd` with `over` bind-mounted on `target`, in a mount namespace of its own: what
/// llamacc then sees at `target` is what another user would have made there.
fn with_mount_over(cmd: &mut Command, over: &Path, target: &Path) {
    let over = CString::new(over.as_os_str().as_encoded_bytes()).expect("no NUL");
    let target = CString::new(target.as_os_str().as_encoded_bytes()).expect("no NUL");
    let root = CString::new("/").expect("no NUL");
    // SAFETY: only syscalls between fork and exec, on strings made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                || libc::mount(
                    over.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

// See: issue 12, defect 1
#[test]
fn r12_a_socket_directory_someone_else_made_is_refused() {
    if uid() != 0 {
        eprintln!("skipped: simulating another user needs root (mount namespaces, chown)");
        return;
    }
    let w = crate::world();
    w.write("a.c", SOURCE);
    let want = plain_gcc(&w, &["-c", "a.c", "-o", "plain.o"]);
    // Where llamacc looks when LLAMA_DIR is too long; in the parent namespace it is only
    // the mount point, made private as llama would make it.
    let fallback = PathBuf::from(format!("/tmp/llama-{}", uid()));
    if let Err(e) = fs::DirBuilder::new().mode(0o700).create(&fallback) {
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
    }
    // World-writable, or another user's.
    let variants: [(&str, u32, u32); 2] = [("mode-0777", 0o777, 0), ("uid-65534", 0o700, 65534)];
    for (name, mode, owner) in variants {
        let hostile = w.dir.path().join(name);
        fs::create_dir(&hostile).expect("mkdir");
        let store = w.dir.path().join(format!("{name}-{}", "s".repeat(100)));
        let fake = FakeDaemon::listen(
            &hostile.join(fallback_socket_name(&store)),
            run_the_attackers_program,
        );
        fs::set_permissions(&hostile, fs::Permissions::from_mode(mode)).expect("chmod");
        std::os::unix::fs::chown(&hostile, Some(owner), None).expect("chown");
        let witness = w.dir.path().join(format!("{name}-witness"));
        let compile = || {
            let _ = fs::remove_file(w.path("a.o"));
            let mut cmd = w.llamacc("gcc", &["-c", "a.c", "-o", "a.o"]);
            cmd.env("LLAMA_DIR", &store).env("R12_WITNESS", &witness);
            with_mount_over(&mut cmd, &hostile, &fallback);
            cmd.output().expect("llamacc")
        };
        let first = compile();
        assert!(
            !witness.exists(),
            "{name}: llamacc ran the program a listener in {} chose",
            fallback.display()
        );
        assert_eq!(fake.compiles(), 0, "{name}: llamacc sent its compile there");
        ok(&first);
        assert_eq!(fs::read(w.path("a.o")).expect("a.o"), want, "{name}");
        let said = stderr(&first);
        assert!(
            said.contains(&fallback.display().to_string()) && said.contains("XDG_RUNTIME_DIR"),
            "{name}: the message names the directory and what to do: {said}"
        );
        let second = compile();
        ok(&second);
        assert_eq!(fs::read(w.path("a.o")).expect("a.o"), want, "{name}");
        assert_eq!(stderr(&second), "", "{name}: said once, not once per file");
    }
}

// See: issue 12, defect 1
#[test]
fn r12_a_planted_warning_marker_link_is_not_written_through() {
    let w = crate::world();
    w.write("a.c", SOURCE);
    let victim = w.dir.path().join("victim");
    fs::write(&victim, b"precious").expect("write");
    // Old enough that a marker read through the link counts as stale and is rewritten.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&victim)
        .and_then(|f| f.set_modified(two_hours_ago))
        .expect("age the victim");
    // A store that cannot be created, so llamacc falls back and marks the warning given.
    let blocker = w.dir.path().join("not-a-dir");
    fs::write(&blocker, b"").expect("write");
    let store = blocker.join("store");
    let key = llama_core::Digest::of_bytes(store.as_os_str().as_encoded_bytes());
    let marker = format!("warned-{}", &key.hex()[..16]);
    // The link, wherever llamacc keeps markers: its private runtime directory (here under
    // XDG_RUNTIME_DIR), and the temporary directory earlier versions used.
    let runtime = w.dir.path().join("run");
    let tmp = w.dir.path().join("tmp");
    for dir in [runtime.join("llama"), tmp.join(format!("llama-{}", uid()))] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .expect("mkdir");
        std::os::unix::fs::symlink(&victim, dir.join(&marker)).expect("plant the link");
    }
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod");
    let out = w
        .llamacc("gcc", &["-c", "a.c"])
        .env("LLAMA_DIR", &store)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("TMPDIR", &tmp)
        .output()
        .expect("llamacc");
    ok(&out);
    assert!(w.path("a.o").exists());
    assert_eq!(
        fs::read(&victim).expect("victim"),
        b"precious",
        "the marker was written through the planted link"
    );
    assert!(
        stderr(&out).contains("running the compiler directly"),
        "a link is no proof the warning was given: {}",
        stderr(&out)
    );
    let made = fs::symlink_metadata(runtime.join("llama").join(&marker)).expect("marker");
    assert!(made.file_type().is_file(), "the marker is a plain file now");
}

// See: issue 12, defect 1
#[test]
fn r12_the_daemon_receives_only_the_environment_a_compile_needs() {
    let w = crate::world();
    w.write("a.c", SOURCE);
    fs::create_dir_all(w.store()).expect("mkdir store");
    fn compile_here() -> Response {
        Response::Compiled(CompileReply::RunLocally {
            program: "gcc".into(),
            args: ["-c", "a.c", "-o", "a.o"].iter().map(Into::into).collect(),
            reason: "test".into(),
            notes: Vec::new(),
        })
    }
    let fake = FakeDaemon::listen(&w.store().join("daemon.sock"), compile_here);
    let out = w
        .llamacc("gcc", &["-c", "a.c", "-o", "a.o"])
        .env("AWS_SECRET_ACCESS_KEY", "r12-secret-key")
        .env("AWS_SESSION_TOKEN", "r12-session-token")
        .env("GITHUB_TOKEN", "r12-github-token")
        .env("PWD", w.work())
        .env("CPATH", "/r12/include")
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", "1")
        .env("DEPENDENCIES_OUTPUT", "r12.d")
        .output()
        .expect("llamacc");
    ok(&out);
    assert!(w.path("a.o").exists());
    let seen = fake.seen.lock().expect("seen");
    let [msg] = &seen[..] else {
        panic!("the fake daemon saw {} compiles", seen.len())
    };
    let names: Vec<String> = msg
        .env
        .iter()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    let sent = |secret: &str| {
        msg.env
            .iter()
            .flat_map(|(k, v)| [k.as_os_str(), v.as_os_str()])
            .chain(std::iter::once(msg.cwd.as_os_str()))
            .chain(msg.args.iter().map(|a| a.as_os_str()))
            .any(|b| {
                b.as_encoded_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes())
            })
    };
    for secret in ["r12-secret-key", "r12-session-token", "r12-github-token"] {
        assert!(!sent(secret), "{secret} was sent: {names:?}");
    }
    for needed in [
        "PATH",
        "PWD",
        "LLAMACC_LOCAL_CC",
        "CPATH",
        "LC_ALL",
        "SOURCE_DATE_EPOCH",
        "DEPENDENCIES_OUTPUT",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "{needed} not sent: {names:?}"
        );
    }
}

/// The pid `llama daemon status` reports.
fn daemon_pid(w: &World) -> u32 {
    let status = w.run(&["daemon", "status"]);
    ok(&status);
    stdout(&status)
        .lines()
        .find_map(|l| l.trim().strip_prefix("pid"))
        .and_then(|p| p.trim().parse().ok())
        .expect("daemon pid")
}

/// A process's virtual memory size, in bytes.
fn vm_size(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmSize")
        * 1024
}

/// A frame header claiming `len` bytes of payload.
fn header(len: u32) -> Vec<u8> {
    let mut h = b"LLMA".to_vec();
    h.extend_from_slice(&protocol::PROTOCOL_VERSION.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

/// How long until the daemon closes `conn` (a bound past which it is a failure).
fn closed_within(conn: &mut UnixStream, bound: Duration) -> Duration {
    let started = Instant::now();
    conn.set_read_timeout(Some(bound)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return started.elapsed();
            }
            Err(e) => panic!(
                "the daemon kept the connection open for {:?}: {e}",
                started.elapsed()
            ),
        }
    }
}

// See: issue 12, defect 9
#[test]
fn r12_an_idle_connection_delays_neither_stop_nor_the_next_compile() {
    let w = crate::world();
    w.write("a.c", SOURCE);
    let want = plain_gcc(&w, &["-c", "a.c", "-o", "plain.o"]);
    ok(&w.run(&["daemon", "start"]));
    let socket = w.store().join("daemon.sock");
    let _idle = UnixStream::connect(&socket).expect("connect");
    let mut half = UnixStream::connect(&socket).expect("connect");
    half.write_all(b"LLMA").expect("half a header");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let stop = w
        .llama(&["daemon", "stop"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("llama daemon stop");
    std::thread::sleep(Duration::from_millis(300));
    let compile = w
        .llamacc("gcc", &["-c", "a.c", "-o", "a.o"])
        .output()
        .expect("llamacc");
    let compiled_after = started.elapsed();
    let stopped = stop.wait_with_output().expect("wait");
    let stopped_after = started.elapsed();
    ok(&stopped);
    ok(&compile);
    assert!(
        stopped_after < Duration::from_secs(15),
        "`llama daemon stop` took {stopped_after:?} with an idle client connected"
    );
    assert!(
        compiled_after < Duration::from_secs(15),
        "a compile during the stop took {compiled_after:?}"
    );
    assert_eq!(fs::read(w.path("a.o")).expect("a.o"), want);
}

// See: issue 12, defect 9
#[test]
fn r12_a_lying_frame_header_neither_allocates_nor_hangs_the_daemon() {
    let w = crate::world();
    w.write("a.c", SOURCE);
    let want = plain_gcc(&w, &["-c", "a.c", "-o", "plain.o"]);
    ok(&w.run(&["daemon", "start"]));
    let pid = daemon_pid(&w);
    let before = vm_size(pid);
    let socket = w.store().join("daemon.sock");
    // Four claims of 256 MiB each, held open at once, then one within a request's bound
    // that never sends its payload.
    let mut liars: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut c = UnixStream::connect(&socket).expect("connect");
            c.write_all(&header(256 << 20)).expect("header");
            c
        })
        .collect();
    let mut stalled = UnixStream::connect(&socket).expect("connect");
    stalled.write_all(&header(1 << 20)).expect("header");
    stalled.write_all(b"0123456789").expect("a little payload");
    std::thread::sleep(Duration::from_millis(500));
    let grown = vm_size(pid).saturating_sub(before);
    assert!(
        grown < 256 << 20,
        "the daemon's address space grew by {} MiB for frames that never came",
        grown >> 20
    );
    for liar in &mut liars {
        let t = closed_within(liar, Duration::from_secs(10));
        assert!(t < Duration::from_secs(10), "{t:?}");
    }
    let t = closed_within(&mut stalled, Duration::from_secs(15));
    assert!(t < Duration::from_secs(15), "{t:?}");
    // The daemon still serves, the same one.
    let out = w
        .llamacc("gcc", &["-c", "a.c", "-o", "a.o"])
        .output()
        .expect("llamacc");
    ok(&out);
    assert_eq!(fs::read(w.path("a.o")).expect("a.o"), want);
    assert_eq!(daemon_pid(&w), pid, "the daemon was replaced");
}
