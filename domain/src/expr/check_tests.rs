//! The static check through the public API: every kind of problem, where it points, and its hints.

use super::names::VARIABLES_EXPECTED;
use super::{ExprError, ExprErrorKind, Scope, parse};

const PARAMS: &[&str] = &["TARGET", "DRY_RUN"];

fn check_with(src: &str, params: &[&str]) -> Vec<ExprError> {
    match parse(src) {
        Ok(expr) => expr.check(&Scope { params }),
        Err(error) => panic!("{src:?} does not parse: {error:?}"),
    }
}

/// The one error `src` has, checked against [`PARAMS`], after asserting its kind and range.
fn only_error(src: &str, kind: ExprErrorKind, offset: usize, len: usize) -> ExprError {
    let mut errors = check_with(src, PARAMS);
    assert_eq!(errors.len(), 1, "{src:?}: {errors:?}");
    let error = errors.remove(0);
    assert_eq!(
        (error.kind, error.offset, error.len),
        (kind, offset, len),
        "{src:?}: {error:?}"
    );
    error
}

#[test]
fn well_formed_conditions_check_clean() {
    for src in [
        "branch == 'main'",
        "event != 'pull_request' && tag == ''",
        "pipeline == 'web' || params.TARGET == 'release'",
        "!(params.DRY_RUN == 'true')",
        "env.ANY_VARIABLE_AT_ALL == 'x'",
        "starts_with(branch, 'release/') || ends_with(tag, '-rc') || contains(event, 'push')",
        "1 == 1.0",
        "true",
        "(branch == 'a') == (tag == 'b')",
    ] {
        assert_eq!(check_with(src, PARAMS), [], "{src}");
    }
}

#[test]
fn an_unknown_variable_suggests_the_nearest_name() {
    for (src, len, suggestion) in [
        ("brnch == 'main'", 5, Some("branch")),
        ("Branch == 'main'", 6, Some("branch")),
        ("evnt == 'push'", 4, Some("event")),
        ("param.TARGET == 'x'", 12, Some("params.TARGET")),
        ("param.OTHER == 'x'", 11, Some("params.OTHER")),
        ("ENV.HOME == 'x'", 8, Some("env.HOME")),
        ("params.TARGET.x == 'x'", 15, Some("params.TARGET")),
        ("zzz == 'x'", 3, None),
        ("TARGET == 'x'", 6, Some("params.TARGET")),
        ("dry_run == 'x'", 7, Some("params.DRY_RUN")),
        ("CI == 'true'", 2, Some("env.CI")),
    ] {
        let e = only_error(src, ExprErrorKind::UnknownVariable, 0, len);
        assert_eq!(e.message, format!("unknown variable `{}`", &src[..len]));
        assert_eq!(e.expected.as_deref(), Some(VARIABLES_EXPECTED));
        let help = suggestion.map(|s| format!("did you mean `{s}`?"));
        assert_eq!(e.help, help, "{src}");
    }
}

#[test]
fn params_and_env_alone_need_a_name() {
    for (src, help) in [
        ("params == 'x'", "name the variable: `params.NAME`"),
        ("env == 'x'", "name the variable: `env.NAME`"),
    ] {
        let len = src.find(' ').unwrap_or(0);
        let e = only_error(src, ExprErrorKind::UnknownVariable, 0, len);
        assert_eq!(e.help.as_deref(), Some(help));
    }
}

#[test]
fn an_unknown_parameter_points_at_its_name_and_suggests_a_declared_one() {
    let e = only_error("params.TARGT == 'x'", ExprErrorKind::UnknownParameter, 7, 5);
    assert_eq!(e.message, "unknown parameter `TARGT`");
    assert_eq!(e.help.as_deref(), Some("did you mean `params.TARGET`?"));
    assert_eq!(
        e.expected.as_deref(),
        Some("a declared parameter: `TARGET` or `DRY_RUN`")
    );
    let e = only_error(
        "params.target == 'x'",
        ExprErrorKind::UnknownParameter,
        7,
        6,
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `params.TARGET`?"));
}

#[test]
fn an_unknown_parameter_without_declared_parameters_says_so() {
    let errors = check_with("params.TARGET == 'x'", &[]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, ExprErrorKind::UnknownParameter);
    assert_eq!(errors[0].expected, None);
    assert_eq!(
        errors[0].help.as_deref(),
        Some("this pipeline declares no parameters")
    );
}

#[test]
fn a_long_parameter_list_is_cut_short() {
    let params = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"];
    let errors = check_with("params.ZZZ == 'x'", &params);
    assert_eq!(
        errors[0].expected.as_deref(),
        Some("a declared parameter: `A`, `B`, `C`, `D`, `E`, `F`, `G`, `H` or 2 more")
    );
}

#[test]
fn an_unknown_function_suggests_the_nearest_and_still_checks_its_arguments() {
    let e = only_error(
        "startswith(branch, 'x')",
        ExprErrorKind::UnknownFunction,
        0,
        10,
    );
    assert_eq!(e.message, "unknown function `startswith`");
    assert_eq!(e.help.as_deref(), Some("did you mean `starts_with`?"));
    assert_eq!(
        e.expected.as_deref(),
        Some("one of `starts_with`, `ends_with` or `contains`")
    );
    let kinds: Vec<_> = check_with("nope(brnch)", PARAMS)
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            ExprErrorKind::UnknownFunction,
            ExprErrorKind::UnknownVariable
        ]
    );
}

#[test]
fn a_wrong_number_of_arguments_shows_the_signature() {
    let e = only_error("starts_with(branch)", ExprErrorKind::WrongArity, 0, 19);
    assert_eq!(e.message, "`starts_with` takes 2 arguments, found 1");
    assert_eq!(e.expected.as_deref(), Some("`starts_with(s, prefix)`"));
    let e = only_error("contains()", ExprErrorKind::WrongArity, 0, 10);
    assert_eq!(e.message, "`contains` takes 2 arguments, found 0");
    let errors = check_with("ends_with(a, b, c)", &[]);
    assert_eq!(errors[0].message, "`ends_with` takes 2 arguments, found 3");
    assert_eq!(
        errors[0].expected.as_deref(),
        Some("`ends_with(s, suffix)`")
    );
}

#[test]
fn function_arguments_must_be_strings() {
    let e = only_error("contains(branch, 1)", ExprErrorKind::TypeMismatch, 17, 1);
    assert_eq!(
        e.message,
        "the second argument of `contains` must be a string, found a number"
    );
    assert_eq!(
        e.help.as_deref(),
        Some("variables are strings; quote the number: `'1'`")
    );
    let e = only_error(
        "contains(tag == 'a', 'x')",
        ExprErrorKind::TypeMismatch,
        9,
        10,
    );
    assert_eq!(
        e.message,
        "the first argument of `contains` must be a string, found a boolean"
    );
    assert_eq!(e.help, None);
}

#[test]
fn logical_operators_need_boolean_operands() {
    let e = only_error("branch && true", ExprErrorKind::TypeMismatch, 0, 6);
    assert_eq!(e.message, "`&&` needs a boolean operand, found a string");
    assert_eq!(e.help.as_deref(), Some("did you mean `branch == '...'`?"));
    let e = only_error("true || 2", ExprErrorKind::TypeMismatch, 8, 1);
    assert_eq!(e.message, "`||` needs a boolean operand, found a number");
    assert_eq!(e.help.as_deref(), Some("compare it with `==` or `!=`"));
}

#[test]
fn negating_a_string_explains_precedence_once() {
    let e = only_error("!branch == 'main'", ExprErrorKind::TypeMismatch, 1, 6);
    assert_eq!(e.message, "`!` needs a boolean operand, found a string");
    assert!(e.help.is_some_and(|h| h.contains("`!(a == b)`")));
}

#[test]
fn comparisons_need_operands_of_one_type() {
    let e = only_error("params.TARGET == 1", ExprErrorKind::TypeMismatch, 0, 18);
    assert_eq!(e.message, "cannot compare a string with a number");
    assert_eq!(e.expected.as_deref(), Some("two operands of the same type"));
    assert_eq!(
        e.help.as_deref(),
        Some("variables are strings; quote the number: `'1'`")
    );
    let e = only_error("true != params.DRY_RUN", ExprErrorKind::TypeMismatch, 0, 22);
    assert_eq!(e.message, "cannot compare a boolean with a string");
    assert_eq!(
        e.help.as_deref(),
        Some("variables are strings; quote the boolean: `'true'`")
    );
    let e = only_error("true == 1", ExprErrorKind::TypeMismatch, 0, 9);
    assert_eq!(e.help, None);
}

#[test]
fn the_whole_expression_must_be_a_boolean() {
    let e = only_error("branch", ExprErrorKind::NotBoolean, 0, 6);
    assert_eq!(e.message, "expected a boolean expression, found a string");
    assert_eq!(e.help.as_deref(), Some("did you mean `branch == '...'`?"));
    let e = only_error(" (params.TARGET) ", ExprErrorKind::NotBoolean, 2, 13);
    assert_eq!(
        e.help.as_deref(),
        Some("did you mean `params.TARGET == '...'`?")
    );
    let e = only_error("'main'", ExprErrorKind::NotBoolean, 0, 6);
    assert_eq!(
        e.help.as_deref(),
        Some("a string is not a condition; compare a variable with it, e.g. `branch == 'main'`")
    );
    let e = only_error("2.5", ExprErrorKind::NotBoolean, 0, 3);
    assert_eq!(e.message, "expected a boolean expression, found a number");
}

#[test]
fn every_problem_is_reported_in_source_order() {
    let errors = check_with("brnch == 'a' || params.X == 1 && nope() || tag", PARAMS);
    let found: Vec<_> = errors.iter().map(|e| (e.kind, e.offset)).collect();
    assert_eq!(
        found,
        [
            (ExprErrorKind::UnknownVariable, 0),
            (ExprErrorKind::TypeMismatch, 16),
            (ExprErrorKind::UnknownParameter, 23),
            (ExprErrorKind::UnknownFunction, 33),
            (ExprErrorKind::TypeMismatch, 43),
        ]
    );
}

#[test]
fn an_already_reported_problem_causes_no_follow_on_errors() {
    only_error("nope(branch)", ExprErrorKind::UnknownFunction, 0, 4);
    only_error("nope() == 'x'", ExprErrorKind::UnknownFunction, 0, 4);
    only_error("!1", ExprErrorKind::TypeMismatch, 1, 1);
}
