//! The retry policy: which failures are worth another attempt (the server is down,
//! restarting or overloaded; not a refused certificate), exponential backoff within a window,
//! and saying once that the connection was lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tonic::{Code, Status};

use super::{ReapiExecutor, Rpc, lock};
use crate::executor::ExecError;

impl ReapiExecutor {
    /// Retries `call` while the server is unavailable, with exponential backoff, for at
    /// most the retry window; a connection lost meanwhile is said once (see
    /// [`Self::lost_connection`]).
    pub(super) async fn retrying<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ExecError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Rpc<T>>,
    {
        self.retrying_within(self.config.retry_window, true, what, call)
            .await
    }

    /// [`Self::retrying`] within `window`; `connected`: the server was reached before (a
    /// failure is then a lost connection, not a wrong endpoint).
    pub(super) async fn retrying_within<T, F, Fut>(
        &self,
        window: Duration,
        connected: bool,
        what: &str,
        mut call: F,
    ) -> Result<T, ExecError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Rpc<T>>,
    {
        let mut backoff = Backoff::new(window, Duration::from_millis(100));
        loop {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            match call().await {
                Ok(v) => return Ok(v),
                Err(s) if transient(&s) => {
                    let Some(delay) = backoff.next() else {
                        return Err(self.status_error(what, &s));
                    };
                    if connected {
                        self.lost_connection(&s);
                    }
                    tracing::debug!("{what} at {}: {s}; retrying in {delay:?}", self.endpoint());
                    tokio::time::sleep(delay).await;
                }
                Err(s) => return Err(self.status_error(what, &s)),
            }
        }
    }

    /// Says once per executor, as a warning and as a notice for the user, that the server
    /// went away and the actions in flight wait for it: a build that pauses for a restart
    /// of the server should say why, and only once however many actions noticed.
    pub(super) fn lost_connection(&self, status: &Status) {
        if !lost(status) || self.stats.warned_reconnect.swap(true, Ordering::Relaxed) {
            return;
        }
        let notice = format!(
            "reapi: lost the connection to {} ({:?}: {}); waiting for it to come back and \
             resuming the actions in flight (said once)",
            self.endpoint(),
            status.code(),
            status.message()
        );
        tracing::warn!("{notice}");
        lock(&self.notices).push(notice);
    }

    /// The backoff of a ByteStream transfer that failed, started at its first failure.
    pub(super) fn retry_backoff<'a>(&self, backoff: &'a mut Option<Backoff>) -> &'a mut Backoff {
        backoff.get_or_insert_with(|| {
            Backoff::new(self.config.retry_window, Duration::from_millis(100))
        })
    }
}

/// Worth retrying: the server is down, restarting, or overloaded. A connection that breaks
/// mid-call comes back from tonic as UNKNOWN ("h2 protocol error: error reading a body from
/// connection", "transport error"), or as CANCELLED ("operation was canceled", over hyper's
/// "connection closed") when it closed before the call was sent, not as UNAVAILABLE. A
/// certificate that is not trusted, or refused, is not worth retrying.
pub(super) fn transient(status: &Status) -> bool {
    let text = status_text(status);
    let broken_connection = || {
        [
            "h2 protocol error",
            "transport error",
            "connection",
            "broken pipe",
        ]
        .iter()
        .any(|m| text.contains(m))
    };
    let certificate = ["invalid peer certificate", "received fatal alert"]
        .iter()
        .any(|m| text.contains(m));
    !certificate
        && (matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted
        ) || (matches!(status.code(), Code::Unknown | Code::Cancelled) && broken_connection()))
}

/// The server went away or cannot be reached (rather than being overloaded).
pub(super) fn lost(status: &Status) -> bool {
    transient(status)
        && matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
}

/// The status's message and those of the errors under it (a transport failure's message is
/// generic: "transport error" over "invalid peer certificate: UnknownIssuer").
pub(super) fn status_text(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The message of the innermost error under `status`, if any.
pub(super) fn root_cause(status: &Status) -> Option<String> {
    let mut source = std::error::Error::source(status)?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}

/// Exponential backoff (doubling, at most 5 s apart) within a window that starts at the
/// first attempt, or again at [`Backoff::reset`].
pub(super) struct Backoff {
    since: tokio::time::Instant,
    first: Duration,
    delay: Duration,
    window: Duration,
}

impl Backoff {
    pub(super) fn new(window: Duration, first: Duration) -> Backoff {
        Backoff {
            since: tokio::time::Instant::now(),
            first,
            delay: first,
            window,
        }
    }

    /// How long to wait before the next attempt; `None` once that would end past the window.
    pub(super) fn next(&mut self) -> Option<Duration> {
        let delay = self.delay;
        if self.since.elapsed() + delay >= self.window {
            return None;
        }
        self.delay = (delay * 2).min(Duration::from_secs(5));
        Some(delay)
    }

    /// The server answered: the window starts again.
    pub(super) fn reset(&mut self) {
        self.since = tokio::time::Instant::now();
        self.delay = self.first;
    }
}
