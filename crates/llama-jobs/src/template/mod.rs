//! Per-job command-line templates for `llama invoke` and `llama xargs`.
//!
//! Every command-line argument is a Go `text/template` (via the `gotmpl`
//! crate). Templates are parsed once, up front, and rendered once per job.
//! Rendering an argument can, as a side effect, declare files to ship to the
//! remote command (inputs) and files to bring back (outputs). The template
//! context ("dot") offers:
//!
//! | Expression                         | Evaluates to, and effect                                   |
//! |------------------------------------|------------------------------------------------------------|
//! | `.Line`                            | the job's input line, without its newline (xargs only)     |
//! | `.Idx`                             | the job's 0-based index (xargs only)                       |
//! | `.I PATH`, `.Input PATH`           | remote path; ships local file `PATH` (must exist)          |
//! | `.O PATH`, `.Output PATH`          | remote path; fetches `PATH` back after the run             |
//! | `.IO PATH`, `.InputOutput PATH`    | remote path; both of the above                             |
//! | `.AsFile TEXT`                     | `llama/tmp.N`; ships a file holding `TEXT` plus a newline if it lacks one |
//!
//! The remote path of `.I`/`.O`/`.IO` is `PATH` cleaned (`.` components and
//! repeated `/` dropped), so the command sees the same relative layout as the
//! local working directory. Absolute paths and paths with `..` components are
//! refused. Go's built-in functions (`printf`, `index`, `len`, `eq`, ...)
//! work as usual: `{{.O (printf "optimized/%s" .Line)}}`.
//!
//! # Input lines that are not UTF-8
//!
//! Go templates work on strings, file names and input lines are bytes. A line that is not
//! UTF-8 reaches the template in llama's lossless escaped form (each byte that is not part
//! of valid UTF-8 as NUL and two hex digits, see [`llama_core::encode_name`]), so `.Line`,
//! `printf`, `.I`, `.O` and `.AsFile` carry the exact bytes through: the local paths of
//! inputs and outputs, `.AsFile` content and the command's arguments are decoded back to
//! those bytes. Functions that look inside a string (`len`, `slice`, `index`, `js`, ...)
//! see the escaped form. A rendered argument or path holding a NUL that is not such an
//! escape is refused, since no argument or file name can hold NUL.
//!
//! Everything that can be checked before a job runs is checked by
//! [`ArgTemplates::parse`]: syntax, block structure, unknown functions,
//! variables, fields and templates, and literal paths such as `{{.O "/abs"}}`.

mod check;
mod error;
mod files;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gotmpl::Template;
use llama_exec::OutputMapping;

use self::check::compile;
pub use self::error::{ErrorKind, TemplateError};
use self::files::{JobFiles, job_value, lock};

/// Name under which each argument's body is registered in its `Template`.
/// The NUL byte keeps it out of reach of `{{define}}`/`{{template}}`.
const MAIN: &str = "\0llama-arg";

/// Go's built-in template functions; all of them are provided by gotmpl.
const BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// Template methods and the operation each performs.
const METHODS: &[(&str, Method)] = &[
    ("I", Method::Input),
    ("Input", Method::Input),
    ("O", Method::Output),
    ("Output", Method::Output),
    ("IO", Method::InputOutput),
    ("InputOutput", Method::InputOutput),
    ("AsFile", Method::AsFile),
];

/// Top-level fields available to `llama xargs` templates.
const XARGS_FIELDS: &[&str] = &[
    "Line",
    "Idx",
    "I",
    "Input",
    "O",
    "Output",
    "IO",
    "InputOutput",
    "AsFile",
];

/// Top-level fields available to `llama invoke` templates (no input line).
const INVOKE_FIELDS: &[&str] = &["I", "Input", "O", "Output", "IO", "InputOutput", "AsFile"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Input,
    Output,
    InputOutput,
    AsFile,
}

fn method_named(name: &str) -> Option<Method> {
    METHODS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, method)| method)
}

/// The command-line arguments of one `llama invoke`/`llama xargs` run, each
/// parsed once as a template and rendered once per job.
///
/// `ArgTemplates` is `Send + Sync`: workers may render jobs concurrently.
pub struct ArgTemplates {
    args: Vec<Arg>,
}

struct Arg {
    text: String,
    /// `None` when the argument holds no template syntax and renders as itself.
    template: Option<Template>,
}

impl fmt::Debug for ArgTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.args.iter().map(|a| &a.text))
            .finish()
    }
}

/// The per-job values visible to templates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobContext {
    /// `.Line`: the job's input line, without its trailing newline, in llama's escaped form
    /// where it is not UTF-8 ([`llama_core::encode_name`]).
    pub line: String,
    /// `.Idx`: the job's 0-based position in the input.
    pub idx: usize,
}

/// A file to ship to the remote command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputFile {
    /// A local file (from `.I`/`.IO`); its content is read by the caller.
    Local {
        /// Where to read the file locally (the render directory joined with
        /// the cleaned path).
        local: PathBuf,
        /// Where the remote command finds it, relative to its working directory.
        remote: String,
    },
    /// Literal content (from `.AsFile`). The original tool created these with
    /// file mode 0; callers should pick a sane mode such as 0o644.
    Bytes {
        /// The file's content.
        data: Vec<u8>,
        /// Where the remote command finds it, relative to its working directory.
        remote: String,
    },
}

impl InputFile {
    /// The path the remote command sees, relative to its working directory.
    pub fn remote(&self) -> &str {
        match self {
            InputFile::Local { remote, .. } | InputFile::Bytes { remote, .. } => remote,
        }
    }
}

/// The result of rendering every argument for one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The rendered arguments, in order.
    pub args: Vec<String>,
    /// Files to ship, deduplicated by remote path, in order of first use.
    pub inputs: Vec<InputFile>,
    /// Files to fetch back (where the remote command writes each, and where it lands
    /// locally), deduplicated by remote path, in order of first use.
    pub outputs: Vec<OutputMapping>,
}

impl ArgTemplates {
    /// Parses every argument for `llama xargs`: the context offers `.Line`,
    /// `.Idx`, `.I`/`.Input`, `.O`/`.Output`, `.IO`/`.InputOutput` and `.AsFile`.
    ///
    /// # Errors
    ///
    /// The first argument that is not a valid template, with its 1-based index,
    /// its text and the column of the problem: syntax errors, unbalanced
    /// `{{if}}`/`{{end}}`, unknown functions, variables, fields or templates,
    /// methods misused, and literal paths that are absolute or contain `..`.
    pub fn parse(args: &[String]) -> Result<Self, TemplateError> {
        Self::parse_with(args, XARGS_FIELDS)
    }

    /// Like [`parse`](Self::parse) for `llama invoke`, which has no input line:
    /// `.Line` and `.Idx` are rejected. Render with `JobContext::default()`.
    ///
    /// # Errors
    ///
    /// As for [`parse`](Self::parse).
    pub fn parse_invoke(args: &[String]) -> Result<Self, TemplateError> {
        Self::parse_with(args, INVOKE_FIELDS)
    }

    fn parse_with(args: &[String], fields: &'static [&'static str]) -> Result<Self, TemplateError> {
        let parsed = args
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let template = if text.contains("{{") {
                    let template = compile(text, fields).map_err(|(kind, position)| {
                        TemplateError::new(index, text, position, kind)
                    })?;
                    Some(template)
                } else {
                    None
                };
                Ok(Arg {
                    text: text.clone(),
                    template,
                })
            })
            .collect::<Result<_, TemplateError>>()?;
        Ok(ArgTemplates { args: parsed })
    }

    /// True when no argument contains template syntax: every job gets the
    /// arguments verbatim and no files, so rendering can be skipped.
    pub fn is_literal(&self) -> bool {
        self.args.iter().all(|a| a.template.is_none())
    }

    /// Renders every argument for one job, with local paths relative to the
    /// process's working directory.
    ///
    /// # Errors
    ///
    /// See [`render_in`](Self::render_in).
    pub fn render(&self, job: &JobContext) -> Result<Rendered, TemplateError> {
        self.render_in(job, Path::new(""))
    }

    /// Renders every argument for one job, with local paths (of inputs to read
    /// and outputs to write) resolved against `dir`. Remote paths do not
    /// depend on `dir`.
    ///
    /// Arguments are rendered in order and share one set of files, so
    /// `.AsFile` numbering continues across arguments.
    ///
    /// # Errors
    ///
    /// The first failing argument: an input file that does not exist, a path
    /// that is absolute or contains `..`, a method given a non-string, or any
    /// other evaluation error (e.g. `index` out of range).
    pub fn render_in(&self, job: &JobContext, dir: &Path) -> Result<Rendered, TemplateError> {
        let state = Arc::new(Mutex::new(JobFiles::new(dir)));
        let data = job_value(job, &state);
        let mut rendered_args = Vec::with_capacity(self.args.len());
        for (index, arg) in self.args.iter().enumerate() {
            let Some(template) = &arg.template else {
                rendered_args.push(arg.text.clone());
                continue;
            };
            match template.execute_template_to_string(MAIN, &data) {
                Ok(out) => {
                    // The executor decodes each argument to its bytes; refuse here what it
                    // could not, naming the argument.
                    if let Err(bad) = llama_core::decode_name(&out) {
                        return Err(TemplateError::new(index, &arg.text, None, bad.into()));
                    }
                    rendered_args.push(out)
                }
                Err(err) => {
                    let kind = lock(&state)
                        .failure
                        .take()
                        .unwrap_or_else(|| ErrorKind::Exec(err.to_string()));
                    return Err(TemplateError::new(index, &arg.text, None, kind));
                }
            }
        }
        drop(data);
        let files = std::mem::replace(&mut *lock(&state), JobFiles::new(dir));
        Ok(Rendered {
            args: rendered_args,
            inputs: files.inputs,
            outputs: files.outputs,
        })
    }
}
