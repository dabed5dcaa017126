//! The `llama` command: clap definitions and thin commands. (`llamacc` is a separate thin
//! binary, `src/bin/llamacc.rs`, that uses only `llama_cc::client` and never this library.)
//! Exit statuses are decided in [`llama_main`] and nowhere else. The lambda set-up commands
//! (`bootstrap`, `update-function`; feature `lambda`) only fill llama-aws's options from
//! their flags and call it; `doctor` checks every backend, the lambda one through llama-aws.

#[cfg(feature = "lambda")]
pub mod bootstrap;
pub mod cache_cmd;
pub mod cli;
pub mod config_cmd;
pub mod context;
pub mod daemon;
pub mod doctor;
pub mod explain_cmd;
pub mod goflags;
pub mod help;
pub mod invoke;
pub mod replay;
pub mod ship;
pub mod stats_cmd;
pub mod trace_cmd;
#[cfg(feature = "lambda")]
pub mod update_function;
pub mod xargs;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use llama_core::{Source, keys};

use crate::cli::{Cli, Command, EXIT_LLAMA_ERROR};
use crate::context::Context;

/// The `llama` command: parses the flags, runs the subcommand, returns the exit status.
pub fn llama_main() -> ExitCode {
    let cli = match Cli::try_parse_from(goflags::normalize_args(std::env::args_os())) {
        Ok(cli) => {
            init_tracing(cli.debug_aws);
            cli
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_LLAMA_ERROR as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let status = match run(cli) {
        Ok(status) => status,
        Err(err) => {
            if is_broken_pipe(&err) {
                0
            } else {
                eprintln!("llama: {err:#}");
                EXIT_LLAMA_ERROR
            }
        }
    };
    ExitCode::from(status.clamp(0, 255) as u8)
}

/// The context of `invoke` and `xargs`, its traces also written to `trace` (`-trace FILE`).
fn context(
    config: &llama_core::Config,
    policy: llama_exec::CachePolicy,
    trace: Option<&std::path::Path>,
) -> anyhow::Result<Context> {
    let mut ctx = Context::new(config, policy)?;
    if let Some(path) = trace {
        let file = std::fs::File::create(path)
            .with_context(|| format!("-trace {}: cannot create it", path.display()))?;
        ctx.traces = llama_trace::Writer::with_copy(
            llama_trace::TraceLog::new(&config.dir(), llama_trace::Limits::default()),
            Some(file),
        );
    }
    Ok(ctx)
}

/// `llama daemon`, in either spelling.
fn run_daemon(mut config: llama_core::Config, args: &cli::DaemonArgs) -> anyhow::Result<i32> {
    use cli::{DaemonAction, DaemonMode};
    let mode = args.mode().map_err(anyhow::Error::msg)?;
    if let Some(idle) = &args.original.idle_timeout {
        config.set(
            keys::DAEMON_IDLE_TIMEOUT.name(),
            idle,
            Source::Flag("-idle-timeout".into()),
        )?;
    }
    match mode {
        DaemonMode::Action(DaemonAction::Start) => daemon::start(&config),
        DaemonMode::Action(DaemonAction::Stop) => daemon::stop(&config),
        DaemonMode::Action(DaemonAction::Status) => daemon::status(&config),
        DaemonMode::Action(DaemonAction::Run) => daemon::run(&config),
        DaemonMode::RunUnlessRunning if daemon::is_running(&config) => Ok(0),
        DaemonMode::RunUnlessRunning => daemon::run(&config),
        DaemonMode::Stats => stats_cmd::run(
            &config,
            &cli::StatsArgs {
                json: false,
                zero: false,
            },
            &mut std::io::stdout().lock(),
        ),
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    // Help needs no configuration: it must work when the configuration does not.
    match &cli.command {
        Command::Help(args) => return help::run(args, &mut std::io::stdout().lock()),
        Command::Completions(args) => {
            return help::completions(args, &mut std::io::stdout().lock());
        }
        Command::Man(args) => return help::man(args, &mut std::io::stdout().lock()),
        _ => {}
    }
    let config = context::load_config(&cli)?;
    match cli.command {
        Command::Help(_) | Command::Completions(_) | Command::Man(_) => Ok(0),
        Command::Config(args) => config_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Stats(args) => stats_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Daemon(args) => run_daemon(config, &args),
        Command::Trace(args) => trace_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Cache(args) => cache_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Explain(args) => explain_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        #[cfg(feature = "lambda")]
        Command::Bootstrap(args) => bootstrap::run(&config, &args, &mut std::io::stdout().lock()),
        #[cfg(feature = "lambda")]
        Command::UpdateFunction(args) => {
            update_function::run(&config, &args, &mut std::io::stdout().lock())
        }
        Command::Doctor(args) => doctor::run(config, &args, &mut std::io::stdout().lock()),
        #[cfg(not(feature = "lambda"))]
        Command::Bootstrap(_) | Command::UpdateFunction(_) => {
            anyhow::bail!(
                "this llama was built without the lambda backend, which bootstrap and update-function set up: reinstall with it (cargo install --locked --path crates/llama-cli --features lambda)"
            )
        }
        Command::Invoke(args) => {
            let ctx = context(&config, invoke::policy(&args), cli.trace.as_deref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            let status = runtime.block_on(invoke::run(&ctx, args));
            ctx.save();
            status
        }
        Command::Xargs(args) => {
            let mut config = config;
            if let Some(jobs) = args.jobs {
                config.set(
                    keys::JOBS.name(),
                    &jobs.to_string(),
                    Source::Flag("-j".into()),
                )?;
            }
            let ctx = Arc::new(context(
                &config,
                xargs::policy(&args),
                cli.trace.as_deref(),
            )?);
            let jobs = ctx.jobs;
            let runtime = tokio::runtime::Runtime::new()?;
            let status = runtime.block_on(xargs::run(ctx.clone(), args, jobs));
            ctx.save();
            status
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Warnings go to stderr as `llama: warning: ...`; `LLAMA_LOG=debug` shows more.
pub fn init_tracing(debug_aws: bool) {
    use tracing_subscriber::EnvFilter;
    // The AWS SDK warns about each credential provider it tries; llama's own error says
    // what was missing. -debug-aws (the original's flag) shows every request and response.
    let default = if debug_aws {
        "warn,aws_smithy_runtime=debug,aws_smithy_runtime_api=debug,aws_sdk_s3=debug,aws_sdk_lambda=debug,aws_config=debug"
    } else {
        "warn,aws_config=error"
    };
    let filter = EnvFilter::try_from_env("LLAMA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LlamaFormat)
        .init();
}

/// One line per event, prefixed like every other message of llama.
struct LlamaFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LlamaFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "llama: {level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
