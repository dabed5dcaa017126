//! The CAS and action cache in S3, shared by every client and every Lambda function.
//!
//! Layout under `s3://BUCKET/PREFIX/`:
//!
//! ```text
//! cas/<sha256 hex>          blobs, named by the SHA-256 of their content
//! ac/<action sha256 hex>    serialized REAPI ActionResults, keyed by the Action's digest
//! ```
//!
//! Nothing is uploaded twice: a blob this machine knows to be present (it uploaded it, or a
//! HEAD found it) is remembered in memory and, when the caller names a file, in that file
//! (append-only lines of hex, shared by the daemon and every llama process). A blob not known
//! is HEADed before it is PUT: a HEAD costs a twelfth of a PUT and most blobs of a rebuild
//! are already there. Every blob read back is verified against its digest.

mod cas;
mod multipart;
mod present;
mod url;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use llama_core::{BlobSource, Digest, StoreError};
use tokio::sync::Semaphore;

use self::present::KnownPresent;
pub use self::url::ObjectStoreUrl;

/// Blobs this big or bigger go up in parts: one PutObject may not exceed 5 GiB, a single
/// failed request should not resend everything, and parts bound the memory one upload holds.
pub const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The size of each part of a multipart upload (S3's minimum is 5 MiB, except the last).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;

/// S3 requests in flight at once per [`S3Cas`], unless configured otherwise.
pub const DEFAULT_S3_CONCURRENCY: usize = 32;

/// Attempts per S3 or Lambda request (the first try included) in the SDK's standard retry
/// mode: exponential backoff with full jitter on throttling, 5xx and transient errors.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// A failure of the object store, naming the bucket and key and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// `object_store` is not an `s3://BUCKET[/PREFIX]` URL.
    #[error(
        "object store {url:?} is not usable: {why}; set LLAMA_OBJECT_STORE=s3://BUCKET/PREFIX or run `llama bootstrap`"
    )]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// A request failed after the SDK's retries.
    #[error("S3 {op} of s3://{bucket}/{key} failed: {message}{hint}")]
    Request {
        /// The operation (`PutObject`, `HeadObject`, ...).
        op: &'static str,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The SDK's description, with its causes.
        message: String,
        /// What to do, when it is clear (starts with "; ").
        hint: String,
    },
    /// A blob that should be in the bucket is not.
    #[error("s3://{bucket}/{key} does not exist (deleted, expired, or never uploaded)")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// A blob read from the bucket does not hash to its name (or is longer than its
    /// digest says); it was not kept, and the next upload of the blob replaces it.
    #[error(
        "s3://{bucket}/{key} is corrupt: its content hashes to {actual}; it is uploaded again by the next client that has it (or delete the object)"
    )]
    Corrupt {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What the content hashes to.
        actual: Digest,
    },
    /// A blob read from the bucket is longer than its digest says; the download stopped
    /// there, and the next upload of the blob replaces the object.
    #[error(
        "s3://{bucket}/{key} holds more than the {size} bytes its name says; it is uploaded again by the next client that has it (or delete the object)"
    )]
    TooLong {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The size its digest announces.
        size: u64,
    },
    /// A local file to upload changed after it was hashed.
    #[error("{path} changed while llama was uploading it to s3://{bucket}; run the command again")]
    Changed {
        /// The local file.
        path: PathBuf,
        /// The bucket.
        bucket: String,
    },
    /// A local file to upload cannot be read, or a download cannot be written.
    #[error("{op} {path}: {error}")]
    Local {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A transfer task panicked or was cancelled.
    #[error("an S3 transfer task failed: {0}")]
    Task(String),
}

impl S3Error {
    /// True when the blob is not usable from the bucket, absent or corrupt: a cache miss
    /// to recover from by uploading or producing the blob again, not a failure.
    pub fn is_miss(&self) -> bool {
        matches!(
            self,
            S3Error::NotFound { .. } | S3Error::Corrupt { .. } | S3Error::TooLong { .. }
        )
    }
}

/// S3 requests and bytes, as counted since the [`S3Cas`] was made. Each logical request
/// counts once, however many times the SDK retried it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct S3Counts {
    /// PUT-class requests: PutObject, CreateMultipartUpload, UploadPart,
    /// CompleteMultipartUpload, AbortMultipartUpload.
    pub puts: u64,
    /// GetObject requests.
    pub gets: u64,
    /// HeadObject requests.
    pub heads: u64,
    /// List requests (billed like PUTs).
    pub lists: u64,
    /// Bytes sent in request bodies.
    pub bytes_up: u64,
    /// Bytes received in response bodies.
    pub bytes_down: u64,
}

#[derive(Debug, Default)]
struct Counters {
    puts: AtomicU64,
    gets: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> S3Counts {
        S3Counts {
            puts: self.puts.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            heads: self.heads.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// How to reach S3.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The AWS region (llama's `region`); `None` for the SDK's default chain.
    pub region: Option<String>,
    /// Attempts per request, in the SDK's standard retry mode.
    pub max_attempts: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// The file persisting the known-present set, if any (created when missing).
    pub present_file: Option<PathBuf>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            region: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            concurrency: DEFAULT_S3_CONCURRENCY,
            present_file: None,
        }
    }
}

/// Loads the AWS SDK configuration from its standard chain (`AWS_ACCESS_KEY_ID`,
/// `AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL_S3`, instance and container roles, ...),
/// with `region` overriding the chain's region, and the standard retry mode with
/// `max_attempts` attempts unless the user chose otherwise (`AWS_MAX_ATTEMPTS`,
/// `AWS_RETRY_MODE`).
pub async fn load_aws_config(region: Option<&str>, max_attempts: u32) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let user_chose = ["AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !user_chose {
        loader = loader.retry_config(
            aws_config::retry::RetryConfig::standard().with_max_attempts(max_attempts.max(1)),
        );
    }
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(client) = bundled_roots_client() {
        loader = loader.http_client(client);
    }
    loader.load().await
}

/// An HTTPS client trusting the root certificates built into llama, for systems that have
/// none of their own: slim container images (`debian:bookworm-slim` has no
/// ca-certificates) and minimal roots, where the SDK's default client would refuse to
/// start. `None` when the system's certificates load: they are then used, as the SDK does.
fn bundled_roots_client() -> Option<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    use base64::Engine as _;

    if !rustls_native_certs::load_native_certs().certs.is_empty() {
        return None;
    }
    tracing::debug!("no system root certificates; trusting the bundled Mozilla roots");
    let mut store = tls::TrustStore::empty().with_native_roots(false);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        store = store.with_pem_certificate(pem.into_bytes());
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .ok()?;
    Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .tls_context(context)
            .build_https(),
    )
}

/// An S3 client for `sdk`. With a custom endpoint (`AWS_ENDPOINT_URL_S3` or
/// `AWS_ENDPOINT_URL`), bucket names go in the path rather than the host name, as servers
/// other than AWS (s3s, MinIO) need. Checksums are only sent where S3 requires them: every
/// blob is verified against its SHA-256 digest on both sides anyway.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = sdk.endpoint_url().is_some()
        || ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(custom_endpoint)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The CAS and action cache in one S3 bucket and prefix. Cheap to clone; clones share the
/// known-present set, the request limit and the counters.
#[derive(Clone)]
pub struct S3Cas {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_s3::Client,
    location: ObjectStoreUrl,
    permits: Semaphore,
    present: KnownPresent,
    counters: Counters,
    /// Blobs being uploaded now, each with a lock its other uploaders wait on: concurrent
    /// actions share headers and the toolchain, and each blob must go up once.
    uploading: std::sync::Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Blobs whose object was found corrupt (or absent though said present): a HEAD would
    /// say they are there, so their next upload is a PUT that replaces the object.
    suspect: Mutex<HashSet<Digest>>,
}

impl S3Cas {
    /// Connects with the SDK's standard configuration (see [`load_aws_config`]).
    pub async fn connect(location: ObjectStoreUrl, options: S3Options) -> S3Cas {
        let sdk = load_aws_config(options.region.as_deref(), options.max_attempts).await;
        S3Cas::with_client(s3_client(&sdk), location, options).await
    }

    /// Uses an existing client. Loads the known-present file, if one is named; a file that
    /// cannot be read only costs HEAD requests, and is reported at debug level.
    pub async fn with_client(
        client: aws_sdk_s3::Client,
        location: ObjectStoreUrl,
        options: S3Options,
    ) -> S3Cas {
        let present = KnownPresent::load(options.present_file).await;
        S3Cas {
            inner: Arc::new(Inner {
                client,
                location,
                permits: Semaphore::new(options.concurrency.max(1)),
                present,
                counters: Counters::default(),
                uploading: std::sync::Mutex::new(HashMap::new()),
                suspect: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// Where this store is.
    pub fn location(&self) -> &ObjectStoreUrl {
        &self.inner.location
    }

    /// Requests and bytes so far.
    pub fn counts(&self) -> S3Counts {
        self.inner.counters.snapshot()
    }

    /// True when the blob is known to be in the bucket (no request made).
    pub fn is_known_present(&self, digest: &Digest) -> bool {
        digest.size() == 0 || self.inner.present.contains(digest)
    }

    /// Forgets that a blob is present (it turned out not to be).
    pub fn forget(&self, digest: &Digest) {
        self.inner.present.forget(digest);
    }

    /// Marks a blob's object as not to be trusted (it was corrupt, or absent though said
    /// present): forgotten as present, and its next [`S3Cas::upload`] PUTs it without
    /// asking HEAD, which would find the damaged object and skip the upload.
    pub fn distrust(&self, digest: &Digest) {
        self.inner.present.forget(digest);
        lock(&self.inner.suspect).insert(*digest);
    }

    fn is_suspect(&self, digest: &Digest) -> bool {
        lock(&self.inner.suspect).contains(digest)
    }

    fn changed(&self, source: &BlobSource) -> S3Error {
        S3Error::Changed {
            path: match source {
                BlobSource::File(path) => path.clone(),
                BlobSource::Bytes(_) => PathBuf::from("<in-memory blob>"),
            },
            bucket: self.location().bucket.clone(),
        }
    }

    fn request_error<E: std::error::Error + 'static>(
        &self,
        op: &'static str,
        key: &str,
        error: &E,
        status: Option<u16>,
    ) -> S3Error {
        let message = DisplayErrorContext(error).to_string();
        S3Error::Request {
            op,
            bucket: self.location().bucket.clone(),
            key: key.to_string(),
            hint: hint(&message, status),
            message,
        }
    }
}

/// The HTTP status of a failed request, when it got that far.
pub(crate) fn status_of<E>(
    error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

/// What to do about a failed request, when the failure says it.
fn hint(message: &str, status: Option<u16>) -> String {
    let text = if message.contains("no credentials") || message.contains("CredentialsNotLoaded") {
        "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
    } else if status == Some(403) {
        "access denied: check that the credentials may read and write the bucket (s3:GetObject, s3:PutObject, s3:ListBucket)"
    } else if message.contains("NoSuchBucket") {
        "the bucket does not exist: create it, fix LLAMA_OBJECT_STORE, or run `llama bootstrap`"
    } else if message.contains("dispatch failure") || message.contains("io error") {
        "S3 cannot be reached: check the network, the region (LLAMA_REGION / AWS_REGION) and AWS_ENDPOINT_URL_S3"
    } else if message.contains("timeout") || message.contains("timed out") {
        "S3 did not answer in time: check the network, or try again"
    } else {
        return String::new();
    };
    format!("; {text}")
}

fn task_error(e: tokio::task::JoinError) -> S3Error {
    S3Error::Task(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
