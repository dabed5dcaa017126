//! `llama invoke`: one command through the engine, files shipped both ways.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use llama_core::{ActionSpec, FUNCTION_PROPERTY, TreeBuilder, normalize_remote};
use llama_exec::{CachePolicy, Delivered, OutputMapping, Termination};

use crate::cli::InvokeArgs;
use crate::context::Context;
use llama_jobs::template::{ArgTemplates, InputFile, JobContext};

/// A `LOCAL[:REMOTE]` argument of `-f` or `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub local: PathBuf,
    pub remote: String,
}

/// Parses `LOCAL[:REMOTE]`. REMOTE defaults to LOCAL and must stay inside the command's
/// directory, so an absolute LOCAL needs an explicit REMOTE.
pub fn parse_mapping(flag: &str, spec: &str) -> anyhow::Result<Mapped> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) if !l.is_empty() => (l, r),
        _ => (spec, spec),
    };
    let remote = normalize_remote(remote).map_err(|_| {
        if remote == local && local.starts_with('/') {
            anyhow::anyhow!(
                "{flag} {spec}: an absolute path needs a relative name on the remote side; write {flag} {spec}:NAME"
            )
        } else {
            anyhow::anyhow!(
                "{flag} {spec}: remote path {remote:?} must be relative and must not contain '..'"
            )
        }
    })?;
    Ok(Mapped {
        local: PathBuf::from(local),
        remote,
    })
}

/// Runs `llama invoke` and returns the exit status.
pub async fn run(ctx: &Context, args: InvokeArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let files = args
        .files
        .iter()
        .map(|s| parse_mapping("-f", s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outputs = args
        .outputs
        .iter()
        .map(|s| parse_mapping("-o", s))
        .collect::<anyhow::Result<Vec<_>>>()?;

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
    for input in &rendered.inputs {
        match input {
            InputFile::Local { local, remote } => tree.add_path(&ctx.hash_cache, local, remote)?,
            InputFile::Bytes { data, remote } => {
                tree.add_bytes(Arc::from(data.as_slice()), remote, false)?
            }
        }
    }
    outputs.extend(rendered.outputs.iter().map(|o| Mapped {
        local: o.local.clone(),
        remote: o.remote.clone(),
    }));

    let stdin = if args.stdin {
        let mut data = Vec::new();
        io::stdin()
            .read_to_end(&mut data)
            .context("reading standard input for -stdin")?;
        Some(Arc::from(data))
    } else {
        None
    };

    let action = ActionSpec {
        arguments: rendered.args,
        env: std::env::var("PATH")
            .map(|p| vec![("PATH".to_string(), p)])
            .unwrap_or_default(),
        output_paths: outputs.iter().map(|o| o.remote.clone()).collect(),
        platform: vec![(FUNCTION_PROPERTY.to_string(), args.function.clone())],
        stdin,
        ..Default::default()
    }
    .prepare(tree.build())?;
    let prepared = started.elapsed();
    ctx.save();

    let mappings: Vec<OutputMapping> = outputs
        .iter()
        .map(|o| OutputMapping {
            remote: o.remote.clone(),
            local: o.local.clone(),
        })
        .collect();
    let delivered = ctx.engine.run_and_deliver(&action, &mappings).await?;
    let finished_at = started.elapsed();

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_like_the_original() {
        assert_eq!(
            parse_mapping("-f", "a/b").unwrap(),
            Mapped {
                local: "a/b".into(),
                remote: "a/b".into()
            }
        );
        assert_eq!(
            parse_mapping("-f", "/etc/hosts:hosts").unwrap(),
            Mapped {
                local: "/etc/hosts".into(),
                remote: "hosts".into()
            }
        );
        let abs = parse_mapping("-f", "/etc/hosts").unwrap_err().to_string();
        assert!(abs.contains("/etc/hosts:NAME"), "{abs}");
        assert!(parse_mapping("-o", "out:../x").is_err());
        assert!(parse_mapping("-o", "out:/x").is_err());
    }
}
