//! The static check: every name resolves and every operator gets the types it needs.
//!
//! Every variable is a string and every function returns a boolean, so a type is known for every
//! node without running anything. A node whose problem is already reported gets the type
//! `Unknown`, which fits anywhere, so one mistake yields one error rather than a cascade.

use super::ast::{BinOp, Kind, Node, Span};
use super::names::{self, Function, PLAIN_VARIABLES, VARIABLES_EXPECTED, Variable};
use super::{ExprError, ExprErrorKind, Scope, join_or, snippet};
use crate::suggest::did_you_mean;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Str,
    Num,
    Bool,
    /// Already reported; accepted anywhere.
    Unknown,
}

impl Type {
    fn described(self) -> &'static str {
        match self {
            Type::Str => "a string",
            Type::Num => "a number",
            Type::Bool => "a boolean",
            Type::Unknown => "a value of unknown type",
        }
    }

    /// Known, and not a boolean.
    fn is_non_boolean(self) -> bool {
        matches!(self, Type::Str | Type::Num)
    }
}

/// The operator an operand belongs to, for an error message.
#[derive(Debug, Clone, Copy)]
enum Logical {
    Not,
    Binary(BinOp),
}

/// The most declared parameters an `expected` line lists.
const LISTED_PARAMS: usize = 8;

/// What may stand where a condition is needed.
const EXPECTED_CONDITION: &str = "a condition: a comparison, a function call, `true` or `false`";

/// Every static problem of the tree, in source order.
pub(super) fn check(root: &Node, scope: &Scope<'_>) -> Vec<ExprError> {
    let mut checker = Checker {
        scope,
        errors: Vec::new(),
    };
    let ty = checker.infer(root);
    if ty.is_non_boolean() {
        checker.errors.push(
            ExprError::new(
                ExprErrorKind::NotBoolean,
                root.span,
                format!("expected a boolean expression, found {}", ty.described()),
            )
            .expected(EXPECTED_CONDITION)
            .help(condition_help(root)),
        );
    }
    checker.errors.sort_by_key(|error| error.offset);
    checker.errors
}

struct Checker<'a, 's> {
    scope: &'a Scope<'s>,
    errors: Vec<ExprError>,
}

impl Checker<'_, '_> {
    fn infer(&mut self, node: &Node) -> Type {
        match &node.kind {
            Kind::Str(_) => Type::Str,
            Kind::Num(_) => Type::Num,
            Kind::Bool(_) => Type::Bool,
            Kind::Var(name) => {
                self.variable(name, node.span);
                Type::Str
            }
            Kind::Not(operand) => {
                let ty = self.infer(operand);
                if ty.is_non_boolean() {
                    self.not_boolean_operand(Logical::Not, operand, ty);
                    return Type::Unknown;
                }
                Type::Bool
            }
            Kind::Binary {
                op: op @ (BinOp::And | BinOp::Or),
                lhs,
                rhs,
            } => {
                for operand in [lhs, rhs] {
                    let ty = self.infer(operand);
                    if ty.is_non_boolean() {
                        self.not_boolean_operand(Logical::Binary(*op), operand, ty);
                    }
                }
                Type::Bool
            }
            Kind::Binary { op: _, lhs, rhs } => {
                let (left, right) = (self.infer(lhs), self.infer(rhs));
                if left != right && left != Type::Unknown && right != Type::Unknown {
                    self.errors
                        .push(compare_mismatch(node, (lhs, left), (rhs, right)));
                }
                Type::Bool
            }
            Kind::Call { name, args } => self.call(name, args, node.span),
        }
    }

    /// Reports an operand of `!`, `&&` or `||` that is not a boolean. Kept out of `infer` so the
    /// recursive walk's stack frames stay small.
    fn not_boolean_operand(&mut self, op: Logical, operand: &Node, ty: Type) {
        let (symbol, help) = match op {
            Logical::Not if ty == Type::Str => (
                "!",
                "`!` binds tighter than `==`: to negate a comparison write `!(a == b)` or `a != b`"
                    .to_owned(),
            ),
            Logical::Not => ("!", condition_help(operand)),
            Logical::Binary(op) => (op.symbol(), condition_help(operand)),
        };
        self.errors.push(
            ExprError::new(
                ExprErrorKind::TypeMismatch,
                operand.span,
                format!(
                    "`{symbol}` needs a boolean operand, found {}",
                    ty.described()
                ),
            )
            .expected(EXPECTED_CONDITION)
            .help(help),
        );
    }

    fn call(&mut self, name: &str, args: &[Node], span: Span) -> Type {
        let types: Vec<Type> = args.iter().map(|arg| self.infer(arg)).collect();
        self.call_errors(name, args, &types, span)
    }

    /// Reports an unknown function, a wrong arity and arguments that are not strings; returns
    /// the call's type.
    fn call_errors(&mut self, name: &str, args: &[Node], types: &[Type], span: Span) -> Type {
        let name_span = Span::new(span.start, span.start + name.len());
        let Some(function) = Function::from_name(name) else {
            let known = Function::ALL.map(Function::name);
            let listed = known.map(|name| format!("`{name}`"));
            let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
            self.errors.push(
                ExprError::new(
                    ExprErrorKind::UnknownFunction,
                    name_span,
                    format!("unknown function `{name}`"),
                )
                .expected(format!("one of {}", join_or(&listed)))
                .with_help(did_you_mean(name, known).map(|s| format!("did you mean `{s}`?"))),
            );
            return Type::Unknown;
        };
        if args.len() != Function::ARITY {
            self.errors.push(
                ExprError::new(
                    ExprErrorKind::WrongArity,
                    span,
                    format!(
                        "`{name}` takes {} arguments, found {}",
                        Function::ARITY,
                        args.len()
                    ),
                )
                .expected(format!("`{}`", function.signature())),
            );
        }
        for (position, (arg, &ty)) in args.iter().zip(types).enumerate() {
            if matches!(ty, Type::Num | Type::Bool) {
                let ordinal = ["first", "second"].get(position).unwrap_or(&"extra");
                self.errors.push(
                    ExprError::new(
                        ExprErrorKind::TypeMismatch,
                        arg.span,
                        format!(
                            "the {ordinal} argument of `{name}` must be a string, found {}",
                            ty.described()
                        ),
                    )
                    .expected(format!("`{}`", function.signature()))
                    .with_help(quote_help(arg)),
                );
            }
        }
        Type::Bool
    }

    fn variable(&mut self, name: &str, span: Span) {
        match names::resolve(name) {
            Variable::Param(param) if !self.scope.params.contains(&param) => {
                let param_span = Span::new(span.end.saturating_sub(param.len()), span.end);
                self.errors.push(self.unknown_param(param, param_span));
            }
            Variable::Unknown => self.errors.push(self.unknown_variable(name, span)),
            _ => {}
        }
    }

    fn unknown_param(&self, param: &str, span: Span) -> ExprError {
        let declared = self.scope.params;
        let error = ExprError::new(
            ExprErrorKind::UnknownParameter,
            span,
            format!("unknown parameter `{param}`"),
        );
        if declared.is_empty() {
            return error.help("this pipeline declares no parameters");
        }
        let mut listed: Vec<String> = declared
            .iter()
            .take(LISTED_PARAMS)
            .map(|p| format!("`{p}`"))
            .collect();
        if declared.len() > LISTED_PARAMS {
            listed.push(format!("{} more", declared.len() - LISTED_PARAMS));
        }
        let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
        error
            .expected(format!("a declared parameter: {}", join_or(&listed)))
            .with_help(
                did_you_mean(param, declared.iter().copied())
                    .map(|p| format!("did you mean `params.{p}`?")),
            )
    }

    fn unknown_variable(&self, name: &str, span: Span) -> ExprError {
        let error = ExprError::new(
            ExprErrorKind::UnknownVariable,
            span,
            format!("unknown variable `{name}`"),
        )
        .expected(VARIABLES_EXPECTED);
        if name == "params" || name == "env" {
            return error.help(format!("name the variable: `{name}.NAME`"));
        }
        // A bare parameter name, or an environment-style one, most likely lacks its prefix.
        if !name.contains('.') {
            if let Some(param) = self
                .scope
                .params
                .iter()
                .find(|p| p.eq_ignore_ascii_case(name))
            {
                return error.help(format!("did you mean `params.{param}`?"));
            }
            if name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                return error.help(format!("did you mean `env.{name}`?"));
            }
        }
        // The known names, plus `params.X` and `env.X` for a dotted name's last part, so
        // `param.TARGET` and `ENV.HOME` find their fix.
        let mut candidates: Vec<String> = PLAIN_VARIABLES.map(str::to_owned).to_vec();
        candidates.extend(self.scope.params.iter().map(|p| format!("params.{p}")));
        if let Some((_, last)) = name.rsplit_once('.') {
            candidates.extend([format!("params.{last}"), format!("env.{last}")]);
        }
        error.with_help(
            did_you_mean(name, candidates.iter().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?")),
        )
    }
}

/// How to turn `node`, which is not a boolean, into a condition.
fn condition_help(node: &Node) -> String {
    match &node.kind {
        Kind::Var(name) => format!("did you mean `{name} == '...'`?"),
        Kind::Str(_) => format!(
            "a string is not a condition; compare a variable with it, e.g. `branch == {}`",
            snippet(&node.to_string())
        ),
        _ => "compare it with `==` or `!=`".to_owned(),
    }
}

/// For a number or boolean literal where a string is needed: how to quote it.
fn quote_help(node: &Node) -> Option<String> {
    let kind = match node.kind {
        Kind::Num(_) => "number",
        Kind::Bool(_) => "boolean",
        _ => return None,
    };
    Some(format!(
        "variables are strings; quote the {kind}: `'{node}'`"
    ))
}

fn compare_mismatch(node: &Node, lhs: (&Node, Type), rhs: (&Node, Type)) -> ExprError {
    let help = if lhs.1 == Type::Str {
        quote_help(rhs.0)
    } else if rhs.1 == Type::Str {
        quote_help(lhs.0)
    } else {
        None
    };
    ExprError::new(
        ExprErrorKind::TypeMismatch,
        node.span,
        format!(
            "cannot compare {} with {}",
            lhs.1.described(),
            rhs.1.described()
        ),
    )
    .expected("two operands of the same type")
    .with_help(help)
}
