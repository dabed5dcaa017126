//! A compile's arguments for a machine that has its inputs under another directory.
//!
//! A remote executor materialises the inputs (sources, headers, the toolchain) at their
//! absolute paths below a directory it picks, `R`. The remote command line names `R` with a
//! placeholder that the remote wrapper replaces: every absolute path the compiler reads or
//! writes gets it as a prefix. Paths that are only text (`-MT` targets, macro values) keep
//! their spelling. Arguments that would make the compiler look outside the shipped inputs
//! (a user `--sysroot`, `-B`, `-march=native`) keep the compile local, with the reason.
//!
//! The same walk gives the local discovery command: the arguments without the outputs and
//! depfile flags, to which the caller appends `-M -MF FILE`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::compilation::{Driver, Family};
use crate::flags::{self, Flag, Kind, Word, Words};

/// Replaced by the remote wrapper with the directory the inputs landed in.
pub const ROOT_PLACEHOLDER: &str = "@LLAMA_ROOT@";

/// What a flag's value is, for a remote run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not a path: left alone.
    Text,
    /// A path the compiler opens: an absolute one is moved under the root.
    Path,
    /// The compiler would look outside the shipped inputs: compile locally.
    Refuse,
}

/// How each kind of flag's value is treated remotely.
fn role(kind: Kind) -> Role {
    match kind {
        Kind::Output
        | Kind::Include(_)
        | Kind::IncludePrefix
        | Kind::DepPath
        | Kind::ForcedInclude
        | Kind::ForcedMacros
        | Kind::Input
        | Kind::InputIfPath => Role::Path,
        Kind::Sysroot | Kind::HeaderSysroot | Kind::ToolPrefix => Role::Refuse,
        _ => Role::Text,
    }
}

/// Flags whose value is `OLD=NEW` with a path to map: OLD moves under the root, so the
/// user's mapping still applies to what the remote compiler sees.
const PREFIX_MAPS: &[&str] = &[
    "-fdebug-prefix-map=",
    "-ffile-prefix-map=",
    "-fmacro-prefix-map=",
    "-fprofile-prefix-map=",
];

/// Depfile words passed to the preprocessor with `-Wp,`, dropped from the discovery run.
const PREPROCESSOR_DEP_WORDS: &[&str] = &["-MD", "-MMD", "-MF", "-MT", "-MQ", "-MP"];

/// The two command lines derived from a compile's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteArgs {
    /// The arguments for the remote compiler, absolute paths under [`ROOT_PLACEHOLDER`].
    pub rebased: Vec<OsString>,
    /// The arguments for the local dependency discovery: no output, no depfile flags.
    pub discovery: Vec<OsString>,
    /// [`RemoteArgs::rebased`] without the depfile flags, for compiling text preprocessed
    /// here (whose preprocessor wrote the depfile).
    pub without_depfile: Vec<OsString>,
    /// Where the source operand is in [`RemoteArgs::without_depfile`].
    pub operand: Option<usize>,
}

/// Derives the remote and discovery command lines, or says why the compile must stay
/// local (naming the flag).
pub(crate) fn remote_args(args: &[OsString], driver: Driver) -> Result<RemoteArgs, String> {
    let tables: &[&'static [Flag]] = match driver.family {
        Family::Gcc => &[flags::GCC],
        Family::Clang => &[flags::CLANG, flags::GCC],
    };
    let mut words = Words::new(args, tables);
    if driver.family == Family::Gcc {
        words = words.with_gnu_long_options();
    }
    let mut out = RemoteArgs {
        rebased: Vec::with_capacity(args.len() + 4),
        discovery: Vec::with_capacity(args.len()),
        without_depfile: Vec::new(),
        operand: None,
    };
    let mut macro_maps = Vec::new();
    // Whether each word of `out.rebased` is a depfile flag's, and where the operand is.
    let mut of_depfile: Vec<bool> = Vec::with_capacity(args.len() + 4);
    let mut operand = None;
    loop {
        let start = words.position();
        let Some(word) = words.next() else { break };
        let span = &args[start..words.position()];
        let depfile_flag = matches!(word, Word::Known(flag, ref value)
            if is_depfile_flag(flag.kind, value.as_ref().unwrap_or(&OsString::new())));
        if matches!(word, Word::Operand(_)) {
            operand = Some(out.rebased.len());
        }
        match word {
            Word::Operand(_) => {
                out.rebased.push(rebase(&span[0]));
                out.discovery.push(span[0].clone());
            }
            Word::Known(flag, value) => {
                let value = value.unwrap_or_default();
                let rebased = match role(flag.kind) {
                    Role::Refuse => return Err(format!("{} names another toolchain", flag.name)),
                    Role::Path if is_absolute(&value) => rebase_value(span, &value),
                    Role::Path | Role::Text => {
                        check_text(flag, span, &value)?;
                        if let Some(reason) = TOO_HARD_REMOTELY
                            .iter()
                            .find(|(f, _)| span[0].as_bytes().starts_with(f.as_bytes()))
                            .map(|(f, why)| format!("{f} {why}"))
                        {
                            return Err(reason);
                        }
                        match span {
                            [word] => match prefix_map(word) {
                                Some(mapped) => {
                                    push_prefix_map(&mut out.rebased, &mut macro_maps, mapped);
                                    Vec::new()
                                }
                                None => vec![word.clone()],
                            },
                            _ => span.to_vec(),
                        }
                    }
                };
                out.rebased.extend(rebased);
                if !dropped_from_discovery(flag.kind, &value) {
                    out.discovery.extend(span.iter().cloned());
                }
            }
            Word::MissingArgument(flag) => return Err(format!("{} lacks its argument", flag.name)),
            Word::Unknown => {
                if let Some(word) = prefix_map(&span[0]) {
                    push_prefix_map(&mut out.rebased, &mut macro_maps, word);
                    out.discovery.push(span[0].clone());
                    continue;
                }
                if let Some(reason) = TOO_HARD_REMOTELY
                    .iter()
                    .find(|(flag, _)| span[0].as_bytes().starts_with(flag.as_bytes()))
                    .map(|(flag, why)| format!("{flag} {why}"))
                {
                    return Err(reason);
                }
                if mentions_absolute_path(span[0].as_bytes()) {
                    return Err(format!(
                        "{} names an absolute path",
                        span[0].to_string_lossy()
                    ));
                }
                out.rebased.push(span[0].clone());
                out.discovery.push(span[0].clone());
            }
        }
        of_depfile.resize(out.rebased.len(), depfile_flag);
    }
    for (i, word) in out.rebased.iter().enumerate() {
        if Some(i) == operand {
            out.operand = Some(out.without_depfile.len());
        }
        if !of_depfile[i] {
            out.without_depfile.push(word.clone());
        }
    }
    out.without_depfile.extend(macro_maps.iter().cloned());
    out.rebased.extend(macro_maps);
    Ok(out)
}

/// Flags whose output names paths that no prefix map reaches (so a remote object would
/// differ from a local one), with why.
const TOO_HARD_REMOTELY: &[(&str, &str)] = &[
    ("--coverage", "bakes the .gcda path into the object"),
    ("-fprofile-arcs", "bakes the .gcda path into the object"),
    (
        "-ftest-coverage",
        "records the working directory in the .gcno",
    ),
    ("-flto", "streams the unmapped file names"),
    // clang runs these as programs of their own, which are not shipped.
    ("-fno-integrated-as", "runs the system assembler"),
    (
        "-fno-integrated-cc1",
        "runs the compiler as a second process",
    ),
    ("-no-integrated-as", "runs the system assembler"),
];

/// Adds a user's rebased prefix map. A `-ffile-prefix-map` becomes a `-fdebug-prefix-map`
/// in its place and a `-fmacro-prefix-map` after every argument: gcc lets a
/// `-ffile-prefix-map` beat every `-fmacro-prefix-map` for `__FILE__` (ours included),
/// while among maps of one kind the last one given wins, as it does locally.
fn push_prefix_map(rebased: &mut Vec<OsString>, macro_maps: &mut Vec<OsString>, map: OsString) {
    match map.as_bytes().strip_prefix(b"-ffile-prefix-map=") {
        Some(rest) => {
            for (flag, list) in [
                ("-fdebug-prefix-map=", &mut *rebased),
                ("-fmacro-prefix-map=", &mut *macro_maps),
            ] {
                let mut word = flag.as_bytes().to_vec();
                word.extend_from_slice(rest);
                list.push(OsString::from_vec(word));
            }
        }
        None => rebased.push(map),
    }
}

fn is_absolute(value: &OsString) -> bool {
    value.as_bytes().first() == Some(&b'/')
}

/// An absolute path moved under the root; anything else unchanged.
fn rebase(word: &OsString) -> OsString {
    if is_absolute(word) {
        let mut out = OsString::from(ROOT_PLACEHOLDER);
        out.push(word);
        out
    } else {
        word.clone()
    }
}

/// The flag's words with its (absolute) value moved under the root, keeping the spelling:
/// `-I /x`, `-I/x`, `--include=/x`.
fn rebase_value(span: &[OsString], value: &OsString) -> Vec<OsString> {
    match span {
        [flag, separate] => vec![flag.clone(), rebase(separate)],
        [joined] => {
            let bytes = joined.as_bytes();
            let head = &bytes[..bytes.len() - value.len()];
            let mut word = head.to_vec();
            word.extend_from_slice(ROOT_PLACEHOLDER.as_bytes());
            word.extend_from_slice(value.as_bytes());
            vec![OsString::from_vec(word)]
        }
        _ => span.to_vec(),
    }
}

/// `-fdebug-prefix-map=/old=new` with `/old` moved under the root.
fn prefix_map(word: &OsString) -> Option<OsString> {
    let bytes = word.as_bytes();
    let name = PREFIX_MAPS
        .iter()
        .find(|n| bytes.starts_with(n.as_bytes()))?;
    let rest = &bytes[name.len()..];
    if rest.first() != Some(&b'/') {
        return None;
    }
    let mut out = name.as_bytes().to_vec();
    out.extend_from_slice(ROOT_PLACEHOLDER.as_bytes());
    out.extend_from_slice(rest);
    Some(OsString::from_vec(out))
}

/// Refuses flags that pass words on to other programs with an absolute path among them
/// (`-Wp,-include,/x`, `-Wa,-I/x`), and `-march=native` (the remote CPU is another).
fn check_text(flag: &Flag, span: &[OsString], value: &OsString) -> Result<(), String> {
    match flag.kind {
        Kind::Cpu if value == "native" => {
            Err(format!("{}native depends on this machine's CPU", flag.name))
        }
        Kind::PreprocessorList
        | Kind::PreprocessorWord
        | Kind::AssemblerList
        | Kind::AssemblerWord
        | Kind::Cc1Word
            if span.iter().any(|w| passes_absolute_path(w.as_bytes())) =>
        {
            Err(format!("{} passes an absolute path on", flag.name))
        }
        _ => Ok(()),
    }
}

/// Whether a flag's words name an absolute path: one starts with `/`, or has one after
/// `=` or `,`.
fn mentions_absolute_path(word: &[u8]) -> bool {
    word.first() == Some(&b'/') || word.windows(2).any(|w| matches!(w, [b'=' | b',', b'/']))
}

/// Whether words passed on to another program (`-Wa,-I/x`, `-Xclang /x`) name an absolute
/// path: a comma-separated part that is one, or a flag joined to one.
fn passes_absolute_path(word: &[u8]) -> bool {
    word.split(|b| *b == b',')
        .any(|part| match part.iter().position(|b| *b == b'/') {
            Some(0) => true,
            Some(i) => part[0] == b'-' && !part[..i].contains(&b'.'),
            None => false,
        })
}

/// The discovery run writes its own depfile and no output.
fn dropped_from_discovery(kind: Kind, value: &OsString) -> bool {
    kind == Kind::Output || is_depfile_flag(kind, value)
}

/// Whether a flag asks for a depfile or shapes it (`-MD`, `-MF`, `-MT`, `-Wp,-MD,...`).
fn is_depfile_flag(kind: Kind, value: &OsString) -> bool {
    match kind {
        Kind::DepFile { .. }
        | Kind::DepFileAt { .. }
        | Kind::DepPath
        | Kind::DepTarget { .. }
        | Kind::DepPhony
        | Kind::DepMissingGenerated => true,
        Kind::PreprocessorList => value
            .to_string_lossy()
            .split(',')
            .any(|w| PREPROCESSOR_DEP_WORDS.contains(&w)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str) -> Result<(String, String), String> {
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        let out = remote_args(&args, Driver::c(Family::Gcc))?;
        let join = |v: &[OsString]| {
            v.iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        Ok((join(&out.rebased), join(&out.discovery)))
    }

    #[test]
    fn text_preprocessed_here_compiles_without_the_depfile_flags() {
        let line = "-c -MD -MF obj/x.d -MT x.o -Wp,-MMD,y.d -I/inc /src/x.c -o x.o -MP";
        let args: Vec<OsString> = line.split(' ').map(OsString::from).collect();
        let out = remote_args(&args, Driver::c(Family::Gcc)).unwrap();
        let words: Vec<String> = out
            .without_depfile
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            words,
            [
                "-c",
                "-I@LLAMA_ROOT@/inc",
                "@LLAMA_ROOT@/src/x.c",
                "-o",
                "x.o"
            ]
        );
        assert_eq!(out.operand, Some(2));
    }

    #[test]
    fn absolute_paths_move_under_the_root_and_text_stays() {
        let (rebased, discovery) = run(
            "-O2 -I/src/inc -I rel -isystem /opt/x -include /src/cfg.h -DDIR=\"/usr/share\" \
             -MMD -MF /src/obj/a.d -MT /src/obj/a.o -c /src/a.c -o /src/obj/a.o",
        )
        .unwrap();
        assert_eq!(
            rebased,
            "-O2 -I@LLAMA_ROOT@/src/inc -I rel -isystem @LLAMA_ROOT@/opt/x \
             -include @LLAMA_ROOT@/src/cfg.h -DDIR=\"/usr/share\" -MMD -MF @LLAMA_ROOT@/src/obj/a.d \
             -MT /src/obj/a.o -c @LLAMA_ROOT@/src/a.c -o @LLAMA_ROOT@/src/obj/a.o"
        );
        assert_eq!(
            discovery,
            "-O2 -I/src/inc -I rel -isystem /opt/x -include /src/cfg.h -DDIR=\"/usr/share\" -c /src/a.c"
        );
    }

    #[test]
    fn relative_command_lines_are_unchanged() {
        let (rebased, discovery) = run("-O2 -Wall -c lapi.c -o lapi.o -Wp,-MMD,lapi.d").unwrap();
        assert_eq!(rebased, "-O2 -Wall -c lapi.c -o lapi.o -Wp,-MMD,lapi.d");
        assert_eq!(discovery, "-O2 -Wall -c lapi.c");
    }

    #[test]
    fn clangs_own_second_processes_stay_local() {
        for flag in [
            "-fno-integrated-as",
            "-no-integrated-as",
            "-fno-integrated-cc1",
        ] {
            let args: Vec<OsString> = ["-c", flag, "a.c"].map(OsString::from).to_vec();
            let err = remote_args(&args, Driver::c(Family::Clang)).unwrap_err();
            assert!(err.starts_with(flag), "{err}");
        }
    }

    #[test]
    fn user_prefix_maps_follow_the_root() {
        let (rebased, _) = run("-ffile-prefix-map=/src=. -c a.c").unwrap();
        assert_eq!(
            rebased,
            "-fdebug-prefix-map=@LLAMA_ROOT@/src=. -c a.c -fmacro-prefix-map=@LLAMA_ROOT@/src=."
        );
        let (rebased, _) = run("-fdebug-prefix-map=/src=. -c a.c").unwrap();
        assert_eq!(rebased, "-fdebug-prefix-map=@LLAMA_ROOT@/src=. -c a.c");
    }

    #[test]
    fn another_toolchain_or_this_cpu_stays_local() {
        for line in [
            "-fplugin-arg-x-path=/opt/y -c a.c",
            "-flto -c a.c",
            "--coverage -c a.c",
            "--sysroot=/opt/sdk -c a.c",
            "-B/opt/bin -c a.c",
            "-march=native -c a.c",
            "-Wa,-I/opt/inc -c a.s",
        ] {
            assert!(run(line).is_err(), "{line}: {:?}", run(line));
        }
    }
}
