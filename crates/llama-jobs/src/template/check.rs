//! Parse-time checks of one argument: what Go would reject before running, and the
//! rewriting of method calls into the function calls gotmpl can evaluate.

use std::collections::{BTreeMap, HashSet};

use gotmpl::parse::{
    BranchNode, CommandNode, Expr, ListNode, Node, Parser, PipeNode, Pos, SmolStr,
};
use gotmpl::{MissingKey, Template};

use super::error::line_col;
use super::files::clean_path;
use super::{BUILTINS, ErrorKind, MAIN, Method, method_named};

/// A located parse-time problem: the kind and its (line, column) if known.
type Located = (ErrorKind, Option<(usize, usize)>);

/// Parses, checks and prepares one argument.
pub(super) fn compile(src: &str, fields: &'static [&'static str]) -> Result<Template, Located> {
    let (mut tree, mut defines) = Parser::new(src, "{{", "}}")
        .and_then(Parser::parse)
        .map_err(|err| match err {
            gotmpl::TemplateError::Parse {
                line, col, message, ..
            }
            | gotmpl::TemplateError::Lex {
                line, col, message, ..
            } => (ErrorKind::Syntax(message), Some((line, col))),
            other => (ErrorKind::Syntax(other.to_string()), None),
        })?;
    check_structure(src)?;

    // Go rejects two non-empty definitions of one name in a single parse; an
    // empty redefinition is ignored.
    let mut bodies: BTreeMap<String, ListNode> = BTreeMap::new();
    let mut non_empty = HashSet::new();
    let templates: HashSet<String> = defines.iter().map(|d| d.name.to_string()).collect();
    let mut checker = Checker {
        src,
        fields,
        templates,
        vars: Vec::new(),
    };
    for define in &mut defines {
        checker.define_body(&mut define.body)?;
    }
    checker.top_level(&mut tree)?;
    for define in defines {
        let name = define.name.to_string();
        if define.body.is_empty_tree() {
            bodies.entry(name).or_insert(define.body);
        } else if non_empty.insert(name.clone()) {
            bodies.insert(name, define.body);
        } else {
            return Err((
                ErrorKind::Syntax(format!("multiple definition of template {name:?}")),
                Some(line_col(src, define.pos.offset)),
            ));
        }
    }

    let mut template = Template::new(MAIN).missing_key(MissingKey::Error);
    for (name, body) in bodies {
        template = template.add_parse_tree(&name, body);
    }
    Ok(template.add_parse_tree(MAIN, tree))
}

/// Keyword of a `{{...}}` action that affects block structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    If,
    Range,
    With,
    Define,
    Block,
    /// `{{else}}`; `chained` for `{{else if ...}}` / `{{else with ...}}`.
    Else {
        chained: bool,
    },
    End,
}

impl Keyword {
    fn name(self) -> &'static str {
        match self {
            Keyword::If => "if",
            Keyword::Range => "range",
            Keyword::With => "with",
            Keyword::Define => "define",
            Keyword::Block => "block",
            Keyword::Else { .. } => "else",
            Keyword::End => "end",
        }
    }
}

/// Finds the structural keyword actions of a template that gotmpl already
/// lexed successfully, with the byte offset of their `{{`.
fn structural_actions(src: &str) -> Vec<(usize, Keyword)> {
    fn word(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }
    let mut found = Vec::new();
    let mut pos = 0;
    while let Some(rel) = src.get(pos..).and_then(|rest| rest.find("{{")) {
        let start = pos + rel;
        let mut rest = &src[start + 2..];
        // A trim marker is "-" followed by white space.
        if let Some(after) = rest.strip_prefix('-')
            && after.starts_with([' ', '\t', '\r', '\n'])
        {
            rest = after;
        }
        rest = rest.trim_start();
        let body_start = src.len() - rest.len();
        if rest.starts_with("/*") {
            // A comment may contain "}}"; it ends at "*/".
            let Some(close) = rest.find("*/") else { break };
            let after = body_start + close + 2;
            match src[after..].find("}}") {
                Some(end) => pos = after + end + 2,
                None => break,
            }
            continue;
        }
        let keyword = match word(rest) {
            "if" => Some(Keyword::If),
            "range" => Some(Keyword::Range),
            "with" => Some(Keyword::With),
            "define" => Some(Keyword::Define),
            "block" => Some(Keyword::Block),
            "end" => Some(Keyword::End),
            "else" => {
                let next = word(rest["else".len()..].trim_start());
                Some(Keyword::Else {
                    chained: next == "if" || next == "with",
                })
            }
            _ => None,
        };
        if let Some(keyword) = keyword {
            found.push((start, keyword));
        }
        match action_end(src, body_start) {
            Some(end) => pos = end,
            None => break,
        }
    }
    found
}

/// Byte offset just past the `}}` closing the action whose body starts at
/// `from`, skipping string, raw string and character literals.
fn action_end(src: &str, from: usize) -> Option<usize> {
    let bytes = src.as_bytes();
    let mut i = from;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            quote @ (b'"' | b'\'') => loop {
                i += 1;
                match bytes.get(i) {
                    None => return None,
                    Some(&c) if c == quote => break,
                    Some(b'\\') => i += 1,
                    Some(_) => {}
                }
            },
            b'`' => i += 1 + src.get(i + 1..)?.find('`')?,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Checks that `{{if}}`/`{{range}}`/`{{with}}`/`{{define}}`/`{{block}}`,
/// `{{else}}` and `{{end}}` balance. gotmpl 0.6.1 does not: it silently drops
/// everything after a stray `{{end}}` and accepts a missing one.
fn check_structure(src: &str) -> Result<(), Located> {
    let at = |offset: usize| Some(line_col(src, offset));
    // (opening keyword, its offset, whether a plain {{else}} was seen)
    let mut open: Vec<(Keyword, usize, bool)> = Vec::new();
    for (offset, keyword) in structural_actions(src) {
        match keyword {
            Keyword::If | Keyword::Range | Keyword::With | Keyword::Define | Keyword::Block => {
                open.push((keyword, offset, false));
            }
            Keyword::Else { chained } => match open.last_mut() {
                Some((Keyword::If | Keyword::Range | Keyword::With, _, seen_else)) => {
                    if *seen_else {
                        return Err((
                            ErrorKind::Syntax(
                                "expected {{end}} after {{else}}; found another {{else}}".into(),
                            ),
                            at(offset),
                        ));
                    }
                    *seen_else = !chained;
                }
                _ => {
                    return Err((
                        ErrorKind::Syntax(
                            "unexpected {{else}} outside {{if}}, {{with}} or {{range}}".into(),
                        ),
                        at(offset),
                    ));
                }
            },
            Keyword::End => {
                if open.pop().is_none() {
                    return Err((
                        ErrorKind::Syntax("unexpected {{end}} with no open block".into()),
                        at(offset),
                    ));
                }
            }
        }
    }
    match open.pop() {
        Some((keyword, offset, _)) => Err((
            ErrorKind::Syntax(format!(
                "{{{{{}}}}} is never closed: missing {{{{end}}}}",
                keyword.name()
            )),
            at(offset),
        )),
        None => Ok(()),
    }
}

/// What dot and `$` refer to at a point of the template.
#[derive(Clone, Copy)]
struct Scope {
    /// Dot is the job context (not rebound by `with`/`range`/`define`).
    dot_is_root: bool,
    /// `$` is the job context (outside `define` bodies).
    dollar_is_root: bool,
    /// Inside a `{{range}}` body, where `{{break}}`/`{{continue}}` are allowed.
    in_range: bool,
}

/// Walks a parsed argument, rejecting what Go would reject at parse time (or
/// is certain to fail at execution), and rewriting method calls.
///
/// gotmpl has no method calls: `.I "x"` is a field lookup that cannot take
/// arguments. The job context therefore holds each method as a function
/// value, and every command `.I ARGS` is rewritten to `call .I ARGS`.
struct Checker<'a> {
    src: &'a str,
    fields: &'static [&'static str],
    templates: HashSet<String>,
    vars: Vec<SmolStr>,
}

impl Checker<'_> {
    fn at(&self, pos: Pos) -> Option<(usize, usize)> {
        Some(line_col(self.src, pos.offset))
    }

    fn top_level(&mut self, list: &mut ListNode) -> Result<(), Located> {
        self.vars = vec![SmolStr::new_static("$")];
        let scope = Scope {
            dot_is_root: true,
            dollar_is_root: true,
            in_range: false,
        };
        self.list(list, scope)
    }

    fn define_body(&mut self, list: &mut ListNode) -> Result<(), Located> {
        let saved = std::mem::replace(&mut self.vars, vec![SmolStr::new_static("$")]);
        let scope = Scope {
            dot_is_root: false,
            dollar_is_root: false,
            in_range: false,
        };
        let result = self.list(list, scope);
        self.vars = saved;
        result
    }

    fn list(&mut self, list: &mut ListNode, scope: Scope) -> Result<(), Located> {
        list.nodes
            .iter_mut()
            .try_for_each(|node| self.node(node, scope))
    }

    fn node(&mut self, node: &mut Node, scope: Scope) -> Result<(), Located> {
        match node {
            Node::List(list) => self.list(list, scope),
            Node::Text(_) => Ok(()),
            Node::Action(action) => self.pipe(&mut action.pipe, scope),
            Node::If(branch) => self.branch(branch, scope, scope),
            Node::With(branch) => {
                let body = Scope {
                    dot_is_root: false,
                    ..scope
                };
                self.branch(branch, scope, body)
            }
            Node::Range(branch) => {
                let body = Scope {
                    dot_is_root: false,
                    in_range: true,
                    ..scope
                };
                self.branch(branch, scope, body)
            }
            Node::Template(call) => {
                if !self.templates.contains(call.name.as_str()) {
                    return Err((
                        ErrorKind::UnknownTemplate(call.name.to_string()),
                        self.at(call.pos),
                    ));
                }
                match &mut call.pipe {
                    Some(pipe) => self.pipe(pipe, scope),
                    None => Ok(()),
                }
            }
            Node::Define(define) => self.define_body(&mut define.body),
            Node::Break(pos) => self.loop_control("break", *pos, scope),
            Node::Continue(pos) => self.loop_control("continue", *pos, scope),
        }
    }

    /// `{{if}}`, `{{with}}` or `{{range}}`: variables declared in the
    /// pipeline or the bodies go out of scope at `{{end}}`.
    fn branch(
        &mut self,
        branch: &mut BranchNode,
        scope: Scope,
        body: Scope,
    ) -> Result<(), Located> {
        let mark = self.vars.len();
        self.pipe(&mut branch.pipe, scope)?;
        self.list(&mut branch.body, body)?;
        if let Some(else_body) = &mut branch.else_body {
            self.list(else_body, scope)?;
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn loop_control(&self, word: &str, pos: Pos, scope: Scope) -> Result<(), Located> {
        if scope.in_range {
            Ok(())
        } else {
            Err((
                ErrorKind::Syntax(format!("{{{{{word}}}}} outside {{{{range}}}}")),
                self.at(pos),
            ))
        }
    }

    fn pipe(&mut self, pipe: &mut PipeNode, scope: Scope) -> Result<(), Located> {
        if pipe.is_assign {
            if let Some(var) = pipe.decl.iter().find(|v| !self.vars.contains(v)) {
                return Err((
                    ErrorKind::UnknownVariable(var.to_string()),
                    self.at(pipe.pos),
                ));
            }
        } else {
            // Like Go, a declared variable is in scope from its declaration on.
            self.vars.extend(pipe.decl.iter().cloned());
        }
        for (i, command) in pipe.commands.iter_mut().enumerate() {
            self.command(command, scope, i > 0)?;
        }
        Ok(())
    }

    fn command(
        &mut self,
        command: &mut CommandNode,
        scope: Scope,
        piped: bool,
    ) -> Result<(), Located> {
        let Some(head) = command.args.first() else {
            return Ok(());
        };
        let method = match head {
            Expr::Field(_, chain) | Expr::Variable(_, _, chain) => chain.last().cloned(),
            Expr::Chain(_, inner, chain) if !matches!(**inner, Expr::Identifier(..)) => {
                chain.last().cloned()
            }
            _ => None,
        }
        .and_then(|name| method_named(&name).map(|m| (name, m)));

        let Some((name, method)) = method else {
            return command
                .args
                .iter_mut()
                .try_for_each(|arg| self.expr(arg, scope, false));
        };

        // A method call: check it, then rewrite `.M ARGS` to `call .M ARGS`.
        let pos = head.pos();
        let given = command.args.len() - 1 + usize::from(piped);
        if given != 1 {
            return Err((
                ErrorKind::BadMethodCall {
                    method: name.to_string(),
                    problem: format!("takes exactly one argument, got {given}"),
                },
                self.at(pos),
            ));
        }
        if method != Method::AsFile
            && !piped
            && let Some(Expr::String(lit_pos, path)) = command.args.get(1)
            && let Err(kind) = clean_path(&name, path)
        {
            return Err((kind, self.at(*lit_pos)));
        }
        for (i, arg) in command.args.iter_mut().enumerate() {
            self.expr(arg, scope, i == 0)?;
        }
        command
            .args
            .insert(0, Expr::Identifier(pos, SmolStr::new_static("call")));
        Ok(())
    }

    /// Checks an expression; `method_call` when it is the head of a method
    /// call, whose chain may end with a method name.
    fn expr(&mut self, expr: &mut Expr, scope: Scope, method_call: bool) -> Result<(), Located> {
        match expr {
            Expr::Field(pos, chain) => self.chain(*pos, chain, scope.dot_is_root, method_call),
            Expr::Variable(pos, var, chain) => {
                if !self.vars.contains(var) {
                    return Err((ErrorKind::UnknownVariable(var.to_string()), self.at(*pos)));
                }
                let root = var.as_str() == "$" && scope.dollar_is_root;
                self.chain(*pos, chain, root, method_call)
            }
            Expr::Identifier(pos, name) => {
                if BUILTINS.contains(&name.as_str()) {
                    Ok(())
                } else {
                    Err((ErrorKind::UnknownFunction(name.to_string()), self.at(*pos)))
                }
            }
            Expr::Pipe(_, pipe) => self.pipe(pipe, scope),
            Expr::Chain(pos, inner, chain) => {
                let pos = *pos;
                self.expr(inner, scope, false)?;
                self.chain(pos, chain, false, method_call)
            }
            Expr::Dot(_) | Expr::String(..) | Expr::Number(..) | Expr::Bool(..) | Expr::Nil(_) => {
                Ok(())
            }
        }
    }

    /// Checks a field chain; `root` when it starts at the job context.
    fn chain(
        &self,
        pos: Pos,
        chain: &[SmolStr],
        root: bool,
        method_call: bool,
    ) -> Result<(), Located> {
        if root
            && let Some(first) = chain.first()
            && !self.fields.contains(&first.as_str())
        {
            return Err((
                ErrorKind::UnknownField {
                    name: format!(".{first}"),
                    available: self
                        .fields
                        .iter()
                        .map(|f| format!(".{f}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                },
                self.at(pos),
            ));
        }
        for (i, name) in chain.iter().enumerate() {
            if method_named(name).is_some() && !(method_call && i + 1 == chain.len()) {
                return Err((
                    ErrorKind::BadMethodCall {
                        method: name.to_string(),
                        problem: format!(
                            "is a method, not a value; call it with one argument, as in (.{name} \"path\")"
                        ),
                    },
                    self.at(pos),
                ));
            }
        }
        Ok(())
    }
}
