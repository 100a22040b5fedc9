//! Property tests: no input panics or overflows the stack, errors point inside the source, and
//! printing then parsing a well-typed tree gives back the tree and its meaning.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;

use super::ast::{BinOp, Kind, Node, Number, Span};
use super::names::Function;
use super::{EvalContext, ExprError, MAX_SOURCE_LEN, Scope, eval, parse};

const PARAMS: &[&str] = &["A", "B"];

/// Asserts an error's range lies on `char` boundaries inside the source.
fn assert_in_source(src: &str, error: &ExprError) {
    let end = error.offset + error.len;
    assert!(end <= src.len(), "{error:?} runs past {} bytes", src.len());
    assert!(src.is_char_boundary(error.offset), "{error:?}");
    assert!(src.is_char_boundary(end), "{error:?}");
    assert!(!error.message.is_empty());
}

/// Everything the public API can do with `src`, asserting only that it is well-behaved.
fn exercise(src: &str) {
    let expr = match parse(src) {
        Ok(expr) => expr,
        Err(error) => return assert_in_source(src, &error),
    };
    for error in expr.check(&Scope { params: PARAMS }) {
        assert_in_source(src, &error);
    }
    let (params, env) = (BTreeMap::new(), BTreeMap::new());
    let ctx = EvalContext {
        branch: "main",
        event: "push",
        tag: "",
        pipeline: "p",
        params: &params,
        env: &env,
    };
    let _ = expr.eval(&ctx);
    let printed = expr.to_string();
    if printed.len() <= MAX_SOURCE_LEN {
        let again = parse(&printed).map(|e| e.root.without_spans());
        assert_eq!(
            again,
            Ok(expr.root.without_spans()),
            "{src:?} printed as {printed:?}"
        );
    }
}

/// Pieces of the language, and near misses, to build inputs the parser gets deep into.
const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "!",
    "&&",
    "||",
    "==",
    "!=",
    ",",
    " ",
    "'a'",
    "\"b\"",
    "'",
    "\"",
    "\\",
    "1",
    "2.5",
    "1.",
    "branch",
    "params.A",
    "env.Y",
    "params.",
    "starts_with",
    "contains",
    "f",
    "true",
    "false",
    "é",
    "\n",
    "=",
    "&",
    "|",
    "@",
    "'\\q'",
];

fn soup(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(select(FRAGMENTS), 0..max).prop_map(|parts| parts.concat())
}

fn node(kind: Kind) -> Node {
    Node::new(kind, Span::default())
}

fn binary(op: BinOp, lhs: Node, rhs: Node) -> Node {
    node(Kind::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    })
}

fn string_operand() -> impl Strategy<Value = Node> {
    prop_oneof![
        select(
            &[
                "branch", "event", "tag", "pipeline", "params.A", "params.B", "env.X"
            ][..]
        )
        .prop_map(|name| node(Kind::Var(name.to_owned()))),
        "[ab]{0,2}".prop_map(|s| node(Kind::Str(s))),
        "[a-z'\"\\\\\n\t é]{0,6}".prop_map(|s| node(Kind::Str(s))),
    ]
}

fn number() -> impl Strategy<Value = Node> {
    "[0-9]{1,3}(\\.[0-9]{1,3})?".prop_map(|text| match Number::parse(&text) {
        Some(number) => node(Kind::Num(number)),
        None => node(Kind::Bool(false)),
    })
}

fn comparison() -> impl Strategy<Value = BinOp> {
    select(&[BinOp::Eq, BinOp::Ne][..])
}

/// Random trees that check clean against [`PARAMS`].
fn well_typed() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| node(Kind::Bool(b))),
        (comparison(), string_operand(), string_operand())
            .prop_map(|(op, lhs, rhs)| binary(op, lhs, rhs)),
        (comparison(), number(), number()).prop_map(|(op, lhs, rhs)| binary(op, lhs, rhs)),
        (
            select(&Function::ALL[..]),
            string_operand(),
            string_operand()
        )
            .prop_map(|(function, s, other)| node(Kind::Call {
                name: function.name().to_owned(),
                args: vec![s, other],
            })),
    ];
    leaf.prop_recursive(6, 64, 2, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|operand| node(Kind::Not(Box::new(operand)))),
            (
                select(&[BinOp::And, BinOp::Or, BinOp::Eq, BinOp::Ne][..]),
                inner.clone(),
                inner
            )
                .prop_map(|(op, lhs, rhs)| binary(op, lhs, rhs)),
        ]
    })
}

/// Variable values drawn from the same small alphabet as the literals, so comparisons hit.
fn values() -> impl Strategy<Value = [String; 7]> {
    proptest::array::uniform7("[ab]{0,2}")
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(src in any::<String>()) {
        exercise(&src);
    }

    #[test]
    fn arbitrary_fragment_soup_never_panics(src in soup(400)) {
        exercise(&src);
    }

    #[test]
    fn long_hostile_soup_never_panics_or_overflows(src in soup(3000)) {
        exercise(&src);
    }

    #[test]
    fn deep_prefixes_never_overflow(
        prefix in proptest::collection::vec(select(&["(", "!", "f(", "a&&", "a==", "(a||"][..]), 0..2000),
        suffix in soup(20),
    ) {
        exercise(&format!("{}a{suffix}", prefix.concat()));
    }

    #[test]
    fn well_typed_trees_print_parse_and_evaluate_the_same(tree in well_typed(), values in values()) {
        let printed = tree.to_string();
        let expr = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed:?}: {e:?}")))?;
        prop_assert_eq!(expr.root.without_spans(), tree.clone(), "{}", printed);
        prop_assert_eq!(expr.to_string(), printed.clone());
        prop_assert_eq!(expr.check(&Scope { params: PARAMS }), vec![], "{}", printed);

        let [branch, event, tag, pipeline, a, b, x] = values;
        let params = BTreeMap::from([("A".to_owned(), a), ("B".to_owned(), b)]);
        let env = BTreeMap::from([("X".to_owned(), x)]);
        let ctx = EvalContext {
            branch: &branch,
            event: &event,
            tag: &tag,
            pipeline: &pipeline,
            params: &params,
            env: &env,
        };
        prop_assert_eq!(expr.eval(&ctx), eval::eval(&tree, &ctx), "{}", printed);
    }
}

/// The deepest inputs `parse` accepts, of every kind of nesting, walked by every operation.
fn deepest_accepted() -> Vec<String> {
    let n = super::MAX_DEPTH;
    vec![
        format!("{}a == 'b'{}", "(".repeat(n - 1), ")".repeat(n - 1)),
        format!("{}true", "!".repeat(n)),
        format!("{}'a'{}", "contains(branch, ".repeat(n), ")".repeat(n)),
        format!("true{}", " || true".repeat(n)),
        format!("{}true{}", "(true && !".repeat(n / 3), ")".repeat(n / 3)),
    ]
}

#[test]
fn the_deepest_accepted_expressions_run_on_a_small_stack() {
    let inputs = deepest_accepted();
    let worker = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            for src in &inputs {
                assert!(parse(src).is_ok(), "{src}");
                exercise(src);
            }
        });
    let joined = worker.map(std::thread::JoinHandle::join);
    assert!(matches!(joined, Ok(Ok(()))), "a walk overflowed 256 KiB");
}
