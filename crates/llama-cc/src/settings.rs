//! The `LLAMACC_*` environment variables, with the original llama's names and meanings.

use std::ffi::OsString;

/// One `LLAMACC_*` variable: its name after the prefix and what it means here.
struct Var {
    name: &'static str,
    apply: fn(&mut Settings, &str),
}

/// Every variable llamacc knows. Unknown `LLAMACC_*` variables are reported (once per
/// daemon) rather than silently ignored.
const VARS: &[Var] = &[
    Var {
        name: "BUILD_ID",
        apply: |s, v| s.build_id = Some(v.to_string()),
    },
    Var {
        name: "DEBUG",
        apply: |s, v| s.debug = truthy(v),
    },
    Var {
        name: "FILTER_WARNINGS",
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
        apply: |s, v| s.full_preprocess = truthy(v),
    },
    Var {
        name: "FUNCTION",
        apply: |s, v| s.function = v.to_string(),
    },
    Var {
        name: "INCLUDE_SCANNER",
        apply: |s, v| s.include_scanner = truthy(v),
    },
    Var {
        name: "LOCAL",
        apply: |s, v| s.local = truthy(v),
    },
    Var {
        name: "LOCAL_CC",
        apply: |s, v| s.local_cc = v.to_string(),
    },
    Var {
        name: "LOCAL_CXX",
        apply: |s, v| s.local_cxx = v.to_string(),
    },
    Var {
        name: "LOCAL_FALLBACK",
        apply: |s, v| s.local_fallback = truthy(v),
    },
    Var {
        name: "LOCAL_PREPROCESS",
        apply: |s, v| s.local_preprocess = truthy(v),
    },
    Var {
        name: "REMOTE_ASSEMBLE",
        apply: |s, v| s.remote_assemble = truthy(v),
    },
    Var {
        name: "VERBOSE",
        apply: |s, v| s.verbose = truthy(v),
    },
];

/// llamacc's settings for one compile, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `LLAMACC_VERBOSE`: say on stderr what llamacc does with each compile.
    pub verbose: bool,
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
    /// `LLAMACC_BUILD_ID`: a label for the build in traces.
    pub build_id: Option<String>,
    /// `LLAMACC_FILTER_WARNINGS`: warnings whose `-W` flags are dropped from every compile.
    pub filter_warnings: Vec<String>,
    /// `LLAMACC_LOCAL_FALLBACK`: compile locally when a remote backend fails (default on).
    pub local_fallback: bool,
    /// `LLAMACC_INCLUDE_SCANNER`: list a remote compile's headers with the include scanner,
    /// asking the compiler's `-M` only where it cannot decide (default on; off: `-M` always).
    pub include_scanner: bool,
    /// `LLAMACC_DEBUG`: write why each compile hit or missed (what `llama explain` says) to
    /// `debug.log` in the store directory.
    pub debug: bool,
    /// `LLAMACC_*` variables that are not known, as `NAME=value`.
    pub unknown: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            verbose: false,
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
            debug: false,
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
}
