//! `llama update-function`: the flags into [`UpdateFunctionOptions`], then llama-aws's
//! [`function::update_function`].

use std::io::Write;

use llama_aws::function::{self, ImageSource, UpdateFunctionOptions};
use llama_core::Config;

use crate::cli::UpdateFunctionArgs;

/// Runs `llama update-function`: 0 once the function is active at its new image and
/// settings.
pub fn run(config: &Config, args: &UpdateFunctionArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let options = options(args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(function::update_function(config, &options, out))?;
    Ok(0)
}

/// The options the flags give; a `--timeout` Lambda would refuse is an error.
fn options(args: &UpdateFunctionArgs) -> Result<UpdateFunctionOptions, function::FunctionError> {
    // clap lets through one source at most.
    let source = match (&args.base, &args.build, &args.tag) {
        (Some(base), _, _) => Some(ImageSource::Base(base.clone())),
        (_, Some(dir), _) => Some(ImageSource::Build(dir.clone())),
        (_, _, Some(tag)) => Some(ImageSource::Tag(tag.clone())),
        (None, None, None) => None,
    };
    Ok(UpdateFunctionOptions {
        name: args.name.clone(),
        create: args.create,
        source,
        memory: args.memory,
        timeout: args
            .timeout
            .as_deref()
            .map(function::parse_timeout)
            .transpose()?,
        arch: args.arch.map(llama_aws::Arch::from),
        runtime: args.runtime.clone(),
    })
}
