//! One rendered job -> the action the Engine runs: the only place `llama invoke` and
//! `llama xargs` build an [`ActionSpec`].

use std::sync::Arc;

use llama_core::{
    ActionSpec, FUNCTION_PROPERTY, HashCache, PreparedAction, TreeBuilder, TreeError,
};
use llama_exec::OutputMapping;

use crate::ship::Shipment;
use crate::template::{InputFile, Rendered};

/// Why a rendered job could not become an action.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Every argument rendered empty away (only possible for templates).
    #[error("the command is empty")]
    EmptyCommand,
    /// An input could not be read or placed, or the action could not be encoded.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// What a job runs with besides its rendered arguments and files.
#[derive(Debug, Clone, Default)]
pub struct JobSpec<'a> {
    /// The `llama-function` platform property: the function (or image) to run in.
    pub function: &'a str,
    /// The command's environment (see [`path_env`]).
    pub env: &'a [(String, String)],
    /// Standard input for the command (`invoke -stdin`).
    pub stdin: Option<Arc<[u8]>>,
    /// Outputs asked for outside the templates (`-o`), fetched before the templates' own.
    pub outputs: Vec<OutputMapping>,
    /// Programs shipped with the job (`--ship`, or the command's own on a remote backend):
    /// the command is wrapped to run them. Their files go into the job's tree once per
    /// batch, not per job: [`Shipment::add_to`] the tree given to [`job_action`].
    pub ship: Option<&'a Shipment>,
}

/// A job ready for [`Engine::run_and_deliver`](llama_exec::Engine::run_and_deliver).
#[derive(Debug, Clone)]
pub struct JobAction {
    /// The encoded action.
    pub action: PreparedAction,
    /// Where each declared output lands locally.
    pub outputs: Vec<OutputMapping>,
}

/// The environment every job gets: this process's `PATH`, as the original passed it.
pub fn path_env() -> Vec<(String, String)> {
    std::env::var("PATH")
        .map(|p| vec![("PATH".to_string(), p)])
        .unwrap_or_default()
}

/// Turns one rendered job into its action: `tree` (the `-f` files) plus the inputs the
/// templates declared, the outputs of `spec` then the templates', the rendered arguments.
///
/// # Errors
///
/// An input that cannot be read or clashes with another at its remote path, an empty
/// command, or an action that cannot be encoded.
pub fn job_action(
    hash_cache: &HashCache,
    mut tree: TreeBuilder,
    rendered: Rendered,
    spec: JobSpec<'_>,
) -> Result<JobAction, JobError> {
    for input in &rendered.inputs {
        match input {
            InputFile::Local { local, remote } => tree.add_path(hash_cache, local, remote)?,
            InputFile::Bytes { data, remote } => {
                tree.add_bytes(Arc::from(data.as_slice()), remote, false)?
            }
        }
    }
    let mut outputs = spec.outputs;
    outputs.extend(rendered.outputs);
    if rendered.args.is_empty() {
        return Err(JobError::EmptyCommand);
    }
    let arguments = match spec.ship {
        Some(shipment) => shipment.command(rendered.args),
        None => rendered.args,
    };
    let action = ActionSpec {
        arguments,
        env: spec.env.to_vec(),
        output_paths: outputs.iter().map(|o| o.remote.clone()).collect(),
        platform: vec![(FUNCTION_PROPERTY.to_string(), spec.function.to_string())],
        stdin: spec.stdin,
        ..Default::default()
    }
    .prepare(tree.build())?;
    Ok(JobAction { action, outputs })
}
