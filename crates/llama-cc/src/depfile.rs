//! Reading the Makefile-syntax dependency files gcc and clang write (`-MD`, `-MMD`).

use std::path::PathBuf;

use crate::compilation::Family;

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

/// clang's (LLVM's `DependencyFileGenerator`): it also keeps room for the ` \` of a break.
const CLANG_DEPFILE_COLUMNS: usize = 75;

/// Re-wraps the first rule of a depfile `family`'s compiler wrote, as it would have wrapped
/// it with the names it has now: a depfile written under another root and then given the
/// user's paths back must match the local compiler's byte for byte. The rest (`-MP`'s
/// phony rules, one per line) is kept as is.
pub(crate) fn rewrap(text: &str, family: Family) -> String {
    let end = first_rule_end(text);
    let (rule, rest) = text.split_at(end);
    let words = rule_words(rule);
    let Some(colon) = words.iter().position(|w| w.ends_with(':')) else {
        return text.to_string();
    };
    let targets = words[..=colon]
        .iter()
        .enumerate()
        .map(|(i, w)| match i == colon {
            true => &w[..w.len() - 1],
            false => w.as_str(),
        });
    let prerequisites = words[colon + 1..].iter().map(String::as_str);
    let mut out = match family {
        Family::Gcc => wrap_gcc(targets, prerequisites),
        Family::Clang => wrap_clang(targets, prerequisites),
    };
    out.push('\n');
    out.push_str(rest.strip_prefix('\n').unwrap_or(rest));
    out
}

/// The words of a rule, escapes kept, line continuations dropped.
fn rule_words(rule: &str) -> Vec<String> {
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
    words
}

/// gcc 12's `mkdeps`: targets and prerequisites alike, a name that would pass the column
/// starts a line of its own, indented by one space.
fn wrap_gcc<'a>(
    targets: impl Iterator<Item = &'a str>,
    prerequisites: impl Iterator<Item = &'a str>,
) -> String {
    let mut out = String::new();
    let mut column = 0;
    for t in targets {
        gcc_name(&mut out, &mut column, t);
    }
    out.push(':');
    column += 1;
    for p in prerequisites {
        gcc_name(&mut out, &mut column, p);
    }
    out
}

fn gcc_name(out: &mut String, column: &mut usize, name: &str) {
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
}

/// clang 14's `DependencyFileGenerator`: it counts names unescaped, continues targets with
/// two spaces, and breaks before a prerequisite when the name and a trailing ` \` would
/// pass the column.
fn wrap_clang<'a>(
    targets: impl Iterator<Item = &'a str>,
    prerequisites: impl Iterator<Item = &'a str>,
) -> String {
    let mut out = String::new();
    let mut column = 0;
    for t in targets {
        let n = unescaped_len(t);
        if column == 0 {
            column = n;
        } else if column + n + 2 > CLANG_DEPFILE_COLUMNS {
            out.push_str(" \\\n  ");
            column = n + 2;
        } else {
            out.push(' ');
            column += n + 1;
        }
        out.push_str(t);
    }
    out.push(':');
    column += 1;
    for p in prerequisites {
        let n = unescaped_len(p);
        if column + n + 1 + 2 > CLANG_DEPFILE_COLUMNS {
            out.push_str(" \\\n ");
            column = 2;
        }
        out.push(' ');
        out.push_str(p);
        column += n + 1;
    }
    out
}

/// The length of a name as the compiler had it before escaping it for make (`\ `, `$$`).
fn unescaped_len(word: &str) -> usize {
    let bytes = word.as_bytes();
    let (mut n, mut i) = (0, 0);
    while i < bytes.len() {
        i += match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(_)) | (b'$', Some(b'$')) => 2,
            _ => 1,
        };
        n += 1;
    }
    n
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
        assert_eq!(rewrap(flat, Family::Gcc), gcc);
        assert_eq!(rewrap(gcc, Family::Gcc), gcc);
        let escaped = "my\\ target t2.o: u.c b.h a.h\nb.h:\na.h:\n";
        assert_eq!(rewrap(escaped, Family::Gcc), escaped);
    }

    #[test]
    fn rewraps_as_clang_does() {
        // Written by clang 14 with these names: two targets, an escaped name.
        let clang = concat!(
            "obj/a_rather_long_target_name_for_wrapping.o another/long/target/name/x.o: \\\n",
            "  c.c /usr/lib/llvm-14/lib/clang/14.0.6/include/stddef.h \\\n",
            "  /usr/lib/llvm-14/lib/clang/14.0.6/include/__stddef_max_align_t.h \\\n",
            "  /usr/lib/llvm-14/lib/clang/14.0.6/include/stdarg.h sub\\ dir/h$$1.h \\\n",
            "  /usr/lib/llvm-14/lib/clang/14.0.6/include/stdint.h \\\n",
            "  /usr/include/stdint.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/libc-header-start.h \\\n",
            "  /usr/include/features.h /usr/include/features-time64.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/wordsize.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/timesize.h \\\n",
            "  /usr/include/stdc-predef.h /usr/include/x86_64-linux-gnu/sys/cdefs.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/long-double.h \\\n",
            "  /usr/include/x86_64-linux-gnu/gnu/stubs.h \\\n",
            "  /usr/include/x86_64-linux-gnu/gnu/stubs-64.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/types.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/typesizes.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/time64.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/wchar.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/stdint-intn.h \\\n",
            "  /usr/include/x86_64-linux-gnu/bits/stdint-uintn.h\n",
        );
        let flat = clang.replace(" \\\n ", "");
        assert_eq!(flat.lines().count(), 1);
        assert_eq!(rewrap(&flat, Family::Clang), clang);
        assert_eq!(rewrap(clang, Family::Clang), clang);
    }
}
