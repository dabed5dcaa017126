//! llama's AWS set-up: everything the lambda backend needs before a build can run on it, and
//! the checks that it is all there.
//!
//! - [`stack`]: `llama bootstrap`, the CloudFormation stack (bucket, image repository,
//!   execution role) made through change sets, and the config that points at it.
//! - [`function`]: `llama update-function`, the Lambda function and its image (from a base
//!   image plus llama-runtime, a local build, or an image already pushed).
//! - [`checks`]: `llama doctor`'s checks of region, credentials, stack, config, bucket,
//!   repository and functions, each problem with the command that fixes it.
//! - [`oci_image`]: the function's image assembled and pushed through the OCI distribution
//!   API, with no container builder.
//! - [`aws_setup`]: what those share (the SDK configuration, SDK errors in words).
//!
//! Each command takes a plain options type defined here ([`stack::BootstrapOptions`],
//! [`function::UpdateFunctionOptions`], [`checks::DoctorOptions`]) with llama's
//! [`Config`](llama_core::Config), writes its progress to a `&mut dyn Write`, and fails with a
//! typed error whose message names what is wrong and what to do.
//!
//! Not for running builds on Lambda (that is llama-exec) nor for parsing flags (llama-cli
//! fills the options from its clap arguments and turns the errors into its exit status).

#![deny(missing_docs)]

pub mod aws_setup;
pub mod checks;
pub mod function;
pub mod oci_image;
pub mod stack;

/// The CPU architecture of a Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Intel and AMD (Lambda's default).
    X86_64,
    /// AWS Graviton.
    Arm64,
}
