//! Evaluation: a tree and the run's variables to a boolean.
//!
//! Total by construction. Values borrow from the tree and the context, so nothing is allocated;
//! `&&` and `||` short-circuit. A tree that failed the check may still be evaluated: every
//! ill-typed part is `Invalid`, which no comparison matches and every condition reads as false.

use super::EvalContext;
use super::ast::{BinOp, Kind, Node, Number};
use super::names::{self, Function, Variable};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    Str(&'a str),
    Num(&'a Number),
    Bool(bool),
    /// The result of an ill-typed part, such as `!branch` or an unknown function.
    Invalid,
}

impl Value<'_> {
    fn holds(self) -> bool {
        self == Value::Bool(true)
    }
}

pub(super) fn eval(root: &Node, ctx: &EvalContext<'_>) -> bool {
    value(root, ctx).holds()
}

fn value<'a>(node: &'a Node, ctx: &EvalContext<'a>) -> Value<'a> {
    match &node.kind {
        Kind::Str(s) => Value::Str(s),
        Kind::Num(n) => Value::Num(n),
        Kind::Bool(b) => Value::Bool(*b),
        Kind::Var(name) => Value::Str(variable(name, ctx)),
        Kind::Not(operand) => match value(operand, ctx) {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Invalid,
        },
        Kind::Binary { op, lhs, rhs } => match op {
            BinOp::And => Value::Bool(value(lhs, ctx).holds() && value(rhs, ctx).holds()),
            BinOp::Or => Value::Bool(value(lhs, ctx).holds() || value(rhs, ctx).holds()),
            BinOp::Eq => {
                compare(value(lhs, ctx), value(rhs, ctx)).map_or(Value::Invalid, Value::Bool)
            }
            BinOp::Ne => compare(value(lhs, ctx), value(rhs, ctx))
                .map_or(Value::Invalid, |equal| Value::Bool(!equal)),
        },
        Kind::Call { name, args } => match (Function::from_name(name), args.as_slice()) {
            (Some(function), [s, other]) => match (value(s, ctx), value(other, ctx)) {
                (Value::Str(s), Value::Str(other)) => Value::Bool(function.apply(s, other)),
                _ => Value::Invalid,
            },
            _ => Value::Invalid,
        },
    }
}

/// Whether two values are equal, or `None` if they are not of one type.
fn compare(lhs: Value<'_>, rhs: Value<'_>) -> Option<bool> {
    match (lhs, rhs) {
        (Value::Str(a), Value::Str(b)) => Some(a == b),
        // Numbers are kept normalised, so equal values are equal structs.
        (Value::Num(a), Value::Num(b)) => Some(a == b),
        (Value::Bool(a), Value::Bool(b)) => Some(a == b),
        _ => None,
    }
}

/// A variable's value; unknown variables, missing parameters and unset `env` are all `""`.
fn variable<'a>(name: &str, ctx: &EvalContext<'a>) -> &'a str {
    match names::resolve(name) {
        Variable::Branch => ctx.branch,
        Variable::Event => ctx.event,
        Variable::Tag => ctx.tag,
        Variable::Pipeline => ctx.pipeline,
        Variable::Param(param) => ctx.params.get(param).map_or("", String::as_str),
        Variable::Env(var) => ctx.env.get(var).map_or("", String::as_str),
        Variable::Unknown => "",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{EvalContext, parse};

    fn maps() -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let params = BTreeMap::from([("TARGET".to_owned(), "release".to_owned())]);
        let env = BTreeMap::from([("CI".to_owned(), "true".to_owned())]);
        (params, env)
    }

    /// Evaluates `src` on branch `main`, event `push`, tag `v1.2`, pipeline `web`,
    /// `params.TARGET = release`, `env.CI = true`.
    fn holds(src: &str) -> bool {
        let (params, env) = maps();
        let ctx = EvalContext {
            branch: "main",
            event: "push",
            tag: "v1.2",
            pipeline: "web",
            params: &params,
            env: &env,
        };
        match parse(src) {
            Ok(expr) => expr.eval(&ctx),
            Err(error) => panic!("{src:?} does not parse: {error:?}"),
        }
    }

    #[test]
    fn variables_read_the_context() {
        for src in [
            "branch == 'main'",
            "event == 'push'",
            "tag == 'v1.2'",
            "pipeline == 'web'",
            "params.TARGET == 'release'",
            "env.CI == 'true'",
        ] {
            assert!(holds(src), "{src}");
        }
    }

    #[test]
    fn missing_parameters_and_unset_env_are_empty() {
        assert!(holds("params.OTHER == ''"));
        assert!(holds("env.HOME == \"\""));
    }

    #[test]
    fn boolean_operators_follow_their_truth_tables() {
        for (a, b) in [(false, false), (false, true), (true, false), (true, true)] {
            assert_eq!(holds(&format!("{a} && {b}")), a && b, "{a} && {b}");
            assert_eq!(holds(&format!("{a} || {b}")), a || b, "{a} || {b}");
            assert_eq!(holds(&format!("{a} == {b}")), a == b, "{a} == {b}");
            assert_eq!(holds(&format!("{a} != {b}")), a != b, "{a} != {b}");
        }
        assert!(holds("!false"));
        assert!(!holds("!true"));
        assert!(holds("!!true"));
    }

    #[test]
    fn precedence_decides_the_result() {
        // `&&` before `||`: true || (false && false).
        assert!(holds("true || false && false"));
        // `!` before `==`: (!false) == true.
        assert!(holds("!false == true"));
        assert!(!holds("(true || false) && false"));
    }

    #[test]
    fn strings_compare_exactly() {
        assert!(!holds("branch == 'Main'"));
        assert!(!holds("branch == 'main '"));
        assert!(holds("branch != 'master'"));
        assert!(!holds("'1' == '1.0'"));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(holds("1 == 1.0"));
        assert!(holds("0.50 == 0.5"));
        assert!(holds("007 == 7"));
        assert!(holds("2 != 20"));
        assert!(!holds("1 != 1.000"));
    }

    #[test]
    fn functions_test_their_first_argument() {
        assert!(holds("starts_with(tag, 'v1.')"));
        assert!(!holds("starts_with('v1.', tag)"));
        assert!(holds("ends_with(params.TARGET, 'ease')"));
        assert!(holds("contains(branch, 'ai')"));
        assert!(!holds("contains(branch, 'x')"));
    }

    #[test]
    fn ill_typed_parts_are_false_not_a_panic() {
        for src in [
            "branch",
            "1",
            "!branch",
            "!!branch",
            "branch && true",
            "1 == 'a'",
            "1 != 'a'",
            "true == 'true'",
            "nope(branch, 'x')",
            "starts_with(branch)",
            "starts_with(branch, 'm', 'x')",
            "starts_with(1, 'x')",
            "unknown == 'x'",
        ] {
            assert!(!holds(src), "{src}");
        }
        // Ill-typed parts are false inside conditions too, so the other side decides.
        assert!(holds("branch || true"));
        assert!(holds("unknown == ''"));
    }
}
