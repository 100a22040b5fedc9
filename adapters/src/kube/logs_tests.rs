//! A pod's log followed across dropped streams: served here as the API server serves it
//! (`timestamps=true`, `sinceTime` in whole seconds), cut anywhere, opened again.

use proptest::prelude::*;

use super::*;

/// A line of the log: its time (nanoseconds after a fixed second) and its content.
type Line = (i64, Vec<u8>);

fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_796_000_000, 0).expect("time") + chrono::Duration::nanoseconds(nanos)
}

/// What the API server sends for `since` (RFC 3339, whole seconds): every line from that
/// second on, each prefixed with its time in RFC 3339 with nanoseconds, trailing zeros cut.
fn serve(lines: &[Line], since: Option<&str>) -> Vec<u8> {
    let since = since.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .expect("since")
            .with_timezone(&Utc)
    });
    let mut out = Vec::new();
    for (nanos, content) in lines {
        let at = time(*nanos);
        if since.is_some_and(|since| at < since) {
            continue;
        }
        out.extend(at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into_bytes());
        out.push(b' ');
        out.extend(content);
        out.push(b'\n');
    }
    out
}

/// Follows the log, dropping each stream after `drops[i]` bytes; what the cursor handed on.
fn follow(lines: &[Line], drops: &[usize]) -> Vec<u8> {
    let mut cursor = LogCursor::new();
    let mut out = Vec::new();
    let mut drops = drops.iter();
    loop {
        let stream = serve(lines, cursor.since_time().as_deref());
        let cut = drops
            .next()
            .map_or(stream.len(), |d| (*d).min(stream.len()));
        // Delivered in two chunks, cut in the middle too.
        let (a, b) = stream[..cut].split_at(cut / 2);
        out.extend(cursor.feed(a).expect("a timestamped log"));
        out.extend(cursor.feed(b).expect("a timestamped log"));
        if cut == stream.len() {
            return out;
        }
        cursor.reopen();
    }
}

fn whole(lines: &[Line]) -> Vec<u8> {
    lines
        .iter()
        .flat_map(|(_, content)| content.iter().copied().chain([b'\n']))
        .collect()
}

#[test]
fn a_stream_dropped_mid_line_resumes_with_the_whole_line_once() {
    let lines: Vec<Line> = vec![
        (0, b"one".to_vec()),
        (5, b"two".to_vec()),
        (5, b"two again, same time".to_vec()),
        (1_000_000_000, b"next second".to_vec()),
        (1_000_000_000, b"same".to_vec()),
        (2_500_000_000, b"last".to_vec()),
    ];
    let full = serve(&lines, None);
    for cut in 0..full.len() {
        assert_eq!(
            follow(&lines, &[cut, cut / 3]),
            whole(&lines),
            "dropped at {cut}"
        );
    }
}

#[test]
fn the_next_stream_starts_at_the_second_of_the_last_line() {
    let mut cursor = LogCursor::new();
    assert_eq!(cursor.since_time(), None);
    let lines = [(1_250_000_000, b"x".to_vec())];
    cursor.feed(&serve(&lines, None)).expect("log");
    assert_eq!(cursor.since_time().as_deref(), Some("2026-11-30T00:53:21Z"));
}

#[test]
fn a_line_without_a_timestamp_is_an_error() {
    let mut cursor = LogCursor::new();
    let err = cursor.feed(b"plain output\n").expect_err("refused");
    assert_eq!(err.line, "plain output\n");
}

proptest! {
    #[test]
    fn any_log_dropped_anywhere_is_followed_without_gap_or_duplicate(
        steps in proptest::collection::vec((0..3i64, proptest::collection::vec(any::<u8>(), 0..12)), 0..40),
        drops in proptest::collection::vec(0..600usize, 0..6),
    ) {
        // Times that stay put or move on by a few nanoseconds or by seconds.
        let mut now = 0;
        let lines: Vec<Line> = steps
            .into_iter()
            .map(|(jump, content)| {
                now += [0, 7, 900_000_000][usize::try_from(jump).expect("0..3")];
                let content = content.into_iter().map(|b| if b == b'\n' { b'.' } else { b }).collect();
                (now, content)
            })
            .collect();
        prop_assert_eq!(follow(&lines, &drops), whole(&lines));
    }
}
