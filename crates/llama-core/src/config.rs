//! Settings: built-in defaults, then `$XDG_CONFIG_HOME/llama/config.toml`, then `LLAMA_*`
//! environment variables, then command-line flags — each later source overriding the
//! earlier, and every value remembering where it came from (`llama config` shows it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// llama's built-in default.
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Env(v) => write!(f, "${v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Which executor runs actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// This machine.
    Local,
    /// AWS Lambda.
    Lambda,
    /// A Remote Execution API cluster.
    Reapi,
}

impl Backend {
    /// The name used in config and `LLAMA_BACKEND`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Lambda => "lambda",
            Backend::Reapi => "reapi",
        }
    }
}

/// A setting llama knows: its name in the file, its variable, default, and how to check it.
struct Key {
    name: &'static str,
    env: &'static str,
    default: fn() -> String,
    check: fn(&str) -> Result<(), String>,
    help: &'static str,
}

/// Every setting. `llama config` prints them in this order.
const KEYS: &[Key] = &[
    Key {
        name: "backend",
        env: "LLAMA_BACKEND",
        default: || "local".into(),
        check: |v| parse_backend(v).map(drop),
        help: "where actions run: local, lambda or reapi",
    },
    Key {
        name: "dir",
        env: "LLAMA_DIR",
        default: default_dir,
        check: |v| {
            if v.is_empty() {
                Err("a directory path".into())
            } else {
                Ok(())
            }
        },
        help: "the local store (CAS, action cache, hash cache)",
    },
    Key {
        name: "cache_size",
        env: "LLAMA_CACHE_SIZE",
        default: || "10GiB".into(),
        check: |v| parse_size(v).map(drop),
        help: "bound on the local store; least recently used entries go first",
    },
    Key {
        name: "jobs",
        env: "LLAMA_JOBS",
        default: || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string()
        },
        check: |v| parse_jobs(v).map(drop),
        help: "actions the local executor runs at once",
    },
    Key {
        name: "action_timeout",
        env: "LLAMA_ACTION_TIMEOUT",
        default: || "15m".into(),
        check: |v| parse_duration(v).map(drop),
        help: "deadline of one action (e.g. 90s, 15m, 1h)",
    },
    Key {
        name: "daemon_idle_timeout",
        env: "LLAMA_DAEMON_IDLE_TIMEOUT",
        default: || "10m".into(),
        check: |v| parse_duration(v).map(drop),
        help: "the llamacc daemon exits after this long without work",
    },
    Key {
        name: "object_store",
        env: "LLAMA_OBJECT_STORE",
        default: String::new,
        check: |_| Ok(()),
        help: "s3://BUCKET/PREFIX for the lambda backend",
    },
    Key {
        name: "region",
        env: "LLAMA_REGION",
        default: String::new,
        check: |_| Ok(()),
        help: "AWS region for the lambda backend (else the AWS SDK's default)",
    },
    Key {
        name: "function",
        env: "LLAMA_FUNCTION",
        default: || "llama".into(),
        check: |v| {
            if v.trim().is_empty() {
                Err("a Lambda function name".into())
            } else {
                Ok(())
            }
        },
        help: "Lambda function for actions that name none (invoke and xargs name theirs)",
    },
    Key {
        name: "remote_jobs",
        env: "LLAMA_REMOTE_JOBS",
        default: || "64".into(),
        check: |v| parse_jobs(v).map(drop),
        help: "invocations the lambda backend has in flight at once",
    },
    Key {
        name: "reapi_endpoint",
        env: "LLAMA_REAPI_ENDPOINT",
        default: String::new,
        check: |v| {
            let v = v.trim();
            if v.is_empty() || v.starts_with("grpc://") || v.starts_with("grpcs://") {
                Ok(())
            } else {
                Err("grpc://HOST:PORT or grpcs://HOST:PORT".into())
            }
        },
        help: "the Remote Execution API server of the reapi backend (grpc://HOST:PORT, grpcs:// for TLS)",
    },
    Key {
        name: "reapi_instance",
        env: "LLAMA_REAPI_INSTANCE",
        default: String::new,
        check: |_| Ok(()),
        help: "the REAPI instance name (empty for the server's default instance)",
    },
    Key {
        name: "reapi_platform",
        env: "LLAMA_REAPI_PLATFORM",
        default: String::new,
        check: |v| parse_platforms(v).map(drop),
        help: "REAPI platform properties per FUNCTION, \"FUNCTION: key=value, key2=value2; *: key=value\" (* for functions not listed)",
    },
    Key {
        name: "reapi_headers",
        env: "LLAMA_REAPI_HEADERS",
        default: String::new,
        check: |v| parse_headers(v).map(drop),
        help: "headers sent with every REAPI call, \"name: value; name2: value2\" (e.g. authorization: Bearer TOKEN)",
    },
];

/// A setting that cannot be used, naming where it came from and what is expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file exists but cannot be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key llama does not know.
    #[error("unknown setting {key:?} in {origin}; known settings: {known}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it was found.
        origin: Source,
        /// The known keys, comma-separated.
        known: String,
    },
    /// A value of the wrong form.
    #[error("{key} = {value:?} (from {origin}) is not valid: expected {expected}")]
    BadValue {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What would be accepted.
        expected: String,
    },
}

/// The effective settings.
#[derive(Debug, Clone)]
pub struct Config {
    values: BTreeMap<&'static str, (String, Source)>,
}

impl Config {
    /// Where the config file is read from: `$XDG_CONFIG_HOME/llama/config.toml`, else
    /// `~/.config/llama/config.toml`.
    pub fn file_path() -> PathBuf {
        config_path()
    }

    /// Loads defaults, the config file (if any) and the `LLAMA_*` variables of this process.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(&config_path(), |name| std::env::var(name).ok())
    }

    /// Loads from an explicit file and environment lookup (for tests and tools).
    pub fn load_from(
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Defaults are computed when asked for: some cost a system call or a file read that
        // a short-lived process (llamacc) should not pay for settings it never reads.
        let mut config = Config {
            values: BTreeMap::new(),
        };
        match std::fs::read_to_string(file) {
            Ok(text) => config.apply_file(file, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(ConfigError::Read {
                    path: file.to_path_buf(),
                    error,
                });
            }
        }
        for key in KEYS {
            if let Some(value) = env(key.env) {
                config.set(key.name, &value, Source::Env(key.env))?;
            }
        }
        Ok(config)
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?;
        for (key, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            };
            self.set(&key, &text, Source::File(path.to_path_buf()))?;
        }
        Ok(())
    }

    /// Overrides one setting (a command-line flag does this), checking the value.
    pub fn set(&mut self, key: &str, value: &str, source: Source) -> Result<(), ConfigError> {
        let Some(spec) = KEYS.iter().find(|k| k.name == key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                origin: source,
                known: KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
            });
        };
        (spec.check)(value).map_err(|expected| ConfigError::BadValue {
            key: spec.name,
            value: value.to_string(),
            origin: source.clone(),
            expected,
        })?;
        self.values.insert(spec.name, (value.to_string(), source));
        Ok(())
    }

    /// Every setting as (name, value, source, environment variable, help), in table order.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&'static str, String, Source, &'static str, &'static str)> + '_ {
        KEYS.iter().map(|k| {
            let (value, source) = match self.values.get(k.name) {
                Some((v, s)) => (v.clone(), s.clone()),
                None => ((k.default)(), Source::Default),
            };
            (k.name, value, source, k.env, k.help)
        })
    }

    fn raw(&self, key: &str) -> std::borrow::Cow<'_, str> {
        match self.values.get(key) {
            Some((v, _)) => std::borrow::Cow::Borrowed(v.as_str()),
            None => std::borrow::Cow::Owned(
                KEYS.iter()
                    .find(|k| k.name == key)
                    .map(|k| (k.default)())
                    .unwrap_or_default(),
            ),
        }
    }

    /// Where the value of `key` came from (`None` for a key llama does not know).
    pub fn source(&self, key: &str) -> Option<Source> {
        match self.values.get(key) {
            Some((_, s)) => Some(s.clone()),
            None => KEYS
                .iter()
                .any(|k| k.name == key)
                .then_some(Source::Default),
        }
    }

    /// The executor to use.
    pub fn backend(&self) -> Backend {
        parse_backend(&self.raw("backend")).unwrap_or(Backend::Local)
    }

    /// The local store's directory.
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(self.raw("dir").as_ref())
    }

    /// The local store's size bound in bytes.
    pub fn cache_size(&self) -> u64 {
        parse_size(&self.raw("cache_size")).unwrap_or(10 << 30)
    }

    /// Concurrency of the local executor.
    pub fn jobs(&self) -> usize {
        parse_jobs(&self.raw("jobs")).unwrap_or(1)
    }

    /// Deadline of one action.
    pub fn action_timeout(&self) -> Duration {
        parse_duration(&self.raw("action_timeout")).unwrap_or(Duration::from_secs(900))
    }

    /// How long the daemon waits without work before exiting.
    pub fn daemon_idle_timeout(&self) -> Duration {
        parse_duration(&self.raw("daemon_idle_timeout")).unwrap_or(Duration::from_secs(600))
    }

    /// `s3://BUCKET/PREFIX`, or empty.
    pub fn object_store(&self) -> String {
        self.raw("object_store").into_owned()
    }

    /// The AWS region, or empty for the SDK's default.
    pub fn region(&self) -> String {
        self.raw("region").into_owned()
    }

    /// The Lambda function of actions that name none.
    pub fn function(&self) -> String {
        self.raw("function").into_owned()
    }

    /// Invocations the lambda backend has in flight at once: `remote_jobs` when set, else
    /// `jobs` when set (by `-j`, the file or `LLAMA_JOBS`), else 64.
    pub fn remote_jobs(&self) -> usize {
        let explicit = |key| !matches!(self.source(key), Some(Source::Default) | None);
        if !explicit("remote_jobs") && explicit("jobs") {
            return self.jobs();
        }
        parse_jobs(&self.raw("remote_jobs")).unwrap_or(64)
    }

    /// The REAPI server, `grpc://HOST:PORT` or `grpcs://HOST:PORT`, or empty.
    pub fn reapi_endpoint(&self) -> String {
        self.raw("reapi_endpoint").trim().to_string()
    }

    /// The REAPI instance name.
    pub fn reapi_instance(&self) -> String {
        self.raw("reapi_instance").trim().to_string()
    }

    /// REAPI platform properties per FUNCTION (`*`: functions not listed).
    pub fn reapi_platforms(&self) -> Vec<FunctionPlatform> {
        parse_platforms(&self.raw("reapi_platform")).unwrap_or_default()
    }

    /// Headers sent with every REAPI call, parsed from `name: value; name2: value2`; names
    /// lowercased.
    pub fn reapi_headers(&self) -> Vec<(String, String)> {
        parse_headers(&self.raw("reapi_headers")).unwrap_or_default()
    }
}

/// A FUNCTION and its REAPI platform properties.
pub type FunctionPlatform = (String, Vec<(String, String)>);

/// Parses `FUNCTION: key=value, key2=value2; FUNCTION2: key=value` into (function,
/// properties) pairs, in order.
fn parse_platforms(text: &str) -> Result<Vec<FunctionPlatform>, String> {
    let expected = |why: String| {
        format!("platforms as `FUNCTION: key=value, key2=value2; *: key=value` ({why})")
    };
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((function, properties)) = item.split_once(':') else {
            return Err(expected(format!("{item:?} names no FUNCTION before `:`")));
        };
        let function = function.trim();
        if function.is_empty() {
            return Err(expected(format!("{item:?} names no FUNCTION before `:`")));
        }
        let mut props = Vec::new();
        for pair in properties
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(expected(format!("{pair:?} is not key=value")));
            };
            if key.trim().is_empty() {
                return Err(expected(format!("{pair:?} has an empty key")));
            }
            props.push((key.trim().to_string(), value.trim().to_string()));
        }
        out.push((function.to_string(), props));
    }
    Ok(out)
}

/// Parses `name: value; name2: value2` (gRPC metadata: names lowercased, printable ASCII).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once(':') else {
            return Err(format!(
                "headers as `name: value; name2: value2` ({item:?} has no `:`)"
            ));
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "headers as `name: value; name2: value2` ({name:?} is not a header name)"
            ));
        }
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "headers as `name: value; name2: value2` (the value of {name} is not printable ASCII)"
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn config_path() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("llama/config.toml")
}

fn default_dir() -> String {
    xdg_dir("XDG_CACHE_HOME", ".cache")
        .join("llama")
        .to_string_lossy()
        .into_owned()
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(fallback),
    }
}

fn parse_backend(v: &str) -> Result<Backend, String> {
    [Backend::Local, Backend::Lambda, Backend::Reapi]
        .into_iter()
        .find(|b| b.name() == v)
        .ok_or_else(|| "one of local, lambda, reapi".to_string())
}

fn parse_size(v: &str) -> Result<u64, String> {
    let expected = || "a size such as 10GiB, 500MB or 1073741824".to_string();
    let size: bytesize::ByteSize = v.trim().parse().map_err(|_| expected())?;
    if size.as_u64() == 0 {
        return Err(expected());
    }
    Ok(size.as_u64())
}

fn parse_jobs(v: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    match humantime::parse_duration(v.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("a duration such as 90s, 15m or 1h".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file_text: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        if let Some(text) = file_text {
            std::fs::write(&path, text).unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(&path, |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn reapi_settings() {
        let c = load(
            Some("reapi_instance = \"main\"\n"),
            &[
                ("LLAMA_REAPI_ENDPOINT", "grpcs://cluster:8980"),
                (
                    "LLAMA_REAPI_HEADERS",
                    "Authorization: Bearer abc; x-buildbuddy-api-key: k:1 ;",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.reapi_endpoint(), "grpcs://cluster:8980");
        assert_eq!(c.reapi_instance(), "main");
        assert_eq!(
            c.reapi_headers(),
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-buildbuddy-api-key".to_string(), "k:1".to_string())
            ]
        );
        assert_eq!(c.reapi_platforms(), vec![]);
        let c = load(
            None,
            &[(
                "LLAMA_REAPI_PLATFORM",
                "gcc: container-image=docker://gcc:14, OSFamily=linux; *: OSFamily=linux",
            )],
        )
        .unwrap();
        assert_eq!(
            c.reapi_platforms(),
            vec![
                (
                    "gcc".to_string(),
                    vec![
                        ("container-image".to_string(), "docker://gcc:14".to_string()),
                        ("OSFamily".to_string(), "linux".to_string())
                    ]
                ),
                (
                    "*".to_string(),
                    vec![("OSFamily".to_string(), "linux".to_string())]
                )
            ]
        );
        for (key, bad) in [
            ("LLAMA_REAPI_ENDPOINT", "http://x:1"),
            ("LLAMA_REAPI_HEADERS", "no colon"),
            ("LLAMA_REAPI_HEADERS", "bad name: v"),
            ("LLAMA_REAPI_PLATFORM", "OSFamily=linux"),
            ("LLAMA_REAPI_PLATFORM", "gcc: OSFamily"),
        ] {
            let e = load(None, &[(key, bad)]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn defaults_then_file_then_env() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.backend(), Backend::Local);
        assert_eq!(c.cache_size(), 10 << 30);
        assert_eq!(c.source("jobs"), Some(Source::Default));

        let c = load(
            Some("jobs = 3\ncache_size = \"1GiB\"\n"),
            &[("LLAMA_JOBS", "5")],
        )
        .unwrap();
        assert_eq!(c.jobs(), 5);
        assert_eq!(c.source("jobs"), Some(Source::Env("LLAMA_JOBS")));
        assert_eq!(c.cache_size(), 1 << 30);
        assert!(matches!(c.source("cache_size"), Some(Source::File(_))));
    }

    #[test]
    fn bad_values_name_their_source() {
        let err = load(None, &[("LLAMA_BACKEND", "cloud")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("LLAMA_BACKEND") && msg.contains("local, lambda, reapi"),
            "{msg}"
        );
        let err = load(Some("colour = \"red\"\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = load(Some("jobs = 0\n"), &[]).unwrap_err();
        assert!(err.to_string().contains("config.toml"), "{err}");
        let err = load(Some("jobs = \n"), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
    }

    #[test]
    fn every_key_has_a_valid_default_and_a_unique_variable() {
        for key in KEYS {
            (key.check)(&(key.default)()).unwrap_or_else(|e| panic!("{}: {e}", key.name));
            assert_eq!(key.env, format!("LLAMA_{}", key.name.to_uppercase()));
        }
    }
}
