//! What a walk starts from, taken from a compile's command line and one probe of the
//! compiler: the arguments that ask it for its predefined macros and search path, the `-D`
//! and `-U` applied after them in order, what it reads before the source unasked, and the
//! answers to feature tests.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::directives::{self, Directive};
use super::macros::MacroTable;
use super::walk::SearchPath;
use crate::compilation::{Driver, Family, IncludeSearch, Language, Verdict};
use crate::flags::{self, Word, Words};
use crate::remote_args::remote_args;

/// What a walk needs from one compile's command line, before the compiler is asked
/// anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The source, absolute.
    pub source: PathBuf,
    /// Its language (`-x` name for the probes: [`Language::gcc_name`]).
    pub language: Language,
    /// The probe for predefined macros and the `-D`/`-U` after them.
    pub macros: MacroSetup,
    /// The search flags as the command line gives them.
    pub includes: IncludeSearch,
    /// `-imacros` then `-include` files, as written.
    pub forced: Vec<PathBuf>,
    /// The command line that lists the same inputs with the compiler's `-M` (no outputs,
    /// no depfile flags): for checking the walk, or for falling back to it.
    pub discovery: Vec<OsString>,
}

/// Why a command line gives no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not a compile llamacc caches.
    #[error("not a cached compile: {0}")]
    NotACompile(String),
    /// The arguments cannot be rebased (the same reasons keep a compile local).
    #[error("{0}")]
    Arguments(String),
    /// Preprocessor options the walk does not model.
    #[error(transparent)]
    Unmodelled(#[from] Unmodelled),
}

/// The plan for `args` run in `cwd` by `driver`.
pub fn plan(args: &[OsString], cwd: &Path, driver: Driver) -> Result<Plan, PlanError> {
    let c = match crate::args::parse(args, cwd, driver) {
        Verdict::Compile(c) => c,
        Verdict::Local(reason) => return Err(PlanError::NotACompile(reason.to_string())),
    };
    let discovery = remote_args(&c.args, driver)
        .map_err(PlanError::Arguments)?
        .discovery;
    Ok(Plan {
        source: cwd.join(&c.source),
        language: c.language,
        macros: macro_setup(&discovery, driver.family)?,
        includes: c.includes,
        forced: c.forced_includes,
        discovery,
    })
}

/// The flags of the one probe a walk needs; the caller adds `-MD -MF FILE -x LANG
/// /dev/null` after the plan's probe arguments, and reads the result with [`Probed::read`].
pub const PROBE_FLAGS: &[&str] = &["-dM", "-E", "-v"];

/// What one probe of the compiler says: its predefined macros (stdout), its search chain
/// (stderr) and what it reads before the source unasked (the depfile).
#[derive(Debug, Clone)]
pub struct Probed {
    /// The macros before `-D` and `-U`.
    pub macros: MacroTable,
    /// The search chain.
    pub search: SearchPath,
    /// The implicit pre-includes, absolute.
    pub preincluded: Vec<PathBuf>,
}

impl Probed {
    /// Reads a probe's output; `cwd` is where it ran.
    pub fn read(stdout: &[u8], stderr: &[u8], depfile: &str, cwd: &Path) -> Probed {
        Probed {
            macros: macro_table(stdout, &[]),
            search: search_from_verbose(&String::from_utf8_lossy(stderr), cwd),
            preincluded: preincluded(depfile, cwd),
        }
    }
}

/// Both search lists `gcc -E -v` prints: `"..."` (the quote chain) and `<...>`; a relative
/// directory is taken against `cwd`. Asked with the compile's own search flags, this is the
/// chain exactly as the compiler built it (repeats dropped, a `-I` that names a system
/// directory ignored, nonexistent directories left out), so the scanner does not restate
/// those rules.
pub fn search_from_verbose(stderr: &str, cwd: &Path) -> SearchPath {
    let mut search = SearchPath {
        including_dir_first: true,
        ..SearchPath::default()
    };
    let mut list: Option<&mut Vec<PathBuf>> = None;
    for line in stderr.lines() {
        if line.starts_with("#include \"...\" search starts here:") {
            list = Some(&mut search.quote);
        } else if line.starts_with("#include <...> search starts here:") {
            list = Some(&mut search.angled);
        } else if line.starts_with("End of search list.") {
            break;
        } else if let (Some(dirs), Some(dir)) = (list.as_deref_mut(), line.strip_prefix(' ')) {
            let dir = dir.trim_end_matches(" (framework directory)");
            dirs.push(cwd.join(dir));
        }
    }
    search
}

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
pub fn macro_table(predefined: &[u8], ops: &[MacroOp]) -> MacroTable {
    let mut table = MacroTable::default();
    define(&mut table, predefined);
    apply(&mut table, ops);
    table.shared()
}

/// `ops` applied to `table` in order. gcc: `-DNAME` is NAME 1, `-DNAME=BODY` is NAME BODY
/// (a `(` before the `=` makes it function-like).
pub fn apply(table: &mut MacroTable, ops: &[MacroOp]) {
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
fn define(table: &mut MacroTable, text: &[u8]) {
    for d in directives::extract(text).list {
        if let Directive::Define { name, def } = d {
            table.insert(name, def);
        }
    }
}

/// The files the compiler reads before the source though no flag names them (gcc's
/// implicit `stdc-predef.h` on glibc systems, not with `-nostdinc` or `-ffreestanding`):
/// the prerequisites, besides `/dev/null`, of the depfile a probe of `/dev/null` wrote
/// with `-MD -MF FILE`. `cwd` makes a relative one absolute.
pub fn preincluded(depfile: &str, cwd: &Path) -> Vec<PathBuf> {
    crate::depfile::prerequisites(depfile)
        .into_iter()
        .filter(|p| p != Path::new("/dev/null"))
        .map(|p| cwd.join(p))
        .collect()
}

/// A file that, preprocessed with `-dM -E`, answers `tests`: for `("defined", NAME)`,
/// whether the compiler defines NAME; for `(test, argument)`, the test's value (a version
/// date for `__has_cpp_attribute`, so each of its bits becomes a macro
/// `LLAMA_ANSWER_<i>_<bit>`). A test the compiler does not have answers 0 rather than
/// failing the whole probe.
pub fn feature_probe(tests: &[(String, String)]) -> String {
    let mut text = String::new();
    for (i, (test, argument)) in tests.iter().enumerate() {
        if test == "defined" {
            text += &format!("#ifdef {argument}\n#define LLAMA_ANSWER_{i}_0 1\n#endif\n");
            continue;
        }
        text += &format!("#if defined({test})\n");
        for bit in 0..FEATURE_VALUE_BITS {
            text += &format!(
                "#if (({test}({argument})) >> {bit}) & 1\n#define LLAMA_ANSWER_{i}_{bit} 1\n#endif\n"
            );
        }
        text += "#endif\n";
    }
    text
}

/// Feature test values are versions (`201907`) or 0/1: 31 bits hold every one.
const FEATURE_VALUE_BITS: u32 = 31;

/// The answers to `tests` in the `-dM -E` output of [`feature_probe`]'s file.
pub fn feature_answers(output: &[u8], tests: &[(String, String)]) -> Vec<((String, String), i64)> {
    let answers = macro_table(output, &[]);
    tests
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let value = (0..FEATURE_VALUE_BITS)
                .filter(|bit| answers.contains_key(&format!("LLAMA_ANSWER_{i}_{bit}")))
                .map(|bit| 1i64 << bit)
                .sum();
            (key.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests;
