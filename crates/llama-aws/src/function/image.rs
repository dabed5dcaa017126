//! The function's image: where it comes from (`--base`, `--build`, `--tag`, or the one the
//! function has), the registries it goes through, and the digest the function names.

use std::io::Write;
use std::path::{Path, PathBuf};

use llama_core::Config;
use oci_client::secrets::RegistryAuth;

use super::{DEFAULT_BASE, FunctionError, ImageSource, UpdateFunctionOptions};
use crate::aws_setup::sdk_error;
use crate::{Arch, oci_image};

/// Where the image comes from, once the default is decided.
pub(super) enum Source<'a> {
    Base(&'a str),
    Build(&'a Path),
    Tag(&'a str),
    Keep,
}

/// Where the image comes from: as given, else the default base for a new function, else
/// the image the function has.
pub(super) fn image_source(given: Option<&ImageSource>, exists: bool) -> Source<'_> {
    match given {
        Some(ImageSource::Base(base)) => Source::Base(base),
        Some(ImageSource::Build(dir)) => Source::Build(dir),
        Some(ImageSource::Tag(tag)) => Source::Tag(tag),
        None if !exists => Source::Base(DEFAULT_BASE),
        None => Source::Keep,
    }
}

/// The image the function should run, made or found as `source` says: `None` to keep
/// the one it has.
pub(super) async fn image_for(
    config: &Config,
    options: &UpdateFunctionOptions,
    sdk: &aws_config::SdkConfig,
    source: Source<'_>,
    arch: Arch,
    out: &mut dyn Write,
) -> Result<Option<String>, FunctionError> {
    let name = options.name.as_str();
    Ok(match source {
        Source::Keep => None,
        Source::Base(base) => {
            let base = &through_mirror(base, &config.registry_mirror());
            let repository = image_repository(config)?;
            let runtime = runtime_binary(options.runtime.as_deref(), arch)?;
            writeln!(
                out,
                "image: {base} + {} → {repository}:{name}",
                runtime.display()
            )?;
            let target_auth = registry_auth(sdk, &repository).await?;
            let spec = oci_image::ImageSpec {
                base: base.to_string(),
                base_auth: RegistryAuth::Anonymous,
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

fn image_repository(config: &Config) -> Result<String, FunctionError> {
    let repository = config.image_repository();
    if repository.is_empty() {
        return Err(FunctionError::NoRepository);
    }
    Ok(repository)
}

/// `--runtime`, else `llama-runtime` beside the running program; it must be built for
/// `arch`.
fn runtime_binary(given: Option<&Path>, arch: Arch) -> Result<PathBuf, FunctionError> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe().map_err(FunctionError::NoExe)?;
            exe.with_file_name("llama-runtime")
        }
    };
    let header = match std::fs::read(&path) {
        Ok(bytes) => bytes.into_iter().take(20).collect::<Vec<u8>>(),
        Err(source) => return Err(FunctionError::RuntimeUnreadable { path, source }),
    };
    let Some(machine) = elf_machine(&header) else {
        return Err(FunctionError::NotElf { path });
    };
    let (wanted, label) = match arch {
        Arch::X86_64 => (62, "x86_64"),
        Arch::Arm64 => (183, "aarch64"),
    };
    if machine != wanted {
        return Err(FunctionError::WrongArch { path, label });
    }
    Ok(path)
}

/// The `e_machine` field of a little-endian ELF header.
fn elf_machine(header: &[u8]) -> Option<u16> {
    (header.len() >= 20 && header.starts_with(b"\x7fELF") && header[5] == 1)
        .then(|| u16::from_le_bytes([header[18], header[19]]))
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
) -> Result<RegistryAuth, FunctionError> {
    use base64::Engine as _;
    let registry = registry_of(image);
    if !(registry.contains(".dkr.ecr.") && registry.contains(".amazonaws.com")) {
        return Ok(RegistryAuth::Anonymous);
    }
    let ecr = aws_sdk_ecr::Client::new(sdk);
    let token = ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| FunctionError::Token {
            registry: registry.to_string(),
            message: sdk_error(&e),
        })?;
    let encoded = token
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or_else(|| FunctionError::TokenMissing {
            registry: registry.to_string(),
        })?;
    let malformed = |expected| FunctionError::TokenMalformed {
        registry: registry.to_string(),
        expected,
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| malformed("base64 of USER:PASSWORD"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| malformed("USER:PASSWORD"))?;
    Ok(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

/// `image` as `REPOSITORY@sha256:...`, asking its registry when it is given by tag.
async fn by_digest(image: &str, auth: &RegistryAuth) -> Result<String, FunctionError> {
    if image.contains("@sha256:") {
        return Ok(image.to_string());
    }
    let reference: oci_client::Reference =
        image
            .parse()
            .map_err(|source| FunctionError::BadReference {
                image: image.to_string(),
                source,
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
        .map_err(|source| FunctionError::Digest {
            image: image.to_string(),
            source,
        })?;
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

/// The first builder of [`BUILDERS`] that works here; else an error saying why each did not.
fn find_builder() -> Result<&'static str, FunctionError> {
    let mut tried = Vec::new();
    for (tool, probe) in BUILDERS {
        match std::process::Command::new(tool)
            .args(*probe)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => return Ok(tool),
            Ok(o) => {
                let why = String::from_utf8_lossy(&o.stderr);
                let why = why
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("it failed");
                tried.push(format!("{tool}: {}", why.trim()));
            }
            Err(_) => tried.push(format!("{tool}: not installed")),
        }
    }
    Err(FunctionError::NoBuilder {
        tried: tried.join("; "),
    })
}

/// Runs `builder ARGS`, feeding it `stdin` when given; its output goes to the terminal.
fn run_builder(
    builder: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), FunctionError> {
    let failed = |source| FunctionError::Builder { builder, source };
    let mut child = std::process::Command::new(builder)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .map_err(failed)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(failed)?;
    }
    let status = child.wait().map_err(failed)?;
    if !status.success() {
        return Err(FunctionError::BuilderFailed {
            builder,
            args: args.join(" "),
            status,
        });
    }
    Ok(())
}

/// Builds `dir` with the first working builder and pushes it as `tagged`.
fn build_and_push(
    dir: &Path,
    tagged: &str,
    auth: &RegistryAuth,
    out: &mut dyn Write,
) -> Result<(), FunctionError> {
    if !dir.join("Dockerfile").is_file() && !dir.join("Containerfile").is_file() {
        return Err(FunctionError::NoDockerfile {
            dir: dir.to_path_buf(),
        });
    }
    let builder = find_builder()?;
    writeln!(out, "building {} with {builder}", dir.display())?;
    let dir_arg = dir.to_string_lossy();
    match builder {
        "buildah" => run_builder(builder, &["bud", "-t", tagged, &dir_arg], None)?,
        _ => run_builder(builder, &["build", "-t", tagged, &dir_arg], None)?,
    }
    if let RegistryAuth::Basic(user, password) = auth {
        run_builder(
            builder,
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
    run_builder(builder, &["push", tagged], None)
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
    fn elf_machine_of_this_binary() {
        let exe = std::env::current_exe().unwrap();
        let header: Vec<u8> = std::fs::read(exe).unwrap().into_iter().take(20).collect();
        assert_eq!(elf_machine(&header), Some(62));
        assert_eq!(elf_machine(b"#!/bin/sh\n"), None);
    }
}
