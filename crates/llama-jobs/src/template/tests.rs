use super::*;
use gotmpl::Value;
use llama_exec::OutputMapping;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn parse(args: &[&str]) -> Result<ArgTemplates, TemplateError> {
    ArgTemplates::parse(&strings(args))
}

fn parse_ok(args: &[&str]) -> ArgTemplates {
    match parse(args) {
        Ok(t) => t,
        Err(e) => panic!("parse {args:?}: {e}"),
    }
}

fn parse_err(args: &[&str]) -> TemplateError {
    match parse(args) {
        Ok(t) => panic!("parse {args:?} should fail, got {t:?}"),
        Err(e) => e,
    }
}

fn job(line: &str, idx: usize) -> JobContext {
    JobContext {
        line: line.to_string(),
        idx,
    }
}

fn render_in(t: &ArgTemplates, j: &JobContext, dir: &Path) -> Rendered {
    match t.render_in(j, dir) {
        Ok(r) => r,
        Err(e) => panic!("render {t:?}: {e}"),
    }
}

fn render(t: &ArgTemplates, j: &JobContext) -> Rendered {
    render_in(t, j, Path::new("/nonexistent-llama-test-dir"))
}

fn args_of(args: &[&str], j: &JobContext) -> Vec<String> {
    render(&parse_ok(args), j).args
}

/// A temporary directory holding the given files.
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    for (name, content) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            panic!("mkdir {parent:?}: {e}");
        }
        if let Err(e) = std::fs::write(&path, content) {
            panic!("write {path:?}: {e}");
        }
    }
    dir
}

#[test]
fn line_and_idx() {
    assert_eq!(
        args_of(
            &["-n{{.Idx}}", "{{.Line}}", "x-{{.Line}}-{{.Idx}}"],
            &job("a b", 7)
        ),
        ["-n7", "a b", "x-a b-7"]
    );
}

#[test]
fn literal_arguments() {
    let t = parse_ok(&["echo", "}} not a template", ""]);
    assert!(t.is_literal());
    let r = render(&t, &job("x", 0));
    assert_eq!(r.args, ["echo", "}} not a template", ""]);
    assert!(r.inputs.is_empty() && r.outputs.is_empty());

    assert!(!parse_ok(&["echo", "{{.Line}}"]).is_literal());
    // A comment is template syntax: it renders as nothing.
    let t = parse_ok(&["a{{/* note */}}b"]);
    assert!(!t.is_literal());
    assert_eq!(render(&t, &job("", 0)).args, ["ab"]);
    assert!(parse_ok(&[]).is_literal());
}

#[test]
fn input_from_line() {
    let dir = dir_with(&[("a.txt", "A"), ("b.txt", "B")]);
    let t = parse_ok(&["cat", "{{.I .Line}}"]);
    let r = render_in(&t, &job("a.txt", 0), dir.path());
    assert_eq!(r.args, ["cat", "a.txt"]);
    assert_eq!(
        r.inputs,
        [InputFile::Local {
            local: dir.path().join("a.txt"),
            remote: "a.txt".into()
        }]
    );
    assert!(r.outputs.is_empty());
    // The same templates render the next job independently.
    let r = render_in(&t, &job("b.txt", 1), dir.path());
    assert_eq!(r.args, ["cat", "b.txt"]);
    assert_eq!(r.inputs.len(), 1);
    assert_eq!(r.inputs[0].remote(), "b.txt");
}

#[test]
fn input_long_name_and_pipe() {
    let dir = dir_with(&[("sub/a.txt", "A")]);
    let t = parse_ok(&[
        r#"{{.Input (printf "sub/%s" .Line)}}"#,
        "{{ .Line | printf \"./sub//%s\" | .I }}",
        "{{$.I \"sub/a.txt\"}}",
    ]);
    let r = render_in(&t, &job("a.txt", 0), dir.path());
    assert_eq!(r.args, ["sub/a.txt", "sub/a.txt", "sub/a.txt"]);
    // Same remote path: shipped once.
    assert_eq!(r.inputs.len(), 1);
    assert_eq!(r.inputs[0].remote(), "sub/a.txt");
}

#[test]
fn output_with_printf() {
    let t = parse_ok(&[
        "optimize",
        "{{.I .Line}}",
        r#"{{.O (printf "optimized/%s" .Line)}}"#,
    ]);
    let dir = dir_with(&[("img.png", "png")]);
    let r = render_in(&t, &job("img.png", 3), dir.path());
    assert_eq!(r.args, ["optimize", "img.png", "optimized/img.png"]);
    assert_eq!(
        r.outputs,
        [OutputMapping {
            local: dir.path().join("optimized/img.png"),
            remote: "optimized/img.png".into()
        }]
    );
    assert_eq!(r.inputs.len(), 1);
    // Outputs need not exist locally; `.Output` is the long name.
    let r = render(&parse_ok(&["{{.Output \"out/./x\"}}"]), &job("", 0));
    assert_eq!(r.args, ["out/x"]);
    assert_eq!(r.outputs[0].remote, "out/x");
}

#[test]
fn input_output() {
    let dir = dir_with(&[("common.txt", "c")]);
    let t = parse_ok(&[
        "{{.IO \"common.txt\"}}",
        "{{.InputOutput \"./common.txt\"}}",
    ]);
    let r = render_in(&t, &job("", 0), dir.path());
    assert_eq!(r.args, ["common.txt", "common.txt"]);
    assert_eq!(
        r.inputs,
        [InputFile::Local {
            local: dir.path().join("common.txt"),
            remote: "common.txt".into()
        }]
    );
    assert_eq!(
        r.outputs,
        [OutputMapping {
            local: dir.path().join("common.txt"),
            remote: "common.txt".into()
        }]
    );
}

#[test]
fn io_requires_existing_input() {
    let t = parse_ok(&["{{.IO \"missing.txt\"}}"]);
    let err = match t.render_in(&job("", 0), Path::new("/nonexistent-llama-test-dir")) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert!(matches!(err.kind(), ErrorKind::InputMissing(_)), "{err}");
}

#[test]
fn as_file() {
    let dir = dir_with(&[("a.txt", "A")]);
    let t = parse_ok(&[
        "{{.AsFile \"hello\"}}",
        "{{.I \"a.txt\"}}",
        "{{.AsFile .Line}}",
        "{{.AsFile \"two\\n\"}}",
    ]);
    let r = render_in(&t, &job("line", 0), dir.path());
    assert_eq!(
        r.args,
        ["llama/tmp.0", "a.txt", "llama/tmp.2", "llama/tmp.3"]
    );
    assert_eq!(
        r.inputs,
        [
            InputFile::Bytes {
                data: b"hello\n".to_vec(),
                remote: "llama/tmp.0".into()
            },
            InputFile::Local {
                local: dir.path().join("a.txt"),
                remote: "a.txt".into()
            },
            InputFile::Bytes {
                data: b"line\n".to_vec(),
                remote: "llama/tmp.2".into()
            },
            InputFile::Bytes {
                data: b"two\n".to_vec(),
                remote: "llama/tmp.3".into()
            },
        ]
    );
}

#[test]
fn as_file_names_do_not_collide() {
    let dir = dir_with(&[("llama/tmp.0", "user file")]);
    let t = parse_ok(&["{{.I \"llama/tmp.0\"}}", "{{.AsFile \"x\"}}"]);
    let r = render_in(&t, &job("", 0), dir.path());
    assert_eq!(r.args, ["llama/tmp.0", "llama/tmp.1"]);
    // The other way round is a conflict.
    let t = parse_ok(&["{{.AsFile \"x\"}}", "{{.I \"llama/tmp.0\"}}"]);
    let err = match t.render_in(&job("", 0), dir.path()) {
        Ok(r) => panic!("expected conflict, got {r:?}"),
        Err(e) => e,
    };
    assert!(matches!(err.kind(), ErrorKind::InputConflict(_)), "{err}");
    assert_eq!(err.arg_index(), 2);
}

#[test]
fn builtins_work() {
    let j = job("a,b", 2);
    assert_eq!(
        args_of(
            &[
                r#"{{printf "%03d" .Idx}}"#,
                "{{len .Line}}",
                r#"{{if eq .Idx 2}}two{{else}}other{{end}}"#,
                r#"{{index "xyz" 1}}"#,
                r#"{{slice .Line 0 1}}"#,
                r#"{{and .Line "yes"}}{{or "" "no"}}{{not true}}"#,
                r#"{{if and (gt .Idx 1) (lt .Idx 3) (ne .Line "") (le 1 2) (ge 2 2)}}ok{{end}}"#,
                r#"{{print "a" 1}}{{urlquery "a b"}}{{html "<"}}{{js "'"}}"#,
                r#"{{with $x := .Line}}{{$x}}{{end}}{{range $i := "ab" | len}}{{$i}}{{end}}"#,
                r#"{{define "t"}}[{{.}}]{{end}}{{template "t" .Line}}"#,
                r#"{{- " trimmed " -}}  "#,
            ],
            &j,
        ),
        [
            "002",
            "3",
            "two",
            "121",
            "a",
            "yesnofalse",
            "ok",
            "a1a+b&lt;\\'",
            "a,b01",
            "[a,b]",
            " trimmed ",
        ]
    );
}

#[test]
fn method_inside_define_and_range() {
    let dir = dir_with(&[("x.txt", "X")]);
    let t = parse_ok(&[
        r#"{{define "in"}}{{.I "x.txt"}}{{end}}{{template "in" .}}"#,
        r#"{{range 2}}{{$.O (printf "o%d" .)}} {{end}}"#,
    ]);
    let r = render_in(&t, &job("", 0), dir.path());
    assert_eq!(r.args, ["x.txt", "o0 o1 "]);
    assert_eq!(r.inputs.len(), 1);
    let remotes: Vec<_> = r.outputs.iter().map(|o| o.remote.as_str()).collect();
    assert_eq!(remotes, ["o0", "o1"]);
}

#[test]
fn parse_error_names_argument_and_column() {
    let err = parse_err(&["ok", "{{.Line"]);
    assert_eq!(err.arg_index(), 2);
    assert_eq!(err.arg(), "{{.Line");
    assert_eq!(err.column(), Some(8));
    assert!(matches!(err.kind(), ErrorKind::Syntax(_)));
    assert_eq!(
        err.to_string(),
        r#"argument 2 ("{{.Line"): column 8: unclosed action"#
    );

    let err = parse_err(&["x {{.I \"a}}"]);
    assert_eq!(err.arg_index(), 1);
    assert!(err.column().is_some(), "{err}");
    assert!(err.to_string().contains("unterminated"), "{err}");

    let err = parse_err(&["a\n{{ .I ( }}"]);
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(err.to_string().contains(": line 2, column "), "{err}");
}

#[test]
fn unbalanced_blocks_are_rejected() {
    let err = parse_err(&["a{{end}}b"]);
    assert_eq!(err.column(), Some(2), "{err}");
    assert!(err.to_string().contains("unexpected {{end}}"), "{err}");

    // gotmpl itself rejects a second {{else}}.
    let err = parse_err(&["{{if .Line}}x{{else}}y{{else}}z{{end}}"]);
    assert_eq!(err.column(), Some(25), "{err}");

    let err = parse_err(&["ok{{else}}"]);
    assert_eq!(err.column(), Some(3), "{err}");

    let err = parse_err(&["{{if .Line}}x{{ \"}}\" }}{{/* {{end}} */}}"]);
    assert_eq!(err.column(), Some(1), "{err}");
    assert!(err.to_string().contains("{{if}} is never closed"), "{err}");

    let err = parse_err(&["{{range 3}}{{end}}{{break}}"]);
    assert_eq!(err.column(), Some(21), "{err}");

    // Balanced forms, including strings and comments that look like actions.
    parse_ok(&[
        "{{if .Line}}a{{else if .Idx}}b{{else with .Line}}c{{else}}d{{end}}",
        "{{- range 2 -}}{{if eq . 1}}{{break}}{{end}}{{end -}}",
        r#"{{printf "{{end}}"}}{{printf `}}{{end}}`}}{{/* {{end}} }} */}}{{'}'}}"#,
        r#"{{block "b" .Line}}{{.}}{{end}}"#,
    ]);
}

#[test]
fn unknown_names_fail_at_parse_time() {
    let err = parse_err(&["echo", "{{.Line}}", "x{{upper .Line}}"]);
    assert_eq!(err.arg_index(), 3);
    assert_eq!(err.column(), Some(4));
    assert!(matches!(err.kind(), ErrorKind::UnknownFunction(f) if f == "upper"));
    assert_eq!(
        err.to_string(),
        r#"argument 3 ("x{{upper .Line}}"): column 4: function "upper" not defined"#
    );

    // Also as an argument, in a pipeline, and behind a short-circuit.
    for src in [
        "{{printf \"%s\" (lower .Line)}}",
        "{{.Line | lower}}",
        "{{if false}}{{lower}}{{end}}",
        "{{or true lower}}",
    ] {
        let err = parse_err(&[src]);
        assert!(
            matches!(err.kind(), ErrorKind::UnknownFunction(_)),
            "{src}: {err}"
        );
    }

    let err = parse_err(&["{{.Lines}}"]);
    assert!(
        matches!(err.kind(), ErrorKind::UnknownField { .. }),
        "{err}"
    );
    assert_eq!(err.column(), Some(3));
    assert!(err.to_string().contains(".Line, .Idx"), "{err}");

    let err = parse_err(&["{{$.Nope}}"]);
    assert!(
        matches!(err.kind(), ErrorKind::UnknownField { .. }),
        "{err}"
    );

    let err = parse_err(&["{{$x}}"]);
    assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");
    let err = parse_err(&["{{$x = 1}}"]);
    assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");
    let err = parse_err(&["{{if true}}{{$x := 1}}{{end}}{{$x}}"]);
    assert!(matches!(err.kind(), ErrorKind::UnknownVariable(_)), "{err}");

    let err = parse_err(&["{{template \"nope\"}}"]);
    assert!(matches!(err.kind(), ErrorKind::UnknownTemplate(_)), "{err}");

    let err = parse_err(&["{{define \"a\"}}1{{end}}{{define \"a\"}}2{{end}}"]);
    assert!(err.to_string().contains("multiple definition"), "{err}");

    // Fields of other values are checked when rendering.
    let t = parse_ok(&["{{with .Line}}{{.Foo}}{{end}}"]);
    assert!(t.render(&job("x", 0)).is_err());
}

#[test]
fn methods_must_be_called_with_one_argument() {
    for src in ["{{.I}}", "{{.O \"a\" \"b\"}}", "{{\"a\" | .IO \"b\"}}"] {
        let err = parse_err(&[src]);
        assert!(
            matches!(err.kind(), ErrorKind::BadMethodCall { .. }),
            "{src}: {err}"
        );
        assert!(
            err.to_string().contains("exactly one argument"),
            "{src}: {err}"
        );
    }
    let err = parse_err(&["{{printf \"%s\" .AsFile}}"]);
    assert!(
        err.to_string().contains("is a method, not a value"),
        "{err}"
    );
    let err = parse_err(&["{{.I.X \"a\"}}"]);
    assert!(
        matches!(err.kind(), ErrorKind::BadMethodCall { .. }),
        "{err}"
    );

    let t = parse_ok(&["{{.I .Idx}}"]);
    let err = match t.render(&job("", 0)) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        r#"argument 1 ("{{.I .Idx}}"): .I: expects a string argument, got int"#
    );
}

#[test]
fn escaping_paths_are_refused() {
    // Literal paths fail at parse time, with the column of the path.
    let err = parse_err(&["cp", "{{.O \"../x\"}}"]);
    assert_eq!(err.arg_index(), 2);
    assert_eq!(err.column(), Some(6));
    assert_eq!(
        err.to_string(),
        r#"argument 2 ("{{.O \"../x\"}}"): column 6: .O "../x": ".." is not allowed; the path must stay inside the working directory"#
    );
    for src in [
        "{{.I \"a/../../b\"}}",
        "{{.IO \"a/..\"}}",
        "{{.Output \"..\"}}",
    ] {
        let err = parse_err(&[src]);
        assert!(
            matches!(err.kind(), ErrorKind::EscapesWorkDir { .. }),
            "{src}: {err}"
        );
    }
    let err = parse_err(&["{{.I \"/etc/passwd\"}}"]);
    assert!(
        matches!(err.kind(), ErrorKind::AbsolutePath { .. }),
        "{err}"
    );
    let err = parse_err(&["{{.O \"./\"}}"]);
    assert!(matches!(err.kind(), ErrorKind::EmptyPath { .. }), "{err}");

    // Computed paths fail when rendering that job.
    let t = parse_ok(&["echo", "{{.O .Line}}", "{{.I .Line}}"]);
    for (line, want) in [
        ("../up", "\"..\" is not allowed"),
        ("/abs/out", "absolute paths are not allowed"),
        ("", "names no file"),
    ] {
        let err = match t.render(&job(line, 0)) {
            Ok(r) => panic!("{line:?}: expected error, got {r:?}"),
            Err(e) => e,
        };
        assert_eq!(err.arg_index(), 2, "{err}");
        assert!(err.to_string().contains(want), "{line:?}: {err}");
        assert!(err.to_string().contains(&format!("{line:?}")), "{err}");
    }
    // `..` inside a file name is fine.
    let r = render(&parse_ok(&["{{.O \"a..b/..c\"}}"]), &job("", 0));
    assert_eq!(r.outputs[0].remote, "a..b/..c");
}

#[test]
fn missing_input_is_a_render_error() {
    let dir = dir_with(&[("present.txt", "")]);
    let t = parse_ok(&["cat", "{{.I .Line}}"]);
    let err = match t.render_in(&job("absent.txt", 4), dir.path()) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert_eq!(err.arg_index(), 2);
    assert!(
        matches!(err.kind(), ErrorKind::InputMissing(p) if p == &dir.path().join("absent.txt"))
    );
    assert!(
        err.to_string().contains("absent.txt\" does not exist"),
        "{err}"
    );

    // A directory is not a valid input.
    let err = match t.render_in(&job(".", 0), dir.path().parent().unwrap_or(dir.path())) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert!(matches!(err.kind(), ErrorKind::EmptyPath { .. }), "{err}");
    let sub = dir_with(&[("d/f", "")]);
    let err = match t.render_in(&job("d", 0), sub.path()) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert!(matches!(err.kind(), ErrorKind::InputNotFile(_)), "{err}");

    // Other jobs are unaffected.
    let r = render_in(&t, &job("present.txt", 5), dir.path());
    assert_eq!(r.args, ["cat", "present.txt"]);
}

#[test]
fn render_relative_to_cwd() {
    // `render` leaves local paths relative, to be resolved against the cwd.
    let t = parse_ok(&["{{.O \"out/x\"}}"]);
    let r = t.render(&job("", 0));
    assert!(r.is_ok());
    if let Ok(r) = r {
        assert_eq!(r.outputs[0].local, PathBuf::from("out/x"));
    }
}

#[test]
fn execution_errors_are_reported() {
    let t = parse_ok(&["ok", "{{index .Line 10}}"]);
    let err = match t.render(&job("short", 0)) {
        Ok(r) => panic!("expected error, got {r:?}"),
        Err(e) => e,
    };
    assert_eq!(err.arg_index(), 2);
    assert!(matches!(err.kind(), ErrorKind::Exec(_)), "{err}");
    assert!(err.to_string().contains("index out of range"), "{err}");
}

#[test]
fn invoke_has_no_line() {
    let err = match ArgTemplates::parse_invoke(&strings(&["{{.Line}}"])) {
        Ok(t) => panic!("expected error, got {t:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(err.kind(), ErrorKind::UnknownField { .. }),
        "{err}"
    );
    let t = match ArgTemplates::parse_invoke(&strings(&["{{.O \"x\"}}", "{{.AsFile \"y\"}}"])) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    };
    let r = render(&t, &JobContext::default());
    assert_eq!(r.args, ["x", "llama/tmp.0"]);
}

#[test]
fn long_arguments_are_shortened_in_errors() {
    let long = format!("{}{{{{nope}}}}", "x".repeat(200));
    let err = parse_err(&[&long]);
    let shown = err.to_string();
    assert!(shown.contains("...)"), "{shown}");
    assert!(shown.len() < 200, "{shown}");
    assert_eq!(err.arg(), long);
    assert_eq!(err.column(), Some(203));
}

#[test]
fn builtin_list_matches_gotmpl() {
    for name in BUILTINS {
        let result = Template::new("t")
            .parse(&format!("{{{{{name}}}}}"))
            .and_then(|t| t.execute_to_string(&Value::Nil));
        assert!(
            !matches!(result, Err(gotmpl::TemplateError::UndefinedFunction(_))),
            "{name} is not a gotmpl builtin"
        );
    }
}

#[test]
fn concurrent_rendering() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ArgTemplates>();
    let t = parse_ok(&["{{.Idx}}", "{{.AsFile .Line}}", "{{.O .Line}}"]);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let t = &t;
                s.spawn(move || render(t, &job(&format!("f{i}"), i)))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let r = match h.join() {
                Ok(r) => r,
                Err(_) => panic!("thread {i} panicked"),
            };
            assert_eq!(
                r.args,
                [i.to_string(), "llama/tmp.0".into(), format!("f{i}")]
            );
            assert_eq!(r.inputs.len(), 1);
            assert_eq!(r.outputs.len(), 1);
        }
    });
}

/// Pieces template text is built from: the methods, `printf`, fields, braces, quotes and
/// paths that try to escape, so random sequences hit both valid and broken templates.
const VOCABULARY: &[&str] = &[
    "{{.Line}}",
    "{{.Idx}}",
    "{{.I .Line}}",
    "{{.O .Line}}",
    "{{.IO .Line}}",
    "{{.Input .Line}}",
    "{{.Output (printf \"out/%s\" .Line)}}",
    "{{.O (printf \"%s/../x\" .Line)}}",
    "{{.O (printf \"/%s\" .Line)}}",
    "{{.I \"x\"}}",
    "{{.IO \"x\"}}",
    "{{.O \"../x\"}}",
    "{{.O \"/abs\"}}",
    "{{.O \"a//./b\"}}",
    "{{.AsFile .Line}}",
    "{{.AsFile \"\\x00zz\"}}",
    "{{printf \"%s-%d\" .Line .Idx}}",
    "{{printf \"%q\" .Line}}",
    "{{printf \"%x\" .Line}}",
    "{{.O (printf \"%.3s\" .Line)}}",
    "{{if .Line}}",
    "{{else}}",
    "{{end}}",
    "{{range .Line}}",
    "{{with .Line}}",
    "{{len .Line}}",
    "{{.O (slice .Line 1)}}",
    "{{",
    "}}",
    "{",
    "}",
    "\"",
    "'",
    "`",
    "(",
    ")",
    " ",
    "|",
    ".",
    "..",
    "/",
    "x",
    "$",
    "\u{e9}",
    "\\",
];

/// Input lines: arbitrary bytes (odd ones included), and names that exist, climb or
/// are absolute.
fn line_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..12),
        Just(b"x".to_vec()),
        Just(b"n\xe9".to_vec()),
        Just(b"sub/n\xe8".to_vec()),
        Just(b"../x".to_vec()),
        Just(b"/etc/passwd".to_vec()),
        Just(b"..".to_vec()),
        Just(b"a\0b".to_vec()),
    ]
}

use proptest::strategy::Strategy as _;

/// One directory of inputs for every case (files are only read): `x`, `n\xe9`,
/// `sub/x` and `sub/n\xe8`.
fn property_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::ffi::OsStrExt;
        let dir = dir_with(&[("x", "x"), ("sub/x", "sx")]);
        let exact = |name: &[u8]| std::ffi::OsStr::from_bytes(name).to_os_string();
        let write = |path: PathBuf, data: &[u8]| {
            if let Err(e) = std::fs::write(&path, data) {
                panic!("write {path:?}: {e}");
            }
        };
        write(dir.path().join(exact(b"n\xe9")), b"e9");
        write(dir.path().join("sub").join(exact(b"n\xe8")), b"e8");
        dir
    })
    .path()
}

/// How far the property cases got: cases run, parsed, rendered, declared a file.
static REACHED: [std::sync::atomic::AtomicUsize; 4] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 4];

const PROPERTY_CASES: u32 = 1000;

// 1000 cases, each a parse and two renders of at most 4 arguments: a few seconds.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: PROPERTY_CASES,
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]

    #[test]
    fn templates_never_panic_stay_inside_and_render_deterministically(
        args in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..6)
                .prop_map(|pieces| pieces.concat()),
            1..4,
        ),
        line in line_bytes(),
        idx in 0usize..1000,
    ) {
        use proptest::prelude::*;
        use std::sync::atomic::Ordering::Relaxed;
        let dir = property_dir();
        let case = REACHED[0].fetch_add(1, Relaxed) + 1;
        if case == PROPERTY_CASES as usize {
            // The last case (no shrinking happens unless one failed): the vocabulary must
            // keep reaching renders that declare files, or the properties prove nothing.
            let [_, parsed, rendered, with_files] = REACHED.each_ref().map(|c| c.load(Relaxed));
            eprintln!("template properties: {case} cases, {parsed} parsed, {rendered} rendered, {with_files} declared files");
            prop_assert!(with_files >= 50, "only {with_files} of {case} cases declared files");
        }
        let Ok(templates) = ArgTemplates::parse(&args) else {
            return Ok(());
        };
        REACHED[1].fetch_add(1, Relaxed);
        let job = JobContext {
            line: llama_core::encode_name(&line).into_owned(),
            idx,
        };
        let first = templates.render_in(&job, dir);
        let second = templates.render_in(&job, dir);
        match (&first, &second) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            _ => prop_assert!(false, "one render failed, the other did not: {first:?} {second:?}"),
        }
        let Ok(rendered) = first else {
            return Ok(());
        };
        REACHED[2].fetch_add(1, Relaxed);
        if !rendered.inputs.is_empty() || !rendered.outputs.is_empty() {
            REACHED[3].fetch_add(1, Relaxed);
        }
        let remotes = rendered
            .inputs
            .iter()
            .map(InputFile::remote)
            .chain(rendered.outputs.iter().map(|o| o.remote.as_str()));
        for remote in remotes {
            let parts = llama_core::remote_components(remote);
            prop_assert!(parts.is_ok(), "remote path {remote:?} fails the tree's checks");
            let normal = llama_core::normalize_remote(remote).ok();
            prop_assert_eq!(normal.as_deref(), Some(remote));
            prop_assert!(llama_core::decode_name(remote).is_ok(), "{remote:?}");
        }
        let locals = rendered
            .inputs
            .iter()
            .filter_map(|i| match i {
                InputFile::Local { local, .. } => Some(local),
                InputFile::Bytes { .. } => None,
            })
            .chain(rendered.outputs.iter().map(|o| &o.local));
        for local in locals {
            let inside = local.strip_prefix(dir);
            prop_assert!(inside.is_ok(), "{local:?} is outside {dir:?}");
            prop_assert!(
                inside.is_ok_and(|rel| rel.components().all(|c| matches!(c, std::path::Component::Normal(_)))),
                "{local:?} climbs or is absolute"
            );
        }
        for arg in &rendered.args {
            prop_assert!(llama_core::decode_name(arg).is_ok(), "{arg:?}");
        }
    }
}

// See: issue 12, defect 11b
#[test]
fn r12_non_utf8_lines_name_their_files_exactly() {
    use std::os::unix::ffi::OsStrExt;
    let dir = dir_with(&[]);
    let name = std::ffi::OsStr::from_bytes(b"n\xe9");
    std::fs::write(dir.path().join(name), b"e9").unwrap();
    let t = parse_ok(&[
        "{{.Line}}",
        "{{.I .Line}}",
        "{{.O (printf \"%s.out\" .Line)}}",
        "{{.AsFile .Line}}",
    ]);
    let line = llama_core::encode_name(b"n\xe9").into_owned();
    let r = render_in(&t, &job(&line, 0), dir.path());
    let decoded: Vec<Vec<u8>> = r
        .args
        .iter()
        .map(|a| llama_core::decode_name(a).unwrap().into_owned())
        .collect();
    assert_eq!(
        decoded,
        [&b"n\xe9"[..], b"n\xe9", b"n\xe9.out", b"llama/tmp.1"]
    );
    assert_eq!(
        r.inputs[0],
        InputFile::Local {
            local: dir.path().join(name),
            remote: line.clone()
        }
    );
    assert_eq!(
        r.inputs[1],
        InputFile::Bytes {
            data: b"n\xe9\n".to_vec(),
            remote: "llama/tmp.1".into()
        }
    );
    assert_eq!(
        r.outputs[0].local.as_os_str().as_bytes(),
        [dir.path().as_os_str().as_bytes(), b"/n\xe9.out"].concat()
    );
    // A NUL that is not an escape cannot reach a command or a file name.
    let bad = parse_ok(&["{{printf \"a\\x00\"}}"]).render_in(&job("", 0), dir.path());
    assert!(matches!(
        bad.map_err(|e| e.kind),
        Err(ErrorKind::BadEscape(_))
    ));
}
