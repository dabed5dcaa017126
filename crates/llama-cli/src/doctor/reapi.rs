//! The reapi backend's checks: the settings, the server's answer to `GetCapabilities`
//! (reachable, the instance known, SHA-256, execution enabled), and a round trip of one small
//! action per function through the same executor a build uses: its input uploaded, executed
//! with the function's platform properties, its output downloaded and compared.

use std::io;
use std::time::Duration;

use llama_core::doctor::{Findings, Outcome};
use llama_core::{ActionSpec, Config, FUNCTION_PROPERTY, Store, TreeBuilder};
use llama_exec::{Executor, ReapiExecutor, Termination};

/// How long the round trip may take: a cluster may queue the action behind others, or have
/// no worker for its platform, which is worth saying rather than waiting on.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(120);

/// What the round trip sends and expects back.
const PROBE_INPUT: &[u8] = b"llama doctor round trip\n";

/// Checks the endpoint setting, the server and a round trip per function.
pub(super) async fn diagnose(
    config: &Config,
    functions: &[String],
    report: &mut dyn Findings,
) -> io::Result<()> {
    let settings = match crate::context::reapi_config(config) {
        Ok(settings) => settings,
        Err(e) => {
            report.check(
                "settings",
                Outcome::problem(
                    format!("{e:#}"),
                    format!(
                        "set what the message names, in the environment or in {}",
                        Config::file_path().display()
                    ),
                ),
            )?;
            return report.check(
                "the rest",
                Outcome::Skipped("no usable server settings".into()),
            );
        }
    };
    let endpoint = settings.endpoint.clone();
    let instance = settings.instance.clone();
    // The round trip's results go to a scratch store: doctor leaves the user's alone.
    let scratch = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return report.check(
                "server",
                Outcome::problem(format!("a scratch directory: {e}"), "check TMPDIR"),
            );
        }
    };
    let store = match Store::open(scratch.path(), 1 << 30) {
        Ok(store) => store,
        Err(e) => {
            return report.check(
                "server",
                Outcome::problem(format!("a scratch store: {e}"), "check TMPDIR"),
            );
        }
    };
    let executor = ReapiExecutor::new(store.clone(), settings);
    let server = format!("server {endpoint}");
    match executor.server_info().await {
        Ok(info) => report.check(
            &server,
            Outcome::Ok(format!("instance {instance:?}: {info}")),
        )?,
        Err(e) => {
            report.check(&server, Outcome::problem(e.to_string(), fix()))?;
            return report.check(
                "round trip",
                Outcome::Skipped("the server did not answer".into()),
            );
        }
    }
    for function in functions {
        let outcome = round_trip(&executor, &store, function).await;
        report.check(&format!("round trip {function}"), outcome)?;
    }
    Ok(())
}

/// What to set when the server cannot be used.
fn fix() -> String {
    format!(
        "check that the server is up, and the settings the message names: reapi_endpoint, \
         reapi_instance, reapi_headers, reapi_ca, reapi_client_cert (LLAMA_REAPI_*, or in {})",
        Config::file_path().display()
    )
}

/// One action for `function`: ships a file, copies it with `/bin/sh`, brings the copy back.
async fn round_trip(executor: &ReapiExecutor, store: &Store, function: &str) -> Outcome {
    let platform_fix = "the function's platform properties (reapi_platform) must match a worker \
                        of the server: see the message above";
    let mut tree = TreeBuilder::new();
    if let Err(e) = tree.add_bytes(PROBE_INPUT.into(), "in.txt", false) {
        return Outcome::problem(format!("building the action: {e}"), "report this as a bug");
    }
    let spec = ActionSpec {
        arguments: ["/bin/sh", "-c", "cat in.txt > out.txt"]
            .map(String::from)
            .to_vec(),
        output_paths: vec!["out.txt".into()],
        platform: vec![(FUNCTION_PROPERTY.into(), function.into())],
        timeout: Some(ROUND_TRIP_TIMEOUT),
        // Executed every time: a result from the server's cache would prove no worker runs.
        do_not_cache: true,
        ..Default::default()
    };
    let action = match spec.prepare(tree.build()) {
        Ok(action) => action,
        Err(e) => {
            return Outcome::problem(format!("building the action: {e}"), "report this as a bug");
        }
    };
    let outcome = match tokio::time::timeout(ROUND_TRIP_TIMEOUT, executor.execute(&action)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Outcome::problem(e.to_string(), platform_fix),
        Err(_) => {
            return Outcome::problem(
                format!(
                    "no result within {}s: the server queued the action and no worker took it",
                    ROUND_TRIP_TIMEOUT.as_secs()
                ),
                platform_fix,
            );
        }
    };
    if outcome.termination != Termination::Exited(0) {
        return Outcome::problem(
            format!(
                "`/bin/sh -c 'cat in.txt > out.txt'` {}",
                outcome.termination
            ),
            "the workers need /bin/sh; give the function an image that has it (reapi_platform)",
        );
    }
    let copied = outcome
        .result
        .output_files
        .iter()
        .find(|f| f.path == "out.txt")
        .and_then(|f| f.digest.as_ref())
        .and_then(|d| llama_core::Digest::from_proto(d).ok())
        .and_then(|d| store.get_bytes(&d).ok());
    if copied.as_deref() != Some(PROBE_INPUT) {
        return Outcome::problem(
            "the action ran, but its output did not come back as written",
            "check the server's CAS (its logs); report it to its operators",
        );
    }
    Outcome::Ok("uploaded, executed, and its output downloaded and verified".into())
}
