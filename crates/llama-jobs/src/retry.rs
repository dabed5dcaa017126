//! Running one job through the Engine, retrying when the infrastructure fails (never when
//! the command itself fails: that is a result, cached like any other).

use std::time::Duration;

use llama_exec::{Delivered, Engine, ExecError};

use crate::action::JobAction;
use crate::joblog::JobId;

/// Runs `job` and delivers its outputs, retrying up to `retries` times on an
/// infrastructure error with a warning naming the job.
///
/// # Errors
///
/// The last infrastructure error once the retries are spent.
pub async fn run_with_retries(
    engine: &Engine,
    job: &JobAction,
    id: JobId<'_>,
    retries: u32,
) -> Result<Delivered, ExecError> {
    let mut attempt = 0;
    loop {
        match engine.run_and_deliver(&job.action, &job.outputs).await {
            Ok(delivered) => return Ok(delivered),
            Err(e) if attempt < retries => {
                attempt += 1;
                tracing::warn!("{id}: {e}; retry {attempt} of {retries}");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Exponential backoff with jitter, so retries of many jobs do not arrive in step.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt.min(6));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    base + Duration::from_millis(nanos % 100)
}
