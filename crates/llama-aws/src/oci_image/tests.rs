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
        serde_json::from_slice(&edit_config(base.as_bytes(), "sha256:cc", "x").unwrap()).unwrap();
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
    let schema1 = json!({"mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"});
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
    let text =
        registry_error("pulling the manifest of".into(), &base, Role::Base, missing).to_string();
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
