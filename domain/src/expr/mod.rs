//! The `when` expression language: the condition a job or step runs under, such as
//! `branch == 'main' && params.TARGET == 'release'`.
//!
//! An expression goes through three stages, each a plain function of its inputs:
//! 1. [`parse`] turns text into an [`Expr`], or reports the first syntax error.
//! 2. [`Expr::check`] reports every static problem against a [`Scope`] (unknown variables and
//!    parameters, unknown functions, wrong arity, type errors). Every variable is a string, so
//!    typing is fully static: an expression that checks clean cannot go wrong at run time.
//! 3. [`Expr::eval`] decides the condition for one run's [`EvalContext`]. It is total.
//!
//! Where to start reading: this file for the public contract, then `lexer.rs` → `parser.rs`
//! (grammar, the explicit-stack parse and the nesting limit) → `check.rs` (types and names) →
//! `eval.rs`. `ast.rs` holds the tree and its canonical printing, `names.rs` the built-in
//! variables and functions, `syntax.rs` the wording of syntax errors. Tests: `parse_tests.rs`,
//! `check_tests.rs`, `props.rs` (property tests), and inline modules. The user reference is
//! `docs/expressions.md`.
//!
//! Guarantees: no input panics or overflows the stack. Sources longer than [`MAX_SOURCE_LEN`]
//! bytes and trees nested deeper than [`MAX_DEPTH`] levels are rejected by [`parse`], so every
//! walk over an [`Expr`] is bounded. Every error offset lies on a `char` boundary of the source.

mod ast;
mod check;
#[cfg(test)]
mod check_tests;
mod eval;
mod lexer;
mod names;
#[cfg(test)]
mod parse_tests;
mod parser;
#[cfg(test)]
mod props;
mod syntax;

use std::collections::BTreeMap;
use std::fmt;

use ast::{Node, Span};

/// The longest source [`parse`] accepts, in bytes.
pub const MAX_SOURCE_LEN: usize = 4096;

/// The deepest nesting [`parse`] accepts. Each pair of parentheses, each `!`, each function call
/// and each binary operator above an operand is one level, so `a && b && c` is two levels deep.
pub const MAX_DEPTH: usize = 64;

/// A parsed `when` expression.
///
/// Equality is exact: two expressions are equal when they were parsed from trees with the same
/// shape at the same byte offsets and the same source text, so equal expressions report equal
/// diagnostics. Compare `to_string()` to ignore spacing, quoting and redundant parentheses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    source: String,
    root: Node,
}

/// What a `when` expression may refer to, for the static check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The pipeline's declared parameter names. `env.X` is always allowed: the run-time
    /// environment may set any variable.
    pub params: &'a [&'a str],
}

/// The values of the variables for one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext<'a> {
    pub branch: &'a str,
    pub event: &'a str,
    pub tag: &'a str,
    pub pipeline: &'a str,
    /// Resolved run parameters; a parameter missing here evaluates to `""`.
    pub params: &'a BTreeMap<String, String>,
    /// The run-time environment; an unset `env.X` evaluates to `""`.
    pub env: &'a BTreeMap<String, String>,
}

/// An error at a byte range of the expression's source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What went wrong, for programs (the `message` is for people).
    pub kind: ExprErrorKind,
    /// Byte offset into the source where the problem starts; always a `char` boundary.
    pub offset: usize,
    /// Byte length of the offending token or sub-expression: at least 1 when there is a token,
    /// 0 at the end of the input.
    pub len: usize,
    /// What is wrong, e.g. "unknown variable `brnch`".
    pub message: String,
    /// What was expected, e.g. "`==`, `!=`, `&&`, `||` or `)`".
    pub expected: Option<String>,
    /// How to fix it, e.g. "did you mean `branch`?".
    pub help: Option<String>,
}

/// The kinds of [`ExprError`]. The first group comes from [`parse`], the second from
/// [`Expr::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExprErrorKind {
    /// The source is longer than [`MAX_SOURCE_LEN`] bytes.
    TooLong,
    /// The source is empty or only whitespace.
    Empty,
    /// The tree is nested deeper than [`MAX_DEPTH`] levels.
    TooDeep,
    /// A string literal has no closing quote.
    UnterminatedString,
    /// A backslash escape other than `\\`, `\'`, `\"`, `\n`, `\t`.
    UnknownEscape,
    /// A character that starts no token, such as `=` or `@`.
    UnexpectedChar,
    /// Something that starts like a number but is not one, such as `1.` or `2x`.
    InvalidNumber,
    /// Something that starts like a name but is not one, such as `params.` or `brånch`.
    InvalidName,
    /// A token where it cannot stand, or the end of the input too early.
    UnexpectedToken,
    /// A `(` with no matching `)`.
    UnclosedParen,
    /// A `)` with no matching `(`.
    UnmatchedParen,
    /// `a == b == c`: comparisons do not chain.
    ChainedComparison,
    /// A variable that does not exist.
    UnknownVariable,
    /// `params.X` where the pipeline declares no parameter `X`.
    UnknownParameter,
    /// A function that does not exist.
    UnknownFunction,
    /// A function called with the wrong number of arguments.
    WrongArity,
    /// An operand or argument of the wrong type.
    TypeMismatch,
    /// The whole expression is not a boolean.
    NotBoolean,
}

impl ExprError {
    fn new(kind: ExprErrorKind, span: Span, message: impl Into<String>) -> Self {
        Self {
            kind,
            offset: span.start,
            len: span.end.saturating_sub(span.start),
            message: message.into(),
            expected: None,
            help: None,
        }
    }

    fn expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// Parses a `when` expression. Reports only syntax errors, and only the first one; call
/// [`Expr::check`] on the result for names and types.
///
/// Errors: a source over [`MAX_SOURCE_LEN`] bytes, an empty source, nesting over
/// [`MAX_DEPTH`] levels, and any malformed token or grammar.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let root = parser::parse(src)?;
    Ok(Expr {
        source: src.to_owned(),
        root,
    })
}

impl Expr {
    /// Every static problem, in source order: unknown variables (with a "did you mean" over the
    /// built-in names and `params.*`), unknown parameters (over `scope.params`), unknown
    /// functions, wrong arity and type errors, including an expression that is not a boolean.
    pub fn check(&self, scope: &Scope<'_>) -> Vec<ExprError> {
        check::check(&self.root, scope)
    }

    /// Whether the condition holds for `ctx`.
    ///
    /// Total: after a clean [`Expr::check`] it cannot go wrong. On a badly typed tree every
    /// ill-typed part (such as `!branch` or `1 == 'a'`) counts as false.
    pub fn eval(&self, ctx: &EvalContext<'_>) -> bool {
        eval::eval(&self.root, ctx)
    }

    /// The text this expression was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Canonical printing: single spaces around binary operators, the fewest parentheses that keep
/// the tree, strings in single quotes (double quotes if that avoids escaping), numbers in their
/// shortest decimal form. `parse(&e.to_string())` gives back the same tree as `e` (the printing
/// may be longer than the source, so for a source near [`MAX_SOURCE_LEN`] it may be too long).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Source text short enough to quote in a message, with control characters escaped so the
/// message stays on one line.
fn snippet(text: &str) -> String {
    const MAX_CHARS: usize = 32;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
