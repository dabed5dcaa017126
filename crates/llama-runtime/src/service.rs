//! One invocation: fetch the inputs, run, return or upload the outputs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llama_core::{
    BlobSource, Digest, InputTree, PreparedAction, STDIN_PROPERTY, Store, StoreError, reapi,
};
use llama_exec::{
    ExecError, Executor, LocalExecutor, MISSING_BLOBS_ERROR, ObjectStoreUrl, S3Cas, S3Counts,
    S3Error, S3Options, result_blobs, tree_files, wire,
};
use prost::Message;
use tokio::sync::OnceCell;

use crate::settings::{RUNTIME_VERSION, Settings};

/// A command's deadline when neither the Action nor the request sets one: Lambda's own
/// maximum function timeout.
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(900);

/// What kind of failure a request met; its name is the error type the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The request is not a valid llama request (wrong version, undecodable, lying digests).
    BadRequest,
    /// Blobs the request said were in the object store are not there. The client uploads
    /// them again and retries.
    MissingBlobs,
    /// The object store failed.
    ObjectStore,
    /// The blob cache or the scratch directory failed.
    Execution,
}

impl FailureKind {
    /// The Lambda error type reported for it.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::BadRequest => "BadRequest",
            FailureKind::MissingBlobs => MISSING_BLOBS_ERROR,
            FailureKind::ObjectStore => "ObjectStore",
            FailureKind::Execution => "Execution",
        }
    }
}

/// Why a request failed: an infrastructure failure for the client, never the command's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind, which becomes the Lambda error type.
    pub kind: FailureKind,
    /// What happened, for the user.
    pub message: String,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::BadRequest, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for Failure {}

impl From<ExecError> for Failure {
    fn from(e: ExecError) -> Self {
        let kind = match e {
            // E.g. an output path through a symlink of the inputs: the request's fault.
            ExecError::InvalidAction(_) => FailureKind::BadRequest,
            _ => FailureKind::Execution,
        };
        Failure::new(kind, format!("llama-runtime: {e}"))
    }
}

/// Refuses a Command whose working directory or outputs would lie outside the action's
/// directory by their spelling alone (absolute, `..`, NUL); the local executor then refuses
/// those reached through a symlink of the inputs.
fn check_paths(command: &reapi::Command) -> Result<(), Failure> {
    let refused = |e: llama_exec::UnsafePath| Failure::bad_request(format!("llama-runtime: {e}"));
    llama_exec::check_relative("working directory", &command.working_directory, true)
        .map_err(refused)?;
    for output in &command.output_paths {
        llama_exec::check_relative("output path", output, false).map_err(refused)?;
    }
    Ok(())
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::new(
            FailureKind::Execution,
            format!("llama-runtime blob cache: {e}"),
        )
    }
}

impl From<S3Error> for Failure {
    fn from(e: S3Error) -> Self {
        match e {
            S3Error::Store(e) => e.into(),
            other => Failure::new(FailureKind::ObjectStore, format!("llama-runtime: {other}")),
        }
    }
}

/// Handles requests; shared by every invocation of the process, so the blob cache and the
/// S3 clients stay warm.
pub struct Service {
    store: Store,
    settings: Settings,
    sdk: OnceCell<aws_config::SdkConfig>,
    buckets: Mutex<HashMap<wire::StoreLocation, S3Cas>>,
    invocations: AtomicU64,
    /// One action at a time, inputs linked to the verified cache whoever runs it (a write
    /// through a link is caught after the action, before any other action runs). Kept
    /// across requests: its scratch directory is reused, and emptied between them.
    executor: LocalExecutor,
}

/// How long a blob the runtime used is kept from eviction: longer than fetching and laying
/// out one action's inputs takes.
const RUNTIME_EVICTION_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl Service {
    /// Opens the blob cache.
    pub fn new(settings: Settings) -> Result<Service, StoreError> {
        // A container serves one invocation at a time and its /tmp is small (512 MB by
        // default): the store may go over its limit only while an invocation fetches and lays
        // out its inputs, not for the ten minutes a store shared by many processes allows.
        let store = Store::open(&settings.cache_dir, settings.cache_size)?
            .with_eviction_grace(RUNTIME_EVICTION_GRACE);
        let executor =
            LocalExecutor::new(store.clone(), 1, FALLBACK_TIMEOUT).with_linked_inputs(true);
        Ok(Service {
            store,
            executor,
            settings,
            sdk: OnceCell::new(),
            buckets: Mutex::new(HashMap::new()),
            invocations: AtomicU64::new(0),
        })
    }

    /// The blob cache.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Requests handled so far (the first one was the cold start).
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed)
    }

    /// Handles a request as it arrived from the Runtime API: JSON that should be a
    /// [`wire::Request`]. Anything else is a [`FailureKind::BadRequest`] that says what it
    /// expected.
    pub async fn handle_json(&self, event: serde_json::Value) -> Result<wire::Response, Failure> {
        let request: wire::Request = serde_json::from_value(event).map_err(|e| {
            Failure::bad_request(format!(
                "llama-runtime: the event is not a llama request (wire version {}): {e}; \
                 invoke this function through llama, whose version must match the runtime's ({RUNTIME_VERSION})",
                wire::WIRE_VERSION
            ))
        })?;
        self.handle(request).await
    }

    /// Runs one request.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the command and leaves the blob cache consistent (every
    /// write to it is atomic); uploads in flight are abandoned.
    pub async fn handle(&self, request: wire::Request) -> Result<wire::Response, Failure> {
        let cold = self.invocations.fetch_add(1, Ordering::Relaxed) == 0;
        let started = Instant::now();
        if request.v != wire::WIRE_VERSION {
            return Err(Failure::bad_request(format!(
                "llama-runtime {RUNTIME_VERSION} speaks wire version {} but the request is version {}; \
                 update the function or the client so they match",
                wire::WIRE_VERSION,
                request.v
            )));
        }
        let action = reapi::Action::decode(&request.action.0[..])
            .map_err(|e| Failure::bad_request(format!("the Action does not decode: {e}")))?;
        let action_digest = Digest::of_bytes(&request.action.0);
        if request.action_digest != action_digest.to_string() {
            return Err(Failure::bad_request(format!(
                "action_digest {} does not match the Action, which hashes to {action_digest}",
                request.action_digest
            )));
        }
        let s3 = match &request.store {
            Some(location) => Some(self.bucket(location).await?),
            None => None,
        };
        let counts_before = s3.as_ref().map(S3Cas::counts).unwrap_or_default();

        self.put_inline(request.blobs).await?;
        let prepared = self
            .fetch_inputs(s3.as_ref(), action, action_digest)
            .await?;
        check_paths(&prepared.command)?;
        let fetched = Instant::now();

        let timeout = request
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(FALLBACK_TIMEOUT);
        let executor = self.executor.with_default_timeout(timeout);
        let mut outcome = executor.execute(&prepared).await?;
        if let Some(meta) = outcome.result.execution_metadata.as_mut() {
            meta.worker = format!("lambda:{}", self.settings.function_name);
        }
        let ran = Instant::now();

        let cache = outcome.termination.success() && !prepared.action.do_not_cache;
        let blobs = self
            .send_outputs(
                s3.as_ref(),
                &outcome.result,
                request.inline_output_limit,
                cache.then_some(&action_digest),
            )
            .await?;
        let uploaded = Instant::now();

        let counts = s3.as_ref().map(S3Cas::counts).unwrap_or_default();
        let command = command_time(&outcome.result).unwrap_or_default();
        let timings = wire::Timings {
            fetch_ms: millis(fetched - started),
            run_ms: millis(ran - fetched),
            upload_ms: millis(uploaded - ran),
            overhead_us: micros((uploaded - started).saturating_sub(command)),
        };
        tracing::info!(
            "action {action_digest}: {} (fetch {} ms, run {} ms, upload {} ms, overhead {:.1} ms{})",
            outcome.termination,
            timings.fetch_ms,
            timings.run_ms,
            timings.upload_ms,
            timings.overhead_us as f64 / 1000.0,
            if cold { ", cold" } else { "" }
        );
        Ok(wire::Response {
            v: wire::WIRE_VERSION,
            result: wire::Base64(outcome.result.encode_to_vec()),
            termination: outcome.termination.into(),
            blobs,
            timings,
            cold,
            memory_mb: self.settings.memory_mb,
            runtime_version: RUNTIME_VERSION.to_string(),
            s3_ops: ops_between(&counts_before, &counts),
        })
    }

    /// The S3 client of a bucket and prefix, made once per process.
    async fn bucket(&self, location: &wire::StoreLocation) -> Result<S3Cas, Failure> {
        if let Some(s3) = lock(&self.buckets).get(location) {
            return Ok(s3.clone());
        }
        let url: ObjectStoreUrl = if location.prefix.is_empty() {
            format!("s3://{}", location.bucket)
        } else {
            format!("s3://{}/{}", location.bucket, location.prefix)
        }
        .parse()
        .map_err(|e: S3Error| Failure::bad_request(e.to_string()))?;
        let sdk = self
            .sdk
            .get_or_init(|| llama_exec::load_aws_config(None, llama_exec::DEFAULT_MAX_ATTEMPTS))
            .await;
        let s3 = S3Cas::with_client(llama_exec::s3_client(sdk), url, S3Options::default()).await;
        lock(&self.buckets).insert(location.clone(), s3.clone());
        Ok(s3)
    }

    /// Puts the inline blobs into the cache, each checked against its digest.
    async fn put_inline(&self, blobs: Vec<wire::InlineBlob>) -> Result<(), Failure> {
        let store = self.store.clone();
        blocking(move || {
            for blob in &blobs {
                let digest = blob.verified_digest().map_err(Failure::bad_request)?;
                if !store.contains(&digest) {
                    store.put_bytes(&blob.data.0)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// Gets the Command, every Directory, every file and the stdin blob into the cache, and
    /// describes them as a prepared action for the local executor.
    async fn fetch_inputs(
        &self,
        s3: Option<&S3Cas>,
        action: reapi::Action,
        action_digest: Digest,
    ) -> Result<PreparedAction, Failure> {
        let digest_of = |what: &str, d: Option<&reapi::Digest>| {
            Digest::from_field(d)
                .map_err(|e| Failure::bad_request(format!("the Action's {what}: {e}")))
        };
        let command_digest = digest_of("command_digest", action.command_digest.as_ref())?;
        let root = digest_of("input_root_digest", action.input_root_digest.as_ref())?;
        self.ensure(s3, &[command_digest]).await?;
        let store = self.store.clone();
        let command: reapi::Command = blocking(move || {
            store
                .get_message(&command_digest, "Command")
                .map_err(Failure::from)
        })
        .await?;

        // The tree, level by level: a directory's children are known once it is read.
        let mut directories: HashMap<Digest, Vec<u8>> = HashMap::new();
        let mut files: HashMap<Digest, BlobSource> = HashMap::new();
        let mut level = vec![root];
        while !level.is_empty() {
            self.ensure(s3, &level).await?;
            let store = self.store.clone();
            let this_level = std::mem::take(&mut level);
            let read = blocking(move || {
                let mut out = Vec::new();
                for d in this_level {
                    let bytes = store.get_bytes(&d)?;
                    let dir = reapi::Directory::decode(&bytes[..]).map_err(|e| {
                        Failure::bad_request(format!("input directory {d} does not decode: {e}"))
                    })?;
                    out.push((d, bytes, dir));
                }
                Ok(out)
            })
            .await?;
            for (d, bytes, dir) in read {
                for f in &dir.files {
                    let fd = digest_of("file digest", f.digest.as_ref())?;
                    files.insert(fd, BlobSource::File(self.store.blob_path(&fd)));
                }
                for sub in &dir.directories {
                    let sd = digest_of("directory digest", sub.digest.as_ref())?;
                    if !directories.contains_key(&sd) && !level.contains(&sd) {
                        level.push(sd);
                    }
                }
                directories.insert(d, bytes);
            }
        }

        let stdin = match action
            .platform
            .as_ref()
            .and_then(|p| p.properties.iter().find(|p| p.name == STDIN_PROPERTY))
        {
            Some(p) => {
                let d: Digest = p.value.parse().map_err(|e| {
                    Failure::bad_request(format!("platform property {STDIN_PROPERTY}: {e}"))
                })?;
                Some((d, BlobSource::File(self.store.blob_path(&d))))
            }
            None => None,
        };
        let mut wanted: Vec<Digest> = files.keys().copied().collect();
        wanted.extend(stdin.iter().map(|(d, _)| *d));
        self.ensure(s3, &wanted).await?;
        Ok(PreparedAction {
            action,
            action_digest,
            command,
            command_digest,
            input: InputTree {
                root,
                directories,
                files,
            },
            stdin,
        })
    }

    /// Downloads the blobs the cache lacks, concurrently. Blobs the object store does not
    /// have either are reported together as [`FailureKind::MissingBlobs`].
    async fn ensure(&self, s3: Option<&S3Cas>, digests: &[Digest]) -> Result<(), Failure> {
        let mut seen = HashSet::new();
        let absent: Vec<Digest> = digests
            .iter()
            .filter(|d| seen.insert(**d) && !self.store.contains(d))
            .copied()
            .collect();
        if absent.is_empty() {
            return Ok(());
        }
        let Some(s3) = s3 else {
            return Err(Failure::new(
                FailureKind::MissingBlobs,
                format!(
                    "the request names no object store and does not carry {}",
                    list(&absent)
                ),
            ));
        };
        let mut tasks = tokio::task::JoinSet::new();
        for d in absent {
            let (s3, store) = (s3.clone(), self.store.clone());
            tasks.spawn(async move { (d, s3.download_to_store(&d, &store).await) });
        }
        let mut missing = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (d, fetched) = joined.map_err(|e| ExecError::Task(e.to_string()))?;
            match fetched {
                Ok(()) => {}
                Err(e) if e.is_miss() => missing.push(d),
                Err(e) => return Err(e.into()),
            }
        }
        if !missing.is_empty() {
            return Err(Failure::new(
                FailureKind::MissingBlobs,
                format!("not in {}: {}", s3.location(), list(&missing)),
            ));
        }
        Ok(())
    }

    /// Chooses the outputs that travel inline, uploads the others, and, when `cache_as` is
    /// given, uploads every output and then the action-cache entry (so another client can
    /// be served from S3 without this response).
    async fn send_outputs(
        &self,
        s3: Option<&S3Cas>,
        result: &reapi::ActionResult,
        inline_limit: u64,
        cache_as: Option<&Digest>,
    ) -> Result<Vec<wire::InlineBlob>, Failure> {
        let (mut all, trees) = result_blobs(result)?;
        let store = self.store.clone();
        let tree_list = trees.clone();
        let tree_contents = blocking(move || {
            let mut files = Vec::new();
            for t in &tree_list {
                let tree: reapi::Tree = store.get_message(t, "Tree")?;
                files.extend(tree_files(&tree)?);
            }
            Ok(files)
        })
        .await?;
        all.extend(trees);
        all.extend(tree_contents);
        let mut seen = HashSet::new();
        all.retain(|d| seen.insert(*d) && d.size() > 0);

        let result_cost = wire::inline_cost(result.encoded_len() as u64);
        let budget = wire::INLINE_BUDGET.saturating_sub(result_cost);
        let sizes: Vec<u64> = all.iter().map(Digest::size).collect();
        let chosen: HashSet<usize> = wire::plan_inline(&sizes, budget, inline_limit)
            .into_iter()
            .collect();
        let inline: Vec<Digest> = (0..all.len())
            .filter(|i| chosen.contains(i))
            .map(|i| all[i])
            .collect();
        let to_upload: Vec<Digest> = match cache_as {
            Some(_) => all.clone(),
            None => (0..all.len())
                .filter(|i| !chosen.contains(i))
                .map(|i| all[i])
                .collect(),
        };
        match s3 {
            None if inline.len() < all.len() => {
                let rest: Vec<Digest> = all
                    .iter()
                    .filter(|d| !inline.contains(d))
                    .copied()
                    .collect();
                return Err(Failure::new(
                    FailureKind::Execution,
                    format!(
                        "outputs too large to return inline ({}) and the request names no object store",
                        list(&rest)
                    ),
                ));
            }
            None => {}
            Some(s3) => {
                let sources = to_upload
                    .iter()
                    .map(|d| (*d, BlobSource::File(self.store.blob_path(d))))
                    .collect();
                s3.upload_all(sources).await?;
                if let Some(action) = cache_as {
                    s3.put_action_result(action, result).await?;
                }
            }
        }
        self.read_blobs(inline).await
    }

    async fn read_blobs(&self, digests: Vec<Digest>) -> Result<Vec<wire::InlineBlob>, Failure> {
        let store = self.store.clone();
        blocking(move || {
            digests
                .iter()
                .map(|d| Ok(wire::InlineBlob::new(d, store.get_bytes(d)?)))
                .collect()
        })
        .await
    }
}

fn ops_between(before: &S3Counts, after: &S3Counts) -> wire::S3Ops {
    wire::S3Ops {
        puts: after.puts - before.puts,
        gets: after.gets - before.gets,
        heads: after.heads - before.heads,
    }
}

fn list(digests: &[Digest]) -> String {
    digests
        .iter()
        .map(Digest::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How long the command itself ran, as the executor recorded it.
fn command_time(result: &reapi::ActionResult) -> Option<Duration> {
    let meta = result.execution_metadata.as_ref()?;
    let at = |t: Option<&llama_core::protobuf::Timestamp>| {
        t.map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
    };
    let start = at(meta.execution_start_timestamp.as_ref())?;
    let end = at(meta.execution_completed_timestamp.as_ref())?;
    Some(end.saturating_sub(start))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::new(FailureKind::Execution, format!("internal task failed: {e}")))?
}
