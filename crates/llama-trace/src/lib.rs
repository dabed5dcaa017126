/*!
Traces of llama's builds: what each action spent its time on, kept per build, exported for
Perfetto, reported, and replayed under other resources to predict a build before paying
for it.

# Brief overview

* [`Action`]: one action's trace: its [`Phase`]s with their times, how it was answered
  ([`Status`]), bytes and cost.
* [`TraceLog`]: `$LLAMA_DIR/traces/`, one JSON-lines file per build, bounded, read back as
  hostile input.
* [`chrome::export`]: the Trace Event format, one track per concurrent slot.
* [`report::report`]: wall time, concurrency, time by phase, longest actions, serial
  stretches, bytes and cost.
* [`simulate::simulate`]: the build replayed under other [`Resources`].

Not here: recording (the compile service and the jobs runner time their phases and append
through [`TraceLog`]), and the `llama trace` command (llama-cli).
*/

#![deny(missing_docs)]

pub mod chrome;
mod log;
mod record;
pub mod report;
pub mod simulate;

pub use crate::{
    log::{BuildFile, Limits, Loaded, TraceError, TraceLog, Writer, build_name},
    record::{Action, Kind, Phase, Span, Status},
    simulate::{Prediction, Resources, SimulateError},
};
