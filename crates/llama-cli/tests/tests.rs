//! End-to-end tests of the `llama` binary: one test binary, one module per subcommand.
//! They drive every backend, so they are built only with both (the default features).
#![cfg(all(feature = "lambda", feature = "reapi"))]

mod cache;
mod docs;
mod doctor;
mod explain;
mod harness_smoke;
mod help;
mod invoke;
mod lambda;
mod lambda_cc;
mod lambda_setup;
mod lambda_ship;
mod llamacc;
mod reapi;
mod reapi_smoke;
mod trace;
mod trust_daemon;
mod trust_exec;
mod trust_names;
mod trust_store;

mod xargs;

/// A fresh test world running the `llama` and `llamacc` built with this test binary (only
/// the test crate can name them: `env!("CARGO_BIN_EXE_…")`).
pub fn world() -> llama_testkit::World {
    llama_testkit::World::with_binaries(llama_testkit::Binaries {
        llama: env!("CARGO_BIN_EXE_llama").into(),
        llamacc: env!("CARGO_BIN_EXE_llamacc").into(),
    })
}
