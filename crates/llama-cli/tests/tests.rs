//! End-to-end tests of the `llama` binary: one test binary, one module per subcommand.

mod harness_smoke;
mod invoke;
mod lambda;
mod lambda_cc;
mod llamacc;
mod util;
mod xargs;
