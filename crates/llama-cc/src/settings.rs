//! The `LLAMACC_*` environment variables, with the original llama's names and meanings.

use std::ffi::OsString;

/// One `LLAMACC_*` variable: its name after the prefix, what it means here, and how it
/// sets [`Settings`]. `llama help llamacc` and docs/llamacc.md are written from this table,
/// so what they list is what llamacc reads.
struct Var {
    name: &'static str,
    /// Its default, as shown (empty: none).
    default: &'static str,
    /// One line: what it does.
    about: &'static str,
    apply: fn(&mut Settings, &str),
}

/// Every variable llamacc knows. Unknown `LLAMACC_*` variables are reported (once per
/// daemon) rather than silently ignored.
const VARS: &[Var] = &[
    Var {
        name: "BUILD_ID",
        default: "",
        about: "the build its compiles are traced under (llama trace); without it, a run of compiles with no gap over 5 s is one build",
        apply: |s, v| s.build_id = Some(v.to_string()),
    },
    Var {
        name: "DEBUG",
        default: "off",
        about: "append to $LLAMA_DIR/debug.log, as each compile finishes, whether it hit and, if not, what changed in its key (as llama explain says it)",
        apply: |s, v| s.debug = truthy(v),
    },
    Var {
        name: "FILTER_WARNINGS",
        default: "",
        about: "comma-separated warnings whose -W flags (-Wfoo, -Werror=foo) are dropped from every compile, e.g. missing-include-dirs",
        apply: |s, v| {
            s.filter_warnings = v
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(String::from)
                .collect()
        },
    },
    Var {
        name: "FULL_PREPROCESS",
        default: "off",
        about: "as LLAMACC_LOCAL_PREPROCESS (which it implies) with the full preprocessor (-E): macros expand here too; not with debug information, whose columns would move",
        apply: |s, v| s.full_preprocess = truthy(v),
    },
    Var {
        name: "FUNCTION",
        default: "gcc",
        about: "remote backends: the function remote compiles run on (a Lambda function; on the reapi backend, the reapi_platform entry whose properties they get)",
        apply: |s, v| s.function = v.to_string(),
    },
    Var {
        name: "INCLUDE_SCANNER",
        default: "on",
        about: "remote backends: list a compile's headers with llama's include scanner, asking the compiler's -M only where it cannot decide (off: -M for every compile)",
        apply: |s, v| s.include_scanner = truthy(v),
    },
    Var {
        name: "LOCAL",
        default: "off",
        about: "run the real compiler directly, without the cache (for CC=llamacc ./configure)",
        apply: |s, v| s.local = truthy(v),
    },
    Var {
        name: "LOCAL_CC",
        default: "cc",
        about: "the real C compiler llamacc stands in for, e.g. gcc-12 or clang",
        apply: |s, v| s.local_cc = v.to_string(),
    },
    Var {
        name: "LOCAL_CXX",
        default: "c++",
        about: "the real C++ compiler llamacxx stands in for, e.g. g++-12 or clang++",
        apply: |s, v| s.local_cxx = v.to_string(),
    },
    Var {
        name: "LOCAL_FALLBACK",
        default: "on",
        about: "remote backends: compile here when the backend fails (off: such a compile fails)",
        apply: |s, v| s.local_fallback = truthy(v),
    },
    Var {
        name: "LOCAL_PREPROCESS",
        default: "off",
        about: "remote backends: preprocess each source here (directives only) and send the text instead of its headers, where the object stays byte-identical",
        apply: |s, v| s.local_preprocess = truthy(v),
    },
    Var {
        name: "REMOTE_ASSEMBLE",
        default: "off",
        about: "accepted, no effect: .s and .S files are always handled like C",
        apply: |s, v| s.remote_assemble = truthy(v),
    },
    Var {
        name: "VERBOSE",
        default: "off",
        about: "say on stderr what happened to each compile, and how long it took",
        apply: |s, v| s.verbose = truthy(v),
    },
];

/// One `LLAMACC_*` variable as `llama help llamacc` and docs/llamacc.md list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarHelp {
    /// The whole name, `LLAMACC_...`.
    pub name: String,
    /// Its default, as shown (empty: none).
    pub default: &'static str,
    /// One line: what it does.
    pub about: &'static str,
}

/// Every `LLAMACC_*` variable llamacc reads, in name order.
pub fn variables() -> Vec<VarHelp> {
    VARS.iter()
        .map(|v| VarHelp {
            name: format!("LLAMACC_{}", v.name),
            default: v.default,
            about: v.about,
        })
        .collect()
}

/// How booleans read, said once for [`variables`]' readers.
pub const BOOLEANS: &str = "Booleans are on for 1, true, yes or on (any case) and off for anything else, empty, 0, false and no included (the original took any non-empty value, false too, as on). An unknown LLAMACC_* variable is reported once.";

/// The variables as a markdown table (docs/llamacc.md holds exactly this).
pub fn variables_markdown() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in variables() {
        let default = if v.default.is_empty() {
            String::new()
        } else {
            format!("`{}`", v.default)
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} |\n",
            v.name,
            v.about.replace('|', "\\|")
        ));
    }
    out
}

/// llamacc's settings for one compile, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `LLAMACC_VERBOSE`: say on stderr what llamacc does with each compile.
    pub verbose: bool,
    /// `LLAMACC_DEBUG`: append why each compile hit or missed to `$LLAMA_DIR/debug.log`.
    pub debug: bool,
    /// `LLAMACC_LOCAL`: run the real compiler directly, bypassing llama entirely (for
    /// `CC=llamacc ./configure`).
    pub local: bool,
    /// `LLAMACC_REMOTE_ASSEMBLE`: accepted for compatibility; assembly (`.s`, `.S`) is always
    /// handled like C here.
    pub remote_assemble: bool,
    /// `LLAMACC_FUNCTION`: the Lambda function remote compiles use (default `gcc`).
    pub function: String,
    /// `LLAMACC_LOCAL_CC`: the C compiler llamacc stands in for (default `cc`).
    pub local_cc: String,
    /// `LLAMACC_LOCAL_CXX`: the C++ compiler (default `c++`).
    pub local_cxx: String,
    /// `LLAMACC_LOCAL_PREPROCESS`: a remote compile ships its source preprocessed here
    /// (directives only) instead of its headers, where the object stays the same.
    pub local_preprocess: bool,
    /// `LLAMACC_FULL_PREPROCESS`: as `local_preprocess`, with macros expanded here too.
    pub full_preprocess: bool,
    /// `LLAMACC_BUILD_ID`: accepted and kept, not yet used (it will label the build in
    /// traces).
    pub build_id: Option<String>,
    /// `LLAMACC_FILTER_WARNINGS`: warnings whose `-W` flags are dropped from every compile.
    pub filter_warnings: Vec<String>,
    /// `LLAMACC_LOCAL_FALLBACK`: compile locally when a remote backend fails (default on).
    pub local_fallback: bool,
    /// `LLAMACC_INCLUDE_SCANNER`: list a remote compile's headers with the include scanner,
    /// asking the compiler's `-M` only where it cannot decide (default on; off: `-M` always).
    pub include_scanner: bool,
    /// `LLAMACC_*` variables that are not known, as `NAME=value`.
    pub unknown: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            verbose: false,
            debug: false,
            local: false,
            remote_assemble: false,
            function: "gcc".into(),
            local_cc: "cc".into(),
            local_cxx: "c++".into(),
            local_preprocess: false,
            full_preprocess: false,
            build_id: None,
            filter_warnings: Vec::new(),
            local_fallback: true,
            include_scanner: true,
            unknown: Vec::new(),
        }
    }
}

/// `1`, `true`, `yes` (any case) are on; `0`, `false`, `no` and empty are off. The original
/// treated any non-empty value, `false` included, as on: a bug, not kept.
pub fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl Settings {
    /// Reads the `LLAMACC_*` variables of this process's environment.
    pub fn from_process_env() -> Settings {
        let env: Vec<_> = std::env::vars_os().collect();
        Settings::from_env(env.iter().map(|(k, v)| (k, v)))
    }

    /// Reads the `LLAMACC_*` variables of `env`.
    pub fn from_env<'a>(env: impl IntoIterator<Item = (&'a OsString, &'a OsString)>) -> Settings {
        let mut settings = Settings::default();
        for (key, value) in env {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            let Some(name) = key.strip_prefix("LLAMACC_") else {
                continue;
            };
            match VARS.iter().find(|v| v.name == name) {
                Some(var) => (var.apply)(&mut settings, value),
                None => settings.unknown.push(format!("{key}={value}")),
            }
        }
        settings.unknown.sort();
        settings
    }

    /// The compiler to run for C (`cxx` false) or C++.
    pub fn compiler(&self, cxx: bool) -> &str {
        if cxx { &self.local_cxx } else { &self.local_cc }
    }

    /// Drops the `-W` flags of filtered warnings from `args` (`-Wfoo`, `-Werror=foo`).
    pub fn filter_args(&self, args: Vec<OsString>) -> Vec<OsString> {
        if self.filter_warnings.is_empty() {
            return args;
        }
        args.into_iter()
            .filter(|a| {
                let Some(a) = a.to_str() else { return true };
                let name = a.strip_prefix("-Werror=").or_else(|| a.strip_prefix("-W"));
                !name.is_some_and(|n| self.filter_warnings.iter().any(|w| w == n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn the_originals_variables_and_booleans() {
        let e = env(&[
            ("LLAMACC_LOCAL", "false"),
            ("LLAMACC_VERBOSE", "1"),
            ("LLAMACC_LOCAL_CC", "/usr/bin/gcc-12"),
            (
                "LLAMACC_FILTER_WARNINGS",
                "missing-include-dirs, packed-not-aligned",
            ),
            ("LLAMACC_COLOUR", "x"),
            ("PATH", "/bin"),
        ]);
        let s = Settings::from_env(e.iter().map(|(k, v)| (k, v)));
        assert!(!s.local, "false is off (the original's bug is not kept)");
        assert!(s.verbose);
        assert_eq!(s.compiler(false), "/usr/bin/gcc-12");
        assert_eq!(s.compiler(true), "c++");
        assert_eq!(s.unknown, ["LLAMACC_COLOUR=x"]);
        let args: Vec<OsString> = [
            "-c",
            "-Wmissing-include-dirs",
            "-Werror=packed-not-aligned",
            "-Wall",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(
            s.filter_args(args),
            [OsString::from("-c"), OsString::from("-Wall")]
        );
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(VARS.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn every_variable_says_what_it_does_on_one_line() {
        for v in VARS {
            assert!(
                !v.about.is_empty() && !v.about.contains('\n'),
                "LLAMACC_{}",
                v.name
            );
        }
        assert!(
            variables_markdown()
                .contains("| `LLAMACC_BUILD_ID` |  | the build its compiles are traced under")
        );
    }
}
