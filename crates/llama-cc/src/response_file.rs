//! `@file` arguments: a file of further arguments, read before any flag is looked at.
//!
//! gcc (libiberty's `expandargv`) and clang (LLVM's GNU tokenizer) agree on the syntax:
//! arguments are separated by whitespace; single or double quotes keep whitespace inside an
//! argument; a backslash makes the next character literal, inside quotes too; a file may
//! name further `@file`s, and every relative name, nested or not, is relative to the
//! working directory. Because expansion comes before option parsing, an `@file` is expanded
//! wherever it stands, even as the value of `-o`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::compilation::{LocalReason, MAX_RESPONSE_FILES as MAX_FILES};
// Re-exported: the property tests bound the expansion by it.
pub(crate) use crate::compilation::MAX_WORDS;

/// How deep `@file`s may nest. gcc stops after 2,000 files; clang detects cycles. Both
/// then fail, so any limit that real builds never reach will do.
const MAX_DEPTH: usize = 32;

/// `args` with every `@file` replaced by the arguments the file holds.
///
/// An `@file` that cannot be read is left in place by the compilers, which then fail on
/// it; llamacc runs them directly so that they do.
pub(crate) fn expand(args: &[OsString], cwd: &Path) -> Result<Vec<OsString>, LocalReason> {
    let mut out = Vec::with_capacity(args.len());
    let mut files_read = 0;
    expand_into(args, cwd, 0, &mut files_read, &mut out)?;
    Ok(out)
}

fn expand_into(
    args: &[OsString],
    cwd: &Path,
    depth: usize,
    files_read: &mut usize,
    out: &mut Vec<OsString>,
) -> Result<(), LocalReason> {
    for arg in args {
        let Some(name) = arg.as_bytes().strip_prefix(b"@") else {
            if out.len() == MAX_WORDS {
                return Err(LocalReason::ResponseFileTooLarge(PathBuf::from(arg)));
            }
            out.push(arg.clone());
            continue;
        };
        let name = PathBuf::from(OsString::from_vec(name.to_vec()));
        if depth == MAX_DEPTH {
            return Err(LocalReason::ResponseFileTooDeep(name));
        }
        if *files_read == MAX_FILES {
            return Err(LocalReason::ResponseFileTooLarge(name));
        }
        *files_read += 1;
        let contents = match std::fs::read(cwd.join(&name)) {
            Ok(contents) => contents,
            Err(_) => return Err(LocalReason::ResponseFileUnreadable(name)),
        };
        expand_into(&split(&contents), cwd, depth + 1, files_read, out)?;
    }
    Ok(())
}

/// The arguments in the text of a response file.
pub(crate) fn split(text: &[u8]) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut bytes = text.iter().copied().peekable();
    loop {
        while bytes.next_if(|b| is_space(*b)).is_some() {}
        if bytes.peek().is_none() {
            return args;
        }
        let mut arg = Vec::new();
        let mut quote = None;
        while let Some(b) = bytes.next() {
            match (quote, b) {
                (_, b'\\') => {
                    if let Some(escaped) = bytes.next() {
                        arg.push(escaped);
                    }
                }
                (Some(q), b) if b == q => quote = None,
                (Some(_), b) => arg.push(b),
                (None, b'\'' | b'"') => quote = Some(b),
                (None, b) if is_space(b) => break,
                (None, b) => arg.push(b),
            }
        }
        args.push(OsString::from_vec(arg));
    }
}

/// C's `isspace` in the C locale, which both tokenizers use.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(text: &str) -> Vec<String> {
        split(text.as_bytes())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn splits_on_whitespace() {
        assert_eq!(
            strings(" -c\ta.c\n-o\r\n a.o \x0b\x0c"),
            ["-c", "a.c", "-o", "a.o"]
        );
        assert!(strings("").is_empty());
        assert!(strings(" \n\t").is_empty());
    }

    #[test]
    fn quotes_keep_whitespace_and_join_with_neighbours() {
        assert_eq!(strings(r#"-o "sp ace.o" 'a b'"#), ["-o", "sp ace.o", "a b"]);
        assert_eq!(
            strings(r#"-DX="1 2"3 ab''cd -DE='' """#),
            ["-DX=1 23", "abcd", "-DE=", ""]
        );
        assert_eq!(strings(r#"'say "hi"' "it's""#), [r#"say "hi""#, "it's"]);
        // An unterminated quote runs to the end.
        assert_eq!(strings("'a b"), ["a b"]);
    }

    #[test]
    fn backslash_escapes_everywhere() {
        // These spellings produced these names with gcc 12 and clang 14.
        assert_eq!(
            strings(r"back\ slash.o -DX=a\\b"),
            ["back slash.o", r"-DX=a\b"]
        );
        assert_eq!(
            strings(r#""x\y.o" 'x\y.o' 'q\'x'"#),
            ["xy.o", "xy.o", "q'x"]
        );
        assert_eq!(strings("a\\\nb"), ["a\nb"]);
        assert_eq!(strings("a\\"), ["a"]);
    }

    #[test]
    fn expands_nested_files_relative_to_cwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/outer"), "-c @inner 'x y.c'").unwrap();
        // Nested names are relative to the working directory, not to the file naming them.
        std::fs::write(dir.path().join("inner"), "-o r.o").unwrap();
        std::fs::write(dir.path().join("d/inner"), "-o wrong.o").unwrap();
        std::fs::write(dir.path().join("empty"), "").unwrap();
        let args: Vec<OsString> = ["-O2", "@d/outer", "@empty", "-g"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let expanded = expand(&args, dir.path()).unwrap();
        assert_eq!(expanded, ["-O2", "-c", "-o", "r.o", "x y.c", "-g"]);
    }

    #[test]
    fn absolute_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("args");
        std::fs::write(&file, "-c a.c").unwrap();
        let mut at = OsString::from("@");
        at.push(&file);
        assert_eq!(
            expand(&[at], Path::new("/nonexistent")).unwrap(),
            ["-c", "a.c"]
        );
    }

    #[test]
    fn unreadable_and_looping_files() {
        let dir = tempfile::tempdir().unwrap();
        let args = |s: &str| vec![OsString::from(s)];
        assert_eq!(
            expand(&args("@missing"), dir.path()),
            Err(LocalReason::ResponseFileUnreadable("missing".into()))
        );
        assert_eq!(
            expand(&args("@"), dir.path()),
            Err(LocalReason::ResponseFileUnreadable("".into()))
        );
        // A directory cannot be read as a file.
        assert_eq!(
            expand(&args("@."), dir.path()),
            Err(LocalReason::ResponseFileUnreadable(".".into()))
        );
        std::fs::write(dir.path().join("loop"), "-c @loop").unwrap();
        assert_eq!(
            expand(&args("@loop"), dir.path()),
            Err(LocalReason::ResponseFileTooDeep("loop".into()))
        );
    }
}
