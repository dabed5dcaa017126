//! `llama update-function`: creates or updates an image-packaged Lambda function.
//!
//! The image comes from `--base` (llama adds its runtime to any image, no builder needed),
//! `--build` (a local container builder) or `--tag` (already pushed); the function always
//! names it by digest. Lambda refuses a change while the previous one is in progress, so
//! each step waits until the function is active and its last update finished.

mod image;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use aws_sdk_lambda::Client;
use aws_sdk_lambda::types::{
    Architecture, FunctionCode, FunctionConfiguration, LastUpdateStatus, PackageType, State,
};
use llama_core::Config;

use crate::Arch;
use crate::aws_setup::{self, GaveUp, NoRegion, error_code, sdk_error, wait_for};
use crate::oci_image::ImageError;

/// Memory of a new function: Lambda gives one full vCPU at 1769 MB.
pub const DEFAULT_MEMORY_MB: i32 = 1769;
/// Timeout of a new function.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The base image of `--create` when no source is given.
pub const DEFAULT_BASE: &str = "debian:bookworm-slim";
/// Lambda's ceiling on a function's timeout.
const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long Lambda may take to make a function active or to apply an update.
const UPDATE_DEADLINE: Duration = Duration::from_secs(10 * 60);
/// How long a new role may take to become usable by Lambda.
const ROLE_PROPAGATION: Duration = Duration::from_secs(90);
/// How the function's description names the runtime inside it; `llama doctor` reads it.
pub const DESCRIPTION_PREFIX: &str = "llama-runtime ";

/// What `llama update-function` was asked for (llama-cli fills it from its flags); the
/// region, the image repository, the execution role and the registry mirror come from the
/// [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateFunctionOptions {
    /// The function's name.
    pub name: String,
    /// Create the function if it does not exist.
    pub create: bool,
    /// Where the image comes from; `None`: [`DEFAULT_BASE`] for a new function, else the
    /// image it has.
    pub source: Option<ImageSource>,
    /// Memory in MB; `None`: [`DEFAULT_MEMORY_MB`] for a new function, else unchanged.
    pub memory: Option<i32>,
    /// Timeout of one invocation (see [`parse_timeout`]); `None`: [`DEFAULT_TIMEOUT`] for a
    /// new function, else unchanged.
    pub timeout: Option<Duration>,
    /// CPU architecture; `None`: the function's own, else x86_64.
    pub arch: Option<Arch>,
    /// The llama-runtime binary to put in a `--base` image; `None`: the one beside the
    /// running program.
    pub runtime: Option<PathBuf>,
}

/// Where the function's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// This base image plus a layer with llama-runtime, pushed to `image_repository`.
    Base(String),
    /// This directory's Dockerfile, built by a local container builder and pushed.
    Build(PathBuf),
    /// This image, already pushed.
    Tag(String),
}

/// Why `llama update-function` failed; each message names the function, image, registry or
/// file concerned and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// No region is configured.
    #[error(transparent)]
    NoRegion(#[from] NoRegion),
    /// The timeout is not a duration Lambda allows.
    #[error("--timeout {text:?}: expected 1s to 15m, e.g. 60s or 5m")]
    BadTimeout {
        /// As given.
        text: String,
    },
    /// The function does not exist and creating it was not asked for.
    #[error("function {name} does not exist in {region}: add --create to create it")]
    Missing {
        /// The function's name.
        name: String,
        /// The region looked in.
        region: String,
    },
    /// A new function was given no image.
    #[error("function {name} is new and needs an image: pass --base, --build or --tag")]
    NoImage {
        /// The function's name.
        name: String,
    },
    /// `execution_role` is not set.
    #[error(
        "execution_role is not set, so the function would have no role to run as: run `llama bootstrap` first"
    )]
    NoRole,
    /// `image_repository` is not set.
    #[error(
        "image_repository is not set, so there is nowhere to push the function's image: \
         run `llama bootstrap` (or set LLAMA_IMAGE_REPOSITORY=REGISTRY/REPOSITORY)"
    )]
    NoRepository,
    /// A Lambda request failed.
    #[error("{action} {name}: {message}")]
    Request {
        /// What was being done ("creating function", "reading function").
        action: &'static str,
        /// The function's name.
        name: String,
        /// The service's answer, or why there was none.
        message: String,
    },
    /// Lambda refused an update of the function's image or settings.
    #[error("updating the {what} of function {name}: {message}")]
    Update {
        /// "image" or "settings".
        what: &'static str,
        /// The function's name.
        name: String,
        /// The service's answer, or how long llama waited.
        message: String,
    },
    /// Waiting for the function (or for its role) took too long.
    #[error(transparent)]
    GaveUp(#[from] GaveUp),
    /// The function went away while llama waited for it.
    #[error("function {name} was deleted while llama waited for it")]
    Deleted {
        /// The function's name.
        name: String,
    },
    /// Lambda put the function in the Failed state.
    #[error("function {name} failed: {reason}")]
    Failed {
        /// The function's name.
        name: String,
        /// Lambda's reason.
        reason: String,
    },
    /// The function's last update failed.
    #[error("the last update of function {name} failed: {reason}")]
    UpdateFailed {
        /// The function's name.
        name: String,
        /// Lambda's reason.
        reason: String,
    },
    /// The running program's path is unknown, so llama-runtime cannot be found beside it.
    #[error(
        "locating the llama binary, beside which llama-runtime is looked for (or pass --runtime PATH)"
    )]
    NoExe(#[source] io::Error),
    /// The llama-runtime binary could not be read.
    #[error(
        "reading the runtime {} to put in the image: install it beside llama \
         (cargo install --locked --path crates/llama-runtime, from llama's source) \
         or pass --runtime PATH",
        path.display()
    )]
    RuntimeUnreadable {
        /// The binary's path.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: io::Error,
    },
    /// The llama-runtime binary is not an ELF executable.
    #[error(
        "{} is not an ELF executable: pass --runtime with a build of llama-runtime",
        path.display()
    )]
    NotElf {
        /// The binary's path.
        path: PathBuf,
    },
    /// The llama-runtime binary is built for another architecture than the function's.
    #[error(
        "{} is not built for {label} (the function's architecture): pass --runtime with an {label} build of llama-runtime, or choose --arch to match",
        path.display()
    )]
    WrongArch {
        /// The binary's path.
        path: PathBuf,
        /// The architecture it should be built for.
        label: &'static str,
    },
    /// The `--base` image could not be built or pushed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The `--build` directory has no Dockerfile.
    #[error("--build {}: no Dockerfile or Containerfile there", dir.display())]
    NoDockerfile {
        /// The directory.
        dir: PathBuf,
    },
    /// No container builder works on this machine.
    #[error(
        "--build needs a container builder and none works here ({tried}); use --base IMAGE instead, \
         which adds llama-runtime to an image without any builder"
    )]
    NoBuilder {
        /// What each builder said, `tool: why` joined by "; ".
        tried: String,
    },
    /// The container builder could not be run.
    #[error("running {builder}")]
    Builder {
        /// The builder's command.
        builder: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The container builder failed (its output went to the terminal).
    #[error("`{builder} {args}` failed ({status})")]
    BuilderFailed {
        /// The builder's command.
        builder: &'static str,
        /// Its arguments, joined by spaces.
        args: String,
        /// How it ended.
        status: ExitStatus,
    },
    /// ECR would not give a token for its registry.
    #[error("getting a token for {registry} from ECR: {message}")]
    Token {
        /// The registry.
        registry: String,
        /// The service's answer, or why there was none.
        message: String,
    },
    /// ECR answered without a token.
    #[error("ECR returned no token for {registry}")]
    TokenMissing {
        /// The registry.
        registry: String,
    },
    /// ECR's token is not in the form it documents.
    #[error("ECR's token for {registry} is not {expected}")]
    TokenMalformed {
        /// The registry.
        registry: String,
        /// The form expected.
        expected: &'static str,
    },
    /// `--tag` is not an image reference.
    #[error("{image:?} is not an image reference (REGISTRY/REPOSITORY:TAG)")]
    BadReference {
        /// As given.
        image: String,
        /// The parser's complaint.
        #[source]
        source: oci_client::ParseError,
    },
    /// The image's registry could not say which digest its tag names.
    #[error("looking up the digest of {image} in its registry")]
    Digest {
        /// The image.
        image: String,
        /// The registry's error.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// The progress could not be written.
    #[error("writing the output")]
    Output(#[from] io::Error),
}

impl FunctionError {
    fn request(action: &'static str, name: &str, message: String) -> FunctionError {
        FunctionError::Request {
            action,
            name: name.to_string(),
            message,
        }
    }
}

/// A timeout as `--timeout` takes it (`60s`, `5m`): 1 to 900 seconds, as Lambda allows.
pub fn parse_timeout(text: &str) -> Result<Duration, FunctionError> {
    humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| d.as_secs() >= 1 && *d <= MAX_TIMEOUT)
        .ok_or_else(|| FunctionError::BadTimeout {
            text: text.to_string(),
        })
}

/// `--arch`, else the function's own, else x86_64.
fn arch_of(given: Option<Arch>, existing: Option<&FunctionConfiguration>) -> Arch {
    given.unwrap_or_else(|| {
        existing
            .and_then(|f| f.architectures().first())
            .map(|a| match a {
                Architecture::Arm64 => Arch::Arm64,
                _ => Arch::X86_64,
            })
            .unwrap_or(Arch::X86_64)
    })
}

/// What [`create`] and [`update`] change, and where.
struct Change<'a> {
    lambda: &'a Client,
    name: &'a str,
    arch: Arch,
    memory: Option<i32>,
    timeout: Option<Duration>,
    /// The description naming the llama-runtime inside ([`DESCRIPTION_PREFIX`]).
    description: String,
}

/// Runs `llama update-function`: makes or finds the image, creates the function or updates
/// its image and settings, and waits until Lambda has applied them. Progress goes to `out`
/// (and the image push's to stderr).
///
/// # Cancel safety
///
/// Dropping the future stops at the step in flight: an image push leaves its blobs (a later
/// push reuses them), and a request Lambda already accepted is applied all the same.
pub async fn update_function(
    config: &Config,
    options: &UpdateFunctionOptions,
    out: &mut dyn Write,
) -> Result<(), FunctionError> {
    let name = options.name.as_str();
    let sdk = aws_setup::sdk_config(config).await?;
    let lambda = Client::new(&sdk);
    let existing = function(&lambda, name).await?;
    if existing.is_none() && !options.create {
        return Err(FunctionError::Missing {
            name: name.to_string(),
            region: aws_setup::region_of(&sdk),
        });
    }
    let source = image::image_source(options.source.as_ref(), existing.is_some());
    let arch = arch_of(options.arch, existing.as_ref());

    let image = image::image_for(config, options, &sdk, source, arch, out).await?;
    if let Some(image) = &image {
        writeln!(out, "image: {image}")?;
    }

    let change = Change {
        lambda: &lambda,
        name,
        arch,
        memory: options.memory,
        timeout: options.timeout,
        description: format!("{DESCRIPTION_PREFIX}{}", env!("CARGO_PKG_VERSION")),
    };
    let final_config = match existing {
        None => {
            let image = image.ok_or_else(|| FunctionError::NoImage {
                name: name.to_string(),
            })?;
            create(config, &change, &image, out).await?
        }
        Some(_) => update(&change, image.as_deref(), out).await?,
    };
    print_summary(&lambda, name, &final_config, out).await
}

/// Creates the function at `image`, with the defaults for what `change` leaves unset, and
/// waits until it is active.
async fn create(
    config: &Config,
    change: &Change<'_>,
    image: &str,
    out: &mut dyn Write,
) -> Result<FunctionConfiguration, FunctionError> {
    let Change { lambda, name, .. } = *change;
    let role = config.execution_role();
    if role.is_empty() {
        return Err(FunctionError::NoRole);
    }
    let memory = change.memory.unwrap_or(DEFAULT_MEMORY_MB);
    let timeout = change.timeout.unwrap_or(DEFAULT_TIMEOUT);
    // A role bootstrap has just made takes a few seconds to reach Lambda, which until then
    // says it "cannot be assumed": that one error is waited out.
    wait_for::<_, FunctionError, _, _>(
        &format!("Lambda to accept role {role}"),
        ROLE_PROPAGATION,
        || async {
            let created = lambda
                .create_function()
                .function_name(name)
                .package_type(PackageType::Image)
                .code(FunctionCode::builder().image_uri(image).build())
                .role(&role)
                .memory_size(memory)
                .timeout(timeout.as_secs() as i32)
                .architectures(lambda_arch(change.arch))
                .description(&change.description)
                .send()
                .await;
            match created {
                Ok(_) => Ok(Some(())),
                Err(e) if sdk_error(&e).contains("cannot be assumed") => Ok(None),
                Err(e) => Err(FunctionError::request(
                    "creating function",
                    name,
                    sdk_error(&e),
                )),
            }
        },
    )
    .await?;
    writeln!(
        out,
        "function {name}: created; waiting for it to become active"
    )?;
    settled(lambda, name).await
}

/// Points the function at `image` (`None`: keeps its image), then changes the settings that
/// differ, waiting for Lambda after each step.
async fn update(
    change: &Change<'_>,
    image: Option<&str>,
    out: &mut dyn Write,
) -> Result<FunctionConfiguration, FunctionError> {
    let Change { lambda, name, .. } = *change;
    if let Some(image) = image {
        settled(lambda, name).await?;
        retry_conflicts(name, "image", || async {
            lambda
                .update_function_code()
                .function_name(name)
                .image_uri(image)
                .architectures(lambda_arch(change.arch))
                .send()
                .await
                .map(drop)
                .map_err(|e| (error_code(&e).map(str::to_string), sdk_error(&e)))
        })
        .await?;
        writeln!(
            out,
            "function {name}: image updated; waiting for Lambda to apply it"
        )?;
    }
    let current = settled(lambda, name).await?;
    let memory = change.memory.filter(|m| Some(*m) != current.memory_size());
    let timeout = change
        .timeout
        .map(|t| t.as_secs() as i32)
        .filter(|t| Some(*t) != current.timeout());
    let describe = (current.description() != Some(change.description.as_str()) && image.is_some())
        .then_some(change.description.as_str());
    if memory.is_none() && timeout.is_none() && describe.is_none() {
        if image.is_none() {
            writeln!(out, "function {name}: nothing to change")?;
        }
        return Ok(current);
    }
    retry_conflicts(name, "settings", || async {
        lambda
            .update_function_configuration()
            .function_name(name)
            .set_memory_size(memory)
            .set_timeout(timeout)
            .set_description(describe.map(str::to_string))
            .send()
            .await
            .map(drop)
            .map_err(|e| (error_code(&e).map(str::to_string), sdk_error(&e)))
    })
    .await?;
    writeln!(out, "function {name}: settings updated")?;
    settled(lambda, name).await
}

/// The line saying what the function is now.
async fn print_summary(
    lambda: &Client,
    name: &str,
    final_config: &FunctionConfiguration,
    out: &mut dyn Write,
) -> Result<(), FunctionError> {
    let code = lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(|e| FunctionError::request("reading function", name, sdk_error(&e)))?;
    writeln!(
        out,
        "function {name}: active, {} MB, {} s, {}, image {}",
        final_config.memory_size().unwrap_or_default(),
        final_config.timeout().unwrap_or_default(),
        final_config
            .architectures()
            .first()
            .map(|a| a.as_str())
            .unwrap_or("x86_64"),
        code.code()
            .and_then(|c| c.image_uri())
            .unwrap_or("(unknown)")
    )?;
    Ok(())
}

/// The function's configuration, or `None` when there is no such function.
async fn function(
    lambda: &Client,
    name: &str,
) -> Result<Option<FunctionConfiguration>, FunctionError> {
    match lambda.get_function().function_name(name).send().await {
        Ok(f) => Ok(Some(f.configuration().cloned().unwrap_or_else(|| {
            FunctionConfiguration::builder().function_name(name).build()
        }))),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(FunctionError::request(
            "reading function",
            name,
            sdk_error(&e),
        )),
    }
}

/// Waits until the function is active and its last update finished; a failed one is an error
/// carrying Lambda's reason.
async fn settled(lambda: &Client, name: &str) -> Result<FunctionConfiguration, FunctionError> {
    wait_for::<_, FunctionError, _, _>(
        &format!("function {name} to become active"),
        UPDATE_DEADLINE,
        || async {
            let Some(f) = function(lambda, name).await? else {
                return Err(FunctionError::Deleted {
                    name: name.to_string(),
                });
            };
            if f.state() == Some(&State::Failed) {
                return Err(FunctionError::Failed {
                    name: name.to_string(),
                    reason: f
                        .state_reason()
                        .unwrap_or("Lambda gave no reason")
                        .to_string(),
                });
            }
            if f.last_update_status() == Some(&LastUpdateStatus::Failed) {
                return Err(FunctionError::UpdateFailed {
                    name: name.to_string(),
                    reason: f
                        .last_update_status_reason()
                        .unwrap_or("Lambda gave no reason")
                        .to_string(),
                });
            }
            let active = matches!(f.state(), None | Some(State::Active | State::Inactive));
            let updated = matches!(
                f.last_update_status(),
                None | Some(LastUpdateStatus::Successful)
            );
            Ok((active && updated).then_some(f))
        },
    )
    .await
}

/// Calls `op`, an update of the function's `what`, again while Lambda says another update is
/// in progress.
async fn retry_conflicts<F, Fut>(
    name: &str,
    what: &'static str,
    mut op: F,
) -> Result<(), FunctionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Option<String>, String)>>,
{
    // The probe's `Some(Err(message))` is Lambda refusing for another reason: it ends the
    // wait without being retried.
    let outcome = wait_for::<_, GaveUp, _, _>(
        &format!("function {name} to accept the update"),
        UPDATE_DEADLINE,
        || {
            let call = op();
            async move {
                match call.await {
                    Ok(()) => Ok(Some(Ok(()))),
                    Err((Some(code), _)) if code == "ResourceConflictException" => Ok(None),
                    Err((_, message)) => Ok(Some(Err(message))),
                }
            }
        },
    )
    .await;
    let message = match outcome {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(message)) => message,
        Err(gave_up) => gave_up.to_string(),
    };
    Err(FunctionError::Update {
        what,
        name: name.to_string(),
        message,
    })
}

fn lambda_arch(arch: Arch) -> Architecture {
    match arch {
        Arch::X86_64 => Architecture::X8664,
        Arch::Arm64 => Architecture::Arm64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded_as_lambda_bounds_them() {
        assert_eq!(parse_timeout("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("15m").unwrap(), MAX_TIMEOUT);
        assert!(parse_timeout("16m").is_err());
        assert!(parse_timeout("0s").is_err());
    }
}
