/*!
What `llama-runtime` does with one invocation, apart from how invocations arrive.

A [`Service`] takes a [`wire::Request`] (the Action, inline blobs, where the rest is in S3),
gets every input into a bounded blob cache that survives warm invocations, runs the command
with [`LocalExecutor`] (a fresh scratch directory, the action's deadline), uploads the
outputs that do not fit in the answer, records the result in the S3 action cache when the
command succeeded, and returns a [`wire::Response`] with timings. The binary only connects
it to the Lambda Runtime API; tests call [`Service::handle`] directly.

# Brief overview

* [`Settings`]: the cache directory and size, memory size and function name, from the
  environment Lambda sets.
* [`Service`]: handles requests, one at a time or concurrently.
* [`Failure`]: why a request failed, with a [`FailureKind`] that becomes the Lambda error
  type the client sees.
* [`normalize_runtime_api`]: `AWS_LAMBDA_RUNTIME_API` as `host:port` or as a URL.

# Example

```
use std::sync::Arc;
use llama_core::{ActionSpec, TreeBuilder};
use llama_exec::wire;
use llama_runtime::{Service, Settings};
use prost::Message;

# tokio::runtime::Runtime::new()?.block_on(async {
let dir = tempfile::tempdir()?;
let service = Service::new(Settings::for_cache(dir.path().join("cache")))?;
let mut tree = TreeBuilder::new();
tree.add_bytes(Arc::from(&b"hi\n"[..]), "in", false)?;
let action = ActionSpec {
    arguments: vec!["/bin/cat".into(), "in".into()],
    ..Default::default()
}
.prepare(tree.build())?;
let request = wire::Request::everything_inline(&action)?;
let response = service.handle(request).await?;
assert_eq!(response.termination, wire::WireTermination::Exited(0));
assert!(response.blobs.iter().any(|b| b.data.0 == b"hi\n"));
# Ok::<(), Box<dyn std::error::Error>>(())
# })?;
# Ok::<(), Box<dyn std::error::Error>>(())
```
*/

#![deny(missing_docs)]

mod service;
mod settings;

pub use crate::{
    service::{Failure, FailureKind, Service},
    settings::{RUNTIME_VERSION, Settings, SettingsError, normalize_runtime_api},
};

/// The wire format, re-exported for convenience.
pub use llama_exec::wire;

#[doc(no_inline)]
pub use llama_exec::LocalExecutor;
