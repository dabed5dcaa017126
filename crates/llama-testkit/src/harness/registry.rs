//! docker-registry, a real OCI registry to push function images to.

use super::*;

// --- OCI registry: docker-registry --------------------------------------------------------------

/// Debian's docker-registry (distribution 2.8.2), `/usr/bin/docker-registry`. Panics saying
/// how to install it.
pub fn docker_registry() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from("/usr/bin/docker-registry");
        assert!(
            bin.is_file(),
            "{} not found (Debian's docker-registry): {INSTALL_HINT}",
            bin.display()
        );
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("running {} failed: {e}: {INSTALL_HINT}", bin.display()));
        // "/usr/bin/docker-registry github.com/docker/distribution 2.8.2+ds1": argv[0] first.
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let version = text.split_whitespace().last().unwrap_or("");
        assert!(
            version == DOCKER_REGISTRY_VERSION
                || version.starts_with(&format!("{DOCKER_REGISTRY_VERSION}+")),
            "{} reports {text:?}, but the tests are pinned to {DOCKER_REGISTRY_VERSION}: \
             {INSTALL_HINT}",
            bin.display()
        );
        bin
    })
}

/// A real OCI registry on a free loopback port: docker-registry (distribution 2.8.2) over
/// plain HTTP, without authentication, storing into a temporary directory, deletes enabled.
/// Image references are `HOST_PORT/REPOSITORY@sha256:...`; a client must be told to use
/// HTTP for [`host_port`](OciRegistry::host_port).
///
/// What it does (verified by hand): `GET /v2/` answers 200 `{}` with
/// `Docker-Distribution-Api-Version: registry/2.0`; a repository springs into being with
/// its first upload; monolithic uploads (POST `/v2/NAME/blobs/uploads/`, then PUT to the
/// absolute Location with `&digest=`) and OCI manifests by tag and by digest work, as do
/// `_catalog` and `tags/list`. `REGISTRY_*` variables would override the configuration and
/// are removed from its environment.
pub struct OciRegistry {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl OciRegistry {
    /// A registry with empty storage; returns once it listens (a few milliseconds).
    pub fn start() -> OciRegistry {
        let bin = docker_registry();
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("mkdir storage");
        let config = dir.path().join("config.yml");
        let (server, port) = spawn_on_free_port(
            "docker-registry",
            dir.path(),
            |port| {
                fs::write(&config, registry_config(port, &storage)).expect("write config.yml");
                let mut cmd = Command::new(bin);
                cmd.arg("serve").arg(&config).current_dir(dir.path());
                remove_env_starting_with(&mut cmd, &["REGISTRY_"]);
                cmd
            },
            |_, output| output.contains("address already in use"),
        );
        OciRegistry { server, dir, port }
    }

    /// `127.0.0.1:PORT`: the registry part of an image reference.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`: the API is below `/v2/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The storage root: blobs under `docker/registry/v2/blobs/sha256/`, repositories under
    /// `docker/registry/v2/repositories/`.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's output so far: one line per request.
    pub fn log(&self) -> String {
        self.server.log()
    }
}

/// The registry's configuration: loopback only, plain HTTP, filesystem storage in `storage`,
/// deletes enabled, no upload purging (a test never lives for its hours), and a fixed HTTP
/// secret (without one it logs a warning and makes one up).
fn registry_config(port: u16, storage: &Path) -> String {
    format!(
        r#"# Written by OciRegistry (crates/llama-testkit).
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: "{storage}"
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: llama-test
"#,
        storage = storage.display()
    )
}
