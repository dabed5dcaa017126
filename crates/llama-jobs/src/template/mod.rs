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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use gotmpl::parse::{
    BranchNode, CommandNode, Expr, ListNode, Node, Parser, PipeNode, Pos, SmolStr,
};
use gotmpl::{MissingKey, Template, Value, ValueFunc};

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

/// A file the remote command is expected to produce, to be fetched back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputFile {
    /// Where to store the file locally.
    pub local: PathBuf,
    /// Where the remote command writes it, relative to its working directory.
    pub remote: String,
}

/// The result of rendering every argument for one job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// The rendered arguments, in order.
    pub args: Vec<String>,
    /// Files to ship, deduplicated by remote path, in order of first use.
    pub inputs: Vec<InputFile>,
    /// Files to fetch back, deduplicated by remote path, in order of first use.
    pub outputs: Vec<OutputFile>,
}

/// Why parsing or rendering an argument failed; see [`ErrorKind`].
///
/// Displays as one line naming the argument (1-based index within the slice
/// given to [`ArgTemplates::parse`], and its text), the position in it when
/// known, and the problem, e.g.
/// `argument 2 "{{.O \"/tmp/x\"}}": column 6: .O "/tmp/x": absolute paths are
/// not allowed; use a path relative to the working directory`.
#[derive(Debug, thiserror::Error)]
#[error("argument {index} ({arg}): {position}{kind}")]
pub struct TemplateError {
    index: usize,
    arg: ArgText,
    position: Position,
    kind: ErrorKind,
}

// The accessors let tests (and later callers) inspect an error without parsing its text.
impl TemplateError {
    /// 1-based index of the offending argument within the parsed slice.
    pub fn arg_index(&self) -> usize {
        self.index
    }

    /// The offending argument's full text.
    pub fn arg(&self) -> &str {
        &self.arg.0
    }

    /// 1-based line within the argument, when the error has a position.
    pub fn line(&self) -> Option<usize> {
        self.position.0.map(|(line, _)| line)
    }

    /// 1-based column (in characters) within its line, when the error has a
    /// position.
    pub fn column(&self) -> Option<usize> {
        self.position.0.map(|(_, column)| column)
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

/// What went wrong in a [`TemplateError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Malformed template syntax or block structure.
    #[error("{0}")]
    Syntax(String),
    /// A call to a function that does not exist.
    #[error("function {0:?} not defined")]
    UnknownFunction(String),
    /// A use of a variable that was never declared.
    #[error("undefined variable {0:?}")]
    UnknownVariable(String),
    /// `{{template "x"}}` where `x` is not defined in the same argument.
    #[error("template {0:?} not defined")]
    UnknownTemplate(String),
    /// A field that the template context does not have.
    #[error("can't evaluate field {name} (available: {available})")]
    UnknownField {
        /// The field as written, e.g. `.Lines`.
        name: String,
        /// The fields that do exist.
        available: String,
    },
    /// A method used as a value, or called with the wrong arguments.
    #[error(".{method}: {problem}")]
    BadMethodCall {
        /// The method as written, e.g. `I` or `Input`.
        method: String,
        /// What is wrong with the call.
        problem: String,
    },
    /// An absolute path passed to `.I`/`.O`/`.IO`.
    #[error(
        ".{method} {path:?}: absolute paths are not allowed; use a path relative to the working directory"
    )]
    AbsolutePath {
        /// The method as written.
        method: String,
        /// The path as given.
        path: String,
    },
    /// A path with a `..` component passed to `.I`/`.O`/`.IO`.
    #[error(
        ".{method} {path:?}: \"..\" is not allowed; the path must stay inside the working directory"
    )]
    EscapesWorkDir {
        /// The method as written.
        method: String,
        /// The path as given.
        path: String,
    },
    /// An empty path (or one naming the working directory itself).
    #[error(".{method} {path:?}: the path names no file")]
    EmptyPath {
        /// The method as written.
        method: String,
        /// The path as given.
        path: String,
    },
    /// `.I`/`.IO` of a file that does not exist locally.
    #[error("input file {0:?} does not exist")]
    InputMissing(PathBuf),
    /// `.I`/`.IO` of something that is not a regular file (e.g. a directory).
    #[error("input {0:?} is not a regular file")]
    InputNotFile(PathBuf),
    /// `.I`/`.IO` of a file whose metadata could not be read.
    #[error("cannot access input file {path:?}: {source}")]
    InputInaccessible {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Two different inputs claim the same remote path (e.g. `.AsFile`
    /// content and a local file named `llama/tmp.0`).
    #[error("two different inputs use the remote path {0:?}")]
    InputConflict(String),
    /// A rendered argument, path or `.AsFile` text holding a NUL that is not llama's escape
    /// of a byte (see the module documentation).
    #[error("{0}")]
    BadEscape(#[from] llama_core::BadEscape),
    /// Any other error while evaluating the template.
    #[error("{0}")]
    Exec(String),
}

/// The argument's text for display: quoted, and shortened when very long.
#[derive(Debug)]
struct ArgText(String);

impl fmt::Display for ArgText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 100;
        match self.0.char_indices().nth(MAX_CHARS) {
            Some((cut, _)) => write!(f, "{:?}...", &self.0[..cut]),
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Optional (line, column) of an error; displays as a prefix such as
/// `column 5: ` (single-line arguments) or `line 2, column 5: `.
#[derive(Debug)]
struct Position(Option<(usize, usize)>, bool);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some((line, column)) if self.1 => write!(f, "line {line}, column {column}: "),
            Some((_, column)) => write!(f, "column {column}: "),
            None => Ok(()),
        }
    }
}

impl TemplateError {
    fn new(index: usize, text: &str, position: Option<(usize, usize)>, kind: ErrorKind) -> Self {
        TemplateError {
            index: index + 1,
            arg: ArgText(text.to_string()),
            position: Position(
                position.filter(|&(line, column)| line > 0 && column > 0),
                text.contains('\n'),
            ),
            kind,
        }
    }
}

/// 1-based (line, column-in-characters) of a byte offset in `src`.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
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

fn lock(state: &Mutex<JobFiles>) -> std::sync::MutexGuard<'_, JobFiles> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A located parse-time problem: the kind and its (line, column) if known.
type Located = (ErrorKind, Option<(usize, usize)>);

/// Parses, checks and prepares one argument.
fn compile(src: &str, fields: &'static [&'static str]) -> Result<Template, Located> {
    let (mut tree, mut defines) = Parser::new(src, "{{", "}}")
        .and_then(Parser::parse)
        .map_err(|err| match err {
            gotmpl::TemplateError::Parse {
                line, col, message, ..
            }
            | gotmpl::TemplateError::Lex {
                line, col, message, ..
            } => (ErrorKind::Syntax(message), Some((line, col))),
            other => (ErrorKind::Syntax(other.to_string()), None),
        })?;
    check_structure(src)?;

    // Go rejects two non-empty definitions of one name in a single parse; an
    // empty redefinition is ignored.
    let mut bodies: BTreeMap<String, ListNode> = BTreeMap::new();
    let mut non_empty = HashSet::new();
    let templates: HashSet<String> = defines.iter().map(|d| d.name.to_string()).collect();
    let mut checker = Checker {
        src,
        fields,
        templates,
        vars: Vec::new(),
    };
    for define in &mut defines {
        checker.define_body(&mut define.body)?;
    }
    checker.top_level(&mut tree)?;
    for define in defines {
        let name = define.name.to_string();
        if define.body.is_empty_tree() {
            bodies.entry(name).or_insert(define.body);
        } else if non_empty.insert(name.clone()) {
            bodies.insert(name, define.body);
        } else {
            return Err((
                ErrorKind::Syntax(format!("multiple definition of template {name:?}")),
                Some(line_col(src, define.pos.offset)),
            ));
        }
    }

    let mut template = Template::new(MAIN).missing_key(MissingKey::Error);
    for (name, body) in bodies {
        template = template.add_parse_tree(&name, body);
    }
    Ok(template.add_parse_tree(MAIN, tree))
}

/// Keyword of a `{{...}}` action that affects block structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    If,
    Range,
    With,
    Define,
    Block,
    /// `{{else}}`; `chained` for `{{else if ...}}` / `{{else with ...}}`.
    Else {
        chained: bool,
    },
    End,
}

impl Keyword {
    fn name(self) -> &'static str {
        match self {
            Keyword::If => "if",
            Keyword::Range => "range",
            Keyword::With => "with",
            Keyword::Define => "define",
            Keyword::Block => "block",
            Keyword::Else { .. } => "else",
            Keyword::End => "end",
        }
    }
}

/// Finds the structural keyword actions of a template that gotmpl already
/// lexed successfully, with the byte offset of their `{{`.
fn structural_actions(src: &str) -> Vec<(usize, Keyword)> {
    fn word(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(rel) = src.get(pos..).and_then(|rest| rest.find("{{")) {
        let start = pos + rel;
        let mut rest = &src[start + 2..];
        // A trim marker is "-" followed by white space.
        if let Some(after) = rest.strip_prefix('-')
            && after.starts_with([' ', '\t', '\r', '\n'])
        {
            rest = after;
        }
        rest = rest.trim_start();
        let body_start = src.len() - rest.len();
        if rest.starts_with("/*") {
            // A comment may contain "}}"; it ends at "*/".
            let Some(close) = rest.find("*/") else { break };
            let after = body_start + close + 2;
            match src[after..].find("}}") {
                Some(end) => pos = after + end + 2,
                None => break,
            }
            continue;
        }
        let keyword = match word(rest) {
            "if" => Some(Keyword::If),
            "range" => Some(Keyword::Range),
            "with" => Some(Keyword::With),
            "define" => Some(Keyword::Define),
            "block" => Some(Keyword::Block),
            "end" => Some(Keyword::End),
            "else" => {
                let next = word(rest["else".len()..].trim_start());
                Some(Keyword::Else {
                    chained: next == "if" || next == "with",
                })
            }
            _ => None,
        };
        if let Some(keyword) = keyword {
            found.push((start, keyword));
        }
        match action_end(src, body_start) {
            Some(end) => pos = end,
            None => break,
        }
    }
    found
}

/// Byte offset just past the `}}` closing the action whose body starts at
/// `from`, skipping string, raw string and character literals.
fn action_end(src: &str, from: usize) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut i = from;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            quote @ (b'"' | b'\'') => loop {
                i += 1;
                match bytes.get(i) {
                    None => return None,
                    Some(&c) if c == quote => break,
                    Some(b'\\') => i += 1,
                    Some(_) => {}
                }
            },
            b'`' => i += 1 + src.get(i + 1..)?.find('`')?,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks that `{{if}}`/`{{range}}`/`{{with}}`/`{{define}}`/`{{block}}`,
/// `{{else}}` and `{{end}}` balance. gotmpl 0.6.1 does not: it silently drops
/// everything after a stray `{{end}}` and accepts a missing one.
fn check_structure(src: &str) -> Result<(), Located> {
    let at = |offset: usize| Some(line_col(src, offset));
    // (opening keyword, its offset, whether a plain {{else}} was seen)
    let mut open: Vec<(Keyword, usize, bool)> = Vec::new();
    for (offset, keyword) in structural_actions(src) {
        match keyword {
            Keyword::If | Keyword::Range | Keyword::With | Keyword::Define | Keyword::Block => {
                open.push((keyword, offset, false));
            }
            Keyword::Else { chained } => match open.last_mut() {
                Some((Keyword::If | Keyword::Range | Keyword::With, _, seen_else)) => {
                    if *seen_else {
                        return Err((
                            ErrorKind::Syntax(
                                "expected {{end}} after {{else}}; found another {{else}}".into(),
                            ),
                            at(offset),
                        ));
                    }
                    *seen_else = !chained;
                }
                _ => {
                    return Err((
                        ErrorKind::Syntax(
                            "unexpected {{else}} outside {{if}}, {{with}} or {{range}}".into(),
                        ),
                        at(offset),
                    ));
                }
            },
            Keyword::End => {
                if open.pop().is_none() {
                    return Err((
                        ErrorKind::Syntax("unexpected {{end}} with no open block".into()),
                        at(offset),
                    ));
                }
            }
        }
    }
    match open.pop() {
        Some((keyword, offset, _)) => Err((
            ErrorKind::Syntax(format!(
                "{{{{{}}}}} is never closed: missing {{{{end}}}}",
                keyword.name()
            )),
            at(offset),
        )),
        None => Ok(()),
    }
}

/// What dot and `$` refer to at a point of the template.
#[derive(Clone, Copy)]
struct Scope {
    /// Dot is the job context (not rebound by `with`/`range`/`define`).
    dot_is_root: bool,
    /// `$` is the job context (outside `define` bodies).
    dollar_is_root: bool,
    /// Inside a `{{range}}` body, where `{{break}}`/`{{continue}}` are allowed.
    in_range: bool,
}

/// Walks a parsed argument, rejecting what Go would reject at parse time (or
/// is certain to fail at execution), and rewriting method calls.
///
/// gotmpl has no method calls: `.I "x"` is a field lookup that cannot take
/// arguments. The job context therefore holds each method as a function
/// value, and every command `.I ARGS` is rewritten to `call .I ARGS`.
struct Checker<'a> {
    src: &'a str,
    fields: &'static [&'static str],
    templates: HashSet<String>,
    vars: Vec<SmolStr>,
}

impl Checker<'_> {
    fn at(&self, pos: Pos) -> Option<(usize, usize)> {
        Some(line_col(self.src, pos.offset))
    }

    fn top_level(&mut self, list: &mut ListNode) -> Result<(), Located> {
        self.vars = vec![SmolStr::new_static("$")];
        let scope = Scope {
            dot_is_root: true,
            dollar_is_root: true,
            in_range: false,
        };
        self.list(list, scope)
    }

    fn define_body(&mut self, list: &mut ListNode) -> Result<(), Located> {
        let saved = std::mem::replace(&mut self.vars, vec![SmolStr::new_static("$")]);
        let scope = Scope {
            dot_is_root: false,
            dollar_is_root: false,
            in_range: false,
        };
        let result = self.list(list, scope);
        self.vars = saved;
        result
    }

    fn list(&mut self, list: &mut ListNode, scope: Scope) -> Result<(), Located> {
        list.nodes
            .iter_mut()
            .try_for_each(|node| self.node(node, scope))
    }

    fn node(&mut self, node: &mut Node, scope: Scope) -> Result<(), Located> {
        match node {
            Node::List(list) => self.list(list, scope),
            Node::Text(_) => Ok(()),
            Node::Action(action) => self.pipe(&mut action.pipe, scope),
            Node::If(branch) => self.branch(branch, scope, scope),
            Node::With(branch) => {
                let body = Scope {
                    dot_is_root: false,
                    ..scope
                };
                self.branch(branch, scope, body)
            }
            Node::Range(branch) => {
                let body = Scope {
                    dot_is_root: false,
                    in_range: true,
                    ..scope
                };
                self.branch(branch, scope, body)
            }
            Node::Template(call) => {
                if !self.templates.contains(call.name.as_str()) {
                    return Err((
                        ErrorKind::UnknownTemplate(call.name.to_string()),
                        self.at(call.pos),
                    ));
                }
                match &mut call.pipe {
                    Some(pipe) => self.pipe(pipe, scope),
                    None => Ok(()),
                }
            }
            Node::Define(define) => self.define_body(&mut define.body),
            Node::Break(pos) => self.loop_control("break", *pos, scope),
            Node::Continue(pos) => self.loop_control("continue", *pos, scope),
        }
    }

    /// `{{if}}`, `{{with}}` or `{{range}}`: variables declared in the
    /// pipeline or the bodies go out of scope at `{{end}}`.
    fn branch(
        &mut self,
        branch: &mut BranchNode,
        scope: Scope,
        body: Scope,
    ) -> Result<(), Located> {
        let mark = self.vars.len();
        self.pipe(&mut branch.pipe, scope)?;
        self.list(&mut branch.body, body)?;
        if let Some(else_body) = &mut branch.else_body {
            self.list(else_body, scope)?;
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn loop_control(&self, word: &str, pos: Pos, scope: Scope) -> Result<(), Located> {
        if scope.in_range {
            Ok(())
        } else {
            Err((
                ErrorKind::Syntax(format!("{{{{{word}}}}} outside {{{{range}}}}")),
                self.at(pos),
            ))
        }
    }

    fn pipe(&mut self, pipe: &mut PipeNode, scope: Scope) -> Result<(), Located> {
        if pipe.is_assign {
            if let Some(var) = pipe.decl.iter().find(|v| !self.vars.contains(v)) {
                return Err((
                    ErrorKind::UnknownVariable(var.to_string()),
                    self.at(pipe.pos),
                ));
            }
        } else {
            // Like Go, a declared variable is in scope from its declaration on.
            self.vars.extend(pipe.decl.iter().cloned());
        }
        for (i, command) in pipe.commands.iter_mut().enumerate() {
            self.command(command, scope, i > 0)?;
        }
        Ok(())
    }

    fn command(
        &mut self,
        command: &mut CommandNode,
        scope: Scope,
        piped: bool,
    ) -> Result<(), Located> {
        let Some(head) = command.args.first() else {
            return Ok(());
        };
        let method = match head {
            Expr::Field(_, chain) | Expr::Variable(_, _, chain) => chain.last().cloned(),
            Expr::Chain(_, inner, chain) if !matches!(**inner, Expr::Identifier(..)) => {
                chain.last().cloned()
            }
            _ => None,
        }
        .and_then(|name| method_named(&name).map(|m| (name, m)));

        let Some((name, method)) = method else {
            return command
                .args
                .iter_mut()
                .try_for_each(|arg| self.expr(arg, scope, false));
        };

        // A method call: check it, then rewrite `.M ARGS` to `call .M ARGS`.
        let pos = head.pos();
        let given = command.args.len() - 1 + usize::from(piped);
        if given != 1 {
            return Err((
                ErrorKind::BadMethodCall {
                    method: name.to_string(),
                    problem: format!("takes exactly one argument, got {given}"),
                },
                self.at(pos),
            ));
        }
        if method != Method::AsFile
            && !piped
            && let Some(Expr::String(lit_pos, path)) = command.args.get(1)
            && let Err(kind) = clean_path(&name, path)
        {
            return Err((kind, self.at(*lit_pos)));
        }
        for (i, arg) in command.args.iter_mut().enumerate() {
            self.expr(arg, scope, i == 0)?;
        }
        command
            .args
            .insert(0, Expr::Identifier(pos, SmolStr::new_static("call")));
        Ok(())
    }

    /// Checks an expression; `method_call` when it is the head of a method
    /// call, whose chain may end with a method name.
    fn expr(&mut self, expr: &mut Expr, scope: Scope, method_call: bool) -> Result<(), Located> {
        match expr {
            Expr::Field(pos, chain) => self.chain(*pos, chain, scope.dot_is_root, method_call),
            Expr::Variable(pos, var, chain) => {
                if !self.vars.contains(var) {
                    return Err((ErrorKind::UnknownVariable(var.to_string()), self.at(*pos)));
                }
                let root = var.as_str() == "$" && scope.dollar_is_root;
                self.chain(*pos, chain, root, method_call)
            }
            Expr::Identifier(pos, name) => {
                if BUILTINS.contains(&name.as_str()) {
                    Ok(())
                } else {
                    Err((ErrorKind::UnknownFunction(name.to_string()), self.at(*pos)))
                }
            }
            Expr::Pipe(_, pipe) => self.pipe(pipe, scope),
            Expr::Chain(pos, inner, chain) => {
                let pos = *pos;
                self.expr(inner, scope, false)?;
                self.chain(pos, chain, false, method_call)
            }
            Expr::Dot(_) | Expr::String(..) | Expr::Number(..) | Expr::Bool(..) | Expr::Nil(_) => {
                Ok(())
            }
        }
    }

    /// Checks a field chain; `root` when it starts at the job context.
    fn chain(
        &self,
        pos: Pos,
        chain: &[SmolStr],
        root: bool,
        method_call: bool,
    ) -> Result<(), Located> {
        if root
            && let Some(first) = chain.first()
            && !self.fields.contains(&first.as_str())
        {
            return Err((
                ErrorKind::UnknownField {
                    name: format!(".{first}"),
                    available: self
                        .fields
                        .iter()
                        .map(|f| format!(".{f}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                self.at(pos),
            ));
        }
        for (i, name) in chain.iter().enumerate() {
            if method_named(name).is_some() && !(method_call && i + 1 == chain.len()) {
                return Err((
                    ErrorKind::BadMethodCall {
                        method: name.to_string(),
                        problem: format!(
                            "is a method, not a value; call it with one argument, as in (.{name} \"path\")"
                        ),
                    },
                    self.at(pos),
                ));
            }
        }
        Ok(())
    }
}

/// Validates a path given to `.I`/`.O`/`.IO` and returns its remote form:
/// relative, with `.` components and repeated or trailing `/` removed.
fn clean_path(method: &str, path: &str) -> Result<String, ErrorKind> {
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
struct JobFiles {
    dir: PathBuf,
    inputs: Vec<InputFile>,
    input_index: HashMap<String, usize>,
    outputs: Vec<OutputFile>,
    output_remotes: HashSet<String>,
    /// The error behind a failed method call, reported instead of gotmpl's
    /// flattened copy.
    failure: Option<ErrorKind>,
}

impl JobFiles {
    fn new(dir: &Path) -> Self {
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
            self.outputs.push(OutputFile {
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
fn job_value(job: &JobContext, state: &Arc<Mutex<JobFiles>>) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn parse(args: &[&str]) -> Result<ArgTemplates, TemplateError> {
        ArgTemplates::parse(&strings(args))
    }

    fn parse_ok(args: &[&str]) -> ArgTemplates {
        match parse(args) {
            Ok(t) => t,
            Err(e) => panic!("parse {args:?}: {e}"),
        }
    }

    fn parse_err(args: &[&str]) -> TemplateError {
        match parse(args) {
            Ok(t) => panic!("parse {args:?} should fail, got {t:?}"),
            Err(e) => e,
        }
    }

    fn job(line: &str, idx: usize) -> JobContext {
        JobContext {
            line: line.to_string(),
            idx,
        }
    }

    fn render_in(t: &ArgTemplates, j: &JobContext, dir: &Path) -> Rendered {
        match t.render_in(j, dir) {
            Ok(r) => r,
            Err(e) => panic!("render {t:?}: {e}"),
        }
    }

    fn render(t: &ArgTemplates, j: &JobContext) -> Rendered {
        render_in(t, j, Path::new("/nonexistent-llama-test-dir"))
    }

    fn args_of(args: &[&str], j: &JobContext) -> Vec<String> {
        render(&parse_ok(args), j).args
    }

    /// A temporary directory holding the given files.
    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        for (name, content) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent()
                && let Err(e) = std::fs::create_dir_all(parent)
            {
                panic!("mkdir {parent:?}: {e}");
            }
            if let Err(e) = std::fs::write(&path, content) {
                panic!("write {path:?}: {e}");
            }
        }
        dir
    }

    #[test]
    fn line_and_idx() {
        assert_eq!(
            args_of(
                &["-n{{.Idx}}", "{{.Line}}", "x-{{.Line}}-{{.Idx}}"],
                &job("a b", 7)
            ),
            ["-n7", "a b", "x-a b-7"]
        );
    }

    #[test]
    fn literal_arguments() {
        let t = parse_ok(&["echo", "}} not a template", ""]);
        assert!(t.is_literal());
        let r = render(&t, &job("x", 0));
        assert_eq!(r.args, ["echo", "}} not a template", ""]);
        assert!(r.inputs.is_empty() && r.outputs.is_empty());

        assert!(!parse_ok(&["echo", "{{.Line}}"]).is_literal());
        // A comment is template syntax: it renders as nothing.
        let t = parse_ok(&["a{{/* note */}}b"]);
        assert!(!t.is_literal());
        assert_eq!(render(&t, &job("", 0)).args, ["ab"]);
        assert!(parse_ok(&[]).is_literal());
    }

    #[test]
    fn input_from_line() {
        let dir = dir_with(&[("a.txt", "A"), ("b.txt", "B")]);
        let t = parse_ok(&["cat", "{{.I .Line}}"]);
        let r = render_in(&t, &job("a.txt", 0), dir.path());
        assert_eq!(r.args, ["cat", "a.txt"]);
        assert_eq!(
            r.inputs,
            [InputFile::Local {
                local: dir.path().join("a.txt"),
                remote: "a.txt".into()
            }]
        );
        assert!(r.outputs.is_empty());
        // The same templates render the next job independently.
        let r = render_in(&t, &job("b.txt", 1), dir.path());
        assert_eq!(r.args, ["cat", "b.txt"]);
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].remote(), "b.txt");
    }

    #[test]
    fn input_long_name_and_pipe() {
        let dir = dir_with(&[("sub/a.txt", "A")]);
        let t = parse_ok(&[
            r#"{{.Input (printf "sub/%s" .Line)}}"#,
            "{{ .Line | printf \"./sub//%s\" | .I }}",
            "{{$.I \"sub/a.txt\"}}",
        ]);
        let r = render_in(&t, &job("a.txt", 0), dir.path());
        assert_eq!(r.args, ["sub/a.txt", "sub/a.txt", "sub/a.txt"]);
        // Same remote path: shipped once.
        assert_eq!(r.inputs.len(), 1);
        assert_eq!(r.inputs[0].remote(), "sub/a.txt");
    }

    #[test]
    fn output_with_printf() {
        let t = parse_ok(&[
            "optimize",
            "{{.I .Line}}",
            r#"{{.O (printf "optimized/%s" .Line)}}"#,
        ]);
        let dir = dir_with(&[("img.png", "png")]);
        let r = render_in(&t, &job("img.png", 3), dir.path());
        assert_eq!(r.args, ["optimize", "img.png", "optimized/img.png"]);
        assert_eq!(
            r.outputs,
            [OutputFile {
                local: dir.path().join("optimized/img.png"),
                remote: "optimized/img.png".into()
            }]
        );
        assert_eq!(r.inputs.len(), 1);
        // Outputs need not exist locally; `.Output` is the long name.
        let r = render(&parse_ok(&["{{.Output \"out/./x\"}}"]), &job("", 0));
        assert_eq!(r.args, ["out/x"]);
        assert_eq!(r.outputs[0].remote, "out/x");
    }

    #[test]
    fn input_output() {
        let dir = dir_with(&[("common.txt", "c")]);
        let t = parse_ok(&[
            "{{.IO \"common.txt\"}}",
            "{{.InputOutput \"./common.txt\"}}",
        ]);
        let r = render_in(&t, &job("", 0), dir.path());
        assert_eq!(r.args, ["common.txt", "common.txt"]);
        assert_eq!(
            r.inputs,
            [InputFile::Local {
                local: dir.path().join("common.txt"),
                remote: "common.txt".into()
            }]
        );
        assert_eq!(
            r.outputs,
            [OutputFile {
                local: dir.path().join("common.txt"),
                remote: "common.txt".into()
            }]
        );
    }

    #[test]
    fn io_requires_existing_input() {
        let t = parse_ok(&["{{.IO \"missing.txt\"}}"]);
        let err = match t.render_in(&job("", 0), Path::new("/nonexistent-llama-test-dir")) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert!(matches!(err.kind(), ErrorKind::InputMissing(_)), "{err}");
    }

    #[test]
    fn as_file() {
        let dir = dir_with(&[("a.txt", "A")]);
        let t = parse_ok(&[
            "{{.AsFile \"hello\"}}",
            "{{.I \"a.txt\"}}",
            "{{.AsFile .Line}}",
            "{{.AsFile \"two\\n\"}}",
        ]);
        let r = render_in(&t, &job("line", 0), dir.path());
        assert_eq!(
            r.args,
            ["llama/tmp.0", "a.txt", "llama/tmp.2", "llama/tmp.3"]
        );
        assert_eq!(
            r.inputs,
            [
                InputFile::Bytes {
                    data: b"hello\n".to_vec(),
                    remote: "llama/tmp.0".into()
                },
                InputFile::Local {
                    local: dir.path().join("a.txt"),
                    remote: "a.txt".into()
                },
                InputFile::Bytes {
                    data: b"line\n".to_vec(),
                    remote: "llama/tmp.2".into()
                },
                InputFile::Bytes {
                    data: b"two\n".to_vec(),
                    remote: "llama/tmp.3".into()
                },
            ]
        );
    }

    #[test]
    fn as_file_names_do_not_collide() {
        let dir = dir_with(&[("llama/tmp.0", "user file")]);
        let t = parse_ok(&["{{.I \"llama/tmp.0\"}}", "{{.AsFile \"x\"}}"]);
        let r = render_in(&t, &job("", 0), dir.path());
        assert_eq!(r.args, ["llama/tmp.0", "llama/tmp.1"]);
        // The other way round is a conflict.
        let t = parse_ok(&["{{.AsFile \"x\"}}", "{{.I \"llama/tmp.0\"}}"]);
        let err = match t.render_in(&job("", 0), dir.path()) {
            Ok(r) => panic!("expected conflict, got {r:?}"),
            Err(e) => e,
        };
        assert!(matches!(err.kind(), ErrorKind::InputConflict(_)), "{err}");
        assert_eq!(err.arg_index(), 2);
    }

    #[test]
    fn builtins_work() {
        let j = job("a,b", 2);
        assert_eq!(
            args_of(
                &[
                    r#"{{printf "%03d" .Idx}}"#,
                    "{{len .Line}}",
                    r#"{{if eq .Idx 2}}two{{else}}other{{end}}"#,
                    r#"{{index "xyz" 1}}"#,
                    r#"{{slice .Line 0 1}}"#,
                    r#"{{and .Line "yes"}}{{or "" "no"}}{{not true}}"#,
                    r#"{{if and (gt .Idx 1) (lt .Idx 3) (ne .Line "") (le 1 2) (ge 2 2)}}ok{{end}}"#,
                    r#"{{print "a" 1}}{{urlquery "a b"}}{{html "<"}}{{js "'"}}"#,
                    r#"{{with $x := .Line}}{{$x}}{{end}}{{range $i := "ab" | len}}{{$i}}{{end}}"#,
                    r#"{{define "t"}}[{{.}}]{{end}}{{template "t" .Line}}"#,
                    r#"{{- " trimmed " -}}  "#,
                ],
                &j,
            ),
            [
                "002",
                "3",
                "two",
                "121",
                "a",
                "yesnofalse",
                "ok",
                "a1a+b&lt;\\'",
                "a,b01",
                "[a,b]",
                " trimmed ",
            ]
        );
    }

    #[test]
    fn method_inside_define_and_range() {
        let dir = dir_with(&[("x.txt", "X")]);
        let t = parse_ok(&[
            r#"{{define "in"}}{{.I "x.txt"}}{{end}}{{template "in" .}}"#,
            r#"{{range 2}}{{$.O (printf "o%d" .)}} {{end}}"#,
        ]);
        let r = render_in(&t, &job("", 0), dir.path());
        assert_eq!(r.args, ["x.txt", "o0 o1 "]);
        assert_eq!(r.inputs.len(), 1);
        let remotes: Vec<_> = r.outputs.iter().map(|o| o.remote.as_str()).collect();
        assert_eq!(remotes, ["o0", "o1"]);
    }

    #[test]
    fn parse_error_names_argument_and_column() {
        let err = parse_err(&["ok", "{{.Line"]);
        assert_eq!(err.arg_index(), 2);
        assert_eq!(err.arg(), "{{.Line");
        assert_eq!(err.column(), Some(8));
        assert!(matches!(err.kind(), ErrorKind::Syntax(_)));
        assert_eq!(
            err.to_string(),
            r#"argument 2 ("{{.Line"): column 8: unclosed action"#
        );

        let err = parse_err(&["x {{.I \"a}}"]);
        assert_eq!(err.arg_index(), 1);
        assert!(err.column().is_some(), "{err}");
        assert!(err.to_string().contains("unterminated"), "{err}");

        let err = parse_err(&["a\n{{ .I ( }}"]);
        assert_eq!(err.line(), Some(2), "{err}");
        assert!(err.to_string().contains(": line 2, column "), "{err}");
    }

    #[test]
    fn unbalanced_blocks_are_rejected() {
        let err = parse_err(&["a{{end}}b"]);
        assert_eq!(err.column(), Some(2), "{err}");
        assert!(err.to_string().contains("unexpected {{end}}"), "{err}");

        // gotmpl itself rejects a second {{else}}.
        let err = parse_err(&["{{if .Line}}x{{else}}y{{else}}z{{end}}"]);
        assert_eq!(err.column(), Some(25), "{err}");

        let err = parse_err(&["ok{{else}}"]);
        assert_eq!(err.column(), Some(3), "{err}");

        let err = parse_err(&["{{if .Line}}x{{ \"}}\" }}{{/* {{end}} */}}"]);
        assert_eq!(err.column(), Some(1), "{err}");
        assert!(err.to_string().contains("{{if}} is never closed"), "{err}");

        let err = parse_err(&["{{range 3}}{{end}}{{break}}"]);
        assert_eq!(err.column(), Some(21), "{err}");

        // Balanced forms, including strings and comments that look like actions.
        parse_ok(&[
            "{{if .Line}}a{{else if .Idx}}b{{else with .Line}}c{{else}}d{{end}}",
            "{{- range 2 -}}{{if eq . 1}}{{break}}{{end}}{{end -}}",
            r#"{{printf "{{end}}"}}{{printf `}}{{end}}`}}{{/* {{end}} }} */}}{{'}'}}"#,
            r#"{{block "b" .Line}}{{.}}{{end}}"#,
        ]);
    }

    #[test]
    fn unknown_names_fail_at_parse_time() {
        let err = parse_err(&["echo", "{{.Line}}", "x{{upper .Line}}"]);
        assert_eq!(err.arg_index(), 3);
        assert_eq!(err.column(), Some(4));
        assert!(matches!(err.kind(), ErrorKind::UnknownFunction(f) if f == "upper"));
        assert_eq!(
            err.to_string(),
            r#"argument 3 ("x{{upper .Line}}"): column 4: function "upper" not defined"#
        );

        // Also as an argument, in a pipeline, and behind a short-circuit.
        for src in [
            "{{printf \"%s\" (lower .Line)}}",
            "{{.Line | lower}}",
            "{{if false}}{{lower}}{{end}}",
            "{{or true lower}}",
        ] {
            let err = parse_err(&[src]);
            assert!(
                matches!(err.kind(), ErrorKind::UnknownFunction(_)),
                "{src}: {err}"
            );
        }

        let err = parse_err(&["{{.Lines}}"]);
        assert!(
            matches!(err.kind(), ErrorKind::UnknownField { .. }),
            "{err}"
        );
        assert_eq!(err.column(), Some(3));
        assert!(err.to_string().contains(".Line, .Idx"), "{err}");

        let err = parse_err(&["{{$.Nope}}"]);
        assert!(
            matches!(err.kind(), ErrorKind::UnknownField { .. }),
            "{err}"
        );

        let err = parse_err(&["{{$x}}"]);
        assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");
        let err = parse_err(&["{{$x = 1}}"]);
        assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");
        let err = parse_err(&["{{if true}}{{$x := 1}}{{end}}{{$x}}"]);
        assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");

        let err = parse_err(&["{{template \"nope\"}}"]);
        assert!(matches!(err.kind(), ErrorKind::UnknownTemplate(_)), "{err}");

        let err = parse_err(&["{{define \"a\"}}1{{end}}{{define \"a\"}}2{{end}}"]);
        assert!(err.to_string().contains("multiple definition"), "{err}");

        // Fields of other values are checked when rendering.
        let t = parse_ok(&["{{with .Line}}{{.Foo}}{{end}}"]);
        assert!(t.render(&job("x", 0)).is_err());
    }

    #[test]
    fn methods_must_be_called_with_one_argument() {
        for src in ["{{.I}}", "{{.O \"a\" \"b\"}}", "{{\"a\" | .IO \"b\"}}"] {
            let err = parse_err(&[src]);
            assert!(
                matches!(err.kind(), ErrorKind::BadMethodCall { .. }),
                "{src}: {err}"
            );
            assert!(
                err.to_string().contains("exactly one argument"),
                "{src}: {err}"
            );
        }
        let err = parse_err(&["{{printf \"%s\" .AsFile}}"]);
        assert!(
            err.to_string().contains("is a method, not a value"),
            "{err}"
        );
        let err = parse_err(&["{{.I.X \"a\"}}"]);
        assert!(
            matches!(err.kind(), ErrorKind::BadMethodCall { .. }),
            "{err}"
        );

        let t = parse_ok(&["{{.I .Idx}}"]);
        let err = match t.render(&job("", 0)) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert_eq!(
            err.to_string(),
            r#"argument 1 ("{{.I .Idx}}"): .I: expects a string argument, got int"#
        );
    }

    #[test]
    fn escaping_paths_are_refused() {
        // Literal paths fail at parse time, with the column of the path.
        let err = parse_err(&["cp", "{{.O \"../x\"}}"]);
        assert_eq!(err.arg_index(), 2);
        assert_eq!(err.column(), Some(6));
        assert_eq!(
            err.to_string(),
            r#"argument 2 ("{{.O \"../x\"}}"): column 6: .O "../x": ".." is not allowed; the path must stay inside the working directory"#
        );
        for src in [
            "{{.I \"a/../../b\"}}",
            "{{.IO \"a/..\"}}",
            "{{.Output \"..\"}}",
        ] {
            let err = parse_err(&[src]);
            assert!(
                matches!(err.kind(), ErrorKind::EscapesWorkDir { .. }),
                "{src}: {err}"
            );
        }
        let err = parse_err(&["{{.I \"/etc/passwd\"}}"]);
        assert!(
            matches!(err.kind(), ErrorKind::AbsolutePath { .. }),
            "{err}"
        );
        let err = parse_err(&["{{.O \"./\"}}"]);
        assert!(matches!(err.kind(), ErrorKind::EmptyPath { .. }), "{err}");

        // Computed paths fail when rendering that job.
        let t = parse_ok(&["echo", "{{.O .Line}}", "{{.I .Line}}"]);
        for (line, want) in [
            ("../up", "\"..\" is not allowed"),
            ("/abs/out", "absolute paths are not allowed"),
            ("", "names no file"),
        ] {
            let err = match t.render(&job(line, 0)) {
                Ok(r) => panic!("{line:?}: expected error, got {r:?}"),
                Err(e) => e,
            };
            assert_eq!(err.arg_index(), 2, "{err}");
            assert!(err.to_string().contains(want), "{line:?}: {err}");
            assert!(err.to_string().contains(&format!("{line:?}")), "{err}");
        }
        // `..` inside a file name is fine.
        let r = render(&parse_ok(&["{{.O \"a..b/..c\"}}"]), &job("", 0));
        assert_eq!(r.outputs[0].remote, "a..b/..c");
    }

    #[test]
    fn missing_input_is_a_render_error() {
        let dir = dir_with(&[("present.txt", "")]);
        let t = parse_ok(&["cat", "{{.I .Line}}"]);
        let err = match t.render_in(&job("absent.txt", 4), dir.path()) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert_eq!(err.arg_index(), 2);
        assert!(
            matches!(err.kind(), ErrorKind::InputMissing(p) if p == &dir.path().join("absent.txt"))
        );
        assert!(
            err.to_string().contains("absent.txt\" does not exist"),
            "{err}"
        );

        // A directory is not a valid input.
        let err = match t.render_in(&job(".", 0), dir.path().parent().unwrap_or(dir.path())) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert!(matches!(err.kind(), ErrorKind::EmptyPath { .. }), "{err}");
        let sub = dir_with(&[("d/f", "")]);
        let err = match t.render_in(&job("d", 0), sub.path()) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert!(matches!(err.kind(), ErrorKind::InputNotFile(_)), "{err}");

        // Other jobs are unaffected.
        let r = render_in(&t, &job("present.txt", 5), dir.path());
        assert_eq!(r.args, ["cat", "present.txt"]);
    }

    #[test]
    fn render_relative_to_cwd() {
        // `render` leaves local paths relative, to be resolved against the cwd.
        let t = parse_ok(&["{{.O \"out/x\"}}"]);
        let r = t.render(&job("", 0));
        assert!(r.is_ok());
        if let Ok(r) = r {
            assert_eq!(r.outputs[0].local, PathBuf::from("out/x"));
        }
    }

    #[test]
    fn execution_errors_are_reported() {
        let t = parse_ok(&["ok", "{{index .Line 10}}"]);
        let err = match t.render(&job("short", 0)) {
            Ok(r) => panic!("expected error, got {r:?}"),
            Err(e) => e,
        };
        assert_eq!(err.arg_index(), 2);
        assert!(matches!(err.kind(), ErrorKind::Exec(_)), "{err}");
        assert!(err.to_string().contains("index out of range"), "{err}");
    }

    #[test]
    fn invoke_has_no_line() {
        let err = match ArgTemplates::parse_invoke(&strings(&["{{.Line}}"])) {
            Ok(t) => panic!("expected error, got {t:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(err.kind(), ErrorKind::UnknownField { .. }),
            "{err}"
        );
        let t = match ArgTemplates::parse_invoke(&strings(&["{{.O \"x\"}}", "{{.AsFile \"y\"}}"])) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let r = render(&t, &JobContext::default());
        assert_eq!(r.args, ["x", "llama/tmp.0"]);
    }

    #[test]
    fn long_arguments_are_shortened_in_errors() {
        let long = format!("{}{{{{nope}}}}", "x".repeat(200));
        let err = parse_err(&[&long]);
        let shown = err.to_string();
        assert!(shown.contains("...)"), "{shown}");
        assert!(shown.len() < 200, "{shown}");
        assert_eq!(err.arg(), long);
        assert_eq!(err.column(), Some(203));
    }

    #[test]
    fn builtin_list_matches_gotmpl() {
        for name in BUILTINS {
            let result = Template::new("t")
                .parse(&format!("{{{{{name}}}}}"))
                .and_then(|t| t.execute_to_string(&Value::Nil));
            assert!(
                !matches!(result, Err(gotmpl::TemplateError::UndefinedFunction(_))),
                "{name} is not a gotmpl builtin"
            );
        }
    }

    #[test]
    fn concurrent_rendering() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ArgTemplates>();
        let t = parse_ok(&["{{.Idx}}", "{{.AsFile .Line}}", "{{.O .Line}}"]);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let t = &t;
                    s.spawn(move || render(t, &job(&format!("f{i}"), i)))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let r = match h.join() {
                    Ok(r) => r,
                    Err(_) => panic!("thread {i} panicked"),
                };
                assert_eq!(
                    r.args,
                    [i.to_string(), "llama/tmp.0".into(), format!("f{i}")]
                );
                assert_eq!(r.inputs.len(), 1);
                assert_eq!(r.outputs.len(), 1);
            }
        });
    }

    /// Pieces template text is built from: the methods, `printf`, fields, braces, quotes and
    /// paths that try to escape, so random sequences hit both valid and broken templates.
    const VOCABULARY: &[&str] = &[
        "{{.Line}}",
        "{{.Idx}}",
        "{{.I .Line}}",
        "{{.O .Line}}",
        "{{.IO .Line}}",
        "{{.Input .Line}}",
        "{{.Output (printf \"out/%s\" .Line)}}",
        "{{.O (printf \"%s/../x\" .Line)}}",
        "{{.O (printf \"/%s\" .Line)}}",
        "{{.I \"x\"}}",
        "{{.IO \"x\"}}",
        "{{.O \"../x\"}}",
        "{{.O \"/abs\"}}",
        "{{.O \"a//./b\"}}",
        "{{.AsFile .Line}}",
        "{{.AsFile \"\\x00zz\"}}",
        "{{printf \"%s-%d\" .Line .Idx}}",
        "{{printf \"%q\" .Line}}",
        "{{printf \"%x\" .Line}}",
        "{{.O (printf \"%.3s\" .Line)}}",
        "{{if .Line}}",
        "{{else}}",
        "{{end}}",
        "{{range .Line}}",
        "{{with .Line}}",
        "{{len .Line}}",
        "{{.O (slice .Line 1)}}",
        "{{",
        "}}",
        "{",
        "}",
        "\"",
        "'",
        "`",
        "(",
        ")",
        " ",
        "|",
        ".",
        "..",
        "/",
        "x",
        "$",
        "\u{e9}",
        "\\",
    ];

    /// Input lines: arbitrary bytes (odd ones included), and names that exist, climb or
    /// are absolute.
    fn line_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            Just(b"x".to_vec()),
            Just(b"n\xe9".to_vec()),
            Just(b"sub/n\xe8".to_vec()),
            Just(b"../x".to_vec()),
            Just(b"/etc/passwd".to_vec()),
            Just(b"..".to_vec()),
            Just(b"a\0b".to_vec()),
        ]
    }

    use proptest::strategy::Strategy as _;

    /// One directory of inputs for every case (files are only read): `x`, `n\xe9`,
    /// `sub/x` and `sub/n\xe8`.
    fn property_dir() -> &'static Path {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            use std::os::unix::ffi::OsStrExt;
            let dir = dir_with(&[("x", "x"), ("sub/x", "sx")]);
            let exact = |name: &[u8]| std::ffi::OsStr::from_bytes(name).to_os_string();
            let write = |path: PathBuf, data: &[u8]| {
                if let Err(e) = std::fs::write(&path, data) {
                    panic!("write {path:?}: {e}");
                }
            };
            write(dir.path().join(exact(b"n\xe9")), b"e9");
            write(dir.path().join("sub").join(exact(b"n\xe8")), b"e8");
            dir
        })
        .path()
    }

    /// How far the property cases got: cases run, parsed, rendered, declared a file.
    static REACHED: [std::sync::atomic::AtomicUsize; 4] =
        [const { std::sync::atomic::AtomicUsize::new(0) }; 4];

    const PROPERTY_CASES: u32 = 1000;

    // 1000 cases, each a parse and two renders of at most 4 arguments: a few seconds.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: PROPERTY_CASES,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn templates_never_panic_stay_inside_and_render_deterministically(
            args in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..6)
                    .prop_map(|pieces| pieces.concat()),
                1..4,
            ),
            line in line_bytes(),
            idx in 0usize..1000,
        ) {
            use proptest::prelude::*;
            use std::sync::atomic::Ordering::Relaxed;
            let dir = property_dir();
            let case = REACHED[0].fetch_add(1, Relaxed) + 1;
            if case == PROPERTY_CASES as usize {
                // The last case (no shrinking happens unless one failed): the vocabulary must
                // keep reaching renders that declare files, or the properties prove nothing.
                let [_, parsed, rendered, with_files] = REACHED.each_ref().map(|c| c.load(Relaxed));
                eprintln!("template properties: {case} cases, {parsed} parsed, {rendered} rendered, {with_files} declared files");
                prop_assert!(with_files >= 50, "only {with_files} of {case} cases declared files");
            }
            let Ok(templates) = ArgTemplates::parse(&args) else {
                return Ok(());
            };
            REACHED[1].fetch_add(1, Relaxed);
            let job = JobContext {
                line: llama_core::encode_name(&line).into_owned(),
                idx,
            };
            let first = templates.render_in(&job, dir);
            let second = templates.render_in(&job, dir);
            match (&first, &second) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(false, "one render failed, the other did not: {first:?} {second:?}"),
            }
            let Ok(rendered) = first else {
                return Ok(());
            };
            REACHED[2].fetch_add(1, Relaxed);
            if !rendered.inputs.is_empty() || !rendered.outputs.is_empty() {
                REACHED[3].fetch_add(1, Relaxed);
            }
            let remotes = rendered
                .inputs
                .iter()
                .map(InputFile::remote)
                .chain(rendered.outputs.iter().map(|o| o.remote.as_str()));
            for remote in remotes {
                let parts = llama_core::remote_components(remote);
                prop_assert!(parts.is_ok(), "remote path {remote:?} fails the tree's checks");
                let normal = llama_core::normalize_remote(remote).ok();
                prop_assert_eq!(normal.as_deref(), Some(remote));
                prop_assert!(llama_core::decode_name(remote).is_ok(), "{remote:?}");
            }
            let locals = rendered
                .inputs
                .iter()
                .filter_map(|i| match i {
                    InputFile::Local { local, .. } => Some(local),
                    InputFile::Bytes { .. } => None,
                })
                .chain(rendered.outputs.iter().map(|o| &o.local));
            for local in locals {
                let inside = local.strip_prefix(dir);
                prop_assert!(inside.is_ok(), "{local:?} is outside {dir:?}");
                prop_assert!(
                    inside.is_ok_and(|rel| rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))),
                    "{local:?} climbs or is absolute"
                );
            }
            for arg in &rendered.args {
                prop_assert!(llama_core::decode_name(arg).is_ok(), "{arg:?}");
            }
        }
    }

    // See: issue 12, defect 11b
    #[test]
    fn r12_non_utf8_lines_name_their_files_exactly() {
        use std::os::unix::ffi::OsStrExt;
        let dir = dir_with(&[]);
        let name = std::ffi::OsStr::from_bytes(b"n\xe9");
        std::fs::write(dir.path().join(name), b"e9").unwrap();
        let t = parse_ok(&[
            "{{.Line}}",
            "{{.I .Line}}",
            "{{.O (printf \"%s.out\" .Line)}}",
            "{{.AsFile .Line}}",
        ]);
        let line = llama_core::encode_name(b"n\xe9").into_owned();
        let r = render_in(&t, &job(&line, 0), dir.path());
        let decoded: Vec<Vec<u8>> = r
            .args
            .iter()
            .map(|a| llama_core::decode_name(a).unwrap().into_owned())
            .collect();
        assert_eq!(
            decoded,
            [&b"n\xe9"[..], b"n\xe9", b"n\xe9.out", b"llama/tmp.1"]
        );
        assert_eq!(
            r.inputs[0],
            InputFile::Local {
                local: dir.path().join(name),
                remote: line.clone()
            }
        );
        assert_eq!(
            r.inputs[1],
            InputFile::Bytes {
                data: b"n\xe9\n".to_vec(),
                remote: "llama/tmp.1".into()
            }
        );
        assert_eq!(
            r.outputs[0].local.as_os_str().as_bytes(),
            [dir.path().as_os_str().as_bytes(), b"/n\xe9.out"].concat()
        );
        // A NUL that is not an escape cannot reach a command or a file name.
        let bad = parse_ok(&["{{printf \"a\\x00\"}}"]).render_in(&job("", 0), dir.path());
        assert!(matches!(
            bad.map_err(|e| e.kind),
            Err(ErrorKind::BadEscape(_))
        ));
    }
}
