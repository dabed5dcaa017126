//! Running the action: the remote action cache (`GetActionResult`), then `Execute`, whose
//! stream is resumed with `WaitExecution` when it drops, and the finished operation's
//! response.

use std::time::Duration;

use bazel_remote_apis::google::longrunning::{Operation, operation};
use llama_core::{Digest, reapi};
use prost::Message;
use reapi::action_cache_client::ActionCacheClient;
use reapi::execution_client::ExecutionClient;
use tonic::{Code, Status};

use super::connect::Conn;
use super::retry::{Backoff, transient};
use super::{ReapiExecutor, RemoteAction, SHA256};
use crate::executor::ExecError;

impl ReapiExecutor {
    /// The remote action cache's entry, if any.
    pub(super) async fn get_action_result(
        &self,
        conn: &Conn,
        digest: &Digest,
    ) -> Result<Option<reapi::ActionResult>, ExecError> {
        let got = self
            .retrying("GetActionResult", || {
                let mut client = ActionCacheClient::new(conn.channel.clone())
                    .max_decoding_message_size(64 << 20);
                let request = self.request(
                    conn,
                    reapi::GetActionResultRequest {
                        instance_name: self.config.instance.clone(),
                        action_digest: Some(digest.to_proto()),
                        digest_function: SHA256,
                        ..Default::default()
                    },
                );
                async move {
                    match client.get_action_result(request).await {
                        Ok(r) => Ok(Some(r.into_inner())),
                        Err(s) if s.code() == Code::NotFound => Ok(None),
                        Err(s) => Err(s),
                    }
                }
            })
            .await?;
        Ok(got)
    }

    /// Executes the action and waits for its result, resuming a dropped stream.
    pub(super) async fn execute_remote(
        &self,
        conn: &Conn,
        remote: &RemoteAction,
    ) -> Result<reapi::ExecuteResponse, Execution> {
        // The window counts from when the server was last heard from: an action that waited
        // long in the queue gets as long as any other for the server to come back.
        let mut backoff = Backoff::new(self.config.retry_window, Duration::from_millis(200));
        let mut operation_name: Option<String> = None;
        loop {
            let mut client =
                ExecutionClient::new(conn.channel.clone()).max_decoding_message_size(64 << 20);
            let stream = match &operation_name {
                None => {
                    let request = self.request(
                        conn,
                        reapi::ExecuteRequest {
                            instance_name: self.config.instance.clone(),
                            skip_cache_lookup: !self.config.cache_read,
                            action_digest: Some(remote.action_digest.to_proto()),
                            digest_function: SHA256,
                            ..Default::default()
                        },
                    );
                    client.execute(request).await
                }
                Some(name) => {
                    let request =
                        self.request(conn, reapi::WaitExecutionRequest { name: name.clone() });
                    client.wait_execution(request).await
                }
            };
            let status = match stream {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(op)) => {
                                backoff.reset();
                                if !op.name.is_empty() {
                                    operation_name = Some(op.name.clone());
                                }
                                if op.done {
                                    return self.finished(op);
                                }
                            }
                            Ok(None) => {
                                break Status::unavailable(
                                    "the Execute stream ended before the operation was done",
                                );
                            }
                            Err(s) => break s,
                        }
                    }
                }
                Err(s) => s,
            };
            // An operation the server forgot (it restarted without persisting it): run again.
            if status.code() == Code::NotFound && operation_name.is_some() {
                tracing::debug!(
                    "operation {operation_name:?} is unknown to {}; executing again",
                    self.endpoint()
                );
                operation_name = None;
                continue;
            }
            let delay = match transient(&status) {
                true => backoff.next(),
                false => None,
            };
            let Some(delay) = delay else {
                let what = match &operation_name {
                    Some(name) => format!("WaitExecution of operation {name}"),
                    None => format!("Execute of action {}", remote.action_digest),
                };
                return Err(match status.code() {
                    Code::FailedPrecondition if operation_name.is_none() => {
                        Execution::Precondition {
                            error: self.status_error(&what, &status),
                            platform: refuses_platform(status.message()),
                        }
                    }
                    _ => Execution::Failed(self.status_error(&what, &status)),
                });
            };
            self.lost_connection(&status);
            tracing::debug!(
                "{} stream from {} dropped ({status}); resuming in {delay:?}",
                if operation_name.is_some() {
                    "WaitExecution"
                } else {
                    "Execute"
                },
                self.endpoint()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// The ExecuteResponse of a finished operation.
    pub(super) fn finished(&self, op: Operation) -> Result<reapi::ExecuteResponse, Execution> {
        match op.result {
            Some(operation::Result::Response(any)) => {
                let response = reapi::ExecuteResponse::decode(&any.value[..]).map_err(|e| {
                    Execution::Failed(self.err(format!(
                        "operation {} finished with a response that is not an ExecuteResponse ({e})",
                        op.name
                    )))
                })?;
                Ok(response)
            }
            Some(operation::Result::Error(status)) => Err(Execution::Failed(self.err(format!(
                "operation {} at {} failed: {:?}: {}",
                op.name,
                self.endpoint(),
                Code::from_i32(status.code),
                status.message
            )))),
            None => Err(Execution::Failed(self.err(format!(
                "operation {} at {} finished without a result",
                op.name,
                self.endpoint()
            )))),
        }
    }
}

/// Why Execute gave no response.
pub(super) enum Execution {
    /// The server refused the call with FAILED_PRECONDITION (a missing blob, or a platform
    /// it cannot serve).
    Precondition {
        /// The error, explained.
        error: ExecError,
        /// The server's message is about the platform (uploading again will not help).
        platform: bool,
    },
    /// Anything else.
    Failed(ExecError),
}

/// A FAILED_PRECONDITION about the platform rather than missing blobs.
pub(super) fn refuses_platform(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("platform") || message.contains("propert")
}
