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

use crate::cli::Arch;

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

    let same_registry = base_ref.resolve_registry() == target_ref.resolve_registry();
    let count = base.layers.len() + 1;
    for (i, descriptor) in base.layers.iter().enumerate() {
        let name = format!("layer {}/{count}", i + 1);
        let present = blob_exists(&target_client, &target_ref, &descriptor.digest, &name).await?;
        if present {
            report(blob_step(&name, descriptor.size, Transfer::Present));
            continue;
        }
        let from = format!("{}/{}", base_ref.registry(), base_ref.repository());
        if same_registry {
            report(blob_step(
                &name,
                descriptor.size,
                Transfer::Mount { from: from.clone() },
            ));
            match target_client
                .mount_blob(&target_ref, &base_ref, &descriptor.digest)
                .await
            {
                Ok(()) => continue,
                Err(e) => tracing::debug!("mounting {name} from {from} declined: {e}"),
            }
        }
        report(blob_step(&name, descriptor.size, Transfer::Copy { from }));
        copy_blob(
            &base_client,
            &base_ref,
            &target_client,
            &target_ref,
            descriptor,
        )
        .await
        .map_err(|e| {
            registry_error(
                format!("copying {name} ({}) to", descriptor.digest),
                &target_ref,
                Role::Target,
                e,
            )
        })?;
    }

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
    // The tag may name this very manifest already (a second push of the same inputs).
    let current = target_client
        .fetch_manifest_digest(&target_ref, &spec.target_auth)
        .await
        .ok();
    if current.as_deref() == Some(manifest_digest.as_str()) {
        report(Progress::Manifest {
            reference: tagged,
            transfer: Transfer::Present,
        });
    } else {
        report(Progress::Manifest {
            reference: tagged,
            transfer: Transfer::Upload,
        });
        let content_type = base
            .kind
            .manifest_media_type()
            .parse()
            .map_err(|e| ImageError::Task(format!("manifest media type: {e}")))?;
        target_client
            .push_manifest_raw(&target_ref, manifest, content_type)
            .await
            .map_err(|e| {
                registry_error(
                    "pushing the manifest to".into(),
                    &target_ref,
                    Role::Target,
                    e,
                )
            })?;
    }

    Ok(PushedImage {
        reference: format!("{repository}@{manifest_digest}"),
        repository,
        digest: manifest_digest,
    })
}

/// The layer that adds `binary` as [`RUNTIME_PATH`]: a gzip'd tar holding `usr/`,
/// `usr/local/`, `usr/local/bin/` and the binary, in that order.
///
/// The bytes depend on the binary's content alone: every entry has mtime 0, uid and gid 0,
/// mode 0755, no user or group names, and the gzip header has no time stamp, no file name
/// and the "unknown" OS. (They also depend on the deflate implementation this build links,
/// which does not change between runs.) Blocking: run it off the async threads.
pub fn runtime_layer(binary: &Path) -> Result<Layer, ImageError> {
    let read_error = |error: io::Error| ImageError::Runtime {
        path: binary.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(binary).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));
    let write_error = |e: io::Error| ImageError::Task(format!("building the runtime layer: {e}"));
    let relative = RUNTIME_PATH.trim_start_matches('/');
    let mut parent = String::new();
    for part in relative.split('/').take(relative.split('/').count() - 1) {
        parent.push_str(part);
        parent.push('/');
        let mut header = entry_header(tar::EntryType::Directory, 0);
        tar.append_data(&mut header, &parent, io::empty())
            .map_err(write_error)?;
    }
    let mut reader = CountingReader {
        inner: file.take(size),
        count: 0,
        error: None,
    };
    let mut header = entry_header(tar::EntryType::Regular, size);
    tar.append_data(&mut header, relative, &mut reader)
        .map_err(|e| match reader.error.take() {
            Some(error) => read_error(error),
            None => write_error(e),
        })?;
    if reader.count != size {
        return Err(read_error(io::Error::other(format!(
            "it shrank from {size} to {} bytes while being read; wait for the build writing it to finish",
            reader.count
        ))));
    }
    let hashing = tar.into_inner().map_err(write_error)?;
    let (gzip, diff_id) = hashing.finish();
    let data = gzip.finish().map_err(write_error)?;
    let digest = Digest::of_bytes(&data);
    Ok(Layer {
        data,
        digest: format!("sha256:{}", digest.hex()),
        diff_id: format!("sha256:{}", diff_id.hex()),
    })
}

fn entry_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Counts what it reads and keeps its own errors apart from the writer's.
struct CountingReader<R> {
    inner: R,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let message = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(message))
            }
        }
    }
}

fn created_by() -> String {
    format!(
        "llama {} update-function: COPY llama-runtime {RUNTIME_PATH}",
        env!("CARGO_PKG_VERSION")
    )
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

/// The parts of the base image the new image is made from.
struct Base {
    /// The platform manifest's digest.
    digest: String,
    /// The platform manifest, as parsed.
    manifest: Value,
    kind: ManifestKind,
    config_descriptor: Descriptor,
    /// The config blob.
    config: Vec<u8>,
    layers: Vec<Descriptor>,
}

async fn resolve_base(
    client: &Client,
    spec: &ImageSpec,
    reference: &Reference,
) -> Result<Base, ImageError> {
    let bad = |why: String| ImageError::BadBase {
        reference: spec.base.clone(),
        why,
    };
    let pull_error = |e| registry_error("pulling the manifest of".into(), reference, Role::Base, e);
    let (body, mut digest) = client
        .pull_manifest_raw(reference, &spec.base_auth, MANIFEST_MEDIA_TYPES)
        .await
        .map_err(pull_error)?;
    let mut manifest: Value = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("its manifest is not JSON ({e}); is it an image?")))?;
    if manifest.get("manifests").is_some() {
        let index: Index = serde_json::from_value(manifest)
            .map_err(|e| bad(format!("its image index does not parse: {e}")))?;
        let entry = select_platform(&index.manifests, spec.architecture).map_err(|available| {
            ImageError::NoPlatform {
                reference: spec.base.clone(),
                wanted: oci_arch(spec.architecture),
                available,
            }
        })?;
        let platform_ref = reference.clone_with_digest(entry.digest.clone());
        let (body, platform_digest) = client
            .pull_manifest_raw(&platform_ref, &spec.base_auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(pull_error)?;
        digest = platform_digest;
        manifest = serde_json::from_slice(&body).map_err(|e| {
            bad(format!(
                "the manifest of {} is not JSON ({e}); is it an image?",
                entry.digest
            ))
        })?;
    }
    let kind = ManifestKind::of(&manifest).map_err(&bad)?;
    let image: ImageManifest = serde_json::from_value(manifest.clone()).map_err(|e| {
        bad(format!(
            "its manifest does not parse as an image manifest: {e}"
        ))
    })?;
    let mut config = Vec::new();
    client
        .pull_blob(reference, image.config.digest.as_str(), &mut config)
        .await
        .map_err(|e| registry_error("pulling the config of".into(), reference, Role::Base, e))?;
    check_platform(&config, spec.architecture).map_err(|found| match found {
        Ok(found) => ImageError::WrongPlatform {
            reference: spec.base.clone(),
            wanted: oci_arch(spec.architecture),
            found,
        },
        Err(why) => bad(why),
    })?;
    Ok(Base {
        digest,
        manifest,
        kind,
        config_descriptor: image.config,
        config,
        layers: image.layers,
    })
}

/// The two families of single-platform manifests; the new manifest and layer keep the base's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ManifestKind {
    /// Docker image manifest v2, schema 2.
    Docker,
    /// OCI image manifest.
    Oci,
}

impl ManifestKind {
    /// The kind of a single-platform manifest; OCI when it names no media type (which OCI
    /// allows and Docker never does).
    fn of(manifest: &Value) -> Result<ManifestKind, String> {
        let media_type = manifest.get("mediaType").and_then(Value::as_str);
        let config_type = manifest
            .pointer("/config/mediaType")
            .and_then(Value::as_str);
        match media_type {
            Some(DOCKER_MANIFEST) => Ok(ManifestKind::Docker),
            Some(OCI_MANIFEST) => Ok(ManifestKind::Oci),
            None if config_type == Some(DOCKER_CONFIG) => Ok(ManifestKind::Docker),
            None => Ok(ManifestKind::Oci),
            Some(other) => Err(format!(
                "its manifest has media type {other}, not a Docker v2 schema 2 or OCI image manifest; use another base"
            )),
        }
    }

    fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestKind::Docker => DOCKER_MANIFEST,
            ManifestKind::Oci => OCI_MANIFEST,
        }
    }

    fn layer_media_type(self) -> &'static str {
        match self {
            ManifestKind::Docker => DOCKER_LAYER_GZIP,
            ManifestKind::Oci => OCI_LAYER_GZIP,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct ImageManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The index entry for `linux/<arch>`; for arm64, one without variant or `v8` (what
/// Graviton runs) is preferred over other variants. On a miss, the platforms the index lists.
fn select_platform(entries: &[IndexEntry], arch: Arch) -> Result<&IndexEntry, String> {
    let matching: Vec<&IndexEntry> = entries
        .iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == oci_arch(arch))
        })
        .collect();
    let preferred = matching.iter().find(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| matches!(p.variant.as_deref(), None | Some("v8")))
    });
    match preferred.or(matching.first()) {
        Some(entry) => Ok(entry),
        None => {
            let listed: Vec<String> = entries
                .iter()
                .map(|e| match &e.platform {
                    Some(p) => p.to_string(),
                    None => format!("{} without platform", e.digest),
                })
                .collect();
            Err(if listed.is_empty() {
                "no images at all".to_string()
            } else {
                listed.join(", ")
            })
        }
    }
}

/// Checks the config is for `linux/<arch>`: `Err(Ok(found))` names the platform it is for
/// instead, `Err(Err(why))` says why the config cannot be read.
fn check_platform(config: &[u8], arch: Arch) -> Result<(), Result<String, String>> {
    let config: Value = serde_json::from_slice(config)
        .map_err(|e| Err(format!("its config is not JSON ({e}); is it an image?")))?;
    let field = |name: &str| config.get(name).and_then(Value::as_str).unwrap_or("");
    let (os, architecture) = (field("os"), field("architecture"));
    if os == "linux" && architecture == oci_arch(arch) {
        Ok(())
    } else if os.is_empty() || architecture.is_empty() {
        Err(Err(
            "its config names no os or architecture; is it a container image?".to_string(),
        ))
    } else {
        Err(Ok(format!("{os}/{architecture}")))
    }
}

/// The base config with the new layer: its diff_id appended to `rootfs.diff_ids`, a history
/// entry for it, `config.Entrypoint` set to [`RUNTIME_PATH`] and `config.Cmd` removed (it
/// would become the runtime's arguments). Every other field, known or not, is kept as it is.
///
/// The history entry is added only when the base has a history: a history that lists
/// fewer layers than `rootfs` has is worse than none. It has no `created` time, so the
/// config depends on its inputs alone.
fn edit_config(base: &[u8], diff_id: &str, created_by: &str) -> Result<Vec<u8>, String> {
    let mut config: Value = serde_json::from_slice(base)
        .map_err(|e| format!("its config is not JSON ({e}); is it an image?"))?;
    let root = config
        .as_object_mut()
        .ok_or("its config is not a JSON object; is it an image?")?;
    let diff_ids = root
        .get_mut("rootfs")
        .and_then(|r| r.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or("its config has no rootfs.diff_ids; is it a container image?")?;
    diff_ids.push(Value::from(diff_id));
    if let Some(history) = root.get_mut("history").and_then(Value::as_array_mut) {
        history.push(json!({ "created_by": created_by }));
    }
    let container = root
        .entry("config")
        .or_insert_with(|| Value::Object(Default::default()));
    if !container.is_object() {
        *container = Value::Object(Default::default());
    }
    if let Some(container) = container.as_object_mut() {
        container.insert("Entrypoint".into(), json!([RUNTIME_PATH]));
        container.remove("Cmd");
    }
    serde_json::to_vec(&config).map_err(|e| format!("its edited config does not serialize: {e}"))
}

/// The base manifest with `config` in place of its config and `layer` appended, its media
/// type stated, and no `subject` (the new image refers to nothing). Other fields are kept.
fn new_manifest(
    base: &Value,
    kind: ManifestKind,
    config: &Descriptor,
    layer: &Descriptor,
) -> Result<Vec<u8>, String> {
    let descriptor =
        |d: &Descriptor| json!({ "mediaType": d.media_type, "digest": d.digest, "size": d.size });
    let mut manifest = base.clone();
    let root = manifest
        .as_object_mut()
        .ok_or("its manifest is not a JSON object")?;
    root.insert("mediaType".into(), Value::from(kind.manifest_media_type()));
    root.insert("config".into(), descriptor(config));
    root.remove("subject");
    root.get_mut("layers")
        .and_then(Value::as_array_mut)
        .ok_or("its manifest has no layers")?
        .push(descriptor(layer));
    serde_json::to_vec(&manifest).map_err(|e| format!("the new manifest does not serialize: {e}"))
}

async fn blob_exists(
    client: &Client,
    reference: &Reference,
    digest: &str,
    name: &str,
) -> Result<bool, ImageError> {
    client.blob_exists(reference, digest).await.map_err(|e| {
        registry_error(
            format!("looking for {name} ({digest}) in"),
            reference,
            Role::Target,
            e,
        )
    })
}

async fn push_blob(
    client: &Client,
    reference: &Reference,
    data: Vec<u8>,
    digest: &str,
    name: &str,
) -> Result<(), ImageError> {
    client
        .push_blob(reference, data, digest)
        .await
        .map(drop)
        .map_err(|e| {
            registry_error(
                format!("uploading {name} ({digest}) to"),
                reference,
                Role::Target,
                e,
            )
        })
}

/// Streams one blob from the base's registry to the target's, verified against its digest
/// on the way (a mismatch fails the upload before it is committed).
async fn copy_blob(
    from_client: &Client,
    from: &Reference,
    to_client: &Client,
    to: &Reference,
    blob: &Descriptor,
) -> Result<(), OciDistributionError> {
    let stream = from_client
        .pull_blob_stream(from, blob.digest.as_str())
        .await?
        .map(|chunk| chunk.map_err(OciDistributionError::from));
    to_client
        .push_blob_stream(to, stream, &blob.digest, Some(blob.size))
        .await?;
    Ok(())
}

/// Which side of the push a registry is, for the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Base,
    Target,
}

fn registry_error(
    action: String,
    reference: &Reference,
    role: Role,
    error: OciDistributionError,
) -> ImageError {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    let shown = match role {
        Role::Base => reference.whole(),
        Role::Target => format!("{}/{}", reference.registry(), reference.repository()),
    };
    ImageError::Registry {
        action,
        hint: registry_hint(&error, reference.resolve_registry(), role),
        reference: shown,
        message,
    }
}

/// The registry's error codes (`NAME_UNKNOWN`, ...). oci-client parses the error body of a
/// failed GET, but hands over the body of a failed upload or manifest PUT as text.
fn error_codes(error: &OciDistributionError) -> Vec<String> {
    let body = match error {
        OciDistributionError::RegistryError { envelope, .. } => serde_json::to_value(envelope).ok(),
        OciDistributionError::ServerError { message, .. } => serde_json::from_str(message).ok(),
        _ => None,
    };
    let Some(body) = body else {
        return Vec::new();
    };
    body.get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.get("code").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn registry_hint(error: &OciDistributionError, registry: &str, role: Role) -> String {
    let codes = error_codes(error);
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(&c.as_str()));
    let status = match error {
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(e) => e.status().map(|s| s.as_u16()),
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        _ => None,
    };
    let denied = matches!(status, Some(401 | 403))
        || matches!(error, OciDistributionError::AuthenticationFailure(_))
        || has(&["UNAUTHORIZED", "DENIED"]);
    let unknown_name = has(&["NAME_UNKNOWN"]);
    let not_found = status == Some(404) || has(&["MANIFEST_UNKNOWN", "NOT_FOUND", "BLOB_UNKNOWN"]);
    let throttled = status == Some(429) || has(&["TOOMANYREQUESTS"]);
    if denied {
        format!(
            "; {registry} refused the credentials: for ECR, get fresh ones (they last 12 hours); otherwise check the user and password given for {registry}"
        )
    } else if throttled {
        "; the registry is throttling requests: wait a minute and run the command again".into()
    } else if unknown_name && role == Role::Target {
        "; the repository does not exist: create it (`llama bootstrap` creates one)".into()
    } else if (unknown_name || not_found) && role == Role::Base {
        "; check the image's name and tag (it must exist for linux, e.g. debian:bookworm-slim)"
            .into()
    } else if let OciDistributionError::RequestError(e) = error {
        if e.is_connect() || e.is_timeout() {
            format!(
                "; check that {registry} is reachable; a registry speaking plain HTTP must be listed among the insecure registries"
            )
        } else {
            String::new()
        }
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tar entry, as read back.
    struct Entry {
        path: String,
        kind: tar::EntryType,
        /// mode, uid, gid, mtime
        meta: (u32, u64, u64, u64),
        data: Vec<u8>,
    }

    fn unpack(gz: &[u8]) -> Vec<Entry> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                Entry {
                    path: entry.path().unwrap().to_string_lossy().into_owned(),
                    kind: header.entry_type(),
                    meta: (
                        header.mode().unwrap(),
                        header.uid().unwrap(),
                        header.gid().unwrap(),
                        header.mtime().unwrap(),
                    ),
                    data,
                }
            })
            .collect()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn runtime_layer_is_deterministic_and_holds_the_binary() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("llama-runtime");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&binary, &content).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o700)).unwrap();
        let first = runtime_layer(&binary).unwrap();

        // Same content, another file: other mtime, other mode.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let copy = dir.path().join("copy");
        std::fs::write(&copy, &content).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        let second = runtime_layer(&copy).unwrap();
        assert_eq!(first, second, "same binary, same layer");

        assert_eq!(
            first.digest,
            format!("sha256:{}", Digest::of_bytes(&first.data).hex())
        );
        assert_eq!(
            first.diff_id,
            format!("sha256:{}", Digest::of_bytes(&gunzip(&first.data)).hex())
        );
        // gzip header: no time stamp, "unknown" OS.
        assert_eq!(&first.data[4..8], &[0, 0, 0, 0]);
        assert_eq!(first.data[9], 255);

        let entries = unpack(&first.data);
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/llama-runtime"
            ]
        );
        for entry in &entries {
            assert_eq!(entry.meta, (0o755, 0, 0, 0), "{}", entry.path);
            let want = if entry.path.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            };
            assert_eq!(entry.kind, want, "{}", entry.path);
        }
        assert_eq!(entries[3].data, content);

        std::fs::write(&copy, b"another binary").unwrap();
        assert_ne!(runtime_layer(&copy).unwrap().digest, first.digest);
    }

    #[test]
    fn runtime_layer_names_a_missing_binary() {
        let err = runtime_layer(Path::new("/nonexistent/llama-runtime")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/llama-runtime"), "{text}");
        assert!(text.contains("cargo build"), "{text}");
    }

    const BASE_CONFIG: &str = r#"{
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
            "Labels": {"vendor": "someone"}
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:aaaa"]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs.tar /"}],
        "x-unknown": {"kept": [1, 2, 3]}
    }"#;

    #[test]
    fn config_gets_the_layer_and_the_entrypoint_and_keeps_the_rest() {
        let edited = edit_config(BASE_CONFIG.as_bytes(), "sha256:bbbb", "llama test").unwrap();
        let again = edit_config(BASE_CONFIG.as_bytes(), "sha256:bbbb", "llama test").unwrap();
        assert_eq!(edited, again, "deterministic");
        let edited: Value = serde_json::from_slice(&edited).unwrap();
        assert_eq!(
            edited["rootfs"]["diff_ids"],
            json!(["sha256:aaaa", "sha256:bbbb"])
        );
        assert_eq!(edited["rootfs"]["type"], "layers");
        assert_eq!(edited["config"]["Entrypoint"], json!([RUNTIME_PATH]));
        assert!(edited["config"].get("Cmd").is_none(), "Cmd removed");
        assert_eq!(edited["config"]["Labels"]["vendor"], "someone");
        assert_eq!(
            edited["config"]["Env"][0],
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
        assert_eq!(edited["x-unknown"], json!({"kept": [1, 2, 3]}));
        assert_eq!(edited["architecture"], "amd64");
        assert_eq!(edited["os"], "linux");
        assert_eq!(edited["created"], "2024-01-01T00:00:00Z");
        let history = edited["history"].as_array().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1], json!({"created_by": "llama test"}));
    }

    #[test]
    fn config_without_container_config_or_history_still_gets_an_entrypoint() {
        let base = r#"{"architecture":"arm64","os":"linux","config":null,
                       "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let edited: Value =
            serde_json::from_slice(&edit_config(base.as_bytes(), "sha256:cc", "x").unwrap())
                .unwrap();
        assert_eq!(edited["config"], json!({"Entrypoint": [RUNTIME_PATH]}));
        assert_eq!(edited["rootfs"]["diff_ids"], json!(["sha256:cc"]));
        assert!(edited.get("history").is_none());

        let err = edit_config(br#"{"os":"linux"}"#, "sha256:cc", "x").unwrap_err();
        assert!(err.contains("rootfs.diff_ids"), "{err}");
        let err = edit_config(b"not json", "sha256:cc", "x").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
    }

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> Vec<IndexEntry> {
        let manifests: Vec<Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut platform = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                json!({
                    "mediaType": DOCKER_MANIFEST,
                    "digest": format!("sha256:{i}"),
                    "size": 500,
                    "platform": platform,
                })
            })
            .collect();
        let index: Index = serde_json::from_value(json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": manifests,
        }))
        .unwrap();
        index.manifests
    }

    #[test]
    fn index_selection_picks_linux_of_the_architecture() {
        let entries = index(&[
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v9")),
            ("linux", "arm64", Some("v8")),
            ("windows", "amd64", None),
            ("linux", "amd64", None),
            ("unknown", "unknown", None),
        ]);
        let pick = |arch| select_platform(&entries, arch).unwrap().digest.clone();
        assert_eq!(pick(Arch::X86_64), "sha256:4");
        assert_eq!(pick(Arch::Arm64), "sha256:2", "v8 preferred");

        let only_v9 = index(&[("linux", "arm64", Some("v9"))]);
        assert_eq!(
            select_platform(&only_v9, Arch::Arm64).unwrap().digest,
            "sha256:0"
        );
    }

    #[test]
    fn index_selection_miss_lists_the_platforms() {
        let entries = index(&[
            ("linux", "arm", Some("v7")),
            ("windows", "amd64", None),
            ("unknown", "unknown", None),
        ]);
        let available = select_platform(&entries, Arch::X86_64).unwrap_err();
        assert_eq!(available, "linux/arm/v7, windows/amd64, unknown/unknown");
        let err = ImageError::NoPlatform {
            reference: "debian:bookworm-slim".into(),
            wanted: oci_arch(Arch::X86_64),
            available,
        };
        let text = err.to_string();
        assert!(text.contains("no linux/amd64 image"), "{text}");
        assert!(text.contains("linux/arm/v7, windows/amd64"), "{text}");
        assert_eq!(
            select_platform(&[], Arch::Arm64).unwrap_err(),
            "no images at all"
        );
    }

    #[test]
    fn base_config_platform_is_checked() {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        assert_eq!(check_platform(config, Arch::X86_64), Ok(()));
        assert_eq!(
            check_platform(config, Arch::Arm64),
            Err(Ok("linux/amd64".to_string()))
        );
        assert!(matches!(
            check_platform(br#"{"architecture":"amd64","os":"windows"}"#, Arch::X86_64),
            Err(Ok(found)) if found == "windows/amd64"
        ));
        assert!(matches!(check_platform(b"{}", Arch::X86_64), Err(Err(_))));
    }

    #[test]
    fn new_manifest_keeps_the_base_kind_and_layers() {
        let layer = |media_type: &str, digest: &str| Descriptor {
            media_type: media_type.into(),
            digest: digest.into(),
            size: 10,
        };
        for (kind, manifest_type, layer_type, config_type) in [
            (
                ManifestKind::Docker,
                DOCKER_MANIFEST,
                DOCKER_LAYER_GZIP,
                DOCKER_CONFIG,
            ),
            (
                ManifestKind::Oci,
                OCI_MANIFEST,
                OCI_LAYER_GZIP,
                "application/vnd.oci.image.config.v1+json",
            ),
        ] {
            let base = json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": {"mediaType": config_type, "digest": "sha256:old", "size": 1},
                "layers": [{"mediaType": layer_type, "digest": "sha256:l1", "size": 5,
                            "annotations": {"a": "b"}}],
                "annotations": {"org.example": "kept"},
            });
            assert_eq!(ManifestKind::of(&base), Ok(kind));
            assert_eq!(kind.layer_media_type(), layer_type);
            let new = new_manifest(
                &base,
                ManifestKind::of(&base).unwrap(),
                &layer(config_type, "sha256:cfg"),
                &layer(kind.layer_media_type(), "sha256:l2"),
            )
            .unwrap();
            let new: Value = serde_json::from_slice(&new).unwrap();
            assert_eq!(new["mediaType"], manifest_type);
            assert_eq!(
                new["config"],
                json!({"mediaType": config_type, "digest": "sha256:cfg", "size": 10})
            );
            let layers = new["layers"].as_array().unwrap();
            assert_eq!(layers.len(), 2);
            assert_eq!(layers[0]["annotations"], json!({"a": "b"}));
            assert_eq!(
                layers[1],
                json!({"mediaType": layer_type, "digest": "sha256:l2", "size": 10})
            );
            assert_eq!(new["annotations"], json!({"org.example": "kept"}));
        }
        // An OCI manifest may leave out its media type; the new one states it.
        let untyped = json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:c", "size": 1}, "layers": []});
        assert_eq!(ManifestKind::of(&untyped), Ok(ManifestKind::Oci));
        let schema1 =
            json!({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"});
        assert!(ManifestKind::of(&schema1).is_err());
    }

    #[test]
    fn target_reference_refuses_a_tagged_repository() {
        let r = target_reference("127.0.0.1:5000/llama", "fn").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "llama", Some("fn"))
        );
        let ecr =
            target_reference("123456789012.dkr.ecr.us-east-1.amazonaws.com/llama", "f_1").unwrap();
        assert_eq!(
            ecr.registry(),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        for (repo, tag) in [
            ("127.0.0.1:5000/llama:v1", "fn"),
            ("127.0.0.1:5000/llama", "bad tag"),
            ("127.0.0.1:5000/llama", ""),
        ] {
            let err = target_reference(repo, tag).unwrap_err().to_string();
            assert!(err.contains("target repository"), "{err}");
        }
    }

    #[test]
    fn registry_errors_say_what_to_do() {
        let target = target_reference("127.0.0.1:5000/llama", "fn").unwrap();
        // A failed upload: oci-client passes the body on as text.
        let upload = OciDistributionError::ServerError {
            code: 404,
            url: "http://127.0.0.1:5000/v2/llama/blobs/uploads/".into(),
            message: r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#.into(),
        };
        let text =
            registry_error("uploading config to".into(), &target, Role::Target, upload).to_string();
        assert!(
            text.starts_with("uploading config to 127.0.0.1:5000/llama: "),
            "{text}"
        );
        assert!(text.contains("llama bootstrap"), "{text}");

        let base: Reference = "127.0.0.1:5000/debian:nope".parse().unwrap();
        let missing = OciDistributionError::RegistryError {
            envelope: serde_json::from_str(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            )
            .unwrap(),
            url: "http://127.0.0.1:5000/v2/debian/manifests/nope".into(),
        };
        let text = registry_error("pulling the manifest of".into(), &base, Role::Base, missing)
            .to_string();
        assert!(
            text.starts_with("pulling the manifest of 127.0.0.1:5000/debian:nope: "),
            "{text}"
        );
        assert!(text.contains("check the image's name and tag"), "{text}");

        let denied = OciDistributionError::UnauthorizedError {
            url: "https://1.dkr.ecr.us-east-1.amazonaws.com/v2/".into(),
        };
        let text = registry_error(
            "looking for config in".into(),
            &target,
            Role::Target,
            denied,
        )
        .to_string();
        assert!(text.contains("refused the credentials"), "{text}");
    }

    #[test]
    fn progress_lines_read_well() {
        let line = blob_step(
            "layer 2/3",
            29_800_000,
            Transfer::Copy {
                from: "docker.io/library/debian".into(),
            },
        )
        .to_string();
        assert_eq!(
            line,
            "copying layer 2/3 (29.8 MB) from docker.io/library/debian"
        );
    }
}
