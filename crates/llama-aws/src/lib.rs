//! llama's AWS set-up: building and pushing the Lambda function's image (and, as it moves
//! here from llama-cli, the stack and the checks of `llama doctor`).
//!
//! Not for running builds on Lambda (that is llama-exec) nor for parsing flags (llama-cli
//! fills the plain option types defined here from its clap arguments).

pub mod aws_setup;
pub mod oci_image;

/// The CPU architecture of a Lambda function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Intel and AMD (Lambda's default).
    X86_64,
    /// AWS Graviton.
    Arm64,
}
