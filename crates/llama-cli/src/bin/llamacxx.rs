//! `llamacxx`: llamacc under a C++ driver's name, installed by `cargo install` beside it
//! (`CXX=llamacxx`). The program is llamacc's; its name is what makes it drive C++.

#[path = "llamacc.rs"]
mod llamacc;

fn main() -> std::process::ExitCode {
    llamacc::main()
}
