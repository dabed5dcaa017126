//! cargo-lambda's emulator of the Lambda Invoke and Runtime APIs.

use super::*;

// --- Lambda -----------------------------------------------------------------------------------

/// cargo-lambda's emulator of the Lambda Invoke and Runtime APIs on one free loopback port.
/// Invocations of the function `_` wait for a runtime the test starts itself with
/// [`runtime_env`](LambdaEmulator::runtime_env); several runtimes polling at once serve
/// several invocations at once.
pub struct LambdaEmulator {
    server: Server,
    // Declared after `server`: the process dies before its working directory goes.
    _dir: tempfile::TempDir,
    port: u16,
}

impl LambdaEmulator {
    /// The function name whose invocations go to a runtime started by the test.
    pub const FUNCTION: &'static str = "_";

    /// An emulator whose invokes give up with 408 after 60 s without a response (cargo-lambda
    /// has no limit of its own: an invocation whose runtime died would wait forever).
    pub fn start() -> LambdaEmulator {
        Self::start_with_invoke_timeout(60)
    }

    /// An emulator whose invokes give up with 408 (empty body) after `seconds`. The
    /// abandoned invocation stays queued: the next runtime to poll still receives it.
    pub fn start_with_invoke_timeout(seconds: u32) -> LambdaEmulator {
        let bin = cargo_lambda();
        let dir = tempfile::tempdir().expect("tempdir");
        // cargo-lambda runs `cargo metadata` here and refuses a project without a binary
        // target; the binary is never built (it would be only if invoked by its name).
        // `[workspace]` keeps cargo from looking for a workspace in the parent directories.
        fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"llama-test-emulator\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [[bin]]\nname = \"unused\"\npath = \"main.rs\"\n\n[workspace]\n",
        )
        .expect("write Cargo.toml");
        fs::write(dir.path().join("main.rs"), "fn main() {}\n").expect("write main.rs");

        // cargo-lambda exits with status 0, silently, when its port was taken.
        let (server, port) = spawn_on_free_port(
            "cargo-lambda",
            dir.path(),
            |port| {
                let mut cmd = Command::new(bin);
                cmd.args(["lambda", "watch", "--only-lambda-apis"])
                    .args(["--invoke-address", "127.0.0.1"])
                    .args(["--invoke-port", &port.to_string()])
                    .args(["--timeout", &seconds.to_string()])
                    .current_dir(dir.path());
                remove_env_starting_with(&mut cmd, &["AWS_", "CARGO_LAMBDA"]);
                cmd
            },
            |status, _| status.success(),
        );
        LambdaEmulator {
            server,
            _dir: dir,
            port,
        }
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL_LAMBDA`. Invoke with
    /// `POST /2015-03-31/functions/_/invocations`.
    pub fn invoke_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// `http://127.0.0.1:PORT/.rt`: the `AWS_LAMBDA_RUNTIME_API` for a runtime serving `_`.
    /// Unlike real Lambda's `host:port`, it carries a scheme and a path prefix; the runtime
    /// endpoints are below it (`.../2018-06-01/runtime/invocation/next`).
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// The environment cargo-lambda tells a self-started runtime to have.
    pub fn runtime_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.runtime_api()),
            ("AWS_LAMBDA_FUNCTION_NAME", Self::FUNCTION.to_string()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".to_string()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096".to_string()),
        ]
    }

    /// cargo-lambda's output so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }
}
