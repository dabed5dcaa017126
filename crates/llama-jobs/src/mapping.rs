//! `LOCAL[:REMOTE]` arguments (`-f`, `-o`): which local path appears where in the remote
//! command's working directory.
//!
//! The one local/remote path pair of llama is [`OutputMapping`] (the Engine delivers
//! outputs through it); `-f` inputs, `-o` outputs and the files templates declare all use it.

use std::path::PathBuf;

use llama_core::normalize_remote;
use llama_exec::OutputMapping;

/// Why a `LOCAL[:REMOTE]` argument was refused; the message names the flag and the argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// An absolute LOCAL with no REMOTE: it cannot be its own remote name.
    #[error(
        "{flag} {spec}: an absolute path needs a relative name on the remote side; write {flag} {spec}:NAME"
    )]
    AbsoluteNeedsName {
        /// The flag, e.g. `-f`.
        flag: String,
        /// The argument as given.
        spec: String,
    },
    /// REMOTE is absolute or leaves the working directory.
    #[error("{flag} {spec}: remote path {remote:?} must be relative and must not contain '..'")]
    BadRemote {
        /// The flag, e.g. `-o`.
        flag: String,
        /// The argument as given.
        spec: String,
        /// The remote part.
        remote: String,
    },
}

/// Parses `LOCAL[:REMOTE]`. REMOTE defaults to LOCAL and must stay inside the command's
/// directory, so an absolute LOCAL needs an explicit REMOTE.
///
/// # Errors
///
/// A REMOTE that is absolute or contains `..` (including a defaulted absolute LOCAL).
pub fn parse_mapping(flag: &str, spec: &str) -> Result<OutputMapping, MappingError> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) if !l.is_empty() => (l, r),
        _ => (spec, spec),
    };
    let remote = normalize_remote(remote).map_err(|_| {
        if remote == local && local.starts_with('/') {
            MappingError::AbsoluteNeedsName {
                flag: flag.to_string(),
                spec: spec.to_string(),
            }
        } else {
            MappingError::BadRemote {
                flag: flag.to_string(),
                spec: spec.to_string(),
                remote: remote.to_string(),
            }
        }
    })?;
    Ok(OutputMapping {
        local: PathBuf::from(local),
        remote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse_like_the_original() {
        assert_eq!(
            parse_mapping("-f", "a/b").unwrap(),
            OutputMapping {
                local: "a/b".into(),
                remote: "a/b".into()
            }
        );
        assert_eq!(
            parse_mapping("-f", "/etc/hosts:hosts").unwrap(),
            OutputMapping {
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
