//! What llamacc needs to know about the text of a compile's inputs beyond their digests.

use crate::stats::CannotCache;

/// Text that makes a compile's output depend on more than its inputs' content, with the
/// reason it is then not cached: the time macros change every second, and an assembler
/// `.incbin` (also in inline asm in C) reads a file the depfile does not name.
const UNCACHEABLE_CONTENT: &[(&[u8], CannotCache)] = &[
    (b"__DATE__", CannotCache::TimeMacros),
    (b"__TIME__", CannotCache::TimeMacros),
    (b"__TIMESTAMP__", CannotCache::TimeMacros),
    (b".incbin", CannotCache::AssemblerIncbin),
];

/// One input file's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentScan {
    /// Why a compile reading this file cannot be cached, if it cannot.
    pub uncacheable: Option<CannotCache>,
    /// Header names tested with `__has_include` / `__has_include_next`: whether each exists
    /// decides the compile as much as the content of the headers it includes.
    pub has_include: Vec<String>,
}

/// Scans one file's text.
pub fn scan(text: &[u8]) -> ContentScan {
    let uncacheable = UNCACHEABLE_CONTENT
        .iter()
        .find(|(needle, _)| contains(text, needle))
        .map(|(_, reason)| *reason);
    let mut has_include = Vec::new();
    let mut uncacheable = uncacheable;
    let needle = b"__has_include";
    let mut at = 0;
    while let Some(pos) = find(&text[at..], needle) {
        let mut i = at + pos + needle.len();
        if text[i..].starts_with(b"_next") {
            i += 5;
        }
        at = i;
        while i < text.len() && (text[i] == b' ' || text[i] == b'\t') {
            i += 1;
        }
        if text.get(i) != Some(&b'(') {
            // A mention (`#ifdef __has_include`, `defined(__has_include)`), not a test.
            continue;
        }
        i += 1;
        while i < text.len() && (text[i] == b' ' || text[i] == b'\t') {
            i += 1;
        }
        let close = match text.get(i) {
            Some(b'<') => b'>',
            Some(b'"') => b'"',
            _ => {
                // A macro names the header: which files matter cannot be known here.
                uncacheable = uncacheable.or(Some(CannotCache::ComputedHasInclude));
                continue;
            }
        };
        let start = i + 1;
        let Some(len) = text[start..]
            .iter()
            .position(|c| *c == close || *c == b'\n')
        else {
            continue;
        };
        if text[start + len] == close && len > 0 {
            has_include.push(String::from_utf8_lossy(&text[start..start + len]).into_owned());
        }
    }
    has_include.sort();
    has_include.dedup();
    ContentScan {
        uncacheable,
        has_include,
    }
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_include_names_are_found() {
        let text = b"#if defined __has_include && __has_include (<linux/stat.h>)\n#endif\n#if __has_include_next(\"cfg.h\")\n#endif\n#ifdef __has_include\n#endif\n";
        let s = scan(text);
        assert_eq!(s.has_include, ["cfg.h", "linux/stat.h"]);
        assert_eq!(s.uncacheable, None);
    }

    #[test]
    fn computed_has_include_and_time_macros_are_uncacheable() {
        assert_eq!(
            scan(b"#if __has_include(HEADER)\n#endif\n")
                .uncacheable
                .map(CannotCache::name),
            Some("computed __has_include")
        );
        assert_eq!(
            scan(b"const char *d = __DATE__;")
                .uncacheable
                .map(CannotCache::name),
            Some("__DATE__/__TIME__")
        );
        assert_eq!(
            scan(b"asm(\".incbin \\\"blob\\\"\");")
                .uncacheable
                .map(CannotCache::name),
            Some("assembler .incbin")
        );
    }
}
