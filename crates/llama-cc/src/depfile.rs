//! Reading the Makefile-syntax dependency files gcc and clang write (`-MD`, `-MMD`).

use std::path::PathBuf;

/// Every prerequisite named in a depfile, in order of first appearance, without duplicates.
/// Targets (left of `:`) are not included; `-MP`'s phony rules add nothing new.
///
/// Handles what the compilers emit: backslash-newline continuations, `\ ` and `\#` escapes,
/// `$$` for `$`, and several rules in one file.
pub fn prerequisites(text: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for rule in logical_lines(text) {
        let words = split_words(&rule);
        // The first word followed by an unescaped ':' and a space ends the targets (make
        // needs the space; without it the ':' belongs to the word, as in `C:\x`).
        let Some(colon) = words
            .iter()
            .position(|(w, colon)| *colon || w.ends_with(':'))
        else {
            continue;
        };
        for p in words[colon + 1..].iter().map(|(w, _)| w.clone()) {
            if !p.is_empty() && seen.insert(p.clone()) {
                out.push(PathBuf::from(p));
            }
        }
    }
    out
}

/// Joins backslash-newline continuations into logical lines.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        // An odd number of trailing backslashes continues the line.
        let trailing = raw.chars().rev().take_while(|c| *c == '\\').count();
        if trailing % 2 == 1 {
            current.push_str(&raw[..raw.len() - 1]);
            current.push(' ');
        } else {
            current.push_str(raw);
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Splits a rule into words, undoing escapes. Each word comes with whether it was followed
/// directly by the rule's separating `:` (as in `target: prereq`).
fn split_words(line: &str) -> Vec<(String, bool)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars().peekable();
    let push = |word: &mut String, colon: bool, words: &mut Vec<(String, bool)>| {
        if !word.is_empty() || colon {
            words.push((std::mem::take(word), colon));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(' ') | Some('#') | Some('\\') | Some(':') => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                _ => word.push('\\'),
            },
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                word.push('$');
            }
            ':' if matches!(chars.peek(), None | Some(' ') | Some('\t')) => {
                push(&mut word, true, &mut words);
            }
            ' ' | '\t' => push(&mut word, false, &mut words),
            c => word.push(c),
        }
    }
    push(&mut word, false, &mut words);
    // A lone ":" word marks the end of the targets of the previous word.
    let mut merged: Vec<(String, bool)> = Vec::new();
    for (w, colon) in words {
        if w.is_empty() && colon {
            if let Some(last) = merged.last_mut() {
                last.1 = true;
            }
        } else {
            merged.push((w, colon));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        prerequisites(text)
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn gcc_style_with_continuations_and_phony_rules() {
        let text = "lapi.o: lapi.c /usr/include/stdc-predef.h lprefix.h lua.h \\\n luaconf.h\n\nlprefix.h:\n\nlua.h:\n";
        assert_eq!(
            names(text),
            [
                "lapi.c",
                "/usr/include/stdc-predef.h",
                "lprefix.h",
                "lua.h",
                "luaconf.h"
            ]
        );
    }

    #[test]
    fn escapes_and_several_targets() {
        let text = "a.o b.o: my\\ file.c dir/x\\#y.h cost$$.h\n";
        assert_eq!(names(text), ["my file.c", "dir/x#y.h", "cost$.h"]);
    }

    #[test]
    fn windows_line_endings() {
        assert_eq!(names("t.o: a.c \\\r\n b.h\r\n"), ["a.c", "b.h"]);
    }

    #[test]
    fn clang_style_target_on_its_own_line() {
        let text = "CMakeFiles/x.dir/a.cc.o: \\\n  /src/a.cc /usr/include/c++/12/iostream \\\n  /src/a.h\n";
        assert_eq!(
            names(text),
            ["/src/a.cc", "/usr/include/c++/12/iostream", "/src/a.h"]
        );
    }
}

/// gcc's line width for depfiles: a name that would pass this column starts a new line.
const GCC_DEPFILE_COLUMNS: usize = 72;

/// Re-wraps the first rule of a depfile gcc wrote, as gcc would have wrapped it with the
/// names it has now: a depfile written under another root and then given the user's paths
/// back must match the local compiler's byte for byte. The rest (`-MP`'s phony rules, one
/// per line) is kept as is.
pub(crate) fn rewrap_gcc(text: &str) -> String {
    let end = first_rule_end(text);
    let (rule, rest) = text.split_at(end);
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
                words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            }
            '\\' => {
                word.push(c);
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            }
            ' ' | '\t' | '\n' => {
                words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)))
            }
            _ => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    let Some(colon) = words.iter().position(|w| w.ends_with(':')) else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len());
    let mut column = 0;
    let write = |out: &mut String, name: &str, column: &mut usize| {
        if *column > 0 {
            if *column + name.len() > GCC_DEPFILE_COLUMNS {
                out.push_str(" \\\n");
                *column = 0;
            }
            *column += 1;
            out.push(' ');
        }
        *column += name.len();
        out.push_str(name);
    };
    for (i, w) in words.iter().enumerate().take(colon + 1) {
        let name = if i == colon {
            &w[..w.len() - 1]
        } else {
            w.as_str()
        };
        write(&mut out, name, &mut column);
    }
    out.push(':');
    column += 1;
    for w in &words[colon + 1..] {
        write(&mut out, w, &mut column);
    }
    out.push('\n');
    out.push_str(rest.strip_prefix('\n').unwrap_or(rest));
    out
}

/// Where the first rule ends: its first newline not continued by a backslash.
fn first_rule_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let backslashes = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
            if backslashes % 2 == 0 {
                return i;
            }
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod rewrap_tests {
    use super::*;

    #[test]
    fn rewraps_as_gcc_does() {
        // Written by gcc 12 with these names.
        let gcc = "t.o: t.c /usr/include/stdc-predef.h /usr/include/stdio.h \\\n /usr/include/x86_64-linux-gnu/bits/libc-header-start.h \\\n /usr/include/features.h\nt.c:\n";
        let flat = "t.o: t.c /usr/include/stdc-predef.h /usr/include/stdio.h /usr/include/x86_64-linux-gnu/bits/libc-header-start.h /usr/include/features.h\nt.c:\n";
        assert_eq!(rewrap_gcc(flat), gcc);
        assert_eq!(rewrap_gcc(gcc), gcc);
        let escaped = "my\\ target t2.o: u.c b.h a.h\nb.h:\na.h:\n";
        assert_eq!(rewrap_gcc(escaped), escaped);
    }
}
