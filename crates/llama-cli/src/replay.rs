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
