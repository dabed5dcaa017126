//! `llama doctor`'s checks of the lambda backend: each piece it needs, and the command that
//! fixes what is missing.
//!
//! The checks run in the order a set-up builds the pieces (region, credentials, stack,
//! config, bucket, repository, functions), and a check whose prerequisite failed is skipped
//! with the reason rather than reported as a second, confusing failure. Each outcome goes to
//! the caller's [`Findings`] as it is known; the caller (llama-cli) checks the backend
//! setting, the store, the daemon and the compiler itself, and prints the summary.

use std::io;

use llama_core::doctor::{Findings, Outcome};
use llama_core::{Config, keys};

use crate::aws_setup::{self, error_code, sdk_error};
use crate::function::{self, DESCRIPTION_PREFIX};
use crate::stack::{TEMPLATE, describe, is_stable_ok, settings_from_stack, status_of};

/// What `llama doctor` was asked to check (llama-cli fills it from its flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorOptions {
    /// The functions to check, in order: llamacc's (`LLAMACC_FUNCTION`) first, then those
    /// named with `-f`.
    pub functions: Vec<String>,
}

/// How far [`diagnose`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Every check ran (a few may say they were skipped for a missing setting).
    All,
    /// The region or the credentials are missing, which every later check needs: the rest
    /// was reported as skipped, and the caller's own checks should be skipped too.
    Stopped,
}

/// Checks the region, the credentials, the stack and the config against it, the bucket, the
/// image repository and each of `options.functions`, giving each outcome to `report`.
/// Problems are outcomes, not errors: the error is only a failed write.
///
/// # Cancel safety
///
/// Every AWS call only reads; dropping the future leaves a partial report.
pub async fn diagnose(
    config: &Config,
    options: &DoctorOptions,
    report: &mut dyn Findings,
) -> io::Result<Checked> {
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
                    fix: format!("llama bootstrap -region REGION (or AWS_REGION=REGION): {e}"),
                },
            )?;
            report.check(
                "the rest",
                Outcome::Skipped("every AWS call needs a region".into()),
            )?;
            return Ok(Checked::Stopped);
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
            report.check(
                "the rest",
                Outcome::Skipped("every AWS call needs credentials".into()),
            )?;
            return Ok(Checked::Stopped);
        }
    }

    let stack = config.stack();
    let (stack_outcome, config_outcome) = check_stack(config, &sdk, &stack).await;
    report.check(&format!("stack {stack}"), stack_outcome)?;
    report.check("config", config_outcome)?;
    report.check("bucket", check_bucket(config, &sdk).await)?;
    report.check("repository", check_repository(config, &sdk).await)?;
    for name in &options.functions {
        report.check(
            &format!("function {name}"),
            check_function(config, &sdk, name).await,
        )?;
    }
    Ok(Checked::All)
}

/// The stack (exists, settled, this llama's template) and the config against its resources.
async fn check_stack(
    config: &Config,
    sdk: &aws_config::SdkConfig,
    stack: &str,
) -> (Outcome, Outcome) {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let current = match describe(&cfn, stack).await {
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
                    e.to_string(),
                    "check the credentials' cloudformation:DescribeStacks permission",
                ),
                Outcome::Skipped("the stack could not be read".into()),
            );
        }
    };
    let status = status_of(&current);
    let stack_outcome = if !is_stable_ok(&current) {
        Outcome::problem(
            format!("is in state {status}"),
            "llama bootstrap (it waits for, or repairs, the stack)",
        )
    } else {
        let template = cfn.get_template().stack_name(stack).send().await;
        match template.as_ref().map(|t| t.template_body()) {
            Ok(Some(body)) if body.trim() == TEMPLATE.trim() => {
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
    let settings = match settings_from_stack(&cfn, stack, &current).await {
        Ok(settings) => settings,
        Err(e) => {
            return (
                stack_outcome,
                Outcome::problem(e.to_string(), "llama bootstrap"),
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
        function::DEFAULT_BASE
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
