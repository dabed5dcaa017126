//! `llama bootstrap`, `llama update-function` and `llama doctor` against moto (CloudFormation,
//! IAM, ECR, Lambda, S3, STS) and a real OCI registry (Debian's docker-registry), both on
//! loopback and started here (util/harness.rs; install them with scripts/install-test-servers).

use std::fs;
use std::process::{Command, Output};

use aws_sdk_cloudformation::types::Capability;

use crate::util::harness::MotoServer;
use crate::util::{World, stderr, stdout};

/// The template this llama applies.
const TEMPLATE: &str = include_str!("../src/stack.yaml");

/// A world whose `llama` talks to `moto` and to nothing else.
pub(crate) struct Account {
    pub(crate) world: World,
    pub(crate) moto: MotoServer,
}

impl Account {
    pub(crate) fn new() -> Account {
        Account {
            world: World::new(),
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
        first.contains("next: llama update-function --create llama"),
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

    // Nothing set up: no backend, no stack, no function.
    let out = account.run(&["doctor"]);
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
        "PROBLEM  function llama: does not exist",
        "fix: llama update-function --create llama",
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
        "PROBLEM  function llama: does not exist",
        "fix: llama update-function --create llama",
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
        .llama(&["doctor"])
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
