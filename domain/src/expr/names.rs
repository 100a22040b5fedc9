//! The vocabulary of the language: its built-in variables and functions. The checker and the
//! evaluator both resolve names here, so they cannot disagree about what a name means.

/// The plain variables, in the order the docs list them.
pub(super) const PLAIN_VARIABLES: [&str; 4] = ["branch", "event", "tag", "pipeline"];

/// What the variables are, for an `expected` line.
pub(super) const VARIABLES_EXPECTED: &str =
    "`branch`, `event`, `tag`, `pipeline`, `params.NAME` or `env.NAME`";

/// What a variable name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variable<'n> {
    Branch,
    Event,
    Tag,
    Pipeline,
    /// `params.NAME`, with the `NAME`.
    Param(&'n str),
    /// `env.NAME`, with the `NAME`.
    Env(&'n str),
    Unknown,
}

/// Resolves a dotted name as the lexer produced it. The lexer guarantees each segment is a
/// well-formed name, so this only decides which variable, if any, it is.
pub(super) fn resolve(name: &str) -> Variable<'_> {
    match name {
        "branch" => return Variable::Branch,
        "event" => return Variable::Event,
        "tag" => return Variable::Tag,
        "pipeline" => return Variable::Pipeline,
        _ => {}
    }
    match name.split_once('.') {
        Some(("params", rest)) if !rest.contains('.') => Variable::Param(rest),
        Some(("env", rest)) if !rest.contains('.') => Variable::Env(rest),
        _ => Variable::Unknown,
    }
}

/// The built-in functions: each takes two strings and returns a boolean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Function {
    StartsWith,
    EndsWith,
    Contains,
}

impl Function {
    pub const ALL: [Function; 3] = [Function::StartsWith, Function::EndsWith, Function::Contains];

    /// Every function takes this many arguments.
    pub const ARITY: usize = 2;

    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::StartsWith => "starts_with",
            Function::EndsWith => "ends_with",
            Function::Contains => "contains",
        }
    }

    /// The signature as the docs write it, e.g. `starts_with(s, prefix)`.
    pub fn signature(self) -> &'static str {
        match self {
            Function::StartsWith => "starts_with(s, prefix)",
            Function::EndsWith => "ends_with(s, suffix)",
            Function::Contains => "contains(s, needle)",
        }
    }

    pub fn apply(self, s: &str, other: &str) -> bool {
        match self {
            Function::StartsWith => s.starts_with(other),
            Function::EndsWith => s.ends_with(other),
            Function::Contains => s.contains(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_kind_of_variable() {
        assert_eq!(resolve("branch"), Variable::Branch);
        assert_eq!(resolve("event"), Variable::Event);
        assert_eq!(resolve("tag"), Variable::Tag);
        assert_eq!(resolve("pipeline"), Variable::Pipeline);
        assert_eq!(resolve("params.TARGET"), Variable::Param("TARGET"));
        assert_eq!(resolve("env.HOME"), Variable::Env("HOME"));
    }

    #[test]
    fn near_misses_and_extra_segments_are_unknown() {
        for name in [
            "Branch",
            "params",
            "env",
            "params.A.B",
            "env.A.B",
            "branch.x",
            "x.y",
        ] {
            assert_eq!(resolve(name), Variable::Unknown, "{name}");
        }
    }

    #[test]
    fn functions_apply_to_their_first_argument() {
        assert!(Function::StartsWith.apply("release/1.2", "release/"));
        assert!(!Function::StartsWith.apply("release", "release/"));
        assert!(Function::EndsWith.apply("v1.2-rc", "-rc"));
        assert!(Function::Contains.apply("feature/login", "login"));
        assert!(Function::Contains.apply("anything", ""));
        assert_eq!(Function::from_name("contains"), Some(Function::Contains));
        assert_eq!(Function::from_name("startswith"), None);
    }
}
