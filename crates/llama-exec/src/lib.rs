/*!
Where actions run, and the action cache in front of them.

An [`Executor`] runs one prepared action and returns an [`ExecOutcome`] whose outputs are in
the local store. The [`Engine`] sits in front of every executor: it serves earlier successful
results from the action cache, records new ones, and delivers outputs to local paths
atomically. [`LocalExecutor`] runs actions on this machine, each in its own scratch directory,
a bounded number at a time; `LambdaExecutor` on AWS Lambda (cargo feature `lambda`, with
the S3 CAS); `ReapiExecutor` on any Remote Execution API v2 cluster (cargo feature `reapi`).
Both features are on by default; without them the crate builds with the local executor only
and links neither the AWS SDK nor tonic's TLS.

[`ship`] turns a local program into input files (its libraries and the loader with it) for
a machine that does not have it: llamacc's compiler, invoke's and xargs' commands.

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
#[cfg(feature = "lambda")]
mod lambda;
mod local;
mod process;
#[cfg(feature = "reapi")]
mod reapi;
mod remote;
#[cfg(feature = "lambda")]
mod s3;
mod safepath;
pub mod ship;
mod usage;

pub use crate::{
    engine::{
        CachePolicy, Delivered, Engine, Finished, OutputMapping, Produced, cached_result,
        cached_result_within, deliver_outputs,
    },
    executor::{ExecError, ExecOutcome, Executor, Termination, signal_name},
    local::{LocalExecutor, find_program},
    process::{HostCommand, HostOutput, run_host},
    remote::{DEFAULT_REMOTE_JOBS, result_blobs, tree_files},
    safepath::{UnsafePath, UnsafeReason, check_relative},
    usage::{
        LAMBDA_USD_PER_GB_SECOND, LAMBDA_USD_PER_REQUEST, S3_USD_PER_GET, S3_USD_PER_PUT, Usage,
    },
};

/// The result checks, now llama-core's, re-exported where executors' users found them.
pub use llama_core::{
    DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_OUTPUT_NODES, MAX_TREE_DEPTH, MAX_TREE_MESSAGE_BYTES,
    Refusal, ResultLimits,
};

#[cfg(feature = "lambda")]
pub use crate::{
    lambda::{DEADLINE_MARGIN, LambdaConfig, LambdaExecutor, MISSING_BLOBS_ERROR, wire},
    s3::{
        DEFAULT_MAX_ATTEMPTS, DEFAULT_S3_CONCURRENCY, MULTIPART_THRESHOLD, ObjectStoreUrl,
        PART_SIZE, S3Cas, S3Counts, S3Error, S3Options, load_aws_config, s3_client,
    },
};

#[cfg(feature = "reapi")]
pub use crate::reapi::{
    BYTESTREAM_CHUNK, ReapiConfig, ReapiExecutor, RemoteAction, ServerInfo, remote_action,
};
