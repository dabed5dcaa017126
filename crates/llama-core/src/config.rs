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
        name: "max_output_nodes",
        env: "LLAMA_MAX_OUTPUT_NODES",
        default: || "1000000".into(),
        check: |v| parse_count(v).map(drop),
        help: "most files, directories and symlinks one result may expand to (results from caches and servers are refused past it)",
    },
    Key {
        name: "max_output_bytes",
        env: "LLAMA_MAX_OUTPUT_BYTES",
        default: || "16GiB".into(),
        check: |v| parse_size(v).map(drop),
        help: "most bytes one result may expand to (results from caches and servers are refused past it)",
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
        name: "stack",
        env: "LLAMA_STACK",
        default: || "llama".into(),
        check: |v| {
            let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if ok {
                Ok(())
            } else {
                Err(
                    "a CloudFormation stack name (letters, digits and -, starting with a letter)"
                        .into(),
                )
            }
        },
        help: "the CloudFormation stack `llama bootstrap` creates and `llama doctor` checks",
    },
    Key {
        name: "image_repository",
        env: "LLAMA_IMAGE_REPOSITORY",
        default: String::new,
        check: |v| {
            if v.is_empty() || (v.contains('/') && !v.contains("://") && !v.contains('@')) {
                Ok(())
            } else {
                Err(
                    "REGISTRY/REPOSITORY, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/llama"
                        .into(),
                )
            }
        },
        help: "where `llama update-function` pushes function images (written by `llama bootstrap`)",
    },
    Key {
        name: "registry_mirror",
        env: "LLAMA_REGISTRY_MIRROR",
        default: String::new,
        check: |v| {
            if v.is_empty() || !(v.contains('/') || v.contains(char::is_whitespace)) {
                Ok(())
            } else {
                Err("HOST[:PORT] of a registry mirroring Docker Hub, e.g. mirror.gcr.io".into())
            }
        },
        help: "a mirror `llama update-function --base` pulls Docker Hub images from (HOST[:PORT])",
    },
    Key {
        name: "execution_role",
        env: "LLAMA_EXECUTION_ROLE",
        default: String::new,
        check: |v| {
            if v.is_empty() || v.starts_with("arn:") {
                Ok(())
            } else {
                Err("an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)".into())
            }
        },
        help: "the IAM role Lambda functions run as (written by `llama bootstrap`)",
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
    Key {
        name: "reapi_ca",
        env: "LLAMA_REAPI_CA",
        default: String::new,
        check: |_| Ok(()),
        help: "PEM file of CA certificates a grpcs:// REAPI server's certificate may chain to, besides the system's",
    },
    Key {
        name: "reapi_client_cert",
        env: "LLAMA_REAPI_CLIENT_CERT",
        default: String::new,
        check: |_| Ok(()),
        help: "PEM file of the client certificate (chain) llama presents to a grpcs:// REAPI server that wants mTLS",
    },
    Key {
        name: "reapi_client_key",
        env: "LLAMA_REAPI_CLIENT_KEY",
        default: String::new,
        check: |_| Ok(()),
        help: "PEM file of the private key of reapi_client_cert",
    },
    Key {
        name: "reapi_cache_read",
        env: "LLAMA_REAPI_CACHE_READ",
        default: || "true".into(),
        check: |v| parse_bool(v).map(drop),
        help: "look results up in the REAPI server's action cache before executing (1/true/yes/on or 0/false/no/off)",
    },
    Key {
        name: "reapi_cache_write",
        env: "LLAMA_REAPI_CACHE_WRITE",
        default: || "true".into(),
        check: |v| parse_bool(v).map(drop),
        help: "let the REAPI server cache the results of llama's actions (off: they are sent with do_not_cache)",
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
    /// The config file cannot be written.
    #[error("cannot write config file {path}: {error}")]
    Write {
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

    /// Sets `values` in the config file at `path`, keeping its comments and its other
    /// settings; see [`update_file`]. Returns the keys whose value changed.
    pub fn update_file(
        path: &Path,
        values: &[(&str, &str)],
    ) -> Result<Vec<&'static str>, ConfigError> {
        update_file(path, values)
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
            // The error is printed: a mistyped credential must not be.
            value: mask_secret(spec.name, value).into_owned(),
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

    /// The most files, directories and symlinks one action's result may expand to.
    pub fn max_output_nodes(&self) -> u64 {
        parse_count(&self.raw("max_output_nodes")).unwrap_or(1_000_000)
    }

    /// The most bytes one action's result may expand to.
    pub fn max_output_bytes(&self) -> u64 {
        parse_size(&self.raw("max_output_bytes")).unwrap_or(16 << 30)
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

    /// The CloudFormation stack of `llama bootstrap`.
    pub fn stack(&self) -> String {
        self.raw("stack").into_owned()
    }

    /// `REGISTRY/REPOSITORY` for function images, or empty.
    pub fn image_repository(&self) -> String {
        self.raw("image_repository").trim().to_string()
    }

    /// `HOST[:PORT]` of a Docker Hub mirror, or empty.
    pub fn registry_mirror(&self) -> String {
        self.raw("registry_mirror").trim().to_string()
    }

    /// The IAM role ARN functions run as, or empty.
    pub fn execution_role(&self) -> String {
        self.raw("execution_role").trim().to_string()
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

    /// The extra CA certificates to trust for a grpcs:// REAPI server, `None` when unset;
    /// an error naming the key and the file when it is set to a file that cannot be read or
    /// holds no PEM certificate.
    pub fn reapi_ca(&self) -> Result<Option<PathBuf>, ConfigError> {
        self.pem_file("reapi_ca", "CERTIFICATE", "CA certificates")
    }

    /// The client certificate and its key for a grpcs:// REAPI server that wants mTLS,
    /// `None` when neither is set; an error naming the key and the file when one is set
    /// without the other, or names a file that cannot be read or holds no PEM of its kind.
    pub fn reapi_client_identity(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let cert = self.pem_file("reapi_client_cert", "CERTIFICATE", "the client certificate")?;
        let key = self.pem_file(
            "reapi_client_key",
            "PRIVATE KEY",
            "the client's private key",
        )?;
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.bad_value(
                "reapi_client_cert",
                "reapi_client_key (LLAMA_REAPI_CLIENT_KEY) to be set too, to the PEM file of its private key".into(),
            )),
            (None, Some(_)) => Err(self.bad_value(
                "reapi_client_key",
                "reapi_client_cert (LLAMA_REAPI_CLIENT_CERT) to be set too, to the PEM file of the certificate".into(),
            )),
        }
    }

    /// Ask the REAPI server's action cache before executing.
    pub fn reapi_cache_read(&self) -> bool {
        parse_bool(&self.raw("reapi_cache_read")).unwrap_or(true)
    }

    /// Let the REAPI server cache llama's results.
    pub fn reapi_cache_write(&self) -> bool {
        parse_bool(&self.raw("reapi_cache_write")).unwrap_or(true)
    }

    /// The file `key` names, checked to be readable and to hold a PEM block whose label ends
    /// with `label` (`CERTIFICATE`, `PRIVATE KEY`); `None` when the key is empty.
    fn pem_file(
        &self,
        key: &'static str,
        label: &str,
        what: &str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let value = self.raw(key);
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        let path = PathBuf::from(value);
        let expected = match std::fs::read(&path) {
            Err(e) => format!("a PEM file of {what} (reading {}: {e})", path.display()),
            Ok(data) => {
                let text = String::from_utf8_lossy(&data);
                let found = text.lines().any(|l| {
                    l.trim()
                        .strip_prefix("-----BEGIN ")
                        .and_then(|l| l.strip_suffix("-----"))
                        .is_some_and(|l| l.ends_with(label))
                });
                if found {
                    return Ok(Some(path));
                }
                format!(
                    "a PEM file of {what} ({} holds no -----BEGIN ...{label}----- block)",
                    path.display()
                )
            }
        };
        Err(self.bad_value(key, expected))
    }

    /// A [`ConfigError::BadValue`] for the current value of `key`.
    fn bad_value(&self, key: &'static str, expected: String) -> ConfigError {
        ConfigError::BadValue {
            key,
            value: self.raw(key).into_owned(),
            origin: self.source(key).unwrap_or(Source::Default),
            expected,
        }
    }
}

/// Sets `values` in the config file at `path`, keeping its comments, its other settings
/// and their layout; creates the file (and its directory) when absent. Each value is
/// checked first, and the file is replaced in one rename, so a failure leaves it as it was.
/// Returns the keys whose value changed.
fn update_file(path: &Path, values: &[(&str, &str)]) -> Result<Vec<&'static str>, ConfigError> {
    let origin = Source::File(path.to_path_buf());
    let mut checked = Vec::new();
    for (key, value) in values {
        let mut probe = Config {
            values: BTreeMap::new(),
        };
        probe.set(key, value, origin.clone())?;
        let (name, _) = probe
            .values
            .pop_first()
            .ok_or_else(|| ConfigError::UnknownKey {
                key: key.to_string(),
                origin: origin.clone(),
                known: String::new(),
            })?;
        checked.push((name, *value));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            });
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            })?;
    let mut changed = Vec::new();
    for (name, value) in checked {
        if doc.get(name).and_then(|v| v.as_str()) != Some(value) {
            doc[name] = toml_edit::value(value);
            changed.push(name);
        }
    }
    if changed.is_empty() {
        return Ok(changed);
    }
    let write = |path: &Path| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, doc.to_string().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write(path).map_err(|error| ConfigError::Write {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(changed)
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

/// Words in a setting's name that say its value is a credential.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "credential",
    "api_key",
];

/// A setting's value as `llama config` (and its error messages) may show it: credentials
/// replaced by their length. Every header value of `reapi_headers` is masked (keeping an
/// auth scheme such as `Bearer`), as is a setting whose name says it holds a secret, and
/// the password of a `scheme://user:password@host` URL in any setting. Where the value
/// came from is shown as before.
pub fn mask_secret<'a>(key: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    let redacted = |v: &str| format!("<redacted, {} bytes>", v.len());
    if value.is_empty() {
        return Cow::Borrowed(value);
    }
    let lower = key.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return Cow::Owned(redacted(value));
    }
    if key == "reapi_headers" {
        let Ok(headers) = parse_headers(value) else {
            return Cow::Owned(redacted(value));
        };
        let shown: Vec<String> = headers
            .iter()
            .map(|(name, v)| match v.split_once(' ') {
                // `Bearer TOKEN`, `Basic B64`: the scheme says which credential is in use.
                Some((scheme, rest))
                    if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
                {
                    format!("{name}: {scheme} {}", redacted(rest.trim_start()))
                }
                _ => format!("{name}: {}", redacted(v)),
            })
            .collect();
        return Cow::Owned(shown.join("; "));
    }
    // scheme://user:password@host...
    if let Some(scheme_end) = value.find("://") {
        let rest = &value[scheme_end + 3..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            return Cow::Owned(format!(
                "{}{}{}",
                &value[..start],
                redacted(&value[start..end]),
                &value[end..]
            ));
        }
    }
    Cow::Borrowed(value)
}

/// Parses `name: value; name2: value2` (gRPC metadata: names lowercased, printable ASCII).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once(':') else {
            // The item is not echoed: it may well be a bare token.
            return Err(format!(
                "headers as `name: value; name2: value2` (header {} has no `:`)",
                out.len() + 1
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

/// `1`, `true`, `yes`, `on` (any case) are on; `0`, `false`, `no`, `off` and empty are off,
/// as for every llama boolean (the `LLAMACC_*` variables too); anything else is refused.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("a boolean: 1/true/yes/on or 0/false/no/off".into()),
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

fn parse_count(v: &str) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
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
    fn update_file_keeps_comments_and_reports_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        let first =
            Config::update_file(&path, &[("region", "us-east-1"), ("stack", "llama")]).unwrap();
        assert_eq!(first, ["region", "stack"]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("# mine\njobs = 3 # keep\n{text}")).unwrap();
        let second =
            Config::update_file(&path, &[("region", "us-east-1"), ("stack", "other")]).unwrap();
        assert_eq!(second, ["stack"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# mine\njobs = 3 # keep\n"), "{text}");
        assert!(text.contains("stack = \"other\""), "{text}");
        assert!(
            Config::update_file(&path, &[("stack", "other")])
                .unwrap()
                .is_empty()
        );
        let err = Config::update_file(&path, &[("execution_role", "not-an-arn")]).unwrap_err();
        assert!(err.to_string().contains("execution_role"), "{err}");
        assert!(matches!(
            Config::update_file(&path, &[("nope", "x")]),
            Err(ConfigError::UnknownKey { .. })
        ));
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
    fn reapi_tls_files_are_checked_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p.to_string_lossy().into_owned()
        };
        let ca = file(
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let key = file(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        );
        let ec_key = file(
            "ec.pem",
            "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
        );
        let missing = dir.path().join("nope.pem").to_string_lossy().into_owned();

        let c = load(None, &[]).unwrap();
        assert_eq!(c.reapi_ca().unwrap(), None);
        assert_eq!(c.reapi_client_identity().unwrap(), None);

        let c = load(
            None,
            &[
                ("LLAMA_REAPI_CA", &ca),
                ("LLAMA_REAPI_CLIENT_CERT", &ca),
                ("LLAMA_REAPI_CLIENT_KEY", &ec_key),
            ],
        )
        .unwrap();
        assert_eq!(c.reapi_ca().unwrap(), Some(PathBuf::from(&ca)));
        assert_eq!(
            c.reapi_client_identity().unwrap(),
            Some((PathBuf::from(&ca), PathBuf::from(&ec_key)))
        );

        let e = load(None, &[("LLAMA_REAPI_CA", &missing)])
            .unwrap()
            .reapi_ca();
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("reapi_ca") && e.contains("LLAMA_REAPI_CA") && e.contains(&missing),
            "{e}"
        );
        // A key where the CA should be.
        let e = load(None, &[("LLAMA_REAPI_CA", &key)]).unwrap().reapi_ca();
        let e = e.unwrap_err().to_string();
        assert!(e.contains("reapi_ca") && e.contains(&key), "{e}");
        let e = load(None, &[("LLAMA_REAPI_CLIENT_CERT", &ca)])
            .unwrap()
            .reapi_client_identity()
            .unwrap_err()
            .to_string();
        assert!(e.contains("reapi_client_key"), "{e}");
        let e = load(
            None,
            &[
                ("LLAMA_REAPI_CLIENT_CERT", &ca),
                ("LLAMA_REAPI_CLIENT_KEY", &ca),
            ],
        )
        .unwrap()
        .reapi_client_identity()
        .unwrap_err()
        .to_string();
        assert!(e.contains("reapi_client_key") && e.contains(&ca), "{e}");
    }

    #[test]
    fn reapi_cache_switches_are_llama_booleans() {
        let c = load(None, &[]).unwrap();
        assert!(c.reapi_cache_read() && c.reapi_cache_write());
        for (value, on) in [
            ("1", true),
            ("TRUE", true),
            ("yes", true),
            ("on", true),
            ("0", false),
            ("false", false),
            ("No", false),
            ("off", false),
            ("", false),
        ] {
            let c = load(
                None,
                &[
                    ("LLAMA_REAPI_CACHE_READ", value),
                    ("LLAMA_REAPI_CACHE_WRITE", value),
                ],
            )
            .unwrap();
            assert_eq!(
                (c.reapi_cache_read(), c.reapi_cache_write()),
                (on, on),
                "{value:?}"
            );
        }
        let c = load(Some("reapi_cache_write = false\n"), &[]).unwrap();
        assert!(c.reapi_cache_read() && !c.reapi_cache_write());
        let e = load(None, &[("LLAMA_REAPI_CACHE_READ", "sometimes")]).unwrap_err();
        assert!(e.to_string().contains("LLAMA_REAPI_CACHE_READ"), "{e}");
    }

    #[test]
    fn defaults_then_file_then_env() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.backend(), Backend::Local);
        assert_eq!(c.cache_size(), 10 << 30);
        assert_eq!(c.max_output_nodes(), 1_000_000);
        assert_eq!(c.max_output_bytes(), 16 << 30);
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

    // See: issue 12, defect 11d
    #[test]
    fn r12_credentials_are_masked_wherever_a_value_is_shown() {
        let token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl";
        let headers = format!("authorization: Bearer {token}; x-buildbuddy-api-key: k3y");
        let shown = mask_secret("reapi_headers", &headers);
        assert_eq!(
            shown,
            "authorization: Bearer <redacted, 45 bytes>; x-buildbuddy-api-key: <redacted, 3 bytes>"
        );
        assert_eq!(
            mask_secret("reapi_endpoint", "grpcs://me:pw@host:1/x"),
            "grpcs://me:<redacted, 2 bytes>@host:1/x"
        );
        assert_eq!(mask_secret("some_token", "abc"), "<redacted, 3 bytes>");
        assert_eq!(mask_secret("jobs", "8"), "8");
        assert_eq!(mask_secret("reapi_headers", ""), "");
        // A mistyped header (no `:`) is refused without echoing it.
        let mut c = Config::load_from(Path::new("/nonexistent/llama.toml"), |_| None).unwrap();
        let err = c
            .set(
                "reapi_headers",
                &format!("Bearer {token}"),
                Source::Flag("x".into()),
            )
            .unwrap_err()
            .to_string();
        assert!(!err.contains(token), "{err}");
    }
}
