//! Template errors, worded as Go's `text/template` words them.
//!
//! A parse error reads `template: NAME:LINE:COL: MESSAGE`; an execution error reads
//! `template: NAME:LINE:COL: executing "TEMPLATE" at <NODE>: MESSAGE`, where NAME is the
//! name the text was parsed under, TEMPLATE the (possibly `define`d) template being
//! executed and NODE the template source of the failing node. LINE is 1-based and COL
//! is the 0-based byte offset in the line, both as Go computes them. Go's own parse
//! errors carry only the line; ours add the column.

use std::fmt;

/// A template failed to parse or to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a valid template (syntax, undefined function or variable,
    /// nesting beyond the parser's limit).
    Parse {
        /// Name the text was parsed under.
        name: String,
        /// 1-based line of the offending token.
        line: usize,
        /// 0-based byte offset of the token in its line.
        col: usize,
        /// What is wrong, in Go's words.
        message: String,
    },
    /// Execution failed at a node: a function returned an error, a value had the wrong
    /// type, a limit was reached.
    Exec {
        /// Name the failing node's text was parsed under.
        name: String,
        /// The template being executed.
        template: String,
        /// 1-based line of the node.
        line: usize,
        /// 0-based byte offset of the node in its line.
        col: usize,
        /// The node's source text.
        context: String,
        /// What went wrong, in Go's words.
        message: String,
    },
    /// Execution failed before reaching any node (no such template, empty template).
    Template {
        /// The template asked for.
        template: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whether retrying can help: never, a template's outcome depends only on its text
    /// and data.
    pub fn is_transient(&self) -> bool {
        false
    }

    /// The message without the location prefix.
    pub fn message(&self) -> &str {
        match self {
            Error::Parse { message, .. }
            | Error::Exec { message, .. }
            | Error::Template { message, .. } => message,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse {
                name,
                line,
                col,
                message,
            } => write!(f, "template: {name}:{line}:{col}: {message}"),
            Error::Exec {
                name,
                template,
                line,
                col,
                context,
                message,
            } => write!(
                f,
                "template: {name}:{line}:{col}: executing {} at <{context}>: {message}",
                super::fmt::quote(template, false)
            ),
            Error::Template { template, message } => {
                write!(f, "template: {template}: {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

/// Line (1-based) and column (0-based byte offset in the line) of byte `pos` of `text`,
/// as Go's `Tree.ErrorContext` computes them.
pub(crate) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text.as_bytes()[..pos];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let col = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => pos - (nl + 1),
        None => pos,
    };
    (line, col)
}
