//! `llama doctor`: llama-aws's [`checks::diagnose`] of the lambda backend, then the check
//! that needs no AWS (which compiler llamacc ships), then the summary.

use std::io::Write;

use llama_aws::checks::{self, Checked, DoctorOptions, Outcome, Report};
use llama_core::Config;

use crate::cli::DoctorArgs;

/// Runs `llama doctor`: 0 when every check passed, 1 when one found a problem.
pub fn run(config: &Config, args: &DoctorArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report::new(out);
    let checked = runtime.block_on(checks::diagnose(config, &options(args), &mut report))?;
    match checked {
        Checked::All => report.check("compiler", compiler())?,
        Checked::Stopped => {}
    }
    let problems = report.finish()?;
    Ok(if problems == 0 { 0 } else { 1 })
}

/// llamacc's function, the one a build needs, then those named with `-f` (invoke and xargs
/// name theirs).
fn options(args: &DoctorArgs) -> DoctorOptions {
    let mut functions = vec![llama_cc::Settings::from_process_env().function];
    for name in &args.functions {
        if !functions.contains(name) {
            functions.push(name.clone());
        }
    }
    DoctorOptions { functions }
}

/// What a remote compile runs: llamacc ships this machine's compiler with each compile.
fn compiler() -> Outcome {
    let path = std::env::var_os("PATH");
    let Some(gcc) = llama_exec::find_program("gcc".as_ref(), path.as_deref(), "/".as_ref()) else {
        return Outcome::Problem {
            what: "no gcc on PATH: llamacc has nothing to ship".into(),
            fix: "install gcc (e.g. apt-get install gcc)".into(),
        };
    };
    let version = std::process::Command::new(&gcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into());
    Outcome::Ok(format!(
        "{} ({version}): llamacc ships it, with cc1 and as, to the function with each compile, \
         so remote objects match local ones; clang compiles run locally",
        gcc.display()
    ))
}
