//! The connection to a REAPI server: the channel (plaintext or TLS, with the configured CA
//! and client certificate), the headers sent with every call, what the server says about
//! itself, and failures explained with the setting that mends them.

use std::path::PathBuf;
use std::time::Duration;

use llama_core::reapi;
use reapi::capabilities_client::CapabilitiesClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::retry::{lost, root_cause, status_text};
use super::{CONNECT_WINDOW, MAX_BATCH_BYTES, ReapiExecutor, SHA256, UNREACHABLE_MEMORY, lock};
use crate::executor::ExecError;

/// One gRPC metadata entry sent with every call (`reapi_headers`).
pub(super) type Header = (
    tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
    tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
);

/// A connection and what the server said about itself.
pub(super) struct Conn {
    pub(super) channel: Channel,
    pub(super) headers: Vec<Header>,
    /// The largest batch request to send.
    pub(super) batch_limit: u64,
    /// What the server said about itself.
    pub(super) info: ServerInfo,
}

/// What a REAPI server says about itself (`GetCapabilities`), as `llama doctor` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// The newest API version it speaks, e.g. `2.3` (empty when it does not say).
    pub api_version: String,
    /// Whether it executes actions (llama needs it to).
    pub exec_enabled: bool,
    /// Whether clients may write its action cache (llama never does: results are recorded
    /// by the server after it executes them).
    pub action_cache_writable: bool,
    /// The largest batch request llama sends it, in bytes.
    pub batch_limit: u64,
}

impl std::fmt::Display for ServerInfo {
    /// `REAPI 2.3, executes, SHA-256, batches up to 4.0 MiB`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.api_version.is_empty() {
            write!(f, "REAPI {}, ", self.api_version)?;
        }
        write!(
            f,
            "{}, SHA-256, batches up to {}",
            if self.exec_enabled {
                "executes"
            } else {
                "execution disabled"
            },
            bytesize::ByteSize(self.batch_limit).display().iec()
        )
    }
}

impl ReapiExecutor {
    /// A gRPC failure, explained: what failed, at which endpoint, and what to do.
    pub(super) fn status_error(&self, what: &str, status: &Status) -> ExecError {
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
    pub(super) fn tls_hint(&self, status: &Status) -> Option<String> {
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

    pub(super) fn request<T>(&self, conn: &Conn, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        for (k, v) in &conn.headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        request
    }

    /// The connection, made on first use. A server that could not be reached is not tried
    /// again for [`UNREACHABLE_MEMORY`]: the actions meanwhile fail at once with the same
    /// error (llamacc compiles them here) instead of each waiting out the retries.
    pub(super) async fn conn(&self) -> Result<&Conn, ExecError> {
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

    /// The TLS settings: the system's roots, `reapi_ca`'s and the client's identity.
    async fn tls_config(&self) -> Result<ClientTlsConfig, ExecError> {
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
        Ok(config)
    }

    /// The `reapi_headers` as gRPC metadata, checked.
    fn headers(&self) -> Result<Vec<Header>, ExecError> {
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
        Ok(headers)
    }

    /// Builds the channel and asks for the server's capabilities.
    pub(super) async fn connect(&self) -> Result<Conn, ExecError> {
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
            let config = self.tls_config().await?;
            ep = ep.tls_config(config).map_err(|e| {
                self.err(format!(
                    "TLS settings for {endpoint} (reapi_ca, reapi_client_cert, \
                         reapi_client_key): {e}"
                ))
            })?;
        }
        let channel = ep.connect_lazy();
        let headers = self.headers()?;
        let mut conn = Conn {
            channel,
            headers,
            batch_limit: MAX_BATCH_BYTES,
            info: ServerInfo::default(),
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
        conn.info = ServerInfo {
            api_version: caps
                .high_api_version
                .map(|v| format!("{}.{}", v.major, v.minor))
                .unwrap_or_default(),
            exec_enabled: caps.execution_capabilities.is_some_and(|e| e.exec_enabled),
            action_cache_writable: cache
                .action_cache_update_capabilities
                .is_some_and(|u| u.update_enabled),
            batch_limit: conn.batch_limit,
        };
        Ok(conn)
    }
}
