//! s3s-fs, the S3 server the Lambda executor's CAS is tested against.

use super::*;

// --- S3 ---------------------------------------------------------------------------------------

/// s3s-fs on a free loopback port with a fresh root holding one bucket, checking signatures
/// made with [`access_key`](S3Server::access_key) / [`secret_key`](S3Server::secret_key).
pub struct S3Server {
    server: Server,
    // Declared after `server`: the process dies before its files are removed.
    dir: tempfile::TempDir,
    port: u16,
}

impl S3Server {
    /// An AWS SDK S3 client for this server, signing with `secret` (a wrong one tests the
    /// signature check), configured as llama_exec::s3_client configures its own: path-style
    /// addressing, and checksums only where required (digests verify every blob).
    pub fn sdk_client(&self, secret: &str) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(self.endpoint())
                .region(Region::new(self.region()))
                .credentials_provider(Credentials::new(
                    self.access_key(),
                    secret,
                    None,
                    None,
                    "test",
                ))
                .force_path_style(true)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build(),
        )
    }

    pub const BUCKET: &'static str = "llama-test";
    pub const ACCESS_KEY: &'static str = "LLAMATESTACCESSKEY";
    pub const SECRET_KEY: &'static str = "llama-test-secret-key";

    pub fn start() -> S3Server {
        let bin = s3s_fs();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        // s3s-fs serves every directory under its root as a bucket; there is nothing else
        // to creating one.
        fs::create_dir_all(root.join(Self::BUCKET)).expect("mkdir bucket");
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", Self::ACCESS_KEY])
            .args(["--secret-key", Self::SECRET_KEY])
            .arg(&root)
            // info: the listening address; s3s::ops=debug: one "checked access" event per
            // accepted request (and the reason for each rejected one); errors from the rest.
            .env("RUST_LOG", "error,s3s_fs=info,s3s::ops=debug");
        let mut server = Server::spawn("s3s-fs", cmd, &dir.path().join("s3s-fs.log"));
        let port = wait_for("s3s-fs to listen", || {
            server.assert_running();
            let log = server.log();
            let rest = log.split("server is running at http://127.0.0.1:").nth(1)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        });
        wait_for("s3s-fs to accept connections", || {
            server.assert_running();
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()
        });
        S3Server { server, dir, port }
    }

    /// `http://127.0.0.1:PORT`: path-style addressing only (`ENDPOINT/BUCKET/KEY`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    pub fn bucket(&self) -> &'static str {
        Self::BUCKET
    }

    pub fn access_key(&self) -> &'static str {
        Self::ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        Self::SECRET_KEY
    }

    /// Any region is accepted: it is part of the signature, not checked against anything.
    pub fn region(&self) -> &'static str {
        "us-east-1"
    }

    /// The directory s3s-fs stores into: bucket `B`'s object `K` is the file `root/B/K`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The keys of the objects in the bucket, sorted (directories left behind by deleted
    /// objects are not keys).
    pub fn object_keys(&self) -> Vec<String> {
        let base = self.root().join(Self::BUCKET);
        let mut keys: Vec<String> = crate::files_under(&base)
            .iter()
            .filter_map(|p| p.strip_prefix(&base).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// s3s-fs's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Every request that passed the signature and access checks, in order. Each is logged
    /// before it is handled, so a request the client has an answer to is in the list.
    pub fn requests(&self) -> Vec<S3Request> {
        self.log()
            .lines()
            .filter_map(|line| S3Request::parse(line.split_once("checked access, op: ")?.1))
            .collect()
    }

    /// How many accepted requests were operation `op` (as S3 names it: "PutObject",
    /// "GetObject", "HeadObject", "UploadPart", ...) on a key starting with `key_prefix`.
    pub fn count(&self, op: &str, key_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.op == op && r.key.as_deref().is_some_and(|k| k.starts_with(key_prefix)))
            .count()
    }

    /// How many objects under `key_prefix` were written: PutObject plus
    /// CompleteMultipartUpload requests.
    pub fn put_count(&self, key_prefix: &str) -> usize {
        self.count("PutObject", key_prefix) + self.count("CompleteMultipartUpload", key_prefix)
    }
}

/// One accepted S3 request, from s3s-fs's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    pub op: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
}

impl S3Request {
    /// Parses what follows "checked access, op: " in the log:
    /// `PutObject, s3_path: Object { bucket: "b", key: "k/1" }`, `... Bucket { bucket: "b" }`
    /// or `ListBuckets, s3_path: Root`.
    fn parse(s: &str) -> Option<S3Request> {
        let (op, path) = s.split_once(", s3_path: ")?;
        Some(S3Request {
            op: op.to_string(),
            bucket: debug_field(path, "bucket"),
            key: debug_field(path, "key"),
        })
    }
}

/// The string field `name: "..."` of a `{:?}`-formatted struct, unescaped.
fn debug_field(s: &str, name: &str) -> Option<String> {
    let rest = s.split_once(&format!("{name}: \""))?.1;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}
