//! A REAPI server under test control that lies: each test starts one on 127.0.0.1 (port 0),
//! makes it answer Execute, GetActionResult, BatchReadBlobs or ByteStream Read with one
//! hostile shape, and runs an action through llama's real engine and REAPI executor (what
//! `llama invoke` does with backend reapi). Each shape must be refused with an error naming
//! what is wrong, quickly, without crashing, and with nothing written outside the outputs.
//!
//! Run with `--nocapture` to see each case's error and time.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazel_remote_apis::google::bytestream::byte_stream_server::{ByteStream, ByteStreamServer};
use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, QueryWriteStatusResponse, ReadRequest, ReadResponse, WriteRequest,
    WriteResponse,
};
use bazel_remote_apis::google::longrunning::{Operation, operation};
use llama_core::{ActionSpec, Digest, PreparedAction, Store, TreeBuilder, protobuf, reapi};
use llama_exec::{
    CachePolicy, Delivered, Engine, ExecError, OutputMapping, ReapiConfig, ReapiExecutor,
};
use prost::Message;
use reapi::action_cache_server::{ActionCache, ActionCacheServer};
use reapi::capabilities_server::{Capabilities, CapabilitiesServer};
use reapi::content_addressable_storage_server::{
    ContentAddressableStorage, ContentAddressableStorageServer,
};
use reapi::execution_server::{Execution, ExecutionServer};
use tonic::{Request, Response, Status, Streaming};

const SHA256: i32 = reapi::digest_function::Value::Sha256 as i32;

/// What the server does wrong besides the result it answers.
#[derive(Debug, Clone, Default)]
enum Hostility {
    /// Blobs are served as stored.
    #[default]
    Honest,
    /// BatchReadBlobs and ByteStream Read serve these bytes for the blob with this hash.
    Lie { hash: String, bytes: Vec<u8> },
    /// ByteStream Read of the blob with this hash never ends.
    Endless { hash: String },
    /// BatchReadBlobs also answers this blob, which was not asked for.
    Unasked(Vec<u8>),
    /// BatchReadBlobs leaves out every blob asked for.
    Withhold,
}

/// The server's state: its CAS, what it answers, and what it was asked.
#[derive(Default)]
struct Fake {
    blobs: Mutex<HashMap<(String, i64), Vec<u8>>>,
    /// GetActionResult's answer (None: NOT_FOUND).
    cached: Option<reapi::ActionResult>,
    /// Execute's answer.
    executed: reapi::ActionResult,
    hostility: Hostility,
    /// The advertised max_batch_total_size_bytes (0: no limit).
    batch_limit: i64,
    batch_reads: AtomicU64,
    stream_reads: AtomicU64,
    /// Bytes ByteStream Read handed to the transport.
    streamed: Arc<AtomicU64>,
}

impl Fake {
    fn put(&self, bytes: &[u8]) -> reapi::Digest {
        let d = Digest::of_bytes(bytes).to_proto();
        self.blobs
            .lock()
            .unwrap()
            .insert((d.hash.clone(), d.size_bytes), bytes.to_vec());
        d
    }

    fn put_message<M: Message>(&self, m: &M) -> reapi::Digest {
        self.put(&m.encode_to_vec())
    }

    fn get(&self, d: &reapi::Digest) -> Option<Vec<u8>> {
        if let Hostility::Lie { hash, bytes } = &self.hostility
            && *hash == d.hash
        {
            return Some(bytes.clone());
        }
        let blobs = self.blobs.lock().unwrap();
        blobs.get(&(d.hash.clone(), d.size_bytes)).cloned()
    }
}

#[derive(Clone)]
struct Server(Arc<Fake>);

type Out<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Capabilities for Server {
    async fn get_capabilities(
        &self,
        _: Request<reapi::GetCapabilitiesRequest>,
    ) -> Result<Response<reapi::ServerCapabilities>, Status> {
        Ok(Response::new(reapi::ServerCapabilities {
            cache_capabilities: Some(reapi::CacheCapabilities {
                digest_functions: vec![SHA256],
                max_batch_total_size_bytes: self.0.batch_limit,
                ..Default::default()
            }),
            execution_capabilities: Some(reapi::ExecutionCapabilities {
                digest_function: SHA256,
                exec_enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl ActionCache for Server {
    async fn get_action_result(
        &self,
        _: Request<reapi::GetActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        match &self.0.cached {
            Some(r) => Ok(Response::new(r.clone())),
            None => Err(Status::not_found("no entry")),
        }
    }

    async fn update_action_result(
        &self,
        request: Request<reapi::UpdateActionResultRequest>,
    ) -> Result<Response<reapi::ActionResult>, Status> {
        Ok(Response::new(
            request.into_inner().action_result.unwrap_or_default(),
        ))
    }
}

#[tonic::async_trait]
impl ContentAddressableStorage for Server {
    async fn find_missing_blobs(
        &self,
        request: Request<reapi::FindMissingBlobsRequest>,
    ) -> Result<Response<reapi::FindMissingBlobsResponse>, Status> {
        let blobs = self.0.blobs.lock().unwrap();
        let missing_blob_digests = request
            .into_inner()
            .blob_digests
            .into_iter()
            .filter(|d| !blobs.contains_key(&(d.hash.clone(), d.size_bytes)))
            .collect();
        Ok(Response::new(reapi::FindMissingBlobsResponse {
            missing_blob_digests,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<reapi::BatchUpdateBlobsRequest>,
    ) -> Result<Response<reapi::BatchUpdateBlobsResponse>, Status> {
        let mut responses = Vec::new();
        for r in request.into_inner().requests {
            let digest = self.0.put(&r.data);
            responses.push(reapi::batch_update_blobs_response::Response {
                digest: Some(digest),
                status: None,
            });
        }
        Ok(Response::new(reapi::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<reapi::BatchReadBlobsRequest>,
    ) -> Result<Response<reapi::BatchReadBlobsResponse>, Status> {
        self.0.batch_reads.fetch_add(1, Ordering::Relaxed);
        let mut responses = Vec::new();
        if !matches!(self.0.hostility, Hostility::Withhold) {
            for d in request.into_inner().digests {
                let (data, code) = match self.0.get(&d) {
                    Some(data) => (data, 0),
                    None => (Vec::new(), tonic::Code::NotFound as i32),
                };
                responses.push(reapi::batch_read_blobs_response::Response {
                    digest: Some(d),
                    data,
                    status: Some(bazel_remote_apis::google::rpc::Status {
                        code,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
        if let Hostility::Unasked(data) = &self.0.hostility {
            responses.push(reapi::batch_read_blobs_response::Response {
                digest: Some(Digest::of_bytes(data).to_proto()),
                data: data.clone(),
                ..Default::default()
            });
        }
        Ok(Response::new(reapi::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Out<reapi::GetTreeResponse>;

    async fn get_tree(
        &self,
        _: Request<reapi::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        Err(Status::unimplemented("GetTree"))
    }

    async fn split_blob(
        &self,
        _: Request<reapi::SplitBlobRequest>,
    ) -> Result<Response<reapi::SplitBlobResponse>, Status> {
        Err(Status::unimplemented("SplitBlob"))
    }

    type GetChunkMappingStream = Out<reapi::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _: Request<reapi::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(Status::unimplemented("GetChunkMapping"))
    }

    async fn splice_blob(
        &self,
        _: Request<reapi::SpliceBlobRequest>,
    ) -> Result<Response<reapi::SpliceBlobResponse>, Status> {
        Err(Status::unimplemented("SpliceBlob"))
    }

    async fn register_chunk_mapping(
        &self,
        _: Request<Streaming<reapi::RegisterChunkMappingRequest>>,
    ) -> Result<Response<reapi::RegisterChunkMappingResponse>, Status> {
        Err(Status::unimplemented("RegisterChunkMapping"))
    }
}

/// The digest a ByteStream resource name (`[instance/]blobs/HASH/SIZE`) names.
fn resource_digest(name: &str) -> Result<reapi::Digest, Status> {
    let parts: Vec<&str> = name.split('/').collect();
    let at = parts
        .iter()
        .position(|p| *p == "blobs")
        .ok_or_else(|| Status::invalid_argument(format!("resource {name:?}")))?;
    match (parts.get(at + 1), parts.get(at + 2)) {
        (Some(hash), Some(size)) => Ok(reapi::Digest {
            hash: hash.to_string(),
            size_bytes: size
                .parse()
                .map_err(|_| Status::invalid_argument(format!("resource {name:?}")))?,
        }),
        _ => Err(Status::invalid_argument(format!("resource {name:?}"))),
    }
}

#[tonic::async_trait]
impl ByteStream for Server {
    type ReadStream = Out<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.0.stream_reads.fetch_add(1, Ordering::Relaxed);
        let digest = resource_digest(&request.into_inner().resource_name)?;
        let streamed = self.0.streamed.clone();
        if let Hostility::Endless { hash } = &self.0.hostility
            && *hash == digest.hash
        {
            let chunks = std::iter::repeat_with(move || {
                streamed.fetch_add(64 << 10, Ordering::Relaxed);
                Ok(ReadResponse {
                    data: vec![b'x'; 64 << 10],
                })
            });
            return Ok(Response::new(Box::pin(tokio_stream::iter(chunks))));
        }
        let data = self
            .0
            .get(&digest)
            .ok_or_else(|| Status::not_found(format!("blob {}", digest.hash)))?;
        streamed.fetch_add(data.len() as u64, Ordering::Relaxed);
        let chunks: Vec<Result<ReadResponse, Status>> = data
            .chunks(1000)
            .map(|c| Ok(ReadResponse { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn write(
        &self,
        request: Request<Streaming<WriteRequest>>,
    ) -> Result<Response<WriteResponse>, Status> {
        let mut stream = request.into_inner();
        let mut data = Vec::new();
        while let Some(m) = stream.message().await? {
            data.extend_from_slice(&m.data);
            if m.finish_write {
                break;
            }
        }
        self.0.put(&data);
        Ok(Response::new(WriteResponse {
            committed_size: data.len() as i64,
        }))
    }

    async fn query_write_status(
        &self,
        _: Request<QueryWriteStatusRequest>,
    ) -> Result<Response<QueryWriteStatusResponse>, Status> {
        Err(Status::unimplemented("QueryWriteStatus"))
    }
}

#[tonic::async_trait]
impl Execution for Server {
    type ExecuteStream = Out<Operation>;

    async fn execute(
        &self,
        _: Request<reapi::ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let response = reapi::ExecuteResponse {
            result: Some(self.0.executed.clone()),
            ..Default::default()
        };
        let op = Operation {
            name: "operations/hostile".into(),
            done: true,
            result: Some(operation::Result::Response(protobuf::Any {
                type_url: "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse"
                    .into(),
                value: response.encode_to_vec(),
            })),
            ..Default::default()
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(op)]))))
    }

    type WaitExecutionStream = Out<Operation>;

    async fn wait_execution(
        &self,
        _: Request<reapi::WaitExecutionRequest>,
    ) -> Result<Response<Self::WaitExecutionStream>, Status> {
        Err(Status::not_found("no such operation"))
    }
}

/// Starts `fake` on 127.0.0.1, port 0; the server stops when the handle is dropped.
async fn serve(fake: Arc<Fake>) -> (String, AbortOnDrop) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let server = Server(fake);
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CapabilitiesServer::new(server.clone()))
            .add_service(ActionCacheServer::new(server.clone()))
            .add_service(ContentAddressableStorageServer::new(server.clone()))
            .add_service(ByteStreamServer::new(server.clone()))
            .add_service(ExecutionServer::new(server))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("grpc://{addr}"), AbortOnDrop(task))
}

struct AbortOnDrop<T = Result<(), tonic::transport::Error>>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every path under `root` with what it is (a file's bytes, a symlink's target), without
/// following symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut seen = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("symlink -> {:?}", fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                format!("file {:?}", fs::read(&path).unwrap())
            };
            seen.insert(path.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    seen
}

fn etc_passwd() -> Option<(u64, Option<std::time::SystemTime>)> {
    fs::symlink_metadata("/etc/passwd")
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Peak resident memory of this process (all tests), in KiB.
fn peak_rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Each case must be refused (or served genuinely) in well under this.
const CASE_DEADLINE: Duration = Duration::from_secs(15);

struct Ran {
    delivered: Result<Delivered, ExecError>,
    elapsed: Duration,
    /// The local output directory (`work/`).
    work: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ran {
    /// The error, which must name each of `needles`; printed with the case's time.
    fn refused(&self, case: &str, needles: &[&str]) -> String {
        let message = match &self.delivered {
            Ok(d) => panic!(
                "{case}: the hostile answer was accepted: {:?}",
                d.finished.result
            ),
            Err(e) => e.to_string(),
        };
        println!("[{case}] refused in {:?}: {message}", self.elapsed);
        for needle in needles {
            assert!(
                message.contains(needle),
                "{case}: the error does not say {needle:?}: {message}"
            );
        }
        assert_eq!(
            snapshot(&self.work),
            BTreeMap::new(),
            "{case}: something was written for a refused result"
        );
        message
    }
}

/// Runs an action declaring `outputs` (delivered under `work/`) through the engine and a
/// REAPI executor talking to `fake`, and checks that nothing outside `work/` changed.
async fn run(case: &str, fake: Arc<Fake>, outputs: &[&str]) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let work = root.join("work");
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(root.join("outside")).unwrap();
    fs::write(root.join("outside/passwd"), "root:x:0:0\n").unwrap();
    fs::write(root.join("sentinel"), "untouched\n").unwrap();
    let store = Store::open(dir.path().join("store"), 1 << 30).unwrap();
    let (endpoint, _server) = serve(fake).await;
    let mut config = ReapiConfig::new(endpoint);
    config.retry_window = Duration::from_secs(3);
    let executor = ReapiExecutor::new(store.clone(), config);
    let engine = Engine::new(store, Arc::new(executor), CachePolicy::default());
    let action = ActionSpec {
        arguments: vec!["sh".into(), "-c".into(), "true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        output_paths: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
    .prepare(TreeBuilder::new().build())
    .unwrap();
    let mappings: Vec<OutputMapping> = outputs
        .iter()
        .map(|o| OutputMapping {
            remote: o.to_string(),
            local: work.join(o),
        })
        .collect();
    let outside = |root: &Path| {
        let mut s = snapshot(root);
        s.retain(|p, _| !p.starts_with("work"));
        s
    };
    let before = (outside(&root), etc_passwd());
    let started = Instant::now();
    let delivered = tokio::time::timeout(CASE_DEADLINE, deliver(engine, action, mappings))
        .await
        .unwrap_or_else(|_| panic!("{case}: still running after {CASE_DEADLINE:?}"));
    let elapsed = started.elapsed();
    assert_eq!(
        (outside(&root), etc_passwd()),
        before,
        "{case}: something outside the outputs changed"
    );
    Ran {
        delivered,
        elapsed,
        work,
        _dir: dir,
    }
}

async fn deliver(
    engine: Engine,
    action: PreparedAction,
    mappings: Vec<OutputMapping>,
) -> Result<Delivered, ExecError> {
    // In its own task: a panic in llama shows up as a failed join, not as this test's.
    tokio::spawn(async move { engine.run_and_deliver(&action, &mappings).await })
        .await
        .expect("llama panicked on a hostile answer")
}

fn ok_result() -> reapi::ActionResult {
    reapi::ActionResult::default()
}

fn output_file(path: &str, digest: reapi::Digest) -> reapi::OutputFile {
    reapi::OutputFile {
        path: path.into(),
        digest: Some(digest),
        ..Default::default()
    }
}

fn output_dir(path: &str, tree: reapi::Digest) -> reapi::OutputDirectory {
    reapi::OutputDirectory {
        path: path.into(),
        tree_digest: Some(tree),
        ..Default::default()
    }
}

fn file_node(name: &str, digest: reapi::Digest) -> reapi::FileNode {
    reapi::FileNode {
        name: name.into(),
        digest: Some(digest),
        ..Default::default()
    }
}

/// A server answering Execute with `result` (built with the server's CAS at hand).
fn fake_with(
    hostility: Hostility,
    batch_limit: i64,
    result: impl FnOnce(&Fake) -> reapi::ActionResult,
) -> Arc<Fake> {
    let mut fake = Fake {
        hostility,
        batch_limit,
        ..Default::default()
    };
    fake.executed = result(&fake);
    Arc::new(fake)
}

/// A digest of `size` bytes the server does not have (and could not send).
fn huge(size: i64) -> reapi::Digest {
    reapi::Digest {
        hash: Digest::of_bytes(b"x").hex(),
        size_bytes: size,
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_oversize_digests_are_refused_before_reading() {
    let cases: [(&str, reapi::ActionResult, &[&str]); 3] = [
        (
            "output file of 2^50 bytes",
            reapi::ActionResult {
                output_files: vec![output_file("out/f", huge(1 << 50))],
                ..ok_result()
            },
            &["refused", "\"out/f\"", "max_output_bytes"],
        ),
        (
            "stdout of 2^50 bytes",
            reapi::ActionResult {
                stdout_digest: Some(huge(1 << 50)),
                ..ok_result()
            },
            &["refused", "stdout", "max_output_bytes"],
        ),
        (
            "tree of 2^50 bytes",
            reapi::ActionResult {
                output_directories: vec![output_dir("out", huge(1 << 50))],
                ..ok_result()
            },
            &["refused", "\"out\"", "1125899906842624-byte message"],
        ),
    ];
    for (case, result, needles) in cases {
        let fake = fake_with(Hostility::Honest, 0, |_| result);
        let ran = run(case, fake.clone(), &["out/f", "out"]).await;
        ran.refused(case, needles);
        // Refused from the sizes alone: nothing was asked of the CAS.
        assert_eq!(fake.batch_reads.load(Ordering::Relaxed), 0, "{case}");
        assert_eq!(fake.stream_reads.load(Ordering::Relaxed), 0, "{case}");
    }
    let peak = peak_rss_kib();
    println!("[oversize] peak RSS of the test process: {peak} KiB");
    assert!(peak < 1 << 20, "peak RSS {peak} KiB: something allocated");
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_tree_bomb_is_refused_not_expanded() {
    let fake = fake_with(Hostility::Honest, 0, |fake| {
        let blob = fake.put(b"x");
        // 40 levels, each listing the one below twice: 2^40 directories from a few KB.
        let mut dir = reapi::Directory {
            files: vec![file_node("f", blob)],
            ..Default::default()
        };
        let mut children = vec![];
        for _ in 0..40 {
            children.push(dir.clone());
            let digest = Digest::of_message(&dir).to_proto();
            dir = reapi::Directory {
                directories: ["a", "b"]
                    .map(|name| reapi::DirectoryNode {
                        name: name.into(),
                        digest: Some(digest.clone()),
                    })
                    .to_vec(),
                ..Default::default()
            };
        }
        let tree = fake.put_message(&reapi::Tree {
            root: Some(dir),
            children,
        });
        assert!(tree.size_bytes < 8192, "{tree:?}");
        println!(
            "[tree bomb] a {}-byte Tree of 2^40 directories",
            tree.size_bytes
        );
        reapi::ActionResult {
            output_directories: vec![output_dir("out", tree)],
            ..ok_result()
        }
    });
    let ran = run("tree bomb", fake, &["out"]).await;
    ran.refused("tree bomb", &["refused", "max_output_nodes"]);
    assert!(ran.elapsed < Duration::from_secs(5), "{:?}", ran.elapsed);
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_symlinks_pointing_out_are_refused() {
    for target in ["../../etc/passwd", "/etc/passwd", "../../outside/passwd"] {
        let case = format!("output symlink to {target}");
        let fake = fake_with(Hostility::Honest, 0, |_| reapi::ActionResult {
            output_symlinks: vec![reapi::OutputSymlink {
                path: "out/link".into(),
                target: target.into(),
                ..Default::default()
            }],
            ..ok_result()
        });
        let ran = run(&case, fake, &["out/link"]).await;
        ran.refused(&case, &["refused", "\"out/link\"", "outside the outputs"]);
    }
    for target in ["../../../etc/passwd", "/etc/passwd", "sub/../../../x"] {
        let case = format!("symlink in a tree to {target}");
        let fake = fake_with(Hostility::Honest, 0, |fake| {
            let sub = reapi::Directory {
                symlinks: vec![reapi::SymlinkNode {
                    name: "l".into(),
                    target: target.into(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let root = reapi::Directory {
                directories: vec![reapi::DirectoryNode {
                    name: "sub".into(),
                    digest: Some(Digest::of_message(&sub).to_proto()),
                }],
                ..Default::default()
            };
            let tree = fake.put_message(&reapi::Tree {
                root: Some(root),
                children: vec![sub],
            });
            reapi::ActionResult {
                output_directories: vec![output_dir("out", tree)],
                ..ok_result()
            }
        });
        let ran = run(&case, fake, &["out"]).await;
        ran.refused(&case, &["refused", "outside the outputs"]);
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_symlink_staying_inside_is_delivered_unfollowed() {
    // `out/link -> ../outside/passwd` names `work/outside/passwd`: inside the working
    // directory, so accepted, and delivered as a symlink (whose parent `out/` is created),
    // never followed.
    let fake = fake_with(Hostility::Honest, 0, |_| reapi::ActionResult {
        output_symlinks: vec![reapi::OutputSymlink {
            path: "out/link".into(),
            target: "../outside/passwd".into(),
            ..Default::default()
        }],
        ..ok_result()
    });
    let ran = run("symlink staying inside", fake, &["out/link"]).await;
    let delivered = ran.delivered.as_ref().unwrap_or_else(|e| {
        panic!("symlink staying inside: {e}");
    });
    println!("[symlink staying inside] delivered in {:?}", ran.elapsed);
    assert!(delivered.written);
    assert_eq!(
        fs::read_link(ran.work.join("out/link")).unwrap(),
        Path::new("../outside/passwd")
    );
    assert_eq!(snapshot(&ran.work).len(), 2, "{:?}", snapshot(&ran.work));
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_bad_names_are_refused() {
    for path in ["../x", "/tmp/x", "out/../../x", "out//f", "out/\0f", ""] {
        let case = format!("output file path {path:?}");
        let fake = fake_with(Hostility::Honest, 0, |fake| reapi::ActionResult {
            output_files: vec![output_file(path, fake.put(b"hostile\n"))],
            ..ok_result()
        });
        let ran = run(&case, fake, &["out/f"]).await;
        ran.refused(&case, &["refused", "not a plain relative path"]);
    }
    for name in ["..", ".", "a/b", "/etc", "a\0b", ""] {
        let case = format!("Directory entry {name:?}");
        let fake = fake_with(Hostility::Honest, 0, |fake| {
            let root = reapi::Directory {
                files: vec![file_node(name, fake.put(b"hostile\n"))],
                ..Default::default()
            };
            let tree = fake.put_message(&reapi::Tree {
                root: Some(root),
                children: vec![],
            });
            reapi::ActionResult {
                output_directories: vec![output_dir("out", tree)],
                ..ok_result()
            }
        });
        let ran = run(&case, fake, &["out"]).await;
        ran.refused(&case, &["refused", "not a plain file name"]);
    }
}

/// A result naming one output file, `out/f`, with `content`'s digest.
fn one_file(content: &'static [u8]) -> impl FnOnce(&Fake) -> reapi::ActionResult {
    move |fake| reapi::ActionResult {
        output_files: vec![output_file("out/f", fake.put(content))],
        ..ok_result()
    }
}

/// 2,000 bytes: past the 1,024-byte batch limit the ByteStream cases advertise.
const BIG: &[u8] = &[b'g'; 2000];

fn hash_of(content: &[u8]) -> String {
    Digest::of_bytes(content).hex()
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_wrong_bytes_are_refused() {
    let cases: [(&str, &'static [u8], Vec<u8>, i64); 3] = [
        (
            "BatchReadBlobs wrong bytes",
            b"genuine\n",
            b"hostile\n".to_vec(),
            0,
        ),
        ("ByteStream wrong bytes", BIG, vec![b'h'; 2000], 1024),
        ("ByteStream truncated", BIG, BIG[..1000].to_vec(), 1024),
    ];
    for (case, genuine, lie, limit) in cases {
        let hostility = Hostility::Lie {
            hash: hash_of(genuine),
            bytes: lie,
        };
        let fake = fake_with(hostility, limit, one_file(genuine));
        let ran = run(case, fake.clone(), &["out/f"]).await;
        ran.refused(case, &["damaged data", &hash_of(genuine)]);
        let streamed = fake.stream_reads.load(Ordering::Relaxed);
        assert_eq!(streamed > 0, limit > 0, "{case}: read the wrong way");
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_bytestream_extra_bytes_stop_the_read() {
    let mut extra = BIG.to_vec();
    extra.extend_from_slice(b"EXTRA");
    let cases = [
        (
            "ByteStream 5 bytes past the size",
            Hostility::Lie {
                hash: hash_of(BIG),
                bytes: extra,
            },
        ),
        (
            "ByteStream that never ends",
            Hostility::Endless { hash: hash_of(BIG) },
        ),
    ];
    for (case, hostility) in cases {
        let fake = fake_with(hostility, 1024, one_file(BIG));
        let ran = run(case, fake.clone(), &["out/f"]).await;
        ran.refused(case, &["returned more than its 2000 bytes"]);
        let streamed = fake.streamed.load(Ordering::Relaxed);
        println!("[{case}] the server got to hand out {streamed} bytes");
        // Flow control lets the server run ahead a little; the client stopped reading.
        assert!(streamed < 64 << 20, "{case}: {streamed} bytes were read");
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_batch_answers_are_checked() {
    let mut longer = b"genuine\n".to_vec();
    longer.push(b'!');
    let cases: [(&str, Hostility, &[&str]); 4] = [
        (
            "BatchReadBlobs answers a blob not asked for",
            Hostility::Unasked(b"planted\n".to_vec()),
            &["not asked for", &hash_of(b"planted\n")],
        ),
        (
            "BatchReadBlobs answers too many bytes",
            Hostility::Lie {
                hash: hash_of(b"genuine\n"),
                bytes: longer,
            },
            &["answered 9 bytes", &hash_of(b"genuine\n")],
        ),
        (
            "BatchReadBlobs answers too few bytes",
            Hostility::Lie {
                hash: hash_of(b"genuine\n"),
                bytes: b"gen".to_vec(),
            },
            &["answered 3 bytes", &hash_of(b"genuine\n")],
        ),
        (
            "BatchReadBlobs leaves the blob out",
            Hostility::Withhold,
            &["did not return blob", &hash_of(b"genuine\n")],
        ),
    ];
    for (case, hostility, needles) in cases {
        let fake = fake_with(hostility, 0, one_file(b"genuine\n"));
        let ran = run(case, fake, &["out/f"]).await;
        ran.refused(case, needles);
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_hostile_cache_entry_is_a_miss() {
    // The action cache holds a symlink out and a 2^50-byte file; Execute is honest.
    let hostile_entries = [
        reapi::ActionResult {
            output_symlinks: vec![reapi::OutputSymlink {
                path: "out/f".into(),
                target: "../../etc/passwd".into(),
                ..Default::default()
            }],
            ..ok_result()
        },
        reapi::ActionResult {
            output_files: vec![output_file("out/f", huge(1 << 50))],
            ..ok_result()
        },
    ];
    for entry in hostile_entries {
        let mut fake = Fake::default();
        fake.executed = one_file(b"genuine\n")(&fake);
        fake.cached = Some(entry);
        let ran = run("hostile cache entry", Arc::new(fake), &["out/f"]).await;
        let delivered = ran.delivered.as_ref().expect("the action ran for real");
        println!(
            "[hostile cache entry] ignored, executed in {:?}",
            ran.elapsed
        );
        assert!(!delivered.finished.cached);
        assert!(delivered.written);
        assert_eq!(fs::read(ran.work.join("out/f")).unwrap(), b"genuine\n");
        assert_eq!(
            snapshot(&ran.work).len(),
            2,
            "only out/ and out/f: {:?}",
            snapshot(&ran.work)
        );
    }
}

// See: issue 12, hostile-server suite
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_hostile_reapi_deprecated_symlink_fields_are_ignored() {
    // llama reads only `output_symlinks`: symlinks out in the deprecated fields are never
    // placed; the output is reported missing.
    let out = reapi::OutputSymlink {
        path: "out/link".into(),
        target: "/etc/passwd".into(),
        ..Default::default()
    };
    #[allow(deprecated)]
    let result = reapi::ActionResult {
        output_file_symlinks: vec![out.clone()],
        output_directory_symlinks: vec![out],
        ..ok_result()
    };
    let fake = fake_with(Hostility::Honest, 0, |_| result);
    let ran = run("deprecated symlink fields", fake, &["out/link"]).await;
    let delivered = ran.delivered.as_ref().unwrap_or_else(|e| {
        panic!("deprecated symlink fields: {e}");
    });
    println!(
        "[deprecated symlink fields] ignored in {:?}: missing {:?}",
        ran.elapsed, delivered.missing
    );
    assert_eq!(delivered.missing.len(), 1);
    assert!(!delivered.written);
    assert_eq!(snapshot(&ran.work), BTreeMap::new());
}
