//! The flag tables: every gcc/clang option whose meaning or argument llamacc must know, as
//! data.
//!
//! Each table is sorted by name (checked when the crate compiles, and by a test that names
//! the offending pair) and searched by binary search for the longest name that is a prefix
//! of the word and whose [`Arg`] form accepts the rest of it. So `-include-pch` never reads
//! as `-include` + `-pch` when a table knows `-include-pch`, and `-MFdeps.d` is `-MF`
//! joined with `deps.d`, but `-Mfoo` is not `-M` (a flag without an argument matches only
//! exactly).
//!
//! [`CLANG`] is layered on [`GCC`]: for clang both are searched, and clang's row wins
//! when both have the same name. [`PREPROCESSOR`], [`ASSEMBLER`] and [`CC1`] describe the
//! words given to the preprocessor (`-Wp,` / `-Xpreprocessor`), to the assembler (`-Wa,` /
//! `-Xassembler`) and to clang's compiler proper (`-Xclang`).
//!
//! A flag no table knows passes through unchanged and is never taken for a source. An
//! unknown flag that takes a separate argument would make its argument look like a second
//! input, so such flags that appear in compile commands are listed here even when their
//! meaning is irrelevant ([`Kind::Pass`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// How a flag takes its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    /// No argument: the word must be exactly the name (`-c`).
    None,
    /// The rest of the same word, possibly empty (`-march=native`, `-Wp,-MD,x.d`, `-g3`).
    Joined,
    /// The next word (`-Xclang -load`).
    Separate,
    /// The rest of the word, or the next word when the rest is empty (`-Ifoo`, `-I foo`).
    JoinedOrSeparate,
    /// `=value` in the same word, or the next word (`--sysroot=/x`, `--sysroot /x`).
    EqualsOrSeparate,
}

impl Arg {
    /// Whether a word made of the flag's name followed by `rest` is this flag.
    fn accepts(self, rest: &[u8]) -> bool {
        match self {
            Arg::None | Arg::Separate => rest.is_empty(),
            Arg::Joined | Arg::JoinedOrSeparate => true,
            Arg::EqualsOrSeparate => rest.is_empty() || rest[0] == b'=',
        }
    }
}

/// A search list an include-directory flag adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// `#include "..."` only: `-iquote`.
    Quote,
    /// `-I`.
    Bracket,
    /// `-isystem`.
    System,
    /// `-idirafter`.
    After,
    /// `-F` (Darwin frameworks).
    Framework,
    /// `-iframework`.
    SystemFramework,
}

/// A standard search list a `-nostd*` flag removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoStd {
    /// `-nostdinc`: no standard system directories at all.
    Inc,
    /// `-nostdinc++`: no standard C++ library directories.
    IncCxx,
    /// clang's `-nostdlibinc`: no standard system directories, keep the compiler's own.
    LibInc,
    /// clang's `-nobuiltininc`: not the compiler's own header directory.
    BuiltinInc,
}

/// What a flag means to llamacc. Whether it takes an argument is its [`Arg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Changes nothing llamacc describes; listed so its argument is not taken for a source.
    Pass,
    /// Changes only preprocessing, and names no file (`-D`, `-U`, `-A`, `-undef`).
    Preprocessor,
    /// `-c`: compile to an object.
    Compile,
    /// `-S`: compile to assembly.
    Assemble,
    /// `-E`: preprocess only.
    Preprocess,
    /// `-M` / `-MM`: dependencies instead of output. They imply `-E` even beside `-MD`:
    /// gcc 12 then writes an empty file as the "object", clang 14 the preprocessed source.
    DepsOnly,
    /// `-MD` / `-MMD`: write a depfile beside compiling.
    DepFile { system: bool },
    /// The preprocessor's own `-MD PATH` / `-MMD PATH` (`-Wp,-MMD,PATH`).
    DepFileAt { system: bool },
    /// `-MF`: the depfile's path.
    DepPath,
    /// `-MT` (plain) / `-MQ` (quoted): a target of the depfile's rule.
    DepTarget { quoted: bool },
    /// `-MP`: a phony rule for every header.
    DepPhony,
    /// `-MG`: missing headers are taken as generated files.
    DepMissingGenerated,
    /// `-o`.
    Output,
    /// `-x`: the language of the sources that follow.
    Language,
    /// An include directory.
    Include(Dir),
    /// `-I-`: splits the `-I` list (gcc).
    IncludeBarrier,
    /// `-iprefix`: the prefix of later `-iwithprefix*`.
    IncludePrefix,
    /// `-iwithprefix` (system with gcc, after with clang) / `-iwithprefixbefore` (bracket).
    IncludeWithPrefix(Dir),
    /// `--sysroot`.
    Sysroot,
    /// `-isysroot`: the sysroot for headers only.
    HeaderSysroot,
    /// A standard search list removed.
    NoStd(NoStd),
    /// `-include`.
    ForcedInclude,
    /// `-imacros`.
    ForcedMacros,
    /// `-B`: where the driver looks for its programs (and headers).
    ToolPrefix,
    /// The argument is a file the compiler reads.
    Input,
    /// The argument is a file the compiler reads when it has a `/`; a bare name is found
    /// in the toolchain's own directories (`-specs=nano.specs`, `-fplugin=annobin`) or by
    /// the dynamic loader (`-fplugin=foo.so`).
    InputIfPath,
    /// The compiler reads this file of the working directory (`-fprofile-use` in clang).
    InputDefault(&'static str),
    /// Debug information on (`-g`, `-g3`, `-ggdb`, `-gdwarf-5`) or off (`-g0`).
    Debug(bool),
    /// A `-g` modifier that neither enables nor disables debug information (`-gz`).
    DebugModifier,
    /// `-gsplit-dwarf` (on) / `-gno-split-dwarf` (off).
    SplitDwarf(bool),
    /// clang's `-gsplit-dwarf=split|single`.
    SplitDwarfMode,
    /// `-fstack-usage`: a `.su` beside the output.
    StackUsage,
    /// `-march=`, `-mtune=`, `-mcpu=`: the host's CPU when the value is `native`.
    Cpu,
    /// Colored diagnostics forced on or off (`-fcolor-diagnostics`).
    Color(bool),
    /// `-fdiagnostics-color=WHEN`.
    ColorWhen,
    /// `-fdiagnostics-format=FORMAT`: the `*-file` formats write a file.
    DiagnosticsFormat,
    /// clang's `-emit-llvm`: the default output is `.bc` / `.ll`.
    EmitLlvm,
    /// Comma-separated words for the preprocessor (`-Wp,`).
    PreprocessorList,
    /// One word for the preprocessor (`-Xpreprocessor`).
    PreprocessorWord,
    /// Comma-separated words for the assembler (`-Wa,`).
    AssemblerList,
    /// One word for the assembler (`-Xassembler`).
    AssemblerWord,
    /// One word for clang's compiler proper (`-Xclang`).
    Cc1Word,
    /// Cannot be cached: run the compiler directly.
    TooHard,
    /// The compiler prints something and compiles nothing (`--version`, `-print-*`).
    Informational,
}

#[cfg(test)]
impl Kind {
    /// Whether the flag needs an argument (`Some(true)`), has none (`Some(false)`), or
    /// either fits (`None`).
    pub(crate) fn takes_argument(self) -> Option<bool> {
        match self {
            // `-g` is joined to its level or format, which may be empty; `--debug` is not.
            Kind::Pass
            | Kind::Preprocessor
            | Kind::TooHard
            | Kind::Informational
            | Kind::Debug(_)
            | Kind::DebugModifier => None,
            Kind::DepFileAt { .. }
            | Kind::DepPath
            | Kind::DepTarget { .. }
            | Kind::Output
            | Kind::Language
            | Kind::Include(_)
            | Kind::IncludePrefix
            | Kind::IncludeWithPrefix(_)
            | Kind::Sysroot
            | Kind::HeaderSysroot
            | Kind::ForcedInclude
            | Kind::ForcedMacros
            | Kind::ToolPrefix
            | Kind::Input
            | Kind::InputIfPath
            | Kind::SplitDwarfMode
            | Kind::Cpu
            | Kind::ColorWhen
            | Kind::DiagnosticsFormat
            | Kind::PreprocessorList
            | Kind::PreprocessorWord
            | Kind::AssemblerList
            | Kind::AssemblerWord
            | Kind::Cc1Word => Some(true),
            Kind::Compile
            | Kind::Assemble
            | Kind::Preprocess
            | Kind::DepsOnly
            | Kind::DepFile { .. }
            | Kind::DepPhony
            | Kind::DepMissingGenerated
            | Kind::IncludeBarrier
            | Kind::NoStd(_)
            | Kind::InputDefault(_)
            | Kind::SplitDwarf(_)
            | Kind::StackUsage
            | Kind::Color(_)
            | Kind::EmitLlvm => Some(false),
        }
    }
}

/// One row of a table.
#[derive(Debug)]
pub(crate) struct Flag {
    /// The flag as written, up to where its joined argument starts.
    pub(crate) name: &'static str,
    /// How it takes its argument.
    pub(crate) arg: Arg,
    /// What it means.
    pub(crate) kind: Kind,
}

const fn flag(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        arg: Arg::None,
        kind,
    }
}

const fn joined(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        arg: Arg::Joined,
        kind,
    }
}

const fn separate(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        arg: Arg::Separate,
        kind,
    }
}

const fn either(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        arg: Arg::JoinedOrSeparate,
        kind,
    }
}

const fn long(name: &'static str, kind: Kind) -> Flag {
    Flag {
        name,
        arg: Arg::EqualsOrSeparate,
        kind,
    }
}

use Kind::*;

/// gcc's flags, which clang shares.
///
/// Too hard, and why:
/// * `-save-temps*`, `-fdump-*`, `-fcallgraph-info`, `-aux-info`, `-fcompare-debug*`:
///   write files named after the source or output that llamacc does not collect.
/// * `-fprofile-arcs`, `-fprofile-generate`, `-ftest-coverage`, `--coverage`: gcc embeds
///   the absolute path of the `.gcda` file in the object and writes a `.gcno` holding the
///   working directory and a time stamp.
/// * `-fprofile-use` (gcc): reads `.gcda` files named after the mangled output path.
/// * `-dumpbase`, `-dumpdir`, `-dumpbase-ext`: rename the `.dwo`, `.su` and other auxiliary
///   outputs.
/// * `-fsyntax-only`: no output to cache.
/// * `-fmodules*`, `-fmodule-header`, `-fmodule-mapper=`: module caches and mapper servers.
/// * `-gtoggle`: flips debug information depending on what came before.
/// * `-wrapper`: runs the compiler's programs through another program.
pub(crate) const GCC: &[Flag] = &[
    flag("-###", Informational),
    flag("--assemble", Assemble),
    long("--assert", Preprocessor),
    flag("--compile", Compile),
    flag("--coverage", TooHard),
    flag("--debug", Debug(true)),
    long("--define-macro", Preprocessor),
    flag("--dependencies", DepsOnly),
    long("--dump", Pass),
    long("--dumpbase", TooHard),
    long("--dumpbase-ext", TooHard),
    long("--dumpdir", TooHard),
    long("--for-assembler", AssemblerList),
    long("--for-linker", Pass),
    long("--force-link", Pass),
    flag("--help", Informational),
    joined("--help=", Informational),
    long("--imacros", ForcedMacros),
    long("--include", ForcedInclude),
    flag("--include-barrier", IncludeBarrier),
    long("--include-directory", Include(Dir::Bracket)),
    long("--include-directory-after", Include(Dir::After)),
    long("--include-prefix", IncludePrefix),
    long("--include-with-prefix", IncludeWithPrefix(Dir::System)),
    long(
        "--include-with-prefix-after",
        IncludeWithPrefix(Dir::System),
    ),
    long(
        "--include-with-prefix-before",
        IncludeWithPrefix(Dir::Bracket),
    ),
    long("--language", Language),
    long("--library-directory", Pass),
    flag("--no-standard-includes", NoStd(NoStd::Inc)),
    long("--output", Output),
    long("--param", Pass),
    long("--prefix", ToolPrefix),
    flag("--preprocess", Preprocess),
    joined("--print-", Informational),
    flag("--print-missing-file-dependencies", DepMissingGenerated),
    flag("--save-temps", TooHard),
    joined("--save-temps=", TooHard),
    long("--specs", InputIfPath),
    long("--sysroot", Sysroot),
    flag("--target-help", Informational),
    long("--undefine-macro", Preprocessor),
    flag("--user-dependencies", DepsOnly),
    flag("--version", Informational),
    flag("--write-dependencies", DepFile { system: true }),
    flag("--write-user-dependencies", DepFile { system: false }),
    either("-A", Preprocessor),
    either("-B", ToolPrefix),
    either("-D", Preprocessor),
    flag("-E", Preprocess),
    either("-F", Include(Dir::Framework)),
    either("-G", Pass),
    either("-I", Include(Dir::Bracket)),
    flag("-I-", IncludeBarrier),
    either("-L", Pass),
    flag("-M", DepsOnly),
    flag("-MD", DepFile { system: true }),
    either("-MF", DepPath),
    flag("-MG", DepMissingGenerated),
    flag("-MM", DepsOnly),
    flag("-MMD", DepFile { system: false }),
    flag("-MP", DepPhony),
    either("-MQ", DepTarget { quoted: true }),
    either("-MT", DepTarget { quoted: false }),
    flag("-S", Assemble),
    either("-T", Pass),
    either("-U", Preprocessor),
    joined("-Wa,", AssemblerList),
    joined("-Wp,", PreprocessorList),
    separate("-Xassembler", AssemblerWord),
    separate("-Xlinker", Pass),
    separate("-Xpreprocessor", PreprocessorWord),
    separate("-arch", Pass),
    separate("-aux-info", TooHard),
    flag("-c", Compile),
    separate("-dumpbase", TooHard),
    separate("-dumpbase-ext", TooHard),
    separate("-dumpdir", TooHard),
    flag("-dumpfullversion", Informational),
    flag("-dumpmachine", Informational),
    flag("-dumpspecs", Informational),
    flag("-dumpversion", Informational),
    flag("-fauto-profile", InputDefault("fbdata.afdo")),
    joined("-fauto-profile=", Input),
    flag("-fcallgraph-info", TooHard),
    joined("-fcallgraph-info=", TooHard),
    joined("-fcompare-debug", TooHard),
    flag("-fdiagnostics-color", Color(true)),
    joined("-fdiagnostics-color=", ColorWhen),
    joined("-fdiagnostics-format=", DiagnosticsFormat),
    joined("-fdump-", TooHard),
    joined("-fmodule-header", TooHard),
    joined("-fmodule-mapper=", TooHard),
    flag("-fmodules", TooHard),
    flag("-fmodules-ts", TooHard),
    flag("-fno-diagnostics-color", Color(false)),
    joined("-fplugin=", InputIfPath),
    flag("-fprofile-arcs", TooHard),
    flag("-fprofile-generate", TooHard),
    joined("-fprofile-generate=", TooHard),
    flag("-fprofile-use", TooHard),
    joined("-fprofile-use=", TooHard),
    flag("-fstack-usage", StackUsage),
    flag("-fsyntax-only", TooHard),
    flag("-ftest-coverage", TooHard),
    joined("-g", Debug(true)),
    flag("-g0", Debug(false)),
    flag("-gcolumn-info", DebugModifier),
    flag("-ggdb0", Debug(false)),
    joined("-gno-", DebugModifier),
    flag("-gno-split-dwarf", SplitDwarf(false)),
    flag("-grecord-gcc-switches", DebugModifier),
    flag("-gsplit-dwarf", SplitDwarf(true)),
    flag("-gstrict-dwarf", DebugModifier),
    flag("-gtoggle", TooHard),
    joined("-gz", DebugModifier),
    either("-idirafter", Include(Dir::After)),
    either("-iframework", Include(Dir::SystemFramework)),
    either("-imacros", ForcedMacros),
    separate("-imultiarch", Pass),
    either("-imultilib", Pass),
    either("-include", ForcedInclude),
    joined("-iplugindir=", Pass),
    either("-iprefix", IncludePrefix),
    either("-iquote", Include(Dir::Quote)),
    either("-isysroot", HeaderSysroot),
    either("-isystem", Include(Dir::System)),
    // gcc 12 searches these with the -isystem directories, not after the standard ones as
    // its manual says; clang after them.
    either("-iwithprefix", IncludeWithPrefix(Dir::System)),
    either("-iwithprefixbefore", IncludeWithPrefix(Dir::Bracket)),
    either("-l", Pass),
    joined("-march=", Cpu),
    joined("-mcpu=", Cpu),
    joined("-mtune=", Cpu),
    flag("-nostdinc", NoStd(NoStd::Inc)),
    flag("-nostdinc++", NoStd(NoStd::IncCxx)),
    either("-o", Output),
    flag("-object", Pass),
    joined("-print-", Informational),
    flag("-save-temps", TooHard),
    joined("-save-temps=", TooHard),
    joined("-specs=", InputIfPath),
    either("-u", Pass),
    flag("-undef", Preprocessor),
    separate("-undefined", Pass),
    separate("-wrapper", TooHard),
    either("-x", Language),
    either("-z", Pass),
];

/// clang's flags beyond gcc's, and those it treats differently.
///
/// Too hard, and why:
/// * `--analyze`, `-emit-ast`, `--serialize-diagnostics`, `-MJ`, `-ftime-trace*`,
///   `-save-stats*`, `--analyzer-output`: outputs llamacc does not collect.
/// * `--config*`: a file of further flags llamacc would not see.
/// * `-fcxx-modules`, `-fmodule-file=`: modules.
/// * `-ivfsoverlay`, `-working-directory`: change which file a path names.
/// * `-I-`: clang rejects it; let it say so.
///
/// Not too hard, unlike gcc: `-fprofile-generate` embeds only the name it is given, and
/// `-fprofile-use=PATH` reads one profile, recorded as an input. Also unlike gcc,
/// `-iwithprefix` adds to the directories searched after the standard ones.
pub(crate) const CLANG: &[Flag] = &[
    flag("--analyze", TooHard),
    separate("--analyzer-output", TooHard),
    long("--config", TooHard),
    joined("--config-system-dir=", TooHard),
    joined("--config-user-dir=", TooHard),
    joined("--gcc-install-dir=", Pass),
    joined("--gcc-toolchain=", Pass),
    long("--include-with-prefix", IncludeWithPrefix(Dir::After)),
    long("--include-with-prefix-after", IncludeWithPrefix(Dir::After)),
    separate("--serialize-diagnostics", TooHard),
    joined("--target=", Pass),
    flag("-I-", TooHard),
    either("-MJ", TooHard),
    separate("-Xclang", Cc1Word),
    either("-cxx-isystem", Include(Dir::System)),
    flag("-emit-ast", TooHard),
    flag("-emit-llvm", EmitLlvm),
    flag("-fcolor-diagnostics", Color(true)),
    flag("-fcxx-modules", TooHard),
    long("-fdebug-compilation-dir", Pass),
    joined("-fmodule-file=", TooHard),
    joined("-fmodule-map-file=", Input),
    flag("-fno-color-diagnostics", Color(false)),
    joined("-fpass-plugin=", InputIfPath),
    flag("-fprofile-generate", Pass),
    joined("-fprofile-generate=", Pass),
    flag("-fprofile-instr-use", InputDefault("default.profdata")),
    joined("-fprofile-instr-use=", Input),
    joined("-fprofile-list=", Input),
    joined("-fprofile-remapping-file=", Input),
    joined("-fprofile-sample-use=", Input),
    flag("-fprofile-use", InputDefault("default.profdata")),
    joined("-fprofile-use=", Input),
    joined("-fsanitize-blacklist=", Input),
    joined("-fsanitize-coverage-allowlist=", Input),
    joined("-fsanitize-coverage-blacklist=", Input),
    joined("-fsanitize-coverage-blocklist=", Input),
    joined("-fsanitize-coverage-ignorelist=", Input),
    joined("-fsanitize-coverage-whitelist=", Input),
    joined("-fsanitize-ignorelist=", Input),
    joined("-fsanitize-system-ignorelist=", Input),
    flag("-ftime-trace", TooHard),
    joined("-ftime-trace=", TooHard),
    joined("-fxray-always-instrument=", Input),
    joined("-fxray-attr-list=", Input),
    joined("-fxray-never-instrument=", Input),
    separate("-gcc-toolchain", Pass),
    joined("-gsplit-dwarf=", SplitDwarfMode),
    separate("-include-pch", Input),
    either("-isystem-after", Include(Dir::After)),
    either("-ivfsoverlay", TooHard),
    either("-iwithprefix", IncludeWithPrefix(Dir::After)),
    separate("-mllvm", Pass),
    flag("-nobuiltininc", NoStd(NoStd::BuiltinInc)),
    flag("-nostdlibinc", NoStd(NoStd::LibInc)),
    joined("-objcmt-", Pass),
    long("-resource-dir", Pass),
    flag("-save-stats", TooHard),
    joined("-save-stats=", TooHard),
    separate("-target", Pass),
    long("-working-directory", TooHard),
];

/// Words gcc gives to its preprocessor from `-Wp,` and `-Xpreprocessor`. These spell the
/// preprocessor's own options: its `-MD` and `-MMD` take the depfile's path, as the Linux
/// kernel's `-Wp,-MMD,dir/.file.o.d` uses them. A word this table does not know is too
/// hard: it could add an include directory or a forced include llamacc would not see.
pub(crate) const PREPROCESSOR: &[Flag] = &[
    either("-D", Preprocessor),
    separate("-MD", DepFileAt { system: true }),
    either("-MF", DepPath),
    flag("-MG", DepMissingGenerated),
    separate("-MMD", DepFileAt { system: false }),
    flag("-MP", DepPhony),
    either("-MQ", DepTarget { quoted: true }),
    either("-MT", DepTarget { quoted: false }),
    either("-U", Preprocessor),
];

/// Words clang gives to its compiler proper from `-Wp,` and `-Xpreprocessor` (the driver
/// itself turns `-Wp,-MD,PATH` into `-MD -MF PATH`). Any other word is too hard.
pub(crate) const CLANG_PREPROCESSOR: &[Flag] =
    &[either("-D", Preprocessor), either("-U", Preprocessor)];

/// Words given to the assembler by `-Wa,` and `-Xassembler`: the few that write files.
/// Any other word passes (`--noexecstack`, `-gdwarf-5`, `-mrelax-relocations=no`).
pub(crate) const ASSEMBLER: &[Flag] = &[
    separate("--MD", TooHard),
    // Listings: -al, -adhln=file.lst, ...
    joined("-a", TooHard),
    either("-o", TooHard),
];

/// Words given to clang's compiler proper by `-Xclang`: those that read a file llamacc must
/// hash, or write one it does not collect, or change the search for headers. Any other
/// word passes.
pub(crate) const CC1: &[Flag] = &[
    either("-I", TooHard),
    separate("-add-plugin", Pass),
    separate("-dependency-dot", TooHard),
    separate("-dependency-file", TooHard),
    flag("-emit-module", TooHard),
    flag("-emit-module-interface", TooHard),
    flag("-emit-pch", TooHard),
    separate("-fdebug-compilation-dir", Pass),
    joined("-fmodule-file=", TooHard),
    separate("-header-include-file", TooHard),
    either("-include", TooHard),
    separate("-include-pch", Input),
    either("-isystem", TooHard),
    separate("-load", InputIfPath),
    separate("-main-file-name", Pass),
    separate("-mllvm", Pass),
    either("-o", TooHard),
    separate("-plugin", Pass),
    joined("-stats-file=", TooHard),
];

/// Whether `a` sorts strictly before `b`, byte by byte (usable in constants).
const fn before(a: &[u8], b: &[u8]) -> bool {
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// Whether the table is sorted by name, without duplicates.
const fn sorted(table: &[Flag]) -> bool {
    let mut i = 1;
    while i < table.len() {
        if !before(table[i - 1].name.as_bytes(), table[i].name.as_bytes()) {
            return false;
        }
        i += 1;
    }
    true
}

// The binary search depends on it; the test `tables_are_sorted` names the offending pair.
const _: () = assert!(sorted(GCC), "GCC flag table is not sorted");
const _: () = assert!(sorted(CLANG), "CLANG flag table is not sorted");
const _: () = assert!(sorted(PREPROCESSOR), "PREPROCESSOR table is not sorted");
const _: () = assert!(
    sorted(CLANG_PREPROCESSOR),
    "CLANG_PREPROCESSOR table is not sorted"
);
const _: () = assert!(sorted(ASSEMBLER), "ASSEMBLER table is not sorted");
const _: () = assert!(sorted(CC1), "CC1 table is not sorted");

/// The row for `word`: the longest name, in any of `tables`, that `word` starts with and
/// whose argument form accepts the rest; with equal names, the earlier table wins. Returns
/// the row and the rest of the word after the name.
pub(crate) fn lookup<'w>(
    tables: &[&'static [Flag]],
    word: &'w [u8],
) -> Option<(&'static Flag, &'w [u8])> {
    for len in (1..=word.len()).rev() {
        let (name, rest) = word.split_at(len);
        for table in tables {
            if let Ok(i) = table.binary_search_by(|f| f.name.as_bytes().cmp(name)) {
                let flag: &'static Flag = &table[i];
                if flag.arg.accepts(rest) {
                    return Some((flag, rest));
                }
            }
        }
    }
    None
}

/// One word of a command line, or a flag with its argument, as the tables read it.
#[derive(Debug)]
pub(crate) enum Word<'a> {
    /// Not a flag: an input file, or `-` for standard input.
    Operand(&'a OsStr),
    /// A flag of the tables, with its argument if its [`Arg`] takes one.
    Known(&'static Flag, Option<OsString>),
    /// A flag of the tables that takes a separate argument but came last.
    MissingArgument(&'static Flag),
    /// A flag no table knows.
    Unknown,
}

/// Reads a command line word by word (a flag and its separate argument count as one).
pub(crate) struct Words<'a> {
    words: &'a [OsString],
    next: usize,
    tables: &'a [&'static [Flag]],
    gnu_long_options: bool,
}

impl<'a> Words<'a> {
    /// Reads `words` with `tables` (searched in that order).
    pub(crate) fn new(words: &'a [OsString], tables: &'a [&'static [Flag]]) -> Words<'a> {
        Words {
            words,
            next: 0,
            tables,
            gnu_long_options: false,
        }
    }

    /// Also reads an unknown `--NAME` as `-fNAME`, as gcc's driver does
    /// (`--stack-usage` is `-fstack-usage`).
    pub(crate) fn with_gnu_long_options(mut self) -> Words<'a> {
        self.gnu_long_options = true;
        self
    }

    /// The index of the next word to read.
    pub(crate) fn position(&self) -> usize {
        self.next
    }

    fn take_next(&mut self) -> Option<OsString> {
        let word = self.words.get(self.next)?.clone();
        self.next += 1;
        Some(word)
    }

    fn known(&mut self, flag: &'static Flag, rest: &[u8]) -> Word<'a> {
        let joined = || Some(OsString::from_vec(rest.to_vec()));
        let value = match flag.arg {
            Arg::None => None,
            Arg::Joined => joined(),
            Arg::JoinedOrSeparate | Arg::EqualsOrSeparate if !rest.is_empty() => {
                // An `=` is part of EqualsOrSeparate's form, not of its value.
                let skip = usize::from(flag.arg == Arg::EqualsOrSeparate);
                Some(OsString::from_vec(rest[skip..].to_vec()))
            }
            Arg::Separate | Arg::JoinedOrSeparate | Arg::EqualsOrSeparate => {
                match self.take_next() {
                    Some(value) => Some(value),
                    None => return Word::MissingArgument(flag),
                }
            }
        };
        Word::Known(flag, value)
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let word: &'a OsStr = self.words.get(self.next)?;
        self.next += 1;
        let bytes = word.as_bytes();
        if bytes.first() != Some(&b'-') || bytes == b"-" {
            return Some(Word::Operand(word));
        }
        if let Some((flag, rest)) = lookup(self.tables, bytes) {
            return Some(self.known(flag, rest));
        }
        if self.gnu_long_options
            && let Some(name) = bytes.strip_prefix(b"--")
        {
            let spelled = [b"-f", name].concat();
            if let Some((flag, rest)) = lookup(self.tables, &spelled) {
                return Some(self.known(flag, rest));
            }
        }
        Some(Word::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: [(&str, &[Flag]); 6] = [
        ("GCC", GCC),
        ("CLANG", CLANG),
        ("PREPROCESSOR", PREPROCESSOR),
        ("CLANG_PREPROCESSOR", CLANG_PREPROCESSOR),
        ("ASSEMBLER", ASSEMBLER),
        ("CC1", CC1),
    ];

    #[test]
    fn tables_are_sorted() {
        for (table, rows) in TABLES {
            for pair in rows.windows(2) {
                assert!(
                    pair[0].name < pair[1].name,
                    "{table}: {:?} must come after {:?} (sorted, no duplicates)",
                    pair[0].name,
                    pair[1].name
                );
            }
            assert!(sorted(rows), "{table}");
        }
    }

    #[test]
    fn sorted_rejects_disorder_and_duplicates() {
        assert!(!sorted(&[flag("-c", Compile), flag("-E", Preprocess)]));
        assert!(!sorted(&[flag("-c", Compile), flag("-c", Compile)]));
        assert!(sorted(&[
            flag("-I", Pass),
            flag("-I-", Pass),
            flag("-c", Compile)
        ]));
    }

    #[test]
    fn argument_forms_fit_their_kinds() {
        for (table, rows) in TABLES {
            for f in rows {
                assert!(
                    f.name.starts_with('-'),
                    "{table}: {:?} is not a flag",
                    f.name
                );
                let has_argument = f.arg != Arg::None;
                if let Some(needed) = f.kind.takes_argument() {
                    assert_eq!(
                        has_argument, needed,
                        "{table}: {:?} is {:?} but its kind {:?} says otherwise",
                        f.name, f.arg, f.kind
                    );
                }
                if f.name.ends_with('=') {
                    assert_eq!(f.arg, Arg::Joined, "{table}: {:?}", f.name);
                }
            }
        }
    }

    fn find(tables: &[&'static [Flag]], word: &str) -> Option<(&'static str, String)> {
        lookup(tables, word.as_bytes())
            .map(|(f, rest)| (f.name, String::from_utf8(rest.to_vec()).unwrap()))
    }

    #[test]
    fn longest_prefix_whose_form_fits() {
        let gcc = &[GCC];
        assert_eq!(find(gcc, "-include"), Some(("-include", "".into())));
        assert_eq!(
            find(gcc, "-includefoo.h"),
            Some(("-include", "foo.h".into()))
        );
        assert_eq!(find(gcc, "-Iinc"), Some(("-I", "inc".into())));
        assert_eq!(find(gcc, "-I-"), Some(("-I-", "".into())));
        assert_eq!(find(gcc, "-MD"), Some(("-MD", "".into())));
        assert_eq!(find(gcc, "-MFdeps.d"), Some(("-MF", "deps.d".into())));
        assert_eq!(find(gcc, "-MMD"), Some(("-MMD", "".into())));
        // A flag without an argument matches only exactly.
        assert_eq!(find(gcc, "-Mfoo"), None);
        assert_eq!(find(gcc, "-cc"), None);
        assert_eq!(find(gcc, "-undef"), Some(("-undef", "".into())));
        assert_eq!(find(gcc, "-ofoo.o"), Some(("-o", "foo.o".into())));
        assert_eq!(find(gcc, "-object"), Some(("-object", "".into())));
        assert_eq!(find(gcc, "-g"), Some(("-g", "".into())));
        assert_eq!(find(gcc, "-ggdb3"), Some(("-g", "gdb3".into())));
        assert_eq!(
            find(gcc, "-gsplit-dwarf"),
            Some(("-gsplit-dwarf", "".into()))
        );
        assert_eq!(find(gcc, "-gz=zlib"), Some(("-gz", "=zlib".into())));
        assert_eq!(find(gcc, "--sysroot=/s"), Some(("--sysroot", "=/s".into())));
        assert_eq!(find(gcc, "--sysroot"), Some(("--sysroot", "".into())));
        assert_eq!(find(gcc, "--sysrootx"), None);
        assert_eq!(
            find(gcc, "-fprofile-use"),
            Some(("-fprofile-use", "".into()))
        );
        assert_eq!(
            find(gcc, "-fprofile-use=x"),
            Some(("-fprofile-use=", "x".into()))
        );
        assert_eq!(find(gcc, "-fprofile-update=atomic"), None);
        assert_eq!(find(gcc, "-O2"), None);
        assert_eq!(find(gcc, "-Wall"), None);
        assert_eq!(find(gcc, "-Wp,-MD,x.d"), Some(("-Wp,", "-MD,x.d".into())));
    }

    #[test]
    fn clang_rows_override_gcc_rows() {
        let clang = &[CLANG, GCC];
        let kind = |word: &str| lookup(clang, word.as_bytes()).map(|(f, _)| f.kind);
        assert_eq!(
            kind("-fprofile-use"),
            Some(InputDefault("default.profdata"))
        );
        assert_eq!(kind("-fprofile-generate"), Some(Pass));
        assert_eq!(kind("-I-"), Some(TooHard));
        assert_eq!(kind("-include-pch"), Some(Input));
        assert_eq!(kind("-gcc-toolchain"), Some(Pass));
        assert_eq!(kind("-I"), Some(Include(Dir::Bracket)));
        // Without clang's table, gcc reads these as gcc would.
        let gcc = &[GCC];
        let kind = |word: &str| lookup(gcc, word.as_bytes()).map(|(f, _)| f.kind);
        assert_eq!(kind("-fprofile-use"), Some(TooHard));
        assert_eq!(kind("-include-pch"), Some(ForcedInclude));
    }

    fn read(words: &[&str], gnu: bool) -> Vec<String> {
        let words: Vec<OsString> = words.iter().map(OsString::from).collect();
        let tables = [GCC];
        let mut reader = Words::new(&words, &tables);
        if gnu {
            reader = reader.with_gnu_long_options();
        }
        reader
            .map(|w| match w {
                Word::Operand(o) => format!("operand {}", o.to_string_lossy()),
                Word::Known(f, None) => f.name.to_string(),
                Word::Known(f, Some(v)) => format!("{} {:?}", f.name, v),
                Word::MissingArgument(f) => format!("{} missing", f.name),
                Word::Unknown => "unknown".to_string(),
            })
            .collect()
    }

    #[test]
    fn words_take_their_arguments() {
        assert_eq!(
            read(
                &[
                    "-I",
                    "a",
                    "-Ib",
                    "-o",
                    "-c",
                    "x.c",
                    "-",
                    "--sysroot=/s",
                    "--param",
                    "p=1"
                ],
                false
            ),
            [
                "-I \"a\"",
                "-I \"b\"",
                "-o \"-c\"",
                "operand x.c",
                "operand -",
                "--sysroot \"/s\"",
                "--param \"p=1\"",
            ]
        );
        assert_eq!(read(&["-Wall", "-MF"], false), ["unknown", "-MF missing"]);
        assert_eq!(read(&["--stack-usage"], false), ["unknown"]);
        assert_eq!(
            read(&["--stack-usage", "--profile-use=x"], true),
            ["-fstack-usage", "-fprofile-use= \"x\""]
        );
    }
}
