//! ByteStream `Write` and `Read`: blobs too big for a batch, moved in
//! [`BYTESTREAM_CHUNK`](super::BYTESTREAM_CHUNK) messages, hashed on the way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use llama_core::{BlobSource, Digest, Store, StoreError};
use tokio::io::AsyncReadExt;
use tonic::Status;
use tonic::transport::Channel;

use super::cas::{Download, Upload, changed};
use super::connect::Conn;
use super::retry::Backoff;
use super::{BYTESTREAM_CHUNK, ReapiExecutor, remote_error};
use crate::executor::ExecError;

impl ReapiExecutor {
    /// Uploads one blob with ByteStream Write after `wait`, in a task of `tasks`.
    pub(super) fn spawn_write(
        &self,
        conn: &Conn,
        tasks: &mut tokio::task::JoinSet<Written>,
        digest: Digest,
        source: BlobSource,
        backoff: Option<Backoff>,
        wait: Duration,
    ) {
        let channel = conn.channel.clone();
        let request_meta = self.request(conn, ());
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            instance_prefix(&self.config.instance),
            upload_id(&digest),
            digest.hex(),
            digest.size()
        );
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let result = write_blob(channel, request_meta, resource, &digest, &source).await;
            (digest, source, backoff, result)
        });
    }

    /// Downloads one blob with ByteStream Read after `wait`, in a task of `tasks`.
    pub(super) fn spawn_read(
        &self,
        conn: &Conn,
        tasks: &mut tokio::task::JoinSet<Read>,
        digest: Digest,
        backoff: Option<Backoff>,
        wait: Duration,
    ) {
        let channel = conn.channel.clone();
        let request = self.request(
            conn,
            ReadRequest {
                resource_name: format!(
                    "{}blobs/{}/{}",
                    instance_prefix(&self.config.instance),
                    digest.hex(),
                    digest.size()
                ),
                read_offset: 0,
                read_limit: 0,
            },
        );
        let store = self.store.clone();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            let result = read_blob(channel, request, &digest, &store).await;
            (digest, backoff, result)
        });
    }
}

/// A ByteStream Write's blob, its source, its retries so far and how it went.
pub(super) type Written = (Digest, BlobSource, Option<Backoff>, Result<(), Upload>);

/// A ByteStream Read's blob, its retries so far and how it went.
pub(super) type Read = (Digest, Option<Backoff>, Result<(), Download>);

/// `INSTANCE/` or nothing, the prefix of ByteStream resource names.
pub(super) fn instance_prefix(instance: &str) -> String {
    if instance.is_empty() {
        String::new()
    } else {
        format!("{instance}/")
    }
}

/// A fresh UUID-shaped upload id (ByteStream wants one per write).
pub(super) fn upload_id(digest: &Digest) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!(
        "{}-{}-{}-{}",
        std::process::id(),
        now.as_nanos(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        digest
    );
    let h = Digest::of_bytes(seed.as_bytes()).hex();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// Uploads one blob with ByteStream Write, in [`BYTESTREAM_CHUNK`] messages read from the
/// source as they are sent; the data is hashed on the way and the write not finished when
/// it does not match.
pub(super) async fn write_blob(
    channel: Channel,
    meta: tonic::Request<()>,
    resource: String,
    digest: &Digest,
    source: &BlobSource,
) -> Result<(), Upload> {
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let producer = {
        let (digest, source) = (*digest, source.clone());
        tokio::spawn(async move {
            let mut hasher = llama_core::Hasher::default();
            let mut offset = 0u64;
            let mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = match &source {
                BlobSource::Bytes(data) => Box::new(std::io::Cursor::new(data.to_vec())),
                BlobSource::File(path) => match tokio::fs::File::open(path).await {
                    Ok(f) => Box::new(f),
                    Err(error) => {
                        return Err(ExecError::Scratch {
                            path: path.clone(),
                            error,
                        });
                    }
                },
            };
            loop {
                let mut chunk = Vec::with_capacity(BYTESTREAM_CHUNK);
                let n = (&mut reader)
                    .take(BYTESTREAM_CHUNK as u64)
                    .read_to_end(&mut chunk)
                    .await
                    .map_err(|error| match &source {
                        BlobSource::File(path) => ExecError::Scratch {
                            path: path.clone(),
                            error,
                        },
                        BlobSource::Bytes(_) => ExecError::Task(error.to_string()),
                    })?;
                hasher.update(&chunk);
                let end = offset + n as u64;
                let last = n < BYTESTREAM_CHUNK || end >= digest.size();
                if last && std::mem::take(&mut hasher).finish() != digest {
                    // Dropping the sender without finish_write aborts the upload.
                    return Err(changed(&digest, &source));
                }
                let message = WriteRequest {
                    resource_name: String::new(),
                    write_offset: offset as i64,
                    finish_write: last,
                    data: chunk,
                };
                if tx.send(message).await.is_err() {
                    // The call ended early; its status says why.
                    return Ok(());
                }
                offset = end;
                if last {
                    return Ok(());
                }
            }
        })
    };
    // The first message names the resource; the producer fills in the rest.
    let first_resource = resource;
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), {
        let mut first = true;
        move |mut m: WriteRequest| {
            if first {
                m.resource_name = first_resource.clone();
                first = false;
            }
            m
        }
    });
    let mut request = tonic::Request::new(stream);
    *request.metadata_mut() = meta.metadata().clone();
    let mut client = ByteStreamClient::new(channel);
    let written = client.write(request).await;
    match producer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Upload::Source(e)),
        Err(e) => return Err(Upload::Source(ExecError::Task(e.to_string()))),
    }
    let response = written.map_err(Upload::Rpc)?.into_inner();
    if response.committed_size != digest.size() as i64 && response.committed_size != -1 {
        return Err(Upload::Rpc(Status::data_loss(format!(
            "the server committed {} of {} bytes",
            response.committed_size,
            digest.size()
        ))));
    }
    Ok(())
}

/// Downloads one blob with ByteStream Read into a temporary file of the store, verified,
/// then moves it into place.
pub(super) async fn read_blob(
    channel: Channel,
    request: tonic::Request<ReadRequest>,
    digest: &Digest,
    store: &Store,
) -> Result<(), Download> {
    let mut client = ByteStreamClient::new(channel);
    let mut stream = client
        .read(request)
        .await
        .map_err(Download::Rpc)?
        .into_inner();
    let work = store.work_dir();
    let tmp = tempfile::NamedTempFile::new_in(&work).map_err(|error| {
        Download::Other(ExecError::Scratch {
            path: work.clone(),
            error,
        })
    })?;
    let (file, path) = tmp.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    let scratch = |error| {
        Download::Other(ExecError::Scratch {
            path: path.to_path_buf(),
            error,
        })
    };
    let mut hasher = llama_core::Hasher::default();
    let mut received = 0u64;
    while let Some(message) = stream.message().await.map_err(Download::Rpc)? {
        // The digest's size was checked against the limits: never take more than it says.
        received = received.saturating_add(message.data.len() as u64);
        if received > digest.size() {
            return Err(Download::Other(remote_error(format!(
                "ByteStream Read of blob {digest} returned more than its {} bytes; the server is faulty",
                digest.size()
            ))));
        }
        hasher.update(&message.data);
        tokio::io::AsyncWriteExt::write_all(&mut file, &message.data)
            .await
            .map_err(scratch)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(scratch)?;
    drop(file);
    let actual = hasher.finish();
    if actual != *digest {
        return Err(Download::Other(remote_error(format!(
            "ByteStream Read returned damaged data for blob {digest} (it hashes to {actual})"
        ))));
    }
    let store = store.clone();
    let digest = *digest;
    tokio::task::spawn_blocking(move || {
        let adopted = store.adopt_file(&path)?;
        debug_assert_eq!(adopted, digest);
        Ok::<_, StoreError>(())
    })
    .await
    .map_err(|e| Download::Other(ExecError::Task(e.to_string())))?
    .map_err(|e| Download::Other(ExecError::Store(e)))
}
