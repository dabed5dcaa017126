use super::*;

fn load(file_text: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    if let Some(text) = file_text {
        std::fs::write(&path, text).unwrap();
    }
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(&path, |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

#[test]
fn update_file_keeps_comments_and_reports_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/config.toml");
    let first = Config::update_file(&path, &[("region", "us-east-1"), ("stack", "llama")]).unwrap();
    assert_eq!(first, ["region", "stack"]);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("# mine\njobs = 3 # keep\n{text}")).unwrap();
    let second =
        Config::update_file(&path, &[("region", "us-east-1"), ("stack", "other")]).unwrap();
    assert_eq!(second, ["stack"]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("# mine\njobs = 3 # keep\n"), "{text}");
    assert!(text.contains("stack = \"other\""), "{text}");
    assert!(
        Config::update_file(&path, &[("stack", "other")])
            .unwrap()
            .is_empty()
    );
    let err = Config::update_file(&path, &[("execution_role", "not-an-arn")]).unwrap_err();
    assert!(err.to_string().contains("execution_role"), "{err}");
    assert!(matches!(
        Config::update_file(&path, &[("nope", "x")]),
        Err(ConfigError::UnknownKey { .. })
    ));
}

#[test]
fn reapi_settings() {
    let c = load(
        Some("reapi_instance = \"main\"\n"),
        &[
            ("LLAMA_REAPI_ENDPOINT", "grpcs://cluster:8980"),
            (
                "LLAMA_REAPI_HEADERS",
                "Authorization: Bearer abc; x-buildbuddy-api-key: k:1 ;",
            ),
        ],
    )
    .unwrap();
    assert_eq!(c.reapi_endpoint(), "grpcs://cluster:8980");
    assert_eq!(c.reapi_instance(), "main");
    assert_eq!(
        c.reapi_headers(),
        vec![
            ("authorization".to_string(), "Bearer abc".to_string()),
            ("x-buildbuddy-api-key".to_string(), "k:1".to_string())
        ]
    );
    assert_eq!(c.reapi_platforms(), vec![]);
    let c = load(
        None,
        &[(
            "LLAMA_REAPI_PLATFORM",
            "gcc: container-image=docker://gcc:14, OSFamily=linux; *: OSFamily=linux",
        )],
    )
    .unwrap();
    assert_eq!(
        c.reapi_platforms(),
        vec![
            (
                "gcc".to_string(),
                vec![
                    ("container-image".to_string(), "docker://gcc:14".to_string()),
                    ("OSFamily".to_string(), "linux".to_string())
                ]
            ),
            (
                "*".to_string(),
                vec![("OSFamily".to_string(), "linux".to_string())]
            )
        ]
    );
    for (key, bad) in [
        ("LLAMA_REAPI_ENDPOINT", "http://x:1"),
        ("LLAMA_REAPI_HEADERS", "no colon"),
        ("LLAMA_REAPI_HEADERS", "bad name: v"),
        ("LLAMA_REAPI_PLATFORM", "OSFamily=linux"),
        ("LLAMA_REAPI_PLATFORM", "gcc: OSFamily"),
    ] {
        let e = load(None, &[(key, bad)]).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
}

#[test]
fn reapi_tls_files_are_checked_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let ca = file(
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let key = file(
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    );
    let ec_key = file(
        "ec.pem",
        "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
    );
    let missing = dir.path().join("nope.pem").to_string_lossy().into_owned();

    let c = load(None, &[]).unwrap();
    assert_eq!(c.reapi_ca().unwrap(), None);
    assert_eq!(c.reapi_client_identity().unwrap(), None);

    let c = load(
        None,
        &[
            ("LLAMA_REAPI_CA", &ca),
            ("LLAMA_REAPI_CLIENT_CERT", &ca),
            ("LLAMA_REAPI_CLIENT_KEY", &ec_key),
        ],
    )
    .unwrap();
    assert_eq!(c.reapi_ca().unwrap(), Some(PathBuf::from(&ca)));
    assert_eq!(
        c.reapi_client_identity().unwrap(),
        Some((PathBuf::from(&ca), PathBuf::from(&ec_key)))
    );

    let e = load(None, &[("LLAMA_REAPI_CA", &missing)])
        .unwrap()
        .reapi_ca();
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("reapi_ca") && e.contains("LLAMA_REAPI_CA") && e.contains(&missing),
        "{e}"
    );
    // A key where the CA should be.
    let e = load(None, &[("LLAMA_REAPI_CA", &key)]).unwrap().reapi_ca();
    let e = e.unwrap_err().to_string();
    assert!(e.contains("reapi_ca") && e.contains(&key), "{e}");
    let e = load(None, &[("LLAMA_REAPI_CLIENT_CERT", &ca)])
        .unwrap()
        .reapi_client_identity()
        .unwrap_err()
        .to_string();
    assert!(e.contains("reapi_client_key"), "{e}");
    let e = load(
        None,
        &[
            ("LLAMA_REAPI_CLIENT_CERT", &ca),
            ("LLAMA_REAPI_CLIENT_KEY", &ca),
        ],
    )
    .unwrap()
    .reapi_client_identity()
    .unwrap_err()
    .to_string();
    assert!(e.contains("reapi_client_key") && e.contains(&ca), "{e}");
}

#[test]
fn reapi_cache_switches_are_llama_booleans() {
    let c = load(None, &[]).unwrap();
    assert!(c.reapi_cache_read() && c.reapi_cache_write());
    for (value, on) in [
        ("1", true),
        ("TRUE", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("No", false),
        ("off", false),
        ("", false),
    ] {
        let c = load(
            None,
            &[
                ("LLAMA_REAPI_CACHE_READ", value),
                ("LLAMA_REAPI_CACHE_WRITE", value),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.reapi_cache_read(), c.reapi_cache_write()),
            (on, on),
            "{value:?}"
        );
    }
    let c = load(Some("reapi_cache_write = false\n"), &[]).unwrap();
    assert!(c.reapi_cache_read() && !c.reapi_cache_write());
    let e = load(None, &[("LLAMA_REAPI_CACHE_READ", "sometimes")]).unwrap_err();
    assert!(e.to_string().contains("LLAMA_REAPI_CACHE_READ"), "{e}");
}

#[test]
fn defaults_then_file_then_env() {
    let c = load(None, &[]).unwrap();
    assert_eq!(c.backend(), Backend::Local);
    assert_eq!(c.cache_size(), 10 << 30);
    assert_eq!(c.max_output_nodes(), 1_000_000);
    assert_eq!(c.max_output_bytes(), 16 << 30);
    // result.rs states these for callers without a config; the table is where they live.
    assert_eq!(c.max_output_nodes(), crate::DEFAULT_MAX_OUTPUT_NODES);
    assert_eq!(c.max_output_bytes(), crate::DEFAULT_MAX_OUTPUT_BYTES);
    assert_eq!(c.source(&keys::JOBS), Source::Default);

    let c = load(
        Some("jobs = 3\ncache_size = \"1GiB\"\n"),
        &[("LLAMA_JOBS", "5")],
    )
    .unwrap();
    assert_eq!(c.jobs(), 5);
    assert_eq!(c.source(&keys::JOBS), Source::Env("LLAMA_JOBS"));
    assert_eq!(c.cache_size(), 1 << 30);
    assert!(matches!(c.source(&keys::CACHE_SIZE), Source::File(_)));
}

#[test]
fn bad_values_name_their_source() {
    let err = load(None, &[("LLAMA_BACKEND", "cloud")]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("LLAMA_BACKEND") && msg.contains("local, lambda, reapi"),
        "{msg}"
    );
    let err = load(Some("colour = \"red\"\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    let err = load(Some("jobs = 0\n"), &[]).unwrap_err();
    assert!(err.to_string().contains("config.toml"), "{err}");
    let err = load(Some("jobs = \n"), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
}

#[test]
fn every_key_has_a_valid_default_and_a_unique_variable() {
    for key in keys::ALL {
        key.check(&key.default_text())
            .unwrap_or_else(|e| panic!("{}: {e}", key.name()));
        assert_eq!(key.env(), format!("LLAMA_{}", key.name().to_uppercase()));
    }
}

// See: issue 12, defect 11d
#[test]
fn r12_credentials_are_masked_wherever_a_value_is_shown() {
    let token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXRva2VuLXZhbHVl";
    let headers = format!("authorization: Bearer {token}; x-buildbuddy-api-key: k3y");
    let shown = mask_secret("reapi_headers", &headers);
    assert_eq!(
        shown,
        "authorization: Bearer <redacted, 45 bytes>; x-buildbuddy-api-key: <redacted, 3 bytes>"
    );
    assert_eq!(
        mask_secret("reapi_endpoint", "grpcs://me:pw@host:1/x"),
        "grpcs://me:<redacted, 2 bytes>@host:1/x"
    );
    assert_eq!(mask_secret("some_token", "abc"), "<redacted, 3 bytes>");
    assert_eq!(mask_secret("jobs", "8"), "8");
    assert_eq!(mask_secret("reapi_headers", ""), "");
    // A mistyped header (no `:`) is refused without echoing it.
    let mut c = Config::load_from(Path::new("/nonexistent/llama.toml"), |_| None).unwrap();
    let err = c
        .set(
            "reapi_headers",
            &format!("Bearer {token}"),
            Source::Flag("x".into()),
        )
        .unwrap_err()
        .to_string();
    assert!(!err.contains(token), "{err}");
}
