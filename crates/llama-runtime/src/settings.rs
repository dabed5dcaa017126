//! The runtime's settings, from the environment Lambda (or a container) gives it.

use std::path::PathBuf;

/// This runtime's version, reported in every response.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the blob cache lives unless `LLAMA_RUNTIME_CACHE` says otherwise: Lambda's only
/// writable directory, kept across warm invocations.
pub const DEFAULT_CACHE_DIR: &str = "/tmp/llama-cache";

/// The blob cache's bound unless `LLAMA_RUNTIME_CACHE_SIZE` says otherwise. Lambda's `/tmp`
/// is 512 MB by default and configurable up to 10 GB; size the function's ephemeral storage
/// to this plus the largest action's scratch directory.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// Memory reported when `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` is unset (outside Lambda): the
/// size at which Lambda gives one full vCPU.
pub const DEFAULT_MEMORY_MB: u32 = 1769;

/// A setting in the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// A variable with a value of the wrong form.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    BadValue {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A variable the Runtime API needs is missing.
    #[error(
        "{0} is not set: llama-runtime runs as a Lambda custom runtime, which Lambda starts with it set; to run it elsewhere set it to the Runtime API's host:port (or http://host:port/prefix)"
    )]
    Missing(&'static str),
}

/// What the runtime needs to know about its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The blob cache's directory (`LLAMA_RUNTIME_CACHE`).
    pub cache_dir: PathBuf,
    /// Its bound in bytes (`LLAMA_RUNTIME_CACHE_SIZE`).
    pub cache_size: u64,
    /// The function's memory in MB (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub memory_mb: u32,
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`), recorded as the worker.
    pub function_name: String,
}

impl Settings {
    /// Defaults with the cache at `cache_dir` (for tests and embedding).
    pub fn for_cache(cache_dir: PathBuf) -> Settings {
        Settings {
            cache_dir,
            cache_size: DEFAULT_CACHE_SIZE,
            memory_mb: DEFAULT_MEMORY_MB,
            function_name: "llama-runtime".into(),
        }
    }

    /// Reads the settings through `env` (a lookup such as `std::env::var(..).ok()`).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let nonempty = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let cache_dir = nonempty("LLAMA_RUNTIME_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
        let cache_size = match nonempty("LLAMA_RUNTIME_CACHE_SIZE") {
            None => DEFAULT_CACHE_SIZE,
            Some(v) => parse_size(&v).ok_or(SettingsError::BadValue {
                var: "LLAMA_RUNTIME_CACHE_SIZE",
                value: v,
                expected: "a size such as 1GiB, 500MB or 1073741824",
            })?,
        };
        let memory_mb = match nonempty("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            None => DEFAULT_MEMORY_MB,
            Some(v) => v.trim().parse().map_err(|_| SettingsError::BadValue {
                var: "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                value: v,
                expected: "a whole number of megabytes",
            })?,
        };
        Ok(Settings {
            cache_dir,
            cache_size,
            memory_mb,
            function_name: nonempty("AWS_LAMBDA_FUNCTION_NAME")
                .unwrap_or_else(|| "llama-runtime".into()),
        })
    }
}

/// A size as llama's `cache_size` takes it (`1GiB`, `500MB`, `1073741824`).
fn parse_size(v: &str) -> Option<u64> {
    let size: bytesize::ByteSize = v.trim().parse().ok()?;
    (size.as_u64() > 0).then_some(size.as_u64())
}

/// `AWS_LAMBDA_RUNTIME_API` in the form the `lambda_runtime` crate reads:
/// `http://authority[/prefix]` with no trailing `/`.
///
/// Real Lambda gives `host:port` (`127.0.0.1:9001`); cargo-lambda's emulator gives a URL
/// with a scheme and a path prefix (`http://127.0.0.1:9000/.rt`). `lambda_runtime` 1.5
/// (`lambda_runtime_api_client` 1.1) accepts both, keeping the prefix; this makes the value
/// canonical first and refuses what it cannot use (https, an empty host) with a message
/// rather than the crate's panic.
pub fn normalize_runtime_api(value: &str) -> Result<String, SettingsError> {
    let bad = |expected| SettingsError::BadValue {
        var: "AWS_LAMBDA_RUNTIME_API",
        value: value.to_string(),
        expected,
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(SettingsError::Missing("AWS_LAMBDA_RUNTIME_API"));
    }
    let rest = match trimmed.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => {
            return Err(bad(
                "host:port or http://host:port[/prefix] (the Runtime API is plain HTTP)",
            ));
        }
        None => trimmed,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let valid_authority = !authority.is_empty()
        && !authority.contains('@')
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !valid_authority {
        return Err(bad("host:port or http://host:port[/prefix]"));
    }
    let path = path.trim_end_matches('/');
    if path.contains(['?', '#', ' ']) {
        return Err(bad("a path prefix without a query or fragment"));
    }
    Ok(format!("http://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_api_in_both_forms() {
        // Real Lambda.
        assert_eq!(
            normalize_runtime_api("127.0.0.1:9001").unwrap(),
            "http://127.0.0.1:9001"
        );
        // cargo-lambda's emulator.
        assert_eq!(
            normalize_runtime_api("http://127.0.0.1:9000/.rt").unwrap(),
            "http://127.0.0.1:9000/.rt"
        );
        assert_eq!(
            normalize_runtime_api(" HTTP://[::1]:9000/a/b/ ").unwrap(),
            "http://[::1]:9000/a/b"
        );
        assert_eq!(
            normalize_runtime_api("localhost:9001/").unwrap(),
            "http://localhost:9001"
        );
        for bad in ["https://x:1", "http://", "/path", "u@h:1", "h:1/p?q=1"] {
            let err = normalize_runtime_api(bad).unwrap_err().to_string();
            assert!(err.contains("AWS_LAMBDA_RUNTIME_API"), "{bad}: {err}");
        }
        assert!(matches!(
            normalize_runtime_api(""),
            Err(SettingsError::Missing(_))
        ));
    }

    #[test]
    fn settings_from_the_environment() {
        let s = Settings::from_env(|_| None).unwrap();
        assert_eq!(s.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
        assert_eq!(s.cache_size, DEFAULT_CACHE_SIZE);
        assert_eq!(s.memory_mb, DEFAULT_MEMORY_MB);
        let s = Settings::from_env(|v| match v {
            "LLAMA_RUNTIME_CACHE" => Some("/x".into()),
            "LLAMA_RUNTIME_CACHE_SIZE" => Some("2GiB".into()),
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => Some("3008".into()),
            "AWS_LAMBDA_FUNCTION_NAME" => Some("gcc".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(s.cache_dir, PathBuf::from("/x"));
        assert_eq!(s.cache_size, 2 << 30);
        assert_eq!(s.memory_mb, 3008);
        assert_eq!(s.function_name, "gcc");
        let err =
            Settings::from_env(|v| (v == "LLAMA_RUNTIME_CACHE_SIZE").then(|| "lots".to_string()))
                .unwrap_err();
        assert!(
            err.to_string().contains("LLAMA_RUNTIME_CACHE_SIZE"),
            "{err}"
        );
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("0"), None);
    }
}
