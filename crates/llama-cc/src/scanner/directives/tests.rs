use super::*;

fn includes(text: &str) -> Vec<Target> {
    extract(text.as_bytes())
        .list
        .into_iter()
        .filter_map(|d| match d {
            Directive::Include { target, .. } => Some(target),
            _ => None,
        })
        .collect()
}

fn quoted(name: &str) -> Target {
    Target::Quoted(name.into())
}

fn angled(name: &str) -> Target {
    Target::Angled(name.into())
}

#[test]
fn include_forms_are_told_apart() {
    let text = "#include \"a.h\"\n  #  include <b/c.h> // why\n#include_next <d.h>\n#import \"e.h\"\n#include HEADER(x)\n";
    let list = extract(text.as_bytes()).list;
    assert_eq!(
        list,
        [
            Directive::Include {
                kind: IncludeKind::Include,
                target: quoted("a.h")
            },
            Directive::Include {
                kind: IncludeKind::Include,
                target: angled("b/c.h")
            },
            Directive::Include {
                kind: IncludeKind::IncludeNext,
                target: angled("d.h")
            },
            Directive::Include {
                kind: IncludeKind::Import,
                target: quoted("e.h")
            },
            Directive::Include {
                kind: IncludeKind::Include,
                target: Target::Computed("HEADER(x)".into())
            },
        ]
    );
}

#[test]
fn comments_and_literals_hide_nothing_and_invent_nothing() {
    // A directive inside a block comment is not one; one after a comment on its line is,
    // as is one after a comment that spans lines (white space holding a newline, for C).
    let text = "/*\n#include \"no1.h\"\n*/ #include \"yes0.h\"\n/* x */ #include \"yes1.h\"\nconst char *s = \"#include <no3.h>\";\n// #include <no4.h>\nchar c = '\"'; #include <no5.h>\n#include <yes2.h> /* a\n#include <no6.h> */\n";
    assert_eq!(
        includes(text),
        [quoted("yes0.h"), quoted("yes1.h"), angled("yes2.h")]
    );
}

#[test]
fn a_comment_spanning_lines_joins_them_and_splices_join_lines() {
    let text = "#define A /* one\ntwo */ 1\n#include \\\n  \"spliced.h\"\n#def\\\r\nine B 2\n";
    let list = extract(text.as_bytes()).list;
    assert_eq!(
        list,
        [
            define("A", None, "1".into()),
            Directive::Include {
                kind: IncludeKind::Include,
                target: quoted("spliced.h")
            },
            define("B", None, "2".into()),
        ]
    );
}

#[test]
fn raw_strings_span_lines_without_directives() {
    let text = "auto s = R\"x(\n#include <no.h>\n)x\";\n#include <yes.h>\nint R = 1; char *t = u8R\"(\n#include <no2.h>\n)\";\n";
    assert_eq!(includes(text), [angled("yes.h")]);
    // Not a raw string: R ends an identifier.
    assert_eq!(
        includes("int FOOR\"x\";\n#include <a.h>\n"),
        [angled("a.h")]
    );
}

#[test]
fn macros_and_conditionals_are_kept_as_written() {
    let text = "#define F(a, b) ((a) + (b))\n#define G (x)\n#define EMPTY\n#undef F\n#if defined(X) && Y > 2\n#elif Z\n#elifdef W\n#else\n#endif\n#pragma once\n#pragma GCC diagnostic push\n#error don't\n# 12 \"file.c\" 2\n#\n#assert machine(x86)\n";
    assert_eq!(
        extract(text.as_bytes()).list,
        [
            define(
                "F",
                Some(vec!["a".into(), "b".into()]),
                "((a) + (b))".into()
            ),
            define("G", None, "(x)".into()),
            define("EMPTY", None, String::new()),
            Directive::Undef("F".into()),
            Directive::If("defined(X) && Y > 2".into()),
            Directive::Elif("Z".into()),
            Directive::Elifdef("W".into()),
            Directive::Else,
            Directive::Endif,
            Directive::PragmaOnce,
            Directive::Unknown("assert".into()),
        ]
    );
}

#[test]
fn include_guards_are_recognised_only_when_they_wrap_everything() {
    let guard = |text: &str| extract(text.as_bytes()).guard;
    let body = "#include <x.h>\n#if A\nint a;\n#else\nint b;\n#endif\n";
    assert_eq!(
        guard(&format!(
            "/* licence */\n#ifndef G_H\n#define G_H\n{body}#endif // G_H\n\n"
        )),
        Some("G_H".into())
    );
    assert_eq!(
        guard(&format!("#if !defined(G_H)\n#define G_H 1\n{body}#endif\n")),
        Some("G_H".into())
    );
    assert_eq!(
        guard(&format!("#if ! defined G_H\n#define G_H\n{body}#endif\n")),
        Some("G_H".into())
    );
    // Text before or after, a different macro defined, an #else of the guard, the guard
    // closed early, or no guard at all: the file can say something when G_H is defined.
    assert_eq!(
        guard(&format!("int x;\n#ifndef G_H\n#define G_H\n{body}#endif\n")),
        None
    );
    assert_eq!(
        guard(&format!("#ifndef G_H\n#define G_H\n{body}#endif\nint x;\n")),
        None
    );
    assert_eq!(
        guard(&format!("#ifndef G_H\n#define OTHER\n{body}#endif\n")),
        None
    );
    assert_eq!(
        guard(&format!(
            "#ifndef G_H\n#define G_H\n{body}#else\nint c;\n#endif\n"
        )),
        None
    );
    assert_eq!(
        guard("#ifndef G_H\n#define G_H\n#endif\n#ifdef X\n#endif\n"),
        None
    );
    assert_eq!(guard("#if !defined(G_H) && X\n#define G_H\n#endif\n"), None);
    assert_eq!(guard(body), None);
    assert_eq!(guard("int x;\n"), None);
    assert_eq!(guard(""), None);
}

#[test]
fn unbalanced_text_never_panics() {
    for text in [
        "#endif\n#endif\n",
        "/* never closed\n#include <x.h>\n",
        "\"never closed\n#include <x.h>\n",
        "R\"abc(never closed\n#include <x.h>\n",
        "#include \"unterminated\n",
        "#define F(a\n",
        "\\",
        "#",
    ] {
        let _ = extract(text.as_bytes());
    }
    assert_eq!(
        includes("\"never closed\n#include <x.h>\n"),
        [angled("x.h")]
    );
    assert_eq!(
        includes("#include \"unterminated\n"),
        [Target::Computed("\"unterminated".into())]
    );
}

fn define(name: &str, params: Option<Vec<String>>, body: String) -> Directive {
    Directive::Define {
        name: name.into(),
        def: std::sync::Arc::new(crate::scanner::expr::Macro { params, body }),
    }
}
