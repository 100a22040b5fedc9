//! Loading a pipeline file: bytes to a valid [`Pipeline`], or every problem of the file at once,
//! each with its line, column and path.
//!
//! The steps: UTF-8 check, [`crate::yaml`] (syntax and limits), decoding (types, unknown keys,
//! values with a syntax), then [`crate::validate`] (references, cycles, matrix limits), whose
//! problems are located in the source through the YAML tree.

mod cx;
mod job;
mod pipeline;

use std::collections::HashSet;

use crate::diagnostic::{Code, Diagnostic, Path};
use crate::model::Pipeline;
use crate::yaml::{self, Limits, Node};

/// The outcome of loading a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The pipeline, when the file has no error (warnings allowed).
    pub pipeline: Option<Pipeline>,
    /// Every problem found, in the order of the file.
    pub diagnostics: Vec<Diagnostic>,
    /// What the YAML tree cost while loading (see [`yaml::Cost`]), up to where parsing stopped.
    pub tree: yaml::Cost,
}

impl Loaded {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads a pipeline from the bytes of a file, within the default [`Limits`].
pub fn load_bytes(bytes: &[u8]) -> Loaded {
    match yaml::decode_utf8(bytes) {
        Ok(text) => load(text),
        Err(diagnostic) => Loaded {
            pipeline: None,
            diagnostics: vec![*diagnostic],
            tree: yaml::Cost::default(),
        },
    }
}

/// Loads a pipeline from YAML text, within the default [`Limits`].
pub fn load(source: &str) -> Loaded {
    load_with(source, &Limits::default())
}

/// Loads a pipeline from YAML text within `limits`.
pub fn load_with(source: &str, limits: &Limits) -> Loaded {
    let mut diagnostics = Vec::new();
    let (root, tree) = yaml::parse_costed(source, limits, &mut diagnostics);
    let root = match root {
        Ok(Some(root)) => root,
        Ok(None) => {
            diagnostics.push(
                Diagnostic::error(Code::MissingKey, Path::root(), "the file holds no pipeline")
                    .expected("a mapping with at least `name` and `jobs`")
                    .at(crate::diagnostic::Span::on_line(1, 1, 1)),
            );
            return Loaded {
                pipeline: None,
                diagnostics,
                tree,
            };
        }
        Err(fatal) => {
            diagnostics.push(*fatal);
            return Loaded {
                pipeline: None,
                diagnostics,
                tree,
            };
        }
    };
    let mut cx = cx::Cx::new();
    let pipeline = pipeline::pipeline(&mut cx, &root);
    diagnostics.append(&mut cx.diagnostics);
    if let Some(pipeline) = &pipeline {
        // Decoding already reported what is wrong at these places; validation of the best-effort
        // model would only repeat it in other words.
        let reported: HashSet<&Path> = diagnostics.iter().map(|d| &d.path).collect();
        // Below a value whose structure could not be read, the model holds nothing to check.
        let unreadable: Vec<&Path> = diagnostics
            .iter()
            .filter(|d| matches!(d.code, Code::Type | Code::MissingKey) && !d.path.is_root())
            .map(|d| &d.path)
            .collect();
        let mut found = Vec::new();
        for mut diagnostic in crate::validate::validate(pipeline) {
            if reported.contains(&diagnostic.path)
                || unreadable.iter().any(|p| diagnostic.path.starts_with(p))
            {
                continue;
            }
            locate(&root, &mut diagnostic);
            found.push(diagnostic);
        }
        diagnostics.append(&mut found);
    }
    diagnostics.sort_by_key(|d| {
        d.span
            .map(|s| (s.start.line, s.start.column))
            .unwrap_or((usize::MAX, 0))
    });
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    Loaded {
        pipeline: if has_errors { None } else { pipeline },
        diagnostics,
        tree,
    }
}

/// Points a diagnostic found on the model at the text it is about.
fn locate(root: &Node, diagnostic: &mut Diagnostic) {
    let mut path = diagnostic.path.clone();
    // A problem about a value that is not written (a missing default, say) points at its parent.
    loop {
        if let Some(span) = root.locate(&path) {
            diagnostic.span = Some(span);
            break;
        }
        let segs = path.segments();
        if segs.is_empty() {
            break;
        }
        let mut parent = Path::root();
        for seg in &segs[..segs.len() - 1] {
            parent = match seg {
                crate::diagnostic::Seg::Key(k) => parent.key(k.clone()),
                crate::diagnostic::Seg::Index(i) => parent.index(*i),
            };
        }
        path = parent;
    }
    if let (Some((offset, len)), Some(node)) = (diagnostic.within, node_at(root, &diagnostic.path))
        && let yaml::Value::Scalar { text, .. } = &node.value
    {
        diagnostic.span = Some(job::expression_span(node, text, offset, len));
    }
}

fn node_at<'n>(root: &'n Node, path: &Path) -> Option<&'n Node> {
    let mut node = root;
    for seg in &path.segments() {
        node = match (seg, &node.value) {
            (crate::diagnostic::Seg::Key(k), yaml::Value::Map(entries)) => {
                &entries.iter().find(|e| &e.key == k)?.value
            }
            (crate::diagnostic::Seg::Index(i), yaml::Value::Seq(items)) => items.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}
