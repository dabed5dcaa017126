//! Blobs and action-cache entries: HEAD before PUT, uploads of one blob at a time however
//! many actions need it, downloads verified against their digest, and the plain requests.

use std::collections::HashSet;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use llama_core::{BlobSource, Digest, Store, reapi};
use prost::Message;
use tokio::io::AsyncWriteExt as _;

use super::{Counters, MULTIPART_THRESHOLD, S3Cas, S3Error, lock, status_of, task_error};

impl S3Cas {
    /// The blobs of `digests` the bucket lacks, found by HEAD requests (concurrent, bounded),
    /// skipping those known present. Duplicates are asked about once.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons requests in flight; nothing is changed but the
    /// known-present set, which only ever learns true facts.
    pub async fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, S3Error> {
        let mut unique: Vec<Digest> = digests
            .iter()
            .filter(|d| !self.is_known_present(d))
            .copied()
            .collect();
        unique.sort_by(|a, b| a.hash_bytes().cmp(b.hash_bytes()));
        unique.dedup();
        let (suspect, unique): (Vec<Digest>, Vec<Digest>) =
            unique.into_iter().partition(|d| self.is_suspect(d));
        let mut tasks = tokio::task::JoinSet::new();
        for digest in unique {
            let this = self.clone();
            tasks.spawn(async move { (digest, this.head(&digest).await) });
        }
        let mut missing = suspect;
        while let Some(joined) = tasks.join_next().await {
            let (digest, present) = joined.map_err(task_error)?;
            if !present? {
                missing.push(digest);
            }
        }
        Ok(missing)
    }

    /// Uploads a blob unless it is known present or a HEAD finds it. Returns true when it
    /// was uploaded now. The bytes are verified against `digest` before they are sent: a
    /// local file that changed since it was hashed is refused ([`S3Error::Changed`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave a multipart upload unfinished (S3 lifecycle rules
    /// should abort incomplete uploads); no object is ever written with wrong content.
    pub async fn upload(&self, digest: Digest, source: BlobSource) -> Result<bool, S3Error> {
        if self.is_known_present(&digest) {
            return Ok(false);
        }
        let lock = {
            let mut uploading = self
                .inner
                .uploading
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            uploading.entry(digest).or_default().clone()
        };
        let guard = lock.lock().await;
        let uploaded = self.upload_alone(digest, source).await;
        drop(guard);
        self.inner
            .uploading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&digest);
        uploaded
    }

    /// [`S3Cas::upload`] once no other upload of the blob is in flight.
    pub(super) async fn upload_alone(
        &self,
        digest: Digest,
        source: BlobSource,
    ) -> Result<bool, S3Error> {
        let suspect = self.is_suspect(&digest);
        if !suspect && (self.is_known_present(&digest) || self.head(&digest).await?) {
            return Ok(false);
        }
        if digest.size() >= MULTIPART_THRESHOLD {
            self.put_multipart(&digest, &source).await?;
        } else {
            let data = match &source {
                BlobSource::Bytes(data) => data.to_vec(),
                BlobSource::File(path) => {
                    tokio::fs::read(path)
                        .await
                        .map_err(|error| S3Error::Local {
                            op: "read",
                            path: path.clone(),
                            error,
                        })?
                }
            };
            if Digest::of_bytes(&data) != digest {
                return Err(self.changed(&source));
            }
            self.put_object(&self.location().cas_key(&digest), data)
                .await?;
        }
        lock(&self.inner.suspect).remove(&digest);
        self.inner.present.insert(&digest);
        Ok(true)
    }

    /// Uploads every blob of `blobs` (see [`S3Cas::upload`]), concurrently within the
    /// request limit. Returns how many were uploaded now.
    pub async fn upload_all(&self, blobs: Vec<(Digest, BlobSource)>) -> Result<usize, S3Error> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut seen = HashSet::new();
        for (digest, source) in blobs {
            if !seen.insert(digest) || self.is_known_present(&digest) {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move { this.upload(digest, source).await });
        }
        let mut uploaded = 0;
        while let Some(joined) = tasks.join_next().await {
            if joined.map_err(task_error)?? {
                uploaded += 1;
            }
        }
        Ok(uploaded)
    }

    /// Downloads a blob into the local store, verified, unless the store has it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves at most a temporary file, removed on drop.
    pub async fn download_to_store(&self, digest: &Digest, store: &Store) -> Result<(), S3Error> {
        if store.contains(digest) {
            return Ok(());
        }
        let key = self.location().cas_key(digest);
        let tmp_dir = store.root().join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix(".s3-")
            .tempfile_in(&tmp_dir)
            .map_err(|error| S3Error::Local {
                op: "create a temporary file in",
                path: tmp_dir.clone(),
                error,
            })?;
        let (file, path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let Some(mut body) = self.get_object(&key).await? else {
            return Err(S3Error::NotFound {
                bucket: self.location().bucket.clone(),
                key,
            });
        };
        let local = |op, error| S3Error::Local {
            op,
            path: path.to_path_buf(),
            error,
        };
        let mut received = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| self.request_error("GetObject", &key, &e, None))?
        {
            Counters::add(&self.inner.counters.bytes_down, chunk.len() as u64);
            // The object may be anything anyone with write access put there: never take
            // more bytes than the digest says.
            received = received.saturating_add(chunk.len() as u64);
            if received > digest.size() {
                self.distrust(digest);
                return Err(S3Error::TooLong {
                    bucket: self.location().bucket.clone(),
                    key,
                    size: digest.size(),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| local("write", e))?;
        }
        file.flush().await.map_err(|e| local("write", e))?;
        drop(file);
        let store = store.clone();
        let adopted = tokio::task::spawn_blocking(move || {
            let adopted = store.adopt_file(&path);
            drop(path);
            adopted
        })
        .await
        .map_err(task_error)??;
        if adopted != *digest {
            self.distrust(digest);
            return Err(S3Error::Corrupt {
                bucket: self.location().bucket.clone(),
                key,
                actual: adopted,
            });
        }
        Ok(())
    }

    /// The action-cache entry of `action`, if there is one. An entry that does not decode is
    /// treated as absent (and reported at warning level).
    pub async fn get_action_result(
        &self,
        action: &Digest,
    ) -> Result<Option<reapi::ActionResult>, S3Error> {
        let key = self.location().ac_key(action);
        let Some(body) = self.get_object(&key).await? else {
            return Ok(None);
        };
        let data = body
            .collect()
            .await
            .map_err(|e| self.request_error("GetObject", &key, &e, None))?
            .into_bytes();
        Counters::add(&self.inner.counters.bytes_down, data.len() as u64);
        match reapi::ActionResult::decode(&data[..]) {
            Ok(result) => Ok(Some(result)),
            Err(e) => {
                tracing::warn!(
                    "s3://{}/{key} is not a valid ActionResult ({e}); ignoring it",
                    self.location().bucket
                );
                Ok(None)
            }
        }
    }

    /// Records `result` as the action-cache entry of `action`. Every blob it names must be
    /// uploaded first, so an entry never points at a missing blob.
    pub async fn put_action_result(
        &self,
        action: &Digest,
        result: &reapi::ActionResult,
    ) -> Result<(), S3Error> {
        self.put_object(&self.location().ac_key(action), result.encode_to_vec())
            .await
    }

    pub(super) async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        // The semaphore is never closed.
        match self.inner.permits.acquire().await {
            Ok(permit) => permit,
            Err(_) => unreachable!("the S3 request semaphore is never closed"),
        }
    }

    /// HEAD: true when present (and then remembered).
    pub(super) async fn head(&self, digest: &Digest) -> Result<bool, S3Error> {
        if digest.size() == 0 {
            return Ok(true);
        }
        let key = self.location().cas_key(digest);
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.heads, 1);
        let sent = self
            .inner
            .client
            .head_object()
            .bucket(&self.location().bucket)
            .key(&key)
            .send()
            .await;
        match sent {
            Ok(_) => {
                self.inner.present.insert(digest);
                Ok(true)
            }
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(false),
            Err(e) => Err(self.request_error("HeadObject", &key, &e, status_of(&e))),
        }
    }

    /// GET: the body, or `None` when there is no such key.
    pub(super) async fn get_object(&self, key: &str) -> Result<Option<ByteStream>, S3Error> {
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.gets, 1);
        let sent = self
            .inner
            .client
            .get_object()
            .bucket(&self.location().bucket)
            .key(key)
            .send()
            .await;
        match sent {
            Ok(out) => Ok(Some(out.body)),
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => Ok(None),
            Err(e) => Err(self.request_error("GetObject", key, &e, status_of(&e))),
        }
    }

    pub(super) async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<(), S3Error> {
        let _permit = self.permit().await;
        let len = data.len() as u64;
        Counters::add(&self.inner.counters.puts, 1);
        self.inner
            .client
            .put_object()
            .bucket(&self.location().bucket)
            .key(key)
            .content_length(len as i64)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.request_error("PutObject", key, &e, status_of(&e)))?;
        Counters::add(&self.inner.counters.bytes_up, len);
        Ok(())
    }
}
