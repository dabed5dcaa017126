//! Compiling a miss in place: the real compiler, the user's arguments, the user's
//! directory, so the object is the one a plain build makes. A depfile says what it read;
//! the result is recorded through the [`Engine`] like any executor's, and the manifest
//! entry names its action.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use llama_core::platform::{
    COMPILER_PROPERTY, CWD_PROPERTY, PROBES_PROPERTY, PWD_PROPERTY, SYSTEM_HEADERS_PROPERTY,
};
use llama_core::{ActionSpec, Hasher, PreparedAction, Store, encode_os};
use llama_exec::{
    CachePolicy, Engine, HostCommand, HostOutput, LocalExecutor, Produced, Termination, run_host,
};
use tokio::sync::Semaphore;

use super::inputs::{Gather, GatheredInputs, Reads};
use super::paths::{logical_dir, output_env, output_mappings};
use super::remote::Stayed;
use super::{CompileService, Done, Fallback, Job};
use crate::error::CcError;
use crate::manifest::Entry;
use crate::stats::{CannotCache, ERROR_REASON, NotRemote, Outcome};

/// What compiling on this machine needs.
pub(super) struct InPlace {
    /// At most this many compiles (and dependency scans) run here at once.
    slots: Semaphore,
    /// How long one compile may take.
    timeout: Duration,
    /// The daemon's own file-creation mask: a client's other mask is set for its compile.
    own_umask: u32,
    /// What results produced here are recorded through, as an executor's would be.
    engine: Engine,
}

impl InPlace {
    pub(super) fn new(store: &Store, jobs: usize, timeout: Duration, own_umask: u32) -> InPlace {
        let executor = LocalExecutor::new(store.clone(), jobs, timeout);
        InPlace {
            slots: Semaphore::new(jobs.max(1)),
            timeout,
            own_umask,
            engine: Engine::new(store.clone(), Arc::new(executor), CachePolicy::default()),
        }
    }

    /// Waits for a slot to run a compiler here.
    pub(super) async fn slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, CcError> {
        self.slots
            .acquire()
            .await
            .map_err(|e| CcError::Exec(llama_exec::ExecError::Task(e.to_string())))
    }

    /// How long one compile may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The compiler's run here, and when it started and finished.
struct Ran {
    output: HostOutput,
    times: (SystemTime, SystemTime),
}

impl CompileService {
    /// Step 4, here: compiles `job` in place and records what it read, counting why it
    /// did not compile remotely (`stayed`).
    pub(super) async fn compile_in_place(
        &self,
        job: &Job<'_>,
        stayed: Stayed,
    ) -> Result<Done, Fallback> {
        let _slot = self.in_place.slot().await?;
        let c = &job.c;
        let own_depfile = c.depfile.is_none() && c.language.is_preprocessed_by_compiler();
        let tmp_depfile = own_depfile.then(|| {
            self.store
                .root()
                .join("tmp")
                .join(format!("dep-{}-{}.d", std::process::id(), unique()))
        });
        let ran = self.run_in_place(job, tmp_depfile.as_deref()).await?;
        let exit_code = match ran.output.termination {
            Termination::Exited(code) => code,
            other => other.shell_status(),
        };
        let done = |outcome| {
            let mut done = Done::new(
                outcome,
                exit_code,
                ran.output.stdout.clone(),
                ran.output.stderr.clone(),
            );
            done.notes = stayed.notes.clone();
            done
        };
        if !ran.output.termination.success() {
            if let Some(dep) = &tmp_depfile {
                let _ = fs::remove_file(dep);
            }
            return Ok(done(Outcome::CompileError));
        }
        let depfile_path = tmp_depfile
            .clone()
            .or_else(|| c.depfile.as_ref().map(|d| job.req.cwd.join(&d.path)));
        let recorded = self.record(job, depfile_path.as_deref(), &ran).await;
        if let Some(dep) = &tmp_depfile {
            let _ = fs::remove_file(dep);
        }
        let entry = match &recorded {
            Ok(Ok(entry)) => Some(entry.clone()),
            _ => None,
        };
        let mut done = match (recorded, stayed.why) {
            (Ok(Ok(_)), Some((NotRemote::Failed, detail))) => {
                done(Outcome::Fallback).because(NotRemote::Failed.name(), detail)
            }
            // Compiled here although a remote backend is set: the reason is counted.
            (Ok(Ok(_)), Some((reason, detail))) => {
                done(Outcome::Miss).because(reason.name(), detail)
            }
            (Ok(Ok(_)), None) => done(Outcome::Miss),
            (Ok(Err(reason)), _) => done(Outcome::Uncacheable).because(reason.name(), None),
            (Err(e), _) => {
                // The compile itself succeeded; only caching failed. Say so once, keep going.
                let mut done = done(Outcome::Error).because(ERROR_REASON, None);
                done.notes.push(format!(
                    "llamacc: warning: could not cache this compile: {e:#}"
                ));
                done
            }
        };
        done.entry = entry;
        Ok(done)
    }

    /// Runs the compiler in the user's directory, writing a depfile to `tmp_depfile` when
    /// the user asked for none.
    async fn run_in_place(
        &self,
        job: &Job<'_>,
        tmp_depfile: Option<&Path>,
    ) -> Result<Ran, Fallback> {
        let mut run_args = job.args.to_vec();
        if let Some(dep) = tmp_depfile {
            run_args.extend(["-MD".into(), "-MF".into(), dep.as_os_str().to_owned()]);
        }
        let started = SystemTime::now();
        let output = run_host(
            &HostCommand {
                program: job.driver.clone(),
                args: run_args,
                cwd: job.req.cwd.clone(),
                env: job.req.env.clone(),
                umask: (job.req.umask != self.in_place.own_umask).then_some(job.req.umask),
            },
            self.in_place.timeout,
        )
        .await
        .map_err(|e| {
            Fallback::Error(CcError::Spawn {
                path: job.driver.clone(),
                message: e.to_string(),
            })
        })?;
        Ok(Ran {
            output,
            times: (started, SystemTime::now()),
        })
    }

    /// Records a successful compile: its inputs, its result through the engine, and the
    /// manifest entry, which it returns; or why it could not be cached.
    async fn record(
        &self,
        job: &Job<'_>,
        depfile: Option<&Path>,
        ran: &Ran,
    ) -> Result<Result<Entry, CannotCache>, CcError> {
        let listed = job.c.depfile.as_ref().map(|d| d.kind);
        let mode = Gather::InPlace {
            started: ran.times.0,
        };
        let gathered = match self
            .gather_inputs(
                job,
                depfile.map_or(Reads::SourceOnly, Reads::Depfile),
                listed,
                mode,
            )
            .await?
        {
            Ok(g) => g,
            Err(reason) => return Ok(Err(reason)),
        };
        let outputs = match output_mappings(&job.req.cwd, &job.c) {
            Ok((outputs, _)) => outputs,
            Err(reason) => return Ok(Err(reason.into())),
        };
        let GatheredInputs {
            hashed,
            tree,
            absent,
            present,
            system,
        } = gathered;
        let mut spec = in_place_spec(job, &absent, &present, system);
        spec.output_paths = outputs.iter().map(|o| o.remote.clone()).collect();
        let action: PreparedAction = spec
            .prepare(tree.build())
            .map_err(|e| CcError::input(&job.req.cwd, e))?;
        let produced = Produced {
            exit_code: 0,
            stdout: ran.output.stdout.clone(),
            stderr: ran.output.stderr.clone(),
            // Copied, never linked: the build may rewrite its object files in place.
            outputs,
            worker: "llamacc in place".into(),
            times: ran.times,
        };
        self.in_place.engine.record(&action, produced).await?;
        let action_digest = action.action_digest;
        tracing::debug!(
            inputs = hashed.len(),
            absent = absent.len(),
            present = present.len(),
            action = %action_digest,
            "recorded {}",
            job.c.source.display()
        );
        let entry = Entry {
            inputs: hashed,
            absent,
            present,
            system,
            action: (*action_digest.hash_bytes(), action_digest.size()),
        };
        self.record_entry(&job.prekey, entry.clone())?;
        Ok(Ok(entry))
    }
}

/// The action of a compile run in place, without its outputs: the compiler and arguments,
/// the environment that changes the output, and in the platform what else decides it.
fn in_place_spec(
    job: &Job<'_>,
    absent: &[String],
    present: &[String],
    system: Option<[u8; 32]>,
) -> ActionSpec {
    let cwd = &job.req.cwd;
    let mut spec = ActionSpec {
        arguments: std::iter::once(encode_os(job.driver.as_os_str()).into_owned())
            .chain(job.args.iter().map(|a| encode_os(a).into_owned()))
            .collect(),
        env: output_env(job.req),
        platform: vec![
            (COMPILER_PROPERTY.into(), job.identity.digest.hex()),
            (CWD_PROPERTY.into(), encode_os(cwd.as_os_str()).into_owned()),
        ],
        ..Default::default()
    };
    if let Some(sys) = system {
        spec.platform
            .push((SYSTEM_HEADERS_PROPERTY.into(), hex(&sys)));
    }
    // Two compiles that differ only in $PWD write different objects: the action's key
    // must tell them apart, or one would overwrite the other's cached result.
    if let Some(dir) = logical_dir(job.req) {
        spec.platform
            .push((PWD_PROPERTY.into(), encode_os(dir).into_owned()));
    }
    // Which files were absent and which present decides the result as much as the
    // content of the inputs (`__has_include`), so it is part of the action's key.
    if !absent.is_empty() || !present.is_empty() {
        let mut h = Hasher::default();
        for (tag, list) in [(&b"absent"[..], absent), (&b"present"[..], present)] {
            h.update(tag);
            h.update(b"\0");
            for p in list {
                h.update(p.as_bytes());
                h.update(b"\0");
            }
        }
        spec.platform
            .push((PROBES_PROPERTY.into(), h.finish().hex()));
    }
    spec
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A number no other temporary file of this daemon has.
pub(super) fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
