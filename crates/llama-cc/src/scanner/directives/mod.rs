//! A file's preprocessor directives: the part of its text the include scanner walks.
//!
//! Extracted once per content digest and kept, so this reads the text in one pass, as the
//! preprocessor's first three translation phases do: backslash-newlines are spliced, each
//! comment becomes one space (a block comment spanning lines joins them, as it does for
//! the compiler), and string and character literals are passed over so that a `//` or a
//! `#` inside one is not taken for anything. A line whose first token is `#` is a
//! directive. Raw string literals (`R"x(...)x"`) may span lines; their lines are never
//! directives.
//!
//! Besides the directives, the file's include guard is recognised (`#ifndef G`, `#define G`
//! first, the matching `#endif` last, nothing outside but blank space and comments), so
//! the walk can skip a guarded header it has entered while `G` is still defined.

use std::sync::Arc;

use super::expr::Macro;

/// How an `#include`-like directive searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeKind {
    /// `#include`.
    Include,
    /// `#include_next`: the search resumes after the directory the current file was found in.
    IncludeNext,
    /// `#import` (Objective-C, and gcc in any language): included at most once.
    Import,
}

/// What an include directive names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `"name"`: the current file's directory first, then `-iquote`, then the `<>` list.
    Quoted(String),
    /// `<name>`: `-I`, `-isystem`, the system directories, `-idirafter`.
    Angled(String),
    /// Anything else: macros to expand into one of the above (the text as written).
    Computed(String),
}

/// One directive, as the include scanner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `#include`, `#include_next`, `#import`.
    Include {
        /// Which.
        kind: IncludeKind,
        /// What it names.
        target: Target,
    },
    /// `#define NAME body` or `#define NAME(params) body`.
    Define {
        /// The macro's name.
        name: String,
        /// Its parameters (`...` included as written) and replacement text, shared with
        /// every macro table it enters.
        def: Arc<Macro>,
    },
    /// `#undef NAME`.
    Undef(String),
    /// `#if EXPR`.
    If(String),
    /// `#ifdef NAME`.
    Ifdef(String),
    /// `#ifndef NAME`.
    Ifndef(String),
    /// `#elif EXPR`.
    Elif(String),
    /// `#elifdef NAME` (C23, C++23).
    Elifdef(String),
    /// `#elifndef NAME` (C23, C++23).
    Elifndef(String),
    /// `#else`.
    Else,
    /// `#endif`.
    Endif,
    /// `#pragma once`.
    PragmaOnce,
    /// A directive the scanner does not model, by name (`#assert`, `#sccs` ...): what it
    /// does cannot be known here, so a walk that meets it in a live branch gives up.
    Unknown(String),
}

/// Directives that change neither the include graph nor the macro table: passed over.
const IGNORED: &[&str] = &["error", "ident", "line", "pragma", "warning"];

/// A file's directives in order, and its include guard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// Every directive, in order.
    pub list: Vec<Directive>,
    /// The macro whose `#ifndef` wraps the whole file, if one does.
    pub guard: Option<String>,
}

/// Extracts the directives of a file's text.
pub fn extract(text: &[u8]) -> Directives {
    let lines = logical_lines(text);
    let mut list = Vec::new();
    // Per line: None for blank, Some(index into list) for a directive, Some(usize::MAX)
    // for other text. Only needed to recognise the guard.
    let mut shape = Vec::with_capacity(lines.len());
    for line in &lines {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_prefix(b"#") {
            Some(rest) => {
                if let Some(d) = directive(rest) {
                    shape.push(Some(list.len()));
                    list.push(d);
                } else {
                    // `#` alone, `# 12 "file"` line markers and ignored directives: they
                    // are not text outside a guard either.
                    shape.push(None);
                }
            }
            None => shape.push(Some(usize::MAX)),
        }
    }
    let guard = guard(&list, &shape);
    Directives { list, guard }
}

/// The text with splices removed and comments replaced, split into logical lines.
fn logical_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let text = splice(text);
    let mut lines = Vec::new();
    let mut line = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        let raw_end = if c == b'R' {
            raw_string_end(&text, i)
        } else {
            None
        };
        match c {
            b'\n' => {
                lines.push(std::mem::take(&mut line));
                i += 1;
            }
            b'/' if text.get(i + 1) == Some(&b'/') => {
                // To the end of the line, which stays.
                while i < text.len() && text[i] != b'\n' {
                    i += 1;
                }
                line.push(b' ');
            }
            b'/' if text.get(i + 1) == Some(&b'*') => {
                i = match find(&text[i + 2..], b"*/") {
                    Some(end) => i + 2 + end + 2,
                    None => text.len(),
                };
                line.push(b' ');
            }
            b'"' | b'\'' => {
                let end = literal_end(&text, i);
                line.extend_from_slice(&text[i..end]);
                i = end;
            }
            b'R' if raw_end.is_some() => {
                let end = raw_end.unwrap_or(text.len());
                // Its newlines belong to the literal: none of its lines is a directive.
                line.extend(
                    text[i..end]
                        .iter()
                        .map(|&b| if b == b'\n' { b' ' } else { b }),
                );
                i = end;
            }
            _ => {
                line.push(c);
                i += 1;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` with every backslash-newline removed (a backslash before `\r\n` too).
fn splice(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if text.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if text.get(i + 1) == Some(&b'\r') && text.get(i + 2) == Some(&b'\n') {
                i += 3;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// Where the string or character literal opening at `start` ends: after its closing quote,
/// or at the end of the line when it has none (the compiler reports that, or it is an
/// apostrophe in an `#error` message or a digit separator).
fn literal_end(text: &[u8], start: usize) -> usize {
    let quote = text[start];
    let mut i = start + 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'\n' => return i,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// If a raw string literal opens at `at` (`R"delim(`, after an encoding prefix or not,
/// not inside an identifier): where it ends, after its `)delim"`.
fn raw_string_end(text: &[u8], at: usize) -> Option<usize> {
    let mut before = at;
    // An encoding prefix: u8R, uR, UR, LR.
    while before > 0 && matches!(text[before - 1], b'u' | b'U' | b'L' | b'8') {
        before -= 1;
    }
    if before > 0 && is_ident_byte(text[before - 1]) {
        return None;
    }
    if text.get(at + 1) != Some(&b'"') {
        return None;
    }
    let delim_start = at + 2;
    let open = text[delim_start..]
        .iter()
        .take(17)
        .position(|&b| b == b'(')?;
    let delim = &text[delim_start..delim_start + open];
    let valid = delim
        .iter()
        .all(|&b| b.is_ascii_graphic() && !matches!(b, b'\\' | b'(' | b')' | b'"'));
    if !valid {
        return None;
    }
    let body = delim_start + open + 1;
    let close = [b")".as_slice(), delim, b"\""].concat();
    // Unterminated: the literal runs to the end of the file (the compiler says so).
    Some(find(&text[body..], &close).map_or(text.len(), |end| body + end + close.len()))
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The directive on a line whose `#` has been taken off; `None` for the null directive,
/// line markers and directives that do nothing the scanner models.
fn directive(rest: &[u8]) -> Option<Directive> {
    let rest = String::from_utf8_lossy(rest);
    let rest = rest.trim_start();
    let name_len = rest
        .bytes()
        .position(|b| !is_ident_byte(b))
        .unwrap_or(rest.len());
    let (name, arg) = rest.split_at(name_len);
    let arg = arg.trim();
    let word = || first_word(arg);
    Some(match name {
        "" => return None,
        "include" => include(IncludeKind::Include, arg),
        "include_next" => include(IncludeKind::IncludeNext, arg),
        "import" => include(IncludeKind::Import, arg),
        "define" => define(arg),
        "undef" => Directive::Undef(word()),
        "if" => Directive::If(arg.to_string()),
        "ifdef" => Directive::Ifdef(word()),
        "ifndef" => Directive::Ifndef(word()),
        "elif" => Directive::Elif(arg.to_string()),
        "elifdef" => Directive::Elifdef(word()),
        "elifndef" => Directive::Elifndef(word()),
        "else" => Directive::Else,
        "endif" => Directive::Endif,
        "pragma" if arg.split_ascii_whitespace().eq(["once"]) => Directive::PragmaOnce,
        _ if IGNORED.contains(&name) => return None,
        // `# 12 "file.c"`: a line marker in preprocessed text.
        _ if name.bytes().all(|b| b.is_ascii_digit()) => return None,
        _ => Directive::Unknown(name.to_string()),
    })
}

fn first_word(arg: &str) -> String {
    arg.bytes()
        .position(|b| !is_ident_byte(b))
        .map_or(arg, |end| &arg[..end])
        .to_string()
}

fn include(kind: IncludeKind, arg: &str) -> Directive {
    let delimited = |open: char, close: char| {
        let inner = arg.strip_prefix(open)?;
        let end = inner.find(close)?;
        // Only blank space may follow (comments are already spaces).
        inner[end + 1..]
            .trim()
            .is_empty()
            .then(|| inner[..end].to_string())
    };
    let target = if let Some(name) = delimited('"', '"') {
        Target::Quoted(name)
    } else if let Some(name) = delimited('<', '>') {
        Target::Angled(name)
    } else {
        Target::Computed(arg.to_string())
    };
    Directive::Include { kind, target }
}

fn define(arg: &str) -> Directive {
    let name = first_word(arg);
    let rest = &arg[name.len()..];
    // Function-like only when the parenthesis touches the name.
    let (params, body) = match rest.strip_prefix('(') {
        Some(inner) => match inner.find(')') {
            Some(end) => {
                let params = inner[..end]
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                (Some(params), &inner[end + 1..])
            }
            None => (Some(Vec::new()), ""),
        },
        None => (None, rest),
    };
    Directive::Define {
        name,
        def: Arc::new(Macro {
            params,
            body: body.trim().to_string(),
        }),
    }
}

/// The include guard: `#ifndef G` (or `#if !defined(G)`) as the first thing in the file,
/// `#define G` as the next directive, and the `#endif` that closes the first as the last
/// thing in the file.
fn guard(list: &[Directive], shape: &[Option<usize>]) -> Option<String> {
    let first = shape.iter().flatten().next().copied()?;
    let last = shape.iter().flatten().last().copied()?;
    if list.is_empty() || first != 0 || last != list.len() - 1 {
        return None;
    }
    let name = match &list[0] {
        Directive::Ifndef(name) => name.clone(),
        Directive::If(expr) => not_defined(expr)?,
        _ => return None,
    };
    match list.get(1) {
        Some(Directive::Define { name: defined, .. }) if *defined == name => {}
        _ => return None,
    }
    // The first conditional must close at the very end, not before.
    let mut depth = 0usize;
    for (i, d) in list.iter().enumerate() {
        match d {
            Directive::If(_) | Directive::Ifdef(_) | Directive::Ifndef(_) => depth += 1,
            Directive::Elif(_)
            | Directive::Elifdef(_)
            | Directive::Elifndef(_)
            | Directive::Else
                if depth == 1 =>
            {
                // `#else` of the guard itself: the file has text when G is defined.
                return None;
            }
            Directive::Endif => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (i == list.len() - 1).then_some(name);
                }
            }
            _ => {}
        }
    }
    None
}

/// `G` from `!defined(G)` or `!defined G`.
fn not_defined(expr: &str) -> Option<String> {
    let rest = expr.trim().strip_prefix('!')?.trim_start();
    let rest = rest.strip_prefix("defined")?.trim_start();
    let (name, after) = match rest.strip_prefix('(') {
        Some(inner) => {
            let end = inner.find(')')?;
            (inner[..end].trim(), inner[end + 1..].trim())
        }
        None => (rest, ""),
    };
    let valid = !name.is_empty() && name.bytes().all(is_ident_byte);
    (valid && after.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests;
