//! Source text to tokens, one at a time, so the parser reports the first error in source order.
//!
//! Names and numbers are read as whole runs of letters, digits, `_` and `.` and then validated,
//! so `brånch`, `params.` and `2x` are each one clear error instead of a puzzling token split.

use super::ast::{Number, Span};
use super::{ExprError, ExprErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    Str(String),
    Num(Number),
    /// A possibly dotted name: `branch`, `params.TARGET`, `starts_with`.
    Name(String),
    True,
    False,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    Bang,
    LParen,
    RParen,
    Comma,
    Eof,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub tok: Tok,
    pub span: Span,
}

pub(super) struct Lexer<'s> {
    src: &'s str,
    /// Always on a `char` boundary.
    pos: usize,
}

/// The escapes a string literal may use, for an `expected` line.
const ESCAPES: &str = "one of `\\\\`, `\\'`, `\\\"`, `\\n` or `\\t`";

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

/// One segment of a name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_name_segment(segment: &str) -> bool {
    let mut chars = segment.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Self {
        Self { src, pos: 0 }
    }

    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn token(&self, tok: Tok, start: usize) -> Token {
        Token {
            tok,
            span: Span::new(start, self.pos),
        }
    }

    /// The next token; at the end of the input, `Eof` with an empty span, again and again.
    pub fn next_token(&mut self) -> Result<Token, ExprError> {
        let skipped = self.rest().len() - self.rest().trim_start().len();
        self.pos += skipped;
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(self.token(Tok::Eof, start));
        };
        let two = |lexer: &mut Self, tok: Tok| {
            lexer.pos += 2;
            Ok(lexer.token(tok, start))
        };
        match (c, self.peek_second()) {
            ('=', Some('=')) => two(self, Tok::EqEq),
            ('!', Some('=')) => two(self, Tok::NotEq),
            ('&', Some('&')) => two(self, Tok::AndAnd),
            ('|', Some('|')) => two(self, Tok::OrOr),
            ('!' | '(' | ')' | ',', _) => {
                self.pos += 1;
                let tok = match c {
                    '!' => Tok::Bang,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                };
                Ok(self.token(tok, start))
            }
            ('\'' | '"', _) => self.string(c),
            _ if c.is_ascii_digit() => self.number(),
            _ if c.is_alphabetic() || c == '_' => self.name(),
            _ => Err(self.unexpected_char(c)),
        }
    }

    fn unexpected_char(&self, c: char) -> ExprError {
        let span = Span::new(self.pos, self.pos + c.len_utf8());
        let error = ExprError::new(
            ExprErrorKind::UnexpectedChar,
            span,
            format!("unexpected character `{}`", c.escape_debug()),
        );
        let help = match c {
            '=' => "use `==` to compare",
            '&' => "use `&&` for \"and\"",
            '|' => "use `||` for \"or\"",
            '<' | '>' => "values can only be compared with `==` and `!=`",
            '`' | '\u{2018}' | '\u{2019}' | '\u{201C}' | '\u{201D}' => {
                "quote strings with straight quotes: `'...'` or `\"...\"`"
            }
            '-' | '+' => "numbers are non-negative and there is no arithmetic",
            '.' => "write a number with a digit before the `.`, such as `0.5`",
            _ => return error,
        };
        error.help(help)
    }

    /// A string literal starting at the quote `quote`.
    fn string(&mut self, quote: char) -> Result<Token, ExprError> {
        let start = self.pos;
        let mut value = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos = start + i + c.len_utf8();
                return Ok(self.token(Tok::Str(value), start));
            }
            if c != '\\' {
                value.push(c);
                continue;
            }
            let Some((_, escaped)) = chars.next() else {
                break;
            };
            value.push(match escaped {
                '\\' | '\'' | '"' => escaped,
                'n' => '\n',
                't' => '\t',
                _ => {
                    let at = start + i;
                    let span = Span::new(at, at + 1 + escaped.len_utf8());
                    return Err(ExprError::new(
                        ExprErrorKind::UnknownEscape,
                        span,
                        format!("unknown escape `\\{}` in a string", escaped.escape_debug()),
                    )
                    .expected(ESCAPES)
                    .help("write `\\\\` for a backslash"));
                }
            });
        }
        Err(ExprError::new(
            ExprErrorKind::UnterminatedString,
            Span::new(start, self.src.len()),
            "unterminated string",
        )
        .expected(format!("a closing `{quote}`")))
    }

    /// Reads the run of letters, digits, `_` and `.` that starts here.
    fn word(&mut self) -> (&'s str, Span) {
        let start = self.pos;
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|&(_, c)| !is_word_char(c))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += len;
        (rest.get(..len).unwrap_or(""), Span::new(start, self.pos))
    }

    fn number(&mut self) -> Result<Token, ExprError> {
        let (text, span) = self.word();
        match Number::parse(text) {
            Some(number) => Ok(Token {
                tok: Tok::Num(number),
                span,
            }),
            None => Err(ExprError::new(
                ExprErrorKind::InvalidNumber,
                span,
                format!("invalid number `{text}`"),
            )
            .expected("a number such as `3` or `2.5`")),
        }
    }

    fn name(&mut self) -> Result<Token, ExprError> {
        let (text, span) = self.word();
        let tok = match text {
            "true" => Tok::True,
            "false" => Tok::False,
            _ if text.split('.').all(is_name_segment) => Tok::Name(text.to_owned()),
            _ => {
                let error = ExprError::new(
                    ExprErrorKind::InvalidName,
                    span,
                    format!("invalid name `{text}`"),
                )
                .expected("a name of ASCII letters, digits and `_`, such as `params.TARGET`");
                return Err(if text.ends_with('.') {
                    error.help(format!("write a name after the `.`, e.g. `{text}NAME`"))
                } else {
                    error
                });
            }
        };
        Ok(Token { tok, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Result<Vec<Tok>, ExprError> {
        let mut lexer = Lexer::new(src);
        let mut out = Vec::new();
        loop {
            let token = lexer.next_token()?;
            if token.tok == Tok::Eof {
                return Ok(out);
            }
            out.push(token.tok);
        }
    }

    fn error(src: &str) -> ExprError {
        match tokens(src) {
            Ok(tokens) => panic!("{src:?} lexed as {tokens:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn lexes_every_kind_of_token() {
        let number = |t| Tok::Num(Number::parse(t).unwrap_or_else(|| panic!("{t}")));
        assert_eq!(
            tokens("branch==\"a\"!=!(x)&&true||false, 2.5 params.A_1").ok(),
            Some(vec![
                Tok::Name("branch".into()),
                Tok::EqEq,
                Tok::Str("a".into()),
                Tok::NotEq,
                Tok::Bang,
                Tok::LParen,
                Tok::Name("x".into()),
                Tok::RParen,
                Tok::AndAnd,
                Tok::True,
                Tok::OrOr,
                Tok::False,
                Tok::Comma,
                number("2.5"),
                Tok::Name("params.A_1".into()),
            ])
        );
    }

    #[test]
    fn strings_decode_every_escape() {
        assert_eq!(
            tokens(r#"'a\\b\'c\"d\ne\tf' "it's""#).ok(),
            Some(vec![
                Tok::Str("a\\b'c\"d\ne\tf".into()),
                Tok::Str("it's".into())
            ])
        );
    }

    #[test]
    fn strings_keep_raw_unicode_and_newlines() {
        assert_eq!(
            tokens("'ünï\ncødé'").ok(),
            Some(vec![Tok::Str("ünï\ncødé".into())])
        );
    }

    #[test]
    fn an_unknown_escape_points_at_the_backslash_and_the_escaped_char() {
        let e = error("'ab\\é'");
        assert_eq!(e.kind, ExprErrorKind::UnknownEscape);
        assert_eq!((e.offset, e.len), (3, 3));
        assert_eq!(e.message, "unknown escape `\\é` in a string");
        assert_eq!(e.expected.as_deref(), Some(ESCAPES));
    }

    #[test]
    fn an_unterminated_string_spans_to_the_end() {
        for (src, offset) in [("x == 'main", 5), ("\"abc\\\"", 0), ("'abc\\", 0)] {
            let e = error(src);
            assert_eq!(e.kind, ExprErrorKind::UnterminatedString, "{src}");
            assert_eq!((e.offset, e.len), (offset, src.len() - offset), "{src}");
        }
        assert_eq!(error("\"abc'").expected.as_deref(), Some("a closing `\"`"));
    }

    #[test]
    fn single_operator_characters_get_a_hint() {
        for (src, offset, help) in [
            ("branch = 'main'", 7, "use `==` to compare"),
            ("a & b", 2, "use `&&` for \"and\""),
            ("a | b", 2, "use `||` for \"or\""),
            ("a < b", 2, "values can only be compared with `==` and `!=`"),
        ] {
            let e = error(src);
            assert_eq!(e.kind, ExprErrorKind::UnexpectedChar, "{src}");
            assert_eq!((e.offset, e.len), (offset, 1), "{src}");
            assert_eq!(e.help.as_deref(), Some(help), "{src}");
        }
    }

    #[test]
    fn an_unexpected_multibyte_char_spans_the_whole_char() {
        let e = error("a == \u{201C}x");
        assert_eq!((e.offset, e.len), (5, 3));
        assert_eq!(e.message, "unexpected character `\u{201C}`");
        let e = error("@");
        assert_eq!((e.kind, e.help), (ExprErrorKind::UnexpectedChar, None));
    }

    #[test]
    fn malformed_numbers_are_one_error_over_the_whole_run() {
        for (src, text) in [
            ("1.", "1."),
            ("2x", "2x"),
            ("1.2.3 ", "1.2.3"),
            ("3_0", "3_0"),
        ] {
            let e = error(src);
            assert_eq!(e.kind, ExprErrorKind::InvalidNumber, "{src}");
            assert_eq!((e.offset, e.len), (0, text.len()), "{src}");
            assert_eq!(e.message, format!("invalid number `{text}`"));
        }
    }

    #[test]
    fn malformed_names_are_one_error_over_the_whole_run() {
        for (src, text) in [
            ("params.", "params."),
            ("brånch", "brånch"),
            ("a..b", "a..b"),
            ("env.1X", "env.1X"),
        ] {
            let e = error(src);
            assert_eq!(e.kind, ExprErrorKind::InvalidName, "{src}");
            assert_eq!((e.offset, e.len), (0, text.len()), "{src}");
        }
        assert_eq!(
            error("params. == 'x'").help.as_deref(),
            Some("write a name after the `.`, e.g. `params.NAME`")
        );
    }

    #[test]
    fn keywords_are_whole_words_only() {
        assert_eq!(
            tokens("true truex true.x").ok(),
            Some(vec![
                Tok::True,
                Tok::Name("truex".into()),
                Tok::Name("true.x".into())
            ])
        );
    }
}
