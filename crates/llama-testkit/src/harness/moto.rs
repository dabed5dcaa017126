//! moto, the AWS control plane for the set-up commands.

use super::*;

// --- AWS control plane: moto --------------------------------------------------------------------

pub const MOTO_VERSION: &str = "5.2.5";
/// Debian bookworm's docker-registry (`2.8.2+ds1`).
pub const DOCKER_REGISTRY_VERSION: &str = "2.8.2";

/// The moto venv (`$LLAMA_TEST_TOOLS/moto-5.2.5`)'s Python, which has boto3 (and botocore)
/// for a test that wants to look at moto's state the way AWS's own tools do. Panics saying
/// how to install it.
pub fn moto_python() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| pinned_venv_python("moto", MOTO_VERSION, "moto_server"))
}

/// `moto_server`, from the same venv (it has no `--version`: the venv's is checked).
fn moto_server() -> PathBuf {
    moto_python().with_file_name("moto_server")
}

/// moto's server on a free loopback port: the AWS control plane `llama bootstrap`,
/// `update-function` and `doctor` talk to (CloudFormation, IAM, ECR, Lambda management, S3,
/// STS), all on [`endpoint`](MotoServer::endpoint), with Lambda set not to use Docker
/// (creating functions works; invoking one echoes its payload). Give a `llama` child
/// [`apply_env`](MotoServer::apply_env).
///
/// What moto 5.2.5 says and does (verified by hand with boto3):
/// - Any credentials and any signature are accepted. The account is always 123456789012;
///   GetCallerIdentity answers UserId `AKIAIOSFODNN7EXAMPLE`, Arn
///   `arn:aws:sts::123456789012:user/moto`, whatever the key.
/// - CloudFormation works synchronously: a change set is `CREATE_COMPLETE` / `AVAILABLE`
///   (or `FAILED`) as soon as CreateChangeSet returns, and the stack is `CREATE_COMPLETE` /
///   `UPDATE_COMPLETE` as soon as ExecuteChangeSet returns; boto3's waiters pass at once.
///   Events are the stack's own only (REVIEW_IN_PROGRESS, CREATE_IN_PROGRESS,
///   CREATE_COMPLETE, UPDATE_IN_PROGRESS, UPDATE_COMPLETE), none per resource.
/// - A stack created through a change set never has Outputs (moto resolves them only for
///   CreateStack and UpdateStack); DescribeStackResources gives the physical ids (bucket
///   `STACK-bucket-RANDOM`, repository name, role `STACK-Role-RANDOM`).
/// - A stack never fails: no `*_FAILED` or `ROLLBACK_*` status exists. A resource that cannot
///   be created (bucket name taken, a bad `Fn::GetAtt`, an invalid repository name) makes
///   ExecuteChangeSet itself fail (400/409 with that service's error), and the stack stays
///   `REVIEW_IN_PROGRESS` (creation) or keeps its status (update). A template that is not
///   YAML or JSON, or has no `Resources`, is an HTTP 500 (which SDKs retry).
/// - An UPDATE change set with the stack's template text is `FAILED` with StatusReason "The
///   submitted information didn't contain changes. Submit different information to create a
///   change set." only when its Parameters equal those the stack was created with; with
///   parameters given as UsePreviousValue, CreateChangeSet fails with ValidationError "No
///   updates are to be performed."; with other parameters it is `CREATE_COMPLETE` with no
///   Changes. Changes carry Action, LogicalResourceId and ResourceType only.
/// - Templates are barely checked: unknown resource types and properties pass. S3
///   LifecycleConfiguration and PublicAccessBlockConfiguration and ECR LifecyclePolicy are
///   ignored; inline role policies are stored (as Python reprs, not JSON).
/// - Lambda takes `PackageType: Image` with any ImageUri (no ECR or registry check) and any
///   MemorySize, Timeout and Architectures; functions are `Active` / `Successful` at once.
///   GetFunction's Code is `RepositoryType: ECR`, the ImageUri as given, and a made-up
///   ResolvedImageUri. A CreateFunction without ImageUri or ZipFile is a 500 that leaves a
///   broken function behind, after which ListFunctions fails with 500 too.
/// - ECR: GetAuthorizationToken gives `AWS:123456789012-auth-token` (base64) for
///   `https://123456789012.dkr.ecr.us-east-1.amazonaws.com`, which serves nothing; images
///   exist only when PutImage puts them (pushes go to an [`OciRegistry`]).
/// - `POST /moto-api/reset` empties every service but keeps `/moto-api/config`.
pub struct MotoServer {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl MotoServer {
    /// The account everything lives in.
    pub const ACCOUNT_ID: &'static str = "123456789012";
    pub const REGION: &'static str = "us-east-1";
    /// Any key is accepted; these make a log line recognisable.
    pub const ACCESS_KEY: &'static str = "LLAMATESTMOTOKEY";
    pub const SECRET_KEY: &'static str = "llama-test-moto-secret";

    /// moto on a free port, with Lambda's `use_docker` off; returns once it answers (about
    /// 0.3 s on an idle machine).
    pub fn start() -> MotoServer {
        let bin = moto_server();
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, port) = spawn_on_free_port(
            "moto_server",
            dir.path(),
            |port| {
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .current_dir(dir.path())
                    .env("PYTHONUNBUFFERED", "1");
                // MOTO_ACCOUNT_ID and friends would change what the tests see.
                remove_env_starting_with(&mut cmd, &["AWS_", "MOTO_"]);
                cmd
            },
            |_, output| output.contains("Address already in use"),
        );
        let moto = MotoServer { server, dir, port };
        moto.disable_lambda_docker();
        moto
    }

    /// Without this, creating a function works but invoking it fails with 500 (moto would
    /// run the image in Docker); with it, invoke returns the payload.
    fn disable_lambda_docker(&self) {
        let body = br#"{"lambda": {"use_docker": false}}"#;
        let resp = http(
            self.addr(),
            "POST",
            "/moto-api/config",
            &[("Content-Type", "application/json")],
            body,
            START_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("POST /moto-api/config failed: {e}; moto:\n{}", self.log()));
        assert!(
            resp.status / 100 == 2 && resp.text().contains(r#""lambda": {"use_docker": false}"#),
            "POST /moto-api/config answered {}: {}",
            resp.status,
            resp.text()
        );
    }

    /// `http://127.0.0.1:PORT`: every service, path-style S3 included.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    pub fn region(&self) -> &'static str {
        Self::REGION
    }

    pub fn account_id(&self) -> &'static str {
        Self::ACCOUNT_ID
    }

    /// What an AWS SDK (Rust's, boto3) needs to talk to moto and to nothing else: the
    /// endpoint for every service, static credentials (so the chain never reaches instance
    /// metadata, which is disabled anyway), the region, and profile files that do not exist
    /// (so a developer's `~/.aws` cannot add a profile, region or endpoint).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.to_string()),
            ("AWS_REGION", Self::REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            (
                "AWS_CONFIG_FILE",
                self.dir.path().join("no-aws/config").display().to_string(),
            ),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir
                    .path()
                    .join("no-aws/credentials")
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// Removes every `AWS_*` variable `cmd` would inherit (a profile, a session token, a
    /// service's own endpoint) and sets [`env`](MotoServer::env).
    pub fn apply_env(&self, cmd: &mut Command) {
        remove_env_starting_with(cmd, &["AWS_"]);
        cmd.envs(self.env());
    }

    /// moto's output so far: one line per request, and Python tracebacks for its 500s.
    pub fn log(&self) -> String {
        self.server.log()
    }
}
