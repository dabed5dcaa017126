//! The engine over a local executor on a private store, and shell actions to run through it:
//! the scaffolding of llama-exec's tests against real processes.

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use llama_core::{ActionSpec, PreparedAction, Store, TreeBuilder};
use llama_exec::{CachePolicy, Engine, LocalExecutor};

/// A temporary directory holding the store (`store/`) and a scratch `work/`, and an engine
/// running actions locally, two at a time, with a 30 s timeout.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub engine: Engine,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("store"), 1 << 30).expect("open the store");
    let executor = LocalExecutor::new(store.clone(), 2, Duration::from_secs(30));
    let engine = Engine::new(store, Arc::new(executor), CachePolicy::default());
    fs::create_dir(dir.path().join("work")).expect("mkdir work");
    Fixture { dir, engine }
}

/// `sh -c SCRIPT` with `inputs` (remote path, bytes) and a plain `PATH`, expecting `outputs`.
pub fn sh(script: &str, inputs: &[(&str, &[u8])], outputs: &[&str]) -> PreparedAction {
    let mut tree = TreeBuilder::new();
    for (remote, data) in inputs {
        tree.add_bytes(Arc::from(*data), remote, false)
            .expect("add an input");
    }
    ActionSpec {
        arguments: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        output_paths: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .prepare(tree.build())
    .expect("prepare the action")
}
