//! YAML text to a tree of nodes that remember where they were written, within limits that make
//! hostile input harmless: a size limit, a nesting limit, and a budget of nodes and of bytes that
//! alias expansion ("billion laughs") cannot escape. Anchors, aliases and merge keys
//! (`<<: *defaults`) work.
//!
//! ## Guarantees
//! - The tree that [`parse`] builds, every copy an alias makes and every anchor it keeps
//!   included, weighs at most [`Limits::max_tree_bytes`] (as [`Cost::bytes`] estimates it, an
//!   estimate of its heap use) and holds at most [`Limits::max_nodes`] nodes.
//! - An alias is charged the cost of its anchor's subtree *before* the subtree is copied: a
//!   document over the budget is refused without allocating what it would expand to.

use std::collections::HashMap;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Span as YamlSpan, StrInput};

use crate::diagnostic::{Code, Diagnostic, Path, Pos, Span};

mod input;
mod syntax;

/// Stands for a mapping key that is not a scalar (already reported); its value is dropped.
const COMPLEX_KEY: &str = "\u{0}complex key";

/// A problem that stops parsing. Boxed: it is rare, and keeps the happy path's results small.
type Fatal = Box<Diagnostic>;

/// Bounds on what a pipeline file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size of the file in bytes.
    pub max_bytes: usize,
    /// Depth of nested mappings and sequences.
    pub max_depth: usize,
    /// Nodes in the tree, counting every copy an alias makes.
    pub max_nodes: usize,
    /// Estimated bytes of the tree in memory, counting every copy an alias makes and the copy
    /// each anchor keeps: what parsing may allocate, whatever the text is.
    pub max_tree_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 4 << 20,
            max_depth: 64,
            max_nodes: 1_000_000,
            max_tree_bytes: 64 << 20,
        }
    }
}

/// How a scalar was written: plain scalars are typed (`true`, `12`, `null`), the others are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Plain,
    Quoted,
    Block,
}

/// A node of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { text: String, style: Style },
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// A key and its value in a mapping. Keys are scalars.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

impl Node {
    /// What kind of node this is, for messages: "a mapping", "a list", "text", "a number", ...
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar {
                text,
                style: Style::Plain,
            } => plain_kind(text),
            Value::Scalar { .. } => "text",
        }
    }

    /// The entry for `key`, when this node is a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The span to point at for a problem with the value at `path` below this node: a scalar's
    /// own text, or the key that introduces a mapping or list (its whole text would be too much).
    pub fn locate(&self, path: &Path) -> Option<Span> {
        let mut node = self;
        let mut key_span = None;
        for seg in &path.segments() {
            match (seg, &node.value) {
                (crate::diagnostic::Seg::Key(k), Value::Map(entries)) => {
                    let entry = entries.iter().find(|e| &e.key == k)?;
                    key_span = Some(entry.key_span);
                    node = &entry.value;
                }
                (crate::diagnostic::Seg::Index(i), Value::Seq(items)) => {
                    node = items.get(*i)?;
                    key_span = None;
                }
                _ => return None,
            }
        }
        match (&node.value, key_span) {
            (Value::Scalar { .. }, _) | (_, None) => Some(node.span),
            (_, Some(key)) => Some(key),
        }
    }
}

/// Whether a plain scalar is `null` under the YAML 1.2 core schema: what [`plain_kind`] calls
/// "null", without trying the text as a number.
pub fn plain_is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// The kind of a plain scalar under the YAML 1.2 core schema.
pub fn plain_kind(text: &str) -> &'static str {
    match text {
        _ if plain_is_null(text) => "null",
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => "a boolean",
        _ if text.parse::<i64>().is_ok() || text.parse::<f64>().is_ok_and(f64::is_finite) => {
            "a number"
        }
        _ => "text",
    }
}

/// Parses a whole file. `Ok(None)` is a file with no document (empty, or only comments).
/// Fatal problems (not YAML, over a limit) are one `Err`; problems that still leave a usable tree
/// (a duplicate key, an unsupported tag) are pushed to `diagnostics`.
pub fn parse(
    source: &str,
    limits: &Limits,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<Node>, Box<Diagnostic>> {
    parse_costed(source, limits, diagnostics).0
}

/// [`parse`], and what the parse spent of the budget (up to where it stopped, when it failed):
/// a caller that wants to give memory back after a large parse knows when to.
pub fn parse_costed(
    source: &str,
    limits: &Limits,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Result<Option<Node>, Box<Diagnostic>>, Cost) {
    if source.len() > limits.max_bytes {
        let refused = Box::new(
            Diagnostic::error(
                Code::Limit,
                Path::root(),
                format!(
                    "the file is larger than {} bytes, the limit for a pipeline",
                    limits.max_bytes
                ),
            )
            .expected(format!(
                "a pipeline file of at most {} bytes",
                limits.max_bytes
            ))
            .at(Span::on_line(1, 1, 1)),
        );
        return (Err(refused), Cost::default());
    }
    let mut builder = Builder::new(limits, diagnostics);
    let parsed = builder.run(source);
    (parsed, builder.spent)
}

/// Converts the source bytes to text, or says where the first byte that is not UTF-8 is.
pub fn decode_utf8(bytes: &[u8]) -> Result<&str, Box<Diagnostic>> {
    std::str::from_utf8(bytes).map_err(|err| {
        let valid = &bytes[..err.valid_up_to()];
        let valid = std::str::from_utf8(valid).unwrap_or_default();
        let line = valid.matches('\n').count() + 1;
        let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic::error(Code::Syntax, Path::root(), "the file is not UTF-8 text")
            .expected("a YAML pipeline in UTF-8")
            .at(Span::on_line(line, column, 1))
            .into()
    })
}

fn pos(marker: &Marker) -> Pos {
    Pos {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

fn span(yaml: &YamlSpan) -> Span {
    Span {
        start: pos(&yaml.start),
        end: pos(&yaml.end),
    }
}

/// A collection being built. Its children wait on the builder's shared stacks
/// ([`Builder::items`], [`Builder::entries`]) from the position it records, and move into a
/// list of their exact number when it ends: one allocation per collection, none of a growing
/// list's reallocations, no spare room to give back.
enum Frame {
    Seq {
        anchor: usize,
        start: Pos,
        /// Where its items start in [`Builder::items`].
        from: usize,
    },
    Map {
        anchor: usize,
        start: Pos,
        /// Where its entries start in [`Builder::entries`].
        from: usize,
        pending_key: Option<(String, Span)>,
        merges: Vec<Node>,
        /// Positions of the keys by name, once the mapping is large enough for a linear search
        /// to cost: a `jobs` mapping of 10,000 entries must not take quadratic time.
        index: Option<HashMap<String, usize>>,
    },
}

/// Mappings with more entries than this find duplicate keys through a hash index.
const INDEX_FROM: usize = 16;

/// What a part of the tree costs: its nodes, and an estimate of the bytes they take in memory
/// (the nodes themselves, their text and their mapping entries; a parent's list of children is
/// counted in its children).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    pub nodes: usize,
    pub bytes: usize,
}

impl Cost {
    /// A node whose text (a scalar's, or a key it will become) is `text` bytes long, charged as
    /// a mapping entry: the most a node takes before its children.
    fn node(text: usize) -> Cost {
        Cost {
            nodes: 1,
            bytes: std::mem::size_of::<Entry>() + text,
        }
    }

    /// What `node` and everything below it cost: each node the size of a mapping entry, plus
    /// its text and its key.
    pub fn of(node: &Node) -> Cost {
        let mut total = Cost::default();
        let mut todo = vec![(node, 0)];
        while let Some((n, key)) = todo.pop() {
            let text = match &n.value {
                Value::Scalar { text, .. } => text.len(),
                Value::Seq(items) => {
                    todo.extend(items.iter().map(|item| (item, 0)));
                    0
                }
                Value::Map(entries) => {
                    todo.extend(entries.iter().map(|e| (&e.value, e.key.len())));
                    0
                }
            };
            total = total.plus(Cost::node(text + key));
        }
        total
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            nodes: self.nodes.saturating_add(other.nodes),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// An anchored node, kept for its aliases, with what one copy of it costs.
struct Anchored {
    node: Node,
    cost: Cost,
}

struct Builder<'a> {
    limits: &'a Limits,
    diagnostics: &'a mut Vec<Diagnostic>,
    stack: Vec<Frame>,
    /// The items of the open sequences, innermost last.
    items: Vec<Node>,
    /// The entries of the open mappings, innermost last.
    entries: Vec<Entry>,
    anchors: HashMap<usize, Anchored>,
    /// Everything built so far, every copy included.
    spent: Cost,
    documents: usize,
    root: Option<Node>,
}

impl<'a> Builder<'a> {
    fn new(limits: &'a Limits, diagnostics: &'a mut Vec<Diagnostic>) -> Self {
        Builder {
            limits,
            diagnostics,
            stack: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
            anchors: HashMap::new(),
            spent: Cost::default(),
            documents: 0,
            root: None,
        }
    }

    fn run(&mut self, source: &str) -> Result<Option<Node>, Box<Diagnostic>> {
        let mut parser = Parser::new(input::ScalarSized(StrInput::new(source)));
        while let Some(next) = parser.next_event() {
            let (event, at) = next.map_err(|err| -> Fatal {
                let p = pos(err.marker());
                let at = Span::on_line(p.line, p.column, 1);
                if err.info() == "recursion limit exceeded" {
                    return Diagnostic::error(
                        Code::Limit,
                        Path::root(),
                        "the document nests too deeply",
                    )
                    .expected(format!(
                        "at most {} levels of nested mappings and lists",
                        self.limits.max_depth
                    ))
                    .at(at)
                    .into();
                }
                Box::new(syntax::explain(err.info(), p, source))
            })?;
            self.event(event, span(&at))?;
        }
        Ok(self.root.take())
    }

    /// Charges `added` to the budget, or refuses the document when it goes over.
    fn charge(&mut self, added: Cost, at: Span) -> Result<(), Fatal> {
        self.spent = self.spent.plus(added);
        let limits = self.limits;
        let over = if self.spent.nodes > limits.max_nodes {
            format!("more than {} nodes", limits.max_nodes)
        } else if self.spent.bytes > limits.max_tree_bytes {
            format!(
                "more than {} MiB in memory",
                limits.max_tree_bytes.div_ceil(1 << 20)
            )
        } else {
            return Ok(());
        };
        Err(Box::new(
            Diagnostic::error(
                Code::Limit,
                Path::root(),
                format!("the document expands to {over} (aliases included)"),
            )
            .expected("a pipeline without runaway alias expansion")
            .at(at),
        ))
    }

    fn open(&mut self, frame: Frame, at: Span) -> Result<(), Fatal> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(Box::new(
                Diagnostic::error(
                    Code::Limit,
                    Path::root(),
                    format!(
                        "the document nests deeper than {} levels",
                        self.limits.max_depth
                    ),
                )
                .expected(format!(
                    "at most {} levels of nested mappings and lists",
                    self.limits.max_depth
                ))
                .at(at),
            ));
        }
        self.charge(Cost::node(0), at)?;
        self.stack.push(frame);
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, at: Span) -> Result<(), Fatal> {
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => Ok(()),
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Box::new(
                        Diagnostic::error(
                            Code::Syntax,
                            Path::root(),
                            "the file holds more than one YAML document",
                        )
                        .expected("one pipeline per file (remove the second `---`)")
                        .at(at),
                    ));
                }
                Ok(())
            }
            Event::Alias(id) => {
                let cost = self.anchors.get(&id).map(|a| a.cost).ok_or_else(|| {
                    Box::new(
                        Diagnostic::error(
                            Code::Syntax,
                            Path::root(),
                            "alias to an anchor that is not defined before it",
                        )
                        .at(at),
                    )
                })?;
                // Charged before the copy is made: a refused copy is never allocated.
                self.charge(cost, at)?;
                let value = self.anchors[&id].node.value.clone();
                self.finish(Node { value, span: at })
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.charge(Cost::node(text.len()), at)?;
                let mut style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
                };
                if let Some(tag) = tag {
                    style = self.tagged(&tag, style, at);
                }
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        style,
                    },
                    span: at,
                };
                self.anchor(anchor, &node, at)?;
                self.finish(node)
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_collection_tag(&tag, "seq", at);
                }
                self.open(
                    Frame::Seq {
                        anchor,
                        start: at.start,
                        from: self.items.len(),
                    },
                    at,
                )
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag {
                    self.check_collection_tag(&tag, "map", at);
                }
                self.open(
                    Frame::Map {
                        anchor,
                        start: at.start,
                        from: self.entries.len(),
                        pending_key: None,
                        merges: Vec::new(),
                        index: None,
                    },
                    at,
                )
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    anchor,
                    start,
                    from,
                }) => {
                    // Exactly as long as its items: the budget charged each child as one node,
                    // not a list's spare room.
                    let items: Vec<Node> = self.items.drain(from..).collect();
                    let node = Node {
                        value: Value::Seq(items),
                        span: Span { start, end: at.end },
                    };
                    self.anchor(anchor, &node, at)?;
                    self.finish(node)
                }
                _ => Err(Box::new(
                    Diagnostic::error(Code::Syntax, Path::root(), "unbalanced list").at(at),
                )),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map {
                    anchor,
                    start,
                    from,
                    merges,
                    ..
                }) => {
                    let mut entries: Vec<Entry> = self.entries.drain(from..).collect();
                    if !merges.is_empty() {
                        merge(&mut entries, merges);
                        entries.shrink_to_fit();
                    }
                    let node = Node {
                        value: Value::Map(entries),
                        span: Span { start, end: at.end },
                    };
                    self.anchor(anchor, &node, at)?;
                    self.finish(node)
                }
                _ => Err(Box::new(
                    Diagnostic::error(Code::Syntax, Path::root(), "unbalanced mapping").at(at),
                )),
            },
        }
    }

    fn tagged(&mut self, tag: &saphyr_parser::Tag, style: Style, at: Span) -> Style {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        match (core, tag.suffix.as_str()) {
            (true, "str") => Style::Quoted,
            (true, "int" | "float" | "bool" | "null") => Style::Plain,
            _ => {
                self.diagnostics.push(
                    Diagnostic::error(
                        Code::Type,
                        Path::root(),
                        format!("unsupported YAML tag `{}{}`", tag.handle, tag.suffix),
                    )
                    .expected("no tag, or one of !!str, !!int, !!float, !!bool, !!null")
                    .at(at),
                );
                style
            }
        }
    }

    fn check_collection_tag(&mut self, tag: &saphyr_parser::Tag, kind: &str, at: Span) {
        let core = tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!";
        if !(core && tag.suffix == kind) {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::Type,
                    Path::root(),
                    format!("unsupported YAML tag `{}{}`", tag.handle, tag.suffix),
                )
                .expected("no tag on mappings and lists")
                .at(at),
            );
        }
    }

    /// Keeps a copy of an anchored node for its aliases; the copy is charged like any other.
    fn anchor(&mut self, anchor: usize, node: &Node, at: Span) -> Result<(), Fatal> {
        if anchor != 0 {
            let cost = Cost::of(node);
            self.charge(cost, at)?;
            self.anchors.insert(
                anchor,
                Anchored {
                    node: node.clone(),
                    cost,
                },
            );
        }
        Ok(())
    }

    /// Puts a finished node in its parent, or makes it the root.
    fn finish(&mut self, node: Node) -> Result<(), Fatal> {
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { .. }) => {
                self.items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                from,
                pending_key,
                merges,
                index,
                ..
            }) => match pending_key.take() {
                None => match node.value {
                    Value::Scalar { text, .. } => {
                        *pending_key = Some((text, node.span));
                        Ok(())
                    }
                    _ => {
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::Type,
                                Path::root(),
                                format!("a mapping key is {}", node.kind()),
                            )
                            .expected("text as a mapping key")
                            .at(Span {
                                start: node.span.start,
                                end: node.span.start,
                            }),
                        );
                        // The value that follows is read and dropped.
                        *pending_key = Some((COMPLEX_KEY.to_owned(), node.span));
                        Ok(())
                    }
                },
                Some((key, key_span)) => {
                    if key == COMPLEX_KEY {
                        return Ok(());
                    }
                    if key == "<<" && matches!(node.value, Value::Map(_) | Value::Seq(_)) {
                        merges.push(node);
                        return Ok(());
                    }
                    let entries = &mut self.entries;
                    let from = *from;
                    if index.is_none() && entries.len() - from >= INDEX_FROM {
                        *index = Some(
                            entries[from..]
                                .iter()
                                .enumerate()
                                .map(|(i, e)| (e.key.clone(), i))
                                .collect(),
                        );
                    }
                    let earlier = match index {
                        Some(index) => index.get(&key).map(|&i| &entries[from + i]),
                        None => entries[from..].iter().find(|e| e.key == key),
                    };
                    if let Some(first) = earlier {
                        let first = first.key_span.start;
                        self.diagnostics.push(
                            Diagnostic::error(
                                Code::DuplicateKey,
                                Path::root(),
                                format!("key `{key}` is given twice in this mapping"),
                            )
                            .expected("each key at most once")
                            .help(format!(
                                "first given at line {}, column {}",
                                first.line, first.column
                            ))
                            .at(key_span),
                        );
                        return Ok(());
                    }
                    if let Some(index) = index {
                        index.insert(key.clone(), entries.len() - from);
                    }
                    entries.push(Entry {
                        key,
                        key_span,
                        value: node,
                    });
                    Ok(())
                }
            },
        }
    }
}

/// Adds the entries of merged mappings (`<<: *base` or `<<: [*a, *b]`) that the mapping does not
/// set itself; among merged mappings the first one wins. Linear in the entries: a merge of a
/// large mapping costs no more than writing it out.
fn merge(entries: &mut Vec<Entry>, merges: Vec<Node>) {
    if merges.is_empty() {
        return;
    }
    let mut present: std::collections::HashSet<String> =
        entries.iter().map(|e| e.key.clone()).collect();
    for source in merges {
        let maps = match source.value {
            Value::Map(map) => vec![map],
            Value::Seq(items) => items
                .into_iter()
                .filter_map(|item| match item.value {
                    Value::Map(map) => Some(map),
                    _ => None,
                })
                .collect(),
            Value::Scalar { .. } => Vec::new(),
        };
        for map in maps {
            for entry in map {
                if present.insert(entry.key.clone()) {
                    entries.push(entry);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(source: &str) -> (Result<Option<Node>, Box<Diagnostic>>, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let result = parse(source, &Limits::default(), &mut diags);
        (result, diags)
    }

    #[test]
    fn nodes_remember_lines_and_columns() {
        let (root, _) = load("name: web\njobs:\n  build: {steps: [x]}\n");
        let root = root.unwrap().unwrap();
        let jobs = &root.get("jobs").unwrap();
        assert_eq!(jobs.key_span.start, Pos { line: 2, column: 1 });
        let build = jobs.value.get("build").unwrap();
        assert_eq!(build.key_span.start, Pos { line: 3, column: 3 });
        let path = Path::root().key("jobs").key("build").key("steps").index(0);
        assert_eq!(
            root.locate(&path).unwrap().start,
            Pos {
                line: 3,
                column: 19
            }
        );
    }

    #[test]
    fn plain_is_null_agrees_with_plain_kind() {
        for text in [
            "", "~", "null", "Null", "NULL", "nULL", "none", "0", "1.5", "true", "x", " ",
        ] {
            assert_eq!(plain_is_null(text), plain_kind(text) == "null", "{text:?}");
        }
    }

    #[test]
    fn empty_and_comment_only_files_have_no_document() {
        assert_eq!(load("").0.unwrap(), None);
        assert_eq!(load("# nothing\n\n").0.unwrap(), None);
    }

    #[test]
    fn alias_bombs_hit_the_node_budget() {
        let mut source = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            source.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let limits = Limits {
            max_tree_bytes: usize::MAX,
            ..Limits::default()
        };
        let err = parse(&source, &limits, &mut Vec::new()).unwrap_err();
        assert_eq!(err.code, Code::Limit);
        assert!(err.message.contains("nodes"), "{}", err.message);
    }

    #[test]
    fn aliases_are_charged_their_bytes_before_they_are_copied() {
        // 10,000 copies of a 1,000-byte text: few nodes, 10 MB of text.
        let mut source = format!("a0: &a0 \"{}\"\n", "x".repeat(1000));
        for i in 1..5 {
            let prev = format!("*a{}", i - 1);
            source.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let limits = Limits {
            max_tree_bytes: 4 << 20,
            ..Limits::default()
        };
        let (parsed, spent) = parse_costed(&source, &limits, &mut Vec::new());
        let err = parsed.unwrap_err();
        assert_eq!(err.code, Code::Limit);
        assert!(err.message.contains("4 MiB in memory"), "{}", err.message);
        assert!(spent.nodes < 20_000, "{spent:?}");
        // The alias that went over was charged, not copied: what was built stays in budget
        // but for that one charge.
        assert!(spent.bytes > limits.max_tree_bytes, "{spent:?}");
        assert!(spent.bytes < limits.max_tree_bytes + 1_100_000, "{spent:?}");
    }

    #[test]
    fn a_subtree_costs_its_nodes_keys_and_text() {
        let (root, _) = load("a: [xy, {b: cde}]\n");
        let cost = Cost::of(&root.unwrap().unwrap());
        let entry = std::mem::size_of::<Entry>();
        // The root, `a` with its list, `xy`, the mapping, `b` with `cde`.
        assert_eq!(cost.nodes, 5);
        assert_eq!(
            cost.bytes,
            5 * entry + "a".len() + "xy".len() + "b".len() + "cde".len()
        );
    }

    #[test]
    fn deep_nesting_is_a_limit_not_a_stack_overflow() {
        for source in [
            "[".repeat(10_000),
            "a:\n".to_owned() + &"- ".repeat(10_000),
            "{a: ".repeat(10_000),
        ] {
            let err = load(&source).0.unwrap_err();
            assert!(matches!(err.code, Code::Limit | Code::Syntax), "{err:?}");
        }
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let err = load(&"#".repeat((4 << 20) + 1)).0.unwrap_err();
        assert_eq!(err.code, Code::Limit);
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_places() {
        let (root, diags) = load("a: 1\nb: 2\na: 3\n");
        assert!(root.is_ok());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::DuplicateKey);
        assert_eq!(diags[0].span.unwrap().start, Pos { line: 3, column: 1 });
        assert!(diags[0].help.as_deref().unwrap().contains("line 1"));
    }

    #[test]
    fn merge_keys_fill_in_what_the_mapping_does_not_set() {
        let (root, diags) = load("base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n");
        assert!(diags.is_empty(), "{diags:?}");
        let root = root.unwrap().unwrap();
        let used = &root.get("use").unwrap().value;
        let text = |k: &str| match &used.get(k).unwrap().value.value {
            Value::Scalar { text, .. } => text.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text("x"), "1");
        assert_eq!(text("y"), "3");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = load("a: [1, 2\nb: 3\n").0.unwrap_err();
        assert_eq!(err.code, Code::Syntax);
        assert!(err.span.is_some());
    }

    #[test]
    fn second_documents_are_refused() {
        let err = load("a: 1\n---\nb: 2\n").0.unwrap_err();
        assert!(err.message.contains("more than one"), "{}", err.message);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let err = decode_utf8(b"name: x\nj\xffobs: 1\n").unwrap_err();
        assert_eq!(err.span.unwrap().start, Pos { line: 2, column: 2 });
    }
}
