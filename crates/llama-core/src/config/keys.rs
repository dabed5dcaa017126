//! The table of every setting: one typed [`Key`] constant each, stating its name, its
//! variable, its default (once), how its text becomes a value, and its help line.
//!
//! Reading a setting goes through one of these constants ([`Config::get`]), so reading a
//! key that does not exist does not compile. `llama config` prints them in table order.
//!
//! [`Config::get`]: super::Config::get

use std::path::PathBuf;
use std::time::Duration;

use super::Backend;
use super::parse::{
    FunctionPlatform, parse_backend, parse_bool, parse_count, parse_duration, parse_headers,
    parse_jobs, parse_platforms, parse_size,
};

/// One setting llama knows, whose value is a `T`.
///
/// The value is kept as the text it was given (that is what `llama config` shows and what
/// the config file holds); `parse` turns it into a `T`, and the same function checks every
/// value when it is set, so a value that got in always parses.
pub struct Key<T> {
    name: &'static str,
    env: &'static str,
    default: fn() -> String,
    /// The default as documentation says it, when `default` depends on the machine.
    shown_default: Option<&'static str>,
    parse: fn(&str) -> Result<T, String>,
    help: &'static str,
}

impl<T> Key<T> {
    /// The name in the config file and in `llama config`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The `LLAMA_*` environment variable that sets it.
    pub const fn env(&self) -> &'static str {
        self.env
    }

    /// One line saying what it is for.
    pub const fn help(&self) -> &'static str {
        self.help
    }

    /// The built-in default, as text.
    pub fn default_text(&self) -> String {
        (self.default)()
    }

    /// `text` as a value of this setting, or what would be expected instead.
    pub fn parse(&self, text: &str) -> Result<T, String> {
        (self.parse)(text)
    }
}

/// A [`Key`] of any type, for the table: what every setting has whatever its value's type.
pub(crate) trait AnyKey: Sync {
    fn name(&self) -> &'static str;
    fn env(&self) -> &'static str;
    fn help(&self) -> &'static str;
    fn default_text(&self) -> String;
    /// The default as documentation says it (`number of cores` rather than this machine's).
    fn shown_default(&self) -> String;
    /// Whether the default is described in words rather than given as a value.
    fn default_is_described(&self) -> bool;
    /// `Ok` when `text` is a valid value, else what is expected.
    fn check(&self, text: &str) -> Result<(), String>;
}

impl<T> AnyKey for Key<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn env(&self) -> &'static str {
        self.env
    }
    fn help(&self) -> &'static str {
        self.help
    }
    fn default_text(&self) -> String {
        (self.default)()
    }
    fn shown_default(&self) -> String {
        self.shown_default
            .map(str::to_string)
            .unwrap_or_else(|| (self.default)())
    }
    fn default_is_described(&self) -> bool {
        self.shown_default.is_some()
    }
    fn check(&self, text: &str) -> Result<(), String> {
        (self.parse)(text).map(drop)
    }
}

/// A key's `shown_default`: none unless given.
macro_rules! shown {
    () => {
        None
    };
    ($shown:literal) => {
        Some($shown)
    };
}

/// Defines each key as a public constant and lists them all, in order, in [`ALL`]: one
/// statement per key, so a constant cannot be missing from the table.
macro_rules! keys {
    ($($(#[$doc:meta])* $id:ident: $ty:ty = {
        name: $name:literal,
        env: $env:literal,
        default: $default:expr,
        $(shown_default: $shown:literal,)?
        parse: $parse:expr,
        help: $help:literal $(,)?
    })*) => {
        $(
            $(#[$doc])*
            pub const $id: Key<$ty> = Key {
                name: $name,
                env: $env,
                default: $default,
                shown_default: shown!($($shown)?),
                parse: $parse,
                help: $help,
            };
        )*
        /// Every setting, in the order `llama config` prints them.
        pub(crate) const ALL: &[&dyn AnyKey] = &[$(&$id),*];
    };
}

/// One setting as help and documentation list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHelp {
    /// The name in the config file.
    pub name: &'static str,
    /// The `LLAMA_*` variable that sets it.
    pub env: &'static str,
    /// The default as documentation says it (empty: none).
    pub default: String,
    /// Whether `default` is a value as written (`10GiB`) rather than words (`number of
    /// cores`).
    pub literal: bool,
    /// What it is for.
    pub help: &'static str,
}

/// Every setting, in table order, as `llama help settings`, `llama man` and
/// docs/settings.md list them.
pub fn table() -> Vec<KeyHelp> {
    ALL.iter()
        .map(|key| KeyHelp {
            name: key.name(),
            env: key.env(),
            default: key.shown_default(),
            literal: !key.default_is_described(),
            help: key.help(),
        })
        .collect()
}

/// Every setting as a markdown table (setting, variable, default, meaning), in table order:
/// docs/settings.md holds exactly this, and a test keeps it so.
pub fn markdown_table() -> String {
    let mut out = String::from("| setting | variable | default | meaning |\n|---|---|---|---|\n");
    for key in table() {
        let default = if key.literal && !key.default.is_empty() {
            format!("`{}`", key.default)
        } else {
            key.default.clone()
        };
        out.push_str(&format!(
            "| `{}` | `{}` | {default} | {} |\n",
            key.name,
            key.env,
            key.help.replace('|', "\\|")
        ));
    }
    out
}

/// A setting whose text is its value, as given.
fn any_text(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

/// A setting whose value is trimmed text, checked by `ok` first.
fn trimmed(v: &str, ok: bool, expected: &str) -> Result<String, String> {
    if ok {
        Ok(v.trim().to_string())
    } else {
        Err(expected.into())
    }
}

/// A PEM file path, `None` when empty (checked for content when read: see
/// [`Config::reapi_ca`](super::Config::reapi_ca)).
fn pem_path(v: &str) -> Result<Option<PathBuf>, String> {
    let v = v.trim();
    Ok((!v.is_empty()).then(|| PathBuf::from(v)))
}

keys! {
    /// Where actions run.
    BACKEND: Backend = {
        name: "backend",
        env: "LLAMA_BACKEND",
        default: || "local".into(),
        parse: parse_backend,
        help: "where actions run: `local` (this machine), `lambda` (AWS Lambda) or `reapi` (a Remote Execution API cluster)",
    }
    /// The local store's directory.
    DIR: PathBuf = {
        name: "dir",
        env: "LLAMA_DIR",
        default: super::file::default_dir,
        shown_default: "`$XDG_CACHE_HOME/llama`, else `~/.cache/llama`",
        parse: |v| {
            if v.is_empty() {
                Err("a directory path".into())
            } else {
                Ok(PathBuf::from(v))
            }
        },
        help: "the local store (blobs, action cache, hash cache) and the llamacc daemon's socket, log and counters",
    }
    /// The local store's size bound in bytes.
    CACHE_SIZE: u64 = {
        name: "cache_size",
        env: "LLAMA_CACHE_SIZE",
        default: || "10GiB".into(),
        parse: parse_size,
        help: "bound on the local store; least recently used entries are evicted first",
    }
    /// Whether the local store keeps the blobs it copies in zstd-compressed.
    CACHE_COMPRESSION: bool = {
        name: "cache_compression",
        env: "LLAMA_CACHE_COMPRESSION",
        default: || "true".into(),
        parse: parse_bool,
        help: "keep the local store's copied-in blobs (llamacc's objects) zstd-compressed where that saves an eighth or more; either form is read whatever this says (1/true/yes/on or 0/false/no/off)",
    }
    /// The most files, directories and symlinks one action's result may expand to.
    MAX_OUTPUT_NODES: u64 = {
        name: "max_output_nodes",
        env: "LLAMA_MAX_OUTPUT_NODES",
        default: || "1000000".into(),
        parse: parse_count,
        help: "most files, directories and symlinks one result may expand to; a result from a cache or a server past it is refused, naming this setting",
    }
    /// The most bytes one action's result may expand to.
    MAX_OUTPUT_BYTES: u64 = {
        name: "max_output_bytes",
        env: "LLAMA_MAX_OUTPUT_BYTES",
        default: || "16GiB".into(),
        parse: parse_size,
        help: "most bytes one result may expand to, refused past it likewise",
    }
    /// Concurrency of the local executor.
    JOBS: usize = {
        name: "jobs",
        env: "LLAMA_JOBS",
        default: || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string()
        },
        shown_default: "number of cores",
        parse: parse_jobs,
        help: "actions the local executor (and compiles the daemon) runs at once; `llama xargs -j` overrides it",
    }
    /// Deadline of one action.
    ACTION_TIMEOUT: Duration = {
        name: "action_timeout",
        env: "LLAMA_ACTION_TIMEOUT",
        default: || "15m".into(),
        parse: parse_duration,
        help: "deadline of one action, and of one compile (e.g. 90s, 15m, 1h)",
    }
    /// How long the daemon waits without work before exiting.
    DAEMON_IDLE_TIMEOUT: Duration = {
        name: "daemon_idle_timeout",
        env: "LLAMA_DAEMON_IDLE_TIMEOUT",
        default: || "10m".into(),
        parse: parse_duration,
        help: "the llamacc daemon exits after this long without work",
    }
    /// `s3://BUCKET/PREFIX`, or empty.
    OBJECT_STORE: String = {
        name: "object_store",
        env: "LLAMA_OBJECT_STORE",
        default: String::new,
        parse: any_text,
        help: "`s3://BUCKET/PREFIX` for the lambda backend (written by `llama bootstrap`; flag `-store`)",
    }
    /// The AWS region, or empty for the SDK's default.
    REGION: String = {
        name: "region",
        env: "LLAMA_REGION",
        default: String::new,
        parse: any_text,
        help: "AWS region for the lambda backend, else the AWS SDK's default (written by `llama bootstrap`; flag `-region`)",
    }
    /// The Lambda function of actions that name none.
    FUNCTION: String = {
        name: "function",
        env: "LLAMA_FUNCTION",
        default: || "llama".into(),
        parse: |v| {
            if v.trim().is_empty() {
                Err("a Lambda function name".into())
            } else {
                Ok(v.to_string())
            }
        },
        help: "Lambda function of actions that name none (`invoke` and `xargs` name theirs; llamacc's is `LLAMACC_FUNCTION`)",
    }
    /// The CloudFormation stack of `llama bootstrap`.
    STACK: String = {
        name: "stack",
        env: "LLAMA_STACK",
        default: || "llama".into(),
        parse: |v| {
            let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && v.len() <= 128
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if ok {
                Ok(v.to_string())
            } else {
                Err(
                    "a CloudFormation stack name (letters, digits and -, starting with a letter)"
                        .into(),
                )
            }
        },
        help: "the CloudFormation stack `llama bootstrap` makes and `llama doctor` checks",
    }
    /// `REGISTRY/REPOSITORY` for function images, or empty.
    IMAGE_REPOSITORY: String = {
        name: "image_repository",
        env: "LLAMA_IMAGE_REPOSITORY",
        default: String::new,
        parse: |v| trimmed(
            v,
            v.is_empty() || (v.contains('/') && !v.contains("://") && !v.contains('@')),
            "REGISTRY/REPOSITORY, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/llama",
        ),
        help: "`REGISTRY/REPOSITORY` `llama update-function` pushes function images to (written by `llama bootstrap`)",
    }
    /// `HOST[:PORT]` of a Docker Hub mirror, or empty.
    REGISTRY_MIRROR: String = {
        name: "registry_mirror",
        env: "LLAMA_REGISTRY_MIRROR",
        default: String::new,
        parse: |v| trimmed(
            v,
            v.is_empty() || !(v.contains('/') || v.contains(char::is_whitespace)),
            "HOST[:PORT] of a registry mirroring Docker Hub, e.g. mirror.gcr.io",
        ),
        help: "`HOST[:PORT]` of a Docker Hub mirror `llama update-function --base` pulls images through",
    }
    /// The IAM role ARN functions run as, or empty.
    EXECUTION_ROLE: String = {
        name: "execution_role",
        env: "LLAMA_EXECUTION_ROLE",
        default: String::new,
        parse: |v| trimmed(
            v,
            v.is_empty() || v.starts_with("arn:"),
            "an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
        ),
        help: "the IAM role ARN Lambda functions run as (written by `llama bootstrap`)",
    }
    /// Invocations the lambda backend has in flight at once (see
    /// [`Config::remote_jobs`](super::Config::remote_jobs) for when `jobs` stands in).
    REMOTE_JOBS: usize = {
        name: "remote_jobs",
        env: "LLAMA_REMOTE_JOBS",
        default: || "64".into(),
        shown_default: "`64` (or `jobs`, when that is set)",
        parse: parse_jobs,
        help: "invocations the lambda backend (executions the reapi backend) has in flight at once; `llama xargs`'s default `-j` on them",
    }
    /// Whether `invoke` and `xargs` ship the command's own program on remote backends.
    SHIP_COMMAND: bool = {
        name: "ship_command",
        env: "LLAMA_SHIP_COMMAND",
        default: || "true".into(),
        parse: parse_bool,
        help: "remote backends: `llama invoke` and `llama xargs` ship the command's own program (found on this machine's PATH) with its shared libraries and loader, so a function needs no image of its own; off: the function's image provides it (`--ship` still ships what it names)",
    }
    /// S3 requests the lambda backend has in flight at once (uploads, downloads, checks).
    S3_CONCURRENCY: usize = {
        name: "s3_concurrency",
        env: "LLAMA_S3_CONCURRENCY",
        default: || "32".into(),
        parse: parse_jobs,
        help: "S3 requests the lambda backend has in flight at once (the original's -s3-concurrency)",
    }
    /// The REAPI server, `grpc://HOST:PORT` or `grpcs://HOST:PORT`, or empty.
    REAPI_ENDPOINT: String = {
        name: "reapi_endpoint",
        env: "LLAMA_REAPI_ENDPOINT",
        default: String::new,
        parse: |v| {
            let v = v.trim();
            trimmed(
                v,
                v.is_empty() || v.starts_with("grpc://") || v.starts_with("grpcs://"),
                "grpc://HOST:PORT or grpcs://HOST:PORT",
            )
        },
        help: "the Remote Execution API server of the reapi backend: `grpc://HOST:PORT`, or `grpcs://HOST:PORT` for TLS (the system's roots plus `reapi_ca`)",
    }
    /// The REAPI instance name.
    REAPI_INSTANCE: String = {
        name: "reapi_instance",
        env: "LLAMA_REAPI_INSTANCE",
        default: String::new,
        parse: |v| Ok(v.trim().to_string()),
        help: "the REAPI instance name (empty: the server's default instance)",
    }
    /// REAPI platform properties per FUNCTION (`*`: functions not listed).
    REAPI_PLATFORM: Vec<FunctionPlatform> = {
        name: "reapi_platform",
        env: "LLAMA_REAPI_PLATFORM",
        default: String::new,
        parse: parse_platforms,
        help: "REAPI platform properties per FUNCTION, e.g. `gcc: container-image=docker://gcc:14, OSFamily=linux; *: OSFamily=linux` (`*`: functions not listed)",
    }
    /// Headers sent with every REAPI call; names lowercased.
    REAPI_HEADERS: Vec<(String, String)> = {
        name: "reapi_headers",
        env: "LLAMA_REAPI_HEADERS",
        default: String::new,
        parse: parse_headers,
        help: "headers sent with every REAPI call, e.g. `authorization: Bearer TOKEN; x-buildbuddy-api-key: KEY` (values are masked in `llama config`)",
    }
    /// Extra CA certificates for a grpcs:// REAPI server (the file is checked when read).
    REAPI_CA: Option<PathBuf> = {
        name: "reapi_ca",
        env: "LLAMA_REAPI_CA",
        default: String::new,
        parse: pem_path,
        help: "PEM file of CA certificates a grpcs:// REAPI server's certificate may chain to, besides the system's",
    }
    /// The client certificate for mTLS to a grpcs:// REAPI server.
    REAPI_CLIENT_CERT: Option<PathBuf> = {
        name: "reapi_client_cert",
        env: "LLAMA_REAPI_CLIENT_CERT",
        default: String::new,
        parse: pem_path,
        help: "PEM file of the client certificate (chain) llama presents to a grpcs:// REAPI server that requires one (mTLS); with `reapi_client_key`",
    }
    /// The private key of [`REAPI_CLIENT_CERT`].
    REAPI_CLIENT_KEY: Option<PathBuf> = {
        name: "reapi_client_key",
        env: "LLAMA_REAPI_CLIENT_KEY",
        default: String::new,
        parse: pem_path,
        help: "PEM file of the private key of `reapi_client_cert` (PKCS#8, PKCS#1 or SEC1)",
    }
    /// Ask the REAPI server's action cache before executing.
    REAPI_CACHE_READ: bool = {
        name: "reapi_cache_read",
        env: "LLAMA_REAPI_CACHE_READ",
        default: || "true".into(),
        parse: parse_bool,
        help: "look each action up in the REAPI server's action cache before executing it (off: `skip_cache_lookup`)",
    }
    /// Let the REAPI server cache llama's results.
    REAPI_CACHE_WRITE: bool = {
        name: "reapi_cache_write",
        env: "LLAMA_REAPI_CACHE_WRITE",
        default: || "true".into(),
        parse: parse_bool,
        help: "let the REAPI server cache the results of llama's actions (off: they are sent with do_not_cache)",
    }
}
