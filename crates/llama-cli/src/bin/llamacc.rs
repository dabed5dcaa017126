//! `llamacc` and `llamac++`: drop-in gcc/clang through llama's cache.

fn main() -> std::process::ExitCode {
    llama_cli::llamacc::main()
}
