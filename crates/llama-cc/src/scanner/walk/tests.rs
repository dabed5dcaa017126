use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::scanner::testing::{
    Disk, assert_covers, depfile_paths, gcc, gcc_features, gcc_start, macros_of,
};

fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    dir
}

fn scan(root: &Path, source: &str, search: &SearchPath, defines: &str) -> Result<Scanned, GiveUp> {
    let features = HashMap::new();
    let start = Start {
        macros: macros_of(defines),
        forced: &[],
        cplusplus: false,
        cwd: root,
        assembler: false,
        features: &features,
    };
    walk(&root.join(source), start, search, &mut Disk)
}

fn names(root: &Path, paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.strip_prefix(root).unwrap_or(p).display().to_string())
        .collect()
}

#[test]
fn only_live_branches_are_followed_and_guards_stop_reentry() {
    let dir = tree(&[
        (
            "main.c",
            "#include \"a.h\"\n#include \"a.h\"\n#if USE_B\n#include \"b.h\"\n#elif defined(A_H)\n#include \"c.h\"\n#else\n#include \"d.h\"\n#endif\n#include \"once.h\"\n#include \"once.h\"\n",
        ),
        (
            "a.h",
            "#ifndef A_H\n#define A_H\n#include \"inner.h\"\n#endif\n",
        ),
        ("inner.h", "int inner;\n"),
        ("b.h", ""),
        ("c.h", "#define FROM_C 1\n"),
        ("d.h", ""),
        ("once.h", "#pragma once\n#include \"inner.h\"\n"),
    ]);
    let search = SearchPath {
        including_dir_first: true,
        ..SearchPath::default()
    };
    let got = scan(dir.path(), "main.c", &search, "").expect("scans");
    assert_eq!(
        names(dir.path(), &got.read),
        ["main.c", "a.h", "inner.h", "c.h", "once.h"]
    );
    let got = scan(dir.path(), "main.c", &search, "#define USE_B 1\n").expect("scans");
    assert_eq!(
        names(dir.path(), &got.read),
        ["main.c", "a.h", "inner.h", "b.h", "once.h"]
    );
}

#[test]
fn the_search_follows_gcc_order_and_include_next_resumes_after_the_finder() {
    let dir = tree(&[
        (
            "src/main.c",
            "#include \"q.h\"\n#include <x.h>\n#include MACRO_HEADER\n",
        ),
        ("quote/q.h", ""),
        ("first/x.h", "#include_next <x.h>\n"),
        ("second/x.h", "#define SECOND 1\n"),
        ("second/m.h", ""),
    ]);
    let root = dir.path();
    let search = SearchPath {
        quote: vec![root.join("quote")],
        angled: vec![root.join("first"), root.join("none"), root.join("second")],
        including_dir_first: true,
    };
    let got = scan(root, "src/main.c", &search, "#define MACRO_HEADER <m.h>\n").expect("scans");
    assert_eq!(
        names(root, &got.read),
        [
            "src/main.c",
            "quote/q.h",
            "first/x.h",
            "second/x.h",
            "second/m.h"
        ]
    );
    // Every earlier candidate is recorded absent: it would win were it to appear.
    let absent = names(root, &got.absent);
    for a in ["src/q.h", "none/x.h", "first/m.h", "none/m.h", "quote/x.h"] {
        assert_eq!(
            absent.contains(&a.to_string()),
            a != "quote/x.h",
            "{a} in {absent:?}"
        );
    }
}

#[test]
fn has_include_ships_what_it_finds_and_undecidable_text_gives_up() {
    let dir = tree(&[
        (
            "main.c",
            "#if __has_include(<opt.h>) && !__has_include(<none.h>)\n#include <used.h>\n#endif\n",
        ),
        ("inc/opt.h", ""),
        ("inc/used.h", ""),
        ("bad.c", "#if 1 / 0\n#endif\n"),
        ("assert.c", "#assert machine(x86)\n"),
        ("missing.c", "#include <nowhere.h>\n"),
        (
            "entry.S",
            "# an assembler comment\n#include <used.h>\n\tmovl $1, %eax # another\n",
        ),
        (
            "feature.c",
            "#if __has_builtin(__builtin_expect)\n#include <used.h>\n#endif\n",
        ),
    ]);
    let root = dir.path();
    let search = SearchPath {
        angled: vec![root.join("inc")],
        including_dir_first: true,
        ..SearchPath::default()
    };
    let got = scan(root, "main.c", &search, "").expect("scans");
    assert_eq!(
        names(root, &got.read),
        ["main.c", "inc/opt.h", "inc/used.h"]
    );
    let give_up = |file| scan(root, file, &search, "").expect_err(file).name();
    assert_eq!(give_up("bad.c"), "condition");
    assert_eq!(give_up("assert.c"), "directive");
    assert_eq!(give_up("entry.S"), "directive");
    let features = HashMap::new();
    let assembler = Start {
        macros: Default::default(),
        forced: &[],
        cplusplus: false,
        cwd: root,
        assembler: true,
        features: &features,
    };
    let got = walk(&root.join("entry.S"), assembler, &search, &mut Disk).expect("passes # lines");
    assert_eq!(names(root, &got.read), ["entry.S", "inc/used.h"]);
    assert_eq!(give_up("missing.c"), "not-found");
    assert_eq!(
        scan(root, "feature.c", &search, ""),
        Err(GiveUp::Features(vec![(
            "__has_builtin".into(),
            "__builtin_expect".into()
        )]))
    );
}

/// The walk against gcc's own `-M` on real system headers: nothing gcc reads is missed.
fn matches_gcc(language: &str, flags: &[&str], text: &str) {
    let Some((macros, search, preincluded)) = gcc_start(language, flags, Path::new("/")) else {
        eprintln!("no gcc: skipped");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("unit");
    fs::write(&source, text).expect("write");
    let mut features = HashMap::new();
    let mut rounds = 0;
    let scanned = loop {
        let start = Start {
            macros: macros.clone(),
            forced: &preincluded,
            cplusplus: language == "c++",
            cwd: dir.path(),
            assembler: false,
            features: &features,
        };
        match walk(&source, start, &search, &mut Disk) {
            Err(GiveUp::Features(tests)) if rounds < 3 => {
                gcc_features(language, flags, Path::new("/"), &tests, &mut features);
                rounds += 1;
            }
            other => break other.expect("the walk decides"),
        }
    };
    let root = Path::new("/");
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.extend(["-x", language, "-M"].map(OsString::from));
    args.push(source.clone().into_os_string());
    let out = gcc(root, &args);
    let gcc = depfile_paths(&String::from_utf8_lossy(&out.stdout), root);
    let ours = assert_covers(&gcc, &scanned.read, root);
    eprintln!(
        "{language} {flags:?}: gcc read {}, the scanner listed {} ({} extra)",
        gcc.len(),
        ours.len(),
        ours.len() - gcc.len()
    );
}

const C_HEADERS: &str = "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <math.h>\n#include <pthread.h>\n#include <signal.h>\n#include <sys/stat.h>\n#include <fcntl.h>\n#include <unistd.h>\n#include <errno.h>\n#include <time.h>\n#include <locale.h>\n#include <wchar.h>\n#include <inttypes.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\nint main(void) { return 0; }\n";

const CXX_HEADERS: &str = "#include <algorithm>\n#include <functional>\n#include <iostream>\n#include <map>\n#include <memory>\n#include <mutex>\n#include <regex>\n#include <string>\n#include <thread>\n#include <unordered_map>\n#include <vector>\nint main() { return 0; }\n";

#[test]
fn the_implicit_preinclude_is_listed_without_any_system_header() {
    matches_gcc("c", &[], "int main(void) { return 0; }\n");
    matches_gcc("c++", &[], "int main() { return 0; }\n");
    matches_gcc("c", &["-ffreestanding"], "int main(void) { return 0; }\n");
}

#[test]
fn glibc_headers_are_all_found_as_gcc_finds_them() {
    matches_gcc("c", &[], C_HEADERS);
    matches_gcc(
        "c",
        &["-O2", "-D_FORTIFY_SOURCE=2", "-D_GNU_SOURCE"],
        C_HEADERS,
    );
    matches_gcc("c", &["-std=c99", "-O0"], C_HEADERS);
}

#[test]
fn libstdcxx_headers_are_all_found_as_gcc_finds_them() {
    matches_gcc("c++", &["-O2"], CXX_HEADERS);
    matches_gcc("c++", &["-std=c++11"], CXX_HEADERS);
    matches_gcc("c++", &["-std=c++20", "-pthread"], CXX_HEADERS);
}

#[test]
fn import_and_pragma_once_enter_a_file_once_through_any_path() {
    let dir = tree(&[
        (
            "main.c",
            "#import \"i.h\"\n#import \"i.h\"\n#include \"o.h\"\n#include \"sub/../o.h\"\n",
        ),
        (
            "i.h",
            "#ifdef SEEN_I\n#include \"again_i.h\"\n#endif\n#define SEEN_I\n",
        ),
        (
            "o.h",
            "#pragma once\n#ifdef SEEN_O\n#include \"again_o.h\"\n#endif\n#define SEEN_O\n",
        ),
        ("sub/keep", ""),
        ("again_i.h", ""),
        ("again_o.h", ""),
    ]);
    let search = SearchPath {
        including_dir_first: true,
        ..SearchPath::default()
    };
    let got = scan(dir.path(), "main.c", &search, "").expect("scans");
    assert_eq!(
        names(dir.path(), &got.read),
        ["main.c", "i.h", "o.h", "sub/../o.h"]
    );
}
