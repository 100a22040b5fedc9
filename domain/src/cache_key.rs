//! Cache key templates (`cache.key` and `cache.fallback`): their syntax, checked at validation,
//! and their rendering for one job of one run, once the workspace's files are hashed.
//!
//! A template is text with `{{ … }}` parts: `{{ hash('FILE') }}` (a digest of a file of the
//! workspace), `{{ branch }}`, `{{ job }}`, `{{ pipeline }}` and `{{ matrix.AXIS }}`.

use std::collections::BTreeMap;

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Part {
    Text(String),
    Hash(String),
    Branch,
    Job,
    Pipeline,
    Matrix(String),
}

/// A template that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` without a closing `}}}}` in the cache key")]
    Unclosed,
    #[error("unknown cache key template `{{{{ {0} }}}}`")]
    Unknown(String),
}

impl TemplateError {
    /// What a template may hold, for diagnostics.
    pub fn expected(&self) -> &'static str {
        match self {
            TemplateError::Unclosed => "`{{ ... }}`",
            TemplateError::Unknown(_) => {
                "`{{ hash('FILE') }}`, `{{ branch }}`, `{{ job }}`, `{{ pipeline }}` or `{{ matrix.AXIS }}`"
            }
        }
    }
}

/// The parts of `template`, in order.
pub fn parse(template: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let Some(close) = rest[open..].find("}}") else {
            return Err(TemplateError::Unclosed);
        };
        let inner = rest[open + 2..open + close].trim();
        parts.push(part(inner).ok_or_else(|| TemplateError::Unknown(inner.to_owned()))?);
        rest = &rest[open + close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

fn part(inner: &str) -> Option<Part> {
    match inner {
        "branch" => return Some(Part::Branch),
        "job" => return Some(Part::Job),
        "pipeline" => return Some(Part::Pipeline),
        _ => {}
    }
    if let Some(axis) = inner.strip_prefix("matrix.") {
        return Some(Part::Matrix(axis.to_owned()));
    }
    let arg = inner.strip_prefix("hash(")?.strip_suffix(')')?.trim();
    let quoted = arg.len() >= 3
        && ((arg.starts_with('\'') && arg.ends_with('\''))
            || (arg.starts_with('"') && arg.ends_with('"')));
    quoted.then(|| Part::Hash(arg[1..arg.len() - 1].to_owned()))
}

/// The files that `parts` hash, each once, in order.
pub fn hashed_files(parts: &[Part]) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for part in parts {
        if let Part::Hash(file) = part
            && !files.contains(file)
        {
            files.push(file.clone());
        }
    }
    files
}

/// What a template's parts stand for in one job of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyContext {
    pub branch: String,
    pub job: String,
    pub pipeline: String,
    pub matrix: BTreeMap<String, String>,
    /// Digests of the workspace's files by path (hex); a file that is missing has none and
    /// stands for `missing`.
    pub hashes: BTreeMap<String, String>,
}

/// The key that `parts` make in `cx`.
pub fn render(parts: &[Part], cx: &KeyContext) -> String {
    let mut key = String::new();
    for part in parts {
        match part {
            Part::Text(text) => key.push_str(text),
            Part::Hash(file) => key.push_str(cx.hashes.get(file).map_or("missing", |h| h)),
            Part::Branch => key.push_str(&cx.branch),
            Part::Job => key.push_str(&cx.job),
            Part::Pipeline => key.push_str(&cx.pipeline),
            Part::Matrix(axis) => key.push_str(cx.matrix.get(axis).map_or("", |v| v)),
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_their_parts() {
        assert_eq!(
            parse("cargo-{{ hash('Cargo.lock') }}-{{branch}}").unwrap(),
            vec![
                Part::Text("cargo-".into()),
                Part::Hash("Cargo.lock".into()),
                Part::Text("-".into()),
                Part::Branch,
            ]
        );
        assert_eq!(parse("plain").unwrap(), vec![Part::Text("plain".into())]);
        assert_eq!(
            parse("{{ matrix.os }}{{ job }}{{ pipeline }}{{ hash(\"a b\") }}").unwrap(),
            vec![
                Part::Matrix("os".into()),
                Part::Job,
                Part::Pipeline,
                Part::Hash("a b".into())
            ]
        );
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert_eq!(parse("a-{{ branch"), Err(TemplateError::Unclosed));
        assert_eq!(
            parse("{{ commit }}"),
            Err(TemplateError::Unknown("commit".into()))
        );
        assert_eq!(
            parse("{{ hash(x) }}"),
            Err(TemplateError::Unknown("hash(x)".into()))
        );
        assert_eq!(
            parse("{{ hash('') }}"),
            Err(TemplateError::Unknown("hash('')".into()))
        );
    }

    #[test]
    fn render_fills_every_part_and_marks_missing_files() {
        let parts = parse(
            "{{ pipeline }}/{{ job }}-{{ matrix.os }}-{{ hash('a') }}-{{ hash('b') }}@{{ branch }}",
        )
        .unwrap();
        let cx = KeyContext {
            branch: "main".into(),
            job: "build".into(),
            pipeline: "web".into(),
            matrix: [("os".to_owned(), "alpine".to_owned())].into(),
            hashes: [("a".to_owned(), "abc".to_owned())].into(),
        };
        assert_eq!(render(&parts, &cx), "web/build-alpine-abc-missing@main");
        assert_eq!(hashed_files(&parts), vec!["a".to_owned(), "b".to_owned()]);
    }
}
