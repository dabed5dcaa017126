//! What `bootstrap`, `update-function` and `doctor` share: the AWS SDK configuration for the
//! configured region, and SDK errors put in words a user can act on.

use std::time::Duration;

use aws_sdk_cloudformation::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use llama_core::Config;

/// Attempts per AWS call for the set-up commands: they are few, and a user waits on each.
const MAX_ATTEMPTS: u32 = 5;

/// The SDK configuration for `region` (flag, `LLAMA_REGION`, config file), else the SDK's own
/// chain (`AWS_REGION`, the profile). No region at all is an error that says how to give one.
pub async fn sdk_config(config: &Config) -> Result<aws_config::SdkConfig, NoRegion> {
    let region = config.region();
    let sdk = llama_exec::load_aws_config(Some(region.as_str()), MAX_ATTEMPTS).await;
    if sdk.region().is_none() {
        return Err(NoRegion {
            config_file: Config::file_path(),
        });
    }
    Ok(sdk)
}

/// Neither llama's configuration nor the SDK's chain names a region.
#[derive(Debug, thiserror::Error)]
#[error(
    "no AWS region is set: pass -region REGION (e.g. llama bootstrap -region us-east-1), \
     or set `region` in {} or AWS_REGION",
    config_file.display()
)]
pub struct NoRegion {
    /// The config file where `region` may be set.
    pub config_file: std::path::PathBuf,
}

/// [`wait_for`] ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error(
    "gave up waiting after {seconds}s for {what}; it may still finish: run the command again later"
)]
pub struct GaveUp {
    /// What was awaited, in words.
    pub what: String,
    /// The deadline, in seconds.
    pub seconds: u64,
}

/// The region the SDK configuration uses.
pub fn region_of(sdk: &aws_config::SdkConfig) -> String {
    sdk.region().map(|r| r.to_string()).unwrap_or_default()
}

/// An SDK error as `Code: message` when the service answered, else the whole chain of causes
/// (no credentials, connection refused, ...).
pub fn sdk_error<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(service) = error.as_service_error() {
        match (service.code(), service.message()) {
            (Some(code), Some(message)) => return format!("{code}: {message}"),
            (Some(code), None) => return code.to_string(),
            (None, Some(message)) => return message.to_string(),
            (None, None) => {}
        }
    }
    let detail = DisplayErrorContext(error).to_string();
    const NO_CREDENTIALS: &[&str] = &[
        "loading credentials",
        "no providers in chain",
        "no credentials found",
        "CredentialsNotLoaded",
    ];
    if NO_CREDENTIALS.iter().any(|n| detail.contains(n)) {
        // The SDK's chain of providers explains each failure at length, ending with the
        // instance metadata service nobody meant to use.
        return "no AWS credentials found: run `aws configure`, or set AWS_PROFILE, or \
                AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            .into();
    }
    detail
}

/// The service's error code, when the service answered.
pub fn error_code<E, R>(error: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    error.as_service_error().and_then(|e| e.code())
}

/// Polls `probe` until it returns `Some`, sleeping a little longer each time (CloudFormation
/// and Lambda take from milliseconds to minutes), and gives up after `deadline`.
pub async fn wait_for<T, E, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> Result<T, E>
where
    E: From<GaveUp>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, E>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        if let Some(done) = probe().await? {
            return Ok(done);
        }
        if started.elapsed() > deadline {
            return Err(GaveUp {
                what: what.to_string(),
                seconds: deadline.as_secs(),
            }
            .into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
