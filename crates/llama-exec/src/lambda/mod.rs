//! The lambda executor: each action is one synchronous invocation of a Lambda function that
//! runs `llama-runtime`, with S3 as the CAS and the action cache.
//!
//! Per action: the S3 action cache first (`ac/<action>`; a hit whose blobs are all in S3 is
//! served without an invocation); otherwise the inputs that will not travel inline are
//! uploaded (HEAD before PUT, known-present set), the [`wire::Request`] is sent with `Invoke`,
//! and the [`wire::Response`]'s inline blobs and the outputs left in S3 land in the local
//! store, where the engine delivers them from.

pub mod wire;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_lambda::config::interceptors::InterceptorContext;
use aws_sdk_lambda::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_lambda::error::{DisplayErrorContext, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::LogType;
use base64::Engine as _;
use llama_core::{
    BlobSource, Digest, FUNCTION_PROPERTY, PreparedAction, ResultLimits, Store, reapi,
};
use prost::Message;
use tokio::sync::{OnceCell, Semaphore};

use crate::executor::{ExecError, ExecOutcome, Executor, Termination};
use crate::remote::{DEFAULT_REMOTE_JOBS, fetch_result};
use crate::s3::{ObjectStoreUrl, S3Cas, S3Error, S3Options, load_aws_config, s3_client};
use crate::usage::Usage;

const NAME: &str = "lambda";

/// How long past the action's own timeout the client waits for an invocation: a cold start,
/// fetching inputs and uploading outputs all happen outside the command's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// The error type `llama-runtime` reports when blobs the request said were in S3 are not
/// (the client's known-present set was stale): the client forgets them, uploads again and
/// invokes once more.
pub const MISSING_BLOBS_ERROR: &str = "MissingBlobs";

/// Settings of a [`LambdaExecutor`].
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The bucket and prefix of the CAS and action cache.
    pub location: ObjectStoreUrl,
    /// The function of actions that name none in their `llama-function` property.
    pub default_function: String,
    /// Invocations in flight at once.
    pub concurrency: usize,
    /// The command's deadline when the action sets none.
    pub default_timeout: Duration,
    /// Extra time the client waits past the deadline (see [`DEADLINE_MARGIN`]).
    pub deadline_margin: Duration,
    /// AWS region (llama's `region`); `None` for the SDK's default chain.
    pub region: Option<String>,
    /// Attempts per AWS request in the SDK's standard retry mode.
    pub max_attempts: u32,
    /// Largest output the function returns inline.
    pub inline_output_limit: u64,
    /// The known-present set's file (shared by every llama process of the user).
    pub present_file: Option<PathBuf>,
    /// S3 requests in flight at once.
    pub s3_concurrency: usize,
    /// Bounds on what a result (from the function or the S3 action cache) may expand to;
    /// checked before its blobs are downloaded.
    pub result_limits: ResultLimits,
}

impl LambdaConfig {
    /// Settings with the defaults for everything but the object store.
    pub fn new(location: ObjectStoreUrl) -> LambdaConfig {
        LambdaConfig {
            location,
            default_function: "llama".into(),
            concurrency: DEFAULT_REMOTE_JOBS,
            default_timeout: Duration::from_secs(900),
            deadline_margin: DEADLINE_MARGIN,
            region: None,
            max_attempts: crate::s3::DEFAULT_MAX_ATTEMPTS,
            inline_output_limit: wire::DEFAULT_INLINE_OUTPUT_LIMIT,
            present_file: None,
            s3_concurrency: crate::s3::DEFAULT_S3_CONCURRENCY,
            result_limits: ResultLimits::default(),
        }
    }
}

/// Runs actions on AWS Lambda (or anything speaking its Invoke API).
pub struct LambdaExecutor {
    store: Store,
    config: LambdaConfig,
    clients: OnceCell<Clients>,
    permits: Semaphore,
    stats: Arc<Stats>,
}

struct Clients {
    s3: S3Cas,
    lambda: aws_sdk_lambda::Client,
}

/// Counters behind [`Executor::usage`].
#[derive(Debug, Default)]
struct Stats {
    invocations: AtomicU64,
    cache_hits: AtomicU64,
    billed_ms: AtomicU64,
    /// Megabyte-milliseconds (memory × billed duration), exact.
    mb_ms: AtomicU64,
    runtime_puts: AtomicU64,
    runtime_gets: AtomicU64,
    runtime_heads: AtomicU64,
    /// Responses with HTTP 429 seen by the retry classifier.
    throttled: AtomicU64,
    warned_throttle: AtomicBool,
}

impl LambdaExecutor {
    /// An executor storing results in `store`. The AWS clients are made on first use, inside
    /// the async runtime that runs the actions.
    pub fn new(store: Store, config: LambdaConfig) -> LambdaExecutor {
        LambdaExecutor {
            permits: Semaphore::new(config.concurrency.max(1)),
            store,
            config,
            clients: OnceCell::new(),
            stats: Arc::new(Stats::default()),
        }
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let sdk =
                    load_aws_config(self.config.region.as_deref(), self.config.max_attempts).await;
                let lambda_config = aws_sdk_lambda::config::Builder::from(&sdk)
                    .retry_classifier(InvokeRetryClassifier {
                        stats: self.stats.clone(),
                    })
                    .build();
                let s3 = S3Cas::with_client(
                    s3_client(&sdk),
                    self.config.location.clone(),
                    S3Options {
                        region: self.config.region.clone(),
                        max_attempts: self.config.max_attempts,
                        concurrency: self.config.s3_concurrency,
                        present_file: self.config.present_file.clone(),
                    },
                )
                .await;
                Clients {
                    s3,
                    lambda: aws_sdk_lambda::Client::from_conf(lambda_config),
                }
            })
            .await
    }

    fn function_of<'a>(&'a self, action: &'a PreparedAction) -> &'a str {
        action
            .platform_property(FUNCTION_PROPERTY)
            .filter(|f| !f.is_empty())
            .unwrap_or(&self.config.default_function)
    }

    /// Serves the action from the S3 action cache when its entry and every blob it names
    /// are there; the blobs land in the local store.
    async fn served_from_remote_cache(
        &self,
        s3: &S3Cas,
        action: &PreparedAction,
    ) -> Result<Option<reapi::ActionResult>, ExecError> {
        let Some(result) = s3
            .get_action_result(&action.action_digest)
            .await
            .map_err(remote)?
        else {
            return Ok(None);
        };
        match self.fetch_result_blobs(s3, &result).await {
            Ok(()) => Ok(Some(result)),
            Err(Fetch::Missing(e)) => {
                tracing::debug!(
                    "the S3 action cache entry of {} names a missing blob ({e}); running the action",
                    action.action_digest
                );
                Ok(None)
            }
            Err(Fetch::Failed(e)) => Err(e),
        }
    }

    /// Downloads every blob `result` names that the local store lacks (output directories'
    /// trees first, then their files).
    async fn fetch_result_blobs(
        &self,
        s3: &S3Cas,
        result: &reapi::ActionResult,
    ) -> Result<(), Fetch> {
        // A result is data from the bucket, which others can write: checked before its
        // blobs are fetched.
        let from = format!("S3 object store {}", s3.location());
        let store = &self.store;
        fetch_result(
            store,
            result,
            self.config.result_limits,
            &from,
            |digests: Vec<Digest>| async move { download_all(s3, store, &digests).await },
        )
        .await
    }

    /// Builds the request: the Action, and every other blob the function needs inline while
    /// it fits (smallest first); the rest is uploaded.
    async fn build_request(
        &self,
        s3: &S3Cas,
        action: &PreparedAction,
    ) -> Result<wire::Request, ExecError> {
        let action_bytes = action.action.encode_to_vec();
        let command_bytes = action.command.encode_to_vec();
        let mut blobs: Vec<(Digest, BlobSource)> = Vec::new();
        blobs.push((
            action.command_digest,
            BlobSource::Bytes(command_bytes.into()),
        ));
        for (digest, bytes) in &action.input.directories {
            blobs.push((*digest, BlobSource::Bytes(bytes.as_slice().into())));
        }
        for (digest, source) in &action.input.files {
            blobs.push((*digest, source.clone()));
        }
        if let Some((digest, source)) = &action.stdin {
            blobs.push((*digest, source.clone()));
        }
        let mut seen = HashSet::new();
        blobs.retain(|(d, _)| seen.insert(*d));
        let budget =
            wire::INLINE_BUDGET.saturating_sub(wire::inline_cost(action_bytes.len() as u64));
        // Blobs already in S3 are not worth inlining only when they are big; small ones are
        // cheaper inline than as a GET by the function, so no known-present check here.
        let sizes: Vec<u64> = blobs.iter().map(|(d, _)| d.size()).collect();
        let chosen: HashSet<usize> = wire::plan_inline(&sizes, budget, u64::MAX)
            .into_iter()
            .collect();
        let mut inline = Vec::with_capacity(chosen.len());
        let mut rest = Vec::new();
        for (i, (digest, source)) in blobs.into_iter().enumerate() {
            if chosen.contains(&i) {
                inline.push((digest, source));
            } else {
                rest.push((digest, source));
            }
        }
        let inline = read_inline(inline).await?;
        s3.upload_all(rest).await.map_err(remote)?;
        Ok(wire::Request {
            v: wire::WIRE_VERSION,
            action: wire::Base64(action_bytes),
            action_digest: action.action_digest.to_string(),
            blobs: inline,
            store: Some(wire::StoreLocation {
                bucket: self.config.location.bucket.clone(),
                prefix: self.config.location.prefix.clone(),
            }),
            inline_output_limit: self.config.inline_output_limit,
            timeout_ms: Some(
                u64::try_from(self.config.default_timeout.as_millis()).unwrap_or(u64::MAX),
            ),
        })
    }

    /// One synchronous invocation, bounded by the client-side limit and the deadline.
    async fn invoke(
        &self,
        lambda: &aws_sdk_lambda::Client,
        function: &str,
        request: &wire::Request,
        deadline: Duration,
    ) -> Result<Invoked, InvokeFailure> {
        let payload = serde_json::to_vec(request).map_err(|e| {
            InvokeFailure::Other(format!("encoding the request for function {function}: {e}"))
        })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| InvokeFailure::Other(e.to_string()))?;
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let sent = tokio::time::timeout(
            deadline,
            lambda
                .invoke()
                .function_name(function)
                .log_type(LogType::Tail)
                .payload(Blob::new(payload))
                .send(),
        )
        .await;
        let output = match sent {
            Err(_elapsed) => {
                return Err(InvokeFailure::Other(format!(
                    "function {function} did not answer within {}s (the action's timeout plus {}s); \
                     it may have crashed or hung. Check its logs (CloudWatch, or the runtime's stderr)",
                    deadline.as_secs(),
                    self.config.deadline_margin.as_secs()
                )));
            }
            Ok(Err(e)) => return Err(invoke_error(function, &e)),
            Ok(Ok(output)) => output,
        };
        let payload = output
            .payload()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default();
        if let Some(kind) = output.function_error() {
            return Err(function_error(function, kind, &payload));
        }
        let response: wire::Response = serde_json::from_slice(&payload).map_err(|e| {
            InvokeFailure::Other(format!(
                "function {function} answered with something that is not a llama-runtime response ({e}): {}; \
                 is it running llama-runtime of the same version? (`llama update-function {function}`)",
                preview(&payload)
            ))
        })?;
        if response.v != wire::WIRE_VERSION {
            return Err(InvokeFailure::Other(format!(
                "function {function} speaks wire version {} but this llama speaks {}: update one of them (`llama update-function {function}`)",
                response.v,
                wire::WIRE_VERSION
            )));
        }
        Ok(Invoked {
            response,
            log_tail: output.log_result().map(str::to_string),
        })
    }

    fn account(&self, invoked: &Invoked) {
        let response = &invoked.response;
        let (billed_ms, memory_mb) = invoked
            .log_tail
            .as_deref()
            .and_then(parse_report)
            .map(|(billed, memory)| (billed, memory.unwrap_or(response.memory_mb)))
            .unwrap_or((response.timings.total_ms().max(1), response.memory_mb));
        let stats = &self.stats;
        stats.billed_ms.fetch_add(billed_ms, Ordering::Relaxed);
        stats
            .mb_ms
            .fetch_add(billed_ms * u64::from(memory_mb), Ordering::Relaxed);
        stats
            .runtime_puts
            .fetch_add(response.s3_ops.puts, Ordering::Relaxed);
        stats
            .runtime_gets
            .fetch_add(response.s3_ops.gets, Ordering::Relaxed);
        stats
            .runtime_heads
            .fetch_add(response.s3_ops.heads, Ordering::Relaxed);
    }

    /// Puts the response's inline blobs in the local store and fetches the rest from S3.
    async fn receive(
        &self,
        s3: &S3Cas,
        function: &str,
        response: wire::Response,
    ) -> Result<ExecOutcome, ExecError> {
        let result = reapi::ActionResult::decode(&response.result.0[..]).map_err(|e| {
            ExecError::Remote {
                executor: NAME,
                message: format!(
                    "function {function} returned a result that does not decode ({e}); update it (`llama update-function {function}`)"
                ),
            }
        })?;
        let store = self.store.clone();
        let blobs = response.blobs;
        let function_name = function.to_string();
        blocking(move || {
            for blob in &blobs {
                let digest = blob.verified_digest().map_err(|e| ExecError::Remote {
                    executor: NAME,
                    message: format!("function {function_name} returned a damaged blob: {e}"),
                })?;
                store.put_bytes(&blob.data.0)?;
                debug_assert!(store.contains(&digest));
            }
            Ok(())
        })
        .await?;
        match self.fetch_result_blobs(s3, &result).await {
            Ok(()) => {}
            Err(Fetch::Failed(e)) => return Err(e),
            Err(Fetch::Missing(e)) => {
                return Err(ExecError::Remote {
                    executor: NAME,
                    message: format!(
                        "function {function} reported an output it did not upload: {e}"
                    ),
                });
            }
        }
        Ok(ExecOutcome {
            result,
            termination: response.termination.into(),
            cached: false,
        })
    }

    fn note_throttling(&self) {
        if self.stats.throttled.load(Ordering::Relaxed) > 0
            && !self.stats.warned_throttle.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "lambda: the Lambda service is throttling invocations (TooManyRequestsException); \
                 retrying with backoff. Lower -j or LLAMA_REMOTE_JOBS, or raise the account's concurrency limit \
                 (reported once)"
            );
        }
    }
}

#[async_trait]
impl Executor for LambdaExecutor {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn execute(&self, action: &PreparedAction) -> Result<ExecOutcome, ExecError> {
        let clients = self.clients().await;
        let s3 = &clients.s3;
        if !action.action.do_not_cache
            && let Some(result) = self.served_from_remote_cache(s3, action).await?
        {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(ExecOutcome {
                termination: Termination::Exited(result.exit_code),
                result,
                cached: true,
            });
        }
        let function = self.function_of(action).to_string();
        let timeout = action.timeout().unwrap_or(self.config.default_timeout);
        let deadline = timeout + self.config.deadline_margin;
        let mut stale_retry_done = false;
        loop {
            let request = self.build_request(s3, action).await?;
            let invoked = self
                .invoke(&clients.lambda, &function, &request, deadline)
                .await;
            self.note_throttling();
            match invoked {
                Ok(invoked) => {
                    self.account(&invoked);
                    let response = invoked.response;
                    tracing::debug!(
                        action = %action.action_digest,
                        function,
                        cold = response.cold,
                        fetch_ms = response.timings.fetch_ms,
                        run_ms = response.timings.run_ms,
                        upload_ms = response.timings.upload_ms,
                        overhead_us = response.timings.overhead_us,
                        "invoked"
                    );
                    return self.receive(s3, &function, response).await;
                }
                Err(InvokeFailure::MissingBlobs { digests, message }) if !stale_retry_done => {
                    // The known-present set was stale (objects expired or deleted), or the
                    // objects are corrupt: PUT them again (a HEAD would find a corrupt
                    // object and skip it), invoke once more.
                    tracing::debug!("{message}; uploading them again");
                    for d in &digests {
                        s3.distrust(d);
                    }
                    stale_retry_done = true;
                }
                Err(
                    InvokeFailure::MissingBlobs { message, .. } | InvokeFailure::Other(message),
                ) => {
                    return Err(ExecError::Remote {
                        executor: NAME,
                        message,
                    });
                }
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        let stats = &self.stats;
        let s3 = self
            .clients
            .get()
            .map(|c| c.s3.counts())
            .unwrap_or_default();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Some(Usage {
            executor: NAME,
            invocations: load(&stats.invocations),
            remote_cache_hits: load(&stats.cache_hits),
            billed_ms: load(&stats.billed_ms),
            gb_seconds: load(&stats.mb_ms) as f64 / 1024.0 / 1000.0,
            s3_puts: s3.puts + load(&stats.runtime_puts),
            s3_gets: s3.gets + load(&stats.runtime_gets),
            s3_heads: s3.heads + load(&stats.runtime_heads),
            s3_lists: s3.lists,
            bytes_up: s3.bytes_up,
            bytes_down: s3.bytes_down,
            calls: 0,
            priced: true,
        })
    }
}

/// A successful invocation.
struct Invoked {
    response: wire::Response,
    /// The base64 tail of the function's log (real Lambda, `LogType::Tail`).
    log_tail: Option<String>,
}

/// Why an invocation gave no response.
enum InvokeFailure {
    /// The function could not find blobs the request said were in S3.
    MissingBlobs {
        digests: Vec<Digest>,
        message: String,
    },
    /// Anything else, described for the user.
    Other(String),
}

/// The error a function reported, from the payload Lambda returns with `X-Amz-Function-Error`
/// (or, from cargo-lambda's emulator, with HTTP 500): `{"errorType": ..., "errorMessage": ...}`.
fn function_error(function: &str, kind: &str, payload: &[u8]) -> InvokeFailure {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Reported {
        #[serde(default)]
        error_type: String,
        #[serde(default)]
        error_message: String,
    }
    let reported: Option<Reported> = serde_json::from_slice(payload).ok();
    let (error_type, error_message) = match reported {
        Some(r) => (r.error_type, r.error_message),
        None => (kind.to_string(), preview(payload)),
    };
    let message = format!(
        "function {function} failed ({}): {error_message}",
        if error_type.is_empty() {
            kind
        } else {
            &error_type
        }
    );
    if error_type.ends_with(MISSING_BLOBS_ERROR) {
        let digests = hex_digests_in(&error_message);
        if !digests.is_empty() {
            return InvokeFailure::MissingBlobs { digests, message };
        }
    }
    InvokeFailure::Other(message)
}

/// `hash/size` digests mentioned in a message.
fn hex_digests_in(message: &str) -> Vec<Digest> {
    message
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter_map(|word| {
            word.trim_matches(|c: char| c == '(' || c == ')')
                .parse()
                .ok()
        })
        .collect()
}

/// What an Invoke call's failure means, with what to do.
fn invoke_error(
    function: &str,
    error: &SdkError<aws_sdk_lambda::operation::invoke::InvokeError>,
) -> InvokeFailure {
    if let Some(raw) = error.raw_response() {
        let status = raw.status().as_u16();
        let body = raw.body().bytes().unwrap_or_default();
        // cargo-lambda's emulator returns a function's error as HTTP 500 with the error
        // document as the body; the real service uses 200 and X-Amz-Function-Error.
        if status == 500 && raw.headers().get("x-amzn-errortype").is_none() {
            return function_error(function, "Unhandled", body);
        }
        // A gateway giving up on the function (the emulator's --timeout answers 408).
        if matches!(status, 408 | 504) {
            return InvokeFailure::Other(format!(
                "function {function} gave no answer (HTTP {status} from the Lambda endpoint): \
                 it crashed, hung or ran out of time; check its logs (CloudWatch, or the runtime's stderr)"
            ));
        }
    }
    let service = error.as_service_error();
    let detail = DisplayErrorContext(error).to_string();
    // A 404 without Lambda's error type (an emulator, a proxy) is a missing function too.
    let not_found = service.is_some_and(|e| e.is_resource_not_found_exception())
        || error
            .raw_response()
            .is_some_and(|r| r.status().as_u16() == 404);
    // The SDK's words for credentials it could not load (not a response header's name).
    let no_credentials = [
        "credential provider",
        "CredentialsNotLoaded",
        "no providers in chain",
    ]
    .iter()
    .any(|w| detail.contains(w));
    let message = if not_found {
        format!(
            "function {function} does not exist: create it (`llama update-function --create {function}`), \
             or name another (the FUNCTION argument, LLAMACC_FUNCTION, or `function` / LLAMA_FUNCTION)"
        )
    } else if service.is_some_and(|e| e.is_too_many_requests_exception()) {
        format!(
            "invoking function {function}: throttled by Lambda beyond the retries ({detail}); \
             lower -j or LLAMA_REMOTE_JOBS, or raise the account's concurrency limit"
        )
    } else if matches!(
        error,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        format!(
            "invoking function {function}: the Lambda endpoint cannot be reached ({detail}); \
             check the network, the region (LLAMA_REGION / AWS_REGION) and AWS_ENDPOINT_URL_LAMBDA"
        )
    } else if no_credentials {
        format!(
            "invoking function {function}: no usable AWS credentials ({detail}); set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        )
    } else {
        format!("invoking function {function} failed: {detail}")
    };
    InvokeFailure::Other(message)
}

/// "Billed Duration: N ms" and "Memory Size: N MB" from the REPORT line of a base64 log tail.
fn parse_report(tail_b64: &str) -> Option<(u64, Option<u32>)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(tail_b64.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let number_after = |label: &str| -> Option<u64> {
        let at = text.rfind(label)? + label.len();
        text[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let billed = number_after("Billed Duration:")?;
    let memory = number_after("Memory Size:").and_then(|m| u32::try_from(m).ok());
    Some((billed, memory))
}

fn preview(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(&payload[..payload.len().min(300)]).into_owned();
    if payload.len() > 300 {
        format!("{text}...")
    } else {
        text
    }
}

/// The SDK retries throttling (429 `TooManyRequestsException`) and 5xx with backoff and
/// jitter. This classifier adds two things: it counts throttled responses so the executor
/// can say so once, and it forbids retrying an HTTP 500 that is a function's own error
/// (cargo-lambda's emulator answers a function error that way; real Lambda's service
/// errors carry `x-amzn-ErrorType`). Re-running a function that failed is the caller's
/// decision, not the transport's.
#[derive(Debug)]
struct InvokeRetryClassifier {
    stats: Arc<Stats>,
}

impl ClassifyRetry for InvokeRetryClassifier {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(response) = ctx.response() else {
            return RetryAction::NoActionIndicated;
        };
        let status = response.status().as_u16();
        let error_type = response.headers().get("x-amzn-errortype");
        if status == 429 || error_type.is_some_and(|t| t.starts_with("TooManyRequests")) {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return RetryAction::NoActionIndicated;
        }
        if status == 500 && error_type.is_none() {
            return RetryAction::RetryForbidden;
        }
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "llama lambda invoke"
    }
}

/// Why result blobs could not be fetched.
enum Fetch {
    /// A blob is not in the bucket.
    Missing(S3Error),
    /// Anything else.
    Failed(ExecError),
}

impl From<ExecError> for Fetch {
    fn from(e: ExecError) -> Self {
        Fetch::Failed(e)
    }
}

/// Downloads the blobs the store lacks, concurrently (the S3 client bounds the requests).
async fn download_all(s3: &S3Cas, store: &Store, digests: &[Digest]) -> Result<(), Fetch> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut seen = HashSet::new();
    for digest in digests {
        if !seen.insert(*digest) || store.contains(digest) {
            continue;
        }
        let (s3, store, digest) = (s3.clone(), store.clone(), *digest);
        tasks.spawn(async move { s3.download_to_store(&digest, &store).await });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| ExecError::Task(e.to_string()))? {
            Ok(()) => {}
            // A corrupt object is a miss: the action runs again rather than failing for
            // good on the same object.
            Err(e) if e.is_miss() => return Err(Fetch::Missing(e)),
            Err(e) => return Err(Fetch::Failed(remote(e))),
        }
    }
    Ok(())
}

/// Reads the blobs chosen to travel inline, checking each against its digest.
async fn read_inline(blobs: Vec<(Digest, BlobSource)>) -> Result<Vec<wire::InlineBlob>, ExecError> {
    blocking(move || {
        let mut out = Vec::with_capacity(blobs.len());
        for (digest, source) in blobs {
            let data = match &source {
                BlobSource::Bytes(data) => data.to_vec(),
                BlobSource::File(path) => {
                    std::fs::read(path).map_err(|error| ExecError::Scratch {
                        path: path.clone(),
                        error,
                    })?
                }
            };
            if Digest::of_bytes(&data) != digest {
                return Err(match source {
                    BlobSource::File(path) => {
                        ExecError::Store(llama_core::StoreError::Changed { path })
                    }
                    BlobSource::Bytes(_) => ExecError::InvalidAction(format!(
                        "an in-memory input does not match its digest {digest}"
                    )),
                });
            }
            out.push(wire::InlineBlob::new(&digest, data));
        }
        Ok(out)
    })
    .await
}

fn remote(e: S3Error) -> ExecError {
    match e {
        S3Error::Store(e) => ExecError::Store(e),
        other => ExecError::Remote {
            executor: NAME,
            message: other.to_string(),
        },
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ExecError> + Send + 'static,
) -> Result<T, ExecError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ExecError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_comes_from_the_report_line() {
        let tail = "START RequestId: 1 Version: $LATEST\nhello\nEND RequestId: 1\n\
                    REPORT RequestId: 1\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 1769 MB\tMax Memory Used: 50 MB\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(tail);
        assert_eq!(parse_report(&b64), Some((13, Some(1769))));
        let no_report = base64::engine::general_purpose::STANDARD.encode("just logs\n");
        assert_eq!(parse_report(&no_report), None);
        assert_eq!(parse_report("not base64!"), None);
    }

    #[test]
    fn function_errors_are_told_apart() {
        let d = Digest::of_bytes(b"gone");
        let payload = format!(
            r#"{{"errorType":"{MISSING_BLOBS_ERROR}","errorMessage":"not in s3://b/p: {d}, {d}"}}"#
        );
        match function_error("f", "Unhandled", payload.as_bytes()) {
            InvokeFailure::MissingBlobs { digests, message } => {
                assert_eq!(digests, vec![d, d]);
                assert!(message.contains("function f failed"), "{message}");
            }
            InvokeFailure::Other(m) => panic!("{m}"),
        }
        match function_error("f", "Unhandled", b"<html>oops</html>") {
            InvokeFailure::Other(m) => {
                assert!(
                    m.contains("function f failed (Unhandled): <html>oops"),
                    "{m}"
                )
            }
            InvokeFailure::MissingBlobs { .. } => panic!(),
        }
    }
}
