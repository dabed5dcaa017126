use std::collections::HashMap;

use super::*;

#[derive(Default)]
struct Table {
    macros: HashMap<String, Macro>,
    headers: Vec<(bool, String)>,
    asked: Vec<(bool, bool, String)>,
    features: HashMap<String, i64>,
    cxx: bool,
}

impl Table {
    /// A table from `#define` lines' text: `NAME body` or `NAME(a, b) body`.
    fn with(defines: &[&str]) -> Table {
        let mut t = Table::default();
        for d in defines {
            let text = format!("#define {d}\n");
            for directive in crate::scanner::directives::extract(text.as_bytes()).list {
                if let crate::scanner::directives::Directive::Define { name, def } = directive {
                    t.macros.insert(name, (*def).clone());
                }
            }
        }
        t
    }
}

impl Context for Table {
    fn lookup(&self, name: &str) -> Option<&Macro> {
        self.macros.get(name)
    }
    fn has_include(&mut self, next: bool, quoted: bool, name: &str) -> bool {
        self.asked.push((next, quoted, name.to_string()));
        self.headers.contains(&(quoted, name.to_string()))
    }
    fn feature(&mut self, test: &str, argument: &str) -> Option<i64> {
        self.features.get(&format!("{test}({argument})")).copied()
    }
    fn cplusplus(&self) -> bool {
        self.cxx
    }
    fn builtin_defined(&mut self, name: &str) -> bool {
        ALWAYS_DEFINED.contains(&name) || self.features.contains_key(&format!("defined({name})"))
    }
}

fn eval(expr: &str, t: &mut Table) -> Result<bool, Undecidable> {
    evaluate(expr, t)
}

#[test]
fn arithmetic_follows_c() {
    let t = &mut Table::default();
    for (expr, want) in [
        ("1", true),
        ("0", false),
        ("1 + 2 * 3 == 7", true),
        ("(1 + 2) * 3 == 9", true),
        ("10 / 3 == 3 && 10 % 3 == 1", true),
        ("-1 < 0", true),
        // An unsigned operand makes the comparison unsigned.
        ("-1 < 0u", false),
        ("-1 > 0U", true),
        ("0xffffffffffffffff == -1", true),
        // Too large for intmax_t: unsigned.
        ("18446744073709551615 > 0", true),
        ("1 << 4 == 16 && 256 >> 4 == 16", true),
        ("-16 >> 2 == -4", true),
        ("~0 == -1", true),
        ("!0 && !!5", true),
        ("0x10 == 16 && 010 == 8 && 0b101 == 5", true),
        ("1'000'000 == 1000000L", true),
        ("199711L < 201103ULL", true),
        (
            "'a' == 97 && '\\n' == 10 && '\\x41' == 65 && '\\0' == 0",
            true,
        ),
        ("1 ? 2 : 0", true),
        ("0 ? 1 : 0", false),
        ("(3, 0)", false),
        ("5 & 3 ^ 1 | 8", true),
        ("2 > 1 == 1", true),
    ] {
        assert_eq!(eval(expr, t), Ok(want), "{expr}");
    }
}

#[test]
fn a_division_by_zero_counts_only_where_it_is_evaluated() {
    let t = &mut Table::default();
    assert_eq!(eval("0 && 1 / 0", t), Ok(false));
    assert_eq!(eval("1 || 1 % 0", t), Ok(true));
    assert_eq!(eval("1 ? 1 : 1 / 0", t), Ok(true));
    assert!(eval("1 / 0", t).is_err());
    assert!(eval("1 && 1 / 0", t).is_err());
}

#[test]
fn defined_and_macros_expand_as_the_preprocessor_does() {
    let t = &mut Table::with(&[
        "__GNUC__ 12",
        "__GNUC_MINOR__ 2",
        "__GNUC_PREREQ(maj, min) ((__GNUC__ << 16) + __GNUC_MINOR__ >= ((maj) << 16) + (min))",
        "EMPTY",
        "SELF SELF + 1",
        "ALIAS __GNUC_PREREQ",
        "TWICE(x) x + x",
        "VA(...) (__VA_ARGS__)",
        "GNU_VA(args...) args",
    ]);
    for (expr, want) in [
        ("defined __GNUC__ && defined(__GNUC_MINOR__)", true),
        ("defined UNDEFINED || defined(UNDEFINED)", false),
        ("__GNUC_PREREQ (4, 8)", true),
        ("__GNUC_PREREQ(12, 3)", false),
        // A name that expands to a function-like macro takes the arguments after it.
        ("ALIAS(12, 2)", true),
        ("UNDEFINED == 0", true),
        ("EMPTY 1", true),
        // A macro is not expanded inside itself: SELF + 1 with SELF as 0.
        ("SELF == 1", true),
        // ... but again after it ends.
        ("SELF + SELF == 2", true),
        ("TWICE(__GNUC__) == 24", true),
        ("VA(1, 0)", false),
        ("(GNU_VA(0, 7)) == 7", true),
        // A function-like macro's name alone is not a call: 0.
        ("TWICE", false),
        ("defined __has_include && !defined __has_builtin", true),
    ] {
        assert_eq!(eval(expr, t), Ok(want), "{expr}");
    }
}

#[test]
fn token_pasting_works_as_glibc_uses_it() {
    // glibc's <features.h>: `#if __GLIBC_USE (IEC_60559_BFP_EXT_C2X)`.
    let t = &mut Table::with(&[
        "__GLIBC_USE(F) __GLIBC_USE_ ## F",
        "__GLIBC_USE_IEC_60559_BFP_EXT_C2X 1",
        "__GLIBC_USE_DEPRECATED_GETS 0",
        "CAT(a, b) a ## b",
        "STR(x) #x",
    ]);
    assert_eq!(eval("__GLIBC_USE (IEC_60559_BFP_EXT_C2X)", t), Ok(true));
    assert_eq!(eval("__GLIBC_USE (DEPRECATED_GETS)", t), Ok(false));
    assert_eq!(eval("CAT(1, 2) == 12", t), Ok(true));
    assert_eq!(eval("CAT(, 3) == 3 && CAT(4,) == 4", t), Ok(true));
    assert!(eval("CAT(+, -)", t).is_err(), "+- is not one token");
}

#[test]
fn stringizing_keeps_the_spacing_of_the_source() {
    // Linux's trace headers: `#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)`.
    let t = &mut Table::with(&[
        "__stringify_1(x...) #x",
        "__stringify(x...) __stringify_1(x)",
        "TRACE_INCLUDE_PATH asm/trace/",
        "TRACE_INCLUDE(system) __stringify(TRACE_INCLUDE_PATH/system.h)",
        "SPACED(x) # x",
        "PASTE(a, b) a ## b",
        "ID(x) x",
    ]);
    assert_eq!(
        header_of("TRACE_INCLUDE(fpu)", t),
        Ok((true, "asm/trace//fpu.h".to_string()))
    );
    assert_eq!(
        header_of("SPACED(  a   b  )", t),
        Ok((true, "a b".to_string()))
    );
    assert_eq!(
        header_of("__stringify(x+y - z)", t),
        Ok((true, "x+y - z".to_string()))
    );
    assert_eq!(eval("PASTE( 1 , 2 ) == 12 && ID ( 3 ) == 3", t), Ok(true));
    assert_eq!(eval("defined ( ID ) && defined ID", t), Ok(true));
}

#[test]
fn has_include_asks_the_walk_with_the_name_as_written() {
    let t = &mut Table::with(&["HDR <sys/cfg.h>", "QHDR \"local.h\""]);
    t.headers = vec![(false, "sys/cfg.h".into()), (true, "local.h".into())];
    assert_eq!(eval("__has_include(<sys/cfg.h>)", t), Ok(true));
    assert_eq!(eval("__has_include(\"sys/cfg.h\")", t), Ok(false));
    assert_eq!(eval("__has_include_next(<none.h>)", t), Ok(false));
    assert_eq!(
        eval("__has_include(HDR) && __has_include(QHDR)", t),
        Ok(true)
    );
    assert_eq!(
        t.asked[..3],
        [
            (false, false, "sys/cfg.h".to_string()),
            (false, true, "sys/cfg.h".to_string()),
            (true, false, "none.h".to_string()),
        ]
    );
}

#[test]
fn feature_tests_are_answered_by_the_caller_or_undecidable() {
    let t = &mut Table::default();
    t.features
        .insert("__has_builtin(__builtin_expect)".into(), 1);
    assert_eq!(eval("__has_builtin(__builtin_expect)", t), Ok(true));
    assert!(eval("__has_attribute(nonnull)", t).is_err());
}

#[test]
fn true_and_false_are_values_only_in_cxx() {
    let t = &mut Table::default();
    assert_eq!(eval("true", t), Ok(false));
    t.cxx = true;
    assert_eq!(eval("true && !false", t), Ok(true));
}

#[test]
fn text_that_is_not_an_expression_is_undecidable() {
    let t = &mut Table::with(&["LOOP_A LOOP_B", "LOOP_B LOOP_A", "F(x) x"]);
    for expr in [
        "", "1 +", "(1", "1 2", "\"str\"", "1.5 > 1", "F(1, 2)", "defined", "@", "F(", "'ab'",
    ] {
        assert!(eval(expr, t).is_err(), "{expr:?} evaluated");
    }
    // Mutual recursion ends (each painted blue inside the other): 0.
    assert_eq!(eval("LOOP_A", t), Ok(false));
}
