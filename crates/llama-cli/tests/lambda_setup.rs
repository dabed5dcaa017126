//! `llama bootstrap`, `llama update-function` and `llama doctor` against moto (CloudFormation,
//! IAM, ECR, Lambda, S3, STS) and a real OCI registry (Debian's docker-registry), both on
//! loopback and started here (llama-testkit; install them with scripts/install-test-servers).

use std::fs;
use std::process::{Command, Output};

use aws_sdk_cloudformation::types::Capability;

use crate::lambda::runtime_bin;
use llama_testkit::harness::{MotoServer, OciRegistry};
use llama_testkit::{World, oci, stderr, stdout};

/// The template this llama applies.
const TEMPLATE: &str = llama_aws::stack::TEMPLATE;

/// A world whose `llama` talks to `moto` and to nothing else.
pub(crate) struct Account {
    pub(crate) world: World,
    pub(crate) moto: MotoServer,
}

impl Account {
    pub(crate) fn new() -> Account {
        Account {
            world: crate::world(),
            moto: MotoServer::start(),
        }
    }

    pub(crate) fn llama(&self, args: &[&str]) -> Command {
        let mut cmd = self.world.llama(args);
        for (key, value) in self.moto.env() {
            cmd.env(key, value);
        }
        cmd
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.llama(args).output().expect("spawn llama")
    }

    /// `llama ARGS`, which must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "llama {args:?} failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    pub(crate) fn config_file(&self) -> String {
        fs::read_to_string(self.world.dir.path().join("config/llama/config.toml"))
            .unwrap_or_default()
    }

    /// The value of `key` in the config file.
    pub(crate) fn setting(&self, key: &str) -> String {
        let table: toml::Table = self.config_file().parse().expect("config is TOML");
        table
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    }

    pub(crate) fn sdk(&self) -> aws_config::SdkConfig {
        let runtime = tokio::runtime::Runtime::new().expect("tokio");
        let endpoint = self.moto.endpoint();
        runtime.block_on(async {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .endpoint_url(endpoint)
                .region(aws_config::Region::new(MotoServer::REGION))
                .credentials_provider(aws_sdk_cloudformation::config::Credentials::new(
                    MotoServer::ACCESS_KEY,
                    MotoServer::SECRET_KEY,
                    None,
                    None,
                    "moto",
                ))
                .load()
                .await
        })
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Runtime::new().expect("tokio").block_on(f)
    }

    fn stack_events(&self, stack: &str) -> usize {
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk());
        self.block_on(cfn.describe_stack_events().stack_name(stack).send())
            .expect("DescribeStackEvents")
            .stack_events()
            .len()
    }
}

#[test]
fn bootstrap_creates_the_stack_then_changes_nothing_then_applies_a_new_template() {
    let account = Account::new();
    let first = account.ok(&["bootstrap"]);
    assert!(first.contains("creating through change set"), "{first}");
    for resource in [
        "Add Bucket (AWS::S3::Bucket)",
        "Add Repository (AWS::ECR::Repository)",
        "Add Role (AWS::IAM::Role)",
    ] {
        assert!(first.contains(resource), "{resource} in:\n{first}");
    }
    assert!(
        first.contains("next: llama update-function --create gcc"),
        "{first}"
    );

    // The config points at what the stack made, and those resources exist.
    assert_eq!(account.setting("backend"), "lambda");
    assert_eq!(account.setting("region"), MotoServer::REGION);
    let store = account.setting("object_store");
    let bucket = store.strip_prefix("s3://").expect("s3:// URL");
    let sdk = account.sdk();
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    account
        .block_on(s3.head_bucket().bucket(bucket).send())
        .unwrap_or_else(|e| panic!("bucket {bucket} of {store}: {e:?}"));
    assert_eq!(
        account.setting("image_repository"),
        format!(
            "{}.dkr.ecr.{}.amazonaws.com/llama",
            MotoServer::ACCOUNT_ID,
            MotoServer::REGION
        )
    );
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    account
        .block_on(ecr.describe_repositories().repository_names("llama").send())
        .expect("the ECR repository exists");
    let role = account.setting("execution_role");
    assert!(
        role.starts_with(&format!(
            "arn:aws:iam::{}:role/llama-Role-",
            MotoServer::ACCOUNT_ID
        )),
        "{role}"
    );

    // Again: nothing changes, and it says so.
    let config = account.config_file();
    let events = account.stack_events("llama");
    let second = account.ok(&["bootstrap"]);
    assert!(
        second.contains("stack llama is up to date: nothing changed"),
        "{second}"
    );
    assert!(second.contains("already points at this stack"), "{second}");
    assert!(!second.contains("change set llama-"), "{second}");
    assert_eq!(account.config_file(), config);
    assert_eq!(
        account.stack_events("llama"),
        events,
        "no stack operation ran"
    );

    // A stack an older llama made (its template differs) is updated through a change set.
    let cfn = aws_sdk_cloudformation::Client::new(&sdk);
    let older = TEMPLATE.replace(
        "Description: The role llama's Lambda functions run as.",
        "Description: The role of an older llama.",
    );
    assert_ne!(older, TEMPLATE);
    account
        .block_on(
            cfn.create_stack()
                .stack_name("older")
                .template_body(older)
                .capabilities(Capability::CapabilityIam)
                .send(),
        )
        .expect("CreateStack");
    let update = account.ok(&["bootstrap"]);
    assert!(
        update.contains("up to date"),
        "the llama stack is unchanged: {update}"
    );
    let out = account
        .llama(&["bootstrap"])
        .env("LLAMA_STACK", "older")
        .output()
        .expect("spawn");
    let update = stdout(&out);
    assert!(out.status.success(), "{update}{}", stderr(&out));
    assert!(update.contains("updating through change set"), "{update}");
    assert!(update.contains("Modify Role (AWS::IAM::Role)"), "{update}");
    assert!(update.contains("stack older updated"), "{update}");
    let body = account
        .block_on(cfn.get_template().stack_name("older").send())
        .expect("GetTemplate");
    assert_eq!(body.template_body(), Some(TEMPLATE));
    assert_eq!(account.setting("stack"), "older");
}

#[test]
fn doctor_names_each_missing_piece_and_its_fix() {
    let account = Account::new();

    // Nothing set up: no backend, no stack, no function. The configured backend is this
    // machine's, so the lambda one is asked for by name.
    let out = account.run(&["doctor", "--backend", "lambda"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for line in [
        "PROBLEM  backend: local (from default)",
        "fix: llama bootstrap (it sets backend = lambda)",
        &format!(
            "ok       region: {} (from the AWS SDK's default chain)",
            MotoServer::REGION
        ),
        &format!("(account {})", MotoServer::ACCOUNT_ID),
        &format!(
            "PROBLEM  stack llama: does not exist in {}",
            MotoServer::REGION
        ),
        "skipped  config: there is no stack to compare it with",
        "skipped  bucket: object_store is not set",
        "PROBLEM  function gcc: does not exist",
        "fix: llama update-function --create gcc",
        "ok       compiler: ",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }

    // A stack but no function: only the function is wrong.
    account.ok(&["bootstrap"]);
    let out = account.run(&["doctor"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for line in [
        "ok       backend: lambda",
        "ok       stack llama: CREATE_COMPLETE, current template",
        "ok       config: matches stack llama",
        "ok       bucket: s3://",
        "ok       repository: ",
        "PROBLEM  function gcc: does not exist",
        "fix: llama update-function --create gcc",
        "1 problem found",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }

    // The config drifted from the stack (another LLAMA_OBJECT_STORE): named, with the fix.
    let out = account
        .llama(&["doctor"])
        .env("LLAMA_OBJECT_STORE", "s3://elsewhere")
        .output()
        .expect("spawn");
    let text = stdout(&out);
    assert!(
        text.contains(
            "PROBLEM  config: object_store is \"s3://elsewhere\", the stack says \"s3://"
        ),
        "{text}"
    );
    assert!(text.contains("PROBLEM  bucket: s3://elsewhere"), "{text}");
}

#[test]
fn doctor_without_credentials_says_how_to_give_them() {
    let account = Account::new();
    let out = account
        .llama(&["doctor", "--backend", "lambda"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .expect("spawn");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(
        text.contains("PROBLEM  credentials: no AWS credentials found"),
        "{text}"
    );
    assert!(
        text.contains("skipped  the rest: every AWS call needs credentials"),
        "{text}"
    );
}

#[test]
fn bootstrap_that_fails_prints_what_cloudformation_said() {
    let account = Account::new();
    // A repository of the stack's name already exists (as the original llama left one).
    let ecr = aws_sdk_ecr::Client::new(&account.sdk());
    account
        .block_on(ecr.create_repository().repository_name("llama").send())
        .expect("CreateRepository");
    let out = account.run(&["bootstrap"]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(125), "{text}{err}");
    assert!(text.contains("the stack's events:"), "{text}");
    assert!(err.contains("could not apply change set"), "{err}");
    assert!(err.contains("llama"), "{err}");
    assert!(err.contains("run llama bootstrap again"), "{err}");
    assert_eq!(account.config_file(), "", "nothing written on failure");
}

/// The `function` of `fn` in moto: its image URI and memory.
fn function_in_moto(account: &Account, name: &str) -> (String, i32, String) {
    let lambda = aws_sdk_lambda::Client::new(&account.sdk());
    let f = account
        .block_on(lambda.get_function().function_name(name).send())
        .unwrap_or_else(|e| panic!("GetFunction {name}: {e:?}"));
    let conf = f.configuration().expect("configuration");
    (
        f.code()
            .and_then(|c| c.image_uri())
            .unwrap_or_default()
            .to_string(),
        conf.memory_size().unwrap_or_default(),
        conf.description().unwrap_or_default().to_string(),
    )
}

#[test]
fn update_function_adds_the_runtime_to_a_base_image_and_points_the_function_at_its_digest() {
    let account = Account::new();
    let registry = OciRegistry::start();
    let host = registry.host_port();
    // No public registry is reachable: the registry stands in for Docker Hub (as a mirror
    // does) and for ECR. The base is assembled from a few files.
    let base = account.block_on(oci::push_base(
        &host,
        "library/debian",
        "bookworm-slim",
        "amd64",
        oci::Format::Docker,
        &oci::debian_files(),
    ));
    account.ok(&["bootstrap"]);
    let repository = format!("{host}/llama");
    let with_registry = |args: &[&str]| {
        let mut cmd = account.llama(args);
        cmd.env("LLAMA_REGISTRY_MIRROR", &host)
            .env("LLAMA_IMAGE_REPOSITORY", &repository);
        cmd.output().expect("spawn llama")
    };

    let out = with_registry(&[
        "update-function",
        "--create",
        "--base",
        "debian:bookworm-slim",
        "fn",
    ]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{err}");
    assert!(text.contains("function fn: created"), "{text}");
    assert!(err.contains("uploading"), "progress on stderr: {err}");

    // The registry holds the base plus one layer with llama-runtime as the entrypoint.
    let image = account.block_on(oci::pull(&format!("{repository}:fn")));
    let runtime = std::fs::read(runtime_bin()).expect("llama-runtime");
    assert_eq!(image.layers.len(), 2, "{}", image.manifest);
    assert_eq!(
        image.manifest["layers"][0]["digest"], base.layer_digest,
        "the base's layer is reused as is"
    );
    let files = oci::layer_files(&image.layers[1]);
    let (mode, bytes) = &files["usr/local/bin/llama-runtime"];
    assert_eq!(mode & 0o777, 0o755);
    assert!(bytes == &runtime, "the layer holds this llama-runtime");
    assert_eq!(
        image.config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/llama-runtime"])
    );
    assert_eq!(image.config["rootfs"]["diff_ids"][0], base.diff_id);

    // moto has the function at that digest, with the defaults.
    let (uri, memory, description) = function_in_moto(&account, "fn");
    assert_eq!(uri, format!("{repository}@{}", image.digest));
    assert_eq!(memory, 1769);
    assert!(description.starts_with("llama-runtime "), "{description}");
    assert!(
        text.contains(&format!("image {repository}@{}", image.digest)),
        "{text}"
    );

    // An image already pushed, by tag (Go-style flags, as the original took them): the
    // function gets its digest.
    let tagged = format!("{repository}:fn");
    let out = with_registry(&[
        "update-function",
        "-create",
        &format!("-tag={tagged}"),
        "fn2",
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let (uri, ..) = function_in_moto(&account, "fn2");
    assert_eq!(uri, format!("{repository}@{}", image.digest));

    // A second call updates it: a newer runtime and more memory.
    let newer = account.world.dir.path().join("llama-runtime");
    let mut bytes = runtime.clone();
    bytes.extend_from_slice(b"\0newer build");
    std::fs::write(&newer, bytes).expect("write runtime");
    std::fs::set_permissions(&newer, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let newer = newer.to_string_lossy().into_owned();
    let out = with_registry(&[
        "update-function",
        "--base",
        "debian:bookworm-slim",
        "--runtime",
        &newer,
        "--memory",
        "3008",
        "fn",
    ]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}{err}");
    assert!(text.contains("function fn: image updated"), "{text}");
    assert!(
        err.contains("is already there"),
        "the base layer is not sent again: {err}"
    );
    let updated = account.block_on(oci::pull(&format!("{repository}:fn")));
    assert_ne!(updated.digest, image.digest);
    let (uri, memory, _) = function_in_moto(&account, "fn");
    assert_eq!(uri, format!("{repository}@{}", updated.digest));
    assert_eq!(memory, 3008);

    // Without --create, a missing function is an error that says what to add.
    let out = with_registry(&["update-function", "missing"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("add --create"), "{}", stderr(&out));

    // Everything in order now, for the function named with -f.
    let out = with_registry(&["doctor", "-f", "fn"]);
    let text = stdout(&out);
    assert!(
        text.contains("ok       function fn: Active, llama-runtime "),
        "{text}"
    );
}

#[test]
fn update_function_build_without_a_builder_says_to_use_base() {
    let account = Account::new();
    account.ok(&["bootstrap"]);
    account
        .world
        .write("image/Dockerfile", b"FROM debian:bookworm-slim\n");
    let dir = account.world.path("image");
    let out = account
        .llama(&["update-function", "--create", "--build"])
        .arg(&dir)
        .arg("fn")
        // Only the builders' names are looked up: none of them is on this PATH.
        .env("PATH", account.world.dir.path())
        .output()
        .expect("spawn");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("--build needs a container builder and none works here"),
        "{err}"
    );
    assert!(err.contains("docker: not installed"), "{err}");
    assert!(err.contains("use --base IMAGE"), "{err}");
}
