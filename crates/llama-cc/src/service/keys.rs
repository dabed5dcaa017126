//! What each compile's key was made of, remembered for `llama explain` and
//! `LLAMACC_DEBUG` ([`crate::explain`]).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use llama_core::Digest;

use crate::explain::{self, KeyRecord};

use super::{CompileService, Done, Job, OUTPUT_ENV};
use crate::stats::Outcome;

impl CompileService {
    /// Records `job`'s key with how it was answered; with `LLAMACC_DEBUG`, appends the
    /// explanation to `$LLAMA_DIR/debug.log`. A miss is recorded before it is answered (so
    /// that `llama explain` right after it explains it, not the one before); a hit, which
    /// has nothing to explain but that it was one, is recorded off its path, and not at all
    /// when it repeats the object's last record (the usual rebuild after `make clean`).
    pub(super) async fn remember_key(&self, job: &Job<'_>, done: &Done) {
        let entry = self
            .manifest(&job.prekey)
            .ok()
            .and_then(|m| m.entries.first().cloned());
        let output = explain::normalize(&job.req.cwd.join(&job.c.output));
        let debug = job.settings.debug;
        // The pre-key (compiler, arguments, directory, environment, source), the headers'
        // action and the outcome say everything a record would: a repeat is known before
        // the record, with its hundreds of header digests, is built.
        let mut h = llama_core::Hasher::default();
        h.update(job.prekey.hash_bytes());
        h.update(&entry.as_ref().map_or([0; 32], |e| e.action.0));
        h.update(done.outcome.description().as_bytes());
        if !self.remembered.is_new(&output, h.finish()) && !debug {
            return;
        }
        let record = self.key_record(job, done, entry, output);
        let hit = record.hit;
        let llama_dir = self.store.root().to_path_buf();
        let saved = tokio::task::spawn_blocking(move || {
            if let Err(e) = explain::save(&llama_dir, &record) {
                tracing::debug!("cannot record the key of {}: {e}", record.output.display());
            }
            if debug {
                let text = explain::explain(&explain::load(&llama_dir, &record.output));
                let log = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(llama_dir.join("debug.log"));
                if let Ok(mut log) = log {
                    let _ = log.write_all(text.as_bytes());
                }
            }
        });
        if !hit {
            let _ = saved.await;
        }
    }

    /// The key's parts: the job's, and the headers of the manifest entry the compile used
    /// or made (the newest).
    fn key_record(
        &self,
        job: &Job<'_>,
        done: &Done,
        entry: Option<crate::manifest::Entry>,
        output: std::path::PathBuf,
    ) -> KeyRecord {
        let (inputs, absent) = entry
            .map(|e| {
                let inputs = e
                    .inputs
                    .iter()
                    .map(|(path, digest, _)| {
                        (
                            path.clone(),
                            llama_core::Digest::from_parts(*digest, 0).hex(),
                        )
                    })
                    .collect();
                (inputs, e.absent)
            })
            .unwrap_or_default();
        KeyRecord {
            output,
            source: job.c.source.clone(),
            cwd: job.req.cwd.clone(),
            compiler: job.driver.clone(),
            compiler_digest: job.identity.digest.hex(),
            compiler_version: job.identity.version.clone(),
            args: job
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env: OUTPUT_ENV
                .iter()
                .filter_map(|var| {
                    job.req
                        .env
                        .iter()
                        .find(|(k, _)| k == *var)
                        .map(|(_, v)| format!("{var}={}", v.to_string_lossy()))
                })
                .collect(),
            inputs,
            absent,
            outcome: done.outcome.description().to_string(),
            hit: done.outcome == Outcome::Hit,
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }
}

/// The last record of each object this daemon wrote, by fingerprint, to skip writing one
/// that says nothing new.
#[derive(Default)]
pub(super) struct Remembered {
    last: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Digest>>,
}

/// Objects remembered before the map starts afresh.
const REMEMBERED: usize = 100_000;

impl Remembered {
    /// Whether `fingerprint` differs from `output`'s last one, remembering it.
    fn is_new(&self, output: &std::path::Path, fingerprint: Digest) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() >= REMEMBERED {
            last.clear();
        }
        last.insert(output.to_path_buf(), fingerprint) != Some(fingerprint)
    }
}
