//! Container images for the update-function tests. No public registry is reachable from the
//! tests, so they assemble their own base (a layer made of a few files, a config for
//! linux/amd64 or arm64) and push it to a local registry over plain HTTP, then read the
//! images back for inspection.
//!
//! Everything here is deterministic: the same files give the same digests.

use std::collections::BTreeMap;
use std::io::Read;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::{Value, json};

/// The two families of image manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker image manifest v2 schema 2 (what Docker Hub serves for `debian`).
    Docker,
    /// OCI image manifest.
    Oci,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
        }
    }

    pub fn index_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
            Format::Oci => "application/vnd.oci.image.index.v1+json",
        }
    }

    pub fn config_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.container.image.v1+json",
            Format::Oci => "application/vnd.oci.image.config.v1+json",
        }
    }

    pub fn layer_type(self) -> &'static str {
        match self {
            Format::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Format::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
        }
    }
}

/// The files of a tiny Debian-looking root: enough to recognise, nothing to run.
pub fn debian_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "etc/os-release",
            b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
              VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n"
                .to_vec(),
        ),
        ("etc/debian_version", b"12.0\n".to_vec()),
        (
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                .to_vec(),
        ),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
    ]
}

/// A gzip'd tar of `files` (paths relative to `/`), each parent directory listed before its
/// contents, everything owned by root with mtime 0; files are mode 0644.
pub fn tar_gz(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use flate2::{Compression, GzBuilder};
    let mut sorted: Vec<&(&str, Vec<u8>)> = files.iter().collect();
    sorted.sort_by_key(|(path, _)| *path);
    let gzip = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in sorted {
        let parts: Vec<&str> = path.split('/').collect();
        for depth in 1..parts.len() {
            let dir = format!("{}/", parts[..depth].join("/"));
            if dirs.insert(dir.clone()) {
                let mut header = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut header, &dir, std::io::empty())
                    .expect("tar dir");
            }
        }
        let mut header = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        tar.append_data(&mut header, path, &data[..])
            .expect("tar file");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// `sha256:HEX` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", llama_core::Digest::of_bytes(data).hex())
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// A client for a registry speaking plain HTTP, with anonymous access stored for it (the
/// blob calls of oci-client send no credentials unless some were stored first).
pub async fn client(registry: &str) -> Client {
    let client = Client::try_from(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(vec![registry.to_string()]),
        platform_resolver: None,
        use_monolithic_push: true,
        ..ClientConfig::default()
    })
    .expect("oci client");
    client
        .store_auth_if_needed(registry, &RegistryAuth::Anonymous)
        .await;
    client
}

/// An image pushed by [`push_base`].
#[derive(Debug, Clone)]
pub struct PushedBase {
    /// `REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's size in bytes.
    pub size: usize,
    /// The layer's digest (compressed) and diff_id (uncompressed).
    pub layer_digest: String,
    pub diff_id: String,
    /// The config's digest.
    pub config_digest: String,
}

/// Pushes a one-layer image of `files` for linux/`arch` (`amd64`, `arm64`) as
/// `REGISTRY/REPOSITORY:TAG`; `registry` is `HOST:PORT` and speaks plain HTTP.
pub async fn push_base(
    registry: &str,
    repository: &str,
    tag: &str,
    arch: &str,
    format: Format,
    files: &[(&str, Vec<u8>)],
) -> PushedBase {
    let client = client(registry).await;
    let reference = Reference::with_tag(registry.into(), repository.into(), tag.into());
    let layer = tar_gz(files);
    let diff_id = sha256(&gunzip(&layer));
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "test base: ADD files /"}],
    });
    let config = serde_json::to_vec(&config).expect("config json");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_type(),
        "config": {"mediaType": format.config_type(), "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": format.layer_type(), "digest": sha256(&layer), "size": layer.len()}],
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let pushed = PushedBase {
        reference: format!("{registry}/{repository}:{tag}"),
        digest: sha256(&manifest),
        size: manifest.len(),
        layer_digest: sha256(&layer),
        diff_id,
        config_digest: sha256(&config),
    };
    client
        .push_blob(&reference, layer, &pushed.layer_digest)
        .await
        .expect("push the base layer");
    client
        .push_blob(&reference, config, &pushed.config_digest)
        .await
        .expect("push the base config");
    push_manifest(&client, &reference, manifest, format.manifest_type()).await;
    pushed
}

/// `REGISTRY/debian:bookworm-slim` for linux/amd64 in Docker's format, like the real one.
pub async fn push_debian(registry: &str) -> PushedBase {
    push_base(
        registry,
        "debian",
        "bookworm-slim",
        "amd64",
        Format::Docker,
        &debian_files(),
    )
    .await
}

/// Pushes an image index as `REGISTRY/REPOSITORY:TAG` listing `entries`, images already in
/// that repository, each with its platform (`linux/arm64/v8`); returns the index's digest.
pub async fn push_index(
    registry: &str,
    repository: &str,
    tag: &str,
    format: Format,
    entries: &[(&PushedBase, &str)],
) -> String {
    let client = client(registry).await;
    let reference = Reference::with_tag(registry.into(), repository.into(), tag.into());
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(image, platform)| {
            let mut parts = platform.split('/');
            let mut platform = json!({
                "os": parts.next().expect("os"),
                "architecture": parts.next().expect("architecture"),
            });
            if let Some(variant) = parts.next() {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": format.manifest_type(),
                "digest": image.digest,
                "size": image.size,
                "platform": platform,
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": format.index_type(),
        "manifests": manifests,
    });
    let index = serde_json::to_vec(&index).expect("index json");
    let digest = sha256(&index);
    push_manifest(&client, &reference, index, format.index_type()).await;
    digest
}

async fn push_manifest(client: &Client, reference: &Reference, body: Vec<u8>, media_type: &str) {
    let content_type = media_type.parse().expect("media type header");
    client
        .push_manifest_raw(reference, body, content_type)
        .await
        .expect("push manifest");
}

/// An image read back from a registry.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The manifest's digest.
    pub digest: String,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    pub manifest: Value,
    pub config: Value,
    /// The layers, compressed, in manifest order.
    pub layers: Vec<Vec<u8>>,
}

/// Pulls `REGISTRY/REPOSITORY:TAG` or `REGISTRY/REPOSITORY@DIGEST` (a single-platform
/// manifest), every blob verified against its digest.
pub async fn pull(reference: &str) -> PulledImage {
    let reference: Reference = reference.parse().expect("image reference");
    let client = client(reference.resolve_registry()).await;
    let (body, digest) = client
        .pull_manifest_raw(
            &reference,
            &RegistryAuth::Anonymous,
            &[Format::Docker.manifest_type(), Format::Oci.manifest_type()],
        )
        .await
        .expect("pull manifest");
    let manifest: Value = serde_json::from_slice(&body).expect("manifest json");
    let blob = |digest: &Value| {
        let digest = digest.as_str().expect("digest").to_string();
        let client = &client;
        let reference = &reference;
        async move {
            let mut out = Vec::new();
            client
                .pull_blob(reference, digest.as_str(), &mut out)
                .await
                .expect("pull blob");
            out
        }
    };
    let config = blob(&manifest["config"]["digest"]).await;
    let mut layers = Vec::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        layers.push(blob(&layer["digest"]).await);
    }
    PulledImage {
        digest,
        manifest_bytes: body.to_vec(),
        config: serde_json::from_slice(&config).expect("config json"),
        manifest,
        layers,
    }
}

/// The entries of a gzip'd tar layer by path (directories end in `/`), with their modes.
pub fn layer_files(layer: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mode = entry.header().mode().expect("mode");
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        files.insert(path, (mode, data));
    }
    files
}
