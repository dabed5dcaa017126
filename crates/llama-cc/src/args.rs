//! What one gcc/clang command line asks for: a single cacheable compilation, described, or
//! the named reason to run the real compiler directly.
//!
//! [`parse`] reads the arguments with the tables of [`crate::flags`]; it decides nothing
//! from a flag's spelling outside them. It reads no file but `@file`s, and leaves every
//! check that needs the file system (does the source exist? can the output be written?) to
//! the compiler.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::compilation::{
    Compilation, DepFile, DepKind, DepTarget, Driver, Family, IncludeSearch, Language, LocalReason,
    Mode, Verdict,
};
use crate::flags::{self, Dir, Flag, Kind, NoStd, Word, Words};
use crate::response_file;

/// Decides whether `args` (a command line without the compiler) is one cacheable
/// compilation, run in `cwd` by `driver` (a [`Driver`], or a [`Family`] for its C driver).
///
/// `cwd` serves only to read `@file`s: the paths of the result are as spelled.
pub fn parse(args: &[OsString], cwd: &Path, driver: impl Into<Driver>) -> Verdict {
    let driver = driver.into();
    let args = match response_file::expand(args, cwd) {
        Ok(args) => args,
        Err(reason) => return Verdict::Local(reason),
    };
    let mut state = State::new(driver);
    let tables: &[&'static [Flag]] = match driver.family {
        Family::Gcc => &[flags::GCC],
        Family::Clang => &[flags::CLANG, flags::GCC],
    };
    let mut words = Words::new(&args, tables);
    if driver.family == Family::Gcc {
        words = words.with_gnu_long_options();
    }
    for word in words {
        match word {
            Word::Operand(input) => state.inputs.push((input.into(), state.language.clone())),
            Word::Known(flag, value) => state.apply(flag, value, None),
            Word::MissingArgument(flag) => {
                state.missing_argument.get_or_insert(flag.name);
            }
            Word::Unknown => {}
        }
    }
    state.read_passed_words();
    match state.finish(args) {
        Ok(compilation) => Verdict::Compile(compilation),
        Err(reason) => Verdict::Local(reason),
    }
}

/// The language `-x` set for the inputs that follow.
#[derive(Clone, Debug)]
enum XLanguage {
    Known(Language),
    Other(String),
}

/// What the words read so far asked for.
struct State {
    driver: Driver,
    inputs: Vec<(PathBuf, Option<XLanguage>)>,
    language: Option<XLanguage>,
    compile: bool,
    assemble: bool,
    preprocess: bool,
    deps_only: bool,
    dep_file: Option<DepKind>,
    /// `-Wp,-MD,PATH`: kind, path, and the flag that carried it.
    dep_file_at: Option<(DepKind, PathBuf, &'static str)>,
    dep_path: Option<PathBuf>,
    dep_targets: Vec<DepTarget>,
    dep_phony: bool,
    dep_missing_generated: bool,
    output: Option<PathBuf>,
    includes: IncludeSearch,
    include_prefix: Option<OsString>,
    macros: Vec<PathBuf>,
    forced: Vec<PathBuf>,
    file_inputs: Vec<PathBuf>,
    tool_prefixes: Vec<PathBuf>,
    native_cpu: bool,
    color: Option<bool>,
    debug: bool,
    split_dwarf: bool,
    stack_usage: bool,
    emit_llvm: bool,
    too_hard: Option<&'static str>,
    informational: Option<&'static str>,
    missing_argument: Option<&'static str>,
    /// Words for the preprocessor, assembler and cc1 given one per flag, read after the
    /// command line because a flag among them may take the next one as its argument.
    preprocessor_words: Vec<OsString>,
    assembler_words: Vec<OsString>,
    cc1_words: Vec<OsString>,
}

impl State {
    fn new(driver: Driver) -> State {
        State {
            driver,
            inputs: Vec::new(),
            language: None,
            compile: false,
            assemble: false,
            preprocess: false,
            deps_only: false,
            dep_file: None,
            dep_file_at: None,
            dep_path: None,
            dep_targets: Vec::new(),
            dep_phony: false,
            dep_missing_generated: false,
            output: None,
            includes: IncludeSearch::default(),
            include_prefix: None,
            macros: Vec::new(),
            forced: Vec::new(),
            file_inputs: Vec::new(),
            tool_prefixes: Vec::new(),
            native_cpu: false,
            color: None,
            debug: false,
            split_dwarf: false,
            stack_usage: false,
            emit_llvm: false,
            too_hard: None,
            informational: None,
            missing_argument: None,
            preprocessor_words: Vec::new(),
            assembler_words: Vec::new(),
            cc1_words: Vec::new(),
        }
    }

    fn too_hard(&mut self, flag: &'static str) {
        self.too_hard.get_or_insert(flag);
    }

    /// Records what `flag` (with `value`, if it takes one) asks for. `carrier` is the flag
    /// that passed it to the preprocessor, assembler or cc1, if any: a word too hard there
    /// is counted under the carrier's name.
    fn apply(
        &mut self,
        flag: &'static Flag,
        value: Option<OsString>,
        carrier: Option<&'static str>,
    ) {
        let value = value.unwrap_or_default();
        let path = || PathBuf::from(value.clone());
        match flag.kind {
            Kind::Pass | Kind::Preprocessor | Kind::DebugModifier => {}
            Kind::Compile => self.compile = true,
            Kind::Assemble => self.assemble = true,
            Kind::Preprocess => self.preprocess = true,
            Kind::DepsOnly => self.deps_only = true,
            // The driver's -MMD wins over its -MD in either order (gcc 12, clang 14).
            Kind::DepFile { system } => {
                self.dep_file = match (self.dep_file, system) {
                    (Some(DepKind::UserHeadersOnly), _) | (_, false) => {
                        Some(DepKind::UserHeadersOnly)
                    }
                    (None | Some(DepKind::AllHeaders), true) => Some(DepKind::AllHeaders),
                }
            }
            // Given to gcc's preprocessor twice, the last one wins (gcc 12). clang's driver
            // reads `-Wp,-MD,PATH` itself (see `read_preprocessor_list`).
            Kind::DepFileAt { system } => {
                self.dep_file_at = Some((dep_kind(system), path(), carrier.unwrap_or(flag.name)));
            }
            Kind::DepPath => self.dep_path = Some(path()),
            Kind::DepTarget { quoted: false } => self.dep_targets.push(DepTarget::Plain(value)),
            Kind::DepTarget { quoted: true } => self.dep_targets.push(DepTarget::Quoted(value)),
            Kind::DepPhony => self.dep_phony = true,
            Kind::DepMissingGenerated => self.dep_missing_generated = true,
            Kind::Output => self.output = Some(path()),
            Kind::Language => {
                self.language = if value == "none" {
                    None
                } else {
                    Some(match Language::from_gcc_name(value.as_bytes()) {
                        Some(language) => XLanguage::Known(language),
                        None => XLanguage::Other(value.to_string_lossy().into_owned()),
                    })
                }
            }
            Kind::Include(dir) => self.include_dir(dir, path()),
            Kind::IncludeBarrier => {
                // The -I directories given so far are searched for "..." only, before every
                // -iquote directory (gcc 12).
                let before = std::mem::take(&mut self.includes.bracket);
                self.includes.quote.splice(0..0, before);
                self.includes.no_source_dir = true;
            }
            Kind::IncludePrefix => self.include_prefix = Some(value),
            Kind::IncludeWithPrefix(dir) => match &self.include_prefix {
                // gcc concatenates, it does not join: `-iprefix /p/ -iwithprefix inc`.
                Some(prefix) => {
                    let dir_path = [prefix.as_bytes(), value.as_bytes()].concat();
                    self.include_dir(dir, PathBuf::from(OsString::from_vec(dir_path)));
                }
                // The default prefix is inside the compiler's installation.
                None => self.too_hard(flag.name),
            },
            Kind::Sysroot => self.includes.sysroot = Some(path()),
            Kind::HeaderSysroot => self.includes.isysroot = Some(path()),
            Kind::NoStd(NoStd::Inc) => self.includes.nostdinc = true,
            Kind::NoStd(NoStd::IncCxx) => self.includes.nostdinc_cxx = true,
            Kind::NoStd(NoStd::LibInc) => self.includes.nostdlibinc = true,
            Kind::NoStd(NoStd::BuiltinInc) => self.includes.nobuiltininc = true,
            Kind::ForcedInclude => self.forced.push(path()),
            Kind::ForcedMacros => self.macros.push(path()),
            Kind::ToolPrefix => self.tool_prefixes.push(path()),
            Kind::Input => self.file_inputs.push(path()),
            Kind::InputIfPath => {
                if value.as_bytes().contains(&b'/') {
                    self.file_inputs.push(path());
                }
            }
            Kind::InputDefault(file) => self.file_inputs.push(PathBuf::from(file)),
            Kind::Debug(on) => self.debug = on,
            Kind::SplitDwarf(on) => self.split_dwarf = on,
            Kind::SplitDwarfMode => match value.as_bytes() {
                b"split" => self.split_dwarf = true,
                b"single" => self.split_dwarf = false,
                _ => {} // The compiler rejects it.
            },
            Kind::StackUsage => self.stack_usage = true,
            Kind::Cpu => self.native_cpu |= value == "native",
            Kind::Color(on) => self.color = Some(on),
            Kind::ColorWhen => match value.as_bytes() {
                b"always" | b"" => self.color = Some(true),
                b"never" => self.color = Some(false),
                b"auto" => self.color = None,
                _ => {} // The compiler rejects it.
            },
            Kind::DiagnosticsFormat => {
                if value.as_bytes().ends_with(b"-file") {
                    // sarif-file, json-file: a file named after the source.
                    self.too_hard(flag.name);
                }
            }
            Kind::EmitLlvm => self.emit_llvm = true,
            Kind::PreprocessorList => self.read_preprocessor_list(&split_commas(&value), flag.name),
            Kind::PreprocessorWord => self.preprocessor_words.push(value),
            Kind::AssemblerList => {
                self.read_words(&split_commas(&value), Passed::Assembler, flag.name)
            }
            Kind::AssemblerWord => self.assembler_words.push(value),
            Kind::Cc1Word => self.cc1_words.push(value),
            Kind::TooHard => self.too_hard(carrier.unwrap_or(flag.name)),
            Kind::Informational => {
                self.informational.get_or_insert(flag.name);
            }
        }
    }

    fn include_dir(&mut self, dir: Dir, path: PathBuf) {
        let list = match dir {
            Dir::Quote => &mut self.includes.quote,
            Dir::Bracket => &mut self.includes.bracket,
            Dir::System => &mut self.includes.system,
            Dir::After => &mut self.includes.after,
            Dir::Framework => &mut self.includes.framework,
            Dir::SystemFramework => &mut self.includes.system_framework,
        };
        list.push(path);
    }

    /// Reads the words of one `-Wp,`.
    fn read_preprocessor_list(&mut self, words: &[OsString], carrier: &'static str) {
        // clang's driver turns exactly `-Wp,-MD[,PATH]` and `-Wp,-MMD[,PATH]` into its
        // own -MD / -MMD [-MF PATH], and hands any other -Wp, word to cc1.
        if self.driver.family == Family::Clang
            && let [first, path @ ..] = words
            && path.len() <= 1
            && let Some((flag, rest)) = flags::lookup(&[flags::GCC], first.as_bytes())
            && rest.is_empty()
            && matches!(flag.kind, Kind::DepFile { .. })
        {
            self.apply(flag, None, Some(carrier));
            if let [path] = path {
                self.dep_path = Some(path.into());
            }
            return;
        }
        self.read_words(words, Passed::Preprocessor, carrier);
    }

    /// Reads words the driver passes on to another program, carried by `carrier`.
    fn read_words(&mut self, words: &[OsString], to: Passed, carrier: &'static str) {
        let table: &'static [Flag] = match (to, self.driver.family) {
            (Passed::Preprocessor, Family::Gcc) => flags::PREPROCESSOR,
            (Passed::Preprocessor, Family::Clang) => flags::CLANG_PREPROCESSOR,
            (Passed::Assembler, _) => flags::ASSEMBLER,
            (Passed::Cc1, _) => flags::CC1,
        };
        for word in Words::new(words, &[table]) {
            match word {
                Word::Known(flag, value) => self.apply(flag, value, Some(carrier)),
                // The preprocessor's options are the ones that matter: one llamacc does
                // not know could add a header it would not see.
                Word::Operand(_) | Word::Unknown | Word::MissingArgument(_) => {
                    if to == Passed::Preprocessor {
                        self.too_hard(carrier);
                    }
                }
            }
        }
    }

    /// Reads the words given one per flag (`-Xpreprocessor`, `-Xassembler`, `-Xclang`).
    fn read_passed_words(&mut self) {
        let preprocessor = std::mem::take(&mut self.preprocessor_words);
        self.read_words(&preprocessor, Passed::Preprocessor, "-Xpreprocessor");
        let assembler = std::mem::take(&mut self.assembler_words);
        self.read_words(&assembler, Passed::Assembler, "-Xassembler");
        let cc1 = std::mem::take(&mut self.cc1_words);
        self.read_words(&cc1, Passed::Cc1, "-Xclang");
    }

    /// The verdict on what `args` asked for.
    fn finish(mut self, args: Vec<OsString>) -> Result<Compilation, LocalReason> {
        if let Some(flag) = self.informational {
            return Err(LocalReason::Informational(flag));
        }
        if self.preprocess || self.deps_only {
            return Err(LocalReason::Preprocess);
        }
        let mode = match (self.assemble, self.compile) {
            (true, _) => Mode::Assembly,
            (false, true) => Mode::Object,
            (false, false) => return Err(LocalReason::Link),
        };
        if let Some(flag) = self.too_hard {
            return Err(LocalReason::TooHard(flag));
        }
        if let Some(flag) = self.missing_argument {
            return Err(LocalReason::MissingArgument(flag));
        }
        let (source, x) = match self.inputs.len() {
            0 => return Err(LocalReason::NoSource),
            1 => self.inputs.pop().expect("one input"),
            _ => return Err(LocalReason::MultipleSources),
        };
        if source.as_os_str() == "-" {
            return Err(LocalReason::StdinSource);
        }
        let language = match x {
            Some(XLanguage::Known(language)) => language,
            Some(XLanguage::Other(name)) => return Err(LocalReason::UnknownLanguage(name)),
            None => {
                let extension = source.extension().unwrap_or_default();
                match Language::from_extension(extension.as_bytes(), self.driver) {
                    Some(language) => language,
                    None => {
                        let name = extension.to_string_lossy().into_owned();
                        return Err(LocalReason::UnknownLanguage(name));
                    }
                }
            }
        };
        if mode == Mode::Assembly && matches!(language, Language::Asm | Language::AsmWithCpp) {
            return Err(LocalReason::NoSource);
        }
        let explicit_output = self.output.is_some();
        let output = match self.output.take() {
            Some(output) => output,
            None => default_output(&source, mode, self.emit_llvm),
        };
        if output.as_os_str() == "-" {
            return Err(LocalReason::StdoutOutput);
        }
        // Cached, an empty name would make the working directory itself the output.
        if output.as_os_str().is_empty() {
            return Err(LocalReason::EmptyOutput("-o"));
        }

        let mut extra_outputs = Vec::new();
        // gcc 12 writes a .dwo even without debug information; clang only with it.
        let dwo = self.split_dwarf
            && match self.driver.family {
                Family::Gcc => true,
                Family::Clang => self.debug,
            };
        if dwo {
            match (mode, self.driver.family) {
                (Mode::Object, _) => extra_outputs.push(output.with_extension("dwo")),
                // gcc splits nothing out of assembly.
                (Mode::Assembly, Family::Gcc) => {}
                // clang 14 writes a .dwo named after the source, in the working directory.
                (Mode::Assembly, Family::Clang) => {
                    return Err(LocalReason::TooHard("-gsplit-dwarf"));
                }
            }
        }
        if self.stack_usage {
            extra_outputs.push(output.with_extension("su"));
        }

        let depfile = self
            .depfile(&output)?
            .filter(|_| language.is_preprocessed_by_compiler());

        let mut forced_includes = std::mem::take(&mut self.macros);
        forced_includes.append(&mut self.forced);

        Ok(Compilation {
            args,
            source,
            language,
            mode,
            output,
            explicit_output,
            depfile,
            extra_outputs,
            includes: self.includes,
            forced_includes,
            file_inputs: self.file_inputs,
            tool_prefixes: self.tool_prefixes,
            native_cpu: self.native_cpu,
            color_diagnostics: self.color,
            has_debug_info: self.debug,
        })
    }

    /// The depfile asked for, named for `output`.
    fn depfile(&mut self, output: &Path) -> Result<Option<DepFile>, LocalReason> {
        let (kind, path, flag) = match (self.dep_file, self.dep_file_at.take()) {
            (None, None) => return Ok(None),
            // Two depfiles, or one written twice: not worth the risk.
            (Some(_), Some((_, _, carrier))) => return Err(LocalReason::TooHard(carrier)),
            (Some(kind), None) => {
                let path = match self.dep_path.take() {
                    Some(path) => path,
                    None => output.with_extension("d"),
                };
                (kind, path, "-MF")
            }
            // Which of -MF and the preprocessor's path gcc's cc1 takes depends on their
            // order in its command line, which the driver decides.
            (None, Some((_, _, carrier))) if self.dep_path.is_some() => {
                return Err(LocalReason::TooHard(carrier));
            }
            (None, Some((kind, path, carrier))) => (kind, path, carrier),
        };
        // gcc cannot open it and fails; cached, the depfile would be the working directory.
        if path.as_os_str().is_empty() {
            return Err(LocalReason::EmptyOutput(flag));
        }
        Ok(Some(DepFile {
            path,
            kind,
            targets: std::mem::take(&mut self.dep_targets),
            phony_targets: self.dep_phony,
            missing_headers_generated: self.dep_missing_generated,
        }))
    }
}

/// The program words are passed to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Passed {
    Preprocessor,
    Assembler,
    Cc1,
}

fn dep_kind(system: bool) -> DepKind {
    if system {
        DepKind::AllHeaders
    } else {
        DepKind::UserHeadersOnly
    }
}

/// The words of `-Wp,a,b,c`: the driver splits at every comma.
fn split_commas(value: &OsStr) -> Vec<OsString> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(|w| OsString::from_vec(w.to_vec()))
        .collect()
}

/// The output gcc and clang write without `-o`: the source's file name, its extension
/// replaced, in the working directory.
fn default_output(source: &Path, mode: Mode, emit_llvm: bool) -> PathBuf {
    let extension = match (mode, emit_llvm) {
        (Mode::Object, false) => "o",
        (Mode::Assembly, false) => "s",
        (Mode::Object, true) => "bc",
        (Mode::Assembly, true) => "ll",
    };
    let mut name = source.file_stem().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests;
