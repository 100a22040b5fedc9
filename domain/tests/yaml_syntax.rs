//! YAML syntax errors read like every other diagnostic: where (file:line:col and the source
//! line with a caret), what is wrong, what was expected, and a hint for the usual mistakes.

use hodei_domain::load::load;

/// Each broken input and its rendered diagnostic, exactly as `hodei validate` prints it.
const CASES: &[(&str, &str, &str)] = &[
    (
        "tab",
        "name: x\njobs:\n\tbuild:\n    steps: []\n",
        r#"error[syntax]: a tab indents this line
 --> ci.yml:3:1
  |
3 |  build:
  | ^ expected spaces: YAML indents with spaces only
  = help: replace the tab with spaces (and have your editor insert spaces in YAML files)
"#,
    ),
    (
        "tab-in-value",
        "name: x\njobs:\n  build:\n    steps:\n      - run:\techo a\n",
        r#"error[syntax]: a tab where YAML wants a space
 --> ci.yml:5:13
  |
5 |       - run: echo a
  |             ^ expected a space: YAML separates and indents with spaces only
  = help: replace the tab with spaces (and have your editor insert spaces in YAML files)
"#,
    ),
    (
        "list-item-indented-less",
        "name: x\njobs:\n  build:\n    steps:\n      - run: a\n     - run: b\n",
        r#"error[syntax]: this list item is indented differently from the items before it
 --> ci.yml:6:6
  |
6 |      - run: b
  |      ^^^^^^^^ expected an indentation of 0, 2, 4, 6 or 8 spaces
  = help: it is indented by 5 spaces; the entries of one mapping or list line up exactly (here probably 6 spaces)
"#,
    ),
    (
        "key-indented-off",
        "name: x\njobs:\n  build:\n    steps: []\n  lint:\n    steps: []\n   x: 1\n",
        r#"error[syntax]: this line is indented differently from the lines before it
 --> ci.yml:7:4
  |
7 |    x: 1
  |    ^^^^ expected an indentation of 0, 2 or 4 spaces
  = help: it is indented by 3 spaces; the entries of one mapping or list line up exactly (here probably 4 spaces)
"#,
    ),
    (
        "key-under-a-value",
        "name: x\n  jobs: {}\n",
        r#"error[syntax]: `jobs` is indented under a line that already has its value
 --> ci.yml:2:3
  |
2 |   jobs: {}
  |   ^^^^ expected a key in line with the keys of its mapping, or under a key with no value on its line
  = help: line 1 (`name: x`) ends with a value, so nothing can be indented under it: indent `jobs` like `name` (0 spaces), or remove the value of `name` to nest `jobs` in it
"#,
    ),
    (
        "colon-in-value",
        "name: x\njobs:\n  build:\n    steps:\n      - run: echo a: b\n",
        r#"error[syntax]: a value with `: ` in it
 --> ci.yml:5:20
  |
5 |       - run: echo a: b
  |                    ^ expected one `key: value` on a line; `: ` inside a value needs quotes
  = help: quote the value: `run: "echo a: b"` (or use a block: `run: |` and the text on the next lines)
"#,
    ),
    (
        "unclosed-list",
        "name: x\njobs:\n  build:\n    steps: [{ run: a }\n  lint: {}\n",
        r#"error[syntax]: a `[` list is not closed
 --> ci.yml:5:3
  |
5 |   lint: {}
  |   ^ expected `,` and the next entry, or `]`
  = help: the list opened at line 4, column 12 needs its `]` before this point
"#,
    ),
    (
        "unclosed-list-2",
        "name: x\njobs:\n  build:\n    needs: [a, b\n    steps: []\n",
        r#"error[syntax]: a `[` list is not closed
 --> ci.yml:5:10
  |
5 |     steps: []
  |          ^ expected `,` and the next entry, or `]`
  = help: the list opened at line 4, column 12 needs its `]` before this point
"#,
    ),
    (
        "unclosed-mapping",
        "name: x\njobs:\n  build: { steps: []\n",
        r#"error[syntax]: a `{` mapping is not closed
 --> ci.yml:3:10
  |
3 |   build: { steps: []
  |          ^ expected a `}` to close it
  = help: close the mapping with `}` where its entries end
"#,
    ),
    (
        "unclosed-quote",
        "name: \"x\njobs: {}\n",
        r#"error[syntax]: a quoted text is not closed
 --> ci.yml:1:7
  |
1 | name: "x
  |       ^ expected a closing " on this line
  = help: close the text with " (a " inside it is written `\"`); a quoted text that goes on to the next lines must indent them more than its key
"#,
    ),
    (
        "stray-bracket",
        "name: x\njobs: {}]\n",
        r#"error[syntax]: a bracket that closes nothing
 --> ci.yml:2:9
  |
2 | jobs: {}]
  |         ^ expected a `]` or `}` only after its `[` or `{`
  = help: remove it, or quote the value if the bracket is part of a text (`"a]b"`)
"#,
    ),
    (
        "missing-value",
        "name: x\njobs:\n  a:\n    needs: [b, , c]\n    steps: []\n",
        r#"error[syntax]: a value is missing here
 --> ci.yml:4:16
  |
4 |     needs: [b, , c]
  |                ^ expected a value: a text, a number, a list or a mapping
  = help: remove the stray `,` or indicator, or quote the value if it is a text
"#,
    ),
    (
        "unclosed-quote-eof",
        "name: x\njobs:\n  a:\n    steps:\n      - run: \"echo hi\n",
        r#"error[syntax]: a quoted text is not closed
 --> ci.yml:5:14
  |
5 |       - run: "echo hi
  |              ^ expected a closing " on this line
  = help: close the text with " (a " inside it is written `\"`); a quoted text that goes on to the next lines must indent them more than its key
"#,
    ),
    (
        "item-after-value",
        "name: x\njobs:\n  build:\n    steps: - run: a\n",
        r#"error[syntax]: a list item (`- `) where a value was already given
 --> ci.yml:4:12
  |
4 |     steps: - run: a
  |            ^ expected the items of a list on the lines after a key that has no value on its line
  = help: write the key alone (`steps:`) and each item on a line of its own below it, indented as one (`  - run: ...`)
"#,
    ),
    (
        "at-sign",
        "name: @x\n",
        r#"error[syntax]: `@` cannot start a value
 --> ci.yml:1:7
  |
1 | name: @x
  |       ^ expected a text, a number, `[`, `{`, `-`, `"` or `'`
  = help: quote the value: `"@x"` (`@` and `` ` `` are reserved in YAML)
"#,
    ),
];

fn rendered(source: &str) -> String {
    let loaded = load(source);
    assert!(loaded.pipeline.is_none(), "{source}");
    loaded
        .diagnostics
        .iter()
        .map(|d| d.render("ci.yml", source, false))
        .collect()
}

#[test]
fn yaml_syntax_errors_say_where_what_and_how_to_fix() {
    let mut wrong = Vec::new();
    for (name, source, expected) in CASES {
        let got = rendered(source);
        if got != *expected {
            wrong.push(format!(
                "--- {name}\n{source}\n--- got\n{got}--- expected\n{expected}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
