//! The README and `docs/`: every relative link resolves, to a file and to a heading of it;
//! the README stays a front door (at most 8 KB); and the tables generated from the code
//! (every setting, every `LLAMACC_*` variable) are exactly what the code's tables give, so the
//! reference cannot drift from what llama reads.
//!
//! After changing a table in the code: `LLAMA_BLESS=1 cargo test -p llama-cli --test tests
//! docs::` rewrites the generated blocks.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pages users read: the README and everything in docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// A block of a page generated from a table in the code.
struct Generated {
    page: &'static str,
    /// The source whose table it renders.
    source: &'static str,
    render: fn() -> String,
}

const GENERATED: &[Generated] = &[
    Generated {
        page: "docs/settings.md",
        source: "crates/llama-core/src/config/keys.rs",
        render: llama_core::keys::markdown_table,
    },
    Generated {
        page: "docs/llamacc.md",
        source: "crates/llama-cc/src/settings.rs",
        render: llama_cc::variables_markdown,
    },
];

const END_MARKER: &str = "<!-- end of the generated table -->";

fn begin_marker(source: &str) -> String {
    format!(
        "<!-- generated from {source}: edit it there, then LLAMA_BLESS=1 cargo test -p llama-cli --test tests docs:: -->"
    )
}

#[test]
fn generated_tables_match_the_code() {
    let bless = std::env::var_os("LLAMA_BLESS").is_some();
    for Generated {
        page,
        source,
        render,
    } in GENERATED
    {
        let path = root().join(page);
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        let begin = begin_marker(source);
        let (Some(start), Some(end)) = (text.find(&begin), text.find(END_MARKER)) else {
            panic!("{page} lacks the markers of its generated table:\n{begin}\n...\n{END_MARKER}");
        };
        let body_start = start + begin.len() + 1;
        let want = render();
        if text.get(body_start..end) == Some(want.as_str()) {
            continue;
        }
        if bless {
            let rewritten = format!("{}{want}{}", &text[..body_start], &text[end..]);
            fs::write(&path, rewritten).unwrap_or_else(|e| panic!("{page}: {e}"));
            continue;
        }
        panic!(
            "{page}'s generated table differs from {source}'s; run LLAMA_BLESS=1 cargo test -p \
             llama-cli --test tests docs:: to rewrite it. Wanted:\n{want}"
        );
    }
}

#[test]
fn the_readmes_quick_start_builds_twice_three_misses_then_three_hits() {
    let bin = Path::new(env!("CARGO_BIN_EXE_llama"))
        .parent()
        .expect("the binaries' directory")
        .to_path_buf();
    let home = tempfile::tempdir().expect("tempdir");
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");
    let mut cmd = std::process::Command::new(root().join("examples/hello/run"));
    for (key, _) in std::env::vars() {
        if key.starts_with("LLAMA") || key.starts_with("XDG_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("PATH", path)
        .env("HOME", home.path())
        .output()
        .expect("examples/hello/run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
    };
    assert_eq!(count("compiled and cached"), 3, "{text}");
    assert_eq!(count("served from the cache"), 3, "{text}");
    assert!(text.contains("hello, llama"), "{text}");
}

#[test]
fn the_readme_is_a_front_door_of_at_most_8_kb() {
    let size = fs::metadata(root().join("README.md"))
        .expect("README.md")
        .len();
    assert!(size <= 8 * 1024, "README.md is {size} bytes");
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut anchors: HashMap<PathBuf, Vec<String>> = HashMap::new();
    let mut broken = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).expect("page");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let resolved = if file.is_empty() {
                page.clone()
            } else {
                normalize(&page.parent().expect("dir").join(file))
            };
            let shown = format!(
                "{}: {target}",
                page.strip_prefix(root()).unwrap_or(&page).display()
            );
            if !resolved.exists() {
                broken.push(format!("{shown} (no such file)"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            let known = anchors.entry(resolved.clone()).or_insert_with(|| {
                heading_anchors(&fs::read_to_string(&resolved).unwrap_or_default())
            });
            if !known.iter().any(|a| a == anchor) {
                broken.push(format!("{shown} (no heading with that anchor)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    let text = "# A `b` (c): d — 2026-11-27, 6.18\n## Dup\n## Dup\n```\n# not a heading\n```\n";
    assert_eq!(
        heading_anchors(text),
        ["a-b-c-d--2026-11-27-618", "dup", "dup-1"]
    );
    assert_eq!(
        links("[a](x.md#y) `[b](no)` [c][r] ![i](img.png)\n[r]: z.md\n```\n[d](no)\n```\n"),
        ["x.md#y", "img.png", "z.md"]
    );
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// `line` without its code spans.
fn without_code(line: &str) -> String {
    line.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect()
}

/// The targets of the inline links and images (`[text](target)`) and of the reference
/// definitions (`[label]: target`) of a markdown text.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        if let Some(rest) = line.trim_start().strip_prefix('[')
            && let Some((_, target)) = rest.split_once("]: ")
        {
            targets.push(target.trim().to_string());
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(close) = after.find(')') else { break };
            let target = after[..close].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
            rest = &after[close..];
        }
    }
    targets
}

/// The anchors GitHub gives the headings of a markdown text: lowercased, everything but
/// letters, digits, spaces, `-` and `_` dropped, spaces made `-`; a repeated one gets `-1`,
/// `-2`, ...
fn heading_anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for line in prose(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.push(if *count == 0 {
            slug.clone()
        } else {
            format!("{slug}-{count}")
        });
        *count += 1;
    }
    anchors
}
