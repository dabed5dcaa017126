//! What the local executor may touch: only its own scratch directory (no following the
//! inputs' symlinks), only dead executors' run directories, and nothing the action started
//! survives its timeout. The real `llama invoke` on the default local executor.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use llama_testkit::{World, stderr};

/// A world whose input directory `d` holds `link`, a symlink to the directory `outside`
/// (beside `work/`), which holds `secret` and `proj/{a,sub/b}`.
fn world_with_outside_link() -> (World, std::path::PathBuf) {
    let w = crate::world();
    let outside = w.dir.path().join("outside");
    fs::create_dir_all(outside.join("proj/sub")).expect("mkdir");
    for f in ["secret", "proj/a", "proj/sub/b"] {
        fs::write(outside.join(f), b"not yours\n").expect("write");
        fs::set_permissions(outside.join(f), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    fs::create_dir(w.path("d")).expect("mkdir d");
    std::os::unix::fs::symlink(&outside, w.path("d/link")).expect("symlink");
    (w, outside)
}

fn assert_mode_and_links(path: &Path, mode: u32) {
    let meta = fs::symlink_metadata(path).expect("still there");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "{} changed mode",
        path.display()
    );
    if meta.is_file() {
        assert_eq!(meta.nlink(), 1, "{} was hard-linked", path.display());
    }
}

fn assert_refused_naming_the_link(out: &std::process::Output) {
    assert!(!out.status.success(), "invoke succeeded: {}", stderr(out));
    assert!(
        stderr(out).contains("symlink \"d/link\""),
        "the error does not name the symlink: {}",
        stderr(out)
    );
}

#[test]
fn r12_an_output_through_an_input_symlink_leaves_the_outside_file_alone() {
    // See: issue 12, defect 3
    let (w, outside) = world_with_outside_link();
    let out = w.run(&["invoke", "-f", "d", "-o", "got:d/link/secret", "fn", "true"]);
    assert_mode_and_links(&outside.join("secret"), 0o644);
    assert_refused_naming_the_link(&out);
}

#[test]
fn r12_an_output_directory_through_an_input_symlink_keeps_its_modes() {
    // See: issue 12, defect 3
    let (w, outside) = world_with_outside_link();
    let out = w.run(&[
        "invoke",
        "-f",
        "d",
        "-o",
        "outdir:d/link/proj",
        "fn",
        "true",
    ]);
    let dir_mode = fs::metadata(outside.join("proj"))
        .expect("proj")
        .permissions()
        .mode()
        & 0o7777;
    assert_mode_and_links(&outside.join("proj"), dir_mode);
    assert_mode_and_links(&outside.join("proj/a"), 0o644);
    assert_mode_and_links(&outside.join("proj/sub/b"), 0o644);
    assert_refused_naming_the_link(&out);
    assert!(!w.path("outdir").exists());
}

#[test]
fn r12_no_directory_is_created_through_an_input_symlink() {
    // See: issue 12, defect 3
    let (w, outside) = world_with_outside_link();
    let out = w.run(&["invoke", "-f", "d", "-o", "x:d/link/newdir/f", "fn", "true"]);
    assert!(
        !outside.join("newdir").exists(),
        "a directory was created outside the action's directory"
    );
    assert_refused_naming_the_link(&out);
}

/// Holds an exclusive flock on `lock` in a separate process (as an executor in another PID
/// namespace would) until killed.
struct LockHolder(Child);

impl LockHolder {
    fn hold(lock: &Path, ready: &Path) -> LockHolder {
        let child = Command::new("flock")
            .arg("-x")
            .arg(lock)
            .arg("-c")
            .arg(format!("touch '{}'; exec sleep 60", ready.display()))
            .spawn()
            .expect("flock(1) from util-linux runs");
        let started = Instant::now();
        while !ready.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "flock never took the lock"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        LockHolder(child)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn r12_a_locked_run_directory_survives_the_sweep() {
    // See: issue 12, defect 7
    let w = crate::world();
    assert!(w.run(&["invoke", "fn", "true"]).status.success());
    // A pid that exists in no namespace here: only the lock says the run is alive.
    let live = w.store().join("work/run-999999999-live");
    fs::create_dir_all(live.join("slot-0/root")).expect("mkdir");
    fs::write(live.join("slot-0/root/in-use"), b"busy\n").expect("write");
    let _holder = LockHolder::hold(&live.join("lock"), &w.dir.path().join("locked"));
    // And a dead one: lock file present, nobody holding it.
    let dead = w.store().join("work/run-999999998-dead");
    fs::create_dir_all(dead.join("slot-0")).expect("mkdir");
    fs::write(dead.join("lock"), b"").expect("write");

    // A command not run before, so it is executed (not served from the action cache) and
    // its executor sweeps.
    let out = w.run(&["invoke", "fn", "sh", "-c", "echo second"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        live.join("slot-0/root/in-use").exists(),
        "a run directory whose lock is held was swept"
    );
    assert!(!dead.exists(), "a run directory nobody holds was kept");
}

#[test]
fn r12_a_setsid_child_dies_with_its_timed_out_action() {
    // See: issue 12, defect 11
    let w = crate::world();
    let pidfile = w.dir.path().join("pidfile");
    let script = format!("setsid sleep 300 & echo $! > '{}'; wait", pidfile.display());
    let out = w
        .llama(&["invoke", "fn", "sh", "-c", &script])
        .env("LLAMA_ACTION_TIMEOUT", "1s")
        .output()
        .expect("spawn llama");
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let pid: i32 = fs::read_to_string(&pidfile)
        .expect("pidfile written")
        .trim()
        .parse()
        .expect("a pid");
    let started = Instant::now();
    while running(pid) && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let survived = running(pid);
    if survived {
        // SAFETY: kill(2) of the test's own stray sleep; no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    assert!(
        !survived,
        "the setsid child {pid} outlived its action's timeout"
    );
}

/// True while `pid` exists and is not a zombie (a killed orphan may wait for a reaper).
fn running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
