//! Go `text/template` syntax: lexer, parser and translator into an equivalent minijinja template.
//!
//! The translation keeps the Go semantics: user data lives under `__root`, Go variables live in a
//! minijinja namespace (so `$x = …` inside `range` updates the outer variable as in Go), every Go
//! function call becomes a call of the same-named global with the same argument order, and piped
//! values become the last argument.

use std::collections::BTreeSet;

use super::functions::{RANGE_HELPER, forbidden_reason, is_supported};
use super::{Position, TemplateError};

/// Context variable holding the template data (`$`).
pub const ROOT: &str = "__root";
const NAMESPACE: &str = "__ns";

/// A Go template translated to minijinja source.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The minijinja source.
    pub jinja: String,
    /// Top-level variables the template refers to (`.x`, `$.x`, `index . "x"`, `hasKey . "x"`).
    pub root_vars: BTreeSet<String>,
}

/// Translates a Go template into minijinja source.
pub fn translate(source: &str) -> Result<Translation, TemplateError> {
    let segments = Lexer { src: source }.segments()?;
    let nodes = Parser { src: source, segments, next: 0 }.parse_root()?;
    let mut translator = Translator::new(source);
    translator.nodes(&nodes)?;
    Ok(translator.finish())
}

/// Line and column (1-based, in characters) of a byte offset.
pub fn position_of(src: &str, offset: usize) -> Position {
    let before = src.get(..offset.min(src.len())).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    Position { line, column }
}

fn syntax_error(src: &str, offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax { position: position_of(src, offset), message: message.into() }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Field(String),
    Dot,
    Var(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Pipe,
    LParen,
    RParen,
    Comma,
    Declare,
    Assign,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
    /// Whitespace precedes the token (distinguishes `.a.b` from `.a .b`).
    spaced: bool,
}

enum Segment {
    Text(String),
    Action { tokens: Vec<Token>, pos: usize },
}

struct Lexer<'a> {
    src: &'a str,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

impl Lexer<'_> {
    fn segments(&self) -> Result<Vec<Segment>, TemplateError> {
        let src = self.src;
        let mut segments = Vec::new();
        let mut pos = 0usize;
        let mut trim_next_text = false;
        loop {
            let start = src.get(pos..).and_then(|rest| rest.find("{{")).map(|i| pos + i);
            let text_end = start.unwrap_or(src.len());
            let mut text = src.get(pos..text_end).unwrap_or_default();
            if trim_next_text {
                text = text.trim_start_matches(is_space);
            }
            let Some(open) = start else {
                push_text(&mut segments, text);
                return Ok(segments);
            };
            let after_open = src.get(open + 2..).unwrap_or_default();
            let trim_left = after_open.strip_prefix('-').is_some_and(|r| r.starts_with(is_space));
            if trim_left {
                text = text.trim_end_matches(is_space);
            }
            push_text(&mut segments, text);
            let body_start = if trim_left { open + 4 } else { open + 2 };
            let (end, trim_right) = if src.get(body_start..).is_some_and(|r| r.starts_with("/*")) {
                self.comment(open, body_start)?
            } else {
                let (tokens, end, trim_right) = self.action(open, body_start)?;
                segments.push(Segment::Action { tokens, pos: open });
                (end, trim_right)
            };
            pos = end;
            trim_next_text = trim_right;
        }
    }

    /// Skips `/* … */`; returns the offset after `}}` and whether it was `-}}`.
    fn comment(&self, open: usize, body_start: usize) -> Result<(usize, bool), TemplateError> {
        let rest = self.src.get(body_start..).unwrap_or_default();
        let close = rest.find("*/").ok_or_else(|| syntax_error(self.src, open, "unclosed comment"))?;
        let after = body_start + close + 2;
        let tail = self.src.get(after..).unwrap_or_default();
        if tail.starts_with("}}") {
            Ok((after + 2, false))
        } else if tail.starts_with(" -}}") {
            Ok((after + 4, true))
        } else {
            Err(syntax_error(self.src, open, "comment ends before closing delimiter"))
        }
    }

    fn action(&self, open: usize, body_start: usize) -> Result<(Vec<Token>, usize, bool), TemplateError> {
        let src = self.src;
        let mut tokens = Vec::new();
        let mut pos = body_start;
        loop {
            let rest = src.get(pos..).unwrap_or_default();
            let trimmed = rest.trim_start_matches(is_space);
            let spaced = trimmed.len() != rest.len();
            pos += rest.len() - trimmed.len();
            if trimmed.starts_with("}}") {
                return Ok((tokens, pos + 2, false));
            }
            if spaced && trimmed.starts_with("-}}") {
                return Ok((tokens, pos + 3, true));
            }
            let Some(c) = trimmed.chars().next() else {
                return Err(syntax_error(src, open, "unclosed action"));
            };
            let (tok, len) = self.token(pos, c, trimmed)?;
            tokens.push(Token { tok, pos, spaced });
            pos += len;
        }
    }

    fn token(&self, pos: usize, c: char, rest: &str) -> Result<(Tok, usize), TemplateError> {
        // Slicing `rest[1..]` below is safe: those arms match an ASCII first character.
        let simple = |tok| Ok((tok, 1));
        match c {
            '|' => simple(Tok::Pipe),
            '(' => simple(Tok::LParen),
            ')' => simple(Tok::RParen),
            ',' => simple(Tok::Comma),
            '=' => simple(Tok::Assign),
            ':' if rest.starts_with(":=") => Ok((Tok::Declare, 2)),
            '"' => self.quoted(pos, rest),
            '`' => {
                let end =
                    rest[1..].find('`').ok_or_else(|| syntax_error(self.src, pos, "unterminated raw quoted string"))?;
                Ok((Tok::Str(rest[1..=end].to_owned()), end + 2))
            }
            '\'' => self.char_constant(pos, rest),
            '$' => {
                let len = ident_len(&rest[1..]);
                Ok((Tok::Var(rest[1..=len].to_owned()), len + 1))
            }
            '.' if rest[1..].starts_with(|d: char| d.is_ascii_digit()) => self.number(pos, rest),
            '.' => {
                let len = ident_len(&rest[1..]);
                if len == 0 {
                    return simple(Tok::Dot);
                }
                Ok((Tok::Field(rest[1..=len].to_owned()), len + 1))
            }
            '0'..='9' => self.number(pos, rest),
            '+' | '-' if rest[1..].starts_with(|d: char| d.is_ascii_digit() || d == '.') => self.number(pos, rest),
            c if c == '_' || c.is_alphabetic() => {
                let len = ident_len(rest);
                let word = &rest[..len];
                let tok = match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    _ => Tok::Ident(word.to_owned()),
                };
                Ok((tok, len))
            }
            other => Err(syntax_error(self.src, pos, format!("unexpected {other:?} in command"))),
        }
    }

    fn quoted(&self, pos: usize, rest: &str) -> Result<(Tok, usize), TemplateError> {
        let mut out = String::new();
        let mut chars = rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Ok((Tok::Str(out), i + 1)),
                '\n' => break,
                '\\' => {
                    let (_, e) =
                        chars.next().ok_or_else(|| syntax_error(self.src, pos, "unterminated quoted string"))?;
                    out.push(self.escape(pos, e, &mut chars)?);
                }
                c => out.push(c),
            }
        }
        Err(syntax_error(self.src, pos, "unterminated quoted string"))
    }

    fn escape(
        &self,
        pos: usize,
        e: char,
        chars: &mut impl Iterator<Item = (usize, char)>,
    ) -> Result<char, TemplateError> {
        let mut hex = |n: usize| -> Result<char, TemplateError> {
            let digits: String = chars.take(n).map(|(_, c)| c).collect();
            u32::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == n)
                .and_then(char::from_u32)
                .ok_or_else(|| syntax_error(self.src, pos, format!("invalid escape \\{e}{digits}")))
        };
        Ok(match e {
            'a' => '\x07',
            'b' => '\x08',
            'f' => '\x0c',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\x0b',
            '\\' | '"' | '\'' => e,
            'x' => hex(2)?,
            'u' => hex(4)?,
            'U' => hex(8)?,
            '0'..='7' => {
                let digits: String = std::iter::once(e).chain(chars.take(2).map(|(_, c)| c)).collect();
                u32::from_str_radix(&digits, 8)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| syntax_error(self.src, pos, format!("invalid escape \\{digits}")))?
            }
            other => {
                return Err(syntax_error(self.src, pos, format!("unknown escape sequence \\{other}")));
            }
        })
    }

    fn char_constant(&self, pos: usize, rest: &str) -> Result<(Tok, usize), TemplateError> {
        let mut chars = rest.char_indices().skip(1);
        let value = match chars.next() {
            Some((_, '\\')) => {
                let (_, e) =
                    chars.next().ok_or_else(|| syntax_error(self.src, pos, "unterminated character constant"))?;
                self.escape(pos, e, &mut chars)?
            }
            Some((_, c)) if c != '\'' => c,
            _ => return Err(syntax_error(self.src, pos, "empty character constant")),
        };
        match chars.next() {
            Some((i, '\'')) => Ok((Tok::Int(i64::from(u32::from(value))), i + 1)),
            _ => Err(syntax_error(self.src, pos, "unterminated character constant")),
        }
    }

    fn number(&self, pos: usize, rest: &str) -> Result<(Tok, usize), TemplateError> {
        let mut len = 0;
        let mut prev = ' ';
        for (i, c) in rest.char_indices() {
            let sign_ok = (c == '+' || c == '-') && (i == 0 || matches!(prev, 'e' | 'E' | 'p' | 'P'));
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || sign_ok) {
                break;
            }
            len = i + c.len_utf8();
            prev = c;
        }
        let text = &rest[..len];
        parse_number(text)
            .map(|tok| (tok, len))
            .ok_or_else(|| syntax_error(self.src, pos, format!("bad number syntax: {text:?}")))
    }
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if !text.is_empty() {
        segments.push(Segment::Text(text.to_owned()));
    }
}

fn ident_len(s: &str) -> usize {
    s.char_indices().find(|(_, c)| !(c.is_alphanumeric() || *c == '_')).map_or(s.len(), |(i, _)| i)
}

fn parse_number(text: &str) -> Option<Tok> {
    let cleaned = text.replace('_', "");
    let (negative, digits) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, cleaned.strip_prefix('+').unwrap_or(&cleaned)),
    };
    let lower = digits.to_ascii_lowercase();
    let radix = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| lower.strip_prefix(p).map(|rest| (rest.to_owned(), *r)));
    let int = match radix {
        Some((rest, r)) => i64::from_str_radix(&rest, r).ok(),
        None if lower.len() > 1 && lower.starts_with('0') && lower.chars().all(|c| c.is_ascii_digit()) => {
            i64::from_str_radix(&lower[1..], 8).ok()
        }
        None => lower.parse::<i64>().ok(),
    };
    if let Some(i) = int {
        return Some(Tok::Int(if negative { -i } else { i }));
    }
    let is_decimal_float = lower.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'));
    is_decimal_float.then(|| lower.parse::<f64>().ok()).flatten().map(|f| Tok::Float(if negative { -f } else { f }))
}

// ---------------------------------------------------------------------------------------------
// Parser

#[derive(Debug)]
enum Term {
    Dot,
    Root,
    Var(String),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Paren(Box<Pipeline>),
}

#[derive(Debug)]
struct Operand {
    term: Term,
    fields: Vec<String>,
    pos: usize,
}

#[derive(Debug)]
struct Command {
    operands: Vec<Operand>,
    pos: usize,
}

#[derive(Debug)]
struct Pipeline {
    /// Declared (`:=`) or assigned (`=`) variables with their positions.
    vars: Vec<(String, usize)>,
    assign: bool,
    commands: Vec<Command>,
    pos: usize,
}

#[derive(Debug)]
enum Control {
    If,
    With,
    Range,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    Control { kind: Control, pipe: Pipeline, body: Vec<Node>, otherwise: Option<Vec<Node>> },
}

enum Terminator {
    End,
    Else(Vec<Token>, usize),
    Eof,
}

struct Parser<'a> {
    src: &'a str,
    segments: Vec<Segment>,
    next: usize,
}

const UNSUPPORTED: [&str; 5] = ["define", "template", "block", "break", "continue"];

impl Parser<'_> {
    fn parse_root(&mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, terminator) = self.parse_list()?;
        match terminator {
            Terminator::Eof => Ok(nodes),
            Terminator::End => Err(self.error_at_last("unexpected {{end}}")),
            Terminator::Else(_, pos) => Err(syntax_error(self.src, pos, "unexpected {{else}}")),
        }
    }

    fn error_at_last(&self, message: &str) -> TemplateError {
        let pos = match self.segments.get(self.next.saturating_sub(1)) {
            Some(Segment::Action { pos, .. }) => *pos,
            _ => 0,
        };
        syntax_error(self.src, pos, message)
    }

    fn parse_list(&mut self) -> Result<(Vec<Node>, Terminator), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(segment) = self.segments.get_mut(self.next) {
            self.next += 1;
            let (tokens, pos) = match segment {
                Segment::Text(text) => {
                    nodes.push(Node::Text(std::mem::take(text)));
                    continue;
                }
                Segment::Action { tokens, pos } => (std::mem::take(tokens), *pos),
            };
            let keyword = match tokens.first() {
                Some(Token { tok: Tok::Ident(word), .. }) => word.clone(),
                _ => String::new(),
            };
            // `tokens[1..]` is safe below: a keyword implies a first token.
            match keyword.as_str() {
                "end" if tokens.len() == 1 => return Ok((nodes, Terminator::End)),
                "end" => {
                    return Err(syntax_error(self.src, pos, "unexpected arguments to {{end}}"));
                }
                "else" => return Ok((nodes, Terminator::Else(tokens[1..].to_vec(), pos))),
                "if" => nodes.push(self.control(Control::If, &tokens[1..], pos)?),
                "with" => nodes.push(self.control(Control::With, &tokens[1..], pos)?),
                "range" => nodes.push(self.control(Control::Range, &tokens[1..], pos)?),
                word if UNSUPPORTED.contains(&word) => {
                    return Err(TemplateError::Unsupported {
                        construct: format!("{{{{{word}}}}}"),
                        position: position_of(self.src, pos),
                    });
                }
                _ => nodes.push(Node::Action(self.pipeline(&tokens, pos, 1)?)),
            }
        }
        Ok((nodes, Terminator::Eof))
    }

    fn control(&mut self, kind: Control, tokens: &[Token], pos: usize) -> Result<Node, TemplateError> {
        let max_vars = if matches!(kind, Control::Range) { 2 } else { 1 };
        let pipe = self.pipeline(tokens, pos, max_vars)?;
        if matches!(kind, Control::Range) && pipe.assign {
            return Err(TemplateError::Unsupported {
                construct: "range with variable assignment (=)".to_owned(),
                position: position_of(self.src, pos),
            });
        }
        let (body, terminator) = self.parse_list()?;
        let otherwise = match terminator {
            Terminator::End => None,
            Terminator::Eof => {
                return Err(syntax_error(self.src, pos, "unexpected EOF: missing {{end}}"));
            }
            Terminator::Else(rest, else_pos) => Some(self.else_branch(&kind, &rest, else_pos)?),
        };
        Ok(Node::Control { kind, pipe, body, otherwise })
    }

    fn else_branch(&mut self, kind: &Control, rest: &[Token], else_pos: usize) -> Result<Vec<Node>, TemplateError> {
        let chained = match (kind, rest.first().map(|t| &t.tok)) {
            (_, None) => None,
            (Control::If, Some(Tok::Ident(w))) if w == "if" => Some(Control::If),
            (Control::With, Some(Tok::Ident(w))) if w == "with" => Some(Control::With),
            _ => {
                return Err(syntax_error(self.src, else_pos, "unexpected tokens after {{else}}"));
            }
        };
        if let Some(next_kind) = chained {
            // `else if` / `else with` share the enclosing {{end}}, which the nested control consumes.
            return Ok(vec![self.control(next_kind, &rest[1..], else_pos)?]);
        }
        let (nodes, terminator) = self.parse_list()?;
        match terminator {
            Terminator::End => Ok(nodes),
            Terminator::Eof => Err(syntax_error(self.src, else_pos, "unexpected EOF: missing {{end}}")),
            Terminator::Else(_, pos) => Err(syntax_error(self.src, pos, "unexpected second {{else}}")),
        }
    }

    fn pipeline(&self, tokens: &[Token], pos: usize, max_vars: usize) -> Result<Pipeline, TemplateError> {
        let mut cursor = Cursor { src: self.src, tokens, next: 0, action_pos: pos };
        let pipe = cursor.pipeline(max_vars)?;
        match cursor.peek() {
            None => Ok(pipe),
            Some(t) => Err(syntax_error(self.src, t.pos, format!("unexpected {} in operand", describe(&t.tok)))),
        }
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Field(s) => format!("field .{s}"),
        Tok::Var(s) => format!("variable ${s}"),
        Tok::RParen => "\")\"".to_owned(),
        Tok::LParen => "\"(\"".to_owned(),
        Tok::Comma => "\",\"".to_owned(),
        Tok::Declare => "\":=\"".to_owned(),
        Tok::Assign => "\"=\"".to_owned(),
        Tok::Pipe => "\"|\"".to_owned(),
        other => format!("{other:?}"),
    }
}

struct Cursor<'t> {
    src: &'t str,
    tokens: &'t [Token],
    next: usize,
    action_pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_tok(&self, offset: usize) -> Option<&Tok> {
        self.tokens.get(self.next + offset).map(|t| &t.tok)
    }

    /// Position of the next token, else of the last one (errors at the end of an action).
    fn pos(&self) -> usize {
        self.peek().or_else(|| self.tokens.get(self.next.wrapping_sub(1))).map_or(self.action_pos, |t| t.pos)
    }

    fn declarations(&mut self, max_vars: usize) -> Result<(Vec<(String, usize)>, bool), TemplateError> {
        let var_at = |c: &Self, i: usize| match c.tokens.get(c.next + i) {
            Some(Token { tok: Tok::Var(name), pos, .. }) if !name.is_empty() => Some((name.clone(), *pos)),
            _ => None,
        };
        let Some(first) = var_at(self, 0) else {
            return Ok((Vec::new(), false));
        };
        match self.peek_tok(1) {
            Some(Tok::Declare | Tok::Assign) => {
                let assign = self.peek_tok(1) == Some(&Tok::Assign);
                self.next += 2;
                Ok((vec![first], assign))
            }
            Some(Tok::Comma) => {
                let second = var_at(self, 2)
                    .filter(|_| matches!(self.peek_tok(3), Some(Tok::Declare | Tok::Assign)))
                    .ok_or_else(|| syntax_error(self.src, first.1, "expected a second variable and :="))?;
                if max_vars < 2 {
                    return Err(syntax_error(self.src, first.1, "too many declarations"));
                }
                let assign = self.peek_tok(3) == Some(&Tok::Assign);
                self.next += 4;
                Ok((vec![first, second], assign))
            }
            _ => Ok((Vec::new(), false)),
        }
    }

    fn pipeline(&mut self, max_vars: usize) -> Result<Pipeline, TemplateError> {
        let pos = self.pos();
        let (vars, assign) = if max_vars > 0 { self.declarations(max_vars)? } else { (Vec::new(), false) };
        let mut commands = vec![self.command()?];
        while self.peek_tok(0) == Some(&Tok::Pipe) {
            self.next += 1;
            commands.push(self.command()?);
        }
        Ok(Pipeline { vars, assign, commands, pos })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let pos = self.pos();
        let mut operands = Vec::new();
        while let Some(tok) = self.peek_tok(0) {
            if matches!(tok, Tok::Pipe | Tok::RParen) {
                break;
            }
            operands.push(self.operand()?);
        }
        if operands.is_empty() {
            return Err(syntax_error(self.src, pos, "missing value for command"));
        }
        Ok(Command { operands, pos })
    }

    fn operand(&mut self) -> Result<Operand, TemplateError> {
        let Some(token) = self.peek().cloned() else {
            return Err(syntax_error(self.src, self.action_pos, "missing value for command"));
        };
        self.next += 1;
        let mut fields = Vec::new();
        let term = match token.tok {
            Tok::Dot => Term::Dot,
            Tok::Field(name) => {
                fields.push(name);
                Term::Dot
            }
            Tok::Var(name) if name.is_empty() => Term::Root,
            Tok::Var(name) => Term::Var(name),
            Tok::Ident(name) => Term::Func(name),
            Tok::Str(s) => Term::Str(s),
            Tok::Int(i) => Term::Int(i),
            Tok::Float(f) => Term::Float(f),
            Tok::Bool(b) => Term::Bool(b),
            Tok::Nil => Term::Nil,
            Tok::LParen => {
                let inner = self.pipeline(0)?;
                if self.peek_tok(0) != Some(&Tok::RParen) {
                    return Err(syntax_error(self.src, token.pos, "unclosed left paren"));
                }
                self.next += 1;
                Term::Paren(Box::new(inner))
            }
            other => {
                return Err(syntax_error(self.src, token.pos, format!("unexpected {} in operand", describe(&other))));
            }
        };
        while let Some(Token { tok: Tok::Field(name), spaced: false, pos }) = self.peek().cloned() {
            if !matches!(term, Term::Dot | Term::Root | Term::Var(_) | Term::Paren(_)) {
                return Err(syntax_error(self.src, pos, format!("unexpected field .{name} after a non-field value")));
            }
            fields.push(name);
            self.next += 1;
        }
        Ok(Operand { term, fields, pos: token.pos })
    }
}

// ---------------------------------------------------------------------------------------------
// Translator

enum Binding {
    /// A namespace attribute, assignable.
    Slot(String),
    /// A read-only loop expression (range variables).
    Expr(String),
}

struct DotState {
    expr: String,
    is_root: bool,
}

struct Translator<'a> {
    src: &'a str,
    out: String,
    counter: usize,
    scopes: Vec<Vec<(String, Binding)>>,
    dots: Vec<DotState>,
    root_vars: BTreeSet<String>,
    uses_namespace: bool,
}

impl<'a> Translator<'a> {
    fn new(src: &'a str) -> Self {
        Translator {
            src,
            out: String::with_capacity(src.len() * 2),
            counter: 0,
            scopes: vec![Vec::new()],
            dots: vec![DotState { expr: ROOT.to_owned(), is_root: true }],
            root_vars: BTreeSet::new(),
            uses_namespace: false,
        }
    }

    fn finish(self) -> Translation {
        let jinja =
            if self.uses_namespace { format!("{{% set {NAMESPACE} = namespace() %}}{}", self.out) } else { self.out };
        Translation { jinja, root_vars: self.root_vars }
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    fn nodes(&mut self, nodes: &[Node]) -> Result<(), TemplateError> {
        nodes.iter().try_for_each(|node| self.node(node))
    }

    fn scoped(&mut self, f: impl FnOnce(&mut Self) -> Result<(), TemplateError>) -> Result<(), TemplateError> {
        self.scopes.push(Vec::new());
        let result = f(self);
        self.scopes.pop();
        result
    }

    fn dot(&self) -> &DotState {
        // The root dot is pushed in `new` and never popped, so the stack is never empty.
        self.dots.last().unwrap_or_else(|| unreachable!("dot stack is never empty"))
    }

    fn node(&mut self, node: &Node) -> Result<(), TemplateError> {
        match node {
            Node::Text(text) => {
                self.text(text);
                Ok(())
            }
            Node::Action(pipe) if !pipe.vars.is_empty() => self.declare(pipe).map(|_| ()),
            Node::Action(pipe) => {
                let expr = self.pipeline(pipe)?;
                self.out.push_str(&format!("{{{{ {expr} }}}}"));
                Ok(())
            }
            Node::Control { kind: Control::If, pipe, body, otherwise } => {
                self.scoped(|t| t.if_node(pipe, body, otherwise))
            }
            Node::Control { kind: Control::With, pipe, body, otherwise } => {
                self.scoped(|t| t.with_node(pipe, body, otherwise))
            }
            Node::Control { kind: Control::Range, pipe, body, otherwise } => {
                self.scoped(|t| t.range_node(pipe, body, otherwise))
            }
        }
    }

    fn text(&mut self, text: &str) {
        if text.contains('{') {
            // Emitting as a string literal keeps `{%`, `{#` and a trailing `{` away from the lexer.
            let literal = serde_json::to_string(text).unwrap_or_default();
            self.out.push_str(&format!("{{{{ {literal} }}}}"));
        } else {
            self.out.push_str(text);
        }
    }

    /// `$x := pipe` / `$x = pipe`; returns the slot holding the value.
    fn declare(&mut self, pipe: &Pipeline) -> Result<String, TemplateError> {
        let expr = self.pipeline(pipe)?;
        let Some((name, pos)) = pipe.vars.first() else {
            return Ok(expr);
        };
        let slot = if pipe.assign { self.assignable(name, *pos)? } else { self.new_slot(name) };
        self.out.push_str(&format!("{{% set {slot} = {expr} %}}"));
        Ok(slot)
    }

    fn new_slot(&mut self, name: &str) -> String {
        self.uses_namespace = true;
        let slot = format!("{NAMESPACE}.{}", self.fresh("v"));
        if let Some(scope) = self.scopes.last_mut() {
            scope.push((name.to_owned(), Binding::Slot(slot.clone())));
        }
        slot
    }

    fn lookup(&self, name: &str) -> Option<&Binding> {
        self.scopes.iter().rev().flat_map(|s| s.iter().rev()).find(|(n, _)| n == name).map(|(_, b)| b)
    }

    fn assignable(&self, name: &str, pos: usize) -> Result<String, TemplateError> {
        match self.lookup(name) {
            Some(Binding::Slot(slot)) => Ok(slot.clone()),
            Some(Binding::Expr(_)) => Err(TemplateError::Unsupported {
                construct: format!("assignment to range variable ${name}"),
                position: position_of(self.src, pos),
            }),
            None => Err(syntax_error(self.src, pos, format!("undefined variable \"${name}\""))),
        }
    }

    /// The condition value of `if`/`with`, stored in a slot when the pipeline declares a variable.
    fn condition(&mut self, pipe: &Pipeline) -> Result<String, TemplateError> {
        if pipe.vars.is_empty() { self.pipeline(pipe) } else { self.declare(pipe) }
    }

    fn if_node(&mut self, pipe: &Pipeline, body: &[Node], otherwise: &Option<Vec<Node>>) -> Result<(), TemplateError> {
        let cond = self.condition(pipe)?;
        self.out.push_str(&format!("{{% if {cond} %}}"));
        self.scoped(|t| t.nodes(body))?;
        self.else_part(otherwise)?;
        self.out.push_str("{% endif %}");
        Ok(())
    }

    fn else_part(&mut self, otherwise: &Option<Vec<Node>>) -> Result<(), TemplateError> {
        if let Some(nodes) = otherwise {
            self.out.push_str("{% else %}");
            self.scoped(|t| t.nodes(nodes))?;
        }
        Ok(())
    }

    fn with_node(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &Option<Vec<Node>>,
    ) -> Result<(), TemplateError> {
        let value = self.condition(pipe)?;
        let local = self.fresh("__w");
        self.out.push_str(&format!("{{% with {local} = {value} %}}{{% if {local} %}}"));
        self.dots.push(DotState { expr: local, is_root: false });
        let body_result = self.scoped(|t| t.nodes(body));
        self.dots.pop();
        body_result?;
        self.else_part(otherwise)?;
        self.out.push_str("{% endif %}{% endwith %}");
        Ok(())
    }

    fn range_node(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &Option<Vec<Node>>,
    ) -> Result<(), TemplateError> {
        let expr = self.pipeline(pipe)?;
        let entry = self.fresh("__e");
        self.out.push_str(&format!("{{% for {entry} in {RANGE_HELPER}({expr}) %}}"));
        let (key, value) = (format!("{entry}[0]"), format!("{entry}[1]"));
        let bindings = match pipe.vars.as_slice() {
            [(v, _)] => vec![(v.clone(), Binding::Expr(value.clone()))],
            [(k, _), (v, _)] => vec![(k.clone(), Binding::Expr(key)), (v.clone(), Binding::Expr(value.clone()))],
            _ => Vec::new(),
        };
        self.scopes.push(bindings);
        self.dots.push(DotState { expr: value, is_root: false });
        let body_result = self.nodes(body);
        self.dots.pop();
        self.scopes.pop();
        body_result?;
        if let Some(nodes) = otherwise {
            self.out.push_str("{% else %}");
            self.scoped(|t| t.nodes(nodes))?;
        }
        self.out.push_str("{% endfor %}");
        Ok(())
    }

    fn pipeline(&mut self, pipe: &Pipeline) -> Result<String, TemplateError> {
        let mut piped: Option<String> = None;
        for command in &pipe.commands {
            piped = Some(self.command(command, piped)?);
        }
        piped.ok_or_else(|| syntax_error(self.src, pipe.pos, "missing value for command"))
    }

    fn command(&mut self, command: &Command, piped: Option<String>) -> Result<String, TemplateError> {
        let Some((first, rest)) = command.operands.split_first() else {
            return Err(syntax_error(self.src, command.pos, "missing value for command"));
        };
        if let Term::Func(name) = &first.term {
            self.note_root_lookup(name, rest);
            let mut args = rest.iter().map(|op| self.operand(op)).collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            return self.call(name, args, first.pos);
        }
        if !rest.is_empty() || piped.is_some() {
            return Err(syntax_error(self.src, command.pos, "can't give argument to non-function"));
        }
        if matches!(first.term, Term::Nil) {
            return Err(syntax_error(self.src, first.pos, "nil is not a command"));
        }
        self.operand(first)
    }

    /// `index . "x"` / `hasKey $ "x"` / `get . "x"` refer to the root variable `x`.
    fn note_root_lookup(&mut self, name: &str, args: &[Operand]) {
        if !matches!(name, "index" | "hasKey" | "get") {
            return;
        }
        if let [coll, Operand { term: Term::Str(key), .. }, ..] = args {
            let is_root = coll.fields.is_empty()
                && (matches!(coll.term, Term::Root) || matches!(coll.term, Term::Dot) && self.dot().is_root);
            if is_root {
                self.root_vars.insert(key.clone());
            }
        }
    }

    fn call(&mut self, name: &str, args: Vec<String>, pos: usize) -> Result<String, TemplateError> {
        if forbidden_reason(name).is_some() {
            return Err(TemplateError::Forbidden { function: name.to_owned() });
        }
        if !is_supported(name) {
            return Err(syntax_error(self.src, pos, format!("function \"{name}\" not defined")));
        }
        match name {
            "and" | "or" if args.is_empty() => {
                Err(syntax_error(self.src, pos, format!("wrong number of args for {name}: want at least 1 got 0")))
            }
            "and" | "or" => Ok(format!("({})", args.join(&format!(" {name} ")))),
            "not" => match args.as_slice() {
                [arg] => Ok(format!("(not {arg})")),
                _ => {
                    Err(syntax_error(self.src, pos, format!("wrong number of args for not: want 1 got {}", args.len())))
                }
            },
            _ => Ok(format!("{name}({})", args.join(", "))),
        }
    }

    fn operand(&mut self, op: &Operand) -> Result<String, TemplateError> {
        let base = match &op.term {
            Term::Dot => {
                if self.dot().is_root {
                    self.root_vars.extend(op.fields.first().cloned());
                }
                self.dot().expr.clone()
            }
            Term::Root => {
                self.root_vars.extend(op.fields.first().cloned());
                ROOT.to_owned()
            }
            Term::Var(name) => match self.lookup(name) {
                Some(Binding::Slot(s) | Binding::Expr(s)) => s.clone(),
                None => {
                    return Err(syntax_error(self.src, op.pos, format!("undefined variable \"${name}\"")));
                }
            },
            Term::Func(name) => self.call(name, Vec::new(), op.pos)?,
            Term::Str(s) => serde_json::to_string(s).unwrap_or_default(),
            Term::Int(i) => i.to_string(),
            Term::Float(f) => float_literal(*f),
            Term::Bool(b) => b.to_string(),
            Term::Nil => "none".to_owned(),
            Term::Paren(inner) => format!("({})", self.pipeline(inner)?),
        };
        let fields: String =
            op.fields.iter().map(|f| format!("[{}]", serde_json::to_string(f).unwrap_or_default())).collect();
        Ok(format!("{base}{fields}"))
    }
}

/// A float literal minijinja parses back to the same value (Display never uses exponents).
fn float_literal(f: f64) -> String {
    let text = format!("{f}");
    if text.contains('.') { text } else { format!("{text}.0") }
}
