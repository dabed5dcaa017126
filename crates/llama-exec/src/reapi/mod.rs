//! The reapi executor: each action runs on a Remote Execution API v2 cluster (Buildbarn,
//! BuildBuddy, NativeLink, BuildGrid, EngFlow), over tonic.
//!
//! Per action: the llama action is translated to the REAPI action the server sees (see
//! [`remote_action`]); the remote action cache first (`GetActionResult`, when cache reads are
//! on); then `FindMissingBlobs` and the uploads (`BatchUpdateBlobs` packed under the server's
//! batch limit, ByteStream `Write` in 1 MiB chunks for bigger blobs); then `Execute`, whose
//! stream is resumed with `WaitExecution` when it drops; finally the outputs are downloaded
//! (`BatchReadBlobs`, ByteStream `Read`) into the local store, each verified against its
//! digest.

mod bytestream;
mod cas;
mod connect;
mod execute;
mod retry;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use llama_core::{
    Digest, FUNCTION_PROPERTY, PreparedAction, ResultLimits, STDIN_PROPERTY, Store, StoreError,
    reapi,
};
use prost::Message;
use tokio::sync::{OnceCell, Semaphore};
use tonic::{Code, Status};

use self::cas::Uploading;
use self::connect::Conn;
pub use self::connect::ServerInfo;
use self::execute::Execution;
use crate::executor::{ExecError, ExecOutcome, Executor, Termination};
use crate::usage::Usage;

const NAME: &str = "reapi";

/// Size of one ByteStream `Write` or `Read` message: well under gRPC's default 4 MiB message
/// limit, which most servers keep.
pub const BYTESTREAM_CHUNK: usize = 1 << 20;

/// The largest batch request llama sends, whatever the server advertises: gRPC's default
/// receive limit is 4 MiB per message, and a batch's framing needs room too.
const MAX_BATCH_BYTES: u64 = 4 * 1024 * 1024 - 64 * 1024;

/// Per-blob framing allowance when packing a batch (digest, field tags, lengths).
const BATCH_BLOB_OVERHEAD: u64 = 256;

/// How long the first contact with a server is retried (a wrong endpoint fails this fast).
const CONNECT_WINDOW: Duration = Duration::from_secs(8);

/// How long a failure to reach the server is remembered before it is tried again.
const UNREACHABLE_MEMORY: Duration = Duration::from_secs(30);

/// Digests per `FindMissingBlobs` request (about 80 bytes each: well under 4 MiB).
const FIND_MISSING_CHUNK: usize = 10_000;

/// The SHA-256 value of REAPI's `DigestFunction.Value`.
const SHA256: i32 = reapi::digest_function::Value::Sha256 as i32;

/// Settings of a [`ReapiExecutor`].
#[derive(Debug, Clone)]
pub struct ReapiConfig {
    /// `grpc://HOST:PORT` (plaintext) or `grpcs://HOST:PORT` (TLS).
    pub endpoint: String,
    /// The REAPI instance name ("" for the server's default instance).
    pub instance: String,
    /// Metadata sent with every call, e.g. `("authorization", "Bearer TOKEN")` or
    /// `("x-buildbuddy-api-key", KEY)`.
    pub headers: Vec<(String, String)>,
    /// Platform properties of each FUNCTION (e.g. `container-image`), sent as the REAPI
    /// platform of actions naming that function. The entry `*` serves functions not
    /// listed; without it they get no properties.
    pub platforms: HashMap<String, Vec<(String, String)>>,
    /// The function of actions that name none in their `llama-function` property.
    pub default_function: String,
    /// Ask the remote action cache before executing.
    pub cache_read: bool,
    /// Let the server record results in its action cache (off: actions are sent with
    /// `do_not_cache`).
    pub cache_write: bool,
    /// PEM file of the CA that signs the server's certificate (grpcs only; the system's
    /// roots are trusted too).
    pub tls_ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for servers that require mTLS.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// Actions in flight at once.
    pub concurrency: usize,
    /// The command's deadline when the action sets none.
    pub default_timeout: Duration,
    /// How long a server that cannot be reached is retried (with exponential backoff)
    /// before the action fails. A dropped Execute stream is resumed within the same window.
    pub retry_window: Duration,
    /// Bounds on what a result (executed or from the server's action cache) may expand
    /// to; checked before its blobs are downloaded.
    pub result_limits: ResultLimits,
}

impl ReapiConfig {
    /// Settings with defaults for everything but the endpoint.
    pub fn new(endpoint: impl Into<String>) -> ReapiConfig {
        ReapiConfig {
            endpoint: endpoint.into(),
            instance: String::new(),
            headers: Vec::new(),
            platforms: HashMap::new(),
            default_function: "llama".into(),
            cache_read: true,
            cache_write: true,
            tls_ca: None,
            tls_client_cert: None,
            concurrency: crate::remote::DEFAULT_REMOTE_JOBS,
            default_timeout: Duration::from_secs(900),
            retry_window: Duration::from_secs(60),
            result_limits: ResultLimits::default(),
        }
    }
}

/// The REAPI action sent for a llama action, with the blobs it adds.
#[derive(Debug, Clone)]
pub struct RemoteAction {
    /// The Action message the server sees.
    pub action: reapi::Action,
    /// Its digest: the key in the remote action cache.
    pub action_digest: Digest,
    /// The encoded Action.
    pub action_bytes: Vec<u8>,
    /// The Command message the server sees.
    pub command: reapi::Command,
    /// The encoded Command and its digest.
    pub command_bytes: Vec<u8>,
    /// The Command's digest.
    pub command_digest: Digest,
}

/// Translates a llama action for a REAPI server.
///
/// llama's own platform properties are not REAPI's: servers reject properties they do not
/// know. `llama-function` leaves the platform and goes into the Action's `salt` (so results
/// of one function are still never served for another), and the function's configured
/// properties (`platforms`) take its place. `llama-stdin` cannot be honoured (REAPI has no
/// standard input): such actions are refused.
pub fn remote_action(
    action: &PreparedAction,
    function: &str,
    platform: &[(String, String)],
    cache_write: bool,
) -> Result<RemoteAction, ExecError> {
    if action.stdin.is_some() || action.platform_property(STDIN_PROPERTY).is_some() {
        return Err(ExecError::InvalidAction(
            "the reapi backend cannot feed standard input to a command (the Remote Execution API has no stdin): \
             pass the data as an input file instead (e.g. `-f FILE` and `sh -c 'CMD < FILE'`), or use another backend"
                .into(),
        ));
    }
    let platform = llama_core::canonical_platform(platform.to_vec());
    #[allow(deprecated)]
    let command = reapi::Command {
        platform: platform.clone(),
        ..action.command.clone()
    };
    let command_bytes = command.encode_to_vec();
    let command_digest = Digest::of_bytes(&command_bytes);
    let remote = reapi::Action {
        command_digest: Some(command_digest.to_proto()),
        input_root_digest: action.action.input_root_digest.clone(),
        timeout: action.action.timeout,
        do_not_cache: action.action.do_not_cache || !cache_write,
        salt: format!("{FUNCTION_PROPERTY}={function}").into_bytes(),
        platform,
    };
    let action_bytes = remote.encode_to_vec();
    Ok(RemoteAction {
        action_digest: Digest::of_bytes(&action_bytes),
        action: remote,
        action_bytes,
        command,
        command_bytes,
        command_digest,
    })
}

/// Runs actions on a Remote Execution API v2 server.
pub struct ReapiExecutor {
    store: Store,
    config: ReapiConfig,
    conn: OnceCell<Conn>,
    /// Until when the server is taken to be unreachable, and why (see [`Self::conn`]).
    unreachable: Mutex<Option<(tokio::time::Instant, String)>>,
    permits: Semaphore,
    /// Blobs known to be in the remote CAS (found or uploaded by this process).
    present: Mutex<HashSet<Digest>>,
    /// Blobs an action is uploading now, each with a lock the other actions that need it
    /// wait on: concurrent compiles share the toolchain and headers, and each blob must go
    /// up once.
    uploading: Arc<Mutex<Uploading>>,
    stats: Stats,
    /// Notices for the user not yet taken (see [`Executor::take_notices`]).
    notices: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Stats {
    executions: AtomicU64,
    /// Calls made to the server (each attempt, each ByteStream transfer): round trips.
    calls: AtomicU64,
    cache_hits: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    warned_reconnect: std::sync::atomic::AtomicBool,
}

/// The outcome of an RPC attempt that may be retried.
type Rpc<T> = Result<T, Status>;

impl ReapiExecutor {
    /// An executor storing results in `store`. It connects on first use (lazily: a server
    /// that is down is retried per [`ReapiConfig::retry_window`]).
    pub fn new(store: Store, config: ReapiConfig) -> ReapiExecutor {
        ReapiExecutor {
            permits: Semaphore::new(config.concurrency.max(1)),
            store,
            config,
            conn: OnceCell::new(),
            unreachable: Mutex::new(None),
            present: Mutex::new(HashSet::new()),
            uploading: Arc::new(Mutex::new(HashMap::new())),
            stats: Stats::default(),
            notices: Mutex::new(Vec::new()),
        }
    }

    fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Connects (once; later calls reuse the connection) and returns what the server said
    /// about itself: `llama doctor`'s check that the server answers, speaks SHA-256 and
    /// executes, before it sends an action. The error says what failed and what to set.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves no connection made, and the next call tries
    /// again.
    pub async fn server_info(&self) -> Result<ServerInfo, ExecError> {
        Ok(self.conn().await?.info.clone())
    }

    fn err(&self, message: impl Into<String>) -> ExecError {
        ExecError::Remote {
            executor: NAME,
            message: message.into(),
        }
    }

    fn function_of<'a>(&'a self, action: &'a PreparedAction) -> &'a str {
        action
            .platform_property(FUNCTION_PROPERTY)
            .filter(|f| !f.is_empty())
            .unwrap_or(&self.config.default_function)
    }

    /// Serves, uploads, executes, downloads.
    async fn run(&self, conn: &Conn, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        let function = self.function_of(action).to_string();
        let platform = self
            .config
            .platforms
            .get(&function)
            .or_else(|| self.config.platforms.get("*"))
            .cloned()
            .unwrap_or_default();
        let remote = remote_action(action, &function, &platform, self.config.cache_write)?;
        if self.config.cache_read
            && !remote.action.do_not_cache
            && let Some(result) = self.get_action_result(conn, &remote.action_digest).await?
        {
            match self.fetch_result_blobs(conn, &result).await {
                Ok(()) => {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    let result = self.normalize_result(result)?;
                    return Ok(ExecOutcome {
                        termination: Termination::Exited(result.exit_code),
                        result,
                        cached: true,
                    });
                }
                Err(e @ ExecError::Refused { .. }) => tracing::warn!(
                    "ignored the remote action cache entry of {}: {e}; executing",
                    remote.action_digest
                ),
                Err(e) => tracing::debug!(
                    "the remote action cache entry of {} cannot be fetched ({e}); executing",
                    remote.action_digest
                ),
            }
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ExecError::Task(e.to_string()))?;
        let mut reuploaded = false;
        let response = loop {
            self.upload_inputs(conn, action, &remote).await?;
            self.stats.executions.fetch_add(1, Ordering::Relaxed);
            let response = match self.execute_remote(conn, &remote).await {
                Ok(r) => r,
                Err(Execution::Precondition {
                    error: e,
                    platform: false,
                }) if !reuploaded => {
                    // The known-present set was stale: forget it and upload again.
                    tracing::debug!("{e}; uploading the inputs again");
                    lock(&self.present).clear();
                    reuploaded = true;
                    continue;
                }
                Err(Execution::Precondition { error: e, .. } | Execution::Failed(e)) => {
                    return Err(e);
                }
            };
            let status = response.status.clone().unwrap_or_default();
            if status.code == Code::FailedPrecondition as i32 && !reuploaded {
                tracing::debug!(
                    "{}: {}; uploading the inputs again",
                    self.endpoint(),
                    status.message
                );
                lock(&self.present).clear();
                reuploaded = true;
                continue;
            }
            break response;
        };
        let status = response.status.clone().unwrap_or_default();
        let timed_out = status.code == Code::DeadlineExceeded as i32;
        if status.code != 0 && !timed_out {
            return Err(self.err(format!(
                "executing action {} at {} failed: {:?}: {}{}",
                remote.action_digest,
                self.endpoint(),
                Code::from_i32(status.code),
                status.message,
                if response.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", response.message)
                }
            )));
        }
        let Some(result) = response.result else {
            if timed_out {
                return Ok(ExecOutcome {
                    result: reapi::ActionResult::default(),
                    termination: Termination::TimedOut(
                        action.timeout().unwrap_or(self.config.default_timeout),
                    ),
                    cached: false,
                });
            }
            return Err(self.err(format!(
                "executing action {} at {}: the server returned no result",
                remote.action_digest,
                self.endpoint()
            )));
        };
        self.fetch_result_blobs(conn, &result).await?;
        let result = self.normalize_result(result)?;
        let termination = if timed_out {
            Termination::TimedOut(action.timeout().unwrap_or(self.config.default_timeout))
        } else {
            Termination::Exited(result.exit_code)
        };
        Ok(ExecOutcome {
            result,
            termination,
            cached: response.cached_result,
        })
    }

    /// Moves inline stdout / stderr into the store, so the result names them by digest as
    /// the engine expects.
    fn normalize_result(
        &self,
        mut result: reapi::ActionResult,
    ) -> Result<reapi::ActionResult, StoreError> {
        if result.stdout_digest.is_none() && !result.stdout_raw.is_empty() {
            result.stdout_digest = Some(self.store.put_bytes(&result.stdout_raw)?.to_proto());
        }
        if result.stderr_digest.is_none() && !result.stderr_raw.is_empty() {
            result.stderr_digest = Some(self.store.put_bytes(&result.stderr_raw)?.to_proto());
        }
        result.stdout_raw.clear();
        result.stderr_raw.clear();
        Ok(result)
    }
}

#[async_trait]
impl Executor for ReapiExecutor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn execute(&self, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        // REAPI names are protobuf strings: a name that is not UTF-8 cannot be sent as it is,
        // and sending llama's escape would make the server create a different name.
        if let Some(name) = llama_core::escaped_name_in(&action.command, &action.input) {
            return Err(ExecError::InvalidAction(format!(
                "{name} is not UTF-8, and a REAPI server only takes UTF-8 names; rename it, or run this with backend = local (LLAMA_BACKEND=local)"
            )));
        }
        let conn = self.conn().await?;
        self.run(conn, action).await
    }

    fn usage(&self) -> Option<Usage> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Some(Usage {
            executor: NAME,
            invocations: load(&self.stats.executions),
            remote_cache_hits: load(&self.stats.cache_hits),
            bytes_up: load(&self.stats.bytes_up),
            bytes_down: load(&self.stats.bytes_down),
            calls: load(&self.stats.calls),
            ..Usage::default()
        })
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.notices))
    }
}

fn remote_error(message: String) -> ExecError {
    ExecError::Remote {
        executor: NAME,
        message,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
