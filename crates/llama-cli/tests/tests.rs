//! End-to-end tests of the `llama` binary: one test binary, one module per subcommand.

mod invoke;
mod llamacc;
mod util;
mod xargs;
