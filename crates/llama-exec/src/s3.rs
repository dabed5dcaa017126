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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use llama_core::{BlobSource, Digest, Store, StoreError, reapi};
use prost::Message;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

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

/// `s3://BUCKET[/PREFIX]`: where the CAS and the action cache live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectStoreUrl {
    /// The bucket.
    pub bucket: String,
    /// The key prefix, without leading or trailing `/` ("" for the bucket's root).
    pub prefix: String,
}

impl ObjectStoreUrl {
    /// The key of `rest` under the prefix.
    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }

    /// The key of a blob.
    pub fn cas_key(&self, digest: &Digest) -> String {
        self.key(&format!("cas/{}", digest.hex()))
    }

    /// The key of an action-cache entry.
    pub fn ac_key(&self, action: &Digest) -> String {
        self.key(&format!("ac/{}", action.hex()))
    }
}

impl fmt::Display for ObjectStoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

impl FromStr for ObjectStoreUrl {
    type Err = S3Error;

    fn from_str(url: &str) -> Result<Self, S3Error> {
        let bad = |why: &str| S3Error::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it must start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules for bucket names, the parts that catch typos.
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(bad(
                "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(bad("the prefix must not contain '.', '..' or empty parts"));
        }
        Ok(ObjectStoreUrl {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

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

    /// The blobs of `digests` the bucket lacks, found by HEAD requests (concurrent, bounded),
    /// skipping those known present. Duplicates are asked about once.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons requests in flight; nothing is changed but the
    /// known-present set, which only ever learns true facts.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, S3Error> {
        let mut unique: Vec<Digest> = digests
            .iter()
            .filter(|d| !self.is_known_present(d))
            .copied()
            .collect();
        unique.sort_by(|a, b| a.hash_bytes().cmp(b.hash_bytes()));
        unique.dedup();
        let (suspect, unique): (Vec<Digest>, Vec<Digest>) =
            unique.into_iter().partition(|d| self.is_suspect(d));
        let mut tasks = tokio::task::JoinSet::new();
        for digest in unique {
            let this = self.clone();
            tasks.spawn(async move { (digest, this.head(&digest).await) });
        }
        let mut missing = suspect;
        while let Some(joined) = tasks.join_next().await {
            let (digest, present) = joined.map_err(task_error)?;
            if !present? {
                missing.push(digest);
            }
        }
        Ok(missing)
    }

    /// Uploads a blob unless it is known present or a HEAD finds it. Returns true when it
    /// was uploaded now. The bytes are verified against `digest` before they are sent: a
    /// local file that changed since it was hashed is refused ([`S3Error::Changed`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave a multipart upload unfinished (S3 lifecycle rules
    /// should abort incomplete uploads); no object is ever written with wrong content.
    pub async fn upload(&self, digest: Digest, source: BlobSource) -> Result<bool, S3Error> {
        if self.is_known_present(&digest) {
            return Ok(false);
        }
        let lock = {
            let mut uploading = self
                .inner
                .uploading
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            uploading.entry(digest).or_default().clone()
        };
        let guard = lock.lock().await;
        let uploaded = self.upload_alone(digest, source).await;
        drop(guard);
        self.inner
            .uploading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest);
        uploaded
    }

    /// [`S3Cas::upload`] once no other upload of the blob is in flight.
    async fn upload_alone(&self, digest: Digest, source: BlobSource) -> Result<bool, S3Error> {
        let suspect = self.is_suspect(&digest);
        if !suspect && (self.is_known_present(&digest) || self.head(&digest).await?) {
            return Ok(false);
        }
        if digest.size() >= MULTIPART_THRESHOLD {
            self.put_multipart(&digest, &source).await?;
        } else {
            let data = match &source {
                BlobSource::Bytes(data) => data.to_vec(),
                BlobSource::File(path) => {
                    tokio::fs::read(path)
                        .await
                        .map_err(|error| S3Error::Local {
                            op: "read",
                            path: path.clone(),
                            error,
                        })?
                }
            };
            if Digest::of_bytes(&data) != digest {
                return Err(self.changed(&source));
            }
            self.put_object(&self.location().cas_key(&digest), data)
                .await?;
        }
        lock(&self.inner.suspect).remove(&digest);
        self.inner.present.insert(&digest);
        Ok(true)
    }

    /// Uploads every blob of `blobs` (see [`S3Cas::upload`]), concurrently within the
    /// request limit. Returns how many were uploaded now.
    pub async fn upload_all(&self, blobs: Vec<(Digest, BlobSource)>) -> Result<usize, S3Error> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut seen = HashSet::new();
        for (digest, source) in blobs {
            if !seen.insert(digest) || self.is_known_present(&digest) {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move { this.upload(digest, source).await });
        }
        let mut uploaded = 0;
        while let Some(joined) = tasks.join_next().await {
            if joined.map_err(task_error)?? {
                uploaded += 1;
            }
        }
        Ok(uploaded)
    }

    /// Downloads a blob into the local store, verified, unless the store has it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves at most a temporary file, removed on drop.
    pub async fn download_to_store(&self, digest: &Digest, store: &Store) -> Result<(), S3Error> {
        if store.contains(digest) {
            return Ok(());
        }
        let key = self.location().cas_key(digest);
        let tmp_dir = store.root().join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix(".s3-")
            .tempfile_in(&tmp_dir)
            .map_err(|error| S3Error::Local {
                op: "create a temporary file in",
                path: tmp_dir.clone(),
                error,
            })?;
        let (file, path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let Some(mut body) = self.get_object(&key).await? else {
            return Err(S3Error::NotFound {
                bucket: self.location().bucket.clone(),
                key,
            });
        };
        let local = |op, error| S3Error::Local {
            op,
            path: path.to_path_buf(),
            error,
        };
        let mut received = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.request_error("GetObject", &key, &e, None))?
        {
            Counters::add(&self.inner.counters.bytes_down, chunk.len() as u64);
            // The object may be anything anyone with write access put there: never take
            // more bytes than the digest says.
            received = received.saturating_add(chunk.len() as u64);
            if received > digest.size() {
                self.distrust(digest);
                return Err(S3Error::TooLong {
                    bucket: self.location().bucket.clone(),
                    key,
                    size: digest.size(),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| local("write", e))?;
        }
        file.flush().await.map_err(|e| local("write", e))?;
        drop(file);
        let store = store.clone();
        let adopted = tokio::task::spawn_blocking(move || {
            let adopted = store.adopt_file(&path);
            drop(path);
            adopted
        })
        .await
        .map_err(task_error)??;
        if adopted != *digest {
            self.distrust(digest);
            return Err(S3Error::Corrupt {
                bucket: self.location().bucket.clone(),
                key,
                actual: adopted,
            });
        }
        Ok(())
    }

    /// The action-cache entry of `action`, if there is one. An entry that does not decode is
    /// treated as absent (and reported at warning level).
    pub async fn get_action_result(
        &self,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>, S3Error> {
        let key = self.location().ac_key(action);
        let Some(body) = self.get_object(&key).await? else {
            return Ok(None);
        };
        let data = body
            .collect()
            .await
            .map_err(|e| self.request_error("GetObject", &key, &e, None))?
            .into_bytes();
        Counters::add(&self.inner.counters.bytes_down, data.len() as u64);
        match reapi::ActionResult::decode(&data[..]) {
            Ok(result) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(
                    "s3://{}/{key} is not a valid ActionResult ({e}); ignoring it",
                    self.location().bucket
                );
                Ok(None)
            }
        }
    }

    /// Records `result` as the action-cache entry of `action`. Every blob it names must be
    /// uploaded first, so an entry never points at a missing blob.
    pub async fn put_action_result(
        &self,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), S3Error> {
        self.put_object(&self.location().ac_key(action), result.encode_to_vec())
            .await
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        match self.inner.permits.acquire().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the S3 request semaphore is never closed"),
        }
    }

    /// HEAD: true when present (and then remembered).
    async fn head(&self, digest: &Digest) -> Result<bool, S3Error> {
        if digest.size() == 0 {
            return Ok(true);
        }
        let key = self.location().cas_key(digest);
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.heads, 1);
        let sent = self
            .inner
            .client
            .head_object()
            .bucket(&self.location().bucket)
            .key(&key)
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.inner.present.insert(digest);
                Ok(true)
            }
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
            Err(e) => Err(self.request_error("HeadObject", &key, &e, status_of(&e))),
        }
    }

    /// GET: the body, or `None` when there is no such key.
    async fn get_object(&self, key: &str) -> Result<Option<ByteStream>, S3Error> {
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.gets, 1);
        let sent = self
            .inner
            .client
            .get_object()
            .bucket(&self.location().bucket)
            .key(key)
            .send()
            .await;
        match sent {
            Ok(out) => Ok(Some(out.body)),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(self.request_error("GetObject", key, &e, status_of(&e))),
        }
    }

    async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<(), S3Error> {
        let _permit = self.permit().await;
        let len = data.len() as u64;
        Counters::add(&self.inner.counters.puts, 1);
        self.inner
            .client
            .put_object()
            .bucket(&self.location().bucket)
            .key(key)
            .content_length(len as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.request_error("PutObject", key, &e, status_of(&e)))?;
        Counters::add(&self.inner.counters.bytes_up, len);
        Ok(())
    }

    /// A multipart upload, one part at a time, hashing as it reads; aborted if the content
    /// turns out not to match its digest or any part fails.
    async fn put_multipart(&self, digest: &Digest, source: &BlobSource) -> Result<(), S3Error> {
        let key = self.location().cas_key(digest);
        let bucket = &self.location().bucket;
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.puts, 1);
        let created = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.request_error("CreateMultipartUpload", &key, &e, status_of(&e)))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(S3Error::Request {
                op: "CreateMultipartUpload",
                bucket: bucket.clone(),
                key,
                message: "the response has no upload id".into(),
                hint: "; the S3 endpoint does not behave like S3".into(),
            });
        };
        let uploaded = self.upload_parts(digest, source, &key, &upload_id).await;
        let completed = match uploaded {
            Ok(parts) => {
                Counters::add(&self.inner.counters.puts, 1);
                self.inner
                    .client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| {
                        self.request_error("CompleteMultipartUpload", &key, &e, status_of(&e))
                    })
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            Counters::add(&self.inner.counters.puts, 1);
            let aborted = self
                .inner
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::debug!(
                    "aborting the multipart upload of s3://{bucket}/{key}: {}",
                    DisplayErrorContext(&e)
                );
            }
        }
        completed
    }

    async fn upload_parts(
        &self,
        digest: &Digest,
        source: &BlobSource,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, S3Error> {
        let mut reader = PartReader::open(source).await?;
        let mut hasher = llama_core::Hasher::default();
        let mut parts = Vec::new();
        let mut number = 0;
        loop {
            let chunk = reader.next_part(PART_SIZE as usize).await?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            number += 1;
            let len = chunk.len() as u64;
            Counters::add(&self.inner.counters.puts, 1);
            let sent = self
                .inner
                .client
                .upload_part()
                .bucket(&self.location().bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| self.request_error("UploadPart", key, &e, status_of(&e)))?;
            Counters::add(&self.inner.counters.bytes_up, len);
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(sent.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
        }
        if hasher.finish() != *digest {
            return Err(self.changed(source));
        }
        Ok(parts)
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

/// Reads a blob source in parts.
enum PartReader {
    Bytes(Arc<[u8]>, usize),
    File(tokio::fs::File, PathBuf),
}

impl PartReader {
    async fn open(source: &BlobSource) -> Result<PartReader, S3Error> {
        Ok(match source {
            BlobSource::Bytes(data) => PartReader::Bytes(data.clone(), 0),
            BlobSource::File(path) => PartReader::File(
                tokio::fs::File::open(path)
                    .await
                    .map_err(|error| S3Error::Local {
                        op: "open",
                        path: path.clone(),
                        error,
                    })?,
                path.clone(),
            ),
        })
    }

    /// Up to `size` bytes; empty at the end.
    async fn next_part(&mut self, size: usize) -> Result<Vec<u8>, S3Error> {
        use tokio::io::AsyncReadExt as _;
        match self {
            PartReader::Bytes(data, at) => {
                let end = (*at + size).min(data.len());
                let part = data[*at..end].to_vec();
                *at = end;
                Ok(part)
            }
            PartReader::File(file, path) => {
                let mut part = Vec::with_capacity(size);
                let mut limited = file.take(size as u64);
                limited
                    .read_to_end(&mut part)
                    .await
                    .map_err(|error| S3Error::Local {
                        op: "read",
                        path: path.clone(),
                        error,
                    })?;
                Ok(part)
            }
        }
    }
}

/// The set of blobs known to be in the bucket: in memory, and appended to a file shared by
/// every llama process of the user (one hex SHA-256 per line).
struct KnownPresent {
    set: Mutex<HashSet<[u8; 32]>>,
    file: Option<(PathBuf, Mutex<Option<std::fs::File>>)>,
}

/// How long the known-present file is trusted before it starts afresh: well inside the
/// expiry `llama bootstrap` gives the bucket's blobs (30 days by default), so what it names
/// has seldom expired, and the file stays bounded. Starting afresh costs one HEAD per blob.
const KNOWN_PRESENT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// The known-present file's first line: `# since UNIX_SECONDS`.
const KNOWN_PRESENT_SINCE: &str = "# since ";

impl KnownPresent {
    async fn load(path: Option<PathBuf>) -> KnownPresent {
        let mut set = HashSet::new();
        if let Some(path) = &path {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            match tokio::fs::read_to_string(path).await {
                Ok(text) if is_fresh(&text, now) => {
                    set.extend(text.lines().filter_map(parse_hex_line))
                }
                Ok(_) => start_afresh(path, now).await,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => start_afresh(path, now).await,
                Err(e) => tracing::debug!("known-present set {}: {e}", path.display()),
            }
        }
        KnownPresent {
            set: Mutex::new(set),
            file: path.map(|p| (p, Mutex::new(None))),
        }
    }

    fn contains(&self, digest: &Digest) -> bool {
        lock(&self.set).contains(digest.hash_bytes())
    }

    fn forget(&self, digest: &Digest) {
        // The file keeps its line; the next process to load it HEADs once more, at worst.
        lock(&self.set).remove(digest.hash_bytes());
    }

    fn insert(&self, digest: &Digest) {
        if !lock(&self.set).insert(*digest.hash_bytes()) {
            return;
        }
        let Some((path, file)) = &self.file else {
            return;
        };
        // One short append per blob learned. O_APPEND writes this small are atomic on local
        // file systems, so processes sharing the file never interleave within a line.
        let mut file = lock(file);
        if file.is_none() {
            *file = open_append(path)
                .map_err(|e| tracing::debug!("known-present set {}: {e}", path.display()))
                .ok();
        }
        if let Some(f) = file.as_mut()
            && let Err(e) = f.write_all(format!("{}\n", digest.hex()).as_bytes())
        {
            tracing::debug!("known-present set {}: {e}", path.display());
        }
    }
}

/// Whether the known-present file `text` began less than [`KNOWN_PRESENT_MAX_AGE`] before
/// `now` (a file without its first line predates the limit, and is not).
fn is_fresh(text: &str, now: u64) -> bool {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix(KNOWN_PRESENT_SINCE))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .is_some_and(|since| now.saturating_sub(since) <= KNOWN_PRESENT_MAX_AGE.as_secs())
}

/// Replaces the known-present file with an empty one that starts `now`, in one rename:
/// another process still appending to the old one loses only what it learned (HEADs later).
async fn start_afresh(path: &Path, now: u64) {
    let fresh = path.with_extension(format!("new.{}", std::process::id()));
    let result = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&fresh, format!("{KNOWN_PRESENT_SINCE}{now}\n")).await?;
        tokio::fs::rename(&fresh, path).await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!("known-present set {}: {e}", path.display());
        let _ = tokio::fs::remove_file(&fresh).await;
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

fn parse_hex_line(line: &str) -> Option<[u8; 32]> {
    let line = line.trim();
    if line.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_name_keys() {
        let u: ObjectStoreUrl = "s3://my-bucket/llama/".parse().unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "llama");
        let d = Digest::of_bytes(b"x");
        assert_eq!(u.cas_key(&d), format!("llama/cas/{}", d.hex()));
        assert_eq!(u.ac_key(&d), format!("llama/ac/{}", d.hex()));
        assert_eq!(u.to_string(), "s3://my-bucket/llama");
        let bare: ObjectStoreUrl = "s3://my-bucket".parse().unwrap();
        assert_eq!(bare.cas_key(&d), format!("cas/{}", d.hex()));
        assert_eq!(bare.to_string(), "s3://my-bucket");
        for bad in [
            "my-bucket",
            "s3://",
            "s3://B",
            "s3://ab",
            "s3://b_c/x",
            "s3://abc/../x",
        ] {
            let err = bad.parse::<ObjectStoreUrl>().unwrap_err().to_string();
            assert!(err.contains("LLAMA_OBJECT_STORE"), "{bad}: {err}");
        }
    }

    #[test]
    fn hex_lines_parse_and_junk_is_skipped() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(parse_hex_line(&d.hex()), Some(*d.hash_bytes()));
        assert_eq!(parse_hex_line("zz"), None);
        assert_eq!(parse_hex_line(&"g".repeat(64)), None);
    }

    #[tokio::test]
    async fn known_present_set_persists_across_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("present/abc");
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        let first = KnownPresent::load(Some(path.clone())).await;
        first.insert(&a);
        first.insert(&a);
        let second = KnownPresent::load(Some(path.clone())).await;
        assert!(second.contains(&a));
        assert!(!second.contains(&b));
        second.insert(&b);
        second.forget(&a);
        assert!(!second.contains(&a));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "a header and two blobs: {text}");
        assert!(text.starts_with(KNOWN_PRESENT_SINCE), "{text}");
    }

    #[tokio::test]
    async fn known_present_set_starts_afresh_when_old_or_headerless() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("present");
        let a = Digest::of_bytes(b"a");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let eight_days_ago = now - 8 * 24 * 3600;
        for stale in [
            format!("{KNOWN_PRESENT_SINCE}{eight_days_ago}\n{}\n", a.hex()),
            format!("{}\n", a.hex()),
        ] {
            std::fs::write(&path, stale).unwrap();
            let loaded = KnownPresent::load(Some(path.clone())).await;
            assert!(!loaded.contains(&a));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(is_fresh(&text, now), "{text}");
        }
        let one_day_ago = now - 24 * 3600;
        std::fs::write(
            &path,
            format!("{KNOWN_PRESENT_SINCE}{one_day_ago}\n{}\n", a.hex()),
        )
        .unwrap();
        assert!(KnownPresent::load(Some(path.clone())).await.contains(&a));
    }

    #[test]
    fn hints_say_what_to_do() {
        assert!(hint("x", Some(403)).contains("s3:PutObject"));
        assert!(hint("NoSuchBucket: gone", Some(404)).contains("llama bootstrap"));
        assert!(hint("dispatch failure: io error", None).contains("AWS_ENDPOINT_URL_S3"));
        assert_eq!(hint("something else", Some(400)), "");
    }
}
