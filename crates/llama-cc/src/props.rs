//! Property tests of the parsers that read what a build hands llamacc: command lines (with
//! the real flag tables), `@file`s and depfiles. None may panic, loop or grow without
//! bound on any input; what they accept must mean one consistent thing.
//!
//! Bounded: each property runs a fixed number of cases (`CASES`), the whole module well
//! under 30 s on two cores in a debug build.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::args;
use crate::compilation::{Driver, Family, LocalReason, Mode, Verdict};
use crate::depfile::{prerequisites, rewrap};
use crate::flags;
use crate::remote_args::{ROOT_PLACEHOLDER, remote_args};
use crate::response_file::{expand, split};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // A failure is shrunk, but not for ever.
        max_shrink_iters: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Every flag name both tables know, as spelled up to its joined argument.
fn flag_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = flags::GCC
        .iter()
        .chain(flags::CLANG.iter())
        .map(|f| f.name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Values a flag or an operand may carry: sources of every language, outputs, odd paths.
const VALUES: &[&str] = &[
    "a.c",
    "b.cc",
    "src/c.cpp",
    "d.s",
    "e.S",
    "f.i",
    "g.h",
    "/abs/h.c",
    "x.o",
    "out/y.o",
    "/abs/out/z.o",
    "-",
    "",
    "c",
    "c++",
    "assembler",
    "none",
    "dir",
    "a=b",
    "-c",
    "-S",
    "-E",
    "-o",
    "-x",
    "-MD",
    "-MF",
    "-g",
    "-O2",
    "..",
    "sym/../x.o",
];

/// One word of a command line: a real flag, a flag with a value joined, a value, a
/// `--long=value`, or arbitrary bytes (non-UTF-8 among them). No `@file`: those read the
/// file system, and have their own properties below.
fn word() -> impl Strategy<Value = OsString> {
    let names = flag_names();
    prop_oneof![
        4 => prop::sample::select(names.clone()).prop_map(OsString::from),
        2 => (prop::sample::select(names), prop::sample::select(VALUES))
            .prop_map(|(f, v)| OsString::from(format!("{f}{v}"))),
        4 => prop::sample::select(VALUES).prop_map(OsString::from),
        1 => prop::collection::vec(any::<u8>(), 0..6)
            .prop_filter("no @file", |b| b.first() != Some(&b'@'))
            .prop_map(OsString::from_vec),
    ]
}

/// Ways to name the output, each with the words that say it.
const OUTPUTS: &[&[&str]] = &[
    &[],
    &["-o", "x.o"],
    &["-oout/y.o"],
    &["-o", "/abs/out/z.o"],
    &["--output=w.o"],
    &["--output", "v.o"],
    &["-o", "sym/../x.o"],
    &["-o", "-"],
    &["-o", "a.o", "-o", "b.o"],
];

/// Depfile and other extra-output options.
const EXTRAS: &[&[&str]] = &[
    &[],
    &["-MD"],
    &["-MMD", "-MP"],
    &["-MD", "-MF", "deps/x.d"],
    &["-MMD", "-MFdeps/y.d", "-MT", "t.o"],
    &["-Wp,-MD,deps/.x.d"],
    &["-gsplit-dwarf"],
    &["-g", "-gsplit-dwarf", "-MD"],
    &["-fstack-usage"],
    &["-O2", "-g", "-Iinclude", "-DX=1"],
];

/// A command line that is often a compile: a source, `-c` or `-S`, some spelling of the
/// output and of the depfile, and a few words from the whole vocabulary around them.
fn argv() -> impl Strategy<Value = Vec<OsString>> {
    (
        prop::collection::vec(word(), 0..4),
        prop::sample::select(&["-c", "-S", "-c", ""][..]),
        prop::sample::select(OUTPUTS),
        prop::sample::select(EXTRAS),
        prop::sample::select(&["a.c", "b.cc", "d.s", "e.S", "/abs/h.c", "src/c.cpp"][..]),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(noise, mode, output, extras, source, at)| {
            let mut words: Vec<OsString> = std::iter::once(mode)
                .filter(|m| !m.is_empty())
                .chain(output.iter().copied())
                .chain(extras.iter().copied())
                .chain(std::iter::once(source))
                .map(OsString::from)
                .collect();
            for w in noise {
                let i = at.index(words.len() + 1);
                words.insert(i, w);
            }
            words
        })
}

fn driver() -> impl Strategy<Value = Driver> {
    (any::<bool>(), any::<bool>()).prop_map(|(clang, cxx)| Driver {
        family: if clang { Family::Clang } else { Family::Gcc },
        cxx,
    })
}

/// Whether `needle` ends one of `args` (a value given separately, or joined to its flag).
fn ends_an_argument(args: &[OsString], needle: &Path) -> bool {
    let needle = needle.as_os_str().as_bytes();
    args.iter().any(|a| a.as_bytes().ends_with(needle))
}

/// The remote command line as the remote wrapper leaves it, with the root at `/R`.
fn unplaceholder(args: &[OsString]) -> Vec<OsString> {
    let placeholder = ROOT_PLACEHOLDER.as_bytes();
    args.iter()
        .map(|a| {
            let bytes = a.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(placeholder) {
                    out.extend_from_slice(b"/R");
                    i += placeholder.len();
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            OsString::from_vec(out)
        })
        .collect()
}

proptest! {
    #![proptest_config(config(2_000))]

    /// The parser never panics, says the same twice, and a compile it accepts writes one
    /// output named on the command line (or gcc's default, in the working directory), reads
    /// a source named there, and keeps the arguments as given.
    #[test]
    fn parse_is_total_and_a_compile_is_consistent(args in argv(), driver in driver()) {
        let cwd = Path::new("/nonexistent/cwd");
        let verdict = args::parse(&args, cwd, driver);
        prop_assert_eq!(&verdict, &args::parse(&args, cwd, driver));
        let Verdict::Compile(c) = verdict else {
            return Ok(());
        };
        prop_assert_eq!(&c.args, &args);
        prop_assert!(matches!(c.mode, Mode::Object | Mode::Assembly));
        prop_assert!(!c.output.as_os_str().is_empty(), "empty output");
        prop_assert!(c.output != Path::new("-"), "standard output cached");
        prop_assert!(ends_an_argument(&args, &c.source), "source {:?} not in argv", c.source);
        if c.explicit_output {
            prop_assert!(ends_an_argument(&args, &c.output), "output {:?} not in argv", c.output);
        } else {
            prop_assert_eq!(c.output.parent(), Some(Path::new("")), "default output not in cwd");
        }
        if let Some(dep) = &c.depfile {
            prop_assert!(!dep.path.as_os_str().is_empty(), "empty depfile path");
        }
        for extra in &c.extra_outputs {
            prop_assert!(!extra.as_os_str().is_empty(), "empty extra output");
        }
    }

    /// What a remote compiler is told writes the same output and reads the same source:
    /// relative names as given, absolute ones under the root.
    #[test]
    fn remote_arguments_keep_the_output(args in argv(), driver in driver()) {
        let cwd = Path::new("/nonexistent/cwd");
        let Verdict::Compile(c) = args::parse(&args, cwd, driver) else {
            return Ok(());
        };
        let Ok(remote) = remote_args(&c.args, driver) else {
            return Ok(());
        };
        let under_root = |p: &Path| -> PathBuf {
            match p.strip_prefix("/") {
                Ok(rel) => Path::new("/R").join(rel),
                Err(_) => p.to_path_buf(),
            }
        };
        let rebased = unplaceholder(&remote.rebased);
        let Verdict::Compile(r) = args::parse(&rebased, cwd, driver) else {
            return Err(TestCaseError::fail(format!("remote args {rebased:?} are not a compile")));
        };
        prop_assert_eq!(r.output, under_root(&c.output));
        prop_assert_eq!(r.source, under_root(&c.source));
        prop_assert_eq!(r.mode, c.mode);
        // The discovery run writes no output of the user's.
        if let Verdict::Compile(d) = args::parse(&remote.discovery, cwd, driver) {
            prop_assert!(!d.explicit_output, "discovery names an output: {:?}", remote.discovery);
        }
    }

    /// Any bytes split without panicking; every argument comes back from its quoted form,
    /// whichever quoting a build tool chose.
    #[test]
    fn response_file_split_round_trips(
        noise in prop::collection::vec(any::<u8>(), 0..64),
        args in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..12), 0..8),
        style in 0..3u8,
    ) {
        let _ = split(&noise);
        let mut text = Vec::new();
        for arg in &args {
            match style {
                // Every byte escaped.
                0 => arg.iter().for_each(|b| text.extend([b'\\', *b])),
                // Double quotes, with `"` and `\` escaped.
                1 => {
                    text.push(b'"');
                    for b in arg {
                        if matches!(b, b'"' | b'\\') {
                            text.push(b'\\');
                        }
                        text.push(*b);
                    }
                    text.push(b'"');
                }
                // Single quotes, the same.
                _ => {
                    text.push(b'\'');
                    for b in arg {
                        if matches!(b, b'\'' | b'\\') {
                            text.push(b'\\');
                        }
                        text.push(*b);
                    }
                    text.push(b'\'');
                }
            }
            text.extend_from_slice(b" \n\t");
        }
        let want: Vec<OsString> = args.into_iter().map(OsString::from_vec).collect();
        prop_assert_eq!(split(&text), want);
    }
}

/// A response file's text: words, some of them `@file`s naming the set's files (cycles
/// and fan-out included), some quoted or escaped.
fn rsp_text(files: usize) -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        3 => (0..files).prop_map(|i| format!("@r{i}").into_bytes()),
        1 => Just(b"@missing".to_vec()),
        3 => prop::sample::select(VALUES).prop_map(|v| v.as_bytes().to_vec()),
        1 => Just(b"'quoted @r0 word'".to_vec()),
        1 => Just(b"\"unterminated".to_vec()),
        1 => Just(b"back\\".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(token, 0..5).prop_map(|tokens| tokens.join(&b' '))
}

proptest! {
    #![proptest_config(config(500))]

    /// `@file`s that name each other, themselves, missing files or garbage: expansion ends,
    /// and either yields the words or names the file it could not take.
    #[test]
    fn nested_response_files_end(
        texts in prop::collection::vec(rsp_text(4), 4),
        start in 0..4usize,
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (i, text) in texts.iter().enumerate() {
            std::fs::write(dir.path().join(format!("r{i}")), text)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        let args = vec![OsString::from("-c"), OsString::from(format!("@r{start}"))];
        match expand(&args, dir.path()) {
            Ok(words) => prop_assert!(words.len() <= MAX_WORDS, "{} words", words.len()),
            Err(LocalReason::ResponseFileUnreadable(_))
            | Err(LocalReason::ResponseFileTooDeep(_))
            | Err(LocalReason::ResponseFileTooLarge(_)) => {}
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
        // The parser on top of it cannot do worse.
        let _ = args::parse(&args, dir.path(), Family::Gcc);
    }
}

/// At most what [`crate::response_file`] lets a command line grow to.
const MAX_WORDS: usize = crate::response_file::MAX_WORDS;

/// A name as gcc writes it in a depfile: `\ ` for a space, `\#` for `#`, `$$` for `$`.
fn escape_make(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        match c {
            ' ' => out.push_str("\\ "),
            '#' => out.push_str("\\#"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

proptest! {
    #![proptest_config(config(2_000))]

    /// Any text: no panic, and re-wrapping a depfile never changes what it lists.
    #[test]
    fn depfile_parsing_is_total(text in "(?s)[a-z./:\\\\ \t\r\n#$-]{0,120}") {
        let listed = prerequisites(&text);
        for family in [Family::Gcc, Family::Clang] {
            let _ = rewrap(&text, family);
            if text.starts_with(|c: char| c.is_ascii_alphabetic()) && !text.contains('\r') {
                prop_assert_eq!(prerequisites(&rewrap(&text, family)), listed.clone());
            }
        }
    }

    /// Arbitrary bytes (lossily decoded, as the service reads depfiles): no panic.
    #[test]
    fn depfile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = prerequisites(&text);
        let _ = rewrap(&text, Family::Gcc);
        let _ = rewrap(&text, Family::Clang);
    }

    /// What gcc writes (a rule wrapped at its width, `-MP`'s phony rules after it) reads
    /// back as the names it was written from, and wrapping again changes nothing.
    #[test]
    fn depfile_round_trips(
        names in prop::collection::vec("[a-zA-Z0-9_./+# $-]{1,30}", 1..12),
        phony in any::<bool>(),
    ) {
        let names: Vec<String> = names
            .into_iter()
            .filter(|n| !n.trim().is_empty() && n.trim() == n)
            .collect();
        let mut line = String::from("obj/x.o:");
        for n in &names {
            line.push(' ');
            line.push_str(&escape_make(n));
        }
        for family in [Family::Gcc, Family::Clang] {
        let mut text = rewrap(&line, family);
        if phony {
            for n in names.iter().skip(1) {
                text.push_str(&format!("\n{}:\n", escape_make(n)));
            }
        }
        // Deduplicated as written: `a/` and `a` are one `Path` but two words.
        let mut want: Vec<&String> = Vec::new();
        for n in &names {
            if !want.contains(&n) {
                want.push(n);
            }
        }
        let got: Vec<String> = prerequisites(&text)
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        prop_assert_eq!(got.iter().collect::<Vec<_>>(), want.clone());
        prop_assert_eq!(rewrap(&text, family), text);
        }
    }
}

// See: issue 12, the fuzzing suite: `parse_is_total_and_a_compile_is_consistent` found an
// empty `-o` accepted as a cacheable compile whose output is the working directory itself.
#[test]
fn r12_empty_output_runs_the_compiler() {
    let args: Vec<OsString> = ["-c", "a.c", "-o", ""].iter().map(OsString::from).collect();
    for family in [Family::Gcc, Family::Clang] {
        assert_eq!(
            args::parse(&args, Path::new("/nonexistent"), family),
            Verdict::Local(LocalReason::EmptyOutput("-o"))
        );
    }
}

// See: issue 12, the fuzzing suite: `@file`s that each name the next one twice were read
// 2^depth times (a billion reads for 30 files) before anything said no.
#[test]
fn r12_response_files_fanning_out_stop() {
    let dir = tempfile::tempdir().expect("temp dir");
    const LEVELS: usize = 30;
    for i in 0..LEVELS {
        let text = if i + 1 == LEVELS {
            "-c".to_string()
        } else {
            format!("@r{n} @r{n}", n = i + 1)
        };
        std::fs::write(dir.path().join(format!("r{i}")), text).expect("write a response file");
    }
    let cwd = dir.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(expand(&[OsString::from("@r0")], &cwd));
    });
    let expanded = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("expansion still running after 20 s");
    assert!(
        matches!(expanded, Err(LocalReason::ResponseFileTooLarge(_))),
        "{:?}",
        expanded.map(|w| w.len())
    );
}
