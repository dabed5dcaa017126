//! `llama invoke`: one command through the engine, files shipped both ways.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use llama_core::TreeBuilder;
use llama_exec::{CachePolicy, Delivered, Termination};
use llama_jobs::template::{ArgTemplates, JobContext};
use llama_jobs::{JobSpec, job_action, parse_mapping, path_env};

use crate::cli::InvokeArgs;
use crate::context::Context;

/// Runs `llama invoke` and returns the exit status.
pub async fn run(ctx: &Context, args: InvokeArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let files = args
        .files
        .iter()
        .map(|s| parse_mapping("-f", s))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = args
        .outputs
        .iter()
        .map(|s| parse_mapping("-o", s))
        .collect::<Result<Vec<_>, _>>()?;

    // The command's arguments are templates, as in the original: {{.I "x"}} ships x.
    let templates = ArgTemplates::parse_invoke(&args.command)?;
    let rendered = templates
        .render(&JobContext::default())
        .context("evaluating the command's arguments")?;

    let mut tree = TreeBuilder::new();
    for f in &files {
        tree.add_path(&ctx.hash_cache, &f.local, &f.remote)
            .with_context(|| format!("-f {}", f.local.display()))?;
    }

    let stdin = if args.stdin {
        let mut data = Vec::new();
        io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input for -stdin")?;
        Some(Arc::from(data))
    } else {
        None
    };

    let shipment = crate::ship::shipment(
        ctx,
        &args.ship,
        rendered.args.first().map(String::as_str),
        args.no_ship,
    )
    .await?;
    shipment
        .add_to(&mut tree, &ctx.hash_cache)
        .context("laying out the shipped programs")?;
    let env = path_env();
    let job = job_action(
        &ctx.hash_cache,
        tree,
        rendered,
        JobSpec {
            function: &args.function,
            env: &env,
            stdin,
            outputs,
            ship: Some(&shipment).filter(|s| !s.is_empty()),
        },
    )?;
    let action = &job.action;
    let prepared = started.elapsed();
    ctx.save();

    let delivered = ctx.engine.run_and_deliver(action, &job.outputs).await?;
    let finished_at = started.elapsed();
    // Invocations share one rolling trace: each is a build of one action.
    ctx.traces.send(
        "invoke",
        crate::replay::job_trace(
            llama_trace::Kind::Invoke,
            args.command.join(" "),
            finished_at.as_secs_f64(),
            Some(&delivered),
            ctx.remote,
        ),
    );

    crate::replay::replay(
        ctx.engine.store(),
        &delivered.finished.result,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )?;
    if args.logs {
        crate::replay::print_log(
            &mut io::stderr().lock(),
            &format!("function: {}", args.function),
            ctx.engine.executor_name(),
            &action.action_digest,
            &delivered.finished,
        )?;
        if let Some(usage) = ctx.engine.usage() {
            eprintln!("llama: {usage}");
        }
    }
    if args.time {
        eprintln!(
            "llama: time: prepare {:.3}s, {} {:.3}s, total {:.3}s",
            prepared.as_secs_f64(),
            if delivered.finished.cached {
                "cache hit"
            } else {
                "run"
            },
            (finished_at - prepared).as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }
    if !delivered.finished.termination.success()
        && let Some(hint) = crate::replay::stderr_of(ctx.engine.store(), &delivered.finished.result)
            .and_then(|err| crate::ship::missing_library_hint(&shipment, &err))
    {
        eprintln!("{hint}");
    }
    status(&args.command[0], &delivered)
}

/// The exit status: the command's, with a message when it did not simply exit, or when it
/// succeeded without producing what `-o` asked for.
fn status(program: &str, delivered: &Delivered) -> anyhow::Result<i32> {
    let termination = delivered.finished.termination;
    match termination {
        Termination::Exited(_) => {}
        Termination::Signaled(_) | Termination::TimedOut(_) => {
            eprintln!("llama: {program} {termination}");
        }
    }
    if !delivered.missing.is_empty() {
        let names: Vec<String> = delivered
            .missing
            .iter()
            .map(|m| {
                let remote = llama_core::display_name(&m.remote);
                format!("{} (remote {remote})", m.local.display())
            })
            .collect();
        if termination.success() {
            bail!(
                "the command succeeded but did not produce {}; nothing was written. Check the -o paths against what the command writes",
                names.join(", ")
            );
        }
        eprintln!(
            "llama: the command {termination} and did not produce {}",
            names.join(", ")
        );
    }
    Ok(termination.shell_status())
}

/// The engine's cache policy for the flags given.
pub fn policy(args: &InvokeArgs) -> CachePolicy {
    CachePolicy {
        read: !args.no_cache,
        write: true,
    }
}
