//! Secret masking: every secret value in a job's output becomes `***` before the output is stored
//! or streamed.
//!
//! Output arrives as raw byte chunks of any size, and a secret may be split across chunks at any
//! byte. [`Masker`] therefore holds back the end of a chunk while it could still be the start of a
//! secret, and emits it once the next chunk (or [`Masker::finish`]) decides. [`mask_all`] masks a
//! complete text at once.
//!
//! # What is masked
//!
//! - Every non-empty value, as given. Empty values are ignored.
//! - Values of 1 to 3 bytes are masked too, because a leaked short secret is still a leak and the
//!   user asked for it. The cost: every occurrence of those bytes in the log becomes `***` (a
//!   secret `1` masks every `1`), which can make the log unreadable, and the holes show where the
//!   value is *not*. Such a value protects little anyway; warning about it belongs where secrets
//!   are configured, not here.
//! - A multi-line value (one containing `\n`) is masked as a whole, and also line by line: each of
//!   its lines, trimmed of `\r` at both ends, that is at least [`MIN_LINE_LEN`] bytes long is masked
//!   on its own, because programs often print secrets one line at a time (a PEM key through
//!   `while read line`, a CRLF file through a tool that normalises line ends). Shorter lines are
//!   not masked on their own: lines such as `}` or `--` would mask too much. A whole value that
//!   ends with `\n` swallows that newline when it is printed whole.
//!
//! # Guarantees
//!
//! - **Every covered byte is hidden.** A byte is *covered* when it lies inside an occurrence of
//!   any value, at any position; occurrences may overlap, contain one another or touch. Each
//!   maximal run of covered bytes becomes one `***`, and every other byte is copied unchanged. So
//!   no byte of any occurrence is ever emitted: with values `abcd` and `cdef` the text `abcdef`
//!   becomes `***`, and a value inside a longer one, or a prefix of it, shows nothing either.
//! - **Touching occurrences merge.** Two occurrences that overlap or are adjacent (one ends where
//!   the next begins) form one run and one `***`: with the value `abcd`, `abcdabcd` becomes
//!   `***`, while `abcd-abcd` becomes `***-***`. The number of `***` therefore does not count the
//!   occurrences.
//! - **Chunking does not matter.** Pushing a stream in any chunks and then calling
//!   [`Masker::finish`] yields exactly the bytes of [`mask_all`] on the whole stream. The `***` of
//!   a run is emitted as soon as the run's first occurrence is decided; the rest of the run is then
//!   swallowed as it arrives, and an occurrence that starts inside the run or right at its end,
//!   in this chunk or a later one, extends it without another `***`. The output of a run is `***`
//!   whatever its length, and whether a byte is covered depends only on the stream, so where the
//!   chunk boundaries fall changes when bytes are emitted, never which.
//! - **No value survives.** The output of [`mask_all`] contains none of the values, provided no
//!   value contains `*` (a value such as `a*` can be formed again from a plain `a` and the `***`
//!   that follows it; that shows nothing new).
//! - **Bounded hold-back.** At most `longest - 1` bytes are held back between calls, where
//!   `longest` is the length of the longest value; nothing is held back without values. A run that
//!   may go on in the next chunk costs no held bytes: the masker only remembers that the run is
//!   open and how many of the held bytes it already covers.
//! - **Cost.** Bytes that start no value cost one table lookup each. At a byte that starts a value
//!   a trie of all values is walked, at most `longest` steps; inside a run only the positions
//!   where a value could start and reach past the run's known end are walked. The worst case is
//!   `O(len × longest)` and the typical case is linear. Nothing is allocated per byte: the output
//!   buffer grows (or is supplied by the caller with [`Masker::push_into`]), and the held-back
//!   buffer is reused.
//!
//! # Assumptions
//!
//! - The caller calls [`Masker::finish`] when the stream ends; the held-back bytes are lost if the
//!   masker is dropped instead. [`Masker::finish`] also forgets that a secret or a run may be under
//!   way, so calling it mid-stream (before a status line, say) lets a secret split at that point
//!   through, and an occurrence right after that point starts a new `***`.
//! - Output may be longer than the input (a 1-byte value becomes 3 bytes).

use std::fmt;

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"***";

/// The shortest line of a multi-line value that is masked on its own.
pub const MIN_LINE_LEN: usize = 4;

/// Replaces secret values in a stream of output chunks.
///
/// ```
/// use hodei_domain::mask::{Masker, mask_all};
///
/// let mut masker = Masker::new(["hunter2"]);
/// let mut out = masker.push(b"password: hun");
/// out.extend(masker.push(b"ter2\n"));
/// out.extend(masker.finish());
/// assert_eq!(out, b"password: ***\n");
/// assert_eq!(out, mask_all(&[b"hunter2".as_slice()], b"password: hunter2\n"));
/// ```
#[derive(Clone)]
pub struct Masker {
    /// Trie of the values to mask. `nodes[0]` is the root, whose children are in `first`.
    nodes: Vec<Node>,
    /// `first[b]` is the node reached from the root by byte `b`, or 0 when no value starts with
    /// `b`. It doubles as the table that finds the positions worth a trie walk.
    first: [usize; 256],
    /// `reach[b]` is the length of the longest value starting with `b`, 0 when none does: inside
    /// a run, a position whose values cannot reach past the run's end needs no trie walk.
    reach: [usize; 256],
    /// The length of the longest value, 0 without values.
    longest: usize,
    /// Bytes held back: the stream from the leftmost position that is not decided yet.
    held: Vec<u8>,
    /// The run of covered bytes open where `held` starts, if any; see [`Run`].
    run: Run,
}

/// Whether a run of covered bytes is open at a position, that is, whether the byte before it is
/// covered. `Some(n)`: it is, the run's `***` has been emitted, and the next `n` bytes are
/// already known to be covered (an occurrence starting there or at the end extends the run
/// without another `***`). `None`: the byte before is emitted as it is (or the stream starts).
type Run = Option<usize>;

#[derive(Clone, Default)]
struct Node {
    /// Children, sorted by byte.
    edges: Vec<(u8, usize)>,
    /// Whether a value ends here.
    end: bool,
}

/// Whether more of the stream may follow the bytes being scanned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// More bytes may follow: a value that could continue past the end is not decided yet.
    Partial,
    /// The stream ends here.
    Complete,
}

/// What starts at one position.
enum Match {
    /// The longest value occurring here has this length.
    Found(usize),
    /// No value occurs here.
    None,
    /// Undecided: a value could continue past the end of the input.
    NeedMore,
}

impl Masker {
    /// Masks these values. Empty values are ignored. A multi-line value is masked as a whole and
    /// also line by line: each of its lines (trimmed of `\r`) that is at least [`MIN_LINE_LEN`]
    /// bytes long is masked on its own. Shorter non-empty values are masked too; see the module
    /// documentation for the trade-off.
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut masker = Masker {
            nodes: vec![Node::default()],
            first: [0; 256],
            reach: [0; 256],
            longest: 0,
            held: Vec::new(),
            run: None,
        };
        for secret in secrets {
            for value in values_to_mask(secret.as_ref()) {
                masker.insert(value);
            }
        }
        masker
    }

    /// Whether any secret is configured (callers skip masking entirely otherwise).
    pub fn is_active(&self) -> bool {
        self.longest > 0
    }

    /// Bytes currently held back; never more than the longest value's length − 1.
    pub fn pending(&self) -> usize {
        self.held.len()
    }

    /// Masks a chunk; returns the bytes that are safe to emit now. Bytes that could be the start
    /// of a secret continuing in the next chunk are held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.held.len());
        self.push_into(chunk, &mut out);
        out
    }

    /// Like [`Masker::push`], appending to `out` so that the caller can reuse one buffer.
    pub fn push_into(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if !self.is_active() {
            out.extend_from_slice(chunk);
            return;
        }
        let mut from = 0;
        if !self.held.is_empty() {
            // Decide the held-back positions from the held bytes and the head of the chunk, so
            // that the chunk itself is scanned in place rather than copied.
            let held_len = self.held.len();
            let head = chunk.len().min(self.longest);
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(chunk.get(..head).unwrap_or_default());
            let (done, run) = self.scan(&held, 0, self.run, Input::Partial, out);
            self.run = run;
            if head < chunk.len() && done >= held_len {
                // Every held position is decided (`longest` bytes follow each of them); carry on
                // in the chunk from where the scan stopped, with the run open there.
                from = done - held_len;
                held.clear();
                self.held = held;
            } else {
                // The whole chunk fits in `held` (or, defensively, a held position is undecided
                // although `longest` bytes follow it): keep scanning there.
                held.drain(..done.min(held.len()));
                if let Some(tail) = chunk.get(head..).filter(|tail| !tail.is_empty()) {
                    held.extend_from_slice(tail);
                    let (done, run) = self.scan(&held, 0, self.run, Input::Partial, out);
                    self.run = run;
                    held.drain(..done.min(held.len()));
                }
                self.held = held;
                return;
            }
        }
        let (done, run) = self.scan(chunk, from, self.run, Input::Partial, out);
        self.run = run;
        self.held
            .extend_from_slice(chunk.get(done..).unwrap_or_default());
    }

    /// Emits what is held back, masked: the stream ended (or the caller must flush now, e.g.
    /// before a status line). The masker can be used again afterwards, as for a new stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.held.len() + MASK.len());
        self.finish_into(&mut out);
        out
    }

    /// Like [`Masker::finish`], appending to `out`.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) {
        let held = std::mem::take(&mut self.held);
        let run = self.run.take();
        self.scan(&held, 0, run, Input::Complete, out);
        self.held = held;
        self.held.clear();
    }

    /// Adds one value to the trie.
    fn insert(&mut self, value: &[u8]) {
        let Some((&head, tail)) = value.split_first() else {
            return;
        };
        let mut node = match self.first[usize::from(head)] {
            0 => {
                let node = self.add_node();
                self.first[usize::from(head)] = node;
                node
            }
            node => node,
        };
        for &byte in tail {
            node = self.child_or_insert(node, byte);
        }
        if let Some(node) = self.nodes.get_mut(node) {
            node.end = true;
        }
        let reach = &mut self.reach[usize::from(head)];
        *reach = (*reach).max(value.len());
        self.longest = self.longest.max(value.len());
    }

    fn add_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    fn child_or_insert(&mut self, node: usize, byte: u8) -> usize {
        let next = self.nodes.len();
        let Some(parent) = self.nodes.get_mut(node) else {
            return node;
        };
        match parent.edges.binary_search_by_key(&byte, |&(b, _)| b) {
            Ok(i) => parent.edges.get(i).map_or(node, |&(_, child)| child),
            Err(i) => {
                parent.edges.insert(i, (byte, next));
                self.add_node()
            }
        }
    }

    /// Masks `data[from..]` into `out`, with `run` open at `from`, stopping at the first position
    /// that is undecided (possible only for [`Input::Partial`]). Returns that position, or
    /// `data.len()`, and the run open there.
    ///
    /// Positions are decided left to right; deciding one means knowing the longest value that
    /// starts there, which extends the covered bytes to its end. A byte is emitted once its own
    /// position is decided: as it is when no occurrence reaches it, else as part of the run's
    /// `***`, which is emitted at the run's first byte.
    fn scan(
        &self,
        data: &[u8],
        from: usize,
        run: Run,
        input: Input,
        out: &mut Vec<u8>,
    ) -> (usize, Run) {
        let len = data.len();
        let mut pos = from.min(len);
        // Start of the plain bytes not yet copied to `out`: they are copied in runs.
        let mut plain = pos;
        // Inside a run: where its covered bytes known so far end. `pos <= end` holds throughout.
        let mut run_end = run.map(|n| pos.saturating_add(n));
        loop {
            match run_end {
                None => {
                    let rest = data.get(pos..).unwrap_or_default();
                    let Some(skip) = rest.iter().position(|&b| self.first[usize::from(b)] != 0)
                    else {
                        pos = len;
                        break;
                    };
                    pos += skip;
                    match self.longest_at(rest.get(skip..).unwrap_or_default(), input) {
                        Match::Found(found) => {
                            out.extend_from_slice(data.get(plain..pos).unwrap_or_default());
                            out.extend_from_slice(MASK);
                            run_end = Some(pos.saturating_add(found));
                            pos += 1;
                        }
                        Match::None => pos += 1,
                        Match::NeedMore => break,
                    }
                }
                Some(end) => {
                    // Only an occurrence that reaches past `end` extends the run (one starting at
                    // `end` adjoins it): it starts after `end - longest`, at a byte whose longest
                    // value is long enough. The other positions cannot change anything and are
                    // skipped undecided.
                    pos = pos.max(end.saturating_add(1).saturating_sub(self.longest));
                    let stop = end.saturating_add(1).min(len);
                    let window = data.get(pos..stop).unwrap_or_default();
                    let gap = end.saturating_sub(pos);
                    match window
                        .iter()
                        .enumerate()
                        .position(|(i, &b)| self.reach[usize::from(b)] > gap.saturating_sub(i))
                    {
                        Some(skip) => {
                            pos += skip;
                            let text = data.get(pos..).unwrap_or_default();
                            match self.longest_at(text, input) {
                                Match::Found(found) => {
                                    run_end = Some(end.max(pos.saturating_add(found)));
                                    pos += 1;
                                }
                                Match::None if pos < end => pos += 1,
                                Match::None => {
                                    // Nothing starts at `end`: the run is over.
                                    run_end = None;
                                    plain = pos;
                                    pos += 1;
                                }
                                Match::NeedMore => break,
                            }
                        }
                        None if stop > end => {
                            // The byte at `end` exists and starts no value: the run is over.
                            run_end = None;
                            plain = end;
                            pos = end + 1;
                        }
                        None => {
                            // The data ends inside the run, or right at its end.
                            pos = stop;
                            break;
                        }
                    }
                }
            }
        }
        match run_end {
            None => {
                out.extend_from_slice(data.get(plain..pos).unwrap_or_default());
                (pos, None)
            }
            Some(end) => (pos, Some(end.saturating_sub(pos))),
        }
    }

    /// The longest value that `text` starts with.
    fn longest_at(&self, text: &[u8], input: Input) -> Match {
        let mut bytes = text.iter();
        let Some(&head) = bytes.next() else {
            return Match::None;
        };
        let mut node = self.first[usize::from(head)];
        let mut depth = 1;
        let mut found = 0;
        while let Some(current) = self.nodes.get(node).filter(|_| node != 0) {
            if current.end {
                found = depth;
            }
            if current.edges.is_empty() {
                break;
            }
            let Some(&byte) = bytes.next() else {
                if input == Input::Partial {
                    // A longer value may still follow, even if a shorter one was found.
                    return Match::NeedMore;
                }
                break;
            };
            match current.edges.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(i) => node = current.edges.get(i).map_or(0, |&(_, child)| child),
                Err(_) => break,
            }
            depth += 1;
        }
        if found > 0 {
            Match::Found(found)
        } else {
            Match::None
        }
    }
}

/// Never shows the values, only their shape.
impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("trie_nodes", &self.nodes.len())
            .field("longest", &self.longest)
            .field("pending", &self.held.len())
            .field("in_run", &self.run.is_some())
            .finish_non_exhaustive()
    }
}

/// Masks a complete text at once, with the same rules as [`Masker`].
pub fn mask_all(secrets: &[&[u8]], text: &[u8]) -> Vec<u8> {
    let masker = Masker::new(secrets);
    let mut out = Vec::with_capacity(text.len());
    masker.scan(text, 0, None, Input::Complete, &mut out);
    out
}

/// The byte strings masked for one configured secret: the secret itself and, when it has several
/// lines, each line long enough to be masked on its own.
fn values_to_mask(secret: &[u8]) -> impl Iterator<Item = &[u8]> {
    let lines = secret.contains(&b'\n').then(|| {
        secret
            .split(|&b| b == b'\n')
            .map(trim_cr)
            .filter(|line| line.len() >= MIN_LINE_LEN)
    });
    std::iter::once(secret)
        .filter(|s| !s.is_empty())
        .chain(lines.into_iter().flatten())
}

fn trim_cr(mut line: &[u8]) -> &[u8] {
    while let Some(rest) = line.strip_prefix(b"\r") {
        line = rest;
    }
    while let Some(rest) = line.strip_suffix(b"\r") {
        line = rest;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn mask(secrets: &[&str], text: &str) -> String {
        let secrets: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
        String::from_utf8_lossy(&mask_all(&secrets, text.as_bytes())).into_owned()
    }

    /// Streams `text` in the given chunk sizes (the rest in one last chunk), then finishes.
    fn stream(masker: &mut Masker, text: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = text;
        for &size in sizes {
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            masker.push_into(chunk, &mut out);
            rest = tail;
        }
        masker.push_into(rest, &mut out);
        masker.finish_into(&mut out);
        out
    }

    /// The union of all occurrence intervals by brute force, to check the trie against: marks
    /// every byte inside an occurrence of any value, then turns each maximal run of marked bytes
    /// into one `***`.
    fn reference(values: &[&[u8]], text: &[u8]) -> Vec<u8> {
        let mut covered = vec![false; text.len()];
        for start in 0..text.len() {
            for value in values.iter().filter(|v| !v.is_empty()) {
                if text[start..].starts_with(value) {
                    covered[start..start + value.len()].fill(true);
                }
            }
        }
        let mut out = Vec::new();
        for (i, &byte) in text.iter().enumerate() {
            if !covered[i] {
                out.push(byte);
            } else if i == 0 || !covered[i - 1] {
                out.extend_from_slice(MASK);
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_secret_is_masked_at_the_start_in_the_middle_and_at_the_end() {
        assert_eq!(mask(&["s3cr3t"], "s3cr3t and more"), "*** and more");
        assert_eq!(mask(&["s3cr3t"], "token=s3cr3t;"), "token=***;");
        assert_eq!(mask(&["s3cr3t"], "token=s3cr3t"), "token=***");
        assert_eq!(mask(&["s3cr3t"], "s3cr3t"), "***");
    }

    #[test]
    fn every_occurrence_of_a_repeated_secret_is_masked() {
        assert_eq!(
            mask(&["pass"], "pass, pass, again pass"),
            "***, ***, again ***"
        );
    }

    #[test]
    fn adjacent_occurrences_merge_into_one_mask() {
        assert_eq!(mask(&["abcd"], "abcdabcd"), "***");
        assert_eq!(mask(&["abcd"], "abcdabcdabcd!"), "***!");
        assert_eq!(mask(&["abcd", "wxyz"], "wxyzabcdwxyz"), "***");
        assert_eq!(mask(&["abcd", "cdef"], "xcdefabcd"), "x***");
    }

    #[test]
    fn occurrences_apart_by_one_byte_are_masked_apart() {
        assert_eq!(mask(&["abcd"], "abcd-abcd"), "***-***");
        assert_eq!(mask(&["abcd", "wxyz"], "abcd wxyz"), "*** ***");
    }

    #[test]
    fn overlapping_occurrences_are_masked_as_their_union() {
        assert_eq!(mask(&["abcd", "cdef"], "abcdef"), "***");
        assert_eq!(mask(&["abcd", "cdef"], "[abcdef]"), "[***]");
        assert_eq!(mask(&["cdef", "abcd"], "abcdef"), "***");
        // A chain of overlaps, each reaching a little further.
        assert_eq!(mask(&["abc", "cde", "efg"], "-abcdefg-"), "-***-");
        // Overlapping occurrences of one value.
        assert_eq!(mask(&["aa"], "aaaaa"), "***");
        assert_eq!(mask(&["aba"], "xababax"), "x***x");
    }

    #[test]
    fn an_occurrence_inside_another_shows_nothing_of_either() {
        // Prefix, suffix and middle of a longer value.
        assert_eq!(mask(&["abc", "abcdef"], "abcdef"), "***");
        assert_eq!(mask(&["def", "abcdef"], "abcdef"), "***");
        assert_eq!(mask(&["cd", "abcdef"], "xabcdefx"), "x***x");
        // The shorter value alone, and the longer one cut short.
        assert_eq!(mask(&["cd", "abcdef"], "xcdx"), "x***x");
        assert_eq!(mask(&["abcdef", "abc"], "abcdeX"), "***deX");
        assert_eq!(mask(&["bcd", "abcde"], "abcde"), "***");
        assert_eq!(mask(&["bcd", "abcde"], "abcdX"), "a***X");
    }

    #[test]
    fn a_multi_line_secret_is_masked_whole_and_line_by_line() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBg\n-----END KEY-----";
        assert_eq!(
            mask(&[key], &format!("key:\n{key}\ndone")),
            "key:\n***\ndone"
        );
        assert_eq!(
            mask(&[key], "> MIIEvQIBADANBg\n> -----END KEY-----\n"),
            "> ***\n> ***\n"
        );
    }

    #[test]
    fn short_lines_of_a_multi_line_secret_are_not_masked_on_their_own() {
        assert_eq!(
            mask(&["{\n\"k\": \"value\"\n}"], "{\n  \"k\": \"value\"\n}\n"),
            "{\n  ***\n}\n"
        );
    }

    #[test]
    fn lines_of_a_crlf_secret_are_masked_without_their_carriage_returns() {
        let secret = "first line\r\nsecond line\r\n";
        assert_eq!(mask(&[secret], "first line\nsecond line\n"), "***\n***\n");
        assert_eq!(mask(&[secret], "first line\r\nsecond line\r\n"), "***");
        assert_eq!(mask(&[secret], "second line\r\n"), "***\r\n");
    }

    #[test]
    fn binary_secrets_and_text_are_masked_bytewise() {
        let secret: &[u8] = &[0x00, 0xff, 0xfe, 0x80];
        let text = [0xff, 0x00, 0xff, 0xfe, 0x80, 0x00].as_slice();
        assert_eq!(mask_all(&[secret], text), [0xff, b'*', b'*', b'*', 0x00]);
        let mut masker = Masker::new([secret]);
        assert_eq!(
            stream(&mut masker, text, &[2, 1]),
            [0xff, b'*', b'*', b'*', 0x00]
        );
    }

    #[test]
    fn empty_secrets_are_ignored() {
        assert!(!Masker::new([""]).is_active());
        assert_eq!(mask(&["", "abcd"], "xabcdx"), "x***x");
    }

    #[test]
    fn short_secrets_are_masked_everywhere() {
        assert_eq!(mask(&["7"], "1776"), "1***6");
        assert_eq!(mask(&["7"], "17176"), "1***1***6");
    }

    #[test]
    fn without_secrets_output_is_the_input_and_nothing_is_held_back() {
        let mut masker = Masker::new(Vec::<Vec<u8>>::new());
        assert!(!masker.is_active());
        assert_eq!(masker.push(b"any bytes \x00\xff"), b"any bytes \x00\xff");
        assert_eq!(masker.pending(), 0);
        assert_eq!(masker.finish(), b"");
        assert_eq!(mask(&[], "text"), "text");
    }

    #[test]
    fn a_secret_split_across_chunks_is_held_back_then_masked() {
        let mut masker = Masker::new(["hunter2"]);
        assert_eq!(masker.push(b"pw: hun"), b"pw: ");
        assert_eq!(masker.pending(), 3);
        assert_eq!(masker.push(b"te"), b"");
        assert_eq!(masker.push(b"r2 ok"), b"*** ok");
        assert_eq!(masker.pending(), 0);
        assert_eq!(masker.finish(), b"");
    }

    #[test]
    fn a_false_start_is_released_once_the_next_chunk_decides() {
        let mut masker = Masker::new(["hunter2"]);
        assert_eq!(masker.push(b"hunt"), b"");
        assert_eq!(masker.push(b"ing"), b"hunting");
        assert_eq!(masker.push(b"hunte"), b"");
        assert_eq!(masker.finish(), b"hunte");
    }

    #[test]
    fn a_shorter_secret_waits_for_a_longer_one_that_may_follow() {
        let mut masker = Masker::new(["abc", "abcdef"]);
        assert_eq!(masker.push(b"abc"), b"");
        assert_eq!(masker.push(b"d"), b"");
        assert_eq!(masker.push(b"X"), b"***dX");
        assert_eq!(masker.push(b"abc"), b"");
        assert_eq!(masker.finish(), b"***");
    }

    #[test]
    fn an_overlap_split_across_chunks_is_masked_as_one() {
        let mut masker = Masker::new(["abcd", "cdef"]);
        assert_eq!(masker.push(b"x ab"), b"x ");
        assert_eq!(masker.push(b"cd"), b"***");
        // `cd` may be the start of `cdef`: held, although already covered.
        assert_eq!(masker.pending(), 2);
        assert_eq!(masker.push(b"e"), b"");
        assert_eq!(masker.push(b"f y"), b" y");
        assert_eq!(masker.pending(), 0);
        assert_eq!(masker.finish(), b"");

        let mut masker = Masker::new(["abcd", "cdef"]);
        assert_eq!(masker.push(b"abcdeX"), b"***eX");
    }

    #[test]
    fn a_run_left_open_at_a_chunk_end_merges_with_an_adjacent_occurrence() {
        let mut masker = Masker::new(["abcd"]);
        assert_eq!(masker.push(b"<abcd"), b"<***");
        // Nothing is held: the run is open, not its bytes.
        assert_eq!(masker.pending(), 0);
        assert_eq!(masker.push(b"abcd"), b"");
        assert_eq!(masker.push(b"ab"), b"");
        assert_eq!(masker.push(b"cd>"), b">");
        assert_eq!(masker.push(b"abcd"), b"***");
        assert_eq!(masker.finish(), b"");
        // After `finish` a new stream starts: its first occurrence gets its own mask.
        assert_eq!(masker.push(b"abcd"), b"***");
        assert_eq!(masker.finish(), b"");
    }

    #[test]
    fn a_run_extended_from_held_bytes_needs_no_second_mask() {
        let mut masker = Masker::new(["abcdef", "efgh"]);
        assert_eq!(masker.push(b"abcdefg"), b"***");
        assert_eq!(masker.pending(), 3);
        assert_eq!(masker.push(b"h ok"), b" ok");
        assert_eq!(masker.finish(), b"");

        let mut masker = Masker::new(["abcdef", "efgh"]);
        assert_eq!(masker.push(b"abcdefg"), b"***");
        assert_eq!(masker.finish(), b"g");
    }

    #[test]
    fn debug_output_never_shows_the_secrets() {
        let masker = Masker::new(["hunter2"]);
        assert!(!format!("{masker:?}").contains("hunter2"));
    }

    fn secret_byte() -> impl Strategy<Value = u8> {
        prop_oneof![4 => Just(b'a'), 4 => Just(b'b'), 1 => Just(b'\r'), 1 => Just(b'\n')]
    }

    fn text_byte() -> impl Strategy<Value = u8> {
        prop::sample::select(vec![b'a', b'b', b'c', b'*', b'\r', b'\n', 0x00, 0xff])
    }

    fn secrets() -> impl Strategy<Value = Vec<Vec<u8>>> {
        vec(
            prop_oneof![vec(secret_byte(), 1..=4), vec(secret_byte(), 1..=40)],
            1..=4,
        )
    }

    /// A piece of text: random bytes, a whole secret, or the start of one.
    #[derive(Debug, Clone)]
    enum Piece {
        Bytes(Vec<u8>),
        Secret(Index),
        Prefix(Index, Index),
    }

    fn pieces() -> impl Strategy<Value = Vec<Piece>> {
        let piece = prop_oneof![
            vec(text_byte(), 0..6).prop_map(Piece::Bytes),
            any::<Index>().prop_map(Piece::Secret),
            (any::<Index>(), any::<Index>()).prop_map(|(s, n)| Piece::Prefix(s, n)),
        ];
        vec(piece, 0..24)
    }

    fn build_text(secrets: &[Vec<u8>], pieces: &[Piece]) -> Vec<u8> {
        let mut text = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Bytes(bytes) => text.extend_from_slice(bytes),
                Piece::Secret(s) => text.extend_from_slice(s.get::<Vec<u8>>(secrets)),
                Piece::Prefix(s, n) => {
                    let secret = s.get::<Vec<u8>>(secrets);
                    text.extend_from_slice(&secret[..n.index(secret.len())]);
                }
            }
        }
        text
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn streaming_in_any_chunks_equals_masking_at_once(
            secrets in secrets(),
            pieces in pieces(),
            cuts in vec(any::<Index>(), 0..12),
        ) {
            let text = build_text(&secrets, &pieces);
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let whole = mask_all(&refs, &text);

            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).collect();
            cuts.sort_unstable();
            let sizes: Vec<usize> = cuts.iter().scan(0, |at, &cut| Some(cut - std::mem::replace(at, cut))).collect();
            let mut masker = Masker::new(&secrets);
            prop_assert_eq!(&stream(&mut masker, &text, &sizes), &whole);
            prop_assert_eq!(masker.pending(), 0);

            let mut masker = Masker::new(&secrets);
            prop_assert_eq!(&stream(&mut masker, &text, &vec![1; text.len()]), &whole);
        }

        #[test]
        fn masked_output_contains_no_secret(secrets in secrets(), pieces in pieces()) {
            let text = build_text(&secrets, &pieces);
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let out = mask_all(&refs, &text);
            for secret in &secrets {
                prop_assert!(!contains(&out, secret), "{:?} in {:?}", secret, out);
            }
        }

        #[test]
        fn held_back_bytes_never_exceed_the_longest_secret_minus_one(
            secrets in secrets(),
            pieces in pieces(),
            sizes in vec(0usize..50, 0..24),
        ) {
            let text = build_text(&secrets, &pieces);
            let longest = secrets.iter().map(Vec::len).max().unwrap_or(0);
            let mut masker = Masker::new(&secrets);
            let mut rest = text.as_slice();
            for size in sizes {
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                masker.push(chunk);
                prop_assert!(masker.pending() < longest, "{} held, longest {}", masker.pending(), longest);
                rest = tail;
            }
        }

        #[test]
        fn masking_matches_a_brute_force_union_of_occurrences(
            secrets in secrets(),
            pieces in pieces(),
        ) {
            let text = build_text(&secrets, &pieces);
            let refs: Vec<&[u8]> = secrets.iter().map(Vec::as_slice).collect();
            let values: Vec<&[u8]> = refs.iter().flat_map(|s| values_to_mask(s)).collect();
            prop_assert_eq!(mask_all(&refs, &text), reference(&values, &text));
        }
    }
}
