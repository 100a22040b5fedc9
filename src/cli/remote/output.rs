//! What the admin commands print: tables for people, or the API's own JSON shapes as JSON or
//! YAML for scripts (`--output`). Colour only on a terminal, and never with `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences, for people.
    #[default]
    Table,
    /// The API's JSON shapes, one document (see docs/cli.md).
    Json,
    /// The same shapes as YAML.
    Yaml,
}

/// Prints in the chosen format.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    /// Whether standard output gets colour.
    pub color: bool,
    /// Whether standard output is a terminal (live redraws).
    pub out_terminal: bool,
    /// Whether standard error is a terminal (progress indicators).
    pub err_terminal: bool,
}

/// Whether colour is wanted on a stream that is (or is not) a terminal.
fn wants_color(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        let out_terminal = std::io::stdout().is_terminal();
        Printer {
            format,
            color: wants_color(out_terminal),
            out_terminal,
            err_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Whether the output is for people.
    pub fn human(&self) -> bool {
        self.format == Format::Table
    }

    /// Prints `value` as JSON or YAML, or calls `human` for a table.
    pub fn show<T: Serialize>(&self, value: &T, human: impl FnOnce(&Printer)) {
        match self.format {
            Format::Table => human(self),
            Format::Json => {
                let text = serde_json::to_string_pretty(value).unwrap_or_default();
                println!("{text}");
            }
            Format::Yaml => {
                let value = serde_json::to_value(value).unwrap_or(Value::Null);
                print!("{}", yaml(&value));
            }
        }
    }

    /// `text` in the colour of a state, when colour is on.
    pub fn state(&self, state: &str) -> String {
        let code = match state {
            "succeeded" | "ready" | "ok" => "32",
            "failed" | "timed_out" | "offline" | "not-ready" => "31",
            "cancelled" | "cancelling" | "waiting_approval" | "draining" => "33",
            "running" | "placed" => "36",
            _ => "2",
        };
        self.paint(code, state)
    }

    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
}

/// A table: a header and rows of cells, columns as wide as their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it; cells may carry colour codes, which take no width.
    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(visible_width(cell));
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let line = |cells: Vec<&str>| {
            let last = cells.len().saturating_sub(1);
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                text.push_str(cell);
                if i < last {
                    let pad = widths[i].saturating_sub(visible_width(cell)) + 2;
                    text.push_str(&" ".repeat(pad));
                }
            }
            text
        };
        let _ = writeln!(out, "{}", line(self.header.clone()));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
        }
    }
}

/// Characters that show, not counting colour codes.
pub fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long ago `at` was: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(at: hodei_api::views::Time) -> String {
    format!("{} ago", duration(now_ms().saturating_sub(at.millis())))
}

pub use hodei_api::views::short_duration as duration;

/// `value` as a YAML document: mappings in their JSON order, strings quoted when plain style
/// would change their meaning, multi-line strings as literal blocks.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    out
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&string(key, indent));
        out.push(':');
        nested(out, value, indent);
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key on the dash's line, the others under it.
                let mut first = String::new();
                mapping(&mut first, map, indent + 2);
                out.push(' ');
                out.push_str(first.trim_start());
            }
            _ => nested(out, item, indent),
        }
    }
}

/// A value after `key:` or `-`: inline, or on the next lines, indented.
fn nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, indent + 2);
        }
        Value::String(text)
            if text.contains('\n')
                && text
                    .chars()
                    .all(|c| c == '\n' || c == '\t' || !c.is_control())
                && !text.contains('\u{feff}') =>
        {
            let body = text.trim_end_matches('\n');
            let keep = match text.len() - body.len() {
                0 => "-",
                1 if !body.is_empty() => "",
                _ => "+",
            };
            let leading = text.trim_start_matches('\n').starts_with([' ', '\t']);
            let indicator = if leading { "2" } else { "" };
            out.push_str(&format!(" |{indicator}{keep}\n"));
            for line in text.strip_suffix('\n').unwrap_or(text).split('\n') {
                if !line.is_empty() {
                    out.push_str(&" ".repeat(indent + 2));
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, indent));
            out.push('\n');
        }
    }
}

fn inline(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string plain when YAML reads it back as the same string, else double-quoted (JSON's
/// escapes are YAML's).
fn string(text: &str, _indent: usize) -> String {
    let reserved = matches!(
        text.to_ascii_lowercase().as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".nan"
            | ".inf"
            | "-.inf"
            | "+.inf"
    );
    let numeric = text.parse::<f64>().is_ok()
        || text.starts_with("0x")
        || text.starts_with("0o")
        || text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '_' || c == ':' || c == '.');
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '(' | '$'));
    let safe = text.chars().all(|c| {
        c.is_alphanumeric()
            || matches!(
                c,
                ' ' | '-' | '_' | '.' | '/' | '(' | ')' | '=' | '+' | '$' | '@' | ','
            )
    }) && !text.ends_with(' ')
        && !text.contains(" #");
    if !reserved && !numeric && first_ok && safe {
        text.to_owned()
    } else {
        serde_json::to_string(text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_quotes_what_plain_style_would_change_and_keeps_the_shape() {
        let value = json!({
            "id": 7,
            "state": "succeeded",
            "branch": "",
            "flag": "true",
            "version": "1.0",
            "colon": "a: b",
            "jobs": [{"name": "test (os=bookworm)", "steps": []}, {"name": "b", "reason": null}],
            "source": "name: web\njobs: {}\n",
            "empty": {},
        });
        let text = yaml(&value);
        assert_eq!(
            text,
            "id: 7\nstate: succeeded\nbranch: \"\"\nflag: \"true\"\nversion: \"1.0\"\ncolon: \"a: b\"\n\
             jobs:\n  - name: test (os=bookworm)\n    steps: []\n  - name: b\n    reason: null\n\
             source: |\n  name: web\n  jobs: {}\nempty: {}\n"
        );
    }

    /// A YAML document read back as JSON: plain scalars typed by the core schema.
    fn read_back(text: &str) -> Value {
        use hodei_domain::yaml::{Limits, Style, Value as Y, parse, plain_kind};
        fn back(node: &hodei_domain::yaml::Node) -> Value {
            match &node.value {
                Y::Scalar {
                    text,
                    style: Style::Plain,
                } => match plain_kind(text) {
                    "null" => Value::Null,
                    "a boolean" => Value::Bool(text.eq_ignore_ascii_case("true")),
                    "a number" => serde_json::from_str(text).unwrap(),
                    _ => Value::String(text.clone()),
                },
                Y::Scalar { text, .. } => Value::String(text.clone()),
                Y::Seq(items) => Value::Array(items.iter().map(back).collect()),
                Y::Map(entries) => Value::Object(
                    entries
                        .iter()
                        .map(|e| (e.key.clone(), back(&e.value)))
                        .collect(),
                ),
            }
        }
        let mut diagnostics = Vec::new();
        let node = parse(text, &Limits::default(), &mut diagnostics)
            .unwrap_or_else(|d| panic!("not YAML: {d:?}\n{text}"))
            .expect("a document");
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        back(&node)
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            "[ -~]{0,12}",
            "[a-z0-9 ._:#'\"-]{0,12}",
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just("1.5".to_owned()),
            Just("a\nb\n".to_owned()),
            Just(" lead\ntrail".to_owned()),
            Just("x\n\n".to_owned()),
            Just("- item".to_owned()),
            "\\PC{0,6}",
            "[\\x00-\\x1f\\x7f\\u{85}\\u{2028}a\\n]{0,4}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z_ ]{1,6}", inner), 0..4)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn yaml_output_reads_back_as_the_json_it_came_from(
            value in proptest::collection::vec(("[a-z]{1,5}", json_value()), 1..4)
        ) {
            // A document is a mapping or a list, as every command prints.
            let value = Value::Object(value.into_iter().collect());
            proptest::prop_assert_eq!(read_back(&yaml(&value)), value);
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(310_000), "5m10s");
        assert_eq!(duration(3 * 3_600_000 + 5 * 60_000), "3h05m");
        assert_eq!(visible_width("\x1b[32mok\x1b[0m"), 2);
    }
}
