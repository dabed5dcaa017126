use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::compilation::{Driver, Verdict};
use crate::remote_args::remote_args;
use crate::scanner::testing::{
    Disk, assert_covers, canonical, depfile_paths, gcc, gcc_features, gcc_start,
};
use crate::scanner::walk::{GiveUp, Start, walk};

fn words(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}

#[test]
fn defines_undefines_and_forced_includes_leave_the_probe() {
    let args =
        words("-O2 -DA -D B=2 -DF(x)=x -UA -include pre.h -imacros m.h -Iinc -std=c11 src.c");
    let setup = macro_setup(&args, Family::Gcc).expect("modelled");
    assert_eq!(setup.probe_args, words("-O2 -Iinc -std=c11"));
    assert_eq!(
        setup.ops,
        [
            MacroOp::Define("A".into()),
            MacroOp::Define("B=2".into()),
            MacroOp::Define("F(x)=x".into()),
            MacroOp::Undefine("A".into()),
        ]
    );
    let table = macro_table(b"#define __GNUC__ 12\n#define A 0\n", &setup.ops);
    assert_eq!(table.get("A"), None);
    assert_eq!(table["B"].body, "2");
    assert_eq!(table["F"].params, Some(vec!["x".to_string()]));
    assert_eq!(table["__GNUC__"].body, "12");
    assert!(macro_setup(&words("-Wp,-include,x.h -c s.c"), Family::Gcc).is_err());
}

/// A project tree whose compile uses every search flag, a directory named twice, forced
/// includes and macros from the command line.
const TREE: &[(&str, &str)] = &[
    (
        "src/main.c",
        "#include \"local.h\"\n#include <lib.h>\n#include <stdio.h>\n#include \"both.h\"\n#if defined(EXTRA) && !defined(GONE) && LEVEL > 1\n#include \"extra.h\"\n#endif\n#ifdef GONE\n#include \"gone.h\"\n#endif\n#include <late.h>\n",
    ),
    ("src/local.h", "#define LOCAL 1\n"),
    (
        "quote/local.h",
        "#error shadowed by the including directory\n",
    ),
    (
        "quote/both.h",
        "#error -iquote dir also given with -I is searched there\n",
    ),
    ("inc/lib.h", "#include_next <lib.h>\n"),
    ("inc/both.h", "#define BOTH_FROM_INC 1\n"),
    ("inc2/lib.h", "#define LIB2 1\n"),
    ("sys/extra.h", "#include <stdlib.h>\n"),
    ("after/late.h", "#include \"sibling.h\"\n"),
    ("after/sibling.h", ""),
    ("forced.h", "#define EXTRA 1\n"),
    ("gone.h", ""),
];

#[test]
fn a_compile_with_every_search_flag_lists_what_gcc_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for (name, text) in TREE {
        let path = root.join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
    }
    // -I sys repeats an -isystem directory (ignored as -I); -iquote inc repeats an -I one and
    // keeps its place, so "both.h" is found in inc/ before quote/.
    let line = "-O2 -iquote inc -iquote quote -I inc -I inc2 -I sys -isystem sys -idirafter after -include forced.h -DGONE -UGONE -DLEVEL=2 -c src/main.c -o main.o";
    let args = words(line);
    let driver = Driver {
        family: Family::Gcc,
        cxx: false,
    };
    let Verdict::Compile(c) = crate::args::parse(&args, root, driver) else {
        panic!("{line} is a compile");
    };
    let discovery = remote_args(&c.args, driver).expect("remote args").discovery;
    let setup = macro_setup(&discovery, Family::Gcc).expect("modelled");
    let probe: Vec<String> = setup
        .probe_args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    let Some((predefined, search, preincluded)) = gcc_start("c", &probe, root) else {
        eprintln!("no gcc: skipped");
        return;
    };
    // The probe carries the compile's search flags, so gcc reports the whole chain.
    let mut search = search;
    search.including_dir_first = !c.includes.no_source_dir;
    let mut macros = predefined;
    apply(&mut macros, &setup.ops);
    let forced: Vec<PathBuf> = preincluded
        .into_iter()
        .chain(c.forced_includes.clone())
        .collect();
    let mut features = HashMap::new();
    let scanned = loop {
        let start = Start {
            macros: macros.clone(),
            forced: &forced,
            cplusplus: false,
            cwd: root,
            assembler: false,
            features: &features,
        };
        match walk(&root.join(&c.source), start, &search, &mut Disk) {
            Err(GiveUp::Features(tests)) => gcc_features("c", &probe, root, &tests, &mut features),
            other => break other.expect("the walk decides"),
        }
    };
    let mut args = discovery.clone();
    args.extend(["-M", "-MF", "deps.d"].map(OsString::from));
    gcc(root, &args);
    let depfile = fs::read_to_string(root.join("deps.d")).expect("depfile");
    let gcc = depfile_paths(&depfile, root);
    let ours = assert_covers(&gcc, &scanned.read, root);
    let extra: Vec<_> = ours.difference(&gcc).collect();
    assert!(extra.is_empty(), "listed more than gcc read: {extra:?}");
    for (file, wanted) in [
        ("src/local.h", true),
        ("inc2/lib.h", true),
        ("inc/both.h", true),
        ("sys/extra.h", true),
        ("after/sibling.h", true),
        ("gone.h", false),
        ("quote/local.h", false),
        ("quote/both.h", false),
    ] {
        assert_eq!(
            ours.contains(&canonical(root, Path::new(file))),
            wanted,
            "{file}"
        );
    }
}
