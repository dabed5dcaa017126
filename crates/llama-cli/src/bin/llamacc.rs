//! `llamacc` and `llamac++`: drop-in gcc/clang through llama's cache. As thin as possible:
//! it sends the compile to the per-user daemon (starting `llama daemon run` if none
//! answers) and either prints the result or becomes the real compiler. It uses only the
//! daemon protocol and client of `llama_cc` and the config loader of `llama_core` — never
//! the compile service, an executor or the `llama_cli` library — so a compile pays for a
//! small binary's start-up, not for the whole of llama's.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::Duration;

use llama_cc::Settings;
use llama_cc::client::{self, DaemonPaths};
use llama_cc::launcher::{self, Invocation};
use llama_cc::protocol::{CompileReply, CompileRequest, Request, Response};
use llama_core::Config;

/// How long a client waits for a daemon it started to answer.
const START_WAIT: Duration = Duration::from_secs(10);

/// `llamacc` / `llamac++`, as a launcher (`llamacc gcc ...`) or through a link named like a
/// compiler.
pub fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    let cwd = std::env::current_dir();
    let path = std::env::var_os("PATH");
    let ctx = launcher::Context {
        path: path.as_deref(),
        cwd: cwd.as_deref().unwrap_or(std::path::Path::new(".")),
        this: launcher::this_executable(),
    };
    let invocation = match launcher::resolve(&argv0, args, &ctx) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("llamacc: {e}");
            return ExitCode::from(127);
        }
    };
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let settings = Settings::from_env(env.iter().map(|(k, v)| (k, v)));
    let Invocation {
        compiler,
        cxx,
        args,
    } = invocation;
    let named: Option<OsString> = compiler.map(OsString::from);
    let program = named
        .clone()
        .unwrap_or_else(|| settings.compiler(cxx).into());
    let run_directly =
        |args: Vec<OsString>| exec_compiler(program.clone(), settings.filter_args(args), &ctx);
    if settings.local {
        return run_directly(args);
    }
    let config = match Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("llamacc: warning: {e}; running the compiler directly");
            return run_directly(args);
        }
    };
    let paths = DaemonPaths::new(&config.dir());
    let cwd = match &cwd {
        Ok(d) => d.clone(),
        Err(e) => {
            eprintln!(
                "llamacc: warning: cannot read the current directory ({e}); running the compiler directly"
            );
            return run_directly(args);
        }
    };
    let msg = Request::Compile(CompileRequest {
        cxx,
        compiler: named,
        args: args.clone(),
        cwd,
        env: compile_env(env),
        umask: current_umask(),
    });
    // Twice: a daemon that is missing, stale or killed mid-compile is replaced once. No
    // safe place for its socket: no daemon at all (whoever listens there is not ours).
    let mut last_error = paths.socket.as_ref().err().map(|e| {
        format!(
            "no safe place for the llama daemon's socket (LLAMA_DIR {} is too long to hold it): {e}, or use a shorter LLAMA_DIR",
            paths.dir.display()
        )
    });
    let tries = if last_error.is_some() { 0 } else { 2 };
    for _ in 0..tries {
        match client::request(&paths, &msg) {
            Ok(Response::Compiled(CompileReply::Done {
                exit_code,
                stdout,
                stderr,
                notes,
                ..
            })) => return print_done(exit_code, &stdout, &stderr, notes),
            Ok(Response::Compiled(CompileReply::RunLocally {
                program,
                args,
                notes,
                ..
            })) => {
                for note in notes {
                    eprintln!("{note}");
                }
                return exec_compiler(program, args, &ctx);
            }
            Ok(Response::VersionMismatch { .. }) => {
                // The old daemon is exiting; wait for it to go, then start ours.
                for _ in 0..500 {
                    if client::connect(&paths).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                last_error = Some("the running daemon is a different version".to_string());
                start_daemon(&paths, &mut last_error);
            }
            Ok(other) => {
                last_error = Some(format!("unexpected answer from the daemon: {other:?}"));
                break;
            }
            Err(e) => {
                last_error = Some(format!("daemon on {}: {e}", paths.socket_display()));
                start_daemon(&paths, &mut last_error);
            }
        }
    }
    // Said once per store and hour, not once per file of the build.
    if first_warning_for(&paths) {
        eprintln!(
            "llamacc: warning: {}; running the compiler directly, without the cache, until this is fixed (see {}; said once an hour)",
            last_error.unwrap_or_else(|| "no daemon".into()),
            paths.log.display()
        );
    }
    run_directly(args)
}

/// Prints a compile's notes, output and diagnostics as the compiler would have, and gives
/// its exit status.
fn print_done(exit_code: i32, stdout: &[u8], stderr: &[u8], notes: Vec<String>) -> ExitCode {
    for note in notes {
        eprintln!("{note}");
    }
    let _ = io::stdout().write_all(stdout);
    let _ = io::stdout().flush();
    let _ = io::stderr().write_all(stderr);
    ExitCode::from(exit_code.clamp(0, 255) as u8)
}

/// How long a fallback warning stays said.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The part of llamacc's environment a compile can depend on: what the daemon receives.
/// Secrets in the build's environment stay here.
fn compile_env(env: Vec<(OsString, OsString)>) -> Vec<(OsString, OsString)> {
    env.into_iter()
        .filter(|(k, _)| llama_cc::needed_by_compile(k))
        .collect()
}

/// True for the first caller in [`WARN_EVERY`] to fall back for this store: a marker file
/// records that the warning was given, in the private runtime directory, else (when that
/// is what is refused) in the store directory (the store itself may be what is broken).
/// Nowhere to record it: said every time rather than never.
fn first_warning_for(paths: &DaemonPaths) -> bool {
    let key = llama_core::Digest::of_bytes(paths.dir.as_os_str().as_bytes());
    let name = format!("warned-{}", &key.hex()[..16]);
    let runtime = client::private_runtime_dir().ok();
    // Made only when the runtime directory is refused: the user chose this directory.
    let store = std::iter::once(()).filter_map(|()| {
        std::fs::create_dir_all(&paths.dir)
            .ok()
            .map(|()| paths.dir.clone())
    });
    for dir in runtime.into_iter().chain(store) {
        if let Ok(first) = claim_marker(&dir.join(&name)) {
            return first;
        }
    }
    true
}

/// Ok(true) when this caller creates `marker` (none, or one older than [`WARN_EVERY`]);
/// Ok(false) when a recent one exists. Never written through a link: anything but a plain
/// file there is removed and the marker made afresh with `O_EXCL|O_NOFOLLOW`.
fn claim_marker(marker: &std::path::Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::symlink_metadata(marker) {
        Ok(m)
            if m.file_type().is_file()
                && m.modified()
                    .is_ok_and(|t| t.elapsed().unwrap_or(WARN_EVERY) < WARN_EVERY) =>
        {
            return Ok(false);
        }
        Ok(_) => std::fs::remove_file(marker)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(marker)
    {
        Ok(_) => Ok(true),
        // Another compile said it a moment ago.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn start_daemon(paths: &DaemonPaths, last_error: &mut Option<String>) {
    if let Err(e) = client::spawn_and_wait(&client::llama_binary(), paths, &[], START_WAIT) {
        *last_error = Some(format!("cannot start the llama daemon: {e}"));
    }
}

/// Replaces this process with the compiler, so its messages and exit status are exactly
/// its own. Fails only when it cannot be started, as a shell reports it. A bare name is
/// looked up past links to llamacc, and llamacc itself is refused: it would start itself
/// again for ever.
fn exec_compiler(program: OsString, args: Vec<OsString>, ctx: &launcher::Context<'_>) -> ExitCode {
    let failed = |code: u8, why: String| {
        eprintln!(
            "llamacc: {}: {why} (set LLAMACC_LOCAL_CC / LLAMACC_LOCAL_CXX to the compiler to use)",
            program.to_string_lossy()
        );
        ExitCode::from(code)
    };
    let real = match launcher::real_compiler(&program, ctx) {
        Ok(real) => real,
        Err(launcher::NotACompiler::NotFound) => return failed(127, "command not found".into()),
        Err(e @ launcher::NotACompiler::Llamacc) => {
            eprintln!("llamacc: {}: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    // argv[0] stays as spelled: gcc finds its own parts through /proc/self/exe, and a
    // compiler whose behaviour depends on its name sees the name it was given.
    let err = std::process::Command::new(&real)
        .arg0(&program)
        .args(&args)
        .exec();
    let code = match err.kind() {
        io::ErrorKind::NotFound => 127,
        _ => 126,
    };
    failed(code, err.to_string())
}

fn current_umask() -> u32 {
    // SAFETY: umask(2) cannot fail; it is read by setting and restoring it, and llamacc is
    // single-threaded.
    unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m as u32
    }
}
