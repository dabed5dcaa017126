//! What a walk starts from, taken from a compile's command line: the arguments that ask the
//! compiler for its predefined macros, the `-D` and `-U` applied after them in order, and
//! the search path with gcc's rules for directories named twice.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::directives::{self, Directive};
use super::expr::Macro;
use super::walk::SearchPath;
use crate::compilation::{Family, IncludeSearch};
use crate::flags::{self, Word, Words};

/// `-DNAME[=BODY]` or `-UNAME`, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacroOp {
    /// `-D`: the text after it.
    Define(String),
    /// `-U`: the name.
    Undefine(String),
}

/// The predefined-macro probe and the macro operations of a compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroSetup {
    /// The compile's arguments without its inputs, `-D`, `-U`, `-include` and `-imacros`:
    /// what decides the compiler's predefined macros. The caller appends
    /// `-dM -E -x LANG /dev/null` (and keys its cache by these).
    pub probe_args: Vec<OsString>,
    /// The `-D` and `-U` of the command line, in order.
    pub ops: Vec<MacroOp>,
}

/// Why a command line is not one the walk can start from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} passes preprocessor options the include scanner does not model")]
pub struct Unmodelled(pub String);

/// Splits `args` (a discovery command line: no outputs, no depfile flags) into the probe
/// and the macro operations.
pub fn macro_setup(args: &[OsString], family: Family) -> Result<MacroSetup, Unmodelled> {
    let tables: &[&'static [flags::Flag]] = match family {
        Family::Gcc => &[flags::GCC],
        Family::Clang => &[flags::CLANG, flags::GCC],
    };
    let mut words = Words::new(args, tables);
    if family == Family::Gcc {
        words = words.with_gnu_long_options();
    }
    let mut setup = MacroSetup {
        probe_args: Vec::with_capacity(args.len()),
        ops: Vec::new(),
    };
    loop {
        let start = words.position();
        let Some(word) = words.next() else { break };
        let span = &args[start..words.position()];
        match word {
            Word::Operand(_) => {}
            Word::Known(flag, value) => {
                let value = value.unwrap_or_default().to_string_lossy().into_owned();
                match flag.name {
                    "-D" => setup.ops.push(MacroOp::Define(value)),
                    "-U" => setup.ops.push(MacroOp::Undefine(value)),
                    "-include" | "-imacros" | "--include" | "--imacros" => {}
                    "-Wp," | "-Xpreprocessor"
                        if value
                            .split(',')
                            .any(|w| w.starts_with("-include") || w.starts_with("-imacros")) =>
                    {
                        return Err(Unmodelled(span_text(span)));
                    }
                    _ => setup.probe_args.extend(span.iter().cloned()),
                }
            }
            Word::MissingArgument(_) | Word::Unknown => {
                setup.probe_args.extend(span.iter().cloned());
            }
        }
    }
    Ok(setup)
}

fn span_text(span: &[OsString]) -> String {
    span.iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The macro table the compiler's `-dM -E` output describes, with `ops` applied in order.
pub fn macro_table(predefined: &[u8], ops: &[MacroOp]) -> HashMap<String, Macro> {
    let mut table = HashMap::new();
    define(&mut table, predefined);
    apply(&mut table, ops);
    table
}

/// `ops` applied to `table` in order. gcc: `-DNAME` is NAME 1, `-DNAME=BODY` is NAME BODY
/// (a `(` before the `=` makes it function-like).
pub fn apply(table: &mut HashMap<String, Macro>, ops: &[MacroOp]) {
    for op in ops {
        match op {
            MacroOp::Define(text) => {
                let line = match text.split_once('=') {
                    Some((name, body)) => format!("#define {name} {body}\n"),
                    None => format!("#define {text} 1\n"),
                };
                define(table, line.as_bytes());
            }
            MacroOp::Undefine(name) => {
                table.remove(name.trim());
            }
        }
    }
}

/// The `#define`s of `text` entered into `table`.
fn define(table: &mut HashMap<String, Macro>, text: &[u8]) {
    for d in directives::extract(text).list {
        if let Directive::Define { name, params, body } = d {
            table.insert(name, Macro { params, body });
        }
    }
}

/// The search path of a compile: `-iquote`, then `-I`, `-isystem`, the compiler's system
/// directories (`system`, in its order), `-idirafter`, each relative to `cwd`. A directory
/// named twice is searched once, where gcc 12 puts it (as `gcc -v` shows): the first of
/// repeats within the system and `-idirafter` chain; a `-I` directory also in that chain
/// only there ("a non-system directory that duplicates a system directory"); the first of
/// repeats within `-iquote`, which keeps a directory also given with `-I`.
pub fn search_path(includes: &IncludeSearch, system: &[PathBuf], cwd: &Path) -> SearchPath {
    let abs = |dirs: &[PathBuf]| -> Vec<PathBuf> { dirs.iter().map(|d| cwd.join(d)).collect() };
    let system_chain = unique(
        abs(&includes.system)
            .into_iter()
            .chain(system.iter().cloned())
            .chain(abs(&includes.after)),
        &[],
    );
    let mut angled = unique(abs(&includes.bracket), &system_chain);
    angled.extend(system_chain);
    SearchPath {
        quote: unique(abs(&includes.quote), &[]),
        angled,
        including_dir_first: !includes.no_source_dir,
    }
}

/// `dirs` without repeats (the first kept) and without those in `later`.
fn unique(dirs: impl IntoIterator<Item = PathBuf>, later: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !out.iter().chain(later).any(|d| same_dir(d, &dir)) {
            out.push(dir);
        }
    }
    out
}

/// The same directory, by name or (gcc compares inodes) through links.
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests;
