//! What every subcommand needs, built once from the effective configuration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
#[cfg(any(feature = "lambda", feature = "reapi"))]
use anyhow::bail;
#[cfg(feature = "lambda")]
use llama_core::Digest;
use llama_core::{Backend, Config, HashCache, Source, Store, keys};
use llama_exec::{CachePolicy, Engine, Executor, LocalExecutor, ResultLimits};
#[cfg(feature = "lambda")]
use llama_exec::{LambdaConfig, LambdaExecutor, ObjectStoreUrl};
#[cfg(feature = "reapi")]
use llama_exec::{ReapiConfig, ReapiExecutor};

use crate::cli::Cli;

/// Loads the configuration and applies the global flags over it.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load()?;
    if let Some(region) = &cli.region {
        config.set(keys::REGION.name(), region, Source::Flag("-region".into()))?;
    }
    if let Some(n) = &cli.s3_concurrency {
        config.set(
            keys::S3_CONCURRENCY.name(),
            n,
            Source::Flag("-s3-concurrency".into()),
        )?;
    }
    if let Some(store) = &cli.store {
        config.set(
            keys::OBJECT_STORE.name(),
            store,
            Source::Flag("-store".into()),
        )?;
    }
    Ok(config)
}

/// The store, the hash cache and the engine for the configured backend.
pub struct Context {
    pub engine: Engine,
    pub hash_cache: HashCache,
    /// Actions the executor runs at once: what `xargs` keeps in flight unless `-j` says.
    pub jobs: usize,
    /// Where jobs are traced (`llama trace`).
    pub traces: llama_trace::Writer,
    /// Actions run on a remote backend (else on this machine).
    pub remote: bool,
    /// Whether `invoke` and `xargs` ship the command's own program on a remote backend.
    pub ship_command: bool,
}

impl Context {
    /// Opens the store and builds the engine. Fails with a message naming the setting when
    /// the backend is not usable.
    pub fn new(config: &Config, policy: CachePolicy) -> anyhow::Result<Context> {
        // Checked before the store is opened: a missing setting is the likelier mistake.
        let remote = remote_settings(config)?;
        let dir = config.dir();
        let store = Store::open(&dir, config.cache_size())
            .with_context(|| format!("opening the local store (dir = {})", dir.display()))?
            .with_compression(config.cache_compression());
        let hash_cache = HashCache::load(hash_cache_path(&dir));
        let limits = result_limits(config);
        let (executor, jobs): (Arc<dyn Executor>, usize) = match remote {
            #[cfg(feature = "reapi")]
            Some(Remote::Reapi(reapi)) => {
                let jobs = reapi.concurrency;
                (Arc::new(ReapiExecutor::new(store.clone(), *reapi)), jobs)
            }
            None => (
                Arc::new(LocalExecutor::new(
                    store.clone(),
                    config.jobs(),
                    config.action_timeout(),
                )),
                config.jobs(),
            ),
            #[cfg(feature = "lambda")]
            Some(Remote::Lambda(location)) => {
                let mut lambda = LambdaConfig::new(location.clone());
                lambda.default_function = config.function();
                lambda.concurrency = config.remote_jobs();
                lambda.default_timeout = config.action_timeout();
                lambda.region = Some(config.region()).filter(|r| !r.is_empty());
                lambda.present_file = Some(present_file(&dir, &location));
                lambda.s3_concurrency = config.s3_concurrency();
                lambda.result_limits = limits;
                let jobs = lambda.concurrency;
                (Arc::new(LambdaExecutor::new(store.clone(), lambda)), jobs)
            }
        };
        Ok(Context {
            remote: executor.name() != "local",
            ship_command: config.ship_command(),
            engine: Engine::new(store, executor, policy).with_result_limits(limits),
            hash_cache,
            jobs,
            traces: llama_trace::Writer::new(llama_trace::TraceLog::new(
                &dir,
                llama_trace::Limits::default(),
            )),
        })
    }

    /// Persists what the hash cache learned; losing it only costs re-hashing.
    pub fn save(&self) {
        if let Err(e) = self.hash_cache.save() {
            tracing::debug!("could not save the hash cache: {e}");
        }
    }
}

/// The settings of the configured remote backend (`None` for local).
enum Remote {
    #[cfg(feature = "reapi")]
    Reapi(Box<ReapiConfig>),
    #[cfg(feature = "lambda")]
    Lambda(ObjectStoreUrl),
}

/// Reads the configured backend's settings; a backend this build left out is named with
/// how to get it, rather than failing later or running elsewhere.
fn remote_settings(config: &Config) -> anyhow::Result<Option<Remote>> {
    match config.backend() {
        Backend::Local => Ok(None),
        #[cfg(feature = "reapi")]
        Backend::Reapi => Ok(Some(Remote::Reapi(Box::new(reapi_config(config)?)))),
        #[cfg(not(feature = "reapi"))]
        Backend::Reapi => Err(not_built_in(config, "reapi")),
        #[cfg(feature = "lambda")]
        Backend::Lambda => Ok(Some(Remote::Lambda(object_store(config)?))),
        #[cfg(not(feature = "lambda"))]
        Backend::Lambda => Err(not_built_in(config, "lambda")),
    }
}

/// The backend `name` is configured but this build was made without its cargo feature.
#[cfg(not(all(feature = "lambda", feature = "reapi")))]
fn not_built_in(config: &Config, name: &str) -> anyhow::Error {
    let from = format!(" (from {})", config.source(&keys::BACKEND));
    anyhow::anyhow!(
        "backend = {name}{from}, but this llama was built without the {name} backend: \
         reinstall with it (`cargo install --locked --path crates/llama-cli --features {name}`, \
         or without --no-default-features for every backend), or choose one that is built in \
         (LLAMA_BACKEND=local)"
    )
}

/// `max_output_nodes` and `max_output_bytes`.
fn result_limits(config: &Config) -> ResultLimits {
    ResultLimits {
        max_nodes: config.max_output_nodes(),
        max_bytes: config.max_output_bytes(),
    }
}

fn hash_cache_path(dir: &std::path::Path) -> PathBuf {
    dir.join("hashcache")
}

/// The reapi backend's settings; a missing endpoint is what a first-time user meets, so the
/// message says how to set it.
#[cfg(feature = "reapi")]
pub(crate) fn reapi_config(config: &Config) -> anyhow::Result<ReapiConfig> {
    let endpoint = config.reapi_endpoint();
    if endpoint.is_empty() {
        bail!(
            "the reapi backend needs a Remote Execution API server and none is set: \
             set LLAMA_REAPI_ENDPOINT=grpc://HOST:PORT (grpcs:// for TLS; or `reapi_endpoint` in {}), \
             and LLAMA_REAPI_INSTANCE if the server wants an instance name",
            Config::file_path().display()
        );
    }
    let mut reapi = ReapiConfig::new(endpoint.clone());
    reapi.instance = config.reapi_instance();
    reapi.headers = config.reapi_headers();
    reapi.platforms = config.reapi_platforms().into_iter().collect();
    reapi.default_function = config.function();
    reapi.concurrency = config.remote_jobs();
    reapi.default_timeout = config.action_timeout();
    reapi.cache_read = config.reapi_cache_read();
    reapi.cache_write = config.reapi_cache_write();
    reapi.result_limits = result_limits(config);
    // Checked here, before the first compile: a path that does not work is named with its
    // key rather than found out at the first connection.
    reapi.tls_ca = config.reapi_ca()?;
    reapi.tls_client_cert = config.reapi_client_identity()?;
    if !endpoint.starts_with("grpcs://")
        && let Some(key) = [
            ("reapi_ca", reapi.tls_ca.is_some()),
            ("reapi_client_cert", reapi.tls_client_cert.is_some()),
        ]
        .iter()
        .find_map(|(key, set)| set.then_some(key))
    {
        tracing::warn!(
            "{key} is set but reapi_endpoint {endpoint} is not grpcs://: the connection is \
             plaintext and the certificates are not used"
        );
    }
    Ok(reapi)
}

/// The configured `object_store`, parsed; its absence is what a first-time user of the
/// lambda backend meets, so the message says both ways to set it.
#[cfg(feature = "lambda")]
fn object_store(config: &Config) -> anyhow::Result<ObjectStoreUrl> {
    let url = config.object_store();
    if url.trim().is_empty() {
        bail!(
            "the lambda backend keeps inputs, outputs and its cache in S3, and no object store is set: \
             set LLAMA_OBJECT_STORE=s3://BUCKET/PREFIX (or `object_store` in {}, or -store) or run `llama bootstrap`",
            Config::file_path().display()
        );
    }
    let from = config.source(&keys::OBJECT_STORE).to_string();
    url.trim()
        .parse()
        .with_context(|| format!("object_store (from {from})"))
}

/// `$LLAMA_DIR/s3-present/<hash of bucket and prefix>`: the blobs known to be in that
/// bucket and prefix, shared by every llama process of the user (the daemon included).
#[cfg(feature = "lambda")]
pub fn present_file(dir: &std::path::Path, location: &ObjectStoreUrl) -> PathBuf {
    let key = Digest::of_bytes(location.to_string().as_bytes()).hex();
    dir.join("s3-present").join(&key[..16])
}
