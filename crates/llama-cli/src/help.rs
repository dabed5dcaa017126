//! Help that does not come from clap's parser: `llama help [SUBCOMMAND... | TOPIC]` (clap's
//! own `help` subcommand knows only subcommands, and llamacc's variables need a topic, since
//! `llamacc --help` is the compiler's help), `llama completions SHELL` and `llama man`, all
//! generated from the clap definitions and the tables of settings and variables, so none of
//! them can drift from what llama accepts.

use std::io::Write;

use anyhow::bail;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, HelpArgs, ManArgs};

/// A topic of `llama help` that is not a subcommand.
struct Topic {
    name: &'static str,
    /// What it covers, for the list of topics.
    about: &'static str,
    text: fn() -> String,
}

const TOPICS: &[Topic] = &[
    Topic {
        name: "llamacc",
        about: "llamacc's LLAMACC_* variables",
        text: llamacc_topic,
    },
    Topic {
        name: "settings",
        about: "every setting, its variable and default",
        text: settings_topic,
    },
];

/// Width help text is wrapped to.
const WIDTH: usize = 92;

/// `llama help`: the main help, a subcommand's (`llama help daemon start`), or a topic's.
pub fn run(args: &HelpArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut cli = built();
    let text = match args.topic.as_slice() {
        [] => cli.render_long_help().to_string(),
        [topic] if let Some(found) = TOPICS.iter().find(|t| t.name == topic) => (found.text)(),
        path => {
            let mut command = &mut cli;
            for name in path {
                match command.find_subcommand_mut(name) {
                    Some(sub) => command = sub,
                    None => bail!(
                        "`llama help {}`: there is no such subcommand or topic; `llama help` lists \
                         the subcommands, and the topics are: {}",
                        path.join(" "),
                        topic_list()
                    ),
                }
            }
            command.render_long_help().to_string()
        }
    };
    write!(out, "{text}")?;
    Ok(0)
}

/// The topics, as the error and the main help list them.
pub fn topic_list() -> String {
    TOPICS
        .iter()
        .map(|t| format!("{} ({})", t.name, t.about))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `llama completions SHELL`: the completion script for SHELL on stdout.
pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    // Generated whole first: clap_complete panics on a failed write (`| head`), where a
    // write of ours ends quietly.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "llama", &mut script);
    out.write_all(&script)?;
    Ok(0)
}

/// `llama man [SUBCOMMAND]`: the manual page of llama, or of one subcommand, on stdout. The
/// main page ends with the environment: every `LLAMA_*` setting and `LLAMACC_*` variable.
pub fn man(args: &ManArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut cli = built();
    let source = format!("llama {}", env!("CARGO_PKG_VERSION"));
    let Some(name) = &args.subcommand else {
        clap_mangen::Man::new(cli).source(source).render(out)?;
        environment_section().to_writer(out)?;
        return Ok(0);
    };
    match cli.find_subcommand_mut(name) {
        Some(sub) => clap_mangen::Man::new(sub.clone())
            .source(source)
            .render(out)?,
        None => bail!("`llama man {name}`: there is no such subcommand; `llama help` lists them"),
    }
    Ok(0)
}

/// The clap command with its subcommands' names filled in (`Usage: llama daemon start`).
fn built() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli
}

/// `llama help llamacc`.
fn llamacc_topic() -> String {
    let mut out = String::from(
        "llamacc and llamacxx stand in for the C and C++ compiler: make CC=llamacc CXX=llamacxx.\n\
         `llamacc --help` is the compiler's own help. llamacc reads these variables:\n\n",
    );
    for var in llama_cc::variables() {
        let default = if var.default.is_empty() {
            String::new()
        } else {
            format!(" (default: {})", var.default)
        };
        out.push_str(&format!("  {}{default}\n", var.name));
        out.push_str(&wrap(var.about, 6));
    }
    out.push('\n');
    out.push_str(&wrap(llama_cc::BOOLEANS, 0));
    out.push_str(
        "\nllama's own settings (`llama help settings`) apply too: backend, dir, jobs, ...\n",
    );
    out
}

/// `llama help settings`.
fn settings_topic() -> String {
    let mut out = format!(
        "Settings are read from {} and can each be overridden by its variable.\n\
         `llama config` shows their values now and where each came from.\n\n",
        llama_core::Config::file_path().display()
    );
    for key in llama_core::keys::table() {
        let default = if key.default.is_empty() {
            String::new()
        } else {
            format!(", default: {}", key.default)
        };
        out.push_str(&format!("  {}  ({}{default})\n", key.name, key.env));
        out.push_str(&wrap(key.help, 6));
    }
    out
}

/// `text` wrapped at [`WIDTH`], each line indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > WIDTH {
            out.push_str(&format!("{:indent$}{line}\n", ""));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{:indent$}{line}\n", ""));
    }
    out
}

/// The ENVIRONMENT section of `llama man`.
fn environment_section() -> clap_mangen::roff::Roff {
    use clap_mangen::roff::{Roff, bold, roman};
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(format!(
        "Each setting of {} can be overridden by its variable; `llama config` shows the \
         values and where each came from.",
        llama_core::Config::file_path().display()
    ))]);
    for key in llama_core::keys::table() {
        roff.control("TP", []);
        roff.text([bold(key.env)]);
        roff.text([roman(format!("{} (setting {})", key.help, key.name))]);
    }
    for var in llama_cc::variables() {
        roff.control("TP", []);
        roff.text([bold(var.name)]);
        roff.text([roman(format!("llamacc: {}", var.about))]);
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_whole_and_indents() {
        let text = "word ".repeat(40);
        let wrapped = wrap(&text, 6);
        assert!(
            wrapped
                .lines()
                .all(|l| l.len() <= WIDTH && l.starts_with("      w"))
        );
        assert_eq!(wrapped.split_whitespace().count(), 40);
    }
}
