//! `llama update-function`: creates or updates an image-packaged Lambda function.
//!
//! The image comes from `--base` (llama adds its runtime to any image, no builder needed),
//! `--build` (a local container builder) or `--tag` (already pushed); the function always
//! names it by digest. Lambda refuses a change while the previous one is in progress, so
//! each step waits until the function is active and its last update finished.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use aws_sdk_lambda::Client;
use aws_sdk_lambda::types::{
    Architecture, FunctionCode, FunctionConfiguration, LastUpdateStatus, PackageType, State,
};
use llama_core::Config;

use llama_aws::aws_setup::{self, error_code, sdk_error, wait_for};
use llama_aws::{Arch, oci_image};

use crate::cli::UpdateFunctionArgs;

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

/// Runs `llama update-function`.
pub fn run(config: &Config, args: &UpdateFunctionArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(update_function(config, args, out))
}

/// Where the image comes from.
enum Source<'a> {
    Base(&'a str),
    Build(&'a Path),
    Tag(&'a str),
    Keep,
}

/// Where the image comes from: a flag, else the default base for a new function, else
/// the image the function has.
fn image_source(args: &UpdateFunctionArgs, exists: bool) -> Source<'_> {
    match (&args.base, &args.build, &args.tag) {
        (Some(base), _, _) => Source::Base(base),
        (_, Some(dir), _) => Source::Build(dir),
        (_, _, Some(tag)) => Source::Tag(tag),
        (None, None, None) if !exists => Source::Base(DEFAULT_BASE),
        (None, None, None) => Source::Keep,
    }
}

/// `--arch`, else the function's own, else x86_64.
fn arch_of(args: &UpdateFunctionArgs, existing: Option<&FunctionConfiguration>) -> Arch {
    args.arch.map(Arch::from).unwrap_or_else(|| {
        existing
            .and_then(|f| f.architectures().first())
            .map(|a| match a {
                Architecture::Arm64 => Arch::Arm64,
                _ => Arch::X86_64,
            })
            .unwrap_or(Arch::X86_64)
    })
}

async fn update_function(
    config: &Config,
    args: &UpdateFunctionArgs,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let name = args.name.as_str();
    let timeout = args.timeout.as_deref().map(parse_timeout).transpose()?;
    let sdk = aws_setup::sdk_config(config).await?;
    let lambda = Client::new(&sdk);
    let existing = function(&lambda, name).await?;
    if existing.is_none() && !args.create {
        bail!(
            "function {name} does not exist in {}: add --create to create it",
            aws_setup::region_of(&sdk)
        );
    }
    let source = image_source(args, existing.is_some());
    let arch = arch_of(args, existing.as_ref());

    let image = image_for(config, args, &sdk, source, arch, out).await?;
    if let Some(image) = &image {
        writeln!(out, "image: {image}")?;
    }

    let description = format!("{DESCRIPTION_PREFIX}{}", env!("CARGO_PKG_VERSION"));
    let final_config = match existing {
        None => {
            let image = image.context("a new function needs an image")?;
            let role = config.execution_role();
            if role.is_empty() {
                bail!(
                    "execution_role is not set, so the function would have no role to run as: run `llama bootstrap` first"
                );
            }
            let memory = args.memory.unwrap_or(DEFAULT_MEMORY_MB);
            let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
            // A role bootstrap has just made takes a few seconds to reach Lambda, which
            // until then says it "cannot be assumed": that one error is waited out.
            wait_for::<_, anyhow::Error, _, _>(
                &format!("Lambda to accept role {role}"),
                ROLE_PROPAGATION,
                || async {
                    let created = lambda
                        .create_function()
                        .function_name(name)
                        .package_type(PackageType::Image)
                        .code(FunctionCode::builder().image_uri(&image).build())
                        .role(&role)
                        .memory_size(memory)
                        .timeout(timeout.as_secs() as i32)
                        .architectures(lambda_arch(arch))
                        .description(&description)
                        .send()
                        .await;
                    match created {
                        Ok(_) => Ok(Some(())),
                        Err(e) if sdk_error(&e).contains("cannot be assumed") => Ok(None),
                        Err(e) => bail!("creating function {name}: {}", sdk_error(&e)),
                    }
                },
            )
            .await?;
            writeln!(
                out,
                "function {name}: created; waiting for it to become active"
            )?;
            settled(&lambda, name).await?
        }
        Some(_) => {
            if let Some(image) = &image {
                settled(&lambda, name).await?;
                retry_conflicts(name, || async {
                    lambda
                        .update_function_code()
                        .function_name(name)
                        .image_uri(image)
                        .architectures(lambda_arch(arch))
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| (error_code(&e).map(str::to_string), sdk_error(&e)))
                })
                .await
                .with_context(|| format!("updating the image of function {name}"))?;
                writeln!(
                    out,
                    "function {name}: image updated; waiting for Lambda to apply it"
                )?;
            }
            let current = settled(&lambda, name).await?;
            let memory = args.memory.filter(|m| Some(*m) != current.memory_size());
            let timeout = timeout
                .map(|t| t.as_secs() as i32)
                .filter(|t| Some(*t) != current.timeout());
            let describe = (current.description() != Some(description.as_str()) && image.is_some())
                .then_some(description.as_str());
            if memory.is_some() || timeout.is_some() || describe.is_some() {
                retry_conflicts(name, || async {
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
                .await
                .with_context(|| format!("updating the settings of function {name}"))?;
                writeln!(out, "function {name}: settings updated")?;
                settled(&lambda, name).await?
            } else {
                if image.is_none() {
                    writeln!(out, "function {name}: nothing to change")?;
                }
                current
            }
        }
    };
    print_summary(&lambda, name, &final_config, out).await?;
    Ok(0)
}

/// The image the function should run, made or found as `source` says: `None` to keep
/// the one it has.
async fn image_for(
    config: &Config,
    args: &UpdateFunctionArgs,
    sdk: &aws_config::SdkConfig,
    source: Source<'_>,
    arch: Arch,
    out: &mut dyn Write,
) -> anyhow::Result<Option<String>> {
    let name = args.name.as_str();
    Ok(match source {
        Source::Keep => None,
        Source::Base(base) => {
            let base = &through_mirror(base, &config.registry_mirror());
            let repository = image_repository(config)?;
            let runtime = runtime_binary(args.runtime.as_deref(), arch)?;
            writeln!(
                out,
                "image: {base} + {} → {repository}:{name}",
                runtime.display()
            )?;
            let target_auth = registry_auth(sdk, &repository).await?;
            let spec = oci_image::ImageSpec {
                base: base.to_string(),
                base_auth: oci_image::RegistryAuth::Anonymous,
                repository: repository.clone(),
                tag: name.to_string(),
                target_auth,
                architecture: arch,
                runtime,
                insecure_registries: insecure_registries(&[base, &repository]),
            };
            // Progress goes to stderr, as a registry client's does: stdout keeps the result.
            let pushed =
                oci_image::push_runtime_image(&spec, &mut |step| eprintln!("  {step}")).await?;
            Some(pushed.reference)
        }
        Source::Build(dir) => {
            let repository = image_repository(config)?;
            let auth = registry_auth(sdk, &repository).await?;
            let tagged = format!("{repository}:{name}");
            build_and_push(dir, &tagged, &auth, out)?;
            Some(by_digest(&tagged, &auth).await?)
        }
        Source::Tag(tag) => {
            let auth = registry_auth(sdk, tag).await?;
            Some(by_digest(tag, &auth).await?)
        }
    })
}

/// The line saying what the function is now.
async fn print_summary(
    lambda: &Client,
    name: &str,
    final_config: &FunctionConfiguration,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let code = lambda
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading function {name}: {}", sdk_error(&e)))?;
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
pub async fn function(
    lambda: &Client,
    name: &str,
) -> anyhow::Result<Option<FunctionConfiguration>> {
    match lambda.get_function().function_name(name).send().await {
        Ok(f) => Ok(Some(f.configuration().cloned().unwrap_or_else(|| {
            FunctionConfiguration::builder().function_name(name).build()
        }))),
        Err(e) if error_code(&e) == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => bail!("reading function {name}: {}", sdk_error(&e)),
    }
}

/// Waits until the function is active and its last update finished; a failed one is an error
/// carrying Lambda's reason.
async fn settled(lambda: &Client, name: &str) -> anyhow::Result<FunctionConfiguration> {
    wait_for::<_, anyhow::Error, _, _>(
        &format!("function {name} to become active"),
        UPDATE_DEADLINE,
        || async {
            let Some(f) = function(lambda, name).await? else {
                bail!("function {name} was deleted while llama waited for it");
            };
            if f.state() == Some(&State::Failed) {
                bail!(
                    "function {name} failed: {}",
                    f.state_reason().unwrap_or("Lambda gave no reason")
                );
            }
            if f.last_update_status() == Some(&LastUpdateStatus::Failed) {
                bail!(
                    "the last update of function {name} failed: {}",
                    f.last_update_status_reason()
                        .unwrap_or("Lambda gave no reason")
                );
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

/// Calls `op` again while Lambda says another update is in progress.
async fn retry_conflicts<F, Fut>(name: &str, mut op: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), (Option<String>, String)>>,
{
    wait_for::<_, anyhow::Error, _, _>(
        &format!("function {name} to accept the update"),
        UPDATE_DEADLINE,
        || {
            let call = op();
            async move {
                match call.await {
                    Ok(()) => Ok(Some(())),
                    Err((Some(code), _)) if code == "ResourceConflictException" => Ok(None),
                    Err((_, message)) => bail!("{message}"),
                }
            }
        },
    )
    .await
}

fn image_repository(config: &Config) -> anyhow::Result<String> {
    let repository = config.image_repository();
    if repository.is_empty() {
        bail!(
            "image_repository is not set, so there is nowhere to push the function's image: \
             run `llama bootstrap` (or set LLAMA_IMAGE_REPOSITORY=REGISTRY/REPOSITORY)"
        );
    }
    Ok(repository)
}

/// `--runtime`, else `llama-runtime` beside this `llama`; it must be built for `arch`.
fn runtime_binary(given: Option<&Path>, arch: Arch) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locating the llama binary")?;
            exe.with_file_name("llama-runtime")
        }
    };
    let header = std::fs::read(&path)
        .map(|bytes| bytes.into_iter().take(20).collect::<Vec<u8>>())
        .with_context(|| {
            format!(
                "reading the runtime {} to put in the image: install it beside llama \
                 (cargo install --locked --path crates/llama-runtime, from llama's source) \
                 or pass --runtime PATH",
                path.display()
            )
        })?;
    let machine = elf_machine(&header)
        .with_context(|| format!("{} is not an ELF executable", path.display()))?;
    let (wanted, label) = match arch {
        Arch::X86_64 => (62, "x86_64"),
        Arch::Arm64 => (183, "aarch64"),
    };
    if machine != wanted {
        bail!(
            "{} is not built for {label} (the function's architecture): pass --runtime with an {label} build of llama-runtime, or choose --arch to match",
            path.display()
        );
    }
    Ok(path)
}

/// The `e_machine` field of a little-endian ELF header.
fn elf_machine(header: &[u8]) -> Option<u16> {
    (header.len() >= 20 && header.starts_with(b"\x7fELF") && header[5] == 1)
        .then(|| u16::from_le_bytes([header[18], header[19]]))
}

fn lambda_arch(arch: Arch) -> Architecture {
    match arch {
        Arch::X86_64 => Architecture::X8664,
        Arch::Arm64 => Architecture::Arm64,
    }
}

/// 1 to 900 seconds, as Lambda allows.
fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    let parsed = humantime::parse_duration(text.trim())
        .ok()
        .filter(|d| d.as_secs() >= 1 && *d <= MAX_TIMEOUT);
    parsed.with_context(|| format!("--timeout {text:?}: expected 1s to 15m, e.g. 60s or 5m"))
}

/// The registry of an image reference (`HOST[:PORT]/...`), or Docker Hub's.
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// A Docker Hub reference rewritten to the mirror's copy (`debian:bookworm-slim` →
/// `MIRROR/library/debian:bookworm-slim`), as Docker's `registry-mirrors` does; other
/// registries' references are left alone.
fn through_mirror(image: &str, mirror: &str) -> String {
    if mirror.is_empty() || registry_of(image) != "docker.io" {
        return image.to_string();
    }
    let path = image.strip_prefix("docker.io/").unwrap_or(image);
    if path.contains('/') {
        format!("{mirror}/{path}")
    } else {
        format!("{mirror}/library/{path}")
    }
}

/// Registries spoken to over plain HTTP: only those on this machine.
fn insecure_registries(images: &[&str]) -> Vec<String> {
    let mut hosts: Vec<String> = images
        .iter()
        .map(|i| registry_of(i))
        .filter(|r| {
            let host = r.rsplit_once(':').map_or(*r, |(h, _)| h);
            matches!(host, "127.0.0.1" | "localhost" | "[::1]")
        })
        .map(str::to_string)
        .collect();
    hosts.dedup();
    hosts
}

/// ECR's registries want a token from GetAuthorizationToken; other registries are used
/// anonymously.
async fn registry_auth(
    sdk: &aws_config::SdkConfig,
    image: &str,
) -> anyhow::Result<oci_client::secrets::RegistryAuth> {
    use base64::Engine as _;
    let registry = registry_of(image);
    if !(registry.contains(".dkr.ecr.") && registry.contains(".amazonaws.com")) {
        return Ok(oci_client::secrets::RegistryAuth::Anonymous);
    }
    let ecr = aws_sdk_ecr::Client::new(sdk);
    let token = ecr.get_authorization_token().send().await.map_err(|e| {
        anyhow::anyhow!("getting a token for {registry} from ECR: {}", sdk_error(&e))
    })?;
    let encoded = token
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .with_context(|| format!("ECR returned no token for {registry}"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .with_context(|| format!("ECR's token for {registry} is not base64 of USER:PASSWORD"))?;
    let (user, password) = decoded
        .split_once(':')
        .with_context(|| format!("ECR's token for {registry} is not USER:PASSWORD"))?;
    Ok(oci_client::secrets::RegistryAuth::Basic(
        user.to_string(),
        password.to_string(),
    ))
}

/// `image` as `REPOSITORY@sha256:...`, asking its registry when it is given by tag.
async fn by_digest(
    image: &str,
    auth: &oci_client::secrets::RegistryAuth,
) -> anyhow::Result<String> {
    if image.contains("@sha256:") {
        return Ok(image.to_string());
    }
    let reference: oci_client::Reference = image.parse().with_context(|| {
        format!("{image:?} is not an image reference (REGISTRY/REPOSITORY:TAG)")
    })?;
    let protocol = match insecure_registries(&[image]).as_slice() {
        [] => oci_client::client::ClientProtocol::Https,
        hosts => oci_client::client::ClientProtocol::HttpsExcept(hosts.to_vec()),
    };
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol,
        ..Default::default()
    });
    let digest = client
        .fetch_manifest_digest(&reference, auth)
        .await
        .with_context(|| format!("looking up the digest of {image} in its registry"))?;
    let repository = image
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(image, |(repo, _)| repo);
    Ok(format!("{repository}@{digest}"))
}

/// The container builders llama knows, each with the command that shows it works.
const BUILDERS: &[(&str, &[&str])] = &[
    ("docker", &["version", "--format", "{{.Server.Version}}"]),
    ("podman", &["info", "--format", "{{.Host.Arch}}"]),
    ("buildah", &["version"]),
];

/// Builds `dir` with the first working builder and pushes it as `tagged`.
fn build_and_push(
    dir: &Path,
    tagged: &str,
    auth: &oci_client::secrets::RegistryAuth,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if !dir.join("Dockerfile").is_file() && !dir.join("Containerfile").is_file() {
        bail!(
            "--build {}: no Dockerfile or Containerfile there",
            dir.display()
        );
    }
    let mut tried = Vec::new();
    let builder = BUILDERS.iter().find_map(|(tool, probe)| {
        match std::process::Command::new(tool)
            .args(*probe)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => Some(*tool),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                let why = why
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("it failed");
                tried.push(format!("{tool}: {}", why.trim()));
                None
            }
            Err(_) => {
                tried.push(format!("{tool}: not installed"));
                None
            }
        }
    });
    let Some(builder) = builder else {
        bail!(
            "--build needs a container builder and none works here ({}); use --base IMAGE instead, \
             which adds llama-runtime to an image without any builder",
            tried.join("; ")
        );
    };
    let run = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<()> {
        let mut child = std::process::Command::new(builder)
            .args(args)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .with_context(|| format!("running {builder}"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`{builder} {}` failed ({status})", args.join(" "));
        }
        Ok(())
    };
    writeln!(out, "building {} with {builder}", dir.display())?;
    let dir_arg = dir.to_string_lossy();
    match builder {
        "buildah" => run(&["bud", "-t", tagged, &dir_arg], None)?,
        _ => run(&["build", "-t", tagged, &dir_arg], None)?,
    }
    if let oci_client::secrets::RegistryAuth::Basic(user, password) = auth {
        run(
            &[
                "login",
                "--username",
                user,
                "--password-stdin",
                registry_of(tagged),
            ],
            Some(password),
        )?;
    }
    run(&["push", tagged], None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_plain_http() {
        assert_eq!(registry_of("debian:bookworm-slim"), "docker.io");
        assert_eq!(registry_of("library/debian"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/llama:fn"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("1.dkr.ecr.us-east-1.amazonaws.com/llama"),
            "1.dkr.ecr.us-east-1.amazonaws.com"
        );
        assert_eq!(
            insecure_registries(&["127.0.0.1:5000/base:1", "localhost:9/x", "docker.io/x"]),
            ["127.0.0.1:5000", "localhost:9"]
        );
    }

    #[test]
    fn docker_hub_through_a_mirror() {
        assert_eq!(
            through_mirror("debian:bookworm-slim", ""),
            "debian:bookworm-slim"
        );
        assert_eq!(
            through_mirror("debian:bookworm-slim", "127.0.0.1:5000"),
            "127.0.0.1:5000/library/debian:bookworm-slim"
        );
        assert_eq!(
            through_mirror("docker.io/amazon/aws-lambda-provided:al2023", "m.io"),
            "m.io/amazon/aws-lambda-provided:al2023"
        );
        assert_eq!(
            through_mirror("public.ecr.aws/debian/debian:12", "m.io"),
            "public.ecr.aws/debian/debian:12"
        );
    }

    #[test]
    fn timeouts_are_bounded_as_lambda_bounds_them() {
        assert_eq!(parse_timeout("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout("15m").unwrap(), MAX_TIMEOUT);
        assert!(parse_timeout("16m").is_err());
        assert!(parse_timeout("0s").is_err());
    }

    #[test]
    fn elf_machine_of_this_binary() {
        let exe = std::env::current_exe().unwrap();
        let header: Vec<u8> = std::fs::read(exe).unwrap().into_iter().take(20).collect();
        assert_eq!(elf_machine(&header), Some(62));
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
    }
}
