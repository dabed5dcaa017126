//! `llama bootstrap`: the flags into [`BootstrapOptions`], then llama-aws's
//! [`stack::bootstrap`] (the stack, and the config that points at it).

use std::io::Write;

use llama_aws::stack::{self, BootstrapOptions};
use llama_core::Config;

use crate::cli::BootstrapArgs;

/// Runs `llama bootstrap`: 0 once the stack and the config are in place.
pub fn run(config: &Config, args: &BootstrapArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let options = BootstrapOptions {
        cache_days: args.cache_days,
        llamacc_function: llama_cc::Settings::from_process_env().function,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(stack::bootstrap(config, &options, out))?;
    Ok(0)
}
