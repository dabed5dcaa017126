//! The `llama` command.

fn main() -> std::process::ExitCode {
    llama_cli::llama_main()
}
