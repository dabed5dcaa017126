//! Starting processes on this machine. [`spawn`] is the one place llama-exec starts a
//! process (an action's command in the local executor, and [`run_host`]), so a process is
//! always started the same way (its own environment only, its own process group, killed on
//! drop) and tests can inject faults at one seam.
//!
//! [`run_host`] runs a program outside any action: the compiler when llamacc compiles in
//! place, and probes of a compiler's identity. Output is captured whole (compiler
//! diagnostics and version strings are small).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::executor::Termination;

/// A program with its arguments, directory and complete environment.
#[derive(Debug, Clone)]
pub struct HostCommand {
    /// The program: a path, or a name looked up in `PATH` of `env`.
    pub program: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The whole environment of the child (nothing is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// File-creation mask for the child, so files it writes get the caller's permissions.
    pub umask: Option<u32>,
}

/// What a [`HostCommand`] did.
#[derive(Debug, Clone)]
pub struct HostOutput {
    /// How it ended.
    pub termination: Termination,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// One process to start, as [`spawn`] takes it.
pub(crate) struct Spawn<'a> {
    /// The program's path (or a name looked up in this process's `PATH`).
    pub(crate) program: &'a Path,
    /// The name the program sees as `argv[0]`, when not `program`.
    pub(crate) arg0: Option<&'a OsStr>,
    /// Arguments after `argv[0]`.
    pub(crate) args: &'a [OsString],
    /// The whole environment of the child (nothing is inherited).
    pub(crate) env: Vec<(&'a OsStr, &'a OsStr)>,
    /// Working directory.
    pub(crate) cwd: &'a Path,
    /// Standard input.
    pub(crate) stdin: Stdio,
    /// Standard output.
    pub(crate) stdout: Stdio,
    /// Standard error.
    pub(crate) stderr: Stdio,
    /// File-creation mask for the child, when it must not inherit ours.
    pub(crate) umask: Option<u32>,
}

/// Starts a process: with its own environment only, in a process group of its own (so the
/// whole group can be killed on timeout or cancellation), killed if the returned child is
/// dropped. The caller makes a [`GroupKiller`] for it at once.
pub(crate) fn spawn(spec: Spawn<'_>) -> io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(spec.program);
    if let Some(arg0) = spec.arg0 {
        cmd.arg0(arg0);
    }
    cmd.args(spec.args)
        .env_clear()
        .envs(spec.env)
        .current_dir(spec.cwd)
        .stdin(spec.stdin)
        .stdout(spec.stdout)
        .stderr(spec.stderr)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(mask) = spec.umask {
        // SAFETY: umask(2) is async-signal-safe and only changes the child's own mask.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
    }
    cmd.spawn()
}

/// Runs `command` to completion (killing its process group after `timeout`), capturing
/// its output. Fails only when the program cannot be started.
///
/// # Cancel safety
///
/// Dropping the future kills the program.
pub async fn run_host(command: &HostCommand, timeout: Duration) -> io::Result<HostOutput> {
    let mut child = spawn(Spawn {
        program: &command.program,
        arg0: None,
        args: &command.args,
        env: command
            .env
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
            .collect(),
        cwd: &command.cwd,
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        umask: command.umask,
    })?;
    // Declared after the child so that, if this future is dropped, the tree is killed
    // while the child is still unreaped (its pid still ours).
    let mut group = GroupKiller::new(child.id());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let waited = tokio::time::timeout(timeout, async {
        let (out, err, status) = tokio::join!(
            read_all(stdout.as_mut()),
            read_all(stderr.as_mut()),
            child.wait()
        );
        Ok::<_, io::Error>((out?, err?, status?))
    })
    .await;
    if waited.is_ok() {
        group.reaped();
    }
    drop(group);
    match waited {
        Ok(output) => {
            let (stdout, stderr, status) = output?;
            let termination = match (status.code(), status.signal()) {
                (Some(code), _) => Termination::Exited(code),
                (None, Some(sig)) => Termination::Signaled(sig),
                (None, None) => Termination::Exited(-1),
            };
            Ok(HostOutput {
                termination,
                stdout,
                stderr,
            })
        }
        Err(_) => {
            let _ = child.wait().await;
            Ok(HostOutput {
                termination: Termination::TimedOut(timeout),
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        }
    }
}

async fn read_all(pipe: Option<&mut (impl tokio::io::AsyncRead + Unpin)>) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut data = Vec::new();
    if let Some(pipe) = pipe {
        pipe.read_to_end(&mut data).await?;
    }
    Ok(data)
}

/// Kills a child's process group when dropped, and, unless the child was waited for, every
/// process descended from it (a descendant that called `setsid` is in no group of ours).
pub(crate) struct GroupKiller {
    pid: Option<i32>,
    reaped: bool,
}

impl GroupKiller {
    pub(crate) fn new(pid: Option<u32>) -> GroupKiller {
        GroupKiller {
            pid: pid.and_then(|p| i32::try_from(p).ok()),
            reaped: false,
        }
    }

    /// The child was waited for: its pid may be reused by now, so only its group (which
    /// outlives it while any member lives) is still safe to signal.
    pub(crate) fn reaped(&mut self) {
        self.reaped = true;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            if !self.reaped {
                kill_tree(pid);
            }
            // SAFETY: kill(2) with a negative pid signals the process group the child
            // leads; it has no memory effects. ESRCH (already gone) is the common outcome.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Kills `root` and every process descended from it, including those that left its process
/// group (`setsid`, `setpgid`), which a group kill misses.
///
/// `root` must be a child of this process not yet waited for, so its pid cannot have been
/// reused. Descendants are found through the parent pids in `/proc`; each is stopped before
/// anything is killed, so none can fork a new one or be orphaned (and reparented out of
/// reach) while the tree is read. A descendant whose parent exited before this call is
/// already out of reach.
pub(crate) fn kill_tree(root: i32) {
    let mut stopped: Vec<i32> = Vec::new();
    // Each pass stops what it finds; the tree can only grow by a fork that raced the stop,
    // so a few passes reach a fixed point.
    for _ in 0..16 {
        let found: Vec<i32> = descendants(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if found.is_empty() {
            break;
        }
        for &pid in &found {
            // SAFETY: kill(2) only sends a signal; a pid already gone gives ESRCH.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
            }
        }
        stopped.extend(found);
    }
    for &pid in stopped.iter().chain(std::iter::once(&root)) {
        // SAFETY: as above. SIGKILL ends a stopped process too.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The pids whose chain of parents leads to `root` (not `root` itself), read from `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(i32, i32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(pid, ppid)| ppid == parent && !tree.contains(&pid))
                .map(|&(pid, _)| pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    tree.remove(0);
    tree
}

/// The parent pid from `/proc/PID/stat`, whose second field (the command name, in
/// parentheses) may itself contain spaces and parentheses.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}
