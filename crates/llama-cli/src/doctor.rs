//! `llama doctor`: checks every piece the lambda backend needs and names the command that
//! fixes what is missing.
//!
//! The checks run in the order a set-up builds the pieces (region, credentials, stack,
//! config, bucket, repository, functions), and a check whose prerequisite failed is skipped
//! with the reason rather than reported as a second, confusing failure.

use std::io::Write;

use llama_core::{Backend, Config, keys};

use crate::bootstrap;
use crate::cli::DoctorArgs;
use crate::update_function::{self, DESCRIPTION_PREFIX};
use llama_aws::aws_setup::{self, error_code, sdk_error};

/// The outcome of one check.
enum Outcome {
    /// In order; the detail says what was found.
    Ok(String),
    /// Wrong or missing; `fix` is the command (or step) that puts it right.
    Problem { what: String, fix: String },
    /// Not checked, because something it needs is missing.
    Skipped(String),
}

impl Outcome {
    fn problem(what: impl Into<String>, fix: impl Into<String>) -> Outcome {
        Outcome::Problem {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

struct Report<'a> {
    out: &'a mut dyn Write,
    problems: usize,
}

impl Report<'_> {
    fn check(&mut self, name: &str, outcome: Outcome) -> std::io::Result<()> {
        match outcome {
            Outcome::Ok(detail) => writeln!(self.out, "ok       {name}: {detail}"),
            Outcome::Skipped(why) => writeln!(self.out, "skipped  {name}: {why}"),
            Outcome::Problem { what, fix } => {
                self.problems += 1;
                writeln!(self.out, "PROBLEM  {name}: {what}")?;
                writeln!(self.out, "         fix: {fix}")
            }
        }
    }
}

/// Runs `llama doctor`: 0 when every check passed, 1 when one found a problem.
pub fn run(config: &Config, args: &DoctorArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report { out, problems: 0 };
    runtime.block_on(diagnose(config, args, &mut report))?;
    if report.problems == 0 {
        writeln!(report.out, "everything is in order")?;
        Ok(0)
    } else {
        writeln!(
            report.out,
            "{} problem{} found",
            report.problems,
            if report.problems == 1 { "" } else { "s" }
        )?;
        Ok(1)
    }
}

async fn diagnose(
    config: &Config,
    args: &DoctorArgs,
    report: &mut Report<'_>,
) -> std::io::Result<()> {
    report.check(
        "backend",
        if config.backend() == Backend::Lambda {
            Outcome::Ok("lambda".into())
        } else {
            Outcome::Problem {
                what: format!(
                    "{} (from {}): commands and compiles run {}, not on Lambda",
                    config.backend().name(),
                    config.source(&keys::BACKEND),
                    if config.backend() == Backend::Local {
                        "on this machine"
                    } else {
                        "on the REAPI server"
                    },
                ),
                fix: "llama bootstrap (it sets backend = lambda), or LLAMA_BACKEND=lambda".into(),
            }
        },
    )?;

    let sdk = match aws_setup::sdk_config(config).await {
        Ok(sdk) => {
            let region = aws_setup::region_of(&sdk);
            let from = if config.region().is_empty() {
                "the AWS SDK's default chain".to_string()
            } else {
                config.source(&keys::REGION).to_string()
            };
            report.check("region", Outcome::Ok(format!("{region} (from {from})")))?;
            sdk
        }
        Err(e) => {
            report.check(
                "region",
                Outcome::Problem {
                    what: "none is set".into(),
                    fix: format!("llama bootstrap -region REGION (or AWS_REGION=REGION): {e:#}"),
                },
            )?;
            return report.check(
                "the rest",
                Outcome::Skipped("every AWS call needs a region".into()),
            );
        }
    };

    let sts = aws_sdk_sts::Client::new(&sdk);
    match sts.get_caller_identity().send().await {
        Ok(who) => report.check(
            "credentials",
            Outcome::Ok(format!(
                "{} (account {})",
                who.arn().unwrap_or("?"),
                who.account().unwrap_or("?")
            )),
        )?,
        Err(e) => {
            report.check(
                "credentials",
                Outcome::Problem {
                    what: sdk_error(&e),
                    fix: "give llama AWS credentials: `aws configure`, AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                },
            )?;
            return report.check(
                "the rest",
                Outcome::Skipped("every AWS call needs credentials".into()),
            );
        }
    }

    let stack = config.stack();
    let (stack_outcome, config_outcome) = check_stack(config, &sdk, &stack).await;
    report.check(&format!("stack {stack}"), stack_outcome)?;
    report.check("config", config_outcome)?;
    report.check("bucket", check_bucket(config, &sdk).await)?;
    report.check("repository", check_repository(config, &sdk).await)?;
    // llamacc's function is the one a build needs; invoke and xargs name theirs.
    let llamacc = llama_cc::Settings::from_process_env().function;
    let mut functions = vec![llamacc];
    for name in &args.functions {
        if !functions.contains(name) {
            functions.push(name.clone());
        }
    }
    for name in &functions {
        report.check(
            &format!("function {name}"),
            check_function(config, &sdk, name).await,
        )?;
    }
    report.check("compiler", compiler())?;
    Ok(())
}

/// The stack (exists, settled, this llama's template) and the config against its resources.
async fn check_stack(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    stack: &str,
) -> (Outcome, Outcome) {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let current = match bootstrap::describe(&cfn, stack).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return (
                Outcome::problem(
                    format!("does not exist in {}", aws_setup::region_of(sdk)),
                    "llama bootstrap",
                ),
                Outcome::Skipped("there is no stack to compare it with".into()),
            );
        }
        Err(e) => {
            return (
                Outcome::problem(
                    format!("{e:#}"),
                    "check the credentials' cloudformation:DescribeStacks permission",
                ),
                Outcome::Skipped("the stack could not be read".into()),
            );
        }
    };
    let status = bootstrap::status_of(&current);
    let stack_outcome = if !bootstrap::is_stable_ok(&current) {
        Outcome::problem(
            format!("is in state {status}"),
            "llama bootstrap (it waits for, or repairs, the stack)",
        )
    } else {
        let template = cfn.get_template().stack_name(stack).send().await;
        match template.as_ref().map(|t| t.template_body()) {
            Ok(Some(body)) if body.trim() == bootstrap::TEMPLATE.trim() => {
                Outcome::Ok(format!("{status}, current template"))
            }
            Ok(Some(_)) => Outcome::problem(
                "its template differs from this llama's (made by another version, or edited)",
                "llama bootstrap (it updates the stack through a change set)",
            ),
            Ok(None) => Outcome::Ok(format!("{status} (CloudFormation returned no template)")),
            Err(e) => Outcome::Ok(format!(
                "{status} (template not readable: {})",
                sdk_error(e)
            )),
        }
    };
    let settings = match bootstrap::settings_from_stack(&cfn, stack, &current).await {
        Ok(settings) => settings,
        Err(e) => {
            return (
                stack_outcome,
                Outcome::problem(format!("{e:#}"), "llama bootstrap"),
            );
        }
    };
    let wrong: Vec<String> = settings
        .iter()
        .filter_map(|(key, wanted)| {
            let have = config
                .entries()
                .find(|e| e.0 == *key)
                .map(|e| e.1)
                .unwrap_or_default();
            (have != *wanted).then(|| format!("{key} is {have:?}, the stack says {wanted:?}"))
        })
        .collect();
    let config_outcome = if wrong.is_empty() {
        Outcome::Ok(format!("matches stack {stack}"))
    } else {
        Outcome::problem(
            wrong.join("; "),
            "llama bootstrap (it writes the stack's settings to the config file; an LLAMA_* \
             variable still overrides them)",
        )
    };
    (stack_outcome, config_outcome)
}

/// The bucket of `object_store` answers.
async fn check_bucket(config: &Config, sdk: &aws_config::SdkConfig) -> Outcome {
    let url = config.object_store();
    if url.trim().is_empty() {
        return Outcome::Skipped("object_store is not set".into());
    }
    let location: llama_exec::ObjectStoreUrl = match url.trim().parse() {
        Ok(l) => l,
        Err(e) => return Outcome::problem(format!("object_store {url:?}: {e}"), "llama bootstrap"),
    };
    let s3 = llama_exec::s3_client(sdk);
    match s3.head_bucket().bucket(&location.bucket).send().await {
        Ok(_) => Outcome::Ok(format!("s3://{} is reachable", location.bucket)),
        Err(e) => Outcome::problem(
            format!("s3://{}: {}", location.bucket, sdk_error(&e)),
            "llama bootstrap (if the bucket was deleted, it is recreated; if access is denied, \
             the credentials need s3:ListBucket on it)",
        ),
    }
}

/// The ECR repository of `image_repository` exists (other registries are not checked).
async fn check_repository(config: &Config, sdk: &aws_config::SdkConfig) -> Outcome {
    let repository = config.image_repository();
    let Some((registry, name)) = repository.split_once('/') else {
        return Outcome::Skipped("image_repository is not set".into());
    };
    if !registry.contains(".dkr.ecr.") {
        return Outcome::Ok(format!("{repository} (not ECR: not checked)"));
    }
    let ecr = aws_sdk_ecr::Client::new(sdk);
    match ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
    {
        Ok(_) => Outcome::Ok(repository.clone()),
        Err(e) => Outcome::problem(
            format!("{repository}: {}", sdk_error(&e)),
            "llama bootstrap",
        ),
    }
}

/// The function exists, is active, and is an image with this version of llama-runtime.
async fn check_function(config: &Config, sdk: &aws_config::SdkConfig, name: &str) -> Outcome {
    let lambda = aws_sdk_lambda::Client::new(sdk);
    let ours = env!("CARGO_PKG_VERSION");
    let rebuild = format!(
        "llama update-function --base {} {name}",
        update_function::DEFAULT_BASE
    );
    let function = match lambda.get_function().function_name(name).send().await {
        Ok(f) => f,
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => {
            return Outcome::problem(
                format!("does not exist in {}", aws_setup::region_of(sdk)),
                format!("llama update-function --create {name}"),
            );
        }
        Err(e) => {
            return Outcome::problem(
                sdk_error(&e),
                "check the credentials' lambda:GetFunction permission",
            );
        }
    };
    let Some(conf) = function.configuration() else {
        return Outcome::problem("Lambda returned no configuration", rebuild);
    };
    let image = function.code().and_then(|c| c.image_uri()).unwrap_or("");
    let state = conf.state().map(|s| s.as_str()).unwrap_or("Active");
    if conf.package_type().map(|p| p.as_str()) != Some("Image") {
        return Outcome::problem(
            "is not an image function (the original llama made zip functions?)",
            format!("delete it and run llama update-function --create {name}"),
        );
    }
    if !matches!(state, "Active" | "Inactive") {
        let reason = conf
            .state_reason()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        return Outcome::problem(format!("is {state}{reason}"), rebuild);
    }
    match conf
        .description()
        .and_then(|d| d.strip_prefix(DESCRIPTION_PREFIX))
    {
        None => Outcome::problem(
            "its image was not made by llama update-function, so the llama-runtime in it is unknown",
            rebuild,
        ),
        Some(version) if version != ours => Outcome::problem(
            format!("runs llama-runtime {version}, and this llama is {ours}"),
            rebuild,
        ),
        Some(version) => {
            let role = config.execution_role();
            let mut detail = format!(
                "{state}, llama-runtime {version}, {} MB, {} s, image {image}",
                conf.memory_size().unwrap_or_default(),
                conf.timeout().unwrap_or_default()
            );
            if !role.is_empty() && conf.role() != Some(role.as_str()) {
                detail.push_str(&format!(
                    " (runs as {}, not execution_role)",
                    conf.role().unwrap_or("?")
                ));
            }
            Outcome::Ok(detail)
        }
    }
}

/// What a remote compile runs: llamacc ships this machine's compiler with each compile.
fn compiler() -> Outcome {
    let path = std::env::var_os("PATH");
    let Some(gcc) = llama_exec::find_program("gcc".as_ref(), path.as_deref(), "/".as_ref()) else {
        return Outcome::Problem {
            what: "no gcc on PATH: llamacc has nothing to ship".into(),
            fix: "install gcc (e.g. apt-get install gcc)".into(),
        };
    };
    let version = std::process::Command::new(&gcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.lines().next().map(str::to_string))
        .unwrap_or_else(|| "version unknown".into());
    Outcome::Ok(format!(
        "{} ({version}): llamacc ships it, with cc1 and as, to the function with each compile, \
         so remote objects match local ones; clang compiles run locally",
        gcc.display()
    ))
}
