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

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use bazel_remote_apis::google::longrunning::{Operation, operation};
use llama_core::{
    BlobSource, Digest, FUNCTION_PROPERTY, PreparedAction, STDIN_PROPERTY, Store, StoreError, reapi,
};
use prost::Message;
use reapi::action_cache_client::ActionCacheClient;
use reapi::capabilities_client::CapabilitiesClient;
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use reapi::execution_client::ExecutionClient;
use tokio::io::AsyncReadExt;
use tokio::sync::{OnceCell, Semaphore};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use crate::executor::{ExecError, ExecOutcome, Executor, Termination};
use crate::remote::result_blobs;
use crate::usage::Usage;
use llama_core::{ResultLimits, check_result_shape, check_tree};

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

/// Blobs being uploaded, each with the lock its uploader holds.
type Uploading = HashMap<Digest, Arc<tokio::sync::Mutex<()>>>;

/// The blobs one action claimed for upload; dropping it releases them to the waiters.
struct Claim {
    uploading: Arc<Mutex<Uploading>>,
    held: Vec<(Digest, tokio::sync::OwnedMutexGuard<()>)>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut uploading = lock(&self.uploading);
        for (digest, _) in &self.held {
            uploading.remove(digest);
        }
    }
}

/// A connection and what the server said about itself.
struct Conn {
    channel: Channel,
    headers: Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
    /// The largest batch request to send.
    batch_limit: u64,
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

    fn err(&self, message: impl Into<String>) -> ExecError {
        ExecError::Remote {
            executor: NAME,
            message: message.into(),
        }
    }

    /// A gRPC failure, explained: what failed, at which endpoint, and what to do.
    fn status_error(&self, what: &str, status: &Status) -> ExecError {
        let endpoint = self.endpoint();
        let detail = status.message();
        let hint = self.tls_hint(status).unwrap_or_else(|| match status.code() {
            Code::Unavailable => format!(
                "the server at {endpoint} cannot be reached or is restarting; check that it is up and \
                 that LLAMA_REAPI_ENDPOINT is right"
            ),
            Code::Unauthenticated | Code::PermissionDenied => {
                "check the credentials sent in LLAMA_REAPI_HEADERS (e.g. `authorization: Bearer TOKEN` \
                 or `x-buildbuddy-api-key: KEY`)"
                    .to_string()
            }
            Code::FailedPrecondition if what.starts_with("Execute") => {
                "the server refused the action; if it names a platform property, set the \
                 function's properties to ones the server accepts (reapi_platform / LLAMA_REAPI_PLATFORM)"
                    .to_string()
            }
            Code::NotFound | Code::InvalidArgument
                if detail.contains("instance") || detail.contains("Instance") =>
            {
                format!(
                    "check LLAMA_REAPI_INSTANCE (now {:?})",
                    self.config.instance
                )
            }
            Code::Unimplemented => format!(
                "the server at {endpoint} does not offer this service; is it a Remote Execution API v2 \
                 server with execution enabled?"
            ),
            _ => String::new(),
        });
        let mut message = format!("{what} at {endpoint} failed: {:?}: {detail}", status.code());
        // A transport failure's message is generic ("operation was canceled"); the error
        // under it says what happened ("connection closed").
        if let Some(cause) = root_cause(status).filter(|c| !detail.contains(c.as_str())) {
            message.push_str(&format!(" ({cause})"));
        }
        if !hint.is_empty() {
            message.push_str("; ");
            message.push_str(&hint);
        }
        self.err(message)
    }

    /// What to do about a failure of TLS: a server certificate this machine does not trust
    /// (`reapi_ca`), or a server that hangs up right after the handshake, as one that wants a
    /// client certificate does (`reapi_client_cert`; TLS 1.3 completes the client's side of
    /// the handshake before the server checks the client, and its alert is lost with the
    /// connection).
    fn tls_hint(&self, status: &Status) -> Option<String> {
        let endpoint = self.endpoint();
        if !endpoint.trim().starts_with("grpcs://") {
            return None;
        }
        let text = status_text(status);
        if text.contains("invalid peer certificate") {
            if text.contains("NotValidForName") {
                return Some(format!(
                    "the server's TLS certificate is not issued for the host of {endpoint}: \
                     connect by a name or address it lists (LLAMA_REAPI_ENDPOINT)"
                ));
            }
            return Some(match &self.config.tls_ca {
                None => "the server's TLS certificate is not signed by a CA this machine trusts: \
                         set reapi_ca (LLAMA_REAPI_CA) to the PEM file of the CA that signed it"
                    .to_string(),
                Some(ca) => format!(
                    "the server's TLS certificate is signed neither by a CA this machine trusts \
                     nor by one in reapi_ca ({}): set reapi_ca (LLAMA_REAPI_CA) to the PEM file \
                     of the CA that signed it",
                    ca.display()
                ),
            });
        }
        // A connection that was made (not refused, not unresolved) and broke on the first
        // call. How it reads depends on timing: CANCELLED over "connection closed", UNKNOWN
        // over "peer closed connection without sending TLS close_notify", ...
        let first_contact = self.conn.get().is_none();
        let hung_up = text.contains("received fatal alert")
            || (first_contact
                && lost(status)
                && !["tcp connect error", "dns error", "timed out"]
                    .iter()
                    .any(|m| text.contains(m)));
        if !hung_up {
            return None;
        }
        Some(match &self.config.tls_client_cert {
            None => "the server closed the connection right after the TLS handshake; if it \
                     requires a client certificate (mTLS), set reapi_client_cert and \
                     reapi_client_key (LLAMA_REAPI_CLIENT_CERT, LLAMA_REAPI_CLIENT_KEY) to the \
                     PEM files of one it accepts"
                .to_string(),
            Some((cert, _)) => format!(
                "the server closed the connection after the TLS handshake: does it accept the \
                 client certificate in reapi_client_cert ({})?",
                cert.display()
            ),
        })
    }

    /// Retries `call` while the server is unavailable, with exponential backoff, for at
    /// most the retry window; a connection lost meanwhile is said once (see
    /// [`Self::lost_connection`]).
    async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ExecError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Rpc<T>>,
    {
        self.retrying_within(self.config.retry_window, true, what, call)
            .await
    }

    /// [`Self::retrying`] within `window`; `connected`: the server was reached before (a
    /// failure is then a lost connection, not a wrong endpoint).
    async fn retrying_within<T, F, Fut>(
        &self,
        window: Duration,
        connected: bool,
        what: &str,
        mut call: F,
    ) -> Result<T, ExecError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Rpc<T>>,
    {
        let mut backoff = Backoff::new(window, Duration::from_millis(100));
        loop {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            match call().await {
                Ok(v) => return Ok(v),
                Err(s) if transient(&s) => {
                    let Some(delay) = backoff.next() else {
                        return Err(self.status_error(what, &s));
                    };
                    if connected {
                        self.lost_connection(&s);
                    }
                    tracing::debug!("{what} at {}: {s}; retrying in {delay:?}", self.endpoint());
                    tokio::time::sleep(delay).await;
                }
                Err(s) => return Err(self.status_error(what, &s)),
            }
        }
    }

    /// Says once per executor, as a warning and as a notice for the user, that the server
    /// went away and the actions in flight wait for it: a build that pauses for a restart
    /// of the server should say why, and only once however many actions noticed.
    fn lost_connection(&self, status: &Status) {
        if !lost(status) || self.stats.warned_reconnect.swap(true, Ordering::Relaxed) {
            return;
        }
        let notice = format!(
            "reapi: lost the connection to {} ({:?}: {}); waiting for it to come back and \
             resuming the actions in flight (said once)",
            self.endpoint(),
            status.code(),
            status.message()
        );
        tracing::warn!("{notice}");
        lock(&self.notices).push(notice);
    }

    fn request<T>(&self, conn: &Conn, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (k, v) in &conn.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        request
    }

    /// The connection, made on first use. A server that could not be reached is not tried
    /// again for [`UNREACHABLE_MEMORY`]: the actions meanwhile fail at once with the same
    /// error (llamacc compiles them here) instead of each waiting out the retries.
    async fn conn(&self) -> Result<&Conn, ExecError> {
        // Checked inside the initialiser too: callers queued behind a failing first attempt
        // then fail at once rather than each trying again.
        let remembered = || {
            lock(&self.unreachable)
                .clone()
                .filter(|(until, _)| tokio::time::Instant::now() < *until)
                .map(|(_, message)| self.err(message))
        };
        if let Some(e) = remembered() {
            return Err(e);
        }
        self.conn
            .get_or_try_init(|| async {
                if let Some(e) = remembered() {
                    return Err(e);
                }
                let connected = self.connect().await;
                if let Err(ExecError::Remote { message, .. }) = &connected {
                    *lock(&self.unreachable) = Some((
                        tokio::time::Instant::now() + UNREACHABLE_MEMORY,
                        message.clone(),
                    ));
                }
                connected
            })
            .await
    }

    /// Builds the channel and asks for the server's capabilities.
    async fn connect(&self) -> Result<Conn, ExecError> {
        let endpoint = self.endpoint().trim();
        let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("grpcs://") {
            (true, rest)
        } else if let Some(rest) = endpoint.strip_prefix("grpc://") {
            (false, rest)
        } else {
            return Err(self.err(format!(
                "endpoint {endpoint:?} is not grpc://HOST:PORT or grpcs://HOST:PORT; set LLAMA_REAPI_ENDPOINT"
            )));
        };
        let url = format!("{}://{rest}", if tls { "https" } else { "http" });
        let mut ep = Endpoint::from_shared(url)
            .map_err(|e| self.err(format!("endpoint {endpoint:?} is not usable: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if tls {
            let mut config = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &self.config.tls_ca {
                let pem = tokio::fs::read(ca).await.map_err(|e| {
                    self.err(format!(
                        "reading the CA certificates of reapi_ca, {}: {e}",
                        ca.display()
                    ))
                })?;
                config = config.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &self.config.tls_client_cert {
                let read = |key: &'static str, p: &PathBuf| {
                    let p = p.clone();
                    async move {
                        tokio::fs::read(&p)
                            .await
                            .map_err(|e| self.err(format!("reading {key}, {}: {e}", p.display())))
                    }
                };
                config = config.identity(tonic::transport::Identity::from_pem(
                    read("reapi_client_cert", cert).await?,
                    read("reapi_client_key", key).await?,
                ));
            }
            ep = ep.tls_config(config).map_err(|e| {
                self.err(format!(
                    "TLS settings for {endpoint} (reapi_ca, reapi_client_cert, \
                         reapi_client_key): {e}"
                ))
            })?;
        }
        let channel = ep.connect_lazy();
        let mut headers = Vec::new();
        for (k, v) in &self.config.headers {
            let key = k.parse().map_err(|_| {
                self.err(format!(
                    "{k:?} is not a valid header name (LLAMA_REAPI_HEADERS)"
                ))
            })?;
            let value = v.parse().map_err(|_| {
                self.err(format!(
                    "the value of header {k} is not printable ASCII (LLAMA_REAPI_HEADERS)"
                ))
            })?;
            headers.push((key, value));
        }
        let mut conn = Conn {
            channel,
            headers,
            batch_limit: MAX_BATCH_BYTES,
        };
        // A server that was never reached is given less time than one that drops mid-build:
        // it is more likely a wrong endpoint than a restart.
        let caps = self
            .retrying_within(
                self.config.retry_window.min(CONNECT_WINDOW),
                false,
                "GetCapabilities",
                || {
                    let mut client = CapabilitiesClient::new(conn.channel.clone());
                    let request = self.request(
                        &conn,
                        reapi::GetCapabilitiesRequest {
                            instance_name: self.config.instance.clone(),
                        },
                    );
                    async move {
                        client
                            .get_capabilities(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                },
            )
            .await?;
        let cache = caps.cache_capabilities.unwrap_or_default();
        if !cache.digest_functions.is_empty() && !cache.digest_functions.contains(&SHA256) {
            return Err(self.err(format!(
                "the server at {endpoint} (instance {:?}) does not accept SHA-256 digests (it offers {:?}); \
                 llama only speaks SHA-256: configure the server or instance for it",
                self.config.instance, cache.digest_functions
            )));
        }
        if let Ok(limit) = u64::try_from(cache.max_batch_total_size_bytes)
            && limit > 0
        {
            conn.batch_limit = limit.min(MAX_BATCH_BYTES);
        }
        if caps
            .execution_capabilities
            .as_ref()
            .is_some_and(|e| !e.exec_enabled)
        {
            return Err(self.err(format!(
                "the server at {endpoint} (instance {:?}) has remote execution disabled; \
                 point LLAMA_REAPI_ENDPOINT / LLAMA_REAPI_INSTANCE at one that executes",
                self.config.instance
            )));
        }
        Ok(conn)
    }

    fn cas(&self, conn: &Conn) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(conn.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// One unary CAS call, retried: each attempt gets a fresh client and `message` with the
    /// connection's headers.
    async fn cas_call<M, R, F, Fut>(
        &self,
        conn: &Conn,
        what: &str,
        message: M,
        call: F,
    ) -> Result<R, ExecError>
    where
        M: Clone,
        F: Fn(ContentAddressableStorageClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Rpc<tonic::Response<R>>>,
    {
        self.retrying(what, || {
            call(self.cas(conn), self.request(conn, message.clone()))
        })
        .await
        .map(tonic::Response::into_inner)
    }

    fn function_of<'a>(&'a self, action: &'a PreparedAction) -> &'a str {
        action
            .platform_property(FUNCTION_PROPERTY)
            .filter(|f| !f.is_empty())
            .unwrap_or(&self.config.default_function)
    }

    /// The remote action cache's entry, if any.
    async fn get_action_result(
        &self,
        conn: &Conn,
        digest: &Digest,
    ) -> Result<Option<reapi::ActionResult>, ExecError> {
        let got = self
            .retrying("GetActionResult", || {
                let mut client = ActionCacheClient::new(conn.channel.clone())
                    .max_decoding_message_size(64 << 20);
                let request = self.request(
                    conn,
                    reapi::GetActionResultRequest {
                        instance_name: self.config.instance.clone(),
                        action_digest: Some(digest.to_proto()),
                        digest_function: SHA256,
                        ..Default::default()
                    },
                );
                async move {
                    match client.get_action_result(request).await {
                        Ok(r) => Ok(Some(r.into_inner())),
                        Err(s) if s.code() == Code::NotFound => Ok(None),
                        Err(s) => Err(s),
                    }
                }
            })
            .await?;
        Ok(got)
    }

    /// Makes every blob of the action present in the remote CAS.
    async fn upload_inputs(
        &self,
        conn: &Conn,
        action: &PreparedAction,
        remote: &RemoteAction,
    ) -> Result<(), ExecError> {
        let mut blobs: HashMap<Digest, BlobSource> = HashMap::new();
        blobs.insert(
            remote.action_digest,
            BlobSource::Bytes(remote.action_bytes.as_slice().into()),
        );
        blobs.insert(
            remote.command_digest,
            BlobSource::Bytes(remote.command_bytes.as_slice().into()),
        );
        for (digest, bytes) in &action.input.directories {
            blobs.insert(*digest, BlobSource::Bytes(bytes.as_slice().into()));
        }
        for (digest, source) in &action.input.files {
            blobs.insert(*digest, source.clone());
        }
        let candidates: Vec<Digest> = {
            let present = lock(&self.present);
            blobs
                .keys()
                .filter(|d| d.size() > 0 && !present.contains(d))
                .copied()
                .collect()
        };
        // Blobs another action is uploading are waited for, not sent again.
        let mut claim = Claim {
            uploading: self.uploading.clone(),
            held: Vec::new(),
        };
        let mut others = Vec::new();
        let candidates: Vec<Digest> = {
            let mut uploading = lock(&self.uploading);
            candidates
                .into_iter()
                .filter(|d| match uploading.get(d) {
                    Some(theirs) => {
                        others.push(theirs.clone());
                        false
                    }
                    None => {
                        let mine = Arc::new(tokio::sync::Mutex::new(()));
                        if let Ok(guard) = mine.clone().try_lock_owned() {
                            uploading.insert(*d, mine);
                            claim.held.push((*d, guard));
                        }
                        true
                    }
                })
                .collect()
        };
        let missing = self.find_missing(conn, &candidates).await?;
        {
            let missing: HashSet<&Digest> = missing.iter().collect();
            let mut present = lock(&self.present);
            present.extend(candidates.iter().filter(|d| !missing.contains(d)));
        }
        let mut small: Vec<(Digest, BlobSource)> = Vec::new();
        let mut large = tokio::task::JoinSet::new();
        for digest in missing {
            let source = blobs
                .remove(&digest)
                .expect("missing blobs come from the set");
            if digest.size() + BATCH_BLOB_OVERHEAD <= conn.batch_limit {
                small.push((digest, source));
            } else {
                self.spawn_write(conn, &mut large, digest, source, None, Duration::ZERO);
            }
        }
        // Small blobs, largest first into batches under the limit.
        small.sort_by_key(|(d, _)| std::cmp::Reverse(d.size()));
        let mut batch: Vec<reapi::batch_update_blobs_request::Request> = Vec::new();
        let mut batch_bytes = 0u64;
        for (digest, source) in small {
            let data = read_source(&digest, &source).await?;
            let cost = digest.size() + BATCH_BLOB_OVERHEAD;
            if batch_bytes + cost > conn.batch_limit && !batch.is_empty() {
                self.batch_update(conn, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += cost;
            batch.push(reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data,
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.batch_update(conn, batch).await?;
        }
        while let Some(joined) = large.join_next().await {
            let (digest, source, mut backoff, result) =
                joined.map_err(|e| ExecError::Task(e.to_string()))?;
            match result {
                Ok(()) => {
                    self.stats
                        .bytes_up
                        .fetch_add(digest.size(), Ordering::Relaxed);
                    lock(&self.present).insert(digest);
                }
                Err(Upload::Source(e)) => return Err(e),
                Err(Upload::Rpc(s)) => {
                    let delay = transient(&s)
                        .then(|| self.retry_backoff(&mut backoff).next())
                        .flatten();
                    let Some(delay) = delay else {
                        return Err(self.status_error(&format!("ByteStream Write of {digest}"), &s));
                    };
                    // Again from the start, under a new upload id.
                    self.lost_connection(&s);
                    tracing::debug!("ByteStream Write of {digest}: {s}; again in {delay:?}");
                    self.spawn_write(conn, &mut large, digest, source, backoff, delay);
                }
            }
        }
        drop(claim);
        for theirs in others {
            // Their uploader is done (or failed: Execute then reports the blob missing, and
            // the action uploads it again).
            let _done = theirs.lock().await;
        }
        Ok(())
    }

    /// Uploads one blob with ByteStream Write after `wait`, in a task of `tasks`.
    fn spawn_write(
        &self,
        conn: &Conn,
        tasks: &mut tokio::task::JoinSet<Written>,
        digest: Digest,
        source: BlobSource,
        backoff: Option<Backoff>,
        wait: Duration,
    ) {
        let channel = conn.channel.clone();
        let request_meta = self.request(conn, ());
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            instance_prefix(&self.config.instance),
            upload_id(&digest),
            digest.hex(),
            digest.size()
        );
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let result = write_blob(channel, request_meta, resource, &digest, &source).await;
            (digest, source, backoff, result)
        });
    }

    /// Downloads one blob with ByteStream Read after `wait`, in a task of `tasks`.
    fn spawn_read(
        &self,
        conn: &Conn,
        tasks: &mut tokio::task::JoinSet<Read>,
        digest: Digest,
        backoff: Option<Backoff>,
        wait: Duration,
    ) {
        let channel = conn.channel.clone();
        let request = self.request(
            conn,
            ReadRequest {
                resource_name: format!(
                    "{}blobs/{}/{}",
                    instance_prefix(&self.config.instance),
                    digest.hex(),
                    digest.size()
                ),
                read_offset: 0,
                read_limit: 0,
            },
        );
        let store = self.store.clone();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let result = read_blob(channel, request, &digest, &store).await;
            (digest, backoff, result)
        });
    }

    /// The backoff of a ByteStream transfer that failed, started at its first failure.
    fn retry_backoff<'a>(&self, backoff: &'a mut Option<Backoff>) -> &'a mut Backoff {
        backoff.get_or_insert_with(|| {
            Backoff::new(self.config.retry_window, Duration::from_millis(100))
        })
    }

    async fn find_missing(
        &self,
        conn: &Conn,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, ExecError> {
        let mut missing = Vec::new();
        for chunk in digests.chunks(FIND_MISSING_CHUNK) {
            let request = reapi::FindMissingBlobsRequest {
                instance_name: self.config.instance.clone(),
                blob_digests: chunk.iter().map(Digest::to_proto).collect(),
                digest_function: SHA256,
            };
            let got = self
                .cas_call(conn, "FindMissingBlobs", request, |mut c, r| async move {
                    c.find_missing_blobs(r).await
                })
                .await?;
            for d in &got.missing_blob_digests {
                missing.push(Digest::from_proto(d).map_err(|e| {
                    self.err(format!("FindMissingBlobs answered a bad digest: {e}"))
                })?);
            }
        }
        Ok(missing)
    }

    async fn batch_update(
        &self,
        conn: &Conn,
        requests: Vec<reapi::batch_update_blobs_request::Request>,
    ) -> Result<(), ExecError> {
        let bytes: u64 = requests.iter().map(|r| r.data.len() as u64).sum();
        let request = reapi::BatchUpdateBlobsRequest {
            instance_name: self.config.instance.clone(),
            requests,
            digest_function: SHA256,
        };
        let got = self
            .cas_call(conn, "BatchUpdateBlobs", request, |mut c, r| async move {
                c.batch_update_blobs(r).await
            })
            .await?;
        for response in got.responses {
            let status = response.status.unwrap_or_default();
            let digest = response
                .digest
                .as_ref()
                .and_then(|d| Digest::from_proto(d).ok());
            if status.code != 0 {
                return Err(self.err(format!(
                    "BatchUpdateBlobs at {} refused blob {}: {:?}: {}",
                    self.endpoint(),
                    digest.map(|d| d.to_string()).unwrap_or_default(),
                    Code::from_i32(status.code),
                    status.message
                )));
            }
            if let Some(d) = digest {
                lock(&self.present).insert(d);
            }
        }
        self.stats.bytes_up.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Executes the action and waits for its result, resuming a dropped stream.
    async fn execute_remote(
        &self,
        conn: &Conn,
        remote: &RemoteAction,
    ) -> Result<reapi::ExecuteResponse, Execution> {
        // The window counts from when the server was last heard from: an action that waited
        // long in the queue gets as long as any other for the server to come back.
        let mut backoff = Backoff::new(self.config.retry_window, Duration::from_millis(200));
        let mut operation_name: Option<String> = None;
        loop {
            let mut client =
                ExecutionClient::new(conn.channel.clone()).max_decoding_message_size(64 << 20);
            let stream = match &operation_name {
                None => {
                    let request = self.request(
                        conn,
                        reapi::ExecuteRequest {
                            instance_name: self.config.instance.clone(),
                            skip_cache_lookup: !self.config.cache_read,
                            action_digest: Some(remote.action_digest.to_proto()),
                            digest_function: SHA256,
                            ..Default::default()
                        },
                    );
                    client.execute(request).await
                }
                Some(name) => {
                    let request =
                        self.request(conn, reapi::WaitExecutionRequest { name: name.clone() });
                    client.wait_execution(request).await
                }
            };
            let status = match stream {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(op)) => {
                                backoff.reset();
                                if !op.name.is_empty() {
                                    operation_name = Some(op.name.clone());
                                }
                                if op.done {
                                    return self.finished(op);
                                }
                            }
                            Ok(None) => {
                                break Status::unavailable(
                                    "the Execute stream ended before the operation was done",
                                );
                            }
                            Err(s) => break s,
                        }
                    }
                }
                Err(s) => s,
            };
            // An operation the server forgot (it restarted without persisting it): run again.
            if status.code() == Code::NotFound && operation_name.is_some() {
                tracing::debug!(
                    "operation {operation_name:?} is unknown to {}; executing again",
                    self.endpoint()
                );
                operation_name = None;
                continue;
            }
            let delay = match transient(&status) {
                true => backoff.next(),
                false => None,
            };
            let Some(delay) = delay else {
                let what = match &operation_name {
                    Some(name) => format!("WaitExecution of operation {name}"),
                    None => format!("Execute of action {}", remote.action_digest),
                };
                return Err(match status.code() {
                    Code::FailedPrecondition if operation_name.is_none() => {
                        Execution::Precondition {
                            error: self.status_error(&what, &status),
                            platform: refuses_platform(status.message()),
                        }
                    }
                    _ => Execution::Failed(self.status_error(&what, &status)),
                });
            };
            self.lost_connection(&status);
            tracing::debug!(
                "{} stream from {} dropped ({status}); resuming in {delay:?}",
                if operation_name.is_some() {
                    "WaitExecution"
                } else {
                    "Execute"
                },
                self.endpoint()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The ExecuteResponse of a finished operation.
    fn finished(&self, op: Operation) -> Result<reapi::ExecuteResponse, Execution> {
        match op.result {
            Some(operation::Result::Response(any)) => {
                let response = reapi::ExecuteResponse::decode(&any.value[..]).map_err(|e| {
                    Execution::Failed(self.err(format!(
                        "operation {} finished with a response that is not an ExecuteResponse ({e})",
                        op.name
                    )))
                })?;
                Ok(response)
            }
            Some(operation::Result::Error(status)) => Err(Execution::Failed(self.err(format!(
                "operation {} at {} failed: {:?}: {}",
                op.name,
                self.endpoint(),
                Code::from_i32(status.code),
                status.message
            )))),
            None => Err(Execution::Failed(self.err(format!(
                "operation {} at {} finished without a result",
                op.name,
                self.endpoint()
            )))),
        }
    }

    /// Downloads every blob `result` names that the local store lacks, verified.
    async fn fetch_result_blobs(
        &self,
        conn: &Conn,
        result: &reapi::ActionResult,
    ) -> Result<(), ExecError> {
        let limits = &self.config.result_limits;
        let refused = |why| ExecError::Refused {
            from: format!("REAPI server at {}", self.endpoint()),
            why,
        };
        // Sizes, paths and the trees' expansion are checked before anything is fetched for
        // them: every download below is bounded by a size checked here.
        let mut budget = check_result_shape(result, limits).map_err(refused)?;
        let (mut blobs, trees) = result_blobs(result)?;
        self.download_all(conn, &trees).await?;
        for (dir, tree) in result.output_directories.iter().zip(&trees) {
            let tree: reapi::Tree = self.store.get_message(tree, "Tree")?;
            blobs.extend(
                check_tree(&dir.path, &tree, limits, &mut budget)
                    .map_err(refused)?
                    .files,
            );
        }
        self.download_all(conn, &blobs).await
    }

    async fn download_all(&self, conn: &Conn, digests: &[Digest]) -> Result<(), ExecError> {
        let mut seen = HashSet::new();
        let mut small = Vec::new();
        let mut large = tokio::task::JoinSet::new();
        for digest in digests {
            if !seen.insert(*digest) || self.store.contains(digest) {
                continue;
            }
            if digest.size() + BATCH_BLOB_OVERHEAD <= conn.batch_limit {
                small.push(*digest);
            } else {
                self.spawn_read(conn, &mut large, *digest, None, Duration::ZERO);
            }
        }
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for digest in small {
            let cost = digest.size() + BATCH_BLOB_OVERHEAD;
            if batch_bytes + cost > conn.batch_limit && !batch.is_empty() {
                self.batch_read(conn, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += cost;
            batch.push(digest);
        }
        if !batch.is_empty() {
            self.batch_read(conn, batch).await?;
        }
        while let Some(joined) = large.join_next().await {
            let (digest, mut backoff, result) =
                joined.map_err(|e| ExecError::Task(e.to_string()))?;
            match result {
                Ok(()) => {
                    self.stats
                        .bytes_down
                        .fetch_add(digest.size(), Ordering::Relaxed);
                }
                Err(Download::Rpc(s)) => {
                    let delay = transient(&s)
                        .then(|| self.retry_backoff(&mut backoff).next())
                        .flatten();
                    let Some(delay) = delay else {
                        return Err(self.status_error(&format!("ByteStream Read of {digest}"), &s));
                    };
                    self.lost_connection(&s);
                    tracing::debug!("ByteStream Read of {digest}: {s}; again in {delay:?}");
                    self.spawn_read(conn, &mut large, digest, backoff, delay);
                }
                Err(Download::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn batch_read(&self, conn: &Conn, digests: Vec<Digest>) -> Result<(), ExecError> {
        let got = self
            .cas_call(
                conn,
                "BatchReadBlobs",
                reapi::BatchReadBlobsRequest {
                    instance_name: self.config.instance.clone(),
                    digests: digests.iter().map(Digest::to_proto).collect(),
                    digest_function: SHA256,
                    ..Default::default()
                },
                |mut c, r| async move { c.batch_read_blobs(r).await },
            )
            .await?;
        let store = self.store.clone();
        let endpoint = self.endpoint().to_string();
        let asked: HashSet<Digest> = digests.iter().copied().collect();
        let bytes = tokio::task::spawn_blocking(move || -> Result<u64, ExecError> {
            let mut bytes = 0;
            for response in got.responses {
                let expected = Digest::from_field(response.digest.as_ref()).map_err(|e| {
                    remote_error(format!("BatchReadBlobs at {endpoint} answered a bad digest: {e}"))
                })?;
                if !asked.contains(&expected) || response.data.len() as u64 != expected.size() {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint} answered {} bytes for blob {expected}, which was not asked for or has another size; the server is faulty",
                        response.data.len()
                    )));
                }
                let status = response.status.unwrap_or_default();
                if status.code != 0 {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint}: blob {expected} cannot be read: {:?}: {}",
                        Code::from_i32(status.code),
                        status.message
                    )));
                }
                let actual = Digest::of_bytes(&response.data);
                if actual != expected {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint} returned damaged data for blob {expected} (it hashes to {actual})"
                    )));
                }
                store.put_bytes(&response.data)?;
                bytes += expected.size();
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| ExecError::Task(e.to_string()))??;
        self.stats.bytes_down.fetch_add(bytes, Ordering::Relaxed);
        for d in &digests {
            if !self.store.contains(d) {
                return Err(self.err(format!(
                    "BatchReadBlobs at {} did not return blob {d}",
                    self.endpoint()
                )));
            }
        }
        Ok(())
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

/// Why Execute gave no response.
enum Execution {
    /// The server refused the call with FAILED_PRECONDITION (a missing blob, or a platform
    /// it cannot serve).
    Precondition {
        /// The error, explained.
        error: ExecError,
        /// The server's message is about the platform (uploading again will not help).
        platform: bool,
    },
    /// Anything else.
    Failed(ExecError),
}

enum Upload {
    Source(ExecError),
    Rpc(Status),
}

/// A ByteStream Write's blob, its source, its retries so far and how it went.
type Written = (Digest, BlobSource, Option<Backoff>, Result<(), Upload>);

/// A ByteStream Read's blob, its retries so far and how it went.
type Read = (Digest, Option<Backoff>, Result<(), Download>);

enum Download {
    Rpc(Status),
    Other(ExecError),
}

/// Worth retrying: the server is down, restarting, or overloaded. A connection that breaks
/// mid-call comes back from tonic as UNKNOWN ("h2 protocol error: error reading a body from
/// connection", "transport error"), or as CANCELLED ("operation was canceled", over hyper's
/// "connection closed") when it closed before the call was sent, not as UNAVAILABLE. A
/// certificate that is not trusted, or refused, is not worth retrying.
fn transient(status: &Status) -> bool {
    let text = status_text(status);
    let broken_connection = || {
        [
            "h2 protocol error",
            "transport error",
            "connection",
            "broken pipe",
        ]
        .iter()
        .any(|m| text.contains(m))
    };
    let certificate = ["invalid peer certificate", "received fatal alert"]
        .iter()
        .any(|m| text.contains(m));
    !certificate
        && (matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        ) || (matches!(status.code(), Code::Unknown | Code::Cancelled) && broken_connection()))
}

/// The server went away or cannot be reached (rather than being overloaded).
fn lost(status: &Status) -> bool {
    transient(status)
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
}

/// The status's message and those of the errors under it (a transport failure's message is
/// generic: "transport error" over "invalid peer certificate: UnknownIssuer").
fn status_text(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The message of the innermost error under `status`, if any.
fn root_cause(status: &Status) -> Option<String> {
    let mut source = std::error::Error::source(status)?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}

/// Exponential backoff (doubling, at most 5 s apart) within a window that starts at the
/// first attempt, or again at [`Backoff::reset`].
struct Backoff {
    since: tokio::time::Instant,
    first: Duration,
    delay: Duration,
    window: Duration,
}

impl Backoff {
    fn new(window: Duration, first: Duration) -> Backoff {
        Backoff {
            since: tokio::time::Instant::now(),
            first,
            delay: first,
            window,
        }
    }

    /// How long to wait before the next attempt; `None` once that would end past the window.
    fn next(&mut self) -> Option<Duration> {
        let delay = self.delay;
        if self.since.elapsed() + delay >= self.window {
            return None;
        }
        self.delay = (delay * 2).min(Duration::from_secs(5));
        Some(delay)
    }

    /// The server answered: the window starts again.
    fn reset(&mut self) {
        self.since = tokio::time::Instant::now();
        self.delay = self.first;
    }
}

/// A FAILED_PRECONDITION about the platform rather than missing blobs.
fn refuses_platform(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("platform") || message.contains("propert")
}

/// `INSTANCE/` or nothing, the prefix of ByteStream resource names.
fn instance_prefix(instance: &str) -> String {
    if instance.is_empty() {
        String::new()
    } else {
        format!("{instance}/")
    }
}

/// A fresh UUID-shaped upload id (ByteStream wants one per write).
fn upload_id(digest: &Digest) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{}-{}",
        std::process::id(),
        now.as_nanos(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        digest
    );
    let h = Digest::of_bytes(seed.as_bytes()).hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Reads a small input blob whole, checking it against its digest.
async fn read_source(digest: &Digest, source: &BlobSource) -> Result<Vec<u8>, ExecError> {
    let data = match source {
        BlobSource::Bytes(data) => data.to_vec(),
        BlobSource::File(path) => {
            tokio::fs::read(path)
                .await
                .map_err(|error| ExecError::Scratch {
                    path: path.clone(),
                    error,
                })?
        }
    };
    if Digest::of_bytes(&data) != *digest {
        return Err(changed(digest, source));
    }
    Ok(data)
}

fn changed(digest: &Digest, source: &BlobSource) -> ExecError {
    match source {
        BlobSource::File(path) => ExecError::Store(StoreError::Changed { path: path.clone() }),
        BlobSource::Bytes(_) => ExecError::InvalidAction(format!(
            "an in-memory input does not match its digest {digest}"
        )),
    }
}

/// Uploads one blob with ByteStream Write, in [`BYTESTREAM_CHUNK`] messages read from the
/// source as they are sent; the data is hashed on the way and the write not finished when
/// it does not match.
async fn write_blob(
    channel: Channel,
    meta: tonic::Request<()>,
    resource: String,
    digest: &Digest,
    source: &BlobSource,
) -> Result<(), Upload> {
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let producer = {
        let (digest, source) = (*digest, source.clone());
        tokio::spawn(async move {
            let mut hasher = llama_core::Hasher::default();
            let mut offset = 0u64;
            let mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match &source {
                BlobSource::Bytes(data) => Box::new(std::io::Cursor::new(data.to_vec())),
                BlobSource::File(path) => match tokio::fs::File::open(path).await {
                    Ok(f) => Box::new(f),
                    Err(error) => {
                        return Err(ExecError::Scratch {
                            path: path.clone(),
                            error,
                        });
                    }
                },
            };
            loop {
                let mut chunk = Vec::with_capacity(BYTESTREAM_CHUNK);
                let n = (&mut reader)
                    .take(BYTESTREAM_CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .await
                    .map_err(|error| match &source {
                        BlobSource::File(path) => ExecError::Scratch {
                            path: path.clone(),
                            error,
                        },
                        BlobSource::Bytes(_) => ExecError::Task(error.to_string()),
                    })?;
                hasher.update(&chunk);
                let end = offset + n as u64;
                let last = n < BYTESTREAM_CHUNK || end >= digest.size();
                if last && std::mem::take(&mut hasher).finish() != digest {
                    // Dropping the sender without finish_write aborts the upload.
                    return Err(changed(&digest, &source));
                }
                let message = WriteRequest {
                    resource_name: String::new(),
                    write_offset: offset as i64,
                    finish_write: last,
                    data: chunk,
                };
                if tx.send(message).await.is_err() {
                    // The call ended early; its status says why.
                    return Ok(());
                }
                offset = end;
                if last {
                    return Ok(());
                }
            }
        })
    };
    // The first message names the resource; the producer fills in the rest.
    let first_resource = resource;
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), {
        let mut first = true;
        move |mut m: WriteRequest| {
            if first {
                m.resource_name = first_resource.clone();
                first = false;
            }
            m
        }
    });
    let mut request = tonic::Request::new(stream);
    *request.metadata_mut() = meta.metadata().clone();
    let mut client = ByteStreamClient::new(channel);
    let written = client.write(request).await;
    match producer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Upload::Source(e)),
        Err(e) => return Err(Upload::Source(ExecError::Task(e.to_string()))),
    }
    let response = written.map_err(Upload::Rpc)?.into_inner();
    if response.committed_size != digest.size() as i64 && response.committed_size != -1 {
        return Err(Upload::Rpc(Status::data_loss(format!(
            "the server committed {} of {} bytes",
            response.committed_size,
            digest.size()
        ))));
    }
    Ok(())
}

/// Downloads one blob with ByteStream Read into a temporary file of the store, verified,
/// then moves it into place.
async fn read_blob(
    channel: Channel,
    request: tonic::Request<ReadRequest>,
    digest: &Digest,
    store: &Store,
) -> Result<(), Download> {
    let mut client = ByteStreamClient::new(channel);
    let mut stream = client
        .read(request)
        .await
        .map_err(Download::Rpc)?
        .into_inner();
    let work = store.work_dir();
    let tmp = tempfile::NamedTempFile::new_in(&work).map_err(|error| {
        Download::Other(ExecError::Scratch {
            path: work.clone(),
            error,
        })
    })?;
    let (file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = llama_core::Hasher::default();
    let mut received = 0u64;
    while let Some(message) = stream.message().await.map_err(Download::Rpc)? {
        // The digest's size was checked against the limits: never take more than it says.
        received = received.saturating_add(message.data.len() as u64);
        if received > digest.size() {
            return Err(Download::Other(remote_error(format!(
                "ByteStream Read of blob {digest} returned more than its {} bytes; the server is faulty",
                digest.size()
            ))));
        }
        hasher.update(&message.data);
        tokio::io::AsyncWriteExt::write_all(&mut file, &message.data)
            .await
            .map_err(|error| {
                Download::Other(ExecError::Scratch {
                    path: path.to_path_buf(),
                    error,
                })
            })?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|error| {
            Download::Other(ExecError::Scratch {
                path: path.to_path_buf(),
                error,
            })
        })?;
    drop(file);
    let actual = hasher.finish();
    if actual != *digest {
        return Err(Download::Other(remote_error(format!(
            "ByteStream Read returned damaged data for blob {digest} (it hashes to {actual})"
        ))));
    }
    let store = store.clone();
    let digest = *digest;
    tokio::task::spawn_blocking(move || {
        let adopted = store.adopt_file(&path)?;
        debug_assert_eq!(adopted, digest);
        Ok::<_, StoreError>(())
    })
    .await
    .map_err(|e| Download::Other(ExecError::Task(e.to_string())))?
    .map_err(|e| Download::Other(ExecError::Store(e)))
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
mod tests {
    use super::*;
    use llama_core::{ActionSpec, TreeBuilder};
    use std::sync::Arc;

    #[test]
    fn llama_properties_stay_out_of_the_remote_platform() {
        let spec = |function: &str| ActionSpec {
            arguments: vec!["true".into()],
            platform: vec![(FUNCTION_PROPERTY.into(), function.into())],
            ..Default::default()
        };
        let a = spec("gcc").prepare(TreeBuilder::new().build()).unwrap();
        let b = spec("other").prepare(TreeBuilder::new().build()).unwrap();
        let props = vec![("container-image".to_string(), "docker://x".to_string())];
        let ra = remote_action(&a, "gcc", &props, true).unwrap();
        let rb = remote_action(&b, "other", &props, true).unwrap();
        let names: Vec<&str> = ra
            .action
            .platform
            .iter()
            .flat_map(|p| p.properties.iter().map(|p| p.name.as_str()))
            .collect();
        assert_eq!(names, vec!["container-image"]);
        #[allow(deprecated)]
        let command_platform = ra.command.platform.clone();
        assert_eq!(command_platform, ra.action.platform);
        assert_ne!(
            ra.action_digest, rb.action_digest,
            "the function is in the key"
        );
        assert_eq!(Digest::of_bytes(&ra.command_bytes), ra.command_digest);
        assert!(
            remote_action(&a, "gcc", &props, false)
                .unwrap()
                .action
                .do_not_cache
        );

        let with_stdin = ActionSpec {
            arguments: vec!["cat".into()],
            stdin: Some(Arc::from(&b"x"[..])),
            ..Default::default()
        }
        .prepare(TreeBuilder::new().build())
        .unwrap();
        let e = remote_action(&with_stdin, "f", &[], true).unwrap_err();
        assert!(e.to_string().contains("standard input"), "{e}");
    }

    #[test]
    fn a_broken_connection_is_transient_a_refusal_is_not() {
        assert!(transient(&Status::unavailable("connection refused")));
        assert!(transient(&Status::unknown(
            "h2 protocol error: error reading a body from connection"
        )));
        assert!(!transient(&Status::unknown(
            "the server crashed on your action"
        )));
        assert!(!transient(&Status::failed_precondition(
            "unknown platform property llama-function"
        )));
    }

    /// A status as tonic makes it from a transport failure: a generic message over the
    /// error that says what happened.
    fn with_cause(mut status: Status, cause: &str) -> Status {
        status.set_source(Arc::new(std::io::Error::other(cause.to_string())));
        status
    }

    #[test]
    fn a_connection_closed_under_a_cancelled_call_is_transient_a_certificate_is_not() {
        let closed = with_cause(
            Status::cancelled("operation was canceled"),
            "connection closed",
        );
        assert!(transient(&closed) && lost(&closed));
        assert!(!transient(&Status::cancelled("the server cancelled it")));
        let untrusted = Status::unavailable("invalid peer certificate: UnknownIssuer");
        assert!(!transient(&untrusted) && !lost(&untrusted));
        let refused = with_cause(
            Status::unknown("transport error"),
            "received fatal alert: CertificateRequired",
        );
        assert!(!transient(&refused));
        let busy = Status::resource_exhausted("too many requests");
        assert!(transient(&busy) && !lost(&busy));
        assert_eq!(root_cause(&closed).as_deref(), Some("connection closed"));
        assert_eq!(root_cause(&busy), None);
    }

    fn executor(endpoint: &str) -> (tempfile::TempDir, ReapiExecutor) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
        (dir, ReapiExecutor::new(store, ReapiConfig::new(endpoint)))
    }

    #[test]
    fn tls_failures_name_the_setting_that_mends_them() {
        let (_dir, e) = executor("grpcs://127.0.0.1:1");
        let untrusted = Status::unavailable("invalid peer certificate: UnknownIssuer");
        let message = e.status_error("GetCapabilities", &untrusted).to_string();
        assert!(
            message.contains("grpcs://127.0.0.1:1") && message.contains("reapi_ca"),
            "{message}"
        );
        let closed = with_cause(
            Status::cancelled("operation was canceled"),
            "connection closed",
        );
        let message = e.status_error("GetCapabilities", &closed).to_string();
        assert!(
            message.contains("(connection closed)") && message.contains("reapi_client_cert"),
            "{message}"
        );
        let eof = with_cause(
            Status::unknown("transport error"),
            "peer closed connection without sending TLS close_notify",
        );
        assert!(
            e.tls_hint(&eof)
                .is_some_and(|h| h.contains("reapi_client_cert"))
        );
        let refused = Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert_eq!(e.tls_hint(&refused), None);
        // Over plaintext, no TLS advice.
        let (_dir, e) = executor("grpc://127.0.0.1:1");
        assert_eq!(e.tls_hint(&closed), None);
        assert_eq!(e.tls_hint(&untrusted), None);
    }

    #[test]
    fn a_lost_connection_is_noticed_once() {
        let (_dir, e) = executor("grpc://127.0.0.1:1");
        e.lost_connection(&Status::resource_exhausted("busy"));
        assert!(
            e.take_notices().is_empty(),
            "an overloaded server is not lost"
        );
        e.lost_connection(&Status::unavailable("tcp connect error"));
        e.lost_connection(&Status::unavailable("tcp connect error"));
        let notices = e.take_notices();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].contains("lost the connection to grpc://127.0.0.1:1"),
            "{notices:?}"
        );
        assert!(e.take_notices().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_within_a_window_that_starts_again_on_reset() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
        let mut waited = Vec::new();
        while let Some(d) = b.next() {
            waited.push(d.as_secs());
            tokio::time::sleep(d).await;
        }
        assert_eq!(waited, vec![1, 2, 4]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn upload_ids_are_fresh_and_uuid_shaped() {
        let d = Digest::of_bytes(b"x");
        let (a, b) = (upload_id(&d), upload_id(&d));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.split('-').count(), 5);
    }
}
