//! The environment a compile needs: what llamacc sends the daemon, and nothing else. A
//! build's environment carries secrets (`AWS_SECRET_ACCESS_KEY`, tokens, agent sockets)
//! that no compile reads; whatever listens on the daemon's socket must not receive them.

use std::ffi::OsStr;

use crate::service::{OUTPUT_ENV, UNCACHEABLE_ENV};

/// Variables the daemon reads, or the compiler it runs needs, beyond [`OUTPUT_ENV`] (part of
/// the key) and [`UNCACHEABLE_ENV`] (which make a compile uncacheable, so the daemon must
/// see them to refuse it).
const RUN_ENV: &[&str] = &[
    // The clang driver rewrites its arguments by this.
    "CCC_OVERRIDE_OPTIONS",
    // gcc wraps diagnostics to this width.
    "COLUMNS",
    // A wrapper set as the real compiler (LLAMACC_LOCAL_CC=ccache gcc, distcc) finds its
    // configuration and cache under it; it is a path, not a secret.
    "HOME",
    // A compiler installed outside the system's library path may need it to start.
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    // clang on macOS: the SDK and the minimum OS version end up in the object.
    "MACOSX_DEPLOYMENT_TARGET",
    // Where the compiler is looked up.
    "PATH",
    // The logical working directory: gcc writes it as DW_AT_comp_dir.
    "PWD",
    "SDKROOT",
    // Diagnostics colours and hyperlinks.
    "TERM",
    // Where the compiler writes its temporary files.
    "TMPDIR",
    // __DATE__ and __TIME__ are local time.
    "TZ",
];

/// Whole families: `LLAMACC_*` are llamacc's settings, `GCC_*` and `LC_*` change what gcc
/// writes, `CCACHE_*` and `DISTCC_*` configure a wrapper set as the real compiler.
const RUN_ENV_PREFIXES: &[&str] = &["LLAMACC_", "GCC_", "LC_", "CCACHE_", "DISTCC_"];

/// True when a compile can depend on the variable `name`, so llamacc sends it to the daemon.
pub fn needed_by_compile(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        // No variable a compiler reads has a name that is not UTF-8.
        return false;
    };
    OUTPUT_ENV
        .iter()
        .chain(UNCACHEABLE_ENV.iter().map(|(var, _)| var))
        .chain(RUN_ENV)
        .any(|known| *known == name)
        || RUN_ENV_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_and_the_compiler_get_what_they_read_and_nothing_else() {
        for name in OUTPUT_ENV
            .iter()
            .chain(UNCACHEABLE_ENV.iter().map(|(var, _)| var))
            .chain(RUN_ENV)
        {
            assert!(needed_by_compile(name.as_ref()), "{name}");
        }
        for name in [
            "PWD",
            "PATH",
            "HOME",
            "LLAMACC_VERBOSE",
            "LC_ALL",
            "GCC_COLORS",
        ] {
            assert!(needed_by_compile(name.as_ref()), "{name}");
        }
        for name in [
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_ACCESS_KEY_ID",
            "GITHUB_TOKEN",
            "SSH_AUTH_SOCK",
            "LLAMA_DIR",
            "pwd",
        ] {
            assert!(!needed_by_compile(name.as_ref()), "{name}");
        }
    }
}
