//! Following a container's log through `pods/log` across dropped streams, without a gap or a
//! duplicate: the pure half.
//!
//! The log is read with `timestamps=true`: the API server prefixes each line with the time the
//! container runtime read it (RFC 3339 with nanoseconds) and a space. A stream that drops is
//! opened again with `sinceTime` at the whole second of the last line taken (the API takes
//! seconds), so it repeats what came from that second on; [`LogCursor`] skips every line older
//! than the last one taken, and as many lines of that very time as were taken, and hands on the
//! rest. Lines are taken whole: a line cut by the drop is dropped with it and comes again.
//!
//! Hodei's entrypoint ends every step's output with a newline of its own (the marker line),
//! so the output of a step is always whole lines in the log.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

/// Where a followed log stands: the time of the last line taken and how many lines of exactly
/// that time were taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogCursor {
    /// The time of the last line taken, and how many lines of that time were taken.
    last: Option<(DateTime<Utc>, u64)>,
    /// After a reopen, until a new line comes: the lines the new stream repeats (those older
    /// than this time, and this many of this time).
    replay: Option<(DateTime<Utc>, u64)>,
    /// The bytes of a line not ended yet in the current stream.
    partial: Vec<u8>,
}

/// A line of a timestamped log that does not start with a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a line of the log has no timestamp: {line:?}")]
pub struct NoTimestamp {
    pub line: String,
}

impl LogCursor {
    pub fn new() -> LogCursor {
        LogCursor::default()
    }

    /// The `sinceTime` to open the next stream with: the whole second of the last line taken;
    /// `None` before any (from the beginning).
    pub fn since_time(&self) -> Option<String> {
        self.last.map(|(time, _)| {
            time.with_nanosecond(0)
                .unwrap_or(time)
                .to_rfc3339_opts(SecondsFormat::Secs, true)
        })
    }

    /// A new stream begins, opened with [`since_time`](LogCursor::since_time): what is left
    /// of a line of the previous one is dropped (the new stream sends it again, whole), and
    /// the lines already taken that the new one repeats will be skipped.
    pub fn reopen(&mut self) {
        self.partial.clear();
        self.replay = self.last;
    }

    /// Takes a chunk of the stream: the content of the lines it completes that were not taken
    /// before, each with its newline, without their timestamps.
    ///
    /// # Errors
    /// [`NoTimestamp`] for a line that does not start with a time: the stream is not a
    /// timestamped log.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, NoTimestamp> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..=end]);
            rest = &rest[end + 1..];
            let line = std::mem::take(&mut self.partial);
            self.take_line(&line, &mut out)?;
        }
        self.partial.extend_from_slice(rest);
        Ok(out)
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<(), NoTimestamp> {
        let no_timestamp = || NoTimestamp {
            line: String::from_utf8_lossy(line).into_owned(),
        };
        let space = line
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(no_timestamp)?;
        let time = std::str::from_utf8(&line[..space])
            .ok()
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .ok_or_else(no_timestamp)?
            .with_timezone(&Utc);
        if let Some((until, repeated)) = &mut self.replay {
            if time < *until {
                return Ok(());
            }
            if time == *until && *repeated > 0 {
                *repeated -= 1;
                return Ok(());
            }
            self.replay = None;
        }
        match &mut self.last {
            Some((last, taken)) if *last == time => *taken += 1,
            // A container's log is stamped as the runtime reads it: times do not go back. If
            // one did, the cursor stays at the later time.
            Some((last, _)) if *last > time => {}
            _ => self.last = Some((time, 1)),
        }
        out.extend_from_slice(&line[space + 1..]);
        Ok(())
    }
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.last {
            Some((time, n)) => write!(f, "{n} line(s) at {}", time.to_rfc3339()),
            None => f.write_str("the beginning"),
        }
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
