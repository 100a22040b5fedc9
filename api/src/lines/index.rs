//! The pure part of logs by line: the line index, pages of lines cut from bytes, and search
//! over bytes with case and colour codes folded away. No I/O: [`super::LineCache`] feeds it.

/// Every how many lines the index keeps an offset.
pub const STRIDE: u64 = 128;
/// The longest line served whole, in bytes.
pub const MAX_LINE: usize = 16 * 1024;
/// Line starts of one log, every [`STRIDE`]th line.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// Bytes indexed so far.
    indexed: u64,
    /// Newlines among them.
    newlines: u64,
    /// The offset after the last newline: where the last (maybe partial) line starts.
    last_start: u64,
    /// `checkpoints[k]` is where line `k * STRIDE` (from 0) starts.
    checkpoints: Vec<u64>,
}

impl Default for LineIndex {
    fn default() -> LineIndex {
        LineIndex {
            indexed: 0,
            newlines: 0,
            last_start: 0,
            checkpoints: vec![0],
        }
    }
}

impl LineIndex {
    /// Indexes `bytes`, the next bytes of the log.
    pub fn extend(&mut self, bytes: &[u8]) {
        for pos in memchr::memchr_iter(b'\n', bytes) {
            self.newlines += 1;
            let start = self.indexed + pos as u64 + 1;
            self.last_start = start;
            if self.newlines.is_multiple_of(STRIDE) {
                self.checkpoints.push(start);
            }
        }
        self.indexed += bytes.len() as u64;
    }

    /// The bytes indexed.
    pub fn len(&self) -> u64 {
        self.indexed
    }

    /// Whether nothing is indexed yet.
    pub fn is_empty(&self) -> bool {
        self.indexed == 0
    }

    /// Whether the last line has no newline yet.
    pub fn open(&self) -> bool {
        self.indexed > self.last_start
    }

    /// The number of lines, the last one counted even without its newline.
    pub fn lines(&self) -> u64 {
        self.newlines + u64::from(self.indexed > self.last_start)
    }

    /// The nearest indexed line at or before `line` (from 0), and its offset.
    pub fn checkpoint(&self, line: u64) -> (u64, u64) {
        let k = (line / STRIDE).min(self.checkpoints.len() as u64 - 1);
        (k * STRIDE, self.checkpoints[k as usize])
    }

    /// The nearest indexed line whose start is at or before byte `offset`, and its start.
    pub fn checkpoint_before(&self, offset: u64) -> (u64, u64) {
        let k = self.checkpoints.partition_point(|&start| start <= offset) - 1;
        (k as u64 * STRIDE, self.checkpoints[k])
    }
}

/// Lines of `bytes` after skipping `skip` of them, at most `count`, each without its newline
/// (and a `\r` before it), cut at [`MAX_LINE`] bytes, invalid UTF-8 replaced. Also answers
/// whether the bytes ended inside the lines wanted (more must be read).
pub fn take_lines(bytes: &[u8], skip: u64, count: usize) -> (Vec<String>, bool) {
    let mut lines = Vec::with_capacity(count.min(4096));
    let mut rest = bytes;
    let mut skipped = 0;
    while skipped < skip {
        match memchr::memchr(b'\n', rest) {
            Some(end) => {
                rest = &rest[end + 1..];
                skipped += 1;
            }
            None => return (lines, true),
        }
    }
    while lines.len() < count && !rest.is_empty() {
        let (line, next, whole) = match memchr::memchr(b'\n', rest) {
            Some(end) => (&rest[..end], &rest[end + 1..], true),
            None => (rest, &rest[rest.len()..], false),
        };
        if !whole {
            return (lines, true);
        }
        lines.push(text_of(line));
        rest = next;
    }
    (lines, false)
}

/// A line's text for the viewer.
pub(super) fn text_of(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let cut = &line[..line.len().min(MAX_LINE)];
    String::from_utf8_lossy(cut).into_owned()
}

/// `bytes` with ASCII letters lowercased and ANSI escape sequences left out; newlines kept.
pub fn fold(bytes: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != 0x1b {
            out.push(b.to_ascii_lowercase());
            i += 1;
            continue;
        }
        i += 1;
        match bytes.get(i) {
            // CSI: parameters and intermediates, then one final byte.
            Some(b'[') => {
                i += 1;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) && bytes[i] != b'\n' {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            // OSC: up to BEL or ST.
            Some(b']') => {
                while i < bytes.len() && bytes[i] != 0x07 && bytes[i] != b'\n' {
                    if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'\\') {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                if i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            Some(b'\n') | None => {}
            Some(_) => i += 1,
        }
    }
}

/// Lines (from 1, counting from line `first`) of `folded` that contain `needle`, at most
/// `limit` in `found`; answers the number of lines `folded` holds.
pub(super) fn matches(
    folded: &[u8],
    needle: &[u8],
    first: u64,
    limit: usize,
    found: &mut Vec<u64>,
) -> u64 {
    let finder = memchr::memmem::Finder::new(needle);
    let mut line = first;
    let mut pos = 0;
    while found.len() < limit {
        let Some(at) = finder.find(&folded[pos..]) else {
            break;
        };
        let at = pos + at;
        line += memchr::memchr_iter(b'\n', &folded[pos..at]).count() as u64;
        found.push(line + 1);
        // One match per line: go on after the line's end.
        match memchr::memchr(b'\n', &folded[at..]) {
            Some(end) => {
                pos = at + end + 1;
                line += 1;
            }
            None => {
                pos = folded.len();
                break;
            }
        }
    }
    line + memchr::memchr_iter(b'\n', &folded[pos..]).count() as u64
}

/// The bytes the first `lines` lines of `bytes` take, with their newlines.
pub(super) fn consumed(bytes: &[u8], lines: u64) -> u64 {
    let mut end = 0;
    for (n, pos) in memchr::memchr_iter(b'\n', bytes).enumerate() {
        if n as u64 == lines {
            break;
        }
        end = pos + 1;
    }
    end as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: u64) -> Vec<u8> {
        (1..=lines)
            .flat_map(|n| format!("line {n}\n").into_bytes())
            .collect()
    }

    #[test]
    fn the_index_counts_lines_and_keeps_every_strideth_start() {
        let bytes = log(1000);
        let mut index = LineIndex::default();
        for chunk in bytes.chunks(777) {
            index.extend(chunk);
        }
        assert_eq!(index.lines(), 1000);
        let (line, start) = index.checkpoint(300);
        assert_eq!(line, 256);
        let text = String::from_utf8_lossy(&bytes[start as usize..]);
        assert!(text.starts_with("line 257\n"), "{}", &text[..20]);
        index.extend(b"partial");
        assert_eq!(index.lines(), 1001, "a last line without newline counts");
        assert_eq!(index.checkpoint_before(start + 3), (256, start));
    }

    #[test]
    fn pages_skip_to_the_wanted_line_and_cut_long_lines() {
        let bytes = log(10);
        let (lines, more) = take_lines(&bytes, 3, 2);
        assert_eq!(lines, ["line 4", "line 5"]);
        assert!(!more);
        let (lines, more) = take_lines(b"a\r\nb", 0, 5);
        assert_eq!(lines, ["a"]);
        assert!(more, "the last line is not whole");
        let long = vec![b'x'; MAX_LINE + 10];
        let (lines, _) = take_lines(&[long.as_slice(), b"\n"].concat(), 0, 1);
        assert_eq!(lines[0].len(), MAX_LINE);
    }

    #[test]
    fn folding_lowercases_and_drops_escape_sequences() {
        let mut out = Vec::new();
        fold(
            b"\x1b[1;31mERR\x1b[0mor \x1b]0;title\x07Done\n\x1b[",
            &mut out,
        );
        assert_eq!(out, b"error done\n");
    }

    #[test]
    fn matches_count_lines_across_calls_and_once_per_line() {
        let mut found = Vec::new();
        let lines = matches(b"a x x\nb\nx\n", b"x", 0, 10, &mut found);
        assert_eq!(found, [1, 3]);
        assert_eq!(lines, 3);
        let lines = matches(b"y\nx", b"x", lines, 10, &mut found);
        assert_eq!(found, [1, 3, 5]);
        assert_eq!(lines, 4);
        let mut few = Vec::new();
        matches(b"x\nx\nx\n", b"x", 0, 2, &mut few);
        assert_eq!(few, [1, 2]);
    }

    #[test]
    fn consumed_counts_whole_lines() {
        assert_eq!(consumed(b"ab\ncd\nef", 0), 0);
        assert_eq!(consumed(b"ab\ncd\nef", 2), 6);
        assert_eq!(consumed(b"ab\ncd\nef", 3), 6);
    }
}
