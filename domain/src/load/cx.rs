//! The decoding toolkit: typed reads of YAML nodes that report a positioned diagnostic instead
//! of failing, so that one pass finds every problem of a file.

use std::str::FromStr;

use crate::diagnostic::{Code, Diagnostic, PathRef, Span};
use crate::model::{Env, ValueError, is_env_name};
use crate::suggest::did_you_mean;
use crate::yaml::{Entry, Node, Style, Value, plain_is_null};

/// Collects the diagnostics of one decoding pass.
pub(crate) struct Cx {
    pub diagnostics: Vec<Diagnostic>,
}

/// A mapping whose keys have been checked against the keys its place allows.
pub(crate) struct Map<'n, 'p> {
    pub entries: &'n [Entry],
    pub path: PathRef<'p>,
    /// Where to point when a key is missing: the key that introduces the mapping.
    pub at: Span,
}

impl<'n> Map<'n, '_> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
            .filter(|n| !is_null(n))
    }

    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|e| e.key == key)
    }

    pub fn path<'s>(&'s self, key: &'s str) -> PathRef<'s> {
        self.path.key(key)
    }
}

/// Whether the node is a plain `null`, `~` or nothing: an optional key written without a value.
pub(crate) fn is_null(node: &Node) -> bool {
    matches!(&node.value, Value::Scalar { text, style: Style::Plain } if plain_is_null(text))
}

impl Cx {
    pub fn new() -> Cx {
        Cx {
            diagnostics: Vec::new(),
        }
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub fn type_error(&mut self, node: &Node, path: &PathRef<'_>, expected: &str) {
        self.push(
            Diagnostic::error(
                Code::Type,
                path.to_path(),
                format!("expected {expected}, found {}", node.kind()),
            )
            .expected(expected.to_owned())
            .at(node.span),
        );
    }

    /// A mapping with only the `known` keys; unknown keys are reported with a suggestion.
    pub fn map<'n, 'p>(
        &mut self,
        node: &'n Node,
        path: &PathRef<'p>,
        at: Span,
        what: &str,
        known: &[&str],
    ) -> Option<Map<'n, 'p>> {
        let Value::Map(entries) = &node.value else {
            self.type_error(node, path, &format!("a mapping ({what})"));
            return None;
        };
        for entry in entries {
            if !known.contains(&entry.key.as_str()) {
                self.push(
                    Diagnostic::error(
                        Code::UnknownKey,
                        path.key(&entry.key).to_path(),
                        format!("unknown key `{}` in {what}", entry.key),
                    )
                    .expected(format!("one of {}", known.join(", ")))
                    .suggest(did_you_mean(&entry.key, known.iter().copied()))
                    .at(entry.key_span),
                );
            }
        }
        Some(Map {
            entries,
            path: *path,
            at,
        })
    }

    /// The value of a required key, or a "missing key" error pointing at the mapping.
    pub fn required<'n>(
        &mut self,
        map: &Map<'n, '_>,
        key: &str,
        expected: &str,
    ) -> Option<&'n Node> {
        let node = map.get(key);
        if node.is_none() {
            let what = if map.has(key) {
                "has no value"
            } else {
                "is missing"
            };
            self.push(
                Diagnostic::error(
                    Code::MissingKey,
                    map.path(key).to_path(),
                    format!("required key `{key}` {what}"),
                )
                .expected(expected.to_owned())
                .at(map
                    .entries
                    .iter()
                    .find(|e| e.key == key)
                    .map_or(map.at, |e| e.key_span)),
            );
        }
        node
    }

    /// Text from any scalar: numbers and booleans are taken as written.
    pub fn text(&mut self, node: &Node, path: &PathRef<'_>) -> Option<String> {
        self.str(node, path).map(str::to_owned)
    }

    /// [`Cx::text`] borrowed from the node: for text that is parsed or compared, not kept.
    pub fn str<'n>(&mut self, node: &'n Node, path: &PathRef<'_>) -> Option<&'n str> {
        match &node.value {
            Value::Scalar { .. } if is_null(node) => {
                self.type_error(node, path, "text");
                None
            }
            Value::Scalar { text, .. } => Some(text),
            _ => {
                self.type_error(node, path, "text");
                None
            }
        }
    }

    /// Non-empty text.
    pub fn nonempty_text(
        &mut self,
        node: &Node,
        path: &PathRef<'_>,
        expected: &str,
    ) -> Option<String> {
        self.nonempty_str(node, path, expected).map(str::to_owned)
    }

    /// [`Cx::nonempty_text`] borrowed from the node.
    pub fn nonempty_str<'n>(
        &mut self,
        node: &'n Node,
        path: &PathRef<'_>,
        expected: &str,
    ) -> Option<&'n str> {
        let text = self.str(node, path)?;
        if text.trim().is_empty() {
            self.push(
                Diagnostic::error(Code::InvalidValue, path.to_path(), "the value is empty")
                    .expected(expected.to_owned())
                    .at(node.span),
            );
            return None;
        }
        Some(text)
    }

    /// A value with a syntax of its own, parsed by its newtype.
    pub fn parse<T: FromStr<Err = ValueError>>(
        &mut self,
        node: &Node,
        path: &PathRef<'_>,
    ) -> Option<T> {
        let text = self.str(node, path)?;
        match text.parse() {
            Ok(value) => Some(value),
            Err(err) => {
                self.invalid(node, path, &err);
                None
            }
        }
    }

    pub fn invalid(&mut self, node: &Node, path: &PathRef<'_>, err: &ValueError) {
        self.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                format!("invalid value `{}`", err.value),
            )
            .expected(err.expected)
            .at(node.span),
        );
    }

    pub fn bool(&mut self, node: &Node, path: &PathRef<'_>) -> Option<bool> {
        match &node.value {
            Value::Scalar {
                text,
                style: Style::Plain,
            } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => {
                    self.type_error(node, path, "true or false");
                    None
                }
            },
            _ => {
                self.type_error(node, path, "true or false");
                None
            }
        }
    }

    pub fn integer(
        &mut self,
        node: &Node,
        path: &PathRef<'_>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        let value = match &node.value {
            Value::Scalar {
                text,
                style: Style::Plain,
            } => text.parse::<i64>().ok(),
            _ => None,
        };
        match value {
            Some(v) if range.contains(&v) => Some(v),
            Some(v) => {
                self.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        path.to_path(),
                        format!("{v} is out of range"),
                    )
                    .expected(expected)
                    .at(node.span),
                );
                None
            }
            None => {
                self.type_error(node, path, &expected);
                None
            }
        }
    }

    /// A list of items, or a single item standing for a list of one. Listing reports nothing,
    /// so the items can be decoded while they are listed.
    pub fn list<'n, 'p>(
        &self,
        node: &'n Node,
        path: &'p PathRef<'p>,
    ) -> impl Iterator<Item = (&'n Node, PathRef<'p>)> + use<'n, 'p> {
        let (items, single): (&'n [Node], Option<&'n Node>) = match &node.value {
            Value::Seq(items) => (items, None),
            Value::Scalar { .. } if is_null(node) => (&[], None),
            _ => (&[], Some(node)),
        };
        let listed = items.iter().enumerate().map(|(i, n)| (n, path.index(i)));
        listed.chain(single.map(|n| (n, *path)))
    }

    /// A list of texts, or one text.
    pub fn texts(&mut self, node: &Node, path: &PathRef<'_>) -> Vec<String> {
        self.list(node, path)
            .filter_map(|(n, p)| self.nonempty_text(n, &p, "non-empty text"))
            .collect()
    }

    /// A list of values of a newtype, or one value.
    pub fn parsed_list<T: FromStr<Err = ValueError>>(
        &mut self,
        node: &Node,
        path: &PathRef<'_>,
    ) -> Vec<T> {
        self.list(node, path)
            .filter_map(|(n, p)| self.parse(n, &p))
            .collect()
    }

    /// Environment variables: a mapping of names to scalars (numbers and booleans as written).
    pub fn env(&mut self, node: &Node, path: &PathRef<'_>, at: Span) -> Env {
        let mut env = Env::new();
        let Value::Map(entries) = &node.value else {
            self.type_error(node, path, "a mapping of variable names to values");
            return env;
        };
        let _ = at;
        for entry in entries {
            let p = path.key(&entry.key);
            if !is_env_name(&entry.key) {
                self.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        p.to_path(),
                        format!("`{}` is not a valid environment variable name", entry.key),
                    )
                    .expected("a letter or `_`, then letters, digits or `_`")
                    .at(entry.key_span),
                );
            }
            let value = if is_null(&entry.value) {
                Some(String::new())
            } else {
                self.text(&entry.value, &p)
            };
            if let Some(value) = value {
                env.insert(entry.key.clone(), value);
            }
        }
        env
    }
}
