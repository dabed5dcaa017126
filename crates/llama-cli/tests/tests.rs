//! End-to-end tests of the `llama` binary: one test binary, one module per subcommand.

mod harness_smoke;
mod invoke;
mod lambda;
mod lambda_cc;
mod lambda_setup;
mod llamacc;
mod reapi;
mod reapi_smoke;
mod trust_daemon;
mod trust_exec;
mod trust_names;
mod trust_remote;
mod trust_store;
mod util;
mod xargs;
