//! The jobs of `llama invoke` and `llama xargs`: parsing the command-line templates,
//! mapping local paths to the paths the remote command sees, and turning one rendered job
//! into the action the Engine runs.
//!
//! Not here: flags and terminal output (llama-cli), running actions (llama-exec's Engine),
//! compiles (llama-cc).

pub mod template;
