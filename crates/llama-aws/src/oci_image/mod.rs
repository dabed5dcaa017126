//! Assembles a Lambda image from a base image plus `llama-runtime` and pushes it through the OCI distribution API (no container builder needed).
//!
//! The image is the base image's manifest for `linux/<arch>` with one more layer, holding
//! [`RUNTIME_PATH`], and a config whose entrypoint is that binary. Nothing is built or run
//! locally: the base's layers go from its registry to the target repository (or are found
//! there already, or mounted from another repository of the same registry), the new layer
//! and config are uploaded, and the manifest is tagged. The caller then refers to the
//! function's image by the digest it gets back, never by the tag.
//!
//! Every output is deterministic: the same base and the same `llama-runtime` give the same
//! layer, config and manifest bytes, hence the same digest, and a second push uploads
//! nothing.
//!
//! All registry traffic goes through `oci-client`. Its quirks that shape this module:
//!
//! - Only the calls that take a [`RegistryAuth`] remember it; the blob calls send nothing
//!   unless the credentials were stored first ([`Client::store_auth_if_needed`]), and a
//!   client keeps one set of credentials per registry. So there is one client for the base
//!   and one for the target, each told its credentials before its first request.
//! - Chunked uploads send 4 MiB `PATCH`es and insist on `202 Accepted`; ECR wants parts of at
//!   least 5 MB and answers `201`. Every upload here is therefore monolithic (one `PUT`).
//!   A base layer that must be copied streams from one registry to the other and is never
//!   held in memory; the only layer in memory is the new one.
//! - A cross-repository mount that the registry declines is answered `202` with a fresh
//!   upload session, which `mount_blob` reports as an error; it then falls back to a copy.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use llama_core::{Digest, HashingWriter};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;

use crate::Arch;

mod layer;
mod manifest;
mod registry;
#[cfg(test)]
mod tests;

use layer::*;
use manifest::*;
use registry::*;

pub use oci_client::secrets::RegistryAuth;

/// Where the new layer puts `llama-runtime`, and the image's entrypoint.
pub const RUNTIME_PATH: &str = "/usr/local/bin/llama-runtime";

/// The manifest media types asked for when pulling the base.
const MANIFEST_MEDIA_TYPES: &[&str] = &[
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The name image configs and indexes give an architecture (`amd64`, `arm64`).
pub fn oci_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
    }
}

/// What to build and where to push it.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The base image: `debian:bookworm-slim`, `127.0.0.1:5000/base:1`, `REPO@sha256:...`.
    /// An image index (multi-platform image) is narrowed to `linux/<architecture>`.
    pub base: String,
    /// Credentials for the base's registry.
    pub base_auth: RegistryAuth,
    /// The repository to push to, without a tag:
    /// `123456789012.dkr.ecr.us-east-1.amazonaws.com/llama`, `127.0.0.1:5000/llama`.
    pub repository: String,
    /// The tag to push the manifest under (the function's name, say).
    pub tag: String,
    /// Credentials for the target repository's registry (ECR: user `AWS` and the password
    /// `GetAuthorizationToken` returns).
    pub target_auth: RegistryAuth,
    /// The architecture of the function, and of `runtime`.
    pub architecture: Arch,
    /// The `llama-runtime` binary to put in the image.
    pub runtime: PathBuf,
    /// Registries spoken to over plain HTTP, spelled as in the references (`127.0.0.1:5000`).
    pub insecure_registries: Vec<String>,
}

/// The image as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// The repository, registry included: `127.0.0.1:5000/llama`.
    pub repository: String,
    /// The manifest's digest, `sha256:...`: the hash of the exact bytes pushed.
    pub digest: String,
    /// `REPOSITORY@DIGEST`, what a Lambda function's image URI should be.
    pub reference: String,
}

/// A gzip'd tar layer and its two names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed layer, as pushed.
    pub data: Vec<u8>,
    /// `sha256:...` of `data`: the layer's name in the manifest.
    pub digest: String,
    /// `sha256:...` of the uncompressed tar: its name in the config's `rootfs.diff_ids`.
    pub diff_id: String,
}

/// One step of [`push_runtime_image`], reported before the step's transfer starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The base's manifest for the requested platform was found.
    Base {
        /// The base as given.
        reference: String,
        /// Its platform manifest's digest.
        digest: String,
    },
    /// A layer or the config is about to reach the target repository.
    Blob {
        /// `layer 2/3` or `config`.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// How it gets there.
        transfer: Transfer,
    },
    /// The manifest is about to be tagged.
    Manifest {
        /// `REPOSITORY:TAG`.
        reference: String,
        /// [`Transfer::Present`] when the tag already names this manifest.
        transfer: Transfer,
    },
}

/// How a blob reaches the target repository.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transfer {
    /// It is there already: nothing is sent.
    Present,
    /// Mounted from the base's repository on the same registry: nothing is sent.
    Mount {
        /// The repository it comes from.
        from: String,
    },
    /// Streamed from the base's registry.
    Copy {
        /// The repository it comes from.
        from: String,
    },
    /// Uploaded from this machine.
    Upload,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Base { reference, digest } => write!(f, "base image {reference} is {digest}"),
            Progress::Blob {
                name,
                size,
                transfer,
            } => {
                let size = megabytes(*size);
                match transfer {
                    Transfer::Present => write!(f, "{name} ({size}) is already there"),
                    Transfer::Mount { from } => write!(f, "mounting {name} ({size}) from {from}"),
                    Transfer::Copy { from } => write!(f, "copying {name} ({size}) from {from}"),
                    Transfer::Upload => write!(f, "uploading {name} ({size})"),
                }
            }
            Progress::Manifest {
                reference,
                transfer: Transfer::Present,
            } => write!(f, "{reference} is already this image"),
            Progress::Manifest { reference, .. } => write!(f, "tagging {reference}"),
        }
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// Why an image could not be built or pushed; each message names the image, registry or file
/// and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The base or the target is not a valid reference.
    #[error("{what} {reference:?} is not a valid image reference ({why}); {expected}")]
    BadReference {
        /// "base image" or "target repository".
        what: &'static str,
        /// As given.
        reference: String,
        /// The parser's complaint.
        why: String,
        /// What a valid one looks like.
        expected: &'static str,
    },
    /// The `llama-runtime` binary could not be read.
    #[error(
        "cannot read the llama-runtime binary {path}: {error}; build it (`cargo build --release -p llama-runtime`) or give its path"
    )]
    Runtime {
        /// The binary's path.
        path: PathBuf,
        /// The underlying error.
        error: io::Error,
    },
    /// A registry request failed.
    #[error("{action} {reference}: {message}{hint}")]
    Registry {
        /// What was being done ("pulling the manifest of", "uploading layer 2/3 to").
        action: String,
        /// The image or repository concerned.
        reference: String,
        /// The error and its causes.
        message: String,
        /// What to do, when it is clear (starts with "; ").
        hint: String,
    },
    /// The base image is not one this module can extend (a malformed or unsupported manifest
    /// or config).
    #[error("base image {reference}: {why}")]
    BadBase {
        /// The base as given.
        reference: String,
        /// What is wrong, and what to do.
        why: String,
    },
    /// The base is a multi-platform image without the function's platform.
    #[error(
        "base image {reference} has no linux/{wanted} image (it has {available}); use a base built for linux/{wanted}, or change the function's architecture"
    )]
    NoPlatform {
        /// The base as given.
        reference: String,
        /// The OCI architecture wanted.
        wanted: &'static str,
        /// The platforms the index lists.
        available: String,
    },
    /// The base is a single-platform image for another platform.
    #[error(
        "base image {reference} is built for {found}, not linux/{wanted}; use a base built for linux/{wanted}, or change the function's architecture"
    )]
    WrongPlatform {
        /// The base as given.
        reference: String,
        /// The OCI architecture wanted.
        wanted: &'static str,
        /// `os/architecture` of the base.
        found: String,
    },
    /// A blocking task (building the layer) did not complete.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Builds the image described by `spec` and pushes it; returns the pushed manifest's digest.
///
/// `progress` hears of each step before its transfer starts (each is also logged at info
/// level); a copy of a large layer is one step.
///
/// # Cancel safety
///
/// Dropping the future abandons the transfer in flight; the registry discards the unfinished
/// upload. Blobs already pushed stay (a later push finds and reuses them) and the tag moves
/// only once every blob is in place, so the tag never names an incomplete image.
pub async fn push_runtime_image(
    spec: &ImageSpec,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<PushedImage, ImageError> {
    let mut report = |step: Progress| {
        tracing::info!("{step}");
        progress(&step);
    };
    let base_ref: Reference = spec.base.parse().map_err(|e| ImageError::BadReference {
        what: "base image",
        reference: spec.base.clone(),
        why: format!("{e}"),
        expected: "expected e.g. debian:bookworm-slim, REGISTRY/REPO:TAG or REPO@sha256:DIGEST",
    })?;
    let target_ref = target_reference(&spec.repository, &spec.tag)?;
    let repository = format!("{}/{}", target_ref.registry(), target_ref.repository());

    // The layer first: a missing binary is the likeliest mistake and costs no network.
    let runtime = spec.runtime.clone();
    let layer = tokio::task::spawn_blocking(move || runtime_layer(&runtime))
        .await
        .map_err(|e| ImageError::Task(e.to_string()))??;

    let base_client = client(spec, &base_ref, &spec.base_auth).await?;
    let target_client = client(spec, &target_ref, &spec.target_auth).await?;

    let base = resolve_base(&base_client, spec, &base_ref).await?;
    report(Progress::Base {
        reference: spec.base.clone(),
        digest: base.digest.clone(),
    });

    let config = edit_config(&base.config, &layer.diff_id, &created_by()).map_err(|why| {
        ImageError::BadBase {
            reference: spec.base.clone(),
            why,
        }
    })?;
    let config_digest = Digest::of_bytes(&config);
    let new_layer = Descriptor {
        media_type: base.kind.layer_media_type().to_string(),
        digest: layer.digest.clone(),
        size: layer.data.len() as u64,
    };
    let new_config = Descriptor {
        media_type: base.config_descriptor.media_type.clone(),
        digest: format!("sha256:{}", config_digest.hex()),
        size: config_digest.size(),
    };
    let manifest =
        new_manifest(&base.manifest, base.kind, &new_config, &new_layer).map_err(|why| {
            ImageError::BadBase {
                reference: spec.base.clone(),
                why,
            }
        })?;
    let manifest_digest = format!("sha256:{}", Digest::of_bytes(&manifest).hex());

    let count = base.layers.len() + 1;
    copy_base_layers(
        Clients {
            base: &base_client,
            base_ref: &base_ref,
            target: &target_client,
            target_ref: &target_ref,
        },
        &base.layers,
        &mut report,
    )
    .await?;

    let name = format!("layer {count}/{count}");
    let size = layer.data.len() as u64;
    if blob_exists(&target_client, &target_ref, &layer.digest, &name).await? {
        report(blob_step(&name, size, Transfer::Present));
    } else {
        report(blob_step(&name, size, Transfer::Upload));
        push_blob(
            &target_client,
            &target_ref,
            layer.data,
            &layer.digest,
            &name,
        )
        .await?;
    }
    if blob_exists(&target_client, &target_ref, &new_config.digest, "config").await? {
        report(blob_step("config", new_config.size, Transfer::Present));
    } else {
        report(blob_step("config", new_config.size, Transfer::Upload));
        push_blob(
            &target_client,
            &target_ref,
            config,
            &new_config.digest,
            "config",
        )
        .await?;
    }

    let tagged = format!("{repository}:{}", spec.tag);
    let media_type = base.kind.manifest_media_type();
    tag_manifest(
        &target_client,
        &target_ref,
        &spec.target_auth,
        (manifest, &manifest_digest, media_type),
        tagged,
        &mut report,
    )
    .await?;

    Ok(PushedImage {
        reference: format!("{repository}@{manifest_digest}"),
        repository,
        digest: manifest_digest,
    })
}

/// The registries of a push: where the base comes from and where the image goes.
#[derive(Clone, Copy)]
struct Clients<'a> {
    base: &'a Client,
    base_ref: &'a Reference,
    target: &'a Client,
    target_ref: &'a Reference,
}

/// Puts each of the base's `layers` into the target repository: found there already,
/// mounted from the base's repository when both are on one registry, or else copied.
async fn copy_base_layers(
    c: Clients<'_>,
    layers: &[Descriptor],
    report: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), ImageError> {
    let same_registry = c.base_ref.resolve_registry() == c.target_ref.resolve_registry();
    let count = layers.len() + 1;
    for (i, descriptor) in layers.iter().enumerate() {
        let name = format!("layer {}/{count}", i + 1);
        let present = blob_exists(c.target, c.target_ref, &descriptor.digest, &name).await?;
        if present {
            report(blob_step(&name, descriptor.size, Transfer::Present));
            continue;
        }
        let from = format!("{}/{}", c.base_ref.registry(), c.base_ref.repository());
        if same_registry {
            report(blob_step(
                &name,
                descriptor.size,
                Transfer::Mount { from: from.clone() },
            ));
            match c
                .target
                .mount_blob(c.target_ref, c.base_ref, &descriptor.digest)
                .await
            {
                Ok(()) => continue,
                Err(e) => tracing::debug!("mounting {name} from {from} declined: {e}"),
            }
        }
        report(blob_step(&name, descriptor.size, Transfer::Copy { from }));
        copy_blob(c.base, c.base_ref, c.target, c.target_ref, descriptor)
            .await
            .map_err(|e| {
                registry_error(
                    format!("copying {name} ({}) to", descriptor.digest),
                    c.target_ref,
                    Role::Target,
                    e,
                )
            })?;
    }
    Ok(())
}

/// Tags `manifest` as `tagged` unless the tag names it already.
async fn tag_manifest(
    target: &Client,
    target_ref: &Reference,
    auth: &RegistryAuth,
    (manifest, manifest_digest, media_type): (Vec<u8>, &str, &str),
    tagged: String,
    report: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), ImageError> {
    // The tag may name this very manifest already (a second push of the same inputs).
    let current = target.fetch_manifest_digest(target_ref, auth).await.ok();
    if current.as_deref() == Some(manifest_digest) {
        report(Progress::Manifest {
            reference: tagged,
            transfer: Transfer::Present,
        });
    } else {
        report(Progress::Manifest {
            reference: tagged,
            transfer: Transfer::Upload,
        });
        let content_type = media_type
            .parse()
            .map_err(|e| ImageError::Task(format!("manifest media type: {e}")))?;
        target
            .push_manifest_raw(target_ref, manifest, content_type)
            .await
            .map_err(|e| {
                registry_error(
                    "pushing the manifest to".into(),
                    target_ref,
                    Role::Target,
                    e,
                )
            })?;
    }
    Ok(())
}

fn blob_step(name: &str, size: u64, transfer: Transfer) -> Progress {
    Progress::Blob {
        name: name.to_string(),
        size,
        transfer,
    }
}

/// `REPOSITORY:TAG`, refusing a repository that carries a tag or digest of its own.
fn target_reference(repository: &str, tag: &str) -> Result<Reference, ImageError> {
    let bad = |why: String| ImageError::BadReference {
        what: "target repository",
        reference: format!("{repository}:{tag}"),
        why,
        expected: "expected a repository without tag, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/llama, and a tag of letters, digits, '_', '.' and '-'",
    };
    let reference: Reference = format!("{repository}:{tag}")
        .parse()
        .map_err(|e| bad(format!("{e}")))?;
    if reference.tag() != Some(tag) || reference.digest().is_some() {
        return Err(bad("the repository must not carry a tag or digest".into()));
    }
    Ok(reference)
}

/// A client for the registry of `reference`, with `auth` stored for it.
async fn client(
    spec: &ImageSpec,
    reference: &Reference,
    auth: &RegistryAuth,
) -> Result<Client, ImageError> {
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(spec.insecure_registries.clone()),
        // See the module documentation: chunked uploads break on ECR.
        use_monolithic_push: true,
        // Indexes are resolved here, so that a miss can list what the index has.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        user_agent: concat!("llama/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    let client = Client::try_from(config)
        .map_err(|e| registry_error("connecting to".into(), reference, Role::Base, e))?;
    client
        .store_auth_if_needed(reference.resolve_registry(), auth)
        .await;
    Ok(client)
}
