//! How the YAML tree drives saphyr-parser over a `&str`.
//!
//! saphyr-parser's `StrInput` reports a lookahead buffer of 128 characters, and its scanner
//! reserves that much room in every plain scalar it starts (`String::with_capacity(32)`, then
//! `reserve(bufmaxlen)`): each plain scalar cost an allocation and a reallocation to more than
//! 128 bytes, which the tree then kept. [`ScalarSized`] is `StrInput` with a buffer of 16
//! characters, the size of saphyr's own `BufferedInput`, so that the reservation fits in the
//! first 32 bytes.
//!
//! ## Guarantees
//! The events are the same: for a `&str` the buffer size is only a hint. `StrInput` has the
//! whole text at hand whatever was asked; the scanner reads plain scalars in chunks of that
//! size and, for block scalars indented 14 columns or more, takes the path it takes for
//! `BufferedInput`, which skips the same indentation. Every other method is `StrInput`'s own.

use saphyr_parser::input::SkipTabs;
use saphyr_parser::{Input, StrInput};

/// What [`ScalarSized::bufmaxlen`] reports: saphyr's `BufferedInput` buffer size, under the
/// 32 bytes a plain scalar starts with.
const BUFFER_LEN: usize = 16;

/// `StrInput`, with a lookahead buffer of [`BUFFER_LEN`] characters.
pub(super) struct ScalarSized<'a>(pub StrInput<'a>);

impl Input for ScalarSized<'_> {
    #[inline]
    fn lookahead(&mut self, count: usize) {
        self.0.lookahead(count)
    }

    #[inline]
    fn buflen(&self) -> usize {
        self.0.buflen()
    }

    /// The one change: see [`ScalarSized`].
    #[inline]
    fn bufmaxlen(&self) -> usize {
        BUFFER_LEN
    }

    #[inline]
    fn buf_is_empty(&self) -> bool {
        self.0.buf_is_empty()
    }

    #[inline]
    fn raw_read_ch(&mut self) -> char {
        self.0.raw_read_ch()
    }

    #[inline]
    fn raw_read_non_breakz_ch(&mut self) -> Option<char> {
        self.0.raw_read_non_breakz_ch()
    }

    #[inline]
    fn skip(&mut self) {
        self.0.skip()
    }

    #[inline]
    fn skip_n(&mut self, count: usize) {
        self.0.skip_n(count)
    }

    #[inline]
    fn peek(&self) -> char {
        self.0.peek()
    }

    #[inline]
    fn peek_nth(&self, n: usize) -> char {
        self.0.peek_nth(n)
    }

    #[inline]
    fn peek_opt(&self) -> Option<char> {
        self.0.peek_opt()
    }

    #[inline]
    fn look_ch(&mut self) -> char {
        self.0.look_ch()
    }

    #[inline]
    fn next_char_is(&self, c: char) -> bool {
        self.0.next_char_is(c)
    }

    #[inline]
    fn nth_char_is(&self, n: usize, c: char) -> bool {
        self.0.nth_char_is(n, c)
    }

    #[inline]
    fn next_2_are(&self, c1: char, c2: char) -> bool {
        self.0.next_2_are(c1, c2)
    }

    #[inline]
    fn next_3_are(&self, c1: char, c2: char, c3: char) -> bool {
        self.0.next_3_are(c1, c2, c3)
    }

    #[inline]
    fn next_is_document_indicator(&self) -> bool {
        self.0.next_is_document_indicator()
    }

    #[inline]
    fn next_is_document_start(&self) -> bool {
        self.0.next_is_document_start()
    }

    #[inline]
    fn next_is_document_end(&self) -> bool {
        self.0.next_is_document_end()
    }

    #[inline]
    fn skip_ws_to_eol(&mut self, skip_tabs: SkipTabs) -> (usize, Result<SkipTabs, &'static str>) {
        self.0.skip_ws_to_eol(skip_tabs)
    }

    #[inline]
    fn next_can_be_plain_scalar(&self, in_flow: bool) -> bool {
        self.0.next_can_be_plain_scalar(in_flow)
    }

    #[inline]
    fn next_is_blank_or_break(&self) -> bool {
        self.0.next_is_blank_or_break()
    }

    #[inline]
    fn next_is_blank_or_breakz(&self) -> bool {
        self.0.next_is_blank_or_breakz()
    }

    #[inline]
    fn next_is_blank(&self) -> bool {
        self.0.next_is_blank()
    }

    #[inline]
    fn next_is_break(&self) -> bool {
        self.0.next_is_break()
    }

    #[inline]
    fn next_is_breakz(&self) -> bool {
        self.0.next_is_breakz()
    }

    #[inline]
    fn next_is_z(&self) -> bool {
        self.0.next_is_z()
    }

    #[inline]
    fn next_is_flow(&self) -> bool {
        self.0.next_is_flow()
    }

    #[inline]
    fn next_is_digit(&self) -> bool {
        self.0.next_is_digit()
    }

    #[inline]
    fn next_is_alpha(&self) -> bool {
        self.0.next_is_alpha()
    }

    #[inline]
    fn skip_while_non_breakz(&mut self) -> usize {
        self.0.skip_while_non_breakz()
    }

    #[inline]
    fn skip_while_blank(&mut self) -> usize {
        self.0.skip_while_blank()
    }

    #[inline]
    fn fetch_while_is_alpha(&mut self, out: &mut String) -> usize {
        self.0.fetch_while_is_alpha(out)
    }

    #[inline]
    fn fetch_while_is_yaml_non_space(&mut self, out: &mut String) -> usize {
        self.0.fetch_while_is_yaml_non_space(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use saphyr_parser::Parser;

    use super::*;

    /// Every event with its span, or the error, as text: what the tree is built from.
    fn events<T: Input>(mut parser: Parser<'_, T>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(next) = parser.next_event() {
            match next {
                Ok((event, span)) => out.push(format!("{event:?} {span:?}")),
                Err(err) => {
                    out.push(format!("{err:?}"));
                    break;
                }
            }
        }
        out
    }

    fn assert_same_events(source: &str) {
        assert_eq!(
            events(Parser::new(ScalarSized(StrInput::new(source)))),
            events(Parser::new_from_str(source)),
            "{source:?}"
        );
    }

    #[test]
    fn the_events_are_those_of_str_input() {
        let long = "x".repeat(300);
        let deep = " ".repeat(20);
        for source in [
            String::new(),
            "name: web\njobs:\n  build: {steps: [make]}\n".to_owned(),
            format!("a: {long}\nb: [{long}, \"{long}\"]\nc: {long} {long}\n  {long}\n"),
            format!("a:\n{deep}b:\n{deep}  c: |\n{deep}    one\n{deep}\n{deep}     two\n{deep}  d: >-\n{deep}    x\n"),
            format!("a: |2\n{deep}x\n  y\n"),
            "a: plain scalar\n  continued on # not a comment\n  the next line # comment\n".to_owned(),
            "- [a, b, {c: d}]\n- ? complex\n  : key\n- &x y\n- *x\n".to_owned(),
            "a: 'quoted ''text'''\nb: \"esc\\taped \\u00e9\"\nc: ünïcödé plain text that goes on and on\n".to_owned(),
            "a: [1, 2\nb: 3\n".to_owned(),
            "\t- bad\n".to_owned(),
        ] {
            assert_same_events(&source);
        }
        let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        for file in std::fs::read_dir(examples).expect("examples") {
            let text = std::fs::read_to_string(file.expect("an example").path()).expect("text");
            assert_same_events(&text);
        }
    }

    proptest! {
        #[test]
        fn the_events_are_those_of_str_input_for_any_text(
            source in proptest::collection::vec(
                prop_oneof![
                    Just(" "), Just("  "), Just("\n"), Just("\t"), Just("- "), Just(": "),
                    Just("? "), Just("#"), Just("|"), Just(">"), Just("'"), Just("\""),
                    Just("["), Just("]"), Just("{"), Just("}"), Just(","), Just("&a "),
                    Just("*a"), Just("!!str "), Just("---\n"), Just("..."), Just("é"),
                    Just("word"), Just("a long plain scalar of more than sixteen characters"),
                ],
                0..60,
            ).prop_map(|parts| parts.concat())
        ) {
            assert_same_events(&source);
        }
    }
}
