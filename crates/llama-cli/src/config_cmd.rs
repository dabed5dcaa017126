//! `llama config`: the effective settings and where each came from, credentials masked
//! (see [`llama_core::mask_secret`]): this output ends up in terminals, bug reports and CI
//! logs.

use std::collections::BTreeMap;
use std::io::Write;

use llama_core::{Config, Source, mask_secret};
use serde::Serialize;

use crate::cli::ConfigArgs;

/// `llama config --json`: `{"file": ..., "file_present": ..., "settings": {NAME: {...}}}`.
#[derive(Debug, Serialize)]
struct JsonConfig {
    file: String,
    file_present: bool,
    settings: BTreeMap<&'static str, JsonSetting>,
}

/// One setting in `llama config --json`.
#[derive(Debug, Serialize)]
struct JsonSetting {
    /// The effective value, as text (credentials masked).
    value: String,
    /// `default`, `file`, `env` or `flag`.
    source: &'static str,
    /// The file, variable or flag it came from (absent for a default).
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    /// The variable that overrides it.
    env: &'static str,
    /// What it is for.
    help: &'static str,
}

/// Prints the settings as a table, as shell assignments with `-shell`, or as JSON.
pub fn run(config: &Config, args: &ConfigArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &json(config))?;
        writeln!(out)?;
        return Ok(0);
    }
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

fn json(config: &Config) -> JsonConfig {
    let path = Config::file_path();
    let settings = config
        .entries()
        .map(|(name, value, source, env, help)| {
            let (kind, from) = match source {
                Source::Default => ("default", None),
                Source::File(path) => ("file", Some(path.display().to_string())),
                Source::Env(var) => ("env", Some(var.to_string())),
                Source::Flag(flag) => ("flag", Some(flag)),
            };
            let setting = JsonSetting {
                value: mask_secret(name, &value).into_owned(),
                source: kind,
                from,
                env,
                help,
            };
            (name, setting)
        })
        .collect();
    JsonConfig {
        file_present: path.exists(),
        file: path.display().to_string(),
        settings,
    }
}
