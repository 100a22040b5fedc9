//! Parsing through the public [`parse`]: precedence, printing, every syntax error and the limits.

use super::ast::{Kind, Node};
use super::{ExprError, ExprErrorKind, MAX_DEPTH, MAX_SOURCE_LEN, parse};

/// The tree in prefix form, every node parenthesised: `a || b && c` is `(|| a (&& b c))`.
fn prefix(node: &Node) -> String {
    match &node.kind {
        Kind::Not(operand) => format!("(! {})", prefix(operand)),
        Kind::Binary { op, lhs, rhs } => {
            format!("({} {} {})", op.symbol(), prefix(lhs), prefix(rhs))
        }
        Kind::Call { name, args } => {
            let args: String = args.iter().map(|arg| format!(" {}", prefix(arg))).collect();
            format!("({name}{args})")
        }
        _ => node.to_string(),
    }
}

fn tree(src: &str) -> String {
    match parse(src) {
        Ok(expr) => prefix(&expr.root),
        Err(error) => panic!("{src:?} does not parse: {error:?}"),
    }
}

fn error(src: &str) -> ExprError {
    match parse(src) {
        Ok(expr) => panic!("{src:?} parsed as {expr}"),
        Err(error) => error,
    }
}

/// Asserts the error's kind and range, and returns it for the rest.
fn error_at(src: &str, kind: ExprErrorKind, offset: usize, len: usize) -> ExprError {
    let error = error(src);
    assert_eq!(
        (error.kind, error.offset, error.len),
        (kind, offset, len),
        "{src:?}: {error:?}"
    );
    error
}

const OPERAND: &str =
    "a string, a number, `true`, `false`, a variable, a function call, `!` or `(`";

#[test]
fn operators_bind_by_precedence() {
    for (src, expected) in [
        ("a || b && c", "(|| a (&& b c))"),
        ("a && b || c", "(|| (&& a b) c)"),
        ("a || b || c", "(|| (|| a b) c)"),
        ("a && b && c", "(&& (&& a b) c)"),
        ("a == b && c != d", "(&& (== a b) (!= c d))"),
        ("a == b || c", "(|| (== a b) c)"),
        ("!a == b", "(== (! a) b)"),
        ("a != !b", "(!= a (! b))"),
        ("!a && b", "(&& (! a) b)"),
        ("!!a", "(! (! a))"),
        ("!(a == b)", "(! (== a b))"),
        ("(a || b) && c", "(&& (|| a b) c)"),
        ("a && (b || c)", "(&& a (|| b c))"),
        ("(a == b) == c", "(== (== a b) c)"),
        ("f(a, b || c)", "(f a (|| b c))"),
        ("f()", "(f)"),
        ("!f(a)", "(! (f a))"),
    ] {
        assert_eq!(tree(src), expected, "{src}");
    }
}

#[test]
fn literals_and_variables_parse_as_leaves() {
    for (src, expected) in [
        ("'main'", "'main'"),
        ("\"main\"", "'main'"),
        ("1.50", "1.5"),
        ("true", "true"),
        ("false", "false"),
        ("params.TARGET", "params.TARGET"),
        ("env._X1", "env._X1"),
    ] {
        assert_eq!(tree(src), expected, "{src}");
    }
}

#[test]
fn parentheses_and_spacing_leave_no_trace_in_the_tree() {
    let shape = |src: &str| parse(src).map(|e| e.root.without_spans());
    assert_eq!(shape("((a)) == ( 'b' )"), shape("a=='b'"));
    assert_eq!(shape("(a || b) || c"), shape("a || b || c"));
    assert_ne!(shape("a || (b || c)"), shape("a || b || c"));
}

#[test]
fn nodes_span_their_source_text() {
    let Ok(expr) = parse("  starts_with(tag, 'v') && !x") else {
        panic!("parses")
    };
    assert_eq!((expr.root.span.start, expr.root.span.end), (2, 29));
    let Kind::Binary { lhs, rhs, .. } = &expr.root.kind else {
        panic!("a binary root")
    };
    assert_eq!((lhs.span.start, lhs.span.end), (2, 23));
    assert_eq!((rhs.span.start, rhs.span.end), (27, 29));
}

#[test]
fn printing_is_canonical() {
    for (src, printed) in [
        (
            "branch=='main'&&!(event==\"tag\")",
            "branch == 'main' && !(event == 'tag')",
        ),
        ("(a || b) && c", "(a || b) && c"),
        ("a || (b || c)", "a || (b || c)"),
        ("(a || b) || c", "a || b || c"),
        ("((a == b)) == (c != d)", "(a == b) == (c != d)"),
        ("!(!a)", "!!a"),
        ("!(a && b)", "!(a && b)"),
        ("starts_with( tag ,'v' )", "starts_with(tag, 'v')"),
        ("f()", "f()"),
        ("1.50 == 01", "1.5 == 1"),
        ("\"it's\" == 'say \"hi\"'", "\"it's\" == 'say \"hi\"'"),
        ("'a\\tb\\\\'", "'a\\tb\\\\'"),
    ] {
        let expr = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e:?}"));
        assert_eq!(expr.to_string(), printed, "{src}");
        assert_eq!(expr.source(), src);
    }
}

#[test]
fn printing_then_parsing_gives_the_same_tree() {
    for src in [
        "branch == 'main' && params.TARGET == 'release'",
        "!(a || b) && (c == d || !e) || f(g, h && (i || j))",
        "(a == b) != (c == (d || e))",
        "'\\'\"\\n\\t\\\\' == x",
        "0.0010 == 100.0",
    ] {
        let Ok(expr) = parse(src) else {
            panic!("{src}")
        };
        let again = parse(&expr.to_string()).map(|e| e.root.without_spans());
        assert_eq!(again, Ok(expr.root.without_spans()), "{src}");
    }
}

#[test]
fn an_empty_expression_is_an_error() {
    for src in ["", "  \n\t"] {
        let e = error_at(src, ExprErrorKind::Empty, 0, src.len());
        assert_eq!(e.message, "the expression is empty");
        assert_eq!(
            e.expected.as_deref(),
            Some("a condition such as `branch == 'main'`")
        );
    }
}

#[test]
fn a_missing_operand_at_the_end_points_past_the_text() {
    let e = error_at("branch ==", ExprErrorKind::UnexpectedToken, 9, 0);
    assert_eq!(e.message, "unexpected end of the expression");
    assert_eq!(e.expected.as_deref(), Some(OPERAND));
}

#[test]
fn an_operator_where_an_operand_belongs_is_named() {
    let e = error_at("branch == && x", ExprErrorKind::UnexpectedToken, 10, 2);
    assert_eq!(e.message, "unexpected `&&`");
    assert_eq!(e.expected.as_deref(), Some(OPERAND));
    assert_eq!(
        e.help.as_deref(),
        Some("`&&` and `||` need a condition on each side")
    );
    let e = error_at("== 'main'", ExprErrorKind::UnexpectedToken, 0, 2);
    assert_eq!(
        e.help.as_deref(),
        Some("a comparison needs a value on each side")
    );
    error_at("()", ExprErrorKind::UnexpectedToken, 1, 1);
    error_at("f(a,)", ExprErrorKind::UnexpectedToken, 4, 1);
}

#[test]
fn a_missing_operator_lists_what_may_follow() {
    let e = error_at("branch 'main'", ExprErrorKind::UnexpectedToken, 7, 6);
    assert_eq!(e.message, "unexpected string `'main'`");
    assert_eq!(
        e.expected.as_deref(),
        Some("`==`, `!=`, `&&`, `||` or the end of the expression")
    );
    assert_eq!(
        e.help.as_deref(),
        Some("is an operator such as `==` or `&&` missing before it?")
    );
}

#[test]
fn what_may_follow_depends_on_the_context() {
    for (src, offset, expected) in [
        (
            "branch == 'main' tag",
            17,
            "`&&`, `||` or the end of the expression",
        ),
        ("(branch == 'a' x)", 15, "`&&`, `||` or `)`"),
        ("(branch x)", 8, "`==`, `!=`, `&&`, `||` or `)`"),
        ("f(branch 'x')", 9, "`==`, `!=`, `&&`, `||`, `,` or `)`"),
    ] {
        let e = error(src);
        assert_eq!(
            (e.kind, e.offset),
            (ExprErrorKind::UnexpectedToken, offset),
            "{src}"
        );
        assert_eq!(e.expected.as_deref(), Some(expected), "{src}");
    }
    assert_eq!(
        error("f(branch 'x')").help.as_deref(),
        Some("is a `,` or an operator missing before it?")
    );
}

#[test]
fn words_for_operators_get_a_hint() {
    for (src, help) in [
        ("a and b", "use `&&` for \"and\""),
        ("a OR b", "use `||` for \"or\""),
        ("a not b", "use `!` for \"not\", before its operand"),
        (
            "a ! b",
            "to compare for inequality, write `!=` with no space",
        ),
    ] {
        assert_eq!(error(src).help.as_deref(), Some(help), "{src}");
    }
}

#[test]
fn an_unclosed_parenthesis_points_at_the_parenthesis() {
    let e = error_at("(branch == 'a'", ExprErrorKind::UnclosedParen, 0, 1);
    assert_eq!(e.message, "unclosed `(`");
    assert_eq!(
        e.expected.as_deref(),
        Some("a `)` before the end of the expression")
    );
    error_at(
        "x && starts_with(tag, 'v'",
        ExprErrorKind::UnclosedParen,
        16,
        1,
    );
}

#[test]
fn an_unmatched_parenthesis_is_an_error() {
    let e = error_at("branch == 'a')", ExprErrorKind::UnmatchedParen, 13, 1);
    assert_eq!(e.message, "unmatched `)`");
}

#[test]
fn comparisons_do_not_chain() {
    for src in ["a == b == c", "a == b != c", "a != !b == c"] {
        let at = src.rfind(['=', '!']).map_or(0, |i| i - 1);
        let e = error_at(src, ExprErrorKind::ChainedComparison, at, 2);
        assert_eq!(e.message, "comparisons cannot be chained");
        assert!(e.help.is_some_and(|h| h.contains("`(a == b) == c`")));
    }
}

#[test]
fn the_first_error_in_source_order_wins() {
    // The parser stops at the second `==` before the lexer ever reaches the `@`.
    error_at("branch == == 'x' @", ExprErrorKind::UnexpectedToken, 10, 2);
    error_at("branch @ == == 'x'", ExprErrorKind::UnexpectedChar, 7, 1);
}

#[test]
fn sources_up_to_the_length_limit_parse() {
    let longest = format!("'{}'", "a".repeat(MAX_SOURCE_LEN - 2));
    assert!(parse(&longest).is_ok());
    let too_long = format!("'{}'", "a".repeat(MAX_SOURCE_LEN - 1));
    let e = error_at(&too_long, ExprErrorKind::TooLong, 0, MAX_SOURCE_LEN + 1);
    assert_eq!(
        e.message,
        "the expression is 4097 bytes long, over the limit of 4096"
    );
}

#[test]
fn nesting_up_to_the_depth_limit_parses() {
    let parens = |n| format!("{}a{}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&parens(MAX_DEPTH)).is_ok());
    let e = error_at(&parens(MAX_DEPTH + 1), ExprErrorKind::TooDeep, MAX_DEPTH, 1);
    assert_eq!(
        e.message,
        "the expression is nested more than 64 levels deep"
    );

    let bangs = |n| format!("{}a", "!".repeat(n));
    assert!(parse(&bangs(MAX_DEPTH)).is_ok());
    error_at(&bangs(MAX_DEPTH + 1), ExprErrorKind::TooDeep, MAX_DEPTH, 1);

    let calls = |n| format!("{}a{}", "f(".repeat(n), ")".repeat(n));
    assert!(parse(&calls(MAX_DEPTH)).is_ok());
    error_at(
        &calls(MAX_DEPTH + 1),
        ExprErrorKind::TooDeep,
        2 * MAX_DEPTH + 1,
        1,
    );
}

#[test]
fn long_operator_chains_count_as_nesting() {
    let chain = |n| format!("a{}", " && a".repeat(n));
    assert!(parse(&chain(MAX_DEPTH)).is_ok());
    // The 65th `&&` starts at byte 1 + 64 * 5 + 1.
    error_at(&chain(MAX_DEPTH + 1), ExprErrorKind::TooDeep, 322, 2);
    // Levels add up across kinds: each `(a && ...)` is two.
    let nested = |n| format!("{}a{}", "(a && ".repeat(n), ")".repeat(n));
    assert!(parse(&nested(MAX_DEPTH / 2)).is_ok());
    assert_eq!(
        parse(&nested(MAX_DEPTH / 2 + 1)).map_err(|e| e.kind),
        Err(ExprErrorKind::TooDeep)
    );
}

#[test]
fn hostile_nesting_is_an_error_not_a_stack_overflow() {
    error_at(&"(".repeat(4000), ExprErrorKind::TooDeep, MAX_DEPTH, 1);
    error_at(&"!".repeat(4000), ExprErrorKind::TooDeep, MAX_DEPTH, 1);
    error_at(
        &"f(".repeat(2000),
        ExprErrorKind::TooDeep,
        2 * MAX_DEPTH + 1,
        1,
    );
    error_at(&"(".repeat(10_000), ExprErrorKind::TooLong, 0, 10_000);
    let chain = format!("a{}", "||a".repeat(1300));
    error_at(&chain, ExprErrorKind::TooDeep, 1 + 3 * MAX_DEPTH, 2);
}
