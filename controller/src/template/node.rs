//! The parse tree, and its source-like rendering used as the `<NODE>` of error
//! messages (Go's `Node.String`).
//!
//! Positions are byte offsets into the text of the [`Tree`] that holds the node; all
//! trees parsed from one text share that text.

use std::fmt;
use std::sync::Arc;

/// One parsed template: a top-level text or a `define`/`block` body.
#[derive(Debug, Clone)]
pub struct Tree {
    /// The template's name.
    pub(crate) name: String,
    /// The name the text was parsed under (for error locations).
    pub(crate) parse_name: Arc<str>,
    /// The whole text parsed (for error locations).
    pub(crate) text: Arc<str>,
    /// The body.
    pub(crate) root: Vec<Node>,
}

impl Tree {
    /// Go's `IsEmptyTree`: only white space and comments.
    pub(crate) fn is_empty(&self) -> bool {
        is_empty_list(&self.root)
    }
}

fn is_empty_list(list: &[Node]) -> bool {
    list.iter().all(|n| match n {
        Node::Text { text, .. } => text.trim_matches(is_go_space).is_empty(),
        _ => false,
    })
}

/// `bytes.TrimSpace`'s notion of white space (ASCII plus Unicode spaces).
fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// A node of a template body.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text {
        pos: usize,
        text: String,
    },
    Action {
        pos: usize,
        pipe: Pipe,
    },
    If(Box<Branch>),
    Range(Box<Branch>),
    With(Box<Branch>),
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break {
        pos: usize,
    },
    Continue {
        pos: usize,
    },
}

impl Node {
    pub(crate) fn pos(&self) -> usize {
        match self {
            Node::Text { pos, .. }
            | Node::Action { pos, .. }
            | Node::Template { pos, .. }
            | Node::Break { pos }
            | Node::Continue { pos } => *pos,
            Node::If(b) | Node::Range(b) | Node::With(b) => b.pos,
        }
    }
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub pos: usize,
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// A declared variable of a pipeline (`$x :=`).
#[derive(Debug, Clone)]
pub(crate) struct Decl {
    #[allow(dead_code)] // kept for parity with Go's VariableNode and for tools
    pub pos: usize,
    pub name: String,
}

/// A pipeline: optional declarations, then commands separated by `|`.
#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub pos: usize,
    pub is_assign: bool,
    pub decl: Vec<Decl>,
    pub cmds: Vec<Command>,
}

/// A command: an operand, possibly a function or method with arguments.
#[derive(Debug, Clone)]
pub(crate) struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// A parsed number constant (Go's `NumberNode`).
#[derive(Debug, Clone)]
pub(crate) struct Number {
    pub text: String,
    pub is_int: bool,
    pub int: i64,
    pub is_uint: bool,
    pub is_float: bool,
    pub float: f64,
}

/// An operand.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// `.A.B`
    Field {
        pos: usize,
        idents: Vec<String>,
    },
    /// `$x.A.B` (`idents[0]` is `$x`)
    Variable {
        pos: usize,
        idents: Vec<String>,
    },
    /// `(pipe).A.B` or `$x.A` after a non-variable term
    Chain {
        pos: usize,
        node: Box<Arg>,
        fields: Vec<String>,
    },
    /// A function name.
    Identifier {
        pos: usize,
        name: String,
    },
    Dot {
        pos: usize,
    },
    Nil {
        pos: usize,
    },
    Bool {
        pos: usize,
        val: bool,
    },
    Number {
        pos: usize,
        num: Box<Number>,
    },
    String {
        pos: usize,
        quoted: String,
        text: String,
    },
    /// A parenthesized pipeline.
    Pipe(Box<Pipe>),
}

impl Arg {
    pub(crate) fn pos(&self) -> usize {
        match self {
            Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Chain { pos, .. }
            | Arg::Identifier { pos, .. }
            | Arg::Dot { pos }
            | Arg::Nil { pos }
            | Arg::Bool { pos, .. }
            | Arg::Number { pos, .. }
            | Arg::String { pos, .. } => *pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field { idents, .. } => {
                for id in idents {
                    write!(f, ".{id}")?;
                }
                Ok(())
            }
            Arg::Variable { idents, .. } => f.write_str(&idents.join(".")),
            Arg::Chain { node, fields, .. } => {
                if let Arg::Pipe(p) = &**node {
                    write!(f, "({p})")?;
                } else {
                    write!(f, "{node}")?;
                }
                for field in fields {
                    write!(f, ".{field}")?;
                }
                Ok(())
            }
            Arg::Identifier { name, .. } => f.write_str(name),
            Arg::Dot { .. } => f.write_str("."),
            Arg::Nil { .. } => f.write_str("nil"),
            Arg::Bool { val, .. } => write!(f, "{val}"),
            Arg::Number { num, .. } => f.write_str(&num.text),
            Arg::String { quoted, .. } => f.write_str(quoted),
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if let Arg::Pipe(p) = a {
                write!(f, "({p})")?;
            } else {
                write!(f, "{a}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            for (i, d) in self.decl.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                f.write_str(&d.name)?;
            }
            f.write_str(if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[Node]) -> fmt::Result {
    for n in list {
        write!(f, "{n}")?;
    }
    Ok(())
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Text { text, .. } => f.write_str(text),
            Node::Action { pipe, .. } => write!(f, "{{{{{pipe}}}}}"),
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                let name = match self {
                    Node::If(_) => "if",
                    Node::Range(_) => "range",
                    _ => "with",
                };
                write!(f, "{{{{{name} {}}}}}", b.pipe)?;
                write_list(f, &b.list)?;
                if let Some(e) = &b.else_list {
                    f.write_str("{{else}}")?;
                    write_list(f, e)?;
                }
                f.write_str("{{end}}")
            }
            Node::Template { name, pipe, .. } => {
                write!(f, "{{{{template {}", super::fmt::quote(name, false))?;
                if let Some(p) = pipe {
                    write!(f, " {p}")?;
                }
                f.write_str("}}")
            }
            Node::Break { .. } => f.write_str("{{break}}"),
            Node::Continue { .. } => f.write_str("{{continue}}"),
        }
    }
}
