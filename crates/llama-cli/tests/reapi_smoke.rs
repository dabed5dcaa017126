//! The REAPI test server itself (llama-testkit, `ReapiServer`): BuildGrid, PostgreSQL and
//! the test worker start, run one action end to end, survive a restart of the server, and
//! stop. A failure here is about the harness or its install (scripts/install-test-servers),
//! not about llama.

use std::process::Command;
use std::time::{Duration, Instant};

use llama_testkit::harness::ReapiServer;

/// A REAPI client in a few lines of Python (the protos come with the BuildGrid venv): uploads
/// an input tree, a Command and an Action, executes it, and prints one JSON object with what
/// came back: the status, exit code, stdout, the output file's contents and mode, and whether
/// the action cache then holds the result. Arguments: HOST:PORT INSTANCE.
const CLIENT: &str = r#"
import hashlib, json, sys, time
import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc

target, instance = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(target)
cas = re_grpc.ContentAddressableStorageStub(channel)

def digest(data):
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

def upload(*blobs):
    missing = cas.FindMissingBlobs(re.FindMissingBlobsRequest(
        instance_name=instance, blob_digests=[digest(b) for b in blobs])).missing_blob_digests
    by_hash = {digest(b).hash: b for b in blobs}
    requests = [re.BatchUpdateBlobsRequest.Request(digest=d, data=by_hash[d.hash]) for d in missing]
    for r in cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(
            instance_name=instance, requests=requests)).responses:
        assert r.status.code == 0, r

def read(d):
    if d.size_bytes == 0:
        return b""
    [r] = cas.BatchReadBlobs(re.BatchReadBlobsRequest(instance_name=instance, digests=[d])).responses
    assert r.status.code == 0, r
    return r.data

hello = b"hello from the input root\n"
sub = re.Directory(files=[re.FileNode(name="hello.txt", digest=digest(hello))]).SerializeToString()
root = re.Directory(directories=[re.DirectoryNode(name="in", digest=digest(sub))]).SerializeToString()
command = re.Command(
    arguments=["/bin/sh", "-c", 'cat in/hello.txt; echo "$GREETING"; cp in/hello.txt out/copy.txt; chmod +x out/copy.txt'],
    environment_variables=[re.Command.EnvironmentVariable(name="GREETING", value="hi there")],
    # out/ does not exist in the input root: the worker creates it, as REAPI requires.
    output_paths=["out/copy.txt"],
).SerializeToString()
action = re.Action(command_digest=digest(command), input_root_digest=digest(root))
action.timeout.seconds = 60
action = action.SerializeToString()
upload(hello, sub, root, command, action)

started = time.monotonic()
execution = re_grpc.ExecutionStub(channel)
for op in execution.Execute(re.ExecuteRequest(instance_name=instance, action_digest=digest(action)), timeout=50):
    pass
elapsed = time.monotonic() - started
assert op.done, op
response = re.ExecuteResponse()
op.response.Unpack(response)
result = response.result
[copy] = result.output_files
ac = re_grpc.ActionCacheStub(channel).GetActionResult(
    re.GetActionResultRequest(instance_name=instance, action_digest=digest(action)))
print(json.dumps({
    "operation": op.name,
    "status": response.status.code,
    "message": response.status.message,
    "exit_code": result.exit_code,
    "stdout": read(result.stdout_digest).decode(),
    "output_path": copy.path,
    "output": read(copy.digest).decode(),
    "output_executable": copy.is_executable,
    "cached": ac.stdout_digest == result.stdout_digest,
    "seconds": elapsed,
}))
"#;

#[test]
fn buildgrid_runs_an_action_end_to_end() {
    let started = Instant::now();
    let reapi = ReapiServer::start(2);
    let up = started.elapsed();
    assert!(reapi.endpoint().starts_with("grpc://127.0.0.1:"));
    assert_eq!(reapi.instance(), ReapiServer::INSTANCE);

    let out = Command::new(reapi.python())
        .args(["-c", CLIENT, &reapi.addr().to_string(), reapi.instance()])
        .output()
        .expect("run the Python REAPI client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the client failed ({}):\n{stdout}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        reapi.log()
    );
    let got: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));
    assert_eq!(got["status"], 0, "{got}\n{}", reapi.log());
    assert_eq!(got["exit_code"], 0, "{got}\n{}", reapi.log());
    assert_eq!(
        got["stdout"], "hello from the input root\nhi there\n",
        "{got}"
    );
    assert_eq!(got["output_path"], "out/copy.txt", "{got}");
    assert_eq!(got["output"], "hello from the input root\n", "{got}");
    assert_eq!(got["output_executable"], true, "{got}");
    // BuildGrid writes the action cache itself when a lease completes with status OK.
    assert_eq!(got["cached"], true, "{got}");
    let operation = got["operation"].as_str().unwrap_or_default();
    assert!(
        operation.starts_with(&format!("{}/", reapi.instance())),
        "{got}"
    );
    assert!(
        reapi.worker_log().contains(": OK exit 0"),
        "{}",
        reapi.log()
    );

    eprintln!(
        "REAPI harness up in {up:.2?} ({}); one action took {:.3} s end to end",
        reapi.startup(),
        got["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    drop(reapi);
    let total = started.elapsed();
    eprintln!("whole test, shutdown included: {total:.2?}");
    assert!(total < Duration::from_secs(60), "took {total:?}");
}

/// Python again, in two steps around a restart of the server. `submit HOST:PORT INSTANCE`
/// uploads and executes an action that takes a while, and prints the operation's name as soon
/// as the server has queued it. `wait HOST:PORT NAME` waits for that operation with
/// WaitExecution (retrying while the server is down) and prints its stdout.
const RESTART_CLIENT: &str = r#"
import hashlib, sys, time
import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc

step, target, arg = sys.argv[1:4]
channel = grpc.insecure_channel(target)
cas = re_grpc.ContentAddressableStorageStub(channel)
execution = re_grpc.ExecutionStub(channel)

def digest(data):
    return re.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))

if step == "submit":
    instance = arg
    root = re.Directory().SerializeToString()
    command = re.Command(arguments=["/bin/sh", "-c", "sleep 3; echo survived"]).SerializeToString()
    action = re.Action(command_digest=digest(command), input_root_digest=digest(root)).SerializeToString()
    cas.BatchUpdateBlobs(re.BatchUpdateBlobsRequest(instance_name=instance, requests=[
        re.BatchUpdateBlobsRequest.Request(digest=digest(b), data=b) for b in (root, command, action)]))
    stream = execution.Execute(re.ExecuteRequest(instance_name=instance, action_digest=digest(action)), timeout=30)
    print(next(stream).name)
    stream.cancel()
else:
    deadline = time.monotonic() + 45
    while True:
        try:
            for op in execution.WaitExecution(re.WaitExecutionRequest(name=arg), timeout=30):
                if op.done:
                    break
            break
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    response = re.ExecuteResponse()
    op.response.Unpack(response)
    instance = arg.rsplit("/", 1)[0] if "/" in arg else ""
    [blob] = cas.BatchReadBlobs(re.BatchReadBlobsRequest(
        instance_name=instance, digests=[response.result.stdout_digest])).responses
    print(response.status.code, response.result.exit_code, blob.data.decode().strip())
"#;

#[test]
fn an_operation_survives_a_restart_of_buildgrid() {
    let started = Instant::now();
    let mut reapi = ReapiServer::start(1);
    let interpreter = reapi.python();
    let python = |args: &[&str]| {
        let out = Command::new(interpreter)
            .args(["-c", RESTART_CLIENT])
            .args(args)
            .output()
            .expect("run the Python REAPI client");
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let target = reapi.addr().to_string();
    let (status, name, err) = python(&["submit", &target, reapi.instance()]);
    assert!(status.success(), "submit: {err}\n{}", reapi.log());

    reapi.kill_server();
    assert!(!reapi.server_running());
    reapi.restart_server();
    assert!(reapi.server_running());

    let (status, got, err) = python(&["wait", &target, &name]);
    assert!(status.success(), "wait {name}: {err}\n{}", reapi.log());
    // Status OK, exit code 0, and the command's stdout: the job outlived the server.
    assert_eq!(got, "0 0 survived", "{}", reapi.log());
    assert!(reapi.server_log().contains("--- bgd server restarted ---"));
    eprintln!("restart test: {:.2?}", started.elapsed());
}
