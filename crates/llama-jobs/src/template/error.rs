//! Why parsing or rendering an argument failed, and where in it.

use std::fmt;
use std::path::PathBuf;

#[cfg(doc)]
use super::ArgTemplates;

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
    pub(super) kind: ErrorKind,
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
    pub(super) fn new(
        index: usize,
        text: &str,
        position: Option<(usize, usize)>,
        kind: ErrorKind,
    ) -> Self {
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
pub(super) fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}
