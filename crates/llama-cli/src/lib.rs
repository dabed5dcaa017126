//! The `llama` command: clap definitions and thin commands. (`llamacc` is a separate thin
//! binary, `src/bin/llamacc.rs`, that uses only `llama_cc::client` and never this library.)
//! Exit statuses are decided in [`llama_main`] and nowhere else. The lambda set-up commands
//! (`bootstrap`, `update-function`, `doctor`; feature `lambda`) only fill llama-aws's options
//! from their flags and call it.

#[cfg(feature = "lambda")]
pub mod bootstrap;
pub mod cli;
pub mod config_cmd;
pub mod context;
pub mod daemon;
#[cfg(feature = "lambda")]
pub mod doctor;
pub mod explain_cmd;
pub mod invoke;
pub mod replay;
pub mod stats_cmd;
#[cfg(feature = "lambda")]
pub mod update_function;
pub mod xargs;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use llama_core::{Source, keys};

use crate::cli::{Cli, Command, EXIT_LLAMA_ERROR};
use crate::context::Context;

/// The `llama` command: parses the flags, runs the subcommand, returns the exit status.
pub fn llama_main() -> ExitCode {
    init_tracing();
    let cli = match Cli::try_parse_from(cli::normalize_args(std::env::args_os())) {
        Ok(cli) => cli,
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

fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = context::load_config(&cli)?;
    match cli.command {
        Command::Config(args) => config_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Stats(args) => stats_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Explain(args) => explain_cmd::run(&config, &args, &mut std::io::stdout().lock()),
        Command::Daemon(args) => match args.action {
            cli::DaemonAction::Start => daemon::start(&config),
            cli::DaemonAction::Stop => daemon::stop(&config),
            cli::DaemonAction::Status => daemon::status(&config),
            cli::DaemonAction::Run => daemon::run(&config),
        },
        #[cfg(feature = "lambda")]
        Command::Bootstrap(args) => bootstrap::run(&config, &args, &mut std::io::stdout().lock()),
        #[cfg(feature = "lambda")]
        Command::UpdateFunction(args) => {
            update_function::run(&config, &args, &mut std::io::stdout().lock())
        }
        #[cfg(feature = "lambda")]
        Command::Doctor(args) => doctor::run(&config, &args, &mut std::io::stdout().lock()),
        #[cfg(not(feature = "lambda"))]
        Command::Bootstrap(_) | Command::UpdateFunction(_) | Command::Doctor(_) => {
            anyhow::bail!(
                "this llama was built without the lambda backend, which bootstrap, update-function and doctor set up and check: reinstall with it (cargo install --locked --path crates/llama-cli --features lambda)"
            )
        }
        Command::Invoke(args) => {
            let ctx = Context::new(&config, invoke::policy(&args))?;
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
            let ctx = Arc::new(Context::new(&config, xargs::policy(&args))?);
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
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // The AWS SDK warns about each credential provider it tries; llama's own error says
    // what was missing.
    let filter = EnvFilter::try_from_env("LLAMA_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,aws_config=error"));
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
