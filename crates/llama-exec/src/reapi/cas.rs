//! The remote CAS: which blobs the server lacks (`FindMissingBlobs`), uploading them
//! (`BatchUpdateBlobs` packed under the server's batch limit, ByteStream for big ones, each
//! blob once however many actions need it), and downloading a result's blobs
//! (`BatchReadBlobs`, ByteStream), each verified against its digest.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llama_core::{BlobSource, Digest, PreparedAction, StoreError, reapi};
use reapi::content_addressable_storage_client::ContentAddressableStorageClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::connect::Conn;
use super::retry::transient;
use super::{
    BATCH_BLOB_OVERHEAD, FIND_MISSING_CHUNK, ReapiExecutor, RemoteAction, Rpc, SHA256, lock,
    remote_error,
};
use crate::executor::ExecError;
use crate::remote::fetch_result;

/// Blobs being uploaded, each with the lock its uploader holds.
pub(super) type Uploading = HashMap<Digest, Arc<tokio::sync::Mutex<()>>>;

/// The blobs one action claimed for upload; dropping it releases them to the waiters.
pub(super) struct Claim {
    uploading: Arc<Mutex<Uploading>>,
    held: Vec<(Digest, tokio::sync::OwnedMutexGuard<()>)>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut uploading = lock(&self.uploading);
        for (digest, _) in &self.held {
            uploading.remove(digest);
        }
    }
}

impl ReapiExecutor {
    pub(super) fn cas(&self, conn: &Conn) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(conn.channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    /// One unary CAS call, retried: each attempt gets a fresh client and `message` with the
    /// connection's headers.
    pub(super) async fn cas_call<M, R, F, Fut>(
        &self,
        conn: &Conn,
        what: &str,
        message: M,
        call: F,
    ) -> Result<R, ExecError>
    where
        M: Clone,
        F: Fn(ContentAddressableStorageClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: std::future::Future<Output = Rpc<tonic::Response<R>>>,
    {
        self.retrying(what, || {
            call(self.cas(conn), self.request(conn, message.clone()))
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// Makes every blob of the action present in the remote CAS.
    pub(super) async fn upload_inputs(
        &self,
        conn: &Conn,
        action: &PreparedAction,
        remote: &RemoteAction,
    ) -> Result<(), ExecError> {
        let mut blobs: HashMap<Digest, BlobSource> = HashMap::new();
        blobs.insert(
            remote.action_digest,
            BlobSource::Bytes(remote.action_bytes.as_slice().into()),
        );
        blobs.insert(
            remote.command_digest,
            BlobSource::Bytes(remote.command_bytes.as_slice().into()),
        );
        for (digest, bytes) in &action.input.directories {
            blobs.insert(*digest, BlobSource::Bytes(bytes.as_slice().into()));
        }
        for (digest, source) in &action.input.files {
            blobs.insert(*digest, source.clone());
        }
        let candidates: Vec<Digest> = {
            let present = lock(&self.present);
            blobs
                .keys()
                .filter(|d| d.size() > 0 && !present.contains(d))
                .copied()
                .collect()
        };
        // Blobs another action is uploading are waited for, not sent again.
        let mut claim = Claim {
            uploading: self.uploading.clone(),
            held: Vec::new(),
        };
        let mut others = Vec::new();
        let candidates: Vec<Digest> = {
            let mut uploading = lock(&self.uploading);
            candidates
                .into_iter()
                .filter(|d| match uploading.get(d) {
                    Some(theirs) => {
                        others.push(theirs.clone());
                        false
                    }
                    None => {
                        let mine = Arc::new(tokio::sync::Mutex::new(()));
                        if let Ok(guard) = mine.clone().try_lock_owned() {
                            uploading.insert(*d, mine);
                            claim.held.push((*d, guard));
                        }
                        true
                    }
                })
                .collect()
        };
        let missing = self.find_missing(conn, &candidates).await?;
        {
            let missing: HashSet<&Digest> = missing.iter().collect();
            let mut present = lock(&self.present);
            present.extend(candidates.iter().filter(|d| !missing.contains(d)));
        }
        let mut small: Vec<(Digest, BlobSource)> = Vec::new();
        let mut large = tokio::task::JoinSet::new();
        for digest in missing {
            let source = blobs
                .remove(&digest)
                .expect("missing blobs come from the set");
            if digest.size() + BATCH_BLOB_OVERHEAD <= conn.batch_limit {
                small.push((digest, source));
            } else {
                self.spawn_write(conn, &mut large, digest, source, None, Duration::ZERO);
            }
        }
        // Small blobs, largest first into batches under the limit.
        small.sort_by_key(|(d, _)| std::cmp::Reverse(d.size()));
        let mut batch: Vec<reapi::batch_update_blobs_request::Request> = Vec::new();
        let mut batch_bytes = 0u64;
        for (digest, source) in small {
            let data = read_source(&digest, &source).await?;
            let cost = digest.size() + BATCH_BLOB_OVERHEAD;
            if batch_bytes + cost > conn.batch_limit && !batch.is_empty() {
                self.batch_update(conn, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += cost;
            batch.push(reapi::batch_update_blobs_request::Request {
                digest: Some(digest.to_proto()),
                data,
                compressor: 0,
            });
        }
        if !batch.is_empty() {
            self.batch_update(conn, batch).await?;
        }
        while let Some(joined) = large.join_next().await {
            let (digest, source, mut backoff, result) =
                joined.map_err(|e| ExecError::Task(e.to_string()))?;
            match result {
                Ok(()) => {
                    self.stats
                        .bytes_up
                        .fetch_add(digest.size(), Ordering::Relaxed);
                    lock(&self.present).insert(digest);
                }
                Err(Upload::Source(e)) => return Err(e),
                Err(Upload::Rpc(s)) => {
                    let delay = transient(&s)
                        .then(|| self.retry_backoff(&mut backoff).next())
                        .flatten();
                    let Some(delay) = delay else {
                        return Err(self.status_error(&format!("ByteStream Write of {digest}"), &s));
                    };
                    // Again from the start, under a new upload id.
                    self.lost_connection(&s);
                    tracing::debug!("ByteStream Write of {digest}: {s}; again in {delay:?}");
                    self.spawn_write(conn, &mut large, digest, source, backoff, delay);
                }
            }
        }
        drop(claim);
        for theirs in others {
            // Their uploader is done (or failed: Execute then reports the blob missing, and
            // the action uploads it again).
            let _done = theirs.lock().await;
        }
        Ok(())
    }

    pub(super) async fn find_missing(
        &self,
        conn: &Conn,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, ExecError> {
        let mut missing = Vec::new();
        for chunk in digests.chunks(FIND_MISSING_CHUNK) {
            let request = reapi::FindMissingBlobsRequest {
                instance_name: self.config.instance.clone(),
                blob_digests: chunk.iter().map(Digest::to_proto).collect(),
                digest_function: SHA256,
            };
            let got = self
                .cas_call(conn, "FindMissingBlobs", request, |mut c, r| async move {
                    c.find_missing_blobs(r).await
                })
                .await?;
            for d in &got.missing_blob_digests {
                missing.push(Digest::from_proto(d).map_err(|e| {
                    self.err(format!("FindMissingBlobs answered a bad digest: {e}"))
                })?);
            }
        }
        Ok(missing)
    }

    pub(super) async fn batch_update(
        &self,
        conn: &Conn,
        requests: Vec<reapi::batch_update_blobs_request::Request>,
    ) -> Result<(), ExecError> {
        let bytes: u64 = requests.iter().map(|r| r.data.len() as u64).sum();
        let request = reapi::BatchUpdateBlobsRequest {
            instance_name: self.config.instance.clone(),
            requests,
            digest_function: SHA256,
        };
        let got = self
            .cas_call(conn, "BatchUpdateBlobs", request, |mut c, r| async move {
                c.batch_update_blobs(r).await
            })
            .await?;
        for response in got.responses {
            let status = response.status.unwrap_or_default();
            let digest = response
                .digest
                .as_ref()
                .and_then(|d| Digest::from_proto(d).ok());
            if status.code != 0 {
                return Err(self.err(format!(
                    "BatchUpdateBlobs at {} refused blob {}: {:?}: {}",
                    self.endpoint(),
                    digest.map(|d| d.to_string()).unwrap_or_default(),
                    Code::from_i32(status.code),
                    status.message
                )));
            }
            if let Some(d) = digest {
                lock(&self.present).insert(d);
            }
        }
        self.stats.bytes_up.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Downloads every blob `result` names that the local store lacks, verified.
    pub(super) async fn fetch_result_blobs(
        &self,
        conn: &Conn,
        result: &reapi::ActionResult,
    ) -> Result<(), ExecError> {
        let from = format!("REAPI server at {}", self.endpoint());
        fetch_result(
            &self.store,
            result,
            self.config.result_limits,
            &from,
            |digests: Vec<Digest>| async move { self.download_all(conn, &digests).await },
        )
        .await
    }

    pub(super) async fn download_all(
        &self,
        conn: &Conn,
        digests: &[Digest],
    ) -> Result<(), ExecError> {
        let mut seen = HashSet::new();
        let mut small = Vec::new();
        let mut large = tokio::task::JoinSet::new();
        for digest in digests {
            if !seen.insert(*digest) || self.store.contains(digest) {
                continue;
            }
            if digest.size() + BATCH_BLOB_OVERHEAD <= conn.batch_limit {
                small.push(*digest);
            } else {
                self.spawn_read(conn, &mut large, *digest, None, Duration::ZERO);
            }
        }
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for digest in small {
            let cost = digest.size() + BATCH_BLOB_OVERHEAD;
            if batch_bytes + cost > conn.batch_limit && !batch.is_empty() {
                self.batch_read(conn, std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += cost;
            batch.push(digest);
        }
        if !batch.is_empty() {
            self.batch_read(conn, batch).await?;
        }
        while let Some(joined) = large.join_next().await {
            let (digest, mut backoff, result) =
                joined.map_err(|e| ExecError::Task(e.to_string()))?;
            match result {
                Ok(()) => {
                    self.stats
                        .bytes_down
                        .fetch_add(digest.size(), Ordering::Relaxed);
                }
                Err(Download::Rpc(s)) => {
                    let delay = transient(&s)
                        .then(|| self.retry_backoff(&mut backoff).next())
                        .flatten();
                    let Some(delay) = delay else {
                        return Err(self.status_error(&format!("ByteStream Read of {digest}"), &s));
                    };
                    self.lost_connection(&s);
                    tracing::debug!("ByteStream Read of {digest}: {s}; again in {delay:?}");
                    self.spawn_read(conn, &mut large, digest, backoff, delay);
                }
                Err(Download::Other(e)) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn batch_read(
        &self,
        conn: &Conn,
        digests: Vec<Digest>,
    ) -> Result<(), ExecError> {
        let got = self
            .cas_call(
                conn,
                "BatchReadBlobs",
                reapi::BatchReadBlobsRequest {
                    instance_name: self.config.instance.clone(),
                    digests: digests.iter().map(Digest::to_proto).collect(),
                    digest_function: SHA256,
                    ..Default::default()
                },
                |mut c, r| async move { c.batch_read_blobs(r).await },
            )
            .await?;
        let store = self.store.clone();
        let endpoint = self.endpoint().to_string();
        let asked: HashSet<Digest> = digests.iter().copied().collect();
        let bytes = tokio::task::spawn_blocking(move || -> Result<u64, ExecError> {
            let mut bytes = 0;
            for response in got.responses {
                let expected = Digest::from_field(response.digest.as_ref()).map_err(|e| {
                    remote_error(format!("BatchReadBlobs at {endpoint} answered a bad digest: {e}"))
                })?;
                if !asked.contains(&expected) || response.data.len() as u64 != expected.size() {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint} answered {} bytes for blob {expected}, which was not asked for or has another size; the server is faulty",
                        response.data.len()
                    )));
                }
                let status = response.status.unwrap_or_default();
                if status.code != 0 {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint}: blob {expected} cannot be read: {:?}: {}",
                        Code::from_i32(status.code),
                        status.message
                    )));
                }
                let actual = Digest::of_bytes(&response.data);
                if actual != expected {
                    return Err(remote_error(format!(
                        "BatchReadBlobs at {endpoint} returned damaged data for blob {expected} (it hashes to {actual})"
                    )));
                }
                store.put_bytes(&response.data)?;
                bytes += expected.size();
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| ExecError::Task(e.to_string()))??;
        self.stats.bytes_down.fetch_add(bytes, Ordering::Relaxed);
        for d in &digests {
            if !self.store.contains(d) {
                return Err(self.err(format!(
                    "BatchReadBlobs at {} did not return blob {d}",
                    self.endpoint()
                )));
            }
        }
        Ok(())
    }
}

pub(super) enum Upload {
    Source(ExecError),
    Rpc(Status),
}

pub(super) enum Download {
    Rpc(Status),
    Other(ExecError),
}

/// Reads a small input blob whole, checking it against its digest.
pub(super) async fn read_source(
    digest: &Digest,
    source: &BlobSource,
) -> Result<Vec<u8>, ExecError> {
    let data = match source {
        BlobSource::Bytes(data) => data.to_vec(),
        BlobSource::File(path) => {
            tokio::fs::read(path)
                .await
                .map_err(|error| ExecError::Scratch {
                    path: path.clone(),
                    error,
                })?
        }
    };
    if Digest::of_bytes(&data) != *digest {
        return Err(changed(digest, source));
    }
    Ok(data)
}

pub(super) fn changed(digest: &Digest, source: &BlobSource) -> ExecError {
    match source {
        BlobSource::File(path) => ExecError::Store(StoreError::Changed { path: path.clone() }),
        BlobSource::Bytes(_) => ExecError::InvalidAction(format!(
            "an in-memory input does not match its digest {digest}"
        )),
    }
}
