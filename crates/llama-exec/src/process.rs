//! Running a program on this machine outside any action: the compiler when llamacc compiles
//! in place, and probes of a compiler's identity. Output is captured whole (compiler
//! diagnostics and version strings are small).

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
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

/// Runs `command` to completion (killing its process group after `timeout`), capturing
/// its output. Fails only when the program cannot be started.
///
/// # Cancel safety
///
/// Dropping the future kills the program.
pub async fn run_host(command: &HostCommand, timeout: Duration) -> io::Result<HostOutput> {
    let mut cmd = tokio::process::Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(mask) = command.umask {
        // SAFETY: umask(2) is async-signal-safe and only changes the child's own mask.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(mask as libc::mode_t);
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    let group = crate::local::GroupKiller(child.id());
    let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
    drop(group);
    match waited {
        Ok(output) => {
            let output = output?;
            let status = output.status;
            let termination = match (status.code(), status.signal()) {
                (Some(code), _) => Termination::Exited(code),
                (None, Some(sig)) => Termination::Signaled(sig),
                (None, None) => Termination::Exited(-1),
            };
            Ok(HostOutput {
                termination,
                stdout: output.stdout,
                stderr: output.stderr,
            })
        }
        Err(_) => Ok(HostOutput {
            termination: Termination::TimedOut(timeout),
            stdout: Vec::new(),
            stderr: Vec::new(),
        }),
    }
}
