//! Writing a finished action's stdout and stderr to this process's own.

use std::io::{self, Write};

use llama_core::{Digest, Store, StoreError, reapi};

/// Copies the result's stderr and stdout blobs to `err` and `out` (stderr first, as the
/// original did). A reader that went away (a closed pipe) is not an error.
pub fn replay<'a>(
    store: &Store,
    result: &reapi::ActionResult,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
) -> anyhow::Result<()> {
    for (digest, sink) in [(&result.stderr_digest, err), (&result.stdout_digest, out)] {
        let Some(d) = digest else { continue };
        match store.write_blob_to(&Digest::from_proto(d)?, sink) {
            Err(StoreError::Io { error, .. }) if error.kind() == io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
        match sink.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    Ok(())
}

/// The result's standard error, when it is small enough to look at (for hints).
pub fn stderr_of(store: &Store, result: &reapi::ActionResult) -> Option<Vec<u8>> {
    const LIMIT: u64 = 1 << 20;
    let d = Digest::from_proto(result.stderr_digest.as_ref()?).ok()?;
    (d.size() <= LIMIT)
        .then(|| store.get_bytes(&d).ok())
        .flatten()
}

/// Writes the invocation log block `-logs` asks for: what ran where, how it ended, and
/// whether it came from the cache.
pub fn print_log(
    w: &mut dyn Write,
    title: &str,
    executor: &str,
    action: &Digest,
    finished: &llama_exec::Finished,
) -> io::Result<()> {
    let meta = finished
        .result
        .execution_metadata
        .clone()
        .unwrap_or_default();
    let ran = match (
        &meta.execution_start_timestamp,
        &meta.execution_completed_timestamp,
    ) {
        (Some(a), Some(b)) => {
            let ns = (b.seconds - a.seconds) as f64 * 1e9 + f64::from(b.nanos - a.nanos);
            format!("{:.3}s", ns / 1e9)
        }
        _ => "-".into(),
    };
    let cached = if finished.cached {
        " (served from the action cache)"
    } else {
        ""
    };
    writeln!(w, "==== invocation logs ====")?;
    writeln!(w, "{title}")?;
    writeln!(w, "executor: {executor}")?;
    writeln!(w, "action:   {action}")?;
    writeln!(w, "result:   {}{cached}", finished.termination)?;
    writeln!(
        w,
        "ran:      {ran} on {}",
        if meta.worker.is_empty() {
            "-"
        } else {
            &meta.worker
        }
    )?;
    writeln!(w, "==== end logs ====")
}

/// The trace of one finished job of `llama invoke` or `llama xargs`: it arrived `seconds`
/// before now and spent them all running (the engine does the upload, the run and the
/// download as one step).
pub fn job_trace(
    kind: llama_trace::Kind,
    label: String,
    seconds: f64,
    delivered: Option<&llama_exec::Delivered>,
    remote: bool,
) -> llama_trace::Action {
    use llama_trace::{Action, Status};
    let finished_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let arrived_us = finished_us.saturating_sub((seconds.max(0.0) * 1e6) as u64);
    let status = match delivered {
        Some(d) if d.finished.cached => Status::Hit,
        Some(d) if !d.finished.termination.success() => Status::Error,
        Some(_) if remote => Status::Remote,
        Some(_) => Status::Miss,
        None => Status::Error,
    };
    let mut action = Action::one_run(kind, label, arrived_us, finished_us, status);
    action.worker = delivered
        .and_then(|d| d.finished.result.execution_metadata.as_ref())
        .map(|m| m.worker.clone())
        .filter(|w| !w.is_empty());
    action
}
