//! `#if` expressions: macro expansion and evaluation, as the preprocessor does them.
//!
//! Arithmetic is in the preprocessor's types (`intmax_t`, or `uintmax_t` for an unsigned
//! operand), with C's conversions, so a condition takes the branch the compiler takes.
//! What cannot be decided here (token pasting, a `__has_builtin` the caller cannot answer,
//! a division by zero in an evaluated operand, text that does not parse) is
//! [`Undecidable`], never guessed: the walk then falls back to the compiler.

use std::collections::VecDeque;

/// A macro, as `#define` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macro {
    /// A function-like macro's parameters; `None` for an object-like one.
    pub params: Option<Vec<String>>,
    /// The replacement text.
    pub body: String,
}

/// What an expression needs from the walk that evaluates it.
pub trait Context {
    /// The macro `name`, if defined.
    fn lookup(&self, name: &str) -> Option<&Macro>;
    /// `__has_include` (`next` for `__has_include_next`) of a quoted or angled name:
    /// whether the search finds it.
    fn has_include(&mut self, next: bool, quoted: bool, name: &str) -> bool;
    /// A feature test (`__has_builtin(x)`, `__has_attribute(x)`, ...): its value, if the
    /// caller knows it.
    fn feature(&mut self, test: &str, argument: &str) -> Option<i64>;
    /// Whether `name`, not defined by `#define`, is one the compiler defines itself: the
    /// `__has_*` tests it has ([`FEATURE_TESTS`] differ between compilers and versions).
    fn builtin_defined(&mut self, name: &str) -> bool;
    /// C++: `true` and `false` are keywords with values.
    fn cplusplus(&self) -> bool;
}

/// Why an expression was not evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot evaluate #if {0}")]
pub struct Undecidable(pub String);

fn undecidable(why: impl Into<String>) -> Undecidable {
    Undecidable(why.into())
}

/// Feature tests that read like function calls and are not macros. Which of them a compiler
/// has (and so `defined`) is asked of it: gcc 12 has no `__has_extension`, clang has all.
pub const FEATURE_TESTS: &[&str] = &[
    "__has_attribute",
    "__has_builtin",
    "__has_c_attribute",
    "__has_cpp_attribute",
    "__has_declspec_attribute",
    "__has_extension",
    "__has_feature",
    "__has_warning",
    "__is_identifier",
];

/// Names every compiler that has `__has_include` defines (C++17, C23, gcc 5 and clang).
pub const ALWAYS_DEFINED: &[&str] = &["__has_include", "__has_include_next"];

/// How deep macro expansion may nest before the expression is given up on.
const MAX_EXPANSION_DEPTH: usize = 64;

/// The value of `#if expr`: whether the branch is taken.
pub fn evaluate(expr: &str, cx: &mut dyn Context) -> Result<bool, Undecidable> {
    let tokens = tokenize(expr)?;
    let expanded = without_space(expand(&tokens, cx, 0)?);
    let mut parser = Parser {
        tokens: &expanded,
        at: 0,
    };
    let value = parser.conditional(true)?;
    if parser.at != expanded.len() {
        return Err(undecidable(format!(
            "{expr}: unexpected text after the expression"
        )));
    }
    Ok(value.bits != 0)
}

/// The header a computed `#include` names once its macros are expanded: whether it is the
/// quoted form, and the name.
pub fn header_of(text: &str, cx: &mut dyn Context) -> Result<(bool, String), Undecidable> {
    let tokens = tokenize(text)?;
    header_name(&without_space(expand(&tokens, cx, 0)?))
}

/// `tokens` without the white space between them, which only `#` stringizing reads.
fn without_space(mut tokens: Vec<Token>) -> Vec<Token> {
    tokens.retain(|t| *t != Token::Space);
    tokens
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Number(String),
    Char(String),
    Str(String),
    Punct(&'static str),
    /// A `##` of a macro body, between substitution and pasting.
    Paste,
    /// An empty argument beside `##`, between substitution and pasting.
    Placemarker,
    /// White space between two tokens: `#` keeps it as one space when it stringizes.
    Space,
}

/// Operators longest first, so that `<<=` is not read as `<` `<=`.
const PUNCTUATORS: &[&str] = &[
    "<<=", ">>=", "...", "##", "<<", ">>", "<=", ">=", "==", "!=", "&&", "||", "(", ")", "<", ">",
    "+", "-", "*", "/", "%", "!", "~", "&", "|", "^", "?", ":", ",", "#", ".", "=", ";", "[", "]",
    "{", "}",
];

fn tokenize(text: &str) -> Result<Vec<Token>, Undecidable> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            if !tokens.is_empty() && !bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
                tokens.push(Token::Space);
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            // An encoding prefix belongs to the literal after it.
            if matches!(bytes.get(i), Some(b'\'' | b'"'))
                && matches!(&text[start..i], "L" | "u" | "U" | "u8")
            {
                continue;
            }
            tokens.push(Token::Ident(text[start..i].to_string()));
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // A pp-number: digits, letters, dots, digit separators and signed exponents.
            let start = i;
            i += 1;
            while i < bytes.len() {
                let b = bytes[i];
                let sign =
                    matches!(b, b'+' | b'-') && matches!(bytes[i - 1], b'e' | b'E' | b'p' | b'P');
                if !(sign || b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'\'')) {
                    break;
                }
                i += 1;
            }
            tokens.push(Token::Number(text[start..i].to_string()));
        } else if c == b'\'' || c == b'"' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            if i >= bytes.len() {
                return Err(undecidable(format!("{text}: unterminated literal")));
            }
            i += 1;
            let literal = text[start..i].to_string();
            tokens.push(if c == b'"' {
                Token::Str(literal)
            } else {
                Token::Char(literal)
            });
        } else if let Some(p) = PUNCTUATORS.iter().find(|p| text[i..].starts_with(**p)) {
            tokens.push(Token::Punct(p));
            i += p.len();
        } else {
            return Err(undecidable(format!(
                "{text}: unexpected character {:?}",
                c as char
            )));
        }
    }
    Ok(tokens)
}

/// A token on its way through expansion, with the macros it came out of: those are not
/// expanded again from it (the standard's "painted blue").
type Hidden = (Token, Vec<String>);

/// `tokens` with `defined`, the `__has_*` tests and every macro replaced, rescanning each
/// replacement with the rest of the text (so a macro may expand to a function-like macro's
/// name whose arguments follow it).
fn expand(tokens: &[Token], cx: &mut dyn Context, depth: usize) -> Result<Vec<Token>, Undecidable> {
    if depth > MAX_EXPANSION_DEPTH {
        return Err(undecidable("macros nest too deep"));
    }
    let mut input: VecDeque<Hidden> = tokens.iter().map(|t| (t.clone(), Vec::new())).collect();
    let mut out = Vec::new();
    let mut steps = 0usize;
    while let Some((token, hidden)) = input.pop_front() {
        steps += 1;
        if steps > MAX_EXPANSION_STEPS {
            return Err(undecidable("macros expand too far"));
        }
        let Token::Ident(name) = &token else {
            out.push(token);
            continue;
        };
        match name.as_str() {
            "defined" => {
                let operand = defined_operand(&mut input)?;
                out.push(number(
                    cx.lookup(&operand).is_some() || cx.builtin_defined(&operand),
                ));
            }
            "__has_include" | "__has_include_next" => {
                let args = call_arguments(&mut input)?.concat();
                let expanded = without_space(expand(&plain(&args), cx, depth + 1)?);
                let (quoted, header) = header_name(&expanded)?;
                out.push(number(cx.has_include(
                    name == "__has_include_next",
                    quoted,
                    &header,
                )));
            }
            test if FEATURE_TESTS.contains(&test) => {
                let argument = spell(&plain(&call_arguments(&mut input)?.concat()));
                let value = cx
                    .feature(test, &argument)
                    .ok_or_else(|| undecidable(format!("{test}({argument}) is not known")))?;
                out.push(Token::Number(value.to_string()));
            }
            "true" | "false" if cx.cplusplus() => out.push(number(name == "true")),
            _ if hidden.contains(name) => out.push(token),
            _ => {
                let Some(m) = cx.lookup(name).cloned() else {
                    out.push(token);
                    continue;
                };
                let body = match &m.params {
                    None => tokenize(&m.body)?,
                    // A function-like macro's name not followed by `(` is left alone.
                    Some(_) if !next_is(&input, "(") => {
                        out.push(token);
                        continue;
                    }
                    Some(params) => {
                        let args = call_arguments(&mut input)?;
                        substitute(&m.body, params, &args, cx, depth)?
                    }
                };
                let mut hide = hidden.clone();
                hide.push(name.clone());
                for t in body.into_iter().rev() {
                    input.push_front((t, hide.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// How many tokens one expression may pass through expansion.
const MAX_EXPANSION_STEPS: usize = 100_000;

fn plain(tokens: &[Hidden]) -> Vec<Token> {
    tokens.iter().map(|(t, _)| t.clone()).collect()
}

fn number(b: bool) -> Token {
    Token::Number(if b { "1" } else { "0" }.into())
}

/// Whether the next token of `input` that is not white space is the punctuator `p`.
fn next_is(input: &VecDeque<Hidden>, p: &str) -> bool {
    input
        .iter()
        .find(|(t, _)| *t != Token::Space)
        .is_some_and(|(t, _)| *t == Token::Punct(punctuator(p)))
}

/// The punctuator `p` as the table spells it (`""` for one it does not have).
fn punctuator(p: &str) -> &'static str {
    PUNCTUATORS.iter().find(|q| **q == p).copied().unwrap_or("")
}

/// The next token of `input` that is not white space, taken with the space before it.
fn pop_token(input: &mut VecDeque<Hidden>) -> Option<Hidden> {
    loop {
        match input.pop_front() {
            Some((Token::Space, _)) => continue,
            other => return other,
        }
    }
}

/// The macro name after `defined`, bare or in parentheses, taken from `input`.
fn defined_operand(input: &mut VecDeque<Hidden>) -> Result<String, Undecidable> {
    let missing = || undecidable("`defined` without a macro name");
    match pop_token(input) {
        Some((Token::Ident(name), _)) => Ok(name),
        Some((Token::Punct("("), _)) => match (pop_token(input), pop_token(input)) {
            (Some((Token::Ident(name), _)), Some((Token::Punct(")"), _))) => Ok(name),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// The arguments of a call whose `(` is next in `input`, split at top-level commas and
/// taken from `input` with its `)`.
fn call_arguments(input: &mut VecDeque<Hidden>) -> Result<Vec<Vec<Hidden>>, Undecidable> {
    if !matches!(pop_token(input), Some((Token::Punct("("), _))) {
        return Err(undecidable("a call without its `(`"));
    }
    let mut args = vec![Vec::new()];
    let mut depth = 0usize;
    while let Some(hidden) = input.pop_front() {
        match &hidden.0 {
            Token::Punct(")") if depth == 0 => {
                for arg in &mut args {
                    trim_space(arg);
                }
                if args.len() == 1 && args[0].is_empty() {
                    args.clear();
                }
                return Ok(args);
            }
            Token::Punct(",") if depth == 0 => {
                args.push(Vec::new());
                continue;
            }
            Token::Punct("(") => depth += 1,
            Token::Punct(")") => depth -= 1,
            _ => {}
        }
        if let Some(last) = args.last_mut() {
            last.push(hidden);
        }
    }
    Err(undecidable("a call without its `)`"))
}

/// `arg` without white space at either end.
fn trim_space(arg: &mut Vec<Hidden>) {
    while arg.last().is_some_and(|(t, _)| *t == Token::Space) {
        arg.pop();
    }
    let lead = arg.iter().take_while(|(t, _)| *t == Token::Space).count();
    arg.drain(..lead);
}

/// A macro body's tokens without the white space around `##` and after `#`, which do not
/// take part in pasting or stringizing.
fn body_tokens(body: &str) -> Result<Vec<Token>, Undecidable> {
    let tokens = tokenize(body)?;
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for t in tokens {
        let after_operator = matches!(out.last(), Some(Token::Punct("#" | "##")));
        if t == Token::Space && after_operator {
            continue;
        }
        if t == Token::Punct("##") && out.last() == Some(&Token::Space) {
            out.pop();
        }
        out.push(t);
    }
    Ok(out)
}

/// A function-like macro's body with its parameters replaced: by the argument as written
/// next to `#` (stringized) or `##` (pasted), else by the argument fully expanded.
fn substitute(
    body: &str,
    params: &[String],
    args: &[Vec<Hidden>],
    cx: &mut dyn Context,
    depth: usize,
) -> Result<Vec<Token>, Undecidable> {
    // Parameter names, `__VA_ARGS__` (or GNU's `name...`) last for a variadic macro.
    let mut names: Vec<&str> = params.iter().map(String::as_str).collect();
    let variadic = names.last().is_some_and(|p| p.ends_with("..."));
    if let Some(last) = names.last_mut().filter(|_| variadic) {
        *last = match last.trim_end_matches("...") {
            "" => "__VA_ARGS__",
            named => named,
        };
    }
    let mut args: Vec<Vec<Token>> = args.iter().map(|a| plain(a)).collect();
    if variadic && args.len() >= names.len() {
        let rest = args.split_off(names.len() - 1);
        let joined = rest.join(&Token::Punct(","));
        args.push(joined);
    } else if variadic && args.len() == names.len() - 1 {
        args.push(Vec::new());
    }
    // `F()` passes one empty argument to a macro of one parameter.
    if args.is_empty() && names.len() == 1 {
        args.push(Vec::new());
    }
    if args.len() != names.len() {
        return Err(undecidable(
            "a macro called with the wrong number of arguments",
        ));
    }
    let body = body_tokens(body)?;
    let param = |t: &Token| match t {
        Token::Ident(n) => names.iter().position(|p| p == n),
        _ => None,
    };
    let mut out = Vec::new();
    let mut j = 0;
    while j < body.len() {
        let t = &body[j];
        let pasted = matches!(body.get(j + 1), Some(Token::Punct("##")))
            || (j > 0 && matches!(body[j - 1], Token::Punct("##")));
        match (t, body.get(j + 1).and_then(param)) {
            (Token::Punct("#"), Some(p)) => {
                out.push(Token::Str(format!("\"{}\"", spell_spaced(&args[p]))));
                j += 2;
                continue;
            }
            (Token::Punct("##"), _) => out.push(Token::Paste),
            _ => match param(t) {
                Some(p) if pasted => {
                    if args[p].is_empty() {
                        out.push(Token::Placemarker);
                    } else {
                        out.extend(args[p].iter().cloned());
                    }
                }
                Some(p) => out.extend(expand(&args[p], cx, depth + 1)?),
                None => out.push(t.clone()),
            },
        }
        j += 1;
    }
    paste(out)
}

/// Joins the tokens on either side of each `##` into one; a side that is an empty
/// argument leaves the other as it is.
fn paste(tokens: Vec<Token>) -> Result<Vec<Token>, Undecidable> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut iter = tokens.into_iter();
    while let Some(t) = iter.next() {
        if t != Token::Paste {
            out.push(t);
            continue;
        }
        let left = out
            .pop()
            .ok_or_else(|| undecidable("`##` at the start of a macro"))?;
        let right = iter
            .next()
            .ok_or_else(|| undecidable("`##` at the end of a macro"))?;
        let joined = match (left, right) {
            (Token::Placemarker, r) => r,
            (l, Token::Placemarker) => l,
            (l, r) => {
                let text = format!("{}{}", spell(&[l]), spell(&[r]));
                let mut one = tokenize(&text)?;
                if one.len() != 1 {
                    return Err(undecidable(format!(
                        "pasting makes `{text}`, not one token"
                    )));
                }
                one.remove(0)
            }
        };
        out.push(joined);
    }
    out.retain(|t| *t != Token::Placemarker);
    Ok(out)
}

/// Tokens written back as text the way `#` stringizes them: each run of white space as
/// one space, none where the source had none.
fn spell_spaced(tokens: &[Token]) -> String {
    spell(tokens).replace('\\', "\\\\").replace('"', "\\\"")
}

/// The header an `__has_include` names: `"name"` or `<name>` (the tokens between the
/// angle brackets spelled back together).
fn header_name(tokens: &[Token]) -> Result<(bool, String), Undecidable> {
    match tokens {
        [Token::Str(s)] => Ok((true, s[1..s.len() - 1].to_string())),
        [Token::Punct("<"), inner @ .., Token::Punct(">")] => Ok((false, spell(inner))),
        _ => Err(undecidable("__has_include of something not a header name")),
    }
}

/// Tokens written back as text, white space as one space.
fn spell(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            Token::Ident(s) | Token::Number(s) | Token::Char(s) | Token::Str(s) => s.as_str(),
            Token::Punct(p) => p,
            Token::Paste | Token::Placemarker => "",
            Token::Space => " ",
        })
        .collect()
}

/// A value in the preprocessor's arithmetic: `intmax_t`, or `uintmax_t` when unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Value {
    bits: u64,
    unsigned: bool,
}

impl Value {
    fn signed(v: i64) -> Value {
        Value {
            bits: v as u64,
            unsigned: false,
        }
    }

    fn truth(b: bool) -> Value {
        Value::signed(i64::from(b))
    }
}

/// Binary operators by precedence, lowest first (the conditional and the logical ones are
/// handled apart for their short-circuit).
const BINARY_LEVELS: &[&[&str]] = &[
    &["|"],
    &["^"],
    &["&"],
    &["==", "!="],
    &["<", ">", "<=", ">="],
    &["<<", ">>"],
    &["+", "-"],
    &["*", "/", "%"],
];

struct Parser<'t> {
    tokens: &'t [Token],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Token::Punct(q)) if *q == p) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// `a ? b : c`. `live` is false inside an operand whose value is not used (a division
    /// by zero there is no error, as in the compiler).
    fn conditional(&mut self, live: bool) -> Result<Value, Undecidable> {
        let cond = self.logical_or(live)?;
        if !self.eat("?") {
            return Ok(cond);
        }
        let taken = cond.bits != 0;
        let a = self.conditional(live && taken)?;
        if !self.eat(":") {
            return Err(undecidable("`?` without `:`"));
        }
        let b = self.conditional(live && !taken)?;
        let unsigned = a.unsigned || b.unsigned;
        let v = if taken { a } else { b };
        Ok(Value {
            bits: v.bits,
            unsigned,
        })
    }

    fn logical_or(&mut self, live: bool) -> Result<Value, Undecidable> {
        let mut v = self.logical_and(live)?;
        while self.eat("||") {
            let rhs = self.logical_and(live && v.bits == 0)?;
            v = Value::truth(v.bits != 0 || rhs.bits != 0);
        }
        Ok(v)
    }

    fn logical_and(&mut self, live: bool) -> Result<Value, Undecidable> {
        let mut v = self.binary(0, live)?;
        while self.eat("&&") {
            let rhs = self.binary(0, live && v.bits != 0)?;
            v = Value::truth(v.bits != 0 && rhs.bits != 0);
        }
        Ok(v)
    }

    fn binary(&mut self, level: usize, live: bool) -> Result<Value, Undecidable> {
        let Some(ops) = BINARY_LEVELS.get(level) else {
            return self.unary(live);
        };
        let mut v = self.binary(level + 1, live)?;
        loop {
            let Some(Token::Punct(op)) = self.peek() else {
                return Ok(v);
            };
            let op = *op;
            if !ops.contains(&op) {
                return Ok(v);
            }
            self.at += 1;
            let rhs = self.binary(level + 1, live)?;
            v = apply(op, v, rhs, live)?;
        }
    }

    fn unary(&mut self, live: bool) -> Result<Value, Undecidable> {
        for op in ["!", "~", "-", "+"] {
            if self.eat(op) {
                let v = self.unary(live)?;
                return Ok(match op {
                    "!" => Value::truth(v.bits == 0),
                    "~" => Value { bits: !v.bits, ..v },
                    "-" => Value {
                        bits: v.bits.wrapping_neg(),
                        ..v
                    },
                    _ => v,
                });
            }
        }
        self.primary(live)
    }

    fn primary(&mut self, live: bool) -> Result<Value, Undecidable> {
        let token = self
            .peek()
            .cloned()
            .ok_or_else(|| undecidable("an expression ends early"))?;
        self.at += 1;
        match token {
            Token::Punct("(") => {
                let v = self.comma(live)?;
                if !self.eat(")") {
                    return Err(undecidable("`(` without `)`"));
                }
                Ok(v)
            }
            Token::Number(text) => integer(&text),
            Token::Char(text) => character(&text),
            // What is left after expansion is not a macro: 0.
            Token::Ident(_) => Ok(Value::signed(0)),
            other => Err(undecidable(format!("unexpected {}", spell(&[other])))),
        }
    }

    /// Inside parentheses a comma operator is accepted (C++ and C23 allow it).
    fn comma(&mut self, live: bool) -> Result<Value, Undecidable> {
        let mut v = self.conditional(live)?;
        while self.eat(",") {
            v = self.conditional(live)?;
        }
        Ok(v)
    }
}

/// `a op b` with C's usual arithmetic conversions: unsigned if either side is.
fn apply(op: &str, a: Value, b: Value, live: bool) -> Result<Value, Undecidable> {
    let unsigned = a.unsigned || b.unsigned;
    let (x, y) = (a.bits, b.bits);
    let (sx, sy) = (x as i64, y as i64);
    let arith = |bits: u64| Value { bits, unsigned };
    Ok(match op {
        "*" => arith(x.wrapping_mul(y)),
        "/" | "%" if y == 0 => {
            if live {
                return Err(undecidable("division by zero"));
            }
            arith(0)
        }
        "/" if unsigned => arith(x / y),
        "/" => arith(sx.wrapping_div(sy) as u64),
        "%" if unsigned => arith(x % y),
        "%" => arith(sx.wrapping_rem(sy) as u64),
        "+" => arith(x.wrapping_add(y)),
        "-" => arith(x.wrapping_sub(y)),
        // Shifts take the left operand's type; out-of-range counts as gcc does them.
        "<<" => Value {
            bits: if y >= 64 { 0 } else { x << y },
            ..a
        },
        ">>" if a.unsigned => Value {
            bits: if y >= 64 { 0 } else { x >> y },
            ..a
        },
        ">>" => Value {
            bits: (sx >> y.min(63)) as u64,
            ..a
        },
        "<" | ">" | "<=" | ">=" => {
            let ord = if unsigned { x.cmp(&y) } else { sx.cmp(&sy) };
            Value::truth(match op {
                "<" => ord.is_lt(),
                ">" => ord.is_gt(),
                "<=" => ord.is_le(),
                _ => ord.is_ge(),
            })
        }
        "==" => Value::truth(x == y),
        "!=" => Value::truth(x != y),
        "&" => arith(x & y),
        "^" => arith(x ^ y),
        "|" => arith(x | y),
        _ => return Err(undecidable(format!("operator {op}"))),
    })
}

/// An integer literal: decimal, octal, hex or binary, digit separators, and its suffix
/// (`u` makes it unsigned; a decimal too large for `intmax_t` is unsigned too, as gcc says).
fn integer(text: &str) -> Result<Value, Undecidable> {
    let clean: String = text.chars().filter(|c| *c != '\'').collect();
    let lower = clean.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let (number, suffix) = digits.split_at(end);
    if !suffix.chars().all(|c| matches!(c, 'u' | 'l' | 'z')) {
        return Err(undecidable(format!("{text} is not an integer")));
    }
    let bits = if number.is_empty() {
        0
    } else {
        u64::from_str_radix(number, radix)
            .map_err(|_| undecidable(format!("{text} is out of range")))?
    };
    Ok(Value {
        bits,
        unsigned: suffix.contains('u') || bits > i64::MAX as u64,
    })
}

/// A plain character literal (`'a'`, `'\n'`, `'\0'`, `'\x41'`); wider or multi-character
/// ones are left to the compiler.
fn character(text: &str) -> Result<Value, Undecidable> {
    let inner = text
        .strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .ok_or_else(|| undecidable(format!("{text}: only plain character literals")))?;
    let value = match inner.as_bytes() {
        [c] => i64::from(*c as i8),
        [b'\\', e] => match e {
            b'n' => 10,
            b't' => 9,
            b'r' => 13,
            b'0' => 0,
            b'\\' => 92,
            b'\'' => 39,
            b'"' => 34,
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'v' => 11,
            _ => return Err(undecidable(format!("{text}: escape"))),
        },
        [b'\\', b'x', hex @ ..] => {
            let s = std::str::from_utf8(hex).map_err(|_| undecidable(text.to_string()))?;
            i64::from(
                u8::from_str_radix(s, 16).map_err(|_| undecidable(format!("{text}: escape")))?
                    as i8,
            )
        }
        _ => return Err(undecidable(format!("{text}: multi-character literal"))),
    };
    Ok(Value::signed(value))
}

#[cfg(test)]
mod tests;
