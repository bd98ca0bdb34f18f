//! The parser: tokens to [`Tree`]s, with Go's grammar and checks.
//!
//! Checked at parse time, as in Go: every function name is defined (builtins or the
//! function map), every variable is declared in scope, `break`/`continue` sit inside a
//! `range`, only the first command of a pipeline is a constant, `define` names are
//! unique within one text. Added here: nesting of control structures and parentheses
//! is limited to [`MAX_NESTING`] levels, so that hostile text cannot exhaust the stack.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{line_col, Error};
use super::lex::{lex, Item, Tok};
use super::node::{Arg, Branch, Command, Decl, Node, Number, Pipe, Tree};

/// Deepest nesting of `if`/`range`/`with`/`block`/`define` bodies and parenthesized
/// pipelines the parser accepts.
pub const MAX_NESTING: usize = 100;

/// What ended an item list.
enum ListEnd {
    End,
    Else(usize),
}

enum Parsed {
    Node(Node),
    End(usize),
    Else(usize),
}

struct Parser<'a> {
    items: Vec<Item>,
    cur: usize,
    hwm: usize,
    text: Arc<str>,
    parse_name: Arc<str>,
    has_func: &'a dyn Fn(&str) -> bool,
    vars: Vec<String>,
    range_depth: usize,
    nesting: usize,
    set: &'a mut BTreeMap<String, Tree>,
}

type PResult<T> = Result<T, Error>;

/// Parse `text` under `name`, adding its top-level tree and its `define`d/`block` trees
/// to `set` (a fresh set per text, as Go's `parse.Parse`). `has_func` says whether a
/// function name is defined.
pub(crate) fn parse(
    name: &str,
    text: &str,
    has_func: &dyn Fn(&str) -> bool,
    set: &mut BTreeMap<String, Tree>,
) -> Result<(), Error> {
    let items = lex(text, !has_func("break"), !has_func("continue"));
    let mut p = Parser {
        items,
        cur: 0,
        hwm: 0,
        text: Arc::from(text),
        parse_name: Arc::from(name),
        has_func,
        vars: vec!["$".into()],
        range_depth: 0,
        nesting: 0,
        set,
    };
    let root = p.parse_top()?;
    let tree = Tree {
        name: name.to_string(),
        parse_name: p.parse_name.clone(),
        text: p.text.clone(),
        root,
    };
    p.add(tree)
}

impl Parser<'_> {
    fn err_at(&self, pos: usize, message: String) -> Error {
        let (line, col) = line_col(&self.text, pos);
        Error::Parse {
            name: self.parse_name.to_string(),
            line,
            col,
            message,
        }
    }

    /// An error at the most recently scanned token (Go reports `token[0].line`).
    fn errorf(&self, message: String) -> Error {
        let pos = self.items.get(self.hwm).map_or(self.text.len(), |i| i.pos);
        self.err_at(pos, message)
    }

    fn next(&mut self) -> Item {
        let i = self.cur.min(self.items.len() - 1);
        self.cur = i + 1;
        self.hwm = self.hwm.max(i);
        self.items[i].clone()
    }

    fn backup(&mut self) {
        self.cur -= 1;
    }

    fn peek(&mut self) -> Item {
        let it = self.next();
        self.backup();
        it
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let t = self.next();
            if t.typ != Tok::Space {
                return t;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let save = self.cur;
        let t = self.next_non_space();
        self.cur = save;
        // Go's peekNonSpace consumes the spaces; only the non-space token is pushed back.
        while self.items[self.cur].typ == Tok::Space {
            self.cur += 1;
        }
        t
    }

    fn unexpected(&self, token: &Item, context: &str) -> Error {
        if token.typ == Tok::Error {
            return self.err_at(token.pos, token.val.clone());
        }
        self.err_at(token.pos, format!("unexpected {token} in {context}"))
    }

    fn expect(&mut self, typ: Tok, context: &str) -> PResult<Item> {
        let t = self.next_non_space();
        if t.typ != typ {
            return Err(self.unexpected(&t, context));
        }
        Ok(t)
    }

    fn enter(&mut self) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.errorf(format!("template nesting exceeds {MAX_NESTING} levels")));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Go's `Tree.add`: a later non-empty definition of a name is an error within one
    /// text; an empty one never replaces a non-empty one.
    fn add(&mut self, tree: Tree) -> PResult<()> {
        match self.set.get(&tree.name) {
            Some(old) if !old.is_empty() => {
                if !tree.is_empty() {
                    return Err(self.errorf(format!(
                        "template: multiple definition of template {}",
                        super::fmt::quote(&tree.name, false)
                    )));
                }
                Ok(())
            }
            _ => {
                self.set.insert(tree.name.clone(), tree);
                Ok(())
            }
        }
    }

    fn parse_top(&mut self) -> PResult<Vec<Node>> {
        let mut root = Vec::new();
        while self.peek().typ != Tok::Eof {
            if self.peek().typ == Tok::LeftDelim {
                let save = self.cur;
                self.next();
                if self.next_non_space().typ == Tok::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.cur = save;
            }
            match self.text_or_action()? {
                Parsed::Node(n) => root.push(n),
                Parsed::End(pos) => return Err(self.err_at(pos, "unexpected {{end}}".into())),
                Parsed::Else(pos) => return Err(self.err_at(pos, "unexpected {{else}}".into())),
            }
        }
        Ok(root)
    }

    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let t = self.next_non_space();
        if t.typ != Tok::String && t.typ != Tok::RawString {
            return Err(self.unexpected(&t, context));
        }
        let name = unquote(&t.val).map_err(|e| self.err_at(t.pos, e))?;
        self.expect(Tok::RightDelim, context)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        self.enter()?;
        let (list, end) = self.item_list()?;
        self.leave();
        self.vars = saved_vars;
        self.range_depth = saved_range;
        if let ListEnd::Else(pos) = end {
            return Err(self.err_at(pos, format!("unexpected {{{{else}}}} in {context}")));
        }
        let tree = Tree {
            name,
            parse_name: self.parse_name.clone(),
            text: self.text.clone(),
            root: list,
        };
        self.add(tree)
    }

    fn item_list(&mut self) -> PResult<(Vec<Node>, ListEnd)> {
        let mut list = Vec::new();
        while self.peek_non_space().typ != Tok::Eof {
            match self.text_or_action()? {
                Parsed::Node(n) => list.push(n),
                Parsed::End(_) => return Ok((list, ListEnd::End)),
                Parsed::Else(pos) => return Ok((list, ListEnd::Else(pos))),
            }
        }
        Err(self.errorf("unexpected EOF".into()))
    }

    fn text_or_action(&mut self) -> PResult<Parsed> {
        let t = self.next_non_space();
        match t.typ {
            Tok::Text => Ok(Parsed::Node(Node::Text {
                pos: t.pos,
                text: t.val,
            })),
            Tok::LeftDelim => self.action(),
            _ => Err(self.unexpected(&t, "input")),
        }
    }

    fn action(&mut self) -> PResult<Parsed> {
        let t = self.next_non_space();
        match t.typ {
            Tok::Block => return self.block_control().map(Parsed::Node),
            Tok::Break => return self.break_control(t.pos, "break").map(Parsed::Node),
            Tok::Continue => return self.break_control(t.pos, "continue").map(Parsed::Node),
            Tok::Else => return self.else_control(),
            Tok::End => {
                let e = self.expect(Tok::RightDelim, "end")?;
                return Ok(Parsed::End(e.pos));
            }
            Tok::If => return self.branch(t.pos, "if").map(Parsed::Node),
            Tok::Range => return self.branch(t.pos, "range").map(Parsed::Node),
            Tok::Template => return self.template_control().map(Parsed::Node),
            Tok::With => return self.branch(t.pos, "with").map(Parsed::Node),
            _ => {}
        }
        self.backup();
        let pos = self.peek().pos;
        let pipe = self.pipeline("command", Tok::RightDelim)?;
        Ok(Parsed::Node(Node::Action { pos, pipe }))
    }

    fn break_control(&mut self, pos: usize, word: &str) -> PResult<Node> {
        let t = self.next_non_space();
        if t.typ != Tok::RightDelim {
            return Err(self.unexpected(&t, &format!("{{{{{word}}}}}")));
        }
        if self.range_depth == 0 {
            return Err(self.err_at(pos, format!("{{{{{word}}}}} outside {{{{range}}}}")));
        }
        Ok(if word == "break" {
            Node::Break { pos }
        } else {
            Node::Continue { pos }
        })
    }

    fn else_control(&mut self) -> PResult<Parsed> {
        let peek = self.peek_non_space();
        if peek.typ == Tok::If || peek.typ == Tok::With {
            return Ok(Parsed::Else(peek.pos));
        }
        let t = self.expect(Tok::RightDelim, "else")?;
        Ok(Parsed::Else(t.pos))
    }

    /// `if`, `range`, `with` after the keyword (Go's `parseControl`).
    fn branch(&mut self, _kw_pos: usize, context: &str) -> PResult<Node> {
        self.enter()?;
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, end) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let ListEnd::Else(else_pos) = end {
            let peek = self.peek().typ;
            if context == "if" && peek == Tok::If {
                self.next();
                let inner = self.branch(else_pos, "if")?;
                else_list = Some(vec![inner]);
            } else if context == "with" && peek == Tok::With {
                self.next();
                let inner = self.branch(else_pos, "with")?;
                else_list = Some(vec![inner]);
            } else {
                let (list, end) = self.item_list()?;
                if let ListEnd::Else(pos) = end {
                    return Err(self.err_at(pos, "expected end; found {{else}}".into()));
                }
                else_list = Some(list);
            }
        }
        self.vars.truncate(mark);
        self.leave();
        let b = Box::new(Branch {
            pos: pipe.pos,
            pipe,
            list,
            else_list,
        });
        Ok(match context {
            "if" => Node::If(b),
            "range" => Node::Range(b),
            _ => Node::With(b),
        })
    }

    fn block_control(&mut self) -> PResult<Node> {
        let context = "block clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, context)?;
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".into()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        self.enter()?;
        let (list, end) = self.item_list()?;
        self.leave();
        self.vars = saved_vars;
        self.range_depth = saved_range;
        if let ListEnd::Else(pos) = end {
            return Err(self.err_at(pos, format!("unexpected {{{{else}}}} in {context}")));
        }
        self.add(Tree {
            name: name.clone(),
            parse_name: self.parse_name.clone(),
            text: self.text.clone(),
            root: list,
        })?;
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe: Some(pipe),
        })
    }

    fn template_control(&mut self) -> PResult<Node> {
        let context = "template clause";
        let t = self.next_non_space();
        let name = self.template_name(&t, context)?;
        let mut pipe = None;
        if self.next_non_space().typ != Tok::RightDelim {
            self.backup();
            pipe = Some(self.pipeline(context, Tok::RightDelim)?);
        }
        Ok(Node::Template {
            pos: t.pos,
            name,
            pipe,
        })
    }

    fn template_name(&self, t: &Item, context: &str) -> PResult<String> {
        match t.typ {
            Tok::String | Tok::RawString => unquote(&t.val).map_err(|e| self.err_at(t.pos, e)),
            _ => Err(self.unexpected(t, context)),
        }
    }

    fn pipeline(&mut self, context: &str, end: Tok) -> PResult<Pipe> {
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: start.pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        loop {
            // Declarations.
            let v = self.peek_non_space();
            if v.typ != Tok::Variable {
                break;
            }
            let var_index = self.cur;
            self.next();
            let after = self.peek();
            let next = self.peek_non_space();
            if next.typ == Tok::Assign || next.typ == Tok::Declare {
                pipe.is_assign = next.typ == Tok::Assign;
                self.next_non_space();
                pipe.decl.push(Decl {
                    pos: v.pos,
                    name: v.val.clone(),
                });
                self.vars.push(v.val);
                break;
            } else if next.typ == Tok::Char && next.val == "," {
                self.next_non_space();
                pipe.decl.push(Decl {
                    pos: v.pos,
                    name: v.val.clone(),
                });
                self.vars.push(v.val);
                if context == "range" && pipe.decl.len() < 2 {
                    match self.peek_non_space().typ {
                        Tok::Variable | Tok::RightDelim | Tok::RightParen => continue,
                        _ => return Err(self.errorf("range can only initialize variables".into())),
                    }
                }
                return Err(self.errorf(format!("too many declarations in {context}")));
            } else {
                let _ = after;
                self.cur = var_index;
                break;
            }
        }
        loop {
            let t = self.next_non_space();
            if t.typ == end {
                self.check_pipeline(&pipe, context)?;
                return Ok(pipe);
            }
            match t.typ {
                Tok::Bool
                | Tok::CharConstant
                | Tok::Complex
                | Tok::Dot
                | Tok::Field
                | Tok::Identifier
                | Tok::Number
                | Tok::Nil
                | Tok::RawString
                | Tok::String
                | Tok::Variable
                | Tok::LeftParen => {
                    self.backup();
                    let c = self.command()?;
                    pipe.cmds.push(c);
                }
                _ => return Err(self.unexpected(&t, context)),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str) -> PResult<()> {
        if pipe.cmds.is_empty() {
            return Err(self.errorf(format!("missing value for {context}")));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Arg::Bool { .. }
                    | Arg::Dot { .. }
                    | Arg::Nil { .. }
                    | Arg::Number { .. }
                    | Arg::String { .. }
            ) {
                return Err(self.err_at(
                    c.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> PResult<Command> {
        let pos = self.peek_non_space().pos;
        let mut cmd = Command {
            pos,
            args: Vec::new(),
        };
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                cmd.args.push(op);
            }
            let t = self.next();
            match t.typ {
                Tok::Space => continue,
                Tok::RightDelim | Tok::RightParen => self.backup(),
                Tok::Pipe => {}
                _ => return Err(self.unexpected(&t, "operand")),
            }
            break;
        }
        if cmd.args.is_empty() {
            return Err(self.errorf("empty command".into()));
        }
        Ok(cmd)
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().typ == Tok::Field {
            let chain_pos = self.peek().pos;
            let mut fields = Vec::new();
            while self.peek().typ == Tok::Field {
                let f = self.next();
                fields.push(f.val[1..].to_string());
            }
            return Ok(Some(match node {
                Arg::Field { mut idents, .. } => {
                    idents.extend(fields);
                    Arg::Field {
                        pos: chain_pos,
                        idents,
                    }
                }
                Arg::Variable { mut idents, .. } => {
                    idents.extend(fields);
                    Arg::Variable {
                        pos: chain_pos,
                        idents,
                    }
                }
                Arg::Bool { .. }
                | Arg::String { .. }
                | Arg::Number { .. }
                | Arg::Nil { .. }
                | Arg::Dot { .. } => {
                    return Err(self.errorf(format!(
                        "unexpected . after term {}",
                        super::fmt::quote(&node.to_string(), false)
                    )))
                }
                other => Arg::Chain {
                    pos: chain_pos,
                    node: Box::new(other),
                    fields,
                },
            }));
        }
        Ok(Some(node))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let t = self.next_non_space();
        Ok(Some(match t.typ {
            Tok::Identifier => {
                if !(self.has_func)(&t.val) {
                    return Err(self.err_at(
                        t.pos,
                        format!("function {} not defined", super::fmt::quote(&t.val, false)),
                    ));
                }
                Arg::Identifier {
                    pos: t.pos,
                    name: t.val,
                }
            }
            Tok::Dot => Arg::Dot { pos: t.pos },
            Tok::Nil => Arg::Nil { pos: t.pos },
            Tok::Variable => {
                let name = t.val.split('.').next().unwrap_or("").to_string();
                if !self.vars.contains(&name) {
                    return Err(self.err_at(
                        t.pos,
                        format!("undefined variable {}", super::fmt::quote(&name, false)),
                    ));
                }
                Arg::Variable {
                    pos: t.pos,
                    idents: t.val.split('.').map(str::to_string).collect(),
                }
            }
            Tok::Field => Arg::Field {
                pos: t.pos,
                idents: t.val[1..].split('.').map(str::to_string).collect(),
            },
            Tok::Bool => Arg::Bool {
                pos: t.pos,
                val: t.val == "true",
            },
            Tok::CharConstant | Tok::Complex | Tok::Number => {
                let num = new_number(&t.val, t.typ).map_err(|e| self.err_at(t.pos, e))?;
                Arg::Number {
                    pos: t.pos,
                    num: Box::new(num),
                }
            }
            Tok::LeftParen => {
                self.enter()?;
                let p = self.pipeline("parenthesized pipeline", Tok::RightParen)?;
                self.leave();
                Arg::Pipe(Box::new(p))
            }
            Tok::String | Tok::RawString => {
                let text = unquote(&t.val).map_err(|e| self.err_at(t.pos, e))?;
                Arg::String {
                    pos: t.pos,
                    quoted: t.val,
                    text,
                }
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

/// Go's `strconv.Unquote` for `"..."` and `` `...` `` strings.
pub(crate) fn unquote(s: &str) -> Result<String, String> {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        if raw.contains('`') {
            return Err("invalid syntax".into());
        }
        return Ok(raw.replace('\r', ""));
    }
    let Some(body) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Err("invalid syntax".into());
    };
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if c == '"' || c == '\n' {
                return Err("invalid syntax".into());
            }
            out.push(c);
            continue;
        }
        out.push(unquote_escape(&mut chars, '"')?);
    }
    Ok(out)
}

/// One escape after a backslash (Go's `strconv.UnquoteChar`).
fn unquote_escape(chars: &mut std::str::Chars<'_>, quote: char) -> Result<char, String> {
    let bad = || "invalid syntax".to_string();
    let c = chars.next().ok_or_else(bad)?;
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = chars.next().and_then(|c| c.to_digit(16)).ok_or_else(bad)?;
            v = v * 16 + d;
        }
        Ok(v)
    };
    Ok(match c {
        'a' => '\u{7}',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'v' => '\u{b}',
        '\\' => '\\',
        'x' => {
            let v = hex(chars, 2)?;
            // Go would produce the raw byte; bytes above 0x7f are not valid UTF-8 alone.
            char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{FFFD}')
        }
        'u' => char::from_u32(hex(chars, 4)?).ok_or_else(bad)?,
        'U' => char::from_u32(hex(chars, 8)?).ok_or_else(bad)?,
        '0'..='7' => {
            let mut v = c.to_digit(8).unwrap_or(0);
            for _ in 0..2 {
                let d = chars.next().and_then(|c| c.to_digit(8)).ok_or_else(bad)?;
                v = v * 8 + d;
            }
            if v > 255 {
                return Err(bad());
            }
            char::from_u32(v).filter(|_| v < 0x80).unwrap_or('\u{FFFD}')
        }
        c if c == quote => c,
        _ => return Err(bad()),
    })
}

/// Parse a number constant (Go's `newNumber`).
fn new_number(text: &str, typ: Tok) -> Result<Number, String> {
    let mut n = Number {
        text: text.to_string(),
        is_int: false,
        int: 0,
        is_uint: false,
        is_float: false,
        float: 0.0,
    };
    if typ == Tok::CharConstant {
        let inner = &text[1..];
        let mut chars = inner.chars();
        let c = match chars.next() {
            Some('\\') => unquote_escape(&mut chars, '\'')?,
            Some(c) => c,
            None => return Err(format!("malformed character constant: {text}")),
        };
        if chars.as_str() != "'" {
            return Err(format!("malformed character constant: {text}"));
        }
        let r = i64::from(c as u32);
        n.int = r;
        n.is_int = true;
        n.is_uint = true;
        n.float = r as f64;
        n.is_float = true;
        return Ok(n);
    }
    if typ == Tok::Complex || text.ends_with('i') {
        return Err(format!(
            "complex constants are not supported: {}",
            super::fmt::quote(text, false)
        ));
    }
    let u = parse_go_uint(text);
    let i = parse_go_int(text);
    if let Some(u) = u {
        n.is_uint = true;
        let _ = u;
    }
    if let Some(i) = i {
        n.is_int = true;
        n.int = i;
        if i == 0 {
            n.is_uint = true;
        }
    }
    if n.is_int {
        n.is_float = true;
        n.float = n.int as f64;
    } else if let Some(u) = u {
        n.is_float = true;
        n.float = u as f64;
    } else if let Some(f) = parse_go_float(text) {
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(format!(
                "integer overflow: {}",
                super::fmt::quote(text, false)
            ));
        }
        n.is_float = true;
        n.float = f;
        if f.fract() == 0.0 && f.abs() < 9.2e18 {
            n.is_int = true;
            n.int = f as i64;
        }
        if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) {
            n.is_uint = true;
        }
    }
    if !n.is_int && !n.is_uint && !n.is_float {
        return Err(format!(
            "illegal number syntax: {}",
            super::fmt::quote(text, false)
        ));
    }
    Ok(n)
}

/// Underscores must sit between digits, or between a base prefix and a digit.
fn underscores_ok(s: &str) -> bool {
    if !s.contains('_') {
        return true;
    }
    let b = s.trim_start_matches(['+', '-']).as_bytes();
    let mut prev_digit_or_prefix = false;
    let mut i = 0;
    if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_alphabetic() && b[1] != b'e' && b[1] != b'E' {
        i = 2;
        prev_digit_or_prefix = true;
    }
    let mut last_underscore = false;
    while i < b.len() {
        let c = b[i];
        if c == b'_' {
            if !prev_digit_or_prefix {
                return false;
            }
            last_underscore = true;
            prev_digit_or_prefix = false;
        } else {
            let digit = c.is_ascii_hexdigit();
            if last_underscore && !digit {
                return false;
            }
            last_underscore = false;
            prev_digit_or_prefix = digit;
        }
        i += 1;
    }
    !last_underscore
}

fn split_base(s: &str) -> (u32, &str) {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0] == b'0' {
        match b[1] {
            b'x' | b'X' => return (16, &s[2..]),
            b'o' | b'O' => return (8, &s[2..]),
            b'b' | b'B' => return (2, &s[2..]),
            _ => return (8, &s[1..]),
        }
    }
    (10, s)
}

/// Go's `strconv.ParseUint(s, 0, 64)`.
fn parse_go_uint(s: &str) -> Option<u64> {
    if s.is_empty() || s.starts_with(['+', '-']) || !underscores_ok(s) {
        return None;
    }
    let (base, digits) = split_base(s);
    let digits = digits.replace('_', "");
    if digits.is_empty() {
        return if s == "0" { Some(0) } else { None };
    }
    u64::from_str_radix(&digits, base).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let u = parse_go_uint(body)?;
    if neg {
        if u <= i64::MAX as u64 + 1 {
            Some((u as i128).wrapping_neg() as i64)
        } else {
            None
        }
    } else {
        i64::try_from(u).ok()
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for decimal syntax (hexadecimal floats are not
/// supported and give `None`).
fn parse_go_float(s: &str) -> Option<f64> {
    if !underscores_ok(s) {
        return None;
    }
    let t = s.replace('_', "");
    let body = t.trim_start_matches(['+', '-']);
    if body.starts_with("0x") || body.starts_with("0X") {
        return None;
    }
    if !body
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<BTreeMap<String, Tree>, Error> {
        let mut set = BTreeMap::new();
        let f = |n: &str| matches!(n, "printf" | "index" | "eq");
        parse("t", text, &f, &mut set)?;
        Ok(set)
    }

    fn err(text: &str) -> String {
        p(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_read_like_go() {
        assert_eq!(
            err("{{ foo }}"),
            "template: t:1:3: function \"foo\" not defined"
        );
        assert_eq!(
            err("{{ $x }}"),
            "template: t:1:3: undefined variable \"$x\""
        );
        assert_eq!(err("{{ if .a }}"), "template: t:1:11: unexpected EOF");
        assert_eq!(err("{{ end }}"), "template: t:1:7: unexpected {{end}}");
        assert_eq!(
            err("{{ break }}"),
            "template: t:1:3: {{break}} outside {{range}}"
        );
        assert_eq!(
            err("{{ .a | 3 }}"),
            "template: t:1:8: non executable command in pipeline stage 2"
        );
        assert_eq!(
            err("x\n{{ .a \"b }}"),
            "template: t:2:6: unterminated quoted string"
        );
        // As in Go, the parser meets the ")" token before the lexer's error after it.
        assert_eq!(
            err("{{ ) }}"),
            "template: t:1:3: unexpected \")\" in command"
        );
        assert_eq!(err("{{ (1 }}"), "template: t:1:6: unclosed left paren");
        assert_eq!(err("{{}}"), "template: t:1:2: missing value for command");
    }

    #[test]
    fn variables_are_scoped_to_their_block() {
        assert!(p("{{ if 1 }}{{ $y := 1 }}{{ end }}{{ $y }}").is_err());
        assert!(p("{{ $x := 1 }}{{ if 1 }}{{ $x = 2 }}{{ end }}{{ $x }}").is_ok());
        assert!(p("{{ range $i, $v := . }}{{ $i }}{{ $v }}{{ end }}").is_ok());
    }

    #[test]
    fn defines_are_collected() {
        let set = p("{{ define \"a\" }}A{{ end }}{{ block \"b\" . }}B{{ end }}").unwrap();
        assert_eq!(set.keys().collect::<Vec<_>>(), ["a", "b", "t"]);
        assert!(err("{{define \"a\"}}x{{end}}{{define \"a\"}}y{{end}}")
            .contains("multiple definition of template \"a\""));
    }

    #[test]
    fn nesting_is_limited() {
        let deep = "{{ if 1 }}".repeat(MAX_NESTING + 1);
        assert!(err(&deep).contains("nesting exceeds"));
        let parens = format!("{{{{ {}1{} }}}}", "(".repeat(200), ")".repeat(200));
        assert!(err(&parens).contains("nesting exceeds"));
    }

    #[test]
    fn numbers_parse_as_go() {
        let n = new_number("0x1F", Tok::Number).unwrap();
        assert!(n.is_int && n.int == 31);
        let n = new_number("1_000", Tok::Number).unwrap();
        assert_eq!(n.int, 1000);
        let n = new_number("1.5", Tok::Number).unwrap();
        assert!(!n.is_int && n.float == 1.5);
        let n = new_number("'a'", Tok::CharConstant).unwrap();
        assert_eq!(n.int, 97);
        assert!(new_number("99999999999999999999", Tok::Number).is_err());
    }
}
