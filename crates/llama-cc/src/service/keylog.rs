//! The key record of each compile ([`crate::explain`]): made from its job and outcome,
//! written to the store before the reply goes out (so `llama explain` right after a compile
//! sees it), and with `LLAMACC_DEBUG=1` explained into the debug log.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use llama_core::encode_os;

use super::paths::{logical_dir, normalize, output_env, resolve};
use super::{CompileRequest, CompileService, Job};
use crate::explain::{self, CompilerKey, KeyLog, KeyParts, KeyRecord, millis};
use crate::manifest::Entry;
use crate::settings::Settings;
use crate::stats::Outcome;

/// The debug log's name in the store directory (`LLAMACC_DEBUG=1`).
pub const DEBUG_LOG: &str = "debug.log";

/// Past this size the debug log is renamed to `debug.log.old` (replacing the one before)
/// and started again: two files at most, however long the daemon runs.
const MAX_DEBUG_LOG: u64 = 16 << 20;

/// What a compile's key was made of, taken from its job.
pub(super) struct Keyed {
    output: PathBuf,
    parts: KeyParts,
}

/// What came of a compile, for its record.
pub(super) struct Told {
    pub(super) outcome: Outcome,
    pub(super) reason: Option<String>,
    pub(super) exit_code: Option<i32>,
    pub(super) entry: Option<Entry>,
}

/// A path as records spell it.
fn spelled(path: &Path) -> String {
    encode_os(path.as_os_str()).into_owned()
}

impl Keyed {
    pub(super) fn of(job: &Job<'_>) -> Keyed {
        let identity = &job.identity;
        let compiler = CompilerKey {
            path: spelled(&job.driver),
            cxx: job.req.cxx,
            identity: *identity.digest.hash_bytes(),
            version: identity.version.clone(),
            files: identity
                .files
                .iter()
                .map(|(p, d)| (spelled(p), *d.hash_bytes()))
                .collect(),
        };
        // As the manifest's inputs spell them, so a source is not also taken for a header.
        let files = job
            .files
            .iter()
            .map(|(p, d)| {
                let physical = resolve(p).unwrap_or_else(|| normalize(p));
                (spelled(&physical), *d.hash_bytes())
            })
            .collect();
        Keyed {
            output: explain::output_path(&job.req.cwd.join(&job.c.output)),
            parts: KeyParts {
                compiler,
                pwd: logical_dir(job.req).map(|d| encode_os(d).into_owned()),
                env: output_env(job.req),
                files,
                native_cpu: job.native_cpu.map(|d| *d.hash_bytes()),
                prekey: *job.prekey.hash_bytes(),
                headers: None,
            },
        }
    }
}

/// Where a compile that never became a job writes, as far as its arguments say (`-o FILE`,
/// `-oFILE`): a link or a refused compile is then explained by its output's name too.
fn output_hint(args: &[OsString], cwd: &Path) -> Option<PathBuf> {
    let mut found = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let bytes = word.as_encoded_bytes();
        if bytes == b"-o" {
            found = words.next().map(PathBuf::from);
        } else if let Some(rest) = word.to_str().and_then(|w| w.strip_prefix("-o")) {
            found = Some(PathBuf::from(rest));
        }
    }
    found
        .filter(|p| !p.as_os_str().is_empty() && p.as_os_str() != "-")
        .map(|p| explain::output_path(&cwd.join(p)))
}

impl CompileService {
    /// Records what `req` was keyed on and what came of it; with `LLAMACC_DEBUG=1`, also
    /// appends its explanation to the debug log. Never fails the compile: a record that
    /// cannot be written is only logged.
    pub(super) async fn note(
        &self,
        req: &CompileRequest,
        settings: &Settings,
        args: &[OsString],
        keyed: Option<Keyed>,
        told: Told,
    ) {
        let (output, key) = match keyed {
            Some(k) => (k.output, Some(k.parts)),
            None => match output_hint(args, &req.cwd) {
                Some(output) => (output, None),
                None => return,
            },
        };
        let record = KeyRecord {
            time_ms: millis(std::time::SystemTime::now()),
            output: spelled(&output),
            cwd: spelled(&req.cwd),
            args: args.iter().map(|a| encode_os(a).into_owned()).collect(),
            outcome: told.outcome.name().to_string(),
            reason: told.reason,
            exit_code: told.exit_code,
            key,
        };
        let keys = self.keys.clone();
        let debug_log = settings.debug.then(|| self.store.root().join(DEBUG_LOG));
        let entry = told.entry;
        let written =
            tokio::task::spawn_blocking(move || write(&keys, record, entry, debug_log)).await;
        if let Err(e) = written {
            tracing::warn!("recording the key of {}: {e}", output.display());
        }
    }
}

/// Stores the header list and the record, then explains the record into `debug_log`.
fn write(
    keys: &Arc<KeyLog>,
    mut record: KeyRecord,
    entry: Option<Entry>,
    debug_log: Option<PathBuf>,
) {
    if let (Some(key), Some(entry)) = (record.key.as_mut(), entry.as_ref()) {
        match keys.put_headers(entry) {
            Ok(digest) => key.headers = Some(digest),
            Err(e) => tracing::warn!("recording the headers of {}: {e}", record.output),
        }
    }
    let output = record.output.clone();
    let history = match keys.push(record) {
        Ok(history) => history,
        Err(e) => {
            tracing::warn!("recording the key of {output}: {e}");
            return;
        }
    };
    let Some(log) = debug_log else {
        return;
    };
    if let Some(explanation) = keys.explain(&history)
        && let Err(e) = append(&log, &format!("{explanation}\n"))
    {
        tracing::warn!("writing {}: {e}", log.display());
    }
}

/// Appends `text` to the log at `path` in one write (lines of compiles finishing at once
/// do not interleave), starting a new log when it has grown past [`MAX_DEBUG_LOG`].
fn append(path: &Path, text: &str) -> std::io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() > MAX_DEBUG_LOG) {
        fs::rename(path, path.with_extension("log.old"))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_of_a_refused_compile_is_read_off_its_arguments() {
        let args = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        let cwd = Path::new("/nonexistent/w");
        assert_eq!(
            output_hint(&args("-o prog a.o -lm"), cwd),
            Some(PathBuf::from("/nonexistent/w/prog"))
        );
        assert_eq!(
            output_hint(&args("-c x.c -oout/x.o"), cwd),
            Some(PathBuf::from("/nonexistent/w/out/x.o"))
        );
        assert_eq!(output_hint(&args("-c x.c -o -"), cwd), None);
        assert_eq!(output_hint(&args("-c x.c"), cwd), None);
    }
}
