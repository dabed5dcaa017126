//! What every subcommand needs, built once from the effective configuration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use llama_core::{Backend, Config, HashCache, Source, Store};
use llama_exec::{CachePolicy, Engine, LocalExecutor};

use crate::cli::Cli;

/// Loads the configuration and applies the global flags over it.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load()?;
    if let Some(region) = &cli.region {
        config.set("region", region, Source::Flag("-region".into()))?;
    }
    if let Some(store) = &cli.store {
        config.set("object_store", store, Source::Flag("-store".into()))?;
    }
    Ok(config)
}

/// The store, the hash cache and the engine for the configured backend.
pub struct Context {
    pub engine: Engine,
    pub hash_cache: HashCache,
}

impl Context {
    /// Opens the store and builds the engine. Fails with a message naming the setting when
    /// the backend is not usable.
    pub fn new(config: &Config, policy: CachePolicy) -> anyhow::Result<Context> {
        let backend = config.backend();
        if backend != Backend::Local {
            let from = config
                .source("backend")
                .map(|s| s.to_string())
                .unwrap_or_default();
            bail!(
                "backend {:?} (from {from}) is not available in this version of llama yet; \
                 set LLAMA_BACKEND=local (or remove `backend` from the config file) to run on this machine",
                backend.name()
            );
        }
        let dir = config.dir();
        let store = Store::open(&dir, config.cache_size())
            .with_context(|| format!("opening the local store (dir = {})", dir.display()))?;
        let hash_cache = HashCache::load(hash_cache_path(&dir));
        let executor = LocalExecutor::new(store.clone(), config.jobs(), config.action_timeout());
        Ok(Context {
            engine: Engine::new(store, Arc::new(executor), policy),
            hash_cache,
        })
    }

    /// Persists what the hash cache learned; losing it only costs re-hashing.
    pub fn save(&self) {
        if let Err(e) = self.hash_cache.save() {
            tracing::debug!("could not save the hash cache: {e}");
        }
    }
}

fn hash_cache_path(dir: &std::path::Path) -> PathBuf {
    dir.join("hashcache")
}
