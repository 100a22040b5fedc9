//! Tokens to a tree, by operator precedence with an explicit stack: the parser never recurses,
//! so its use of the thread's stack does not grow with the input.
//!
//! The grammar, loosest binding first:
//!
//! ```text
//! expr       = and ("||" and)*
//! and        = comparison ("&&" comparison)*
//! comparison = unary (("==" | "!=") unary)?     a second `==` or `!=` is an error
//! unary      = "!" unary | primary
//! primary    = STRING | NUMBER | "true" | "false"
//!            | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"
//! ```
//!
//! The parser alternates between two positions. Where an operand is due, `!`, `(` and `name(`
//! push a [`Frame`] and a value completes an operand. Where an operator is due, the `!`s waiting
//! on top apply to the operand; then a binary operator first folds the waiting operators that
//! bind at least as tightly (left associativity) and waits for its right side, while `)`, `,` and
//! the end fold everything down to their group.
//!
//! Depth is bounded twice. Every `(`, `!` and call counts against [`MAX_DEPTH`] as it opens, so
//! 4,000 `(` stop at the 65th rather than at the end of the input; and each node's depth is
//! computed from its children as it is built, which also counts `&&` and `||` chains. Every tree
//! this returns is at most [`MAX_DEPTH`] deep, so the recursive walks in `check`, `eval` and
//! printing are bounded.

use super::ast::{BinOp, Kind, Node, Span};
use super::lexer::{Lexer, Tok, Token};
use super::syntax::{self, After, Group};
use super::{ExprError, MAX_DEPTH, MAX_SOURCE_LEN};

/// A node and its depth: 0 for a leaf, one more than its deepest child otherwise.
type Operand = (Node, usize);

/// Something waiting for the operand being parsed.
#[derive(Debug)]
enum Frame {
    /// A `!` at this span.
    Not(Span),
    /// A left operand and its operator, waiting for the right operand.
    Binary {
        op: BinOp,
        op_span: Span,
        lhs: Operand,
    },
    /// A `(` at this span.
    Paren(Span),
    /// A call, waiting for its next argument.
    Call(Call),
}

/// A call being parsed: its `(` is at `open`; `depth` is its deepest argument's so far.
#[derive(Debug)]
struct Call {
    name: String,
    name_span: Span,
    open: Span,
    args: Vec<Node>,
    depth: usize,
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    peeked: Option<Token>,
    frames: Vec<Frame>,
    /// How many `!`, `(` and call frames are open.
    nesting: usize,
}

/// Parses `src` into a tree no deeper than [`MAX_DEPTH`], or returns the first syntax error.
pub(super) fn parse(src: &str) -> Result<Node, ExprError> {
    if src.len() > MAX_SOURCE_LEN {
        return Err(syntax::too_long(src.len()));
    }
    let mut parser = Parser {
        src,
        lexer: Lexer::new(src),
        peeked: None,
        frames: Vec::new(),
        nesting: 0,
    };
    if parser.peek()?.tok == Tok::Eof {
        return Err(syntax::empty(src.len()));
    }
    parser.run()
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&Token, ExprError> {
        let token = match self.peeked.take() {
            Some(token) => token,
            None => self.lexer.next_token()?,
        };
        Ok(self.peeked.insert(token))
    }

    fn bump(&mut self) -> Result<Token, ExprError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next_token(),
        }
    }

    /// Counts one more open `!`, `(` or call, if that stays within [`MAX_DEPTH`].
    fn enter(&mut self, at: Span) -> Result<(), ExprError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(syntax::too_deep(at));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    fn run(&mut self) -> Result<Node, ExprError> {
        loop {
            let mut operand = match self.operand()? {
                Some(operand) => operand,
                None => continue,
            };
            // An operand is complete: read operators until one needs a right operand.
            loop {
                operand = self.apply_nots(operand)?;
                let token = self.bump()?;
                let op = match token.tok {
                    Tok::EqEq => BinOp::Eq,
                    Tok::NotEq => BinOp::Ne,
                    Tok::AndAnd => BinOp::And,
                    Tok::OrOr => BinOp::Or,
                    Tok::RParen => {
                        operand = self.close(operand, &token)?;
                        continue;
                    }
                    Tok::Comma => {
                        if !matches!(self.group(), Some(Frame::Call(_))) {
                            return Err(self.unexpected_after_operand(&token));
                        }
                        let (arg, depth) = self.fold(operand, 0, &token)?;
                        if let Some(Frame::Call(call)) = self.frames.last_mut() {
                            call.depth = call.depth.max(depth);
                            call.args.push(arg);
                        }
                        break;
                    }
                    Tok::Eof => {
                        let (root, _) = self.fold(operand, 0, &token)?;
                        return match self.frames.last() {
                            Some(Frame::Paren(open) | Frame::Call(Call { open, .. })) => {
                                Err(syntax::unclosed(*open))
                            }
                            _ => Ok(root),
                        };
                    }
                    _ => return Err(self.unexpected_after_operand(&token)),
                };
                let lhs = self.fold(operand, op.precedence(), &token)?;
                self.frames.push(Frame::Binary {
                    op,
                    op_span: token.span,
                    lhs,
                });
                break;
            }
        }
    }

    /// Reads where an operand is due: a complete operand, or `None` after opening a frame.
    fn operand(&mut self) -> Result<Option<Operand>, ExprError> {
        let token = self.bump()?;
        let kind = match token.tok {
            Tok::Str(value) => Kind::Str(value),
            Tok::Num(number) => Kind::Num(number),
            Tok::True => Kind::Bool(true),
            Tok::False => Kind::Bool(false),
            Tok::Name(name) if self.peek()?.tok == Tok::LParen => {
                let open = self.bump()?.span;
                self.enter(open)?;
                let call = Call {
                    name,
                    name_span: token.span,
                    open,
                    args: Vec::new(),
                    depth: 0,
                };
                if self.peek()?.tok == Tok::RParen {
                    let close = self.bump()?.span;
                    return self.finish_call(call, None, close).map(Some);
                }
                self.frames.push(Frame::Call(call));
                return Ok(None);
            }
            Tok::Name(name) => Kind::Var(name),
            Tok::Bang => {
                self.enter(token.span)?;
                self.frames.push(Frame::Not(token.span));
                return Ok(None);
            }
            Tok::LParen => {
                self.enter(token.span)?;
                self.frames.push(Frame::Paren(token.span));
                return Ok(None);
            }
            _ => return Err(syntax::expected_operand(self.src, &token)),
        };
        Ok(Some((Node::new(kind, token.span), 0)))
    }

    /// Applies the `!`s waiting on top of the stack to a complete operand.
    fn apply_nots(&mut self, mut operand: Operand) -> Result<Operand, ExprError> {
        while let Some(&Frame::Not(bang)) = self.frames.last() {
            self.frames.pop();
            self.leave();
            let span = bang.to(operand.0.span);
            let depth = deeper(operand.1, bang)?;
            operand = (Node::new(Kind::Not(Box::new(operand.0)), span), depth);
        }
        Ok(operand)
    }

    /// Folds the waiting binary operators that bind at least as tightly as `precedence` into
    /// `rhs`. `next` is the token that ends the operand: a second comparison is an error.
    fn fold(
        &mut self,
        mut rhs: Operand,
        precedence: u8,
        next: &Token,
    ) -> Result<Operand, ExprError> {
        while let Some(Frame::Binary { op, .. }) = self.frames.last() {
            if op.precedence() < precedence {
                break;
            }
            if op.precedence() == precedence && matches!(next.tok, Tok::EqEq | Tok::NotEq) {
                return Err(syntax::chained(next.span));
            }
            let Some(Frame::Binary { op, op_span, lhs }) = self.frames.pop() else {
                break;
            };
            let depth = deeper(lhs.1.max(rhs.1), op_span)?;
            let span = lhs.0.span.to(rhs.0.span);
            let kind = Kind::Binary {
                op,
                lhs: Box::new(lhs.0),
                rhs: Box::new(rhs.0),
            };
            rhs = (Node::new(kind, span), depth);
        }
        Ok(rhs)
    }

    /// At a `)`: closes the innermost group or call around `operand`.
    fn close(&mut self, operand: Operand, token: &Token) -> Result<Operand, ExprError> {
        let (inner, depth) = self.fold(operand, 0, token)?;
        // Folding left a group on top, or nothing.
        match self.frames.pop() {
            Some(Frame::Paren(open)) => {
                self.leave();
                Ok((inner, deeper(depth, open)?))
            }
            Some(Frame::Call(call)) => self.finish_call(call, Some((inner, depth)), token.span),
            other => {
                self.frames.extend(other);
                Err(syntax::unmatched(token.span))
            }
        }
    }

    /// Builds a call closed at `close`, with `last` as its final argument.
    fn finish_call(
        &mut self,
        mut call: Call,
        last: Option<Operand>,
        close: Span,
    ) -> Result<Operand, ExprError> {
        self.leave();
        if let Some((arg, depth)) = last {
            call.depth = call.depth.max(depth);
            call.args.push(arg);
        }
        let kind = Kind::Call {
            name: call.name,
            args: call.args,
        };
        let node = Node::new(kind, call.name_span.to(close));
        Ok((node, deeper(call.depth, call.name_span)?))
    }

    /// An error for `token` right after a complete operand, before anything is folded.
    fn unexpected_after_operand(&self, token: &Token) -> ExprError {
        let comparison_waits = matches!(
            self.frames.last(),
            Some(Frame::Binary {
                op: BinOp::Eq | BinOp::Ne,
                ..
            })
        );
        let group = match self.group() {
            None => Group::None,
            Some(Frame::Call(_)) => Group::Call,
            Some(_) => Group::Paren,
        };
        syntax::unexpected_after_operand(
            self.src,
            token,
            After {
                comparison_waits,
                group,
            },
        )
    }

    /// The innermost open `(` or call.
    fn group(&self) -> Option<&Frame> {
        self.frames
            .iter()
            .rev()
            .find(|frame| matches!(frame, Frame::Paren(_) | Frame::Call(_)))
    }
}

/// The depth of a node whose deepest child is `inner` deep, if within [`MAX_DEPTH`].
fn deeper(inner: usize, at: Span) -> Result<usize, ExprError> {
    let depth = inner + 1;
    if depth > MAX_DEPTH {
        return Err(syntax::too_deep(at));
    }
    Ok(depth)
}
