#!/usr/bin/env python3
"""A small REAPI worker for the tests: takes leases from BuildGrid's Bots API and runs them
on this host.

BuildGrid ships no installable worker (DESIGN.md, "Test harness"); this one is started by
ReapiServer (crates/llama-testkit/src/harness/reapi.rs) with the Python of the BuildGrid venv,
whose `buildgrid` package carries the generated protos it needs (REAPI v2,
google.devtools.remoteworkers.v1test2, ByteStream, google.rpc).

    worker.py --server 127.0.0.1:PORT --instance NAME [--bots N] [--work-dir DIR]

For each lease it
  1. reads the Action (the lease payload: BuildGrid packs the whole Action, older servers a
     Digest of it), the Command and the input tree from the CAS (BatchReadBlobs for small
     blobs, ByteStream for the others), every digest verified;
  2. materialises the tree in a fresh directory, WORK_DIR/lease-XXXXXXXX/root (a new path
     for every lease), with executable bits (or NodeProperties.unix_mode) and symlinks;
     files come from a cache of blobs fetched before (WORK_DIR/cache), so a toolchain
     shipped with every action crosses gRPC once; creates the working directory and the
     parent directories of every output path (REAPI requires it);
  3. runs the command there with exactly the Command's environment (no variable of the
     worker leaks in; an unqualified program is looked up in that environment's PATH, or in
     /bin:/usr/bin when it has none), stdin from /dev/null, in its own process group,
     killed with the group at Action.timeout (default --default-timeout);
  4. uploads what exists of the declared outputs -- Command.output_paths (REAPI v2.1) or,
     when that is empty, the older output_files / output_directories -- plus stdout and
     stderr, skipping blobs the CAS already has (FindMissingBlobs);
  5. completes the lease with an ActionResult (lease.result) and a google.rpc.Status.

While a lease runs its bot reports it ACTIVE every 5 s; a lease the server drops or
cancels (CancelOperation) has its process group killed then.

It never writes the action cache: BuildGrid 0.4.4 does, when a lease completes with status
OK and the Action has no do_not_cache (Scheduler._complete_job), so do_not_cache is honoured
there. Results with a non-zero exit code are cached only if the server's action cache has
cache-failed-actions set.

Concurrency: --bots N opens N bot sessions (bot ids PREFIX-0 .. PREFIX-N-1), one thread
each, each with capacity 1, so N leases run at once. One session of capacity N would need
its long-polling UpdateBotSession cancelled whenever a lease completes (else the completion
waits for the poll to time out); N sessions of one lease each report at once and are
scheduled the same. Bot ids are stable: a restarted worker replaces its old sessions and
BuildGrid requeues whatever they held.

Statuses (ExecuteResponse.status, as the client sees them):
  OK                    the command ran; its exit code is in the ActionResult, whatever it is.
  FAILED_PRECONDITION   an input blob (Action, Command, Directory or file) is missing from
                        the CAS; a PreconditionFailure detail names each one as
                        type "MISSING", subject "blobs/HASH/SIZE".
  INVALID_ARGUMENT      the command cannot be started (no such program, not executable, no
                        arguments) or the input tree / an output path is malformed
                        (absolute, "..", a name with "/").
  DEADLINE_EXCEEDED     the timeout passed; the process group was killed; the ActionResult
                        still carries the stdout, stderr and outputs so far.
  INTERNAL              anything else (the worker's own failure); BuildGrid retries those
                        (and UNAVAILABLE) up to max-job-attempts times before giving up.

Empty stdout or stderr leaves stdout_digest / stderr_digest unset (REAPI allows either).
Output symlinks are reported as symlinks, not followed (output_symlinks for output_paths,
output_file_symlinks / output_directory_symlinks for the older fields).

The server may restart at any time: every RPC is retried on UNAVAILABLE (and other
transport errors) with a short backoff, a completed lease is kept until the server has
acknowledged it, and a session the server no longer knows is recreated. Logs one line per
lease on stderr.
"""

import argparse
import hashlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import grpc
from google.protobuf import timestamp_pb2

from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid._protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid._protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildgrid._protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc, worker_pb2
from buildgrid._protos.google.rpc import code_pb2, error_details_pb2, status_pb2

LOG = logging.getLogger("worker")

# Blobs up to this size go through BatchReadBlobs / BatchUpdateBlobs, in batches of at most
# BATCH_BYTES; larger ones through ByteStream in CHUNK-sized messages. BuildGrid 0.4.4
# refuses batches over 4 MiB - 1024 bytes (its max_batch_total_size_bytes) and gRPC's
# default message limit is 4 MiB, so both stay well below.
SMALL_BLOB = 1 << 20
BATCH_BYTES = 2 << 20
BATCH_COUNT = 500
CHUNK = 1 << 20

# UpdateBotSession long-polls for a lease for 80% of the call's deadline (at least 3.75 s,
# or BuildGrid assigns nothing); a running lease is reported as still ACTIVE this often.
POLL_SECONDS = 30.0
HEARTBEAT_SECONDS = 5.0

# Codes worth retrying an RPC for: the server is restarting or the connection dropped.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class ActionError(Exception):
    """A failure that completes the lease with `code` (a google.rpc.Code) and a message."""

    def __init__(self, code, message, missing=()):
        super().__init__(message)
        self.code = code
        self.missing = list(missing)

    def status(self):
        status = status_pb2.Status(code=self.code, message=str(self))
        if self.missing:
            failure = error_details_pb2.PreconditionFailure()
            for d in self.missing:
                failure.violations.add(
                    type="MISSING", subject=f"blobs/{d.hash}/{d.size_bytes}", description="missing from the CAS"
                )
            status.details.add().Pack(failure)
        return status


def digest_of(data):
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def digest_of_file(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return re_pb2.Digest(hash=h.hexdigest(), size_bytes=size)


def key(d):
    return (d.hash, d.size_bytes)


def now_ts():
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def retrying(what, call, deadline=120.0):
    """`call()`, retried on transient gRPC errors with a short backoff for up to `deadline`
    seconds (the server may be restarting)."""
    give_up = time.monotonic() + deadline
    delay = 0.05
    while True:
        try:
            return call()
        except grpc.RpcError as e:
            if e.code() not in TRANSIENT or time.monotonic() > give_up:
                raise
            LOG.debug("%s: %s, retrying", what, e.code())
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class Cas:
    """The CAS of one instance: verified reads, deduplicated uploads."""

    def __init__(self, channel, instance):
        self.instance = instance
        self.cas = re_grpc.ContentAddressableStorageStub(channel)
        self.bytestream = bytestream_pb2_grpc.ByteStreamStub(channel)

    def _resource(self, d, upload=False):
        name = f"blobs/{d.hash}/{d.size_bytes}"
        if upload:
            name = f"uploads/{uuid.uuid4()}/{name}"
        return f"{self.instance}/{name}" if self.instance else name

    # --- reading ---

    def read_many(self, digests, sink):
        """Reads each distinct digest and calls sink(digest, data) for it. Raises ActionError
        (FAILED_PRECONDITION) naming every blob that is missing."""
        todo = {}
        for d in digests:
            todo.setdefault(key(d), d)
        missing = []
        batch, batch_bytes = [], 0

        def flush():
            nonlocal batch, batch_bytes
            if not batch:
                return
            req = re_pb2.BatchReadBlobsRequest(instance_name=self.instance, digests=batch)
            resp = retrying("BatchReadBlobs", lambda: self.cas.BatchReadBlobs(req, timeout=60))
            for r in resp.responses:
                if r.status.code == code_pb2.NOT_FOUND:
                    missing.append(r.digest)
                elif r.status.code != code_pb2.OK:
                    raise ActionError(code_pb2.INTERNAL, f"BatchReadBlobs {r.digest.hash}: {r.status}")
                else:
                    sink(r.digest, self._verified(r.digest, r.data))
            batch, batch_bytes = [], 0

        for d in todo.values():
            if d.size_bytes == 0:
                sink(d, self._verified(d, b""))
            elif d.size_bytes > SMALL_BLOB:
                data = self.read_stream(d)
                if data is None:
                    missing.append(d)
                else:
                    sink(d, data)
            else:
                if batch_bytes + d.size_bytes > BATCH_BYTES or len(batch) >= BATCH_COUNT:
                    flush()
                batch.append(d)
                batch_bytes += d.size_bytes
        flush()
        if missing:
            names = ", ".join(f"{d.hash}/{d.size_bytes}" for d in missing)
            raise ActionError(code_pb2.FAILED_PRECONDITION, f"missing from the CAS: {names}", missing)

    def read(self, d):
        out = {}
        self.read_many([d], lambda got, data: out.setdefault(key(got), data))
        return out[key(d)]

    def read_message(self, d, message_type):
        message = message_type()
        message.ParseFromString(self.read(d))
        return message

    def read_stream(self, d):
        """The blob through ByteStream.Read, or None if the CAS does not have it."""

        def call():
            req = bytestream_pb2.ReadRequest(resource_name=self._resource(d))
            return b"".join(r.data for r in self.bytestream.Read(req, timeout=300))

        try:
            return self._verified(d, retrying("ByteStream.Read", call))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    @staticmethod
    def _verified(d, data):
        got = digest_of(data)
        if key(got) != key(d):
            raise ActionError(code_pb2.INTERNAL, f"blob {d.hash}/{d.size_bytes} read back as {got.hash}/{got.size_bytes}")
        return data

    # --- writing ---

    def upload(self, blobs):
        """Uploads the blobs the CAS does not have yet. `blobs` maps (hash, size) to
        (digest, bytes) or (digest, path of a file with those contents)."""
        if not blobs:
            return
        digests = [d for d, _ in blobs.values() if d.size_bytes > 0]
        missing = []
        for i in range(0, len(digests), BATCH_COUNT):
            req = re_pb2.FindMissingBlobsRequest(instance_name=self.instance, blob_digests=digests[i : i + BATCH_COUNT])
            resp = retrying("FindMissingBlobs", lambda: self.cas.FindMissingBlobs(req, timeout=60))
            missing.extend(resp.missing_blob_digests)
        batch, batch_bytes = [], 0

        def flush():
            nonlocal batch, batch_bytes
            if not batch:
                return
            req = re_pb2.BatchUpdateBlobsRequest(instance_name=self.instance, requests=batch)
            resp = retrying("BatchUpdateBlobs", lambda: self.cas.BatchUpdateBlobs(req, timeout=60))
            for r in resp.responses:
                if r.status.code != code_pb2.OK:
                    raise ActionError(code_pb2.INTERNAL, f"BatchUpdateBlobs {r.digest.hash}: {r.status}")
            batch, batch_bytes = [], 0

        for d in missing:
            _, source = blobs[key(d)]
            if d.size_bytes > SMALL_BLOB:
                self._write_stream(d, source)
                continue
            data = source if isinstance(source, bytes) else open(source, "rb").read()
            if batch_bytes + d.size_bytes > BATCH_BYTES or len(batch) >= BATCH_COUNT:
                flush()
            batch.append(re_pb2.BatchUpdateBlobsRequest.Request(digest=d, data=data))
            batch_bytes += d.size_bytes
        flush()

    def _write_stream(self, d, source):
        def requests():
            name = self._resource(d, upload=True)
            offset = 0
            f = None if isinstance(source, bytes) else open(source, "rb")
            try:
                while True:
                    chunk = source[offset : offset + CHUNK] if f is None else f.read(CHUNK)
                    last = offset + len(chunk) >= d.size_bytes
                    yield bytestream_pb2.WriteRequest(
                        resource_name=name if offset == 0 else "", write_offset=offset, data=chunk, finish_write=last
                    )
                    offset += len(chunk)
                    if last or not chunk:
                        return
            finally:
                if f is not None:
                    f.close()

        resp = retrying("ByteStream.Write", lambda: self.bytestream.Write(requests(), timeout=300))
        if resp.committed_size != d.size_bytes:
            raise ActionError(code_pb2.INTERNAL, f"ByteStream.Write {d.hash}: committed {resp.committed_size}")


def checked_name(name, what):
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ActionError(code_pb2.INVALID_ARGUMENT, f"invalid {what} name {name!r} in the input tree")
    return name


def checked_relative(path, what):
    """A relative path that stays inside the input root ("" and "." mean the root)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise ActionError(code_pb2.INVALID_ARGUMENT, f"{what} {path!r} is not a relative path inside the input root")
    return os.path.join(*parts) if parts else ""


def file_mode(node):
    if node.HasField("node_properties") and node.node_properties.HasField("unix_mode"):
        return node.node_properties.unix_mode.value & 0o7777
    return 0o755 if node.is_executable else 0o644


class BlobCache:
    """Input files fetched before, one file per digest, shared by all bots: a remote compile
    ships the whole toolchain (tens to hundreds of MB) with every action, which would
    otherwise cross gRPC again for every lease. Files are copied out of it, never linked, so
    an action that writes to an input cannot change it. Unbounded: it lives in the work
    directory, which goes with the test."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, d):
        return os.path.join(self.directory, f"{d.hash}-{d.size_bytes}")

    def put(self, d, data):
        tmp = f"{self.path(d)}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path(d))


def materialise(cas, cache, root_digest, dest):
    """Writes the tree `root_digest` into the existing directory `dest`."""
    level = [(root_digest, dest)]
    files = {}  # (hash, size) -> [(path, mode)]
    file_digests = {}
    while level:
        dirs = {}
        cas.read_many([d for d, _ in level], lambda d, data: dirs.setdefault(key(d), data))
        next_level = []
        for d, path in level:
            directory = re_pb2.Directory()
            directory.ParseFromString(dirs[key(d)])
            for node in directory.directories:
                sub = os.path.join(path, checked_name(node.name, "directory"))
                os.mkdir(sub)
                next_level.append((node.digest, sub))
            for node in directory.files:
                target = os.path.join(path, checked_name(node.name, "file"))
                files.setdefault(key(node.digest), []).append((target, file_mode(node)))
                file_digests[key(node.digest)] = node.digest
            for node in directory.symlinks:
                os.symlink(node.target, os.path.join(path, checked_name(node.name, "symlink")))
        level = next_level

    def place(d):
        for path, mode in files[key(d)]:
            shutil.copyfile(cache.path(d), path)
            os.chmod(path, mode)

    def fetched(d, data):
        cache.put(d, data)
        place(d)

    missing = []
    for d in file_digests.values():
        if os.path.exists(cache.path(d)):
            place(d)
        else:
            missing.append(d)
    cas.read_many(missing, fetched)


def tree_of(root, blobs):
    """The Tree of the directory `root`, with every file added to `blobs`; returns
    (Tree, digest of the root Directory)."""

    def walk(path, children):
        directory = re_pb2.Directory()
        for entry in sorted(os.scandir(path), key=lambda e: e.name.encode()):
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                directory.symlinks.add(name=entry.name, target=os.readlink(entry.path))
            elif stat.S_ISDIR(st.st_mode):
                sub = walk(entry.path, children)
                data = sub.SerializeToString()
                directory.directories.add(name=entry.name, digest=digest_of(data))
                if key(digest_of(data)) not in children:
                    children[key(digest_of(data))] = sub
            elif stat.S_ISREG(st.st_mode):
                d = digest_of_file(entry.path)
                blobs[key(d)] = (d, entry.path)
                directory.files.add(name=entry.name, digest=d, is_executable=bool(st.st_mode & 0o100))
        return directory

    children = {}
    root_dir = walk(root, children)
    # Parents before children: reversed post-order of a walk that records each directory
    # after its subdirectories.
    tree = re_pb2.Tree(root=root_dir, children=list(reversed(list(children.values()))))
    root_data = root_dir.SerializeToString()
    blobs[key(digest_of(root_data))] = (digest_of(root_data), root_data)
    for child in children.values():
        data = child.SerializeToString()
        blobs[key(digest_of(data))] = (digest_of(data), data)
    return tree, digest_of(root_data)


def collect_outputs(command, workdir, result, blobs):
    """Fills `result` with whatever exists of the declared outputs, adding their blobs."""

    def add_file(path, full):
        d = digest_of_file(full)
        blobs[key(d)] = (d, full)
        is_exec = bool(os.stat(full).st_mode & 0o100)
        result.output_files.add(path=path, digest=d, is_executable=is_exec)

    def add_dir(path, full):
        tree, root_digest = tree_of(full, blobs)
        data = tree.SerializeToString()
        blobs[key(digest_of(data))] = (digest_of(data), data)
        result.output_directories.add(
            path=path, tree_digest=digest_of(data), root_directory_digest=root_digest, is_topologically_sorted=True
        )

    if command.output_paths:
        for path in command.output_paths:
            full = os.path.join(workdir, checked_relative(path, "output path"))
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                result.output_symlinks.add(path=path, target=os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                add_dir(path, full)
            elif stat.S_ISREG(st.st_mode):
                add_file(path, full)
        return

    for path in command.output_files:
        full = os.path.join(workdir, checked_relative(path, "output file"))
        if os.path.islink(full):
            result.output_file_symlinks.add(path=path, target=os.readlink(full))
        elif os.path.isfile(full):
            add_file(path, full)
    for path in command.output_directories:
        full = os.path.join(workdir, checked_relative(path, "output directory"))
        if os.path.islink(full):
            result.output_directory_symlinks.add(path=path, target=os.readlink(full))
        elif os.path.isdir(full):
            add_dir(path, full)


class Run:
    """One lease being executed, on a thread of its own."""

    def __init__(self, worker, bot_id, lease):
        self.worker = worker
        self.bot_id = bot_id
        self.lease = lease
        self.cancelled = threading.Event()
        self.process = None
        self.status = None
        self.result = None
        self.thread = threading.Thread(target=self._run, name=f"lease-{lease.id}", daemon=True)
        self.thread.start()

    def cancel(self):
        """The server dropped the lease: kill the command; its result is not reported."""
        self.cancelled.set()
        self.kill()

    def kill(self):
        p = self.process
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _run(self):
        started = time.monotonic()
        scratch = tempfile.mkdtemp(prefix="lease-", dir=self.worker.work_dir)
        meta = re_pb2.ExecutedActionMetadata(worker=self.bot_id)
        result = re_pb2.ActionResult()
        try:
            status = self._execute(scratch, meta, result)
        except ActionError as e:
            status = e.status()
        except Exception as e:  # the worker's own failure: let BuildGrid retry the job
            LOG.exception("lease %s failed", self.lease.id)
            status = status_pb2.Status(code=code_pb2.INTERNAL, message=f"test worker: {e!r}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        result.execution_metadata.CopyFrom(meta)
        self.result, self.status = result, status
        LOG.info(
            "lease %s: %s exit %d in %.3fs%s",
            self.lease.id,
            "CANCELLED (not reported)" if self.cancelled.is_set() else code_pb2.Code.Name(status.code),
            result.exit_code,
            time.monotonic() - started,
            f" ({status.message})" if status.message else "",
        )

    def _action(self, cas):
        payload = self.lease.payload
        if payload.Is(re_pb2.Action.DESCRIPTOR):
            action = re_pb2.Action()
            payload.Unpack(action)
            return action
        if payload.Is(re_pb2.Digest.DESCRIPTOR):
            d = re_pb2.Digest()
            payload.Unpack(d)
            return cas.read_message(d, re_pb2.Action)
        raise ActionError(code_pb2.INVALID_ARGUMENT, f"unknown lease payload {payload.type_url}")

    def _execute(self, scratch, meta, result):
        cas = self.worker.cas
        meta.input_fetch_start_timestamp.CopyFrom(now_ts())
        action = self._action(cas)
        command = cas.read_message(action.command_digest, re_pb2.Command)
        if not command.arguments:
            raise ActionError(code_pb2.INVALID_ARGUMENT, "the Command has no arguments")
        root = os.path.join(scratch, "root")
        os.mkdir(root)
        try:
            materialise(cas, self.worker.cache, action.input_root_digest, root)
        except OSError as e:  # e.g. a name twice in one Directory
            raise ActionError(code_pb2.INVALID_ARGUMENT, f"cannot materialise the input tree: {e}")
        meta.input_fetch_completed_timestamp.CopyFrom(now_ts())

        workdir = os.path.join(root, checked_relative(command.working_directory, "working directory"))
        declared = list(command.output_paths) or list(command.output_files) + list(command.output_directories)
        try:
            os.makedirs(workdir, exist_ok=True)
            for path in declared:
                parent = os.path.dirname(os.path.join(workdir, checked_relative(path, "output path")))
                os.makedirs(parent, exist_ok=True)
        except OSError as e:
            # An input file where a directory has to be: the action's fault, not worth a retry.
            raise ActionError(code_pb2.INVALID_ARGUMENT, f"cannot create {e.filename}: {e.strerror}")

        env = {v.name: v.value for v in command.environment_variables}
        timeout = action.timeout.ToTimedelta().total_seconds() or self.worker.default_timeout
        stdout_path = os.path.join(scratch, "stdout")
        stderr_path = os.path.join(scratch, "stderr")
        timed_out = False
        meta.execution_start_timestamp.CopyFrom(now_ts())
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            try:
                self.process = subprocess.Popen(
                    list(command.arguments),
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                raise ActionError(code_pb2.INVALID_ARGUMENT, f"cannot run {command.arguments[0]!r}: {e.strerror}")
            if self.cancelled.is_set():
                self.cancel()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self.kill()
                self.process.wait()
            # Whatever the command left running in its group goes with it.
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        meta.execution_completed_timestamp.CopyFrom(now_ts())
        rc = self.process.returncode
        result.exit_code = rc if rc >= 0 else 128 - rc

        meta.output_upload_start_timestamp.CopyFrom(now_ts())
        blobs = {}
        collect_outputs(command, workdir, result, blobs)
        for path, field in ((stdout_path, result.stdout_digest), (stderr_path, result.stderr_digest)):
            if os.path.getsize(path) > 0:
                d = digest_of_file(path)
                blobs[key(d)] = (d, path)
                field.CopyFrom(d)
        cas.upload(blobs)
        meta.output_upload_completed_timestamp.CopyFrom(now_ts())
        if timed_out:
            return status_pb2.Status(
                code=code_pb2.DEADLINE_EXCEEDED, message=f"the action timed out after {timeout:g} s and was killed"
            )
        return status_pb2.Status(code=code_pb2.OK)


class Worker:
    def __init__(self, args):
        options = [
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
            # Reconnect quickly after a server restart (gRPC's default backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self.channel = grpc.insecure_channel(args.server, options=options)
        self.instance = args.instance
        self.cas = Cas(self.channel, args.instance)
        self.bots = bots_pb2_grpc.BotsStub(self.channel)
        self.work_dir = args.work_dir or tempfile.mkdtemp(prefix="reapi-worker-")
        os.makedirs(self.work_dir, exist_ok=True)
        self.cache = BlobCache(os.path.join(self.work_dir, "cache"))
        self.default_timeout = args.default_timeout
        self.prefix = args.bot_id_prefix
        self.properties = [tuple(p.split("=", 1)) for p in args.property]

    def bot_session(self, bot_id):
        device = worker_pb2.Device(handle=bot_id)
        for k, v in self.properties:
            device.properties.add(key=k, value=v)
        worker = worker_pb2.Worker(devices=[device])
        worker.configs.add(key="capacity", value="1")
        return bots_pb2.BotSession(bot_id=bot_id, status=bots_pb2.OK, worker=worker)

    def serve(self, index):
        bot_id = f"{self.prefix}-{index}"
        threading.current_thread().name = bot_id
        session = None
        run = None  # the lease being executed, if any
        delay = 0.05
        while True:
            try:
                if session is None:
                    req = bots_pb2.CreateBotSessionRequest(parent=self.instance, bot_session=self.bot_session(bot_id))
                    session = self.bots.CreateBotSession(req, timeout=POLL_SECONDS)
                    LOG.info("%s: session %s", bot_id, session.name)
                else:
                    req = bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session)
                    session = self.bots.UpdateBotSession(req, timeout=POLL_SECONDS)
                delay = 0.05
            except grpc.RpcError as e:
                if e.code() in TRANSIENT:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                # The server no longer knows this session (it expired, or another one took
                # the bot id): start over; BuildGrid has requeued its lease.
                LOG.warning("%s: %s: %s; new session", bot_id, e.code(), e.details())
                if run is not None:
                    run.cancel()
                    run = None
                session = None
                time.sleep(delay)
                continue

            if run is not None:
                mine = [lease for lease in session.leases if lease.id == run.lease.id]
                if not mine or mine[0].state == bots_pb2.CANCELLED:
                    LOG.info("%s: lease %s cancelled by the server", bot_id, run.lease.id)
                    run.cancel()
                    run = None
            # Accept new leases (capacity 1: at most one).
            for lease in session.leases:
                if lease.state == bots_pb2.PENDING:
                    lease.state = bots_pb2.ACTIVE
                if lease.state == bots_pb2.ACTIVE and run is None:
                    run = Run(self, bot_id, lease)
            if run is None:
                continue
            run.thread.join(HEARTBEAT_SECONDS)
            if run.thread.is_alive():
                continue  # heartbeat: the next UpdateBotSession reports it ACTIVE
            for lease in session.leases:
                if lease.id == run.lease.id:
                    lease.state = bots_pb2.COMPLETED
                    lease.status.CopyFrom(run.status)
                    lease.result.Pack(run.result)
            run = None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="HOST:PORT of BuildGrid's Bots and CAS services")
    p.add_argument("--instance", default="", help="the REAPI instance name")
    p.add_argument("--bots", type=int, default=1, help="concurrent leases (one bot session each)")
    p.add_argument("--work-dir", help="where leases run and inputs are cached (default: a new temporary directory)")
    p.add_argument("--default-timeout", type=float, default=600.0, help="seconds, for actions without a timeout")
    p.add_argument("--bot-id-prefix", default=f"llama-test-{socket.gethostname()}")
    p.add_argument("--property", action="append", default=[], help="KEY=VALUE platform property of the bots")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(threadName)s %(message)s",
        stream=sys.stderr,
    )
    worker = Worker(args)
    threads = [threading.Thread(target=worker.serve, args=(i,), daemon=True) for i in range(args.bots)]
    for t in threads:
        t.start()
    LOG.info("worker ready: %d bots on %s, instance %r, in %s", args.bots, args.server, args.instance, worker.work_dir)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
