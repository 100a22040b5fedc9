//! Problems found in a pipeline, each with where it is (a path such as `jobs.deploy.needs[1]`
//! and, for YAML, a line and column), what is wrong and what was expected; and their rendering
//! in the style of rustc, with the source line and a caret.

use std::fmt::{self, Write as _};

use serde::Serialize;

/// A place in the source text. Lines and columns count from 1; columns count characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A range of the source text, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

impl Span {
    /// A span of `len` characters on one line.
    pub fn on_line(line: usize, column: usize, len: usize) -> Span {
        Span {
            start: Pos { line, column },
            end: Pos {
                line,
                column: column + len,
            },
        }
    }
}

/// One step of a [`Path`]: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the pipeline document: `jobs.deploy.needs[1]`. The root is empty.
///
/// A persistent list: extending a path allocates one node and shares its parent, so the loader
/// can name every place it reads without copying the whole path each time.
#[derive(Clone, Default)]
pub struct Path(Option<std::sync::Arc<PathNode>>);

struct PathNode {
    parent: Path,
    seg: Seg,
}

impl Path {
    /// The root of the document.
    pub fn root() -> Path {
        Path(None)
    }

    fn push(&self, seg: Seg) -> Path {
        Path(Some(std::sync::Arc::new(PathNode {
            parent: self.clone(),
            seg,
        })))
    }

    /// This path followed by a key.
    pub fn key(&self, key: impl Into<String>) -> Path {
        self.push(Seg::Key(key.into()))
    }

    /// This path followed by an index.
    pub fn index(&self, index: usize) -> Path {
        self.push(Seg::Index(index))
    }

    /// This path followed by all of `other`.
    pub fn join(&self, other: &Path) -> Path {
        other
            .segments()
            .into_iter()
            .fold(self.clone(), |path, seg| path.push(seg))
    }

    /// Whether `prefix` is this path or one of its ancestors.
    pub fn starts_with(&self, prefix: &Path) -> bool {
        self.segments().starts_with(&prefix.segments())
    }

    /// The steps of the path.
    pub fn segments(&self) -> Vec<Seg> {
        let mut segs = Vec::new();
        let mut at = self;
        while let Some(node) = &at.0 {
            segs.push(node.seg.clone());
            at = &node.parent;
        }
        segs.reverse();
        segs
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }
}

/// A [`Path`] not built yet: a chain of borrowed segments on the caller's stack.
///
/// The loader and validation name the place of every value they read, and only a diagnostic
/// needs that place as a [`Path`]: naming it this way allocates nothing until
/// [`PathRef::to_path`] is called, which only code that reports a problem does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PathRef<'a> {
    Root,
    Key(&'a PathRef<'a>, &'a str),
    Index(&'a PathRef<'a>, usize),
}

impl<'a> PathRef<'a> {
    /// This place followed by a key.
    pub fn key(&'a self, key: &'a str) -> PathRef<'a> {
        PathRef::Key(self, key)
    }

    /// This place followed by an index.
    pub fn index(&'a self, index: usize) -> PathRef<'a> {
        PathRef::Index(self, index)
    }

    /// The place as a [`Path`], the same as built with [`Path::key`] and [`Path::index`].
    pub fn to_path(self) -> Path {
        match self {
            PathRef::Root => Path::root(),
            PathRef::Key(parent, key) => parent.to_path().key(key),
            PathRef::Index(parent, index) => parent.to_path().index(index),
        }
    }
}

impl PartialEq for Path {
    fn eq(&self, other: &Path) -> bool {
        self.segments() == other.segments()
    }
}

impl Eq for Path {}

impl std::hash::Hash for Path {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.segments().hash(state);
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Path").field(&self.segments()).finish()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments().iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_char('.')?;
                    }
                    let plain = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if plain {
                        f.write_str(key)?
                    } else {
                        write!(f, "{key:?}")?
                    }
                }
            }
        }
        Ok(())
    }
}

impl Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How bad a problem is. Errors make a pipeline invalid; warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A stable identifier for each kind of problem, for editors and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file is not YAML.
    Syntax,
    /// The file breaks a limit: size, nesting, alias expansion, matrix size, number of jobs.
    Limit,
    /// A mapping key Hodei does not know.
    UnknownKey,
    /// A key given twice in one mapping.
    DuplicateKey,
    /// A key that must be present is missing.
    MissingKey,
    /// A value of the wrong kind (a list where text was expected, ...).
    Type,
    /// A value of the right kind with the wrong content (`10x` as a duration, ...).
    InvalidValue,
    /// A reference to a job, parameter or variable that does not exist.
    UnknownReference,
    /// Jobs that need each other in a cycle.
    Cycle,
    /// A `when` expression that does not parse or check.
    Expression,
    /// Something legal but probably not meant.
    Suspicious,
}

impl Code {
    /// The kebab-case spelling used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::Limit => "limit",
            Code::UnknownKey => "unknown-key",
            Code::DuplicateKey => "duplicate-key",
            Code::MissingKey => "missing-key",
            Code::Type => "type",
            Code::InvalidValue => "invalid-value",
            Code::UnknownReference => "unknown-reference",
            Code::Cycle => "cycle",
            Code::Expression => "expression",
            Code::Suspicious => "suspicious",
        }
    }
}

/// One problem in a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    /// What is wrong, e.g. `unknown job "biuld"`.
    pub message: String,
    /// Where in the document; empty for the whole file.
    pub path: Path,
    /// Where in the source text, when the pipeline came from text.
    pub span: Option<Span>,
    /// What was expected instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// A hint such as `did you mean "build"?`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Bytes of the value's text the problem is about (within a `when` expression, say), so that
    /// the loader can point inside the value.
    #[serde(skip)]
    pub(crate) within: Option<(usize, usize)>,
}

impl Diagnostic {
    /// An error of kind `code` at `path`.
    pub fn error(code: Code, path: Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            path,
            span: None,
            expected: None,
            help: None,
            within: None,
        }
    }

    /// A warning of kind `code` at `path`.
    pub fn warning(code: Code, path: Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, path, message)
        }
    }

    /// With what was expected.
    pub fn expected(mut self, expected: impl Into<String>) -> Diagnostic {
        self.expected = Some(expected.into());
        self
    }

    /// With a hint.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// With a "did you mean" hint when there is a suggestion.
    pub fn suggest(self, suggestion: Option<&str>) -> Diagnostic {
        match suggestion {
            Some(s) => self.help(format!("did you mean \"{s}\"?")),
            None => self,
        }
    }

    /// At a place in the source.
    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }

    /// Whether this problem makes the pipeline invalid.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The one-line form: `file:line:col: path: message (expected ...)`.
    pub fn one_line(&self, file: &str) -> String {
        let mut out = String::from(file);
        if let Some(span) = self.span {
            let _ = write!(out, ":{}:{}", span.start.line, span.start.column);
        }
        out.push_str(": ");
        if !self.path.is_root() {
            let _ = write!(out, "{}: ", self.path);
        }
        out.push_str(&self.message);
        if let Some(help) = &self.help {
            let _ = write!(out, " ({help})");
        }
        out
    }

    /// The rustc-style form: a headline, the location, the source line with a caret under the
    /// offending text, and what was expected. `color` adds ANSI colours.
    pub fn render(&self, file: &str, source: &str, color: bool) -> String {
        let paint = |code: &str, text: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        let (label, label_color) = match self.severity {
            Severity::Error => ("error", "1;31"),
            Severity::Warning => ("warning", "1;33"),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}{} {}",
            paint(label_color, &format!("{label}[{}]", self.code.as_str())),
            paint("1", ":"),
            paint("1", &self.message)
        );
        let line_text = self
            .span
            .and_then(|s| source.lines().nth(s.start.line.saturating_sub(1)));
        let gutter = self.span.map_or(1, |s| s.start.line.to_string().len());
        let pad = " ".repeat(gutter);
        let location = match self.span {
            Some(span) => format!("{file}:{}:{}", span.start.line, span.start.column),
            None => file.to_owned(),
        };
        let _ = writeln!(out, "{pad}{} {location}", paint("1;34", "-->"));
        if let (Some(span), Some(text)) = (self.span, line_text) {
            let bar = paint("1;34", "|");
            // Long lines are shown as a window around the column, marked with `…`.
            let column = span.start.column.max(1);
            let skip = column.saturating_sub(60).min(text.chars().count());
            let mut shown: String = if skip > 0 {
                "…".to_owned()
            } else {
                String::new()
            };
            shown.extend(
                text.chars()
                    .skip(skip)
                    .take(160)
                    .map(|c| if c.is_control() { ' ' } else { c }),
            );
            let start = column - skip + usize::from(skip > 0);
            let width = if span.end.line == span.start.line && span.end.column > column {
                span.end.column - column
            } else {
                shown.chars().count().saturating_sub(start - 1).max(1)
            };
            let width = width.min(160usize.saturating_sub(start - 1).max(1));
            let _ = writeln!(out, "{pad} {bar}");
            let _ = writeln!(
                out,
                "{} {bar} {shown}",
                paint("1;34", &span.start.line.to_string())
            );
            let carets = "^".repeat(width);
            let note = self
                .expected
                .as_ref()
                .map(|e| format!(" expected {e}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{pad} {bar} {}{}",
                " ".repeat(start - 1),
                paint(label_color, &format!("{carets}{note}"))
            );
        } else if let Some(expected) = &self.expected {
            let _ = writeln!(out, "{pad} {} expected {expected}", paint("1;34", "="));
        }
        if !self.path.is_root() {
            let _ = writeln!(out, "{pad} {} at: {}", paint("1;34", "="), self.path);
        }
        if let Some(help) = &self.help {
            let _ = writeln!(out, "{pad} {} help: {help}", paint("1;34", "="));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line("<pipeline>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_the_document() {
        let path = Path::root().key("jobs").key("deploy").key("needs").index(1);
        assert_eq!(path.to_string(), "jobs.deploy.needs[1]");
        assert_eq!(
            Path::root().key("env").key("a.b").to_string(),
            "env.\"a.b\""
        );
    }

    #[test]
    fn a_path_ref_becomes_the_same_path() {
        let root = PathRef::Root;
        let jobs = root.key("jobs");
        let deploy = jobs.key("deploy");
        let needs = deploy.key("needs");
        let built = needs.index(1).to_path();
        let path = Path::root().key("jobs").key("deploy").key("needs").index(1);
        assert_eq!(built, path);
        assert_eq!(built.to_string(), "jobs.deploy.needs[1]");
        assert!(root.to_path().is_root());
    }

    #[test]
    fn render_puts_a_caret_under_the_span() {
        let source = "jobs:\n  deploy:\n    needs: [biuld]\n";
        let diag = Diagnostic::error(
            Code::UnknownReference,
            Path::root().key("jobs").key("deploy").key("needs").index(0),
            "unknown job \"biuld\"",
        )
        .expected("the name of a job of this pipeline")
        .suggest(Some("build"))
        .at(Span::on_line(3, 13, 5));
        let text = diag.render("p.yml", source, false);
        assert!(
            text.starts_with("error[unknown-reference]: unknown job \"biuld\"\n"),
            "{text}"
        );
        assert!(text.contains(" --> p.yml:3:13\n"), "{text}");
        assert!(text.contains("3 |     needs: [biuld]\n"), "{text}");
        assert!(
            text.contains("  |             ^^^^^ expected the name of a job"),
            "{text}"
        );
        assert!(text.contains("= help: did you mean \"build\"?"), "{text}");
        assert_eq!(
            diag.one_line("p.yml"),
            "p.yml:3:13: jobs.deploy.needs[0]: unknown job \"biuld\" (did you mean \"build\"?)"
        );
    }
}
