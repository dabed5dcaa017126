//! What a compile is, as llama-cc describes it: the compiler [`Driver`], the [`Verdict`] on
//! one command line, and the [`Compilation`] it names (language, mode, outputs, depfile,
//! include search) or the [`LocalReason`] to run the real compiler directly.
//!
//! Types only: [`crate::args`] reads a command line into them, [`crate::response_file`]
//! expands `@file`s for it, and neither is imported from here.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// How many `@file`s one command line may read in all, as gcc's `expandargv` allows: files
/// that name each other twice over would otherwise be read 2^depth times. Here rather than in
/// [`crate::response_file`] because [`LocalReason::ResponseFileTooLarge`]'s message names it.
pub(crate) const MAX_RESPONSE_FILES: usize = 2_000;

/// How many arguments the expansion of `@file`s may grow to: far past any real compile, far
/// short of exhausting memory.
pub(crate) const MAX_WORDS: usize = 1 << 20;

/// Which compiler's rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// GNU gcc (`gcc`, `g++`, `cc` on most Linux systems).
    Gcc,
    /// LLVM clang (`clang`, `clang++`, Apple's `cc`): gcc's flags, and its own.
    Clang,
}

/// The compiler driver an invocation runs: its [`Family`], and whether it is the C++ driver
/// (`g++`, `clang++`), which compiles `.c` and `.i` files as C++.
///
/// A [`Family`] converts into its C driver, so `parse(args, cwd, Family::Gcc)` reads the
/// command line as `gcc` would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Driver {
    /// gcc or clang.
    pub family: Family,
    /// `g++` / `clang++` rather than `gcc` / `clang`.
    pub cxx: bool,
}

impl Driver {
    /// The C driver of `family`: `gcc` or `clang`.
    pub fn c(family: Family) -> Driver {
        Driver { family, cxx: false }
    }

    /// The C++ driver of `family`: `g++` or `clang++`.
    pub fn cxx(family: Family) -> Driver {
        Driver { family, cxx: true }
    }
}

impl From<Family> for Driver {
    fn from(family: Family) -> Driver {
        Driver::c(family)
    }
}

/// What to do with one compiler invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one verdict per compiler run, moved once: a box would only add an allocation"
)]
pub enum Verdict {
    /// One source compiled to one object (or assembly file): cacheable.
    Compile(Compilation),
    /// Run the real compiler directly, unchanged; the reason is counted in the statistics.
    Local(LocalReason),
}

/// One source compiled to one object or assembly file, as the command line describes it.
///
/// Paths are as the command line spells them (or as the compiler derives them), relative
/// to the working directory given to [`parse`] unless absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compilation {
    /// The arguments to run, without the compiler: after `@file` expansion, otherwise
    /// exactly as given, in the same order (byte-identical objects depend on it).
    pub args: Vec<OsString>,
    /// The source file.
    pub source: PathBuf,
    /// The source's language, from `-x` or from its extension.
    pub language: Language,
    /// Whether the compiler stops at an object (`-c`) or at assembly (`-S`).
    pub mode: Mode,
    /// The file written: `-o`, or gcc's default, the source's file name with `.o` / `.s`
    /// (clang's `-emit-llvm`: `.bc` / `.ll`) in the working directory, not beside the
    /// source.
    pub output: PathBuf,
    /// Whether `-o` named the output.
    pub explicit_output: bool,
    /// The depfile the compiler writes beside compiling, if asked to. Never for a language
    /// the compiler does not preprocess (`.s`, `.i`, `.ii`): it writes none then.
    pub depfile: Option<DepFile>,
    /// Other files the compiler writes, with names derived from the output: the `.dwo` of
    /// `-gsplit-dwarf` and the `.su` of `-fstack-usage`. A compiler version may write one
    /// of them empty or not at all; take those that exist after the compile.
    pub extra_outputs: Vec<PathBuf>,
    /// Where the compiler looks for headers, as far as the command line says.
    pub includes: IncludeSearch,
    /// Files read before the source: every `-imacros` file (in order), then every
    /// `-include` file (in order), as gcc processes them. Each is looked up in the
    /// working directory, then in the `#include "..."` search list.
    pub forced_includes: Vec<PathBuf>,
    /// Every other file a flag makes the compiler read: profiles (clang's
    /// `-fprofile-use=PATH`, `-fprofile-sample-use=`, gcc's `-fauto-profile`), sanitizer
    /// and XRay lists, `-fmodule-map-file=`, `-include-pch`, plugins and `-specs=` files
    /// named with a `/` (without one, the toolchain or the dynamic loader finds them). A
    /// path may name a directory (clang's `-fprofile-use=DIR` reads `DIR/default.profdata`)
    /// or nothing at all; the compiler decides.
    pub file_inputs: Vec<PathBuf>,
    /// `-B` directories: the driver runs the `cc1`, `as` (and so on) it finds there before
    /// its own, and gcc searches their `include` subdirectories for system headers.
    pub tool_prefixes: Vec<PathBuf>,
    /// `-march=native`, `-mtune=native` or `-mcpu=native`: the output depends on the CPU
    /// of the machine that compiles.
    pub native_cpu: bool,
    /// Colored diagnostics forced on (`Some(true)`) or off (`Some(false)`) by the last of
    /// `-fdiagnostics-color[=WHEN]`, `-fno-diagnostics-color`, `-f[no-]color-diagnostics`;
    /// `None`: not given, or `auto`.
    pub color_diagnostics: Option<bool>,
    /// Debug information is on: the last `-g` form (`-g`, `-g3`, `-ggdb`, `-gdwarf-5`,
    /// `-gline-tables-only`, ...) is not `-g0`. Modifiers such as `-gz`, `-gsplit-dwarf`
    /// and `-gno-*` count for nothing. Debug information records the working directory.
    pub has_debug_info: bool,
}

/// A source language llamacc caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    /// C (`.c`, `-x c`).
    C,
    /// C++ (`.cc`, `.cpp`, `.cxx`, `.c++`, `.cp`, `.C`, `.CPP`, `-x c++`).
    Cxx,
    /// Objective-C (`.m`).
    ObjC,
    /// Objective-C++ (`.mm`, `.M`).
    ObjCxx,
    /// Preprocessed C (`.i`, `-x cpp-output`).
    PreprocessedC,
    /// Preprocessed C++ (`.ii`, `-x c++-cpp-output`).
    PreprocessedCxx,
    /// Preprocessed Objective-C (`.mi`).
    PreprocessedObjC,
    /// Preprocessed Objective-C++ (`.mii`).
    PreprocessedObjCxx,
    /// Assembly, not preprocessed (`.s`, `-x assembler`).
    Asm,
    /// Assembly to preprocess first (`.S`, gcc's `.sx`, `-x assembler-with-cpp`).
    AsmWithCpp,
}

impl Language {
    /// The language's name for `-x`.
    pub fn gcc_name(self) -> &'static str {
        match self {
            Language::C => "c",
            Language::Cxx => "c++",
            Language::ObjC => "objective-c",
            Language::ObjCxx => "objective-c++",
            Language::PreprocessedC => "cpp-output",
            Language::PreprocessedCxx => "c++-cpp-output",
            Language::PreprocessedObjC => "objective-c-cpp-output",
            Language::PreprocessedObjCxx => "objective-c++-cpp-output",
            Language::Asm => "assembler",
            Language::AsmWithCpp => "assembler-with-cpp",
        }
    }

    /// Whether the compiler runs the preprocessor on it (and so reads headers, and writes
    /// a depfile when asked).
    pub fn is_preprocessed_by_compiler(self) -> bool {
        match self {
            Language::C
            | Language::Cxx
            | Language::ObjC
            | Language::ObjCxx
            | Language::AsmWithCpp => true,
            Language::PreprocessedC
            | Language::PreprocessedCxx
            | Language::PreprocessedObjC
            | Language::PreprocessedObjCxx
            | Language::Asm => false,
        }
    }

    /// The language `-x NAME` names, if llamacc caches it.
    pub(crate) fn from_gcc_name(name: &[u8]) -> Option<Language> {
        search(LANGUAGE_NAMES, name)
    }

    /// The language of a file with this extension, as `driver` sees it without `-x`.
    pub(crate) fn from_extension(extension: &[u8], driver: Driver) -> Option<Language> {
        let own = match driver.family {
            Family::Gcc => GCC_EXTENSIONS,
            Family::Clang => CLANG_EXTENSIONS,
        };
        let language = search(EXTENSIONS, extension).or_else(|| search(own, extension))?;
        Some(match (driver.cxx, language) {
            (true, Language::C) => Language::Cxx,
            (true, Language::PreprocessedC) => Language::PreprocessedCxx,
            (_, language) => language,
        })
    }
}

/// `-x` names, sorted.
pub(crate) const LANGUAGE_NAMES: &[(&str, Language)] = &[
    ("assembler", Language::Asm),
    ("assembler-with-cpp", Language::AsmWithCpp),
    ("c", Language::C),
    ("c++", Language::Cxx),
    ("c++-cpp-output", Language::PreprocessedCxx),
    ("cpp-output", Language::PreprocessedC),
    ("objc++-cpp-output", Language::PreprocessedObjCxx),
    ("objc-cpp-output", Language::PreprocessedObjC),
    ("objective-c", Language::ObjC),
    ("objective-c++", Language::ObjCxx),
    ("objective-c++-cpp-output", Language::PreprocessedObjCxx),
    ("objective-c-cpp-output", Language::PreprocessedObjC),
];

/// Source extensions both compilers know, sorted (case matters: `.C` is C++).
/// Headers are absent on purpose: compiling one makes a precompiled header.
pub(crate) const EXTENSIONS: &[(&str, Language)] = &[
    ("C", Language::Cxx),
    ("CPP", Language::Cxx),
    ("M", Language::ObjCxx),
    ("S", Language::AsmWithCpp),
    ("c", Language::C),
    ("c++", Language::Cxx),
    ("cc", Language::Cxx),
    ("cp", Language::Cxx),
    ("cpp", Language::Cxx),
    ("cxx", Language::Cxx),
    ("i", Language::PreprocessedC),
    ("ii", Language::PreprocessedCxx),
    ("m", Language::ObjC),
    ("mi", Language::PreprocessedObjC),
    ("mii", Language::PreprocessedObjCxx),
    ("mm", Language::ObjCxx),
    ("s", Language::Asm),
];

/// Extensions only gcc reads as sources (clang 14 takes `.sx` for a linker input).
pub(crate) const GCC_EXTENSIONS: &[(&str, Language)] = &[("sx", Language::AsmWithCpp)];

/// Extensions only clang reads as sources, sorted.
pub(crate) const CLANG_EXTENSIONS: &[(&str, Language)] = &[
    ("C++", Language::Cxx),
    ("CC", Language::Cxx),
    ("CXX", Language::Cxx),
];

fn search(table: &[(&str, Language)], key: &[u8]) -> Option<Language> {
    table
        .binary_search_by(|(name, _)| name.as_bytes().cmp(key))
        .ok()
        .map(|i| table[i].1)
}

/// Where compilation stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `-c`: an object file.
    Object,
    /// `-S`: an assembly file (it wins over `-c`).
    Assembly,
}

/// A depfile (a makefile rule listing the headers read) asked for with `-MD` / `-MMD` and
/// their companions, or with the preprocessor's own `-Wp,-MD,PATH` / `-Wp,-MMD,PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepFile {
    /// Where the compiler writes it: `-MF`, the `-Wp,` path, or else the output with its
    /// extension replaced by `.d` (`obj/a.o` → `obj/a.d`, `a` → `a.d`), as both gcc and
    /// clang name it.
    pub path: PathBuf,
    /// Which headers it lists.
    pub kind: DepKind,
    /// The rule's targets from `-MT` / `-MQ`, in order; empty: the compiler's default.
    pub targets: Vec<DepTarget>,
    /// `-MP`: a phony rule for each header.
    pub phony_targets: bool,
    /// `-MG`: a missing header is taken as a generated file.
    pub missing_headers_generated: bool,
}

/// Which headers a depfile lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DepKind {
    /// Every header: `-MD`.
    AllHeaders,
    /// Only headers outside system directories: `-MMD` (which wins over `-MD`).
    UserHeadersOnly,
}

/// A target of a depfile's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DepTarget {
    /// `-MT TARGET`: written as given.
    Plain(OsString),
    /// `-MQ TARGET`: with the characters special to make quoted.
    Quoted(OsString),
}

/// Where the compiler looks for headers, as far as the command line says (the compiler adds
/// its own directories unless told not to).
///
/// For `#include "file"` the compiler searches the including file's directory (unless
/// [`IncludeSearch::no_source_dir`]), then `quote`, then the `#include <file>` list:
/// `bracket`, `system`, the standard directories, `after`. Frameworks (Darwin) come
/// after `bracket` (`framework`) and with the system directories (`system_framework`).
/// Directories are as spelled; a leading `=` or `$SYSROOT` means the sysroot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncludeSearch {
    /// With gcc's `-I-`, the `-I` directories before it; then `-iquote`.
    pub quote: Vec<PathBuf>,
    /// `-I`, `-iwithprefixbefore`.
    pub bracket: Vec<PathBuf>,
    /// `-isystem`, gcc's `-iwithprefix` (and clang's `-cxx-isystem`, which it searches for
    /// C++ only).
    pub system: Vec<PathBuf>,
    /// `-idirafter`, clang's `-iwithprefix` and `-isystem-after`.
    pub after: Vec<PathBuf>,
    /// `-F`.
    pub framework: Vec<PathBuf>,
    /// `-iframework`.
    pub system_framework: Vec<PathBuf>,
    /// `--sysroot`: the root of the standard directories (headers and libraries).
    pub sysroot: Option<PathBuf>,
    /// `-isysroot`: the root of the standard header directories, over `--sysroot`.
    pub isysroot: Option<PathBuf>,
    /// gcc's `-I-`: the including file's directory is not searched first.
    pub no_source_dir: bool,
    /// `-nostdinc`: no standard system directories (gcc: not even its own).
    pub nostdinc: bool,
    /// `-nostdinc++`: no standard C++ library directories.
    pub nostdinc_cxx: bool,
    /// clang's `-nostdlibinc`: no standard system directories, but the compiler's own.
    pub nostdlibinc: bool,
    /// clang's `-nobuiltininc`: not the compiler's own header directory.
    pub nobuiltininc: bool,
}

impl IncludeSearch {
    /// The root of the standard header directories: `-isysroot`, else `--sysroot`.
    pub fn header_sysroot(&self) -> Option<&Path> {
        self.isysroot.as_deref().or(self.sysroot.as_deref())
    }
}

/// Why an invocation runs the real compiler directly instead of through the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalReason {
    /// Not a compile: no `-c`, `-S` or `-E`, so the compiler links (or does nothing).
    Link,
    /// Only preprocessing: `-E`, `-M` or `-MM` (even beside `-MD`: the compiler still stops
    /// after preprocessing, and writes the preprocessed source or nothing to the output).
    Preprocess,
    /// A flag that makes the compiler print something and compile nothing (`--version`,
    /// `-dumpversion`, `-print-search-dirs`, `-###`), named as in the flag table.
    Informational(&'static str),
    /// A flag that cannot be cached, named as in the flag table (for a word given through
    /// `-Wp,`, `-Wa,`, `-Xclang`, ..., the flag that carried it).
    TooHard(&'static str),
    /// The last argument is a flag that needs one more (`-o` at the end); the compiler
    /// reports it.
    MissingArgument(&'static str),
    /// No source file (an assembly source under `-S` counts as none: the compiler passes
    /// over it).
    NoSource,
    /// More than one input file: several sources, or a source and a linker input.
    MultipleSources,
    /// The source is standard input (`-`).
    StdinSource,
    /// The source's language is not one llamacc caches (a header, Fortran, an object
    /// file, ...): the `-x` name, or the file's extension (empty if it has none).
    UnknownLanguage(String),
    /// `-o -`: the output goes to standard output.
    StdoutOutput,
    /// `-o ""` or `-MF ""` (the flag named): gcc refuses an empty output name, and llamacc
    /// leaves it to say so.
    EmptyOutput(&'static str),
    /// An `@file` that cannot be read (as spelled); the compiler reports it.
    ResponseFileUnreadable(PathBuf),
    /// `@file`s nested too deep, likely one that names itself (the innermost, as spelled).
    ResponseFileTooDeep(PathBuf),
    /// `@file`s that expand past what any compile needs (more files read than gcc allows,
    /// or more arguments than llamacc holds): the file (or argument) where it stopped.
    ResponseFileTooLarge(PathBuf),
}

impl LocalReason {
    /// A short, stable name for statistics: `link`, `too-hard:-save-temps`, ...
    pub fn name(&self) -> String {
        match self {
            LocalReason::Link => "link".into(),
            LocalReason::Preprocess => "preprocess".into(),
            LocalReason::Informational(_) => "informational".into(),
            LocalReason::TooHard(flag) => format!("too-hard:{flag}"),
            LocalReason::MissingArgument(flag) => format!("missing-argument:{flag}"),
            LocalReason::NoSource => "no-source".into(),
            LocalReason::MultipleSources => "multiple-sources".into(),
            LocalReason::StdinSource => "stdin-source".into(),
            LocalReason::UnknownLanguage(_) => "unknown-language".into(),
            LocalReason::StdoutOutput => "stdout-output".into(),
            LocalReason::EmptyOutput(_) => "empty-output".into(),
            LocalReason::ResponseFileUnreadable(_) => "response-file-unreadable".into(),
            LocalReason::ResponseFileTooDeep(_) => "response-file-too-deep".into(),
            LocalReason::ResponseFileTooLarge(_) => "response-file-too-large".into(),
        }
    }
}

impl fmt::Display for LocalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalReason::Link => write!(f, "not a compile (no -c or -S): linking"),
            LocalReason::Preprocess => write!(f, "preprocessing only (-E, -M or -MM)"),
            LocalReason::Informational(flag) => {
                write!(f, "{flag} prints information and compiles nothing")
            }
            LocalReason::TooHard(flag) => write!(f, "{flag} is not supported by the cache"),
            LocalReason::MissingArgument(flag) => write!(f, "{flag} is missing its argument"),
            LocalReason::NoSource => write!(f, "no source file to compile"),
            LocalReason::MultipleSources => write!(f, "more than one input file"),
            LocalReason::StdinSource => write!(f, "the source is standard input"),
            LocalReason::UnknownLanguage(name) if name.is_empty() => {
                write!(
                    f,
                    "the source has no extension and no -x names its language"
                )
            }
            LocalReason::UnknownLanguage(name) => {
                write!(f, "language `{name}` is not cached")
            }
            LocalReason::StdoutOutput => write!(f, "the output goes to standard output"),
            LocalReason::EmptyOutput(flag) => write!(f, "the file name given with {flag} is empty"),
            LocalReason::ResponseFileUnreadable(path) => {
                write!(f, "cannot read response file `{}`", path.display())
            }
            LocalReason::ResponseFileTooDeep(path) => {
                write!(f, "response files nested too deep at `{}`", path.display())
            }
            LocalReason::ResponseFileTooLarge(path) => write!(
                f,
                "response files expand past {} files or {} arguments at `{}`",
                MAX_RESPONSE_FILES,
                MAX_WORDS,
                path.display()
            ),
        }
    }
}
