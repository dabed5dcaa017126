//! The original llama's Go `flag` syntax, rewritten into clap's before parsing: single-dash
//! long names (`-stdin`), `--f x` for a short flag, and flag parsing that ends at the first
//! positional argument.

use std::ffi::OsString;

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
const GLOBAL_FLAGS: &[GoFlag] = &[
    valued("region"),
    valued("store"),
    valued("s3-concurrency"),
    flag("debug-aws"),
    valued("trace"),
];

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
            valued("ship"),
            flag("no-ship"),
        ],
    ),
    (
        "xargs",
        &[
            valued("j"),
            valued("jobs"),
            valued("f"),
            valued("file"),
            flag("logs"),
            flag("k"),
            flag("keep-order"),
            valued("joblog"),
            valued("build-id"),
            valued("retries"),
            valued("halt"),
            flag("no-cache"),
            valued("ship"),
            flag("no-ship"),
        ],
    ),
    ("config", &[flag("shell"), flag("json")]),
    (
        "daemon",
        &[
            flag("ping"),
            flag("shutdown"),
            flag("stats"),
            flag("start"),
            flag("autostart"),
            flag("detach"),
            valued("idle-timeout"),
            valued("path"),
            valued("cc-concurrency"),
        ],
    ),
    ("stats", &[flag("json"), flag("zero")]),
    ("bootstrap", &[valued("cache-days")]),
    (
        "update-function",
        &[
            flag("create"),
            valued("build"),
            valued("tag"),
            valued("base"),
            valued("memory"),
            valued("timeout"),
            valued("arch"),
            valued("runtime"),
        ],
    ),
    (
        "doctor",
        &[
            valued("f"),
            valued("function"),
            valued("backend"),
            flag("json"),
        ],
    ),
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
    use crate::cli::*;
    use clap::Parser as _;

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
    fn the_originals_xargs_line_parses() {
        let cli = Cli::try_parse_from(norm(&[
            "llama",
            "xargs",
            "-j",
            "8",
            "optipng",
            "optipng",
            "{{.I .Line}}",
            "-out",
            "{{.O (printf \"optimized/%s\" .Line)}}",
        ]))
        .unwrap();
        let Command::Xargs(args) = cli.command else {
            panic!("expected xargs")
        };
        assert_eq!(args.jobs, Some(8));
        assert_eq!(args.function, "optipng");
        assert_eq!(args.command[2], "-out");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
