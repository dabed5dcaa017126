//! `llama config`: the effective settings and where each came from, credentials masked
//! (see [`llama_core::mask_secret`]): this output ends up in terminals, bug reports and CI
//! logs.

use std::io::Write;

use llama_core::{Config, mask_secret};

use crate::cli::ConfigArgs;

/// Prints the settings as a table, or as shell assignments with `-shell`.
pub fn run(config: &Config, args: &ConfigArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    if args.shell {
        for (name, value, _, _, _) in config.entries() {
            writeln!(
                out,
                "llama_{name}={}",
                shell_quote(&mask_secret(name, &value))
            )?;
        }
        return Ok(0);
    }
    let path = llama_core::Config::file_path();
    let state = if path.exists() { "" } else { " (not present)" };
    writeln!(out, "# config file: {}{state}", path.display())?;
    writeln!(
        out,
        "# each setting can be overridden by the environment variable shown"
    )?;
    let width = config.entries().map(|e| e.0.len()).max().unwrap_or(0);
    for (name, value, source, env, help) in config.entries() {
        writeln!(
            out,
            "{name:width$} = {:<30} # from {source}; ${env}: {help}",
            quote(&mask_secret(name, &value))
        )?;
    }
    Ok(0)
}

fn quote(value: &str) -> String {
    format!("{value:?}")
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r#"'"'"'"#))
}
