//! YAML syntax errors in the words of the other diagnostics: the parser's message becomes what
//! is wrong, what was expected there and, for the usual mistakes (a tab, a line indented off
//! its siblings, a `: ` in an unquoted value, a list or a string left open), a hint that says
//! how to fix it. Pure: the parser's message, where it stopped, and the source text.

use crate::diagnostic::{Code, Diagnostic, Path, Pos, Span};

/// The diagnostic for the parser's error `info` at `at` (1-based line and column) in `source`.
pub(super) fn explain(info: &str, at: Pos, source: &str) -> Diagnostic {
    let line = source.lines().nth(at.line.saturating_sub(1)).unwrap_or("");
    let here = Span::on_line(at.line, at.column, 1);
    let error = |message: &str| Diagnostic::error(Code::Syntax, Path::root(), message);
    let quoted = info.contains("quoted scalar");
    let tabbed = info.starts_with("tabs disallowed") || info.ends_with("found a tab");
    // A list or mapping in brackets left open on an earlier line: whatever the parser tripped
    // on next, that is the mistake.
    if !quoted && !tabbed {
        for (open, close, what) in [('[', ']', "list"), ('{', '}', "mapping")] {
            if let Some(opened) = open_bracket(source, at, open, close)
                && opened.line < at.line
            {
                return unclosed(
                    opened,
                    (open, close),
                    what,
                    line.is_empty().then_some(opened),
                )
                .at(if line.is_empty() {
                    Span::on_line(opened.line, opened.column, 1)
                } else {
                    here
                });
            }
        }
    }
    match info {
        _ if tabbed => tab(line, at, here),
        _ if info.contains("must be followed by a valid YAML whitespace") => {
            match line.find(":\t") {
                Some(_) => tab(line, at, here),
                _ => error("a `:` after a key without a space")
                    .expected("`key: value`, with a space after `:`")
                    .help("add a space after `:`, or quote the text if the `:` is part of it")
                    .at(here),
            }
        }
        "mapping values are not allowed in this context" => colon(line, at, source, here),
        "while parsing a block mapping, did not find expected key"
        | "while parsing a block collection, did not find expected '-' indicator"
        | "invalid indentation" => indentation(line, at, source),
        "block sequence entries are not allowed in this context" => error(
            "a list item (`- `) where a value was already given",
        )
        .expected("the items of a list on the lines after a key that has no value on its line")
        .help("write the key alone (`steps:`) and each item on a line of its own below it, indented as one (`  - run: ...`)")
        .at(here),
        "while parsing a flow sequence, expected ',' or ']'" => {
            let opened = open_bracket(source, at, '[', ']').unwrap_or(at);
            unclosed(opened, ('[', ']'), "list", None).at(here)
        }
        "while parsing a flow mapping, did not find expected ',' or '}'" => {
            let opened = open_bracket(source, at, '{', '}').unwrap_or(at);
            unclosed(opened, ('{', '}'), "mapping", None).at(here)
        }
        "misplaced bracket" => error("a bracket that closes nothing")
            .expected("a `]` or `}` only after its `[` or `{`")
            .help("remove it, or quote the value if the bracket is part of a text (`\"a]b\"`)")
            .at(here),
        _ if quoted && (info.contains("end of stream") || info.contains("indentation")) => {
            let (quote, opened) = open_quote(source, at);
            error("a quoted text is not closed")
                .expected(format!("a closing {quote} on this line"))
                .help(format!(
                    "close the text with {quote} (a {quote} inside it is written {}); a quoted text that goes on to the next lines must indent them more than its key",
                    if quote == '"' { "`\\\"`" } else { "`''`" }
                ))
                .at(Span::on_line(opened.line, opened.column, 1))
        }
        "illegal placement of ':' indicator" => error("a `:` where no key can start")
            .expected("`key: value` in a mapping")
            .help("quote the value if the `:` is part of a text")
            .at(here),
        "while parsing a node, did not find expected node content" => {
            error("a value is missing here")
                .expected("a value: a text, a number, a list or a mapping")
                .help("remove the stray `,` or indicator, or quote the value if it is a text")
                .at(here)
        }
        "simple key expect ':'" | "simple key expected" => error("a key without its `:`")
            .expected("`key: value`")
            .help("add `: ` after the key, or quote the whole text if it is a value")
            .at(here),
        _ if info.starts_with("unexpected character") => {
            let found = line.chars().nth(at.column.saturating_sub(1)).unwrap_or(' ');
            error(&format!("`{found}` cannot start a value"))
                .expected("a text, a number, `[`, `{`, `-`, `\"` or `'`")
                .help(format!(
                    "quote the value: `\"{}\"` (`@` and `` ` `` are reserved in YAML)",
                    line.trim().split_once(": ").map_or(line.trim(), |(_, v)| v)
                ))
                .at(here)
        }
        _ => error(&format!("invalid YAML: {info}"))
            .expected("YAML as in docs/pipeline.md")
            .at(here),
    }
}

/// A tab where YAML wants spaces: the caret goes on the tab.
fn tab(line: &str, at: Pos, here: Span) -> Diagnostic {
    let indent = line.chars().take_while(|c| c.is_whitespace()).count();
    let leading = line.chars().take(indent).position(|c| c == '\t');
    let (message, expected, at_tab) = match leading {
        Some(column) => (
            "a tab indents this line",
            "spaces: YAML indents with spaces only",
            column + 1,
        ),
        None => (
            "a tab where YAML wants a space",
            "a space: YAML separates and indents with spaces only",
            line.chars()
                .enumerate()
                .filter(|(_, c)| *c == '\t')
                .map(|(i, _)| i + 1)
                .min_by_key(|column| column.abs_diff(at.column))
                .unwrap_or(at.column),
        ),
    };
    let span = if line.contains('\t') {
        Span::on_line(at.line, at_tab, 1)
    } else {
        here
    };
    Diagnostic::error(Code::Syntax, Path::root(), message)
        .expected(expected)
        .help("replace the tab with spaces (and have your editor insert spaces in YAML files)")
        .at(span)
}

/// `: ` where no mapping may start: a second `key: ` on a line (a value with `: ` in it), or a
/// key indented under a line that already has its value.
fn colon(line: &str, at: Pos, source: &str, here: Span) -> Diagnostic {
    let error = |message: &str| Diagnostic::error(Code::Syntax, Path::root(), message);
    let before: String = line.chars().take(at.column.saturating_sub(1)).collect();
    let content = before.trim_start().trim_start_matches("- ");
    if let Some((key, _)) = content.split_once(": ") {
        // `key: some: text`: the value holds `: `.
        let value: String = line
            .chars()
            .skip(line.chars().count() - line.trim_start().chars().count())
            .collect::<String>()
            .trim_start_matches("- ")
            .split_once(": ")
            .map_or(String::new(), |(_, v)| v.trim_end().to_owned());
        return error("a value with `: ` in it")
            .expected("one `key: value` on a line; `: ` inside a value needs quotes")
            .help(format!(
                "quote the value: `{key}: \"{}\"` (or use a block: `{key}: |` and the text on the next lines)",
                value.replace('"', "\\\"")
            ))
            .at(here);
    }
    let indent = line.chars().take_while(|c| *c == ' ').count();
    let key = line.trim_start().split(':').next().unwrap_or("").trim();
    let message = format!("`{key}` is indented under a line that already has its value");
    let mut diagnostic = error(&message).expected(
        "a key in line with the keys of its mapping, or under a key with no value on its line",
    );
    if let Some((number, above)) = previous_line(source, at.line) {
        let above_indent = above.chars().take_while(|c| *c == ' ').count();
        let above_key = above
            .trim_start()
            .trim_start_matches("- ")
            .split(':')
            .next()
            .unwrap_or("")
            .trim();
        if above_indent < indent {
            diagnostic = diagnostic.help(format!(
                "line {number} (`{}`) ends with a value, so nothing can be indented under it: indent `{key}` like `{above_key}` ({} spaces), or remove the value of `{above_key}` to nest `{key}` in it",
                above.trim(),
                above_indent
            ));
        }
    }
    diagnostic.at(Span::on_line(
        at.line,
        indent + 1,
        key.chars().count().max(1),
    ))
}

/// A line whose indentation lines up with nothing above it.
fn indentation(line: &str, at: Pos, source: &str) -> Diagnostic {
    let indent = line.chars().take_while(|c| *c == ' ').count();
    let columns = open_indents(source, at.line);
    let what = if line.trim_start().starts_with("- ") {
        "this list item is indented differently from the items before it"
    } else {
        "this line is indented differently from the lines before it"
    };
    let expected = match columns.as_slice() {
        [] => "the indentation of a line above it".to_owned(),
        [one] => format!("an indentation of {one} spaces"),
        [many @ .., last] => format!(
            "an indentation of {} or {last} spaces",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    // The nearest, and of two as near the deeper one (the line's siblings are likelier).
    let nearest = columns
        .iter()
        .copied()
        .min_by_key(|c| (c.abs_diff(indent), std::cmp::Reverse(*c)))
        .unwrap_or(0);
    Diagnostic::error(Code::Syntax, Path::root(), what)
        .expected(expected)
        .help(format!(
            "it is indented by {indent} spaces; the entries of one mapping or list line up exactly (here probably {nearest} spaces)"
        ))
        .at(Span::on_line(at.line, indent + 1, line.trim().chars().count().max(1)))
}

/// The indentations still open at `line`: those of the lines above it that a line there could
/// continue, innermost last, in increasing order.
fn open_indents(source: &str, line: usize) -> Vec<usize> {
    let mut open: Vec<usize> = Vec::new();
    for text in source.lines().take(line.saturating_sub(1)) {
        let trimmed = text.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = text.len() - trimmed.len();
        while open.last().is_some_and(|&last| last > indent) {
            open.pop();
        }
        if open.last() != Some(&indent) {
            open.push(indent);
        }
        // The content after `- ` is a level of its own (`- run: x` then `  name: y`).
        if let Some(rest) = trimmed.strip_prefix("- ")
            && rest.contains(": ")
        {
            open.push(indent + 2);
        }
    }
    open
}

/// The last line before `line` with content (not blank, not a comment), with its number.
fn previous_line(source: &str, line: usize) -> Option<(usize, &str)> {
    source
        .lines()
        .enumerate()
        .take(line.saturating_sub(1))
        .filter(|(_, text)| {
            let trimmed = text.trim_start();
            !trimmed.is_empty() && !trimmed.starts_with('#')
        })
        .last()
        .map(|(i, text)| (i + 1, text))
}

/// A list or mapping in brackets opened at `opened` and not closed. `at_end`: the parser
/// stopped at the end of the file (the caret goes on the opening bracket then).
fn unclosed(
    opened: Pos,
    (open, close): (char, char),
    what: &str,
    at_end: Option<Pos>,
) -> Diagnostic {
    let diagnostic = Diagnostic::error(
        Code::Syntax,
        Path::root(),
        format!("a `{open}` {what} is not closed"),
    );
    match at_end {
        Some(_) => diagnostic
            .expected(format!("a `{close}` to close it"))
            .help(format!(
                "close the {what} with `{close}` where its entries end"
            )),
        None => diagnostic
            .expected(format!("`,` and the next entry, or `{close}`"))
            .help(format!(
                "the {what} opened at line {}, column {} needs its `{close}` before this point",
                opened.line, opened.column
            )),
    }
}

/// The position of the last `open` before `at` that no `close` matches, outside quotes.
fn open_bracket(source: &str, at: Pos, open: char, close: char) -> Option<Pos> {
    let mut stack = Vec::new();
    for (number, text) in source.lines().enumerate().take(at.line) {
        let mut quote = None;
        for (column, c) in text.chars().enumerate() {
            if number + 1 == at.line && column + 1 >= at.column {
                break;
            }
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '#') if column == 0 || text[..].chars().nth(column - 1) == Some(' ') => {
                    break;
                }
                (None, c) if c == open => stack.push(Pos {
                    line: number + 1,
                    column: column + 1,
                }),
                (None, c) if c == close => {
                    stack.pop();
                }
                _ => {}
            }
        }
    }
    stack.pop()
}

/// The quote character of the quoted text open at `at` and where it starts: the last quote
/// that opens a value (after `: `, `- `, `[`, `{`, `,` or at the start of a line).
fn open_quote(source: &str, at: Pos) -> (char, Pos) {
    let mut found = ('"', at);
    for (number, text) in source.lines().enumerate().take(at.line) {
        let chars: Vec<char> = text.chars().collect();
        for (column, &c) in chars.iter().enumerate() {
            if number + 1 == at.line && column + 1 > at.column {
                break;
            }
            if c != '"' && c != '\'' {
                continue;
            }
            let before = chars[..column].iter().rev().find(|c| **c != ' ');
            if matches!(before, None | Some(':' | '-' | '[' | '{' | ',')) {
                found = (
                    c,
                    Pos {
                        line: number + 1,
                        column: column + 1,
                    },
                );
            }
        }
    }
    found
}
