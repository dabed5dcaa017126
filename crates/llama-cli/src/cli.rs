//! Command-line definitions, and the rewriting that lets the original's Go-style flags
//! (`-stdin`, `-logs`, `-region us-east-1`) through unchanged.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

/// Exit status when llama itself fails (bad flag, missing input, unusable store), as `env`
/// and `xargs` do: a command's own status passes through unchanged.
pub const EXIT_LLAMA_ERROR: i32 = 125;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  the command's own status    when it ran (from the cache or now)
  128+N                       the command was killed by signal N
  124                         the command ran past action_timeout and was killed
  125                         llama itself failed (bad arguments, missing input, unusable store)

Flags may be spelled with one dash or two (-stdin or --stdin), as the original llama accepted.";

/// Outsource UNIX commands to far more parallelism than one machine has.
///
/// With no set-up, commands run on this machine through a content-addressed cache under
/// $LLAMA_DIR (see `llama config`).
#[derive(Debug, Parser)]
#[command(name = "llama", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// AWS region for the lambda backend (overrides `region`).
    #[arg(long, global = true, value_name = "REGION")]
    pub region: Option<String>,

    /// Object store for the lambda backend, s3://BUCKET/PREFIX (overrides `object_store`).
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one command through llama, shipping files to it and results back.
    #[command(after_help = INVOKE_HELP)]
    Invoke(InvokeArgs),
    /// Print the effective settings and where each came from.
    Config(ConfigArgs),
}

const INVOKE_HELP: &str = "\
Example:
  echo hello > INPUT
  llama invoke -f INPUT -o OUTPUT gcc sh -c 'sha256sum INPUT > OUTPUT'
  cat OUTPUT

The command runs in a fresh directory holding only the -f files (at their REMOTE paths),
with PATH as in this shell and no other environment. Its stdout and stderr are replayed
here and its exit status becomes llama's. A successful run is cached: the same command on
the same inputs and FUNCTION is answered from the cache without running again.

Exit status:
  the command's own status    when it ran (from the cache or now)
  128+N                       the command was killed by signal N
  124                         the command ran past action_timeout and was killed
  125                         llama itself failed (bad arguments, missing input or output,
                              unusable store)";

/// `llama invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Ship a file or directory to the command; REMOTE is its path there (default: LOCAL).
    #[arg(short = 'f', long = "file", value_name = "LOCAL[:REMOTE]")]
    pub files: Vec<String>,

    /// Bring a file or directory the command produces back to LOCAL (REMOTE default: LOCAL).
    #[arg(short = 'o', long = "output", value_name = "LOCAL[:REMOTE]")]
    pub outputs: Vec<String>,

    /// Feed this process's standard input to the command.
    #[arg(long)]
    pub stdin: bool,

    /// Print the invocation's log (where it ran, whether cached, timings) to stderr.
    #[arg(long)]
    pub logs: bool,

    /// Print how long each phase took to stderr.
    #[arg(long)]
    pub time: bool,

    /// Run even if a cached result exists (the new result is still recorded).
    #[arg(long)]
    pub no_cache: bool,

    /// The function (Lambda function, REAPI platform, or on this machine a label) to run
    /// on; part of the cache key.
    #[arg(value_name = "FUNCTION")]
    pub function: String,

    /// The command and its arguments.
    #[arg(value_name = "CMD", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `llama config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print shell assignments (llama_KEY='value'), as the original did.
    #[arg(long)]
    pub shell: bool,
}

/// A flag of the original's Go `flag` syntax: single-dash long names.
struct GoFlag {
    name: &'static str,
    takes_value: bool,
}

const fn flag(name: &'static str) -> GoFlag {
    GoFlag {
        name,
        takes_value: false,
    }
}

const fn valued(name: &'static str) -> GoFlag {
    GoFlag {
        name,
        takes_value: true,
    }
}

/// Flags accepted before the subcommand.
const GLOBAL_FLAGS: &[GoFlag] = &[valued("region"), valued("store")];

/// Flags of each subcommand, before its first positional argument.
const SUBCOMMAND_FLAGS: &[(&str, &[GoFlag])] = &[
    (
        "invoke",
        &[
            valued("f"),
            valued("file"),
            valued("o"),
            valued("output"),
            flag("stdin"),
            flag("logs"),
            flag("time"),
            flag("no-cache"),
        ],
    ),
    ("config", &[flag("shell")]),
];

/// Rewrites Go-style arguments into clap's: `-stdin` → `--stdin`, `--f x` → `-f x`, and
/// ends flag parsing after FUNCTION (Go stops at the first positional argument, so the
/// command's own `-c` or `--help` belong to the command).
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args = args.into_iter();
    let mut out: Vec<OsString> = args.next().into_iter().collect();
    let rest: Vec<OsString> = args.collect();
    let mut i = 0;
    let mut table = GLOBAL_FLAGS;
    let mut in_subcommand = false;
    while i < rest.len() {
        let arg = &rest[i];
        let text = arg.to_string_lossy();
        if text == "--" {
            out.extend(rest[i..].iter().cloned());
            return out;
        }
        if let Some((rewritten, takes_value)) = rewrite_flag(&text, table) {
            out.push(rewritten.into());
            if takes_value && !text.contains('=') && i + 1 < rest.len() {
                out.push(rest[i + 1].clone());
                i += 1;
            }
            i += 1;
            continue;
        }
        if text.starts_with('-') {
            // Unknown here (clap reports it) or help/version.
            out.push(arg.clone());
            i += 1;
            continue;
        }
        if !in_subcommand {
            out.push(arg.clone());
            match SUBCOMMAND_FLAGS.iter().find(|(name, _)| *name == text) {
                Some((_, flags)) => {
                    table = flags;
                    in_subcommand = true;
                }
                None => {
                    out.extend(rest[i + 1..].iter().cloned());
                    return out;
                }
            }
            i += 1;
            continue;
        }
        // The first positional of the subcommand (FUNCTION): everything after it is the
        // command line, verbatim.
        out.push(arg.clone());
        if i + 1 < rest.len() {
            out.push("--".into());
            out.extend(rest[i + 1..].iter().cloned());
        }
        return out;
    }
    out
}

/// The clap spelling of a Go-style flag from `table`, and whether it takes a value.
fn rewrite_flag(text: &str, table: &[GoFlag]) -> Option<(String, bool)> {
    let body = text.strip_prefix("--").or_else(|| text.strip_prefix('-'))?;
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    let spec = table
        .iter()
        .chain(GLOBAL_FLAGS.iter())
        .find(|f| f.name == name)?;
    let dashes = if spec.name.len() == 1 { "-" } else { "--" };
    let rewritten = match value {
        Some(v) => format!("{dashes}{name}={v}"),
        None => format!("{dashes}{name}"),
    };
    Some((rewritten, spec.takes_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn go_style_flags_become_clap_flags() {
        assert_eq!(
            norm(&[
                "llama", "-region", "r", "invoke", "-stdin", "-logs", "-f", "a:b", "--o=x", "gcc",
                "sh", "-c", "true"
            ]),
            [
                "llama", "--region", "r", "invoke", "--stdin", "--logs", "-f", "a:b", "-o=x",
                "gcc", "--", "sh", "-c", "true"
            ]
        );
    }

    #[test]
    fn the_commands_own_flags_are_left_alone() {
        assert_eq!(
            norm(&["llama", "invoke", "fn", "ls", "-stdin", "--help"]),
            ["llama", "invoke", "fn", "--", "ls", "-stdin", "--help"]
        );
    }

    #[test]
    fn tables_have_no_duplicates() {
        for (_, flags) in SUBCOMMAND_FLAGS {
            let mut names: Vec<_> = flags.iter().chain(GLOBAL_FLAGS).map(|f| f.name).collect();
            names.sort();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len());
        }
    }

    #[test]
    fn clap_accepts_the_rewritten_form() {
        let cli = Cli::try_parse_from(norm(&[
            "llama", "invoke", "-f", "INPUT", "-o", "OUTPUT", "gcc", "sh", "-c", "exit 7",
        ]))
        .unwrap();
        let Command::Invoke(args) = cli.command else {
            panic!("expected invoke")
        };
        assert_eq!(args.function, "gcc");
        assert_eq!(args.command, ["sh", "-c", "exit 7"]);
        assert_eq!(args.files, ["INPUT"]);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
