/*!
Where actions run, and the action cache in front of them.

An [`Executor`] runs one prepared action and returns an [`ExecOutcome`] whose outputs are in
the local store. The [`Engine`] sits in front of every executor: it serves earlier successful
results from the action cache, records new ones, and delivers outputs to local paths
atomically. [`LocalExecutor`] runs actions on this machine, each in its own scratch directory,
a bounded number at a time.

# Example

```
use std::sync::Arc;
use std::time::Duration;
use llama_core::{ActionSpec, HashCache, Store, TreeBuilder};
use llama_exec::{CachePolicy, Engine, LocalExecutor, Termination};

# tokio::runtime::Runtime::new()?.block_on(async {
let dir = tempfile::tempdir()?;
let store = Store::open(dir.path().join("store"), 1 << 30)?;
let executor = LocalExecutor::new(store.clone(), 2, Duration::from_secs(60));
let engine = Engine::new(store, Arc::new(executor), CachePolicy::default());
let action = ActionSpec {
    arguments: vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
    ..Default::default()
}
.prepare(TreeBuilder::new().build())?;
let finished = engine.run(&action).await?;
assert_eq!(finished.termination, Termination::Exited(7));
# Ok::<(), Box<dyn std::error::Error>>(())
# })?;
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

mod engine;
mod executor;
mod fsutil;
mod local;
mod process;

pub use crate::{
    engine::{
        CachePolicy, Delivered, Engine, Finished, OutputMapping, cached_result, deliver_outputs,
    },
    executor::{ExecError, ExecOutcome, Executor, Termination, signal_name},
    local::{LocalExecutor, find_program},
    process::{HostCommand, HostOutput, run_host},
};
