//! Settings: built-in defaults, then `$XDG_CONFIG_HOME/llama/config.toml`, then `LLAMA_*`
//! environment variables, then command-line flags — each later source overriding the
//! earlier, and every value remembering where it came from (`llama config` shows it).

//!
//! Every setting is a typed constant of [`keys`] (its name, variable, default and parser
//! stated once); [`Config::get`] reads one, so a key that does not exist does not compile.

mod file;
pub mod keys;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::keys::Key;
pub use self::parse::{FunctionPlatform, mask_secret};

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
        file::config_path()
    }

    /// Sets `values` in the config file at `path`, keeping its comments and its other
    /// settings; each key is checked against the table and each value validated first.
    /// Returns the keys whose value changed.
    pub fn update_file(
        path: &Path,
        values: &[(&str, &str)],
    ) -> Result<Vec<&'static str>, ConfigError> {
        file::update_file(path, values)
    }

    /// Loads defaults, the config file (if any) and the `LLAMA_*` variables of this process.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_from(&file::config_path(), |name| std::env::var(name).ok())
    }

    /// Loads from an explicit file and environment lookup (for tests and tools).
    pub fn load_from(
        file: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Defaults are computed when asked for: some cost a system call or a file read that
        // a short-lived process (llamacc) should not pay for settings it never reads.
        let mut config = Config::empty();
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
        for key in keys::ALL {
            if let Some(value) = env(key.env()) {
                config.set(key.name(), &value, Source::Env(key.env()))?;
            }
        }
        Ok(config)
    }

    /// No value set: every setting at its default.
    fn empty() -> Config {
        Config {
            values: BTreeMap::new(),
        }
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

    /// Overrides one setting (a command-line flag does this), checking that `key` is in the
    /// table and that the value parses as that key's type. Returns the key's name as the
    /// table spells it.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        source: Source,
    ) -> Result<&'static str, ConfigError> {
        let Some(spec) = keys::ALL.iter().find(|k| k.name() == key) else {
            return Err(ConfigError::UnknownKey {
                key: key.to_string(),
                origin: source,
                known: keys::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        spec.check(value)
            .map_err(|expected| ConfigError::BadValue {
                key: spec.name(),
                // The error is printed: a mistyped credential must not be.
                value: mask_secret(spec.name(), value).into_owned(),
                origin: source.clone(),
                expected,
            })?;
        self.values.insert(spec.name(), (value.to_string(), source));
        Ok(spec.name())
    }

    /// Every setting as (name, value, source, environment variable, help), in table order.
    pub fn entries(
        &self,
    ) -> impl Iterator<Item = (&'static str, String, Source, &'static str, &'static str)> + '_ {
        keys::ALL.iter().map(|k| {
            let (value, source) = match self.values.get(k.name()) {
                Some((v, s)) => (v.clone(), s.clone()),
                None => (k.default_text(), Source::Default),
            };
            (k.name(), value, source, k.env(), k.help())
        })
    }

    /// The value of `key`: the one set (by file, variable or flag), else its default.
    pub fn get<T>(&self, key: &Key<T>) -> T {
        let text = self.text(key);
        key.parse(&text).unwrap_or_else(|expected| {
            // `set` checked every value with this parser and a test checks every default,
            // so this is a broken table, not a user's mistake.
            panic!(
                "llama bug: {} = {text:?} does not parse (expected {expected}); please report it",
                key.name()
            )
        })
    }

    /// The text of `key` as given, or its default.
    fn text<T>(&self, key: &Key<T>) -> std::borrow::Cow<'_, str> {
        match self.values.get(key.name()) {
            Some((v, _)) => std::borrow::Cow::Borrowed(v.as_str()),
            None => std::borrow::Cow::Owned(key.default_text()),
        }
    }

    /// Where the value of `key` came from.
    pub fn source<T>(&self, key: &Key<T>) -> Source {
        match self.values.get(key.name()) {
            Some((_, s)) => s.clone(),
            None => Source::Default,
        }
    }

    /// The executor to use.
    pub fn backend(&self) -> Backend {
        self.get(&keys::BACKEND)
    }

    /// The local store's directory.
    pub fn dir(&self) -> PathBuf {
        self.get(&keys::DIR)
    }

    /// The local store's size bound in bytes.
    pub fn cache_size(&self) -> u64 {
        self.get(&keys::CACHE_SIZE)
    }

    /// Whether the local store keeps the blobs it copies in compressed.
    pub fn cache_compression(&self) -> bool {
        self.get(&keys::CACHE_COMPRESSION)
    }

    /// The most files, directories and symlinks one action's result may expand to.
    pub fn max_output_nodes(&self) -> u64 {
        self.get(&keys::MAX_OUTPUT_NODES)
    }

    /// The most bytes one action's result may expand to.
    pub fn max_output_bytes(&self) -> u64 {
        self.get(&keys::MAX_OUTPUT_BYTES)
    }

    /// Concurrency of the local executor.
    pub fn jobs(&self) -> usize {
        self.get(&keys::JOBS)
    }

    /// Deadline of one action.
    pub fn action_timeout(&self) -> Duration {
        self.get(&keys::ACTION_TIMEOUT)
    }

    /// How long the daemon waits without work before exiting.
    pub fn daemon_idle_timeout(&self) -> Duration {
        self.get(&keys::DAEMON_IDLE_TIMEOUT)
    }

    /// `s3://BUCKET/PREFIX`, or empty.
    pub fn object_store(&self) -> String {
        self.get(&keys::OBJECT_STORE)
    }

    /// The AWS region, or empty for the SDK's default.
    pub fn region(&self) -> String {
        self.get(&keys::REGION)
    }

    /// The Lambda function of actions that name none.
    pub fn function(&self) -> String {
        self.get(&keys::FUNCTION)
    }

    /// The CloudFormation stack of `llama bootstrap`.
    pub fn stack(&self) -> String {
        self.get(&keys::STACK)
    }

    /// `REGISTRY/REPOSITORY` for function images, or empty.
    pub fn image_repository(&self) -> String {
        self.get(&keys::IMAGE_REPOSITORY)
    }

    /// `HOST[:PORT]` of a Docker Hub mirror, or empty.
    pub fn registry_mirror(&self) -> String {
        self.get(&keys::REGISTRY_MIRROR)
    }

    /// The IAM role ARN functions run as, or empty.
    pub fn execution_role(&self) -> String {
        self.get(&keys::EXECUTION_ROLE)
    }

    /// Invocations the lambda backend has in flight at once: `remote_jobs` when set, else
    /// `jobs` when set (by `-j`, the file or `LLAMA_JOBS`), else 64.
    pub fn remote_jobs(&self) -> usize {
        let explicit = |source| source != Source::Default;
        if !explicit(self.source(&keys::REMOTE_JOBS)) && explicit(self.source(&keys::JOBS)) {
            return self.jobs();
        }
        self.get(&keys::REMOTE_JOBS)
    }

    /// Whether `invoke` and `xargs` ship the command's own program on remote backends.
    pub fn ship_command(&self) -> bool {
        self.get(&keys::SHIP_COMMAND)
    }

    /// S3 requests the lambda backend has in flight at once.
    pub fn s3_concurrency(&self) -> usize {
        self.get(&keys::S3_CONCURRENCY)
    }

    /// The REAPI server, `grpc://HOST:PORT` or `grpcs://HOST:PORT`, or empty.
    pub fn reapi_endpoint(&self) -> String {
        self.get(&keys::REAPI_ENDPOINT)
    }

    /// The REAPI instance name.
    pub fn reapi_instance(&self) -> String {
        self.get(&keys::REAPI_INSTANCE)
    }

    /// REAPI platform properties per FUNCTION (`*`: functions not listed).
    pub fn reapi_platforms(&self) -> Vec<FunctionPlatform> {
        self.get(&keys::REAPI_PLATFORM)
    }

    /// Headers sent with every REAPI call, parsed from `name: value; name2: value2`; names
    /// lowercased.
    pub fn reapi_headers(&self) -> Vec<(String, String)> {
        self.get(&keys::REAPI_HEADERS)
    }

    /// The extra CA certificates to trust for a grpcs:// REAPI server, `None` when unset;
    /// an error naming the key and the file when it is set to a file that cannot be read or
    /// holds no PEM certificate.
    pub fn reapi_ca(&self) -> Result<Option<PathBuf>, ConfigError> {
        self.pem_file(&keys::REAPI_CA, "CERTIFICATE", "CA certificates")
    }

    /// The client certificate and its key for a grpcs:// REAPI server that wants mTLS,
    /// `None` when neither is set; an error naming the key and the file when one is set
    /// without the other, or names a file that cannot be read or holds no PEM of its kind.
    pub fn reapi_client_identity(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        use keys::{REAPI_CLIENT_CERT as CERT, REAPI_CLIENT_KEY as KEY};
        let cert = self.pem_file(&CERT, "CERTIFICATE", "the client certificate")?;
        let key = self.pem_file(&KEY, "PRIVATE KEY", "the client's private key")?;
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(self.bad_value(
                &CERT,
                format!(
                    "{} ({}) to be set too, to the PEM file of its private key",
                    KEY.name(),
                    KEY.env()
                ),
            )),
            (None, Some(_)) => Err(self.bad_value(
                &KEY,
                format!(
                    "{} ({}) to be set too, to the PEM file of the certificate",
                    CERT.name(),
                    CERT.env()
                ),
            )),
        }
    }

    /// Ask the REAPI server's action cache before executing.
    pub fn reapi_cache_read(&self) -> bool {
        self.get(&keys::REAPI_CACHE_READ)
    }

    /// Let the REAPI server cache llama's results.
    pub fn reapi_cache_write(&self) -> bool {
        self.get(&keys::REAPI_CACHE_WRITE)
    }

    /// The file `key` names, checked to be readable and to hold a PEM block whose label ends
    /// with `label` (`CERTIFICATE`, `PRIVATE KEY`); `None` when the key is empty.
    fn pem_file(
        &self,
        key: &Key<Option<PathBuf>>,
        label: &str,
        what: &str,
    ) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.get(key) else {
            return Ok(None);
        };
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
    fn bad_value<T>(&self, key: &Key<T>, expected: String) -> ConfigError {
        ConfigError::BadValue {
            key: key.name(),
            value: self.text(key).into_owned(),
            origin: self.source(key),
            expected,
        }
    }
}
