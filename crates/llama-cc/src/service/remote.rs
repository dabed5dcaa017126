//! Compiling a miss on a remote executor.
//!
//! The local compiler lists what the compile reads (`-M`, every header, system ones too);
//! those files, the toolchain ([`crate::toolchain`]) and the arguments with their absolute
//! paths under a placeholder ([`crate::remote_args`]) make a hermetic action. A small
//! `/bin/sh` script, part of the command, puts the directory the inputs landed in for the
//! placeholder and records it in [`ROOT_MARKER`], so the depfile and diagnostics can name
//! the user's paths again when the result is delivered. `-ffile-prefix-map` does the same
//! inside the object, which is then byte-identical to a local compile's.

use std::ffi::OsString;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use llama_core::{ActionSpec, FUNCTION_PROPERTY, Store, encode_os};
use llama_exec::{Engine, HostCommand, OutputMapping, Termination, deliver_outputs, run_host};

use super::{
    Compilation, CompileReply, CompileRequest, CompileService, Fallback, GatheredInputs, blob,
    root_relative, unique,
};
use crate::compilation::{DepKind, Driver};
use crate::identity::Identity;
use crate::manifest::Entry;
use crate::remote_args::{ROOT_PLACEHOLDER, remote_args};
use crate::settings::Settings;
use crate::stats::Outcome;
use crate::toolchain::{self, Toolchain};

/// The output in which the remote command records the directory its inputs landed in.
pub(crate) const ROOT_MARKER: &str = ".llama-root";

/// Runs the rest of the command line with the placeholder replaced by the input root,
/// from the directory given first. Plain POSIX sh (dash, bash, busybox), no other program
/// but `mkdir`: the remote image needs nothing else. Exit 125 means the wrapper failed.
const WRAPPER: &str = r#"R=$(pwd -P) || exit 125
printf '%s' "$R" > .llama-root || exit 125
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1)); o=
  while :; do
    case $a in
      *@LLAMA_ROOT@*) o=$o${a%%@LLAMA_ROOT@*}$R; a=${a#*@LLAMA_ROOT@} ;;
      *) break ;;
    esac
  done
  set -- "$@" "$o$a"
done
mkdir -p "$1" && cd "$1" || exit 125
shift
exec "$@"
"#;

/// Environment variables that make gcc search directories the remote root does not have
/// (they are not moved under the sysroot).
const LOCAL_SEARCH_ENV: &[&str] = &[
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "OBJC_INCLUDE_PATH",
    "OBJCPLUS_INCLUDE_PATH",
    "COMPILER_PATH",
    "GCC_EXEC_PREFIX",
];

/// The flags that ask gcc for DWARF before version 5.
const OLD_DWARF: &[&str] = &["-gdwarf-2", "-gdwarf-3", "-gdwarf-4"];

/// Exit statuses that say the remote machinery failed rather than the compiler: the
/// wrapper's own (125), a program that could not be run (126, 127).
const INFRASTRUCTURE_EXITS: &[i32] = &[125, 126, 127];

/// Why a miss was not compiled remotely.
pub(super) enum NotRemote {
    /// It cannot be compiled remotely (the reason); compile it here.
    Unsuitable(String),
    /// The remote backend failed; compile it here (or not, without local fallback).
    Failed(String),
}

type Compiled = (CompileReply, Outcome, Option<String>, f64);

impl CompileService {
    /// Compiles a miss on the remote executor behind `engine`, records the manifest entry,
    /// and delivers the outputs.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn remote_compile(
        &self,
        engine: &Engine,
        settings: &Settings,
        req: &CompileRequest,
        driver: &Path,
        identity: &Identity,
        c: &Compilation,
        prekey: &llama_core::Digest,
        outputs: &[OutputMapping],
    ) -> Result<Compiled, NotRemote> {
        let started = Instant::now();
        let unsuitable = |r: String| NotRemote::Unsuitable(format!("not remote: {r}"));
        let args = remote_args(
            &c.args,
            Driver {
                family: identity.family,
                cxx: req.cxx,
            },
        )
        .map_err(unsuitable)?;
        if let Some((var, _)) = req
            .env
            .iter()
            .find(|(k, v)| !v.is_empty() && LOCAL_SEARCH_ENV.iter().any(|name| k == *name))
        {
            return Err(unsuitable(format!(
                "{} names directories of this machine",
                var.to_string_lossy()
            )));
        }
        // gcc 12 files an absolute main source under its remapped name and then looks it up
        // unmapped: before DWARF 5 the file table gets a second entry (PR101575).
        if c.source.is_absolute()
            && c.args
                .iter()
                .any(|a| OLD_DWARF.contains(&a.to_string_lossy().as_ref()))
        {
            return Err(unsuitable(
                "DWARF before version 5 with an absolute source path".into(),
            ));
        }
        let toolchain = self
            .toolchain(identity, c, &req.env)
            .await
            .map_err(unsuitable)?;
        // The scan runs here: it takes a local slot, the remote compile does not.
        let depfile = match c.language.is_preprocessed_by_compiler() {
            true => {
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|e| NotRemote::Failed(e.to_string()))?;
                Some(self.discover(driver, req, args.discovery).await?)
            }
            false => None,
        };
        let gathered = self
            .gather_inputs(
                req,
                driver,
                &identity.digest,
                c,
                depfile.as_deref(),
                Some(DepKind::AllHeaders),
                super::Gather::Remote,
            )
            .await;
        drop(depfile);
        let GatheredInputs {
            hashed,
            mut tree,
            absent,
            present,
            ..
        } = match gathered {
            Ok(Ok(g)) => g,
            Ok(Err(reason)) => return Err(NotRemote::Unsuitable(reason)),
            Err(e) => return Err(unsuitable(e.to_string())),
        };
        // The toolchain, and the files `__has_include` found, are inputs too.
        let extra = toolchain
            .files
            .iter()
            .map(|f| (f.remote.clone(), f.local.clone(), f.executable))
            .chain(present.iter().filter_map(|p| {
                let p = Path::new(p);
                p.is_file()
                    .then(|| (p.to_path_buf(), p.to_path_buf(), false))
            }));
        for (remote, local, executable) in extra {
            let digest = self
                .digest_of(&local)
                .map_err(|e| unsuitable(e.to_string()))?;
            tree.add_known(&root_relative(&remote), digest, executable, local)
                .map_err(|e| unsuitable(e.to_string()))?;
        }
        let action = self
            .remote_action(settings, req, &toolchain, args.rebased, outputs)
            .prepare(tree.build())
            .map_err(|e| unsuitable(e.to_string()))?;
        tracing::debug!(action = %action.action_digest, "remote compile of {}", c.source.display());

        let finished = engine
            .run(&action)
            .await
            .map_err(|e| NotRemote::Failed(format!("{} executor: {e}", engine.executor_name())))?;
        let exit_code = match finished.termination {
            Termination::Exited(code) if !INFRASTRUCTURE_EXITS.contains(&code) => code,
            other => {
                let store = self.store.clone();
                let result = finished.result.clone();
                let stderr = tokio::task::spawn_blocking(move || {
                    blob(&store, result.stderr_digest.as_ref()).unwrap_or_default()
                })
                .await
                .unwrap_or_default();
                return Err(NotRemote::Failed(format!(
                    "the remote compile {other}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                )));
            }
        };
        let store = self.store.clone();
        let result = finished.result.clone();
        let mappings = outputs.to_vec();
        let umask = req.umask;
        let depfile_remote = super::depfile_remote(&req.cwd, c);
        let delivered = tokio::task::spawn_blocking(move || {
            deliver_compile(&store, &result, &mappings, depfile_remote.as_deref(), umask)
        })
        .await
        .map_err(|e| NotRemote::Failed(e.to_string()))?
        .map_err(|e| NotRemote::Failed(describe_fallback(e)))?;
        let Some((stdout, stderr)) = delivered else {
            return Err(NotRemote::Failed(
                "the remote compile did not write every output".into(),
            ));
        };
        if exit_code != 0 {
            return Ok((
                CompileReply::Done {
                    exit_code,
                    stdout,
                    stderr,
                    cached: false,
                    notes: Vec::new(),
                },
                Outcome::CompileError,
                None,
                0.0,
            ));
        }
        let entry = Entry {
            inputs: hashed,
            absent,
            present,
            system: None,
            action: (
                *action.action_digest.hash_bytes(),
                action.action_digest.size(),
            ),
        };
        if let Err(e) = self.record_entry(prekey, entry) {
            tracing::warn!(
                "could not record the manifest of {}: {e}",
                c.source.display()
            );
        }
        let (outcome, saved) = if finished.cached {
            (
                Outcome::Hit,
                super::compile_seconds(&finished.result) - started.elapsed().as_secs_f64(),
            )
        } else {
            (Outcome::Remote, 0.0)
        };
        Ok((
            CompileReply::Done {
                exit_code: 0,
                stdout,
                stderr,
                cached: finished.cached,
                notes: Vec::new(),
            },
            outcome,
            None,
            saved,
        ))
    }

    /// The toolchain of this compiler for this language, found once per daemon.
    async fn toolchain(
        &self,
        identity: &Identity,
        c: &Compilation,
        env: &[(OsString, OsString)],
    ) -> Result<Arc<Toolchain>, String> {
        let key = (identity.digest, c.language.gcc_name());
        if let Some(found) = self.lock_toolchains().get(&key) {
            return found.clone();
        }
        let found = toolchain::discover(identity, c.language, env)
            .await
            .map(Arc::new);
        self.lock_toolchains().insert(key, found.clone());
        found
    }

    /// Lists what the compile reads, system headers included, with the local compiler.
    async fn discover(
        &self,
        driver: &Path,
        req: &CompileRequest,
        mut args: Vec<OsString>,
    ) -> Result<tempfile::TempPath, NotRemote> {
        let tmp = self.store.root().join("tmp");
        let depfile = tempfile::Builder::new()
            .prefix(&format!("deps-{}-{}-", std::process::id(), unique()))
            .suffix(".d")
            .tempfile_in(&tmp)
            .map_err(|e| {
                NotRemote::Unsuitable(format!("cannot create a file in {}: {e}", tmp.display()))
            })?
            .into_temp_path();
        args.extend(["-M".into(), "-MF".into(), depfile.as_os_str().to_owned()]);
        let output = run_host(
            &HostCommand {
                program: driver.to_path_buf(),
                args,
                cwd: req.cwd.clone(),
                env: req.env.clone(),
                umask: None,
            },
            self.timeout,
        )
        .await
        .map_err(|e| NotRemote::Unsuitable(format!("dependency scan: {e}")))?;
        if !output.termination.success() {
            // The compile itself will fail the same way; here, with the user's diagnostics.
            return Err(NotRemote::Unsuitable("dependency scan failed".into()));
        }
        Ok(depfile)
    }

    /// The action: the wrapper, then the shipped driver with the rebased arguments.
    fn remote_action(
        &self,
        settings: &Settings,
        req: &CompileRequest,
        toolchain: &Toolchain,
        rebased: Vec<OsString>,
        outputs: &[OutputMapping],
    ) -> ActionSpec {
        let mut arguments: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            WRAPPER.into(),
            "llamacc-remote".into(),
            format!("{ROOT_PLACEHOLDER}{}", req.cwd.display()),
        ];
        arguments.extend(toolchain.command_prefix());
        arguments.extend(rebased.iter().map(|a| encode_os(a).into_owned()));
        let mut env = super::output_env(req);
        env.push(("PATH".into(), "/usr/bin:/bin".into()));
        ActionSpec {
            arguments,
            env,
            output_paths: outputs
                .iter()
                .map(|o| o.remote.clone())
                .chain(std::iter::once(ROOT_MARKER.to_string()))
                .collect(),
            platform: vec![(FUNCTION_PROPERTY.into(), settings.function.clone())],
            timeout: Some(self.timeout),
            ..Default::default()
        }
    }
}

/// A delivered compile's stdout and stderr.
pub(super) type Replayed = (Vec<u8>, Vec<u8>);

/// Delivers a compile's outputs and returns its stdout and stderr; `None` when the result
/// lacks the object or the depfile. A result compiled remotely names its input root in its
/// depfile and diagnostics: the root is taken out, so they name the user's paths.
pub(super) fn deliver_compile(
    store: &Store,
    result: &llama_core::reapi::ActionResult,
    outputs: &[OutputMapping],
    depfile_remote: Option<&str>,
    umask: u32,
) -> Result<Option<Replayed>, Fallback> {
    let mut stdout = blob(store, result.stdout_digest.as_ref())?;
    let mut stderr = blob(store, result.stderr_digest.as_ref())?;
    let root = result
        .output_files
        .iter()
        .find(|f| f.path == ROOT_MARKER)
        .map(|f| blob(store, f.digest.as_ref()))
        .transpose()?;
    let mut result = result.clone();
    if let Some(root) = root.filter(|r| !r.is_empty()) {
        stdout = without(&stdout, &root);
        stderr = without(&stderr, &root);
        if let Some(dep) = result
            .output_files
            .iter_mut()
            .find(|f| Some(f.path.as_str()) == depfile_remote)
        {
            let text = without(&blob(store, dep.digest.as_ref())?, &root);
            let text = crate::depfile::rewrap_gcc(&String::from_utf8_lossy(&text));
            dep.digest = Some(store.put_bytes(text.as_bytes())?.to_proto());
        }
    }
    // The object and the depfile must be there; the files a compiler writes only sometimes
    // (`.dwo`, `.su`) are delivered when they are.
    let success = result.exit_code == 0;
    let required = |o: &OutputMapping| {
        success && (o.remote == outputs[0].remote || Some(o.remote.as_str()) == depfile_remote)
    };
    let present: Vec<OutputMapping> = outputs
        .iter()
        .filter(|o| required(o) || result.output_files.iter().any(|f| f.path == o.remote))
        .cloned()
        .collect();
    if !deliver_outputs(store, &result, &present, umask)?.is_empty() {
        return Ok(None);
    }
    Ok(Some((stdout, stderr)))
}

/// `text` with every occurrence of `needle` removed.
fn without(text: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(needle) {
            i += needle.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn describe_fallback(f: Fallback) -> String {
    match f {
        Fallback::Local(r) => r,
        Fallback::Error(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_root_is_taken_out_of_text() {
        assert_eq!(
            without(b"/tmp/r1/src/a.o: /tmp/r1/src/a.c x.h", b"/tmp/r1"),
            b"/src/a.o: /src/a.c x.h"
        );
        assert_eq!(without(b"", b"/r"), b"");
    }

    #[test]
    fn the_wrapper_replaces_every_placeholder_and_runs_in_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(root.path()).unwrap();
        fs::create_dir_all(root.join("src")).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .current_dir(&root)
            .args([
                "-c",
                WRAPPER,
                "llamacc-remote",
                "@LLAMA_ROOT@/src",
                "/bin/sh",
                "-c",
                "pwd; printf '%s\\n' \"$@\"",
                "sh",
                "-I@LLAMA_ROOT@/inc",
                "a,@LLAMA_ROOT@/x:@LLAMA_ROOT@/y",
                "plain arg",
            ])
            .output()
            .unwrap();
        let r = root.display();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{r}/src\n-I{r}/inc\na,{r}/x:{r}/y\nplain arg\n")
        );
        assert_eq!(
            fs::read_to_string(root.join(ROOT_MARKER)).unwrap(),
            r.to_string()
        );
    }
}
