//! `llama-runtime`: a Lambda custom runtime (the `bootstrap` of a `provided.al2023` function,
//! or the entry point of a container image) that runs llama actions.
//!
//! Environment: `AWS_LAMBDA_RUNTIME_API` (`host:port` from Lambda, or
//! `http://host:port/prefix` from an emulator), `LLAMA_RUNTIME_CACHE` (default
//! `/tmp/llama-cache`), `LLAMA_RUNTIME_CACHE_SIZE` (default 1GiB), `LLAMA_LOG` (default
//! `info`: one line per invocation on stderr), and the AWS SDK's variables for S3.
//!
//! Build for Lambda on Debian 12 (bookworm):
//!
//! ```text
//! cargo build --release -p llama-runtime
//! objdump -T target/release/llama-runtime | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1
//! ```
//!
//! The binary needs at most `GLIBC_2.34` (`__libc_start_main`, the pthread functions that
//! moved into libc in 2.34), which Amazon Linux 2023 (`provided.al2023`, glibc 2.34) and
//! Debian 12 (2.36) both have; besides libc it links only libm and libgcc_s. A build host
//! with a newer glibc raises that floor (2.38 brings `__isoc23_*` symbols): build there with
//! `RUSTFLAGS='-C target-feature=+crt-static'` for a static binary, or build on bookworm.

use std::process::ExitCode;
use std::sync::Arc;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use llama_runtime::{Failure, Service, Settings, normalize_runtime_api};

fn main() -> ExitCode {
    init_tracing();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("llama-runtime: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    prepare_environment()?;
    let settings = Settings::from_env(|var| std::env::var(var).ok())?;
    let cache_dir = settings.cache_dir.clone();
    let service = Arc::new(Service::new(settings).map_err(|e| {
        anyhow::anyhow!(
            "opening the blob cache {}: {e}; set LLAMA_RUNTIME_CACHE to a writable directory",
            cache_dir.display()
        )
    })?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(serve(service))
}

/// Consecutive failures of the Runtime API loop, without an invocation served in between,
/// after which the runtime gives up (and Lambda starts a new sandbox).
const MAX_RESTARTS: u32 = 5;

/// Polls the Runtime API until it ends. `lambda_runtime` ends its loop with an error, or
/// panics, on a response it does not expect (cargo-lambda's emulator sends `/next` answers
/// without a request id after an invocation timed out); the loop is then started again, so
/// one bad answer does not take the runtime down.
async fn serve(service: Arc<Service>) -> anyhow::Result<()> {
    let mut failures = 0;
    loop {
        let served_before = service.invocations();
        let handler = service.clone();
        let task = tokio::spawn(lambda_runtime::run(service_fn(
            move |event: LambdaEvent<serde_json::Value>| {
                let service = handler.clone();
                async move { service.handle_json(event.payload).await.map_err(diagnostic) }
            },
        )));
        let why = match task.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("it panicked ({e})"),
        };
        if service.invocations() > served_before {
            failures = 0;
        }
        failures += 1;
        if failures > MAX_RESTARTS {
            anyhow::bail!(
                "the Lambda Runtime API loop failed {failures} times in a row, last: {why}; \
                 check AWS_LAMBDA_RUNTIME_API"
            );
        }
        tracing::warn!("the Lambda Runtime API loop failed: {why}; polling again");
        tokio::time::sleep(std::time::Duration::from_millis(100) * failures).await;
    }
}

/// A failed request as Lambda reports it (`lambda_runtime` also logs it, once).
fn diagnostic(failure: Failure) -> Diagnostic {
    Diagnostic {
        error_type: failure.kind.name().to_string(),
        error_message: failure.message,
    }
}

/// Makes the environment what `lambda_runtime` expects before any thread starts:
/// `AWS_LAMBDA_RUNTIME_API` canonical (see [`normalize_runtime_api`]), and the variables it
/// would otherwise panic without given defaults when running outside Lambda.
fn prepare_environment() -> anyhow::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").unwrap_or_default();
    let api = normalize_runtime_api(&api)?;
    let defaults = [
        ("AWS_LAMBDA_FUNCTION_NAME", "llama-runtime"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769"),
    ];
    // SAFETY: called from main before the tokio runtime (or any other thread) exists, so
    // nothing can read the environment concurrently.
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", api);
        for (var, value) in defaults {
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                std::env::set_var(var, value);
            }
        }
    }
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LLAMA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,lambda_runtime=warn,aws=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .init();
}
