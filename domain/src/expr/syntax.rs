//! The wording of syntax errors: what is wrong, what was expected there, and a hint. The parser
//! decides where an error is; this file decides what it says.

use super::ast::Span;
use super::lexer::{Tok, Token};
use super::{ExprError, ExprErrorKind, MAX_DEPTH, MAX_SOURCE_LEN, join_or, snippet};

const EXPECTED_OPERAND: &str =
    "a string, a number, `true`, `false`, a variable, a function call, `!` or `(`";

/// The innermost open group around the parser's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    None,
    Paren,
    Call,
}

/// Where the parser stands after a complete operand.
#[derive(Debug, Clone, Copy)]
pub(super) struct After {
    /// A `==` or `!=` waits for this operand, so another one may not follow.
    pub comparison_waits: bool,
    pub group: Group,
}

pub(super) fn too_long(len: usize) -> ExprError {
    ExprError::new(
        ExprErrorKind::TooLong,
        Span::new(0, len),
        format!("the expression is {len} bytes long, over the limit of {MAX_SOURCE_LEN}"),
    )
    .help("move the logic into a step's script, or split the condition")
}

pub(super) fn empty(len: usize) -> ExprError {
    ExprError::new(
        ExprErrorKind::Empty,
        Span::new(0, len),
        "the expression is empty",
    )
    .expected("a condition such as `branch == 'main'`")
}

pub(super) fn unmatched(at: Span) -> ExprError {
    ExprError::new(ExprErrorKind::UnmatchedParen, at, "unmatched `)`")
        .help("remove it, or add the `(` it should close")
}

pub(super) fn too_deep(at: Span) -> ExprError {
    ExprError::new(
        ExprErrorKind::TooDeep,
        at,
        format!("the expression is nested more than {MAX_DEPTH} levels deep"),
    )
    .help("each `(`, `!`, function call and chained `&&`, `||`, `==` or `!=` is a level; simplify the condition")
}

pub(super) fn unclosed(open: Span) -> ExprError {
    ExprError::new(ExprErrorKind::UnclosedParen, open, "unclosed `(`")
        .expected("a `)` before the end of the expression")
}

pub(super) fn chained(at: Span) -> ExprError {
    ExprError::new(
        ExprErrorKind::ChainedComparison,
        at,
        "comparisons cannot be chained",
    )
    .help("join two comparisons with `&&`, or group one in parentheses: `(a == b) == c`")
}

fn describe(src: &str, token: &Token) -> String {
    let text = snippet(src.get(token.span.start..token.span.end).unwrap_or(""));
    match token.tok {
        Tok::Eof => "end of the expression".to_owned(),
        Tok::Str(_) => format!("string `{text}`"),
        Tok::Num(_) => format!("number `{text}`"),
        Tok::Name(_) => format!("name `{text}`"),
        _ => format!("`{text}`"),
    }
}

/// An error for `token` where an operand should start.
pub(super) fn expected_operand(src: &str, token: &Token) -> ExprError {
    let help = match token.tok {
        Tok::EqEq | Tok::NotEq => Some("a comparison needs a value on each side"),
        Tok::AndAnd | Tok::OrOr => Some("`&&` and `||` need a condition on each side"),
        _ => None,
    };
    ExprError::new(
        ExprErrorKind::UnexpectedToken,
        token.span,
        format!("unexpected {}", describe(src, token)),
    )
    .expected(EXPECTED_OPERAND)
    .with_help(help.map(str::to_owned))
}

/// An error for `token` right after a complete operand.
pub(super) fn unexpected_after_operand(src: &str, token: &Token, after: After) -> ExprError {
    let mut options = if after.comparison_waits {
        vec!["`&&`", "`||`"]
    } else {
        vec!["`==`", "`!=`", "`&&`", "`||`"]
    };
    let in_call = after.group == Group::Call;
    match after.group {
        Group::None => options.push("the end of the expression"),
        Group::Paren => options.push("`)`"),
        Group::Call => options.extend(["`,`", "`)`"]),
    }
    let missing = if in_call {
        "is a `,` or an operator missing before it?"
    } else {
        "is an operator such as `==` or `&&` missing before it?"
    };
    let help = match &token.tok {
        Tok::Name(name) => match name.to_ascii_lowercase().as_str() {
            "and" => "use `&&` for \"and\"",
            "or" => "use `||` for \"or\"",
            "not" => "use `!` for \"not\", before its operand",
            _ => missing,
        },
        Tok::Str(_) | Tok::Num(_) | Tok::True | Tok::False | Tok::LParen => missing,
        Tok::Bang => "to compare for inequality, write `!=` with no space",
        _ => "",
    };
    let error = ExprError::new(
        ExprErrorKind::UnexpectedToken,
        token.span,
        format!("unexpected {}", describe(src, token)),
    )
    .expected(join_or(&options));
    if help.is_empty() {
        error
    } else {
        error.help(help)
    }
}
