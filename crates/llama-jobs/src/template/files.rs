//! The files one job declares while its arguments render (`.I`, `.O`, `.IO`, `.AsFile`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use gotmpl::{Value, ValueFunc};
use llama_exec::OutputMapping;

use super::{ErrorKind, InputFile, JobContext, METHODS, Method};

/// Validates a path given to `.I`/`.O`/`.IO` and returns its remote form:
/// relative, with `.` components and repeated or trailing `/` removed.
pub(super) fn clean_path(method: &str, path: &str) -> Result<String, ErrorKind> {
    let err = |make: fn(String, String) -> ErrorKind| make(method.to_string(), path.to_string());
    if path.starts_with('/') {
        return Err(err(|method, path| ErrorKind::AbsolutePath { method, path }));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(err(|method, path| ErrorKind::EscapesWorkDir {
                    method,
                    path,
                }));
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(err(|method, path| ErrorKind::EmptyPath { method, path }));
    }
    Ok(parts.join("/"))
}

/// The files one job's rendering has declared so far.
pub(super) struct JobFiles {
    dir: PathBuf,
    pub(super) inputs: Vec<InputFile>,
    input_index: HashMap<String, usize>,
    pub(super) outputs: Vec<OutputMapping>,
    output_remotes: HashSet<String>,
    /// The error behind a failed method call, reported instead of gotmpl's
    /// flattened copy.
    pub(super) failure: Option<ErrorKind>,
}

impl JobFiles {
    pub(super) fn new(dir: &Path) -> Self {
        JobFiles {
            dir: dir.to_path_buf(),
            inputs: Vec::new(),
            input_index: HashMap::new(),
            outputs: Vec::new(),
            output_remotes: HashSet::new(),
            failure: None,
        }
    }

    fn call(&mut self, name: &str, method: Method, args: &[Value]) -> Result<String, ErrorKind> {
        let bad = |problem: String| ErrorKind::BadMethodCall {
            method: name.to_string(),
            problem,
        };
        let arg = match args {
            [Value::String(s)] => s,
            [other] => {
                return Err(bad(format!(
                    "expects a string argument, got {}",
                    other.type_name()
                )));
            }
            _ => {
                return Err(bad(format!(
                    "takes exactly one argument, got {}",
                    args.len()
                )));
            }
        };
        if method == Method::AsFile {
            return self.add_bytes(arg);
        }
        let remote = clean_path(name, arg)?;
        // Checked before anything is recorded, so a bad name leaves no half-declared file.
        llama_core::decode_name(&remote)?;
        if matches!(method, Method::Input | Method::InputOutput) {
            self.add_local_input(&remote)?;
        }
        if matches!(method, Method::Output | Method::InputOutput)
            && self.output_remotes.insert(remote.clone())
        {
            self.outputs.push(OutputMapping {
                local: self.dir.join(llama_core::decode_os(&remote)?),
                remote: remote.clone(),
            });
        }
        Ok(remote)
    }

    fn add_local_input(&mut self, remote: &str) -> Result<(), ErrorKind> {
        if let Some(&i) = self.input_index.get(remote) {
            return match self.inputs.get(i) {
                Some(InputFile::Local { .. }) => Ok(()),
                _ => Err(ErrorKind::InputConflict(remote.to_string())),
            };
        }
        let local = self.dir.join(llama_core::decode_os(remote)?);
        match std::fs::metadata(&local) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(ErrorKind::InputNotFile(local)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ErrorKind::InputMissing(local));
            }
            Err(source) => {
                return Err(ErrorKind::InputInaccessible {
                    path: local,
                    source,
                });
            }
        }
        self.push_input(InputFile::Local {
            local,
            remote: remote.to_string(),
        });
        Ok(())
    }

    fn add_bytes(&mut self, text: &str) -> Result<String, ErrorKind> {
        // As in the original: `llama/tmp.N`, N the number of inputs so far
        // (skipping names already taken), and a newline appended if missing.
        let mut n = self.inputs.len();
        let remote = loop {
            let candidate = format!("llama/tmp.{n}");
            if !self.input_index.contains_key(&candidate) {
                break candidate;
            }
            n += 1;
        };
        let mut data = llama_core::decode_name(text)?.into_owned();
        if !data.ends_with(b"\n") {
            data.push(b'\n');
        }
        self.push_input(InputFile::Bytes {
            data,
            remote: remote.clone(),
        });
        Ok(remote)
    }

    fn push_input(&mut self, input: InputFile) {
        self.input_index
            .insert(input.remote().to_string(), self.inputs.len());
        self.inputs.push(input);
    }
}

/// Builds the template data ("dot") for one job: `.Line`, `.Idx` and one
/// function value per method, all recording into `state`.
pub(super) fn job_value(job: &JobContext, state: &Arc<Mutex<JobFiles>>) -> Value {
    let mut map: BTreeMap<Arc<str>, Value> = BTreeMap::new();
    map.insert("Line".into(), Value::String(job.line.as_str().into()));
    map.insert(
        "Idx".into(),
        match i64::try_from(job.idx) {
            Ok(idx) => Value::Int(idx),
            Err(_) => Value::Uint(u64::try_from(job.idx).unwrap_or(u64::MAX)),
        },
    );
    for &(name, method) in METHODS {
        let state = Arc::clone(state);
        let func: ValueFunc = Arc::new(move |args: &[Value]| {
            let mut files = lock(&state);
            match files.call(name, method, args) {
                Ok(remote) => Ok(Value::String(remote.into())),
                Err(kind) => {
                    let message = kind.to_string();
                    files.failure = Some(kind);
                    Err(gotmpl::TemplateError::Exec(message))
                }
            }
        });
        map.insert(name.into(), Value::Function(func));
    }
    Value::Map(Arc::new(map))
}

pub(super) fn lock(state: &Mutex<JobFiles>) -> std::sync::MutexGuard<'_, JobFiles> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
