//! The jobs of `llama invoke` and `llama xargs`: parsing the command-line templates,
//! mapping local paths to the paths the remote command sees, and turning one rendered job
//! into the action the Engine runs, with the local programs it ships ([`ship`]). Both
//! commands build their action through [`job_action`], and every local/remote path pair
//! (`-f`, `-o`, the files templates declare, the outputs the Engine delivers) is the
//! Engine's own [`OutputMapping`].
//!
//! Not here: flags and terminal output (llama-cli), running actions (llama-exec's Engine),
//! compiles (llama-cc).

pub mod action;
pub mod batch;
pub mod halt;
pub mod joblog;
pub mod mapping;
pub mod retry;
pub mod ship;
pub mod template;

pub use action::{JobAction, JobError, JobSpec, job_action, path_env};
pub use batch::{Batch, BatchError, Control, Done, JobEnd, JobHost, dispatch, read_lines};
pub use halt::{Halt, HaltError, parse_halt};
pub use joblog::{JobId, JobLog, JobRecord};
pub use llama_exec::OutputMapping;
pub use mapping::{MappingError, parse_mapping};
pub use retry::run_with_retries;
pub use ship::{Program, ShipError, Shipment};
