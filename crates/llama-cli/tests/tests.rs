//! End-to-end tests of the `llama` binary: one test binary, one module per subcommand.

mod harness_smoke;
mod invoke;
mod lambda;
mod lambda_cc;
mod lambda_setup;
mod llamacc;
mod reapi;
mod reapi_smoke;
mod trust_exec;
mod util;
mod xargs;
