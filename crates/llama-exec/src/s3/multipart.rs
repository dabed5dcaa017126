//! Multipart uploads of big blobs, one part at a time, hashed as they are read; aborted when
//! the content does not match its digest or a part fails.

use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use llama_core::{BlobSource, Digest};

use super::{Counters, PART_SIZE, S3Cas, S3Error, status_of};

impl S3Cas {
    /// A multipart upload, one part at a time, hashing as it reads; aborted if the content
    /// turns out not to match its digest or any part fails.
    pub(super) async fn put_multipart(
        &self,
        digest: &Digest,
        source: &BlobSource,
    ) -> Result<(), S3Error> {
        let key = self.location().cas_key(digest);
        let bucket = &self.location().bucket;
        let _permit = self.permit().await;
        Counters::add(&self.inner.counters.puts, 1);
        let created = self
            .inner
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.request_error("CreateMultipartUpload", &key, &e, status_of(&e)))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(S3Error::Request {
                op: "CreateMultipartUpload",
                bucket: bucket.clone(),
                key,
                message: "the response has no upload id".into(),
                hint: "; the S3 endpoint does not behave like S3".into(),
            });
        };
        let uploaded = self.upload_parts(digest, source, &key, &upload_id).await;
        let completed = match uploaded {
            Ok(parts) => {
                Counters::add(&self.inner.counters.puts, 1);
                self.inner
                    .client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| {
                        self.request_error("CompleteMultipartUpload", &key, &e, status_of(&e))
                    })
            }
            Err(e) => Err(e),
        };
        if completed.is_err() {
            Counters::add(&self.inner.counters.puts, 1);
            let aborted = self
                .inner
                .client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::debug!(
                    "aborting the multipart upload of s3://{bucket}/{key}: {}",
                    DisplayErrorContext(&e)
                );
            }
        }
        completed
    }

    pub(super) async fn upload_parts(
        &self,
        digest: &Digest,
        source: &BlobSource,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, S3Error> {
        let mut reader = PartReader::open(source).await?;
        let mut hasher = llama_core::Hasher::default();
        let mut parts = Vec::new();
        let mut number = 0;
        loop {
            let chunk = reader.next_part(PART_SIZE as usize).await?;
            if chunk.is_empty() {
                break;
            }
            hasher.update(&chunk);
            number += 1;
            let len = chunk.len() as u64;
            Counters::add(&self.inner.counters.puts, 1);
            let sent = self
                .inner
                .client
                .upload_part()
                .bucket(&self.location().bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| self.request_error("UploadPart", key, &e, status_of(&e)))?;
            Counters::add(&self.inner.counters.bytes_up, len);
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(sent.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
        }
        if hasher.finish() != *digest {
            return Err(self.changed(source));
        }
        Ok(parts)
    }
}

/// Reads a blob source in parts.
pub(super) enum PartReader {
    Bytes(Arc<[u8]>, usize),
    File(tokio::fs::File, PathBuf),
}

impl PartReader {
    async fn open(source: &BlobSource) -> Result<PartReader, S3Error> {
        Ok(match source {
            BlobSource::Bytes(data) => PartReader::Bytes(data.clone(), 0),
            BlobSource::File(path) => PartReader::File(
                tokio::fs::File::open(path)
                    .await
                    .map_err(|error| S3Error::Local {
                        op: "open",
                        path: path.clone(),
                        error,
                    })?,
                path.clone(),
            ),
        })
    }

    /// Up to `size` bytes; empty at the end.
    async fn next_part(&mut self, size: usize) -> Result<Vec<u8>, S3Error> {
        use tokio::io::AsyncReadExt as _;
        match self {
            PartReader::Bytes(data, at) => {
                let end = (*at + size).min(data.len());
                let part = data[*at..end].to_vec();
                *at = end;
                Ok(part)
            }
            PartReader::File(file, path) => {
                let mut part = Vec::with_capacity(size);
                let mut limited = file.take(size as u64);
                limited
                    .read_to_end(&mut part)
                    .await
                    .map_err(|error| S3Error::Local {
                        op: "read",
                        path: path.clone(),
                        error,
                    })?;
                Ok(part)
            }
        }
    }
}
