//! Reading the base image's manifest, index and config, and writing the new ones.

use super::*;

/// The parts of the base image the new image is made from.
pub(super) struct Base {
    /// The platform manifest's digest.
    pub(super) digest: String,
    /// The platform manifest, as parsed.
    pub(super) manifest: Value,
    pub(super) kind: ManifestKind,
    pub(super) config_descriptor: Descriptor,
    /// The config blob.
    pub(super) config: Vec<u8>,
    pub(super) layers: Vec<Descriptor>,
}

pub(super) async fn resolve_base(
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
pub(super) enum ManifestKind {
    /// Docker image manifest v2, schema 2.
    Docker,
    /// OCI image manifest.
    Oci,
}

impl ManifestKind {
    /// The kind of a single-platform manifest; OCI when it names no media type (which OCI
    /// allows and Docker never does).
    pub(super) fn of(manifest: &Value) -> Result<ManifestKind, String> {
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

    pub(super) fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestKind::Docker => DOCKER_MANIFEST,
            ManifestKind::Oci => OCI_MANIFEST,
        }
    }

    pub(super) fn layer_media_type(self) -> &'static str {
        match self {
            ManifestKind::Docker => DOCKER_LAYER_GZIP,
            ManifestKind::Oci => OCI_LAYER_GZIP,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
}

#[derive(Debug, Deserialize)]
pub(super) struct ImageManifest {
    pub(super) config: Descriptor,
    pub(super) layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Index {
    pub(super) manifests: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct IndexEntry {
    pub(super) digest: String,
    #[serde(default)]
    pub(super) platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct Platform {
    pub(super) architecture: String,
    pub(super) os: String,
    #[serde(default)]
    pub(super) variant: Option<String>,
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
pub(super) fn select_platform(entries: &[IndexEntry], arch: Arch) -> Result<&IndexEntry, String> {
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
pub(super) fn check_platform(config: &[u8], arch: Arch) -> Result<(), Result<String, String>> {
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
pub(super) fn edit_config(base: &[u8], diff_id: &str, created_by: &str) -> Result<Vec<u8>, String> {
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
pub(super) fn new_manifest(
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
