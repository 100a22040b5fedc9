//! The syntax tree of a `when` expression and its canonical printing.
//!
//! Parentheses leave no node behind: `(a)` and `a` are the same tree, so printing adds exactly
//! the parentheses the tree needs. Numbers are kept normalised so that `1` and `1.0` are the
//! same value and the tree can stay `Eq` without floating point.

use std::fmt::{self, Write as _};

/// A byte range of the source; both ends on `char` boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub kind: Kind,
    /// The node's source text, parentheses around it included.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Str(String),
    Num(Number),
    Bool(bool),
    /// A possibly dotted name such as `branch` or `params.TARGET`, resolved by `names::resolve`.
    Var(String),
    Not(Box<Node>),
    Binary {
        op: BinOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
    },
    /// The name starts at the node's span, so its span is `span.start..span.start + name.len()`.
    Call {
        name: String,
        args: Vec<Node>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// Binding strength, tighter is higher; `!` is 4 and operands 5.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne => 3,
        }
    }
}

impl Node {
    pub fn new(kind: Kind, span: Span) -> Self {
        Self { kind, span }
    }

    fn precedence(&self) -> u8 {
        match &self.kind {
            Kind::Binary { op, .. } => op.precedence(),
            Kind::Not(_) => 4,
            _ => 5,
        }
    }

    /// The same tree with every span zeroed, to compare shapes.
    #[cfg(test)]
    pub fn without_spans(&self) -> Node {
        let kind = match &self.kind {
            Kind::Not(inner) => Kind::Not(Box::new(inner.without_spans())),
            Kind::Binary { op, lhs, rhs } => Kind::Binary {
                op: *op,
                lhs: Box::new(lhs.without_spans()),
                rhs: Box::new(rhs.without_spans()),
            },
            Kind::Call { name, args } => Kind::Call {
                name: name.clone(),
                args: args.iter().map(Node::without_spans).collect(),
            },
            leaf => leaf.clone(),
        };
        Node::new(kind, Span::default())
    }
}

/// Prints `node`, in parentheses when it binds more loosely than its place needs.
fn write_operand(f: &mut fmt::Formatter<'_>, node: &Node, min_precedence: u8) -> fmt::Result {
    if node.precedence() < min_precedence {
        write!(f, "({node})")
    } else {
        write!(f, "{node}")
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Str(value) => write_string(f, value),
            Kind::Num(number) => write!(f, "{number}"),
            Kind::Bool(value) => write!(f, "{value}"),
            Kind::Var(name) => f.write_str(name),
            Kind::Not(inner) => {
                f.write_char('!')?;
                write_operand(f, inner, 4)
            }
            Kind::Binary { op, lhs, rhs } => {
                // `||` and `&&` associate to the left, so a right operand of the same operator
                // needs parentheses; comparisons do not chain at all.
                let (left, right) = match op {
                    BinOp::Or => (1, 2),
                    BinOp::And => (2, 3),
                    BinOp::Eq | BinOp::Ne => (4, 4),
                };
                write_operand(f, lhs, left)?;
                write!(f, " {} ", op.symbol())?;
                write_operand(f, rhs, right)
            }
            Kind::Call { name, args } => {
                write!(f, "{name}(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_char(')')
            }
        }
    }
}

/// A string literal in single quotes, or in double quotes when that avoids escaping a `'`.
fn write_string(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let quote = if value.contains('\'') && !value.contains('"') {
        '"'
    } else {
        '\''
    };
    f.write_char(quote)?;
    for c in value.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char(quote)
}

/// A non-negative decimal number, exactly: `digits × 10^exponent`, with neither leading nor
/// trailing zeros in `digits` (zero is no digits and exponent 0). So equal values are equal
/// structs, with no rounding: `1`, `1.0` and `01.00` are one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Number {
    digits: String,
    exponent: i64,
}

impl Number {
    /// From the text of a number literal, `[0-9]+(\.[0-9]+)?`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Number> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !all_digits(whole)
            || !all_digits(fraction)
            || (text.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let mut digits: String = whole.chars().chain(fraction.chars()).collect();
        let mut exponent = -i64::try_from(fraction.len()).ok()?;
        while digits.ends_with('0') {
            digits.pop();
            exponent += 1;
        }
        let digits = digits.trim_start_matches('0').to_owned();
        if digits.is_empty() {
            exponent = 0;
        }
        Some(Number { digits, exponent })
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.digits.is_empty() {
            return f.write_char('0');
        }
        match usize::try_from(-self.exponent) {
            // A whole number: the digits, then the trailing zeros.
            Err(_) | Ok(0) => {
                f.write_str(&self.digits)?;
                let zeros = usize::try_from(self.exponent).unwrap_or(0);
                (0..zeros).try_for_each(|_| f.write_char('0'))
            }
            Ok(places) => match self.digits.len().checked_sub(places) {
                Some(point) => {
                    let (whole, fraction) = self.digits.split_at(point);
                    let whole = if whole.is_empty() { "0" } else { whole };
                    write!(f, "{whole}.{fraction}")
                }
                None => {
                    f.write_str("0.")?;
                    (self.digits.len()..places).try_for_each(|_| f.write_char('0'))?;
                    f.write_str(&self.digits)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Number {
        Number::parse(text).unwrap_or_else(|| panic!("{text} is a number"))
    }

    #[test]
    fn numbers_equal_in_value_are_equal() {
        assert_eq!(number("1"), number("1.0"));
        assert_eq!(number("01.500"), number("1.5"));
        assert_eq!(number("0"), number("0.000"));
        assert_eq!(number("100"), number("100.00"));
        assert_ne!(number("10"), number("1"));
        assert_ne!(number("0.1"), number("0.01"));
        // No floating point rounding: these differ in the last digit.
        assert_ne!(number("9007199254740993"), number("9007199254740992"));
    }

    #[test]
    fn numbers_print_in_shortest_decimal_form() {
        for (text, printed) in [
            ("0", "0"),
            ("000.000", "0"),
            ("7", "7"),
            ("1.0", "1"),
            ("100", "100"),
            ("2.50", "2.5"),
            ("0.05", "0.05"),
            ("12.345", "12.345"),
            ("0012.0100", "12.01"),
        ] {
            assert_eq!(number(text).to_string(), printed, "{text}");
        }
    }

    #[test]
    fn malformed_number_text_is_not_a_number() {
        for text in ["", ".", "1.", ".5", "1.2.3", "1x", "-1", "1e3", "١"] {
            assert_eq!(Number::parse(text), None, "{text}");
        }
    }

    #[test]
    fn strings_print_with_the_quote_that_needs_no_escape() {
        let print = |s: &str| Node::new(Kind::Str(s.into()), Span::default()).to_string();
        assert_eq!(print("main"), "'main'");
        assert_eq!(print("it's"), "\"it's\"");
        assert_eq!(print("say \"hi\""), "'say \"hi\"'");
        assert_eq!(print("both ' and \""), "'both \\' and \"'");
        assert_eq!(print("a\\b\nc\td"), "'a\\\\b\\nc\\td'");
        assert_eq!(print(""), "''");
    }
}
