//! `llama doctor`: checks what the configured backend (or `--backend`'s) needs, and what
//! every backend needs besides, because llamacc always goes through them: the local store,
//! the daemon and the compiler llamacc stands in for.
//!
//! The checks of a backend live with what they check: the lambda ones in llama-aws
//! ([`llama_aws::checks::diagnose`]), the REAPI ones here ([`reapi`]), through the same
//! executor a build uses. Each outcome goes to one [`Report`], which prints it as it comes
//! or, with `--json`, collects them for one JSON object at the end.

mod local;
#[cfg(feature = "reapi")]
mod reapi;

use std::io::{self, Write};

use llama_core::doctor::{Findings, Outcome};
use llama_core::{Backend, Config, Source, keys};
use serde::Serialize;

use crate::cli::DoctorArgs;

/// Runs `llama doctor`: 0 when every check passed, 1 when one found a problem.
pub fn run(config: Config, args: &DoctorArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let configured = config.backend();
    let backend = args.backend.map(Backend::from).unwrap_or(configured);
    let backend_line = backend_outcome(&config, backend);
    let mut config = config;
    if backend != configured {
        config.set(
            keys::BACKEND.name(),
            backend.name(),
            Source::Flag("--backend".into()),
        )?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report::new(out, args.json, backend);
    report.check("backend", backend_line)?;
    let functions = functions(args);
    runtime.block_on(check_backend(&config, backend, &functions, &mut report))?;
    report.check("store", local::store(&config))?;
    report.check("daemon", local::daemon(&config))?;
    report.check("compiler", runtime.block_on(local::compiler(backend)))?;
    let problems = report.finish()?;
    Ok(if problems == 0 { 0 } else { 1 })
}

/// The checks of one backend's own pieces (none for this machine's).
async fn check_backend(
    config: &Config,
    backend: Backend,
    functions: &[String],
    report: &mut Report<'_>,
) -> io::Result<()> {
    match backend {
        Backend::Local => Ok(()),
        #[cfg(feature = "reapi")]
        Backend::Reapi => reapi::diagnose(config, functions, report).await,
        #[cfg(feature = "lambda")]
        Backend::Lambda => {
            let options = llama_aws::checks::DoctorOptions {
                functions: functions.to_vec(),
            };
            llama_aws::checks::diagnose(config, &options, report)
                .await
                .map(drop)
        }
        #[cfg(not(all(feature = "lambda", feature = "reapi")))]
        other => {
            let _ = (config, functions);
            report.check(
                other.name(),
                Outcome::problem(
                    format!("this llama was built without the {} backend", other.name()),
                    format!(
                        "reinstall with it: cargo install --locked --path crates/llama-cli --features {}",
                        other.name()
                    ),
                ),
            )
        }
    }
}

/// Where each backend runs things, and how it is made the configured one.
const BACKENDS: &[(Backend, &str, &str)] = &[
    (Backend::Local, "on this machine", "LLAMA_BACKEND=local"),
    (
        Backend::Lambda,
        "on Lambda",
        "llama bootstrap (it sets backend = lambda), or LLAMA_BACKEND=lambda",
    ),
    (
        Backend::Reapi,
        "on the REAPI server",
        "LLAMA_BACKEND=reapi, or backend = \"reapi\" in the config file",
    ),
];

fn backend_row(backend: Backend) -> (&'static str, &'static str) {
    BACKENDS
        .iter()
        .find(|(b, _, _)| *b == backend)
        .map(|(_, place, fix)| (*place, *fix))
        .unwrap_or(("", ""))
}

/// The configured backend, and a problem when `--backend` asked about another one.
fn backend_outcome(config: &Config, checked: Backend) -> Outcome {
    let configured = config.backend();
    let from = config.source(&keys::BACKEND);
    if configured == checked {
        return Outcome::Ok(format!("{} (from {from})", configured.name()));
    }
    let (here, _) = backend_row(configured);
    let (there, fix) = backend_row(checked);
    Outcome::problem(
        format!(
            "{} (from {from}): commands and compiles run {here}, not {there}",
            configured.name()
        ),
        fix,
    )
}

/// llamacc's function, the one a build needs, then those named with `-f` (invoke and xargs
/// name theirs).
fn functions(args: &DoctorArgs) -> Vec<String> {
    let mut functions = vec![llama_cc::Settings::from_process_env().function];
    for name in &args.functions {
        if !functions.contains(name) {
            functions.push(name.clone());
        }
    }
    functions
}

/// One check as `llama doctor --json` prints it.
#[derive(Debug, Serialize)]
struct Finding {
    name: String,
    /// `ok`, `problem` or `skipped`.
    status: &'static str,
    /// What was found, what is wrong, or why it was not checked.
    detail: String,
    /// The command or step that fixes a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// The whole of `llama doctor --json`.
#[derive(Debug, Serialize)]
struct JsonReport<'a> {
    backend: &'static str,
    problems: usize,
    checks: &'a [Finding],
}

/// The checks' outcomes: printed as they come, or collected for `--json`.
struct Report<'a> {
    out: &'a mut dyn Write,
    json: bool,
    backend: Backend,
    findings: Vec<Finding>,
}

impl<'a> Report<'a> {
    fn new(out: &'a mut dyn Write, json: bool, backend: Backend) -> Report<'a> {
        Report {
            out,
            json,
            backend,
            findings: Vec::new(),
        }
    }

    fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.status == "problem")
            .count()
    }

    /// Writes the summary (or the JSON object); returns the number of problems.
    fn finish(self) -> io::Result<usize> {
        let problems = self.problems();
        if self.json {
            let report = JsonReport {
                backend: self.backend.name(),
                problems,
                checks: &self.findings,
            };
            serde_json::to_writer_pretty(&mut *self.out, &report)?;
            writeln!(self.out)?;
        } else if problems == 0 {
            writeln!(self.out, "everything is in order")?;
        } else {
            writeln!(
                self.out,
                "{problems} problem{} found",
                if problems == 1 { "" } else { "s" }
            )?;
        }
        Ok(problems)
    }
}

impl Findings for Report<'_> {
    fn check(&mut self, name: &str, outcome: Outcome) -> io::Result<()> {
        let (status, detail, fix) = match outcome {
            Outcome::Ok(detail) => ("ok", detail, None),
            Outcome::Skipped(why) => ("skipped", why, None),
            Outcome::Problem { what, fix } => ("problem", what, Some(fix)),
        };
        if !self.json {
            let label = if status == "problem" {
                "PROBLEM"
            } else {
                status
            };
            writeln!(self.out, "{label:<8} {name}: {detail}")?;
            if let Some(fix) = &fix {
                writeln!(self.out, "         fix: {fix}")?;
            }
        }
        self.findings.push(Finding {
            name: name.to_string(),
            status,
            detail,
            fix,
        });
        Ok(())
    }
}
