//! Logs by line: a job's log served by line numbers, and searched, whatever its size.
//!
//! A log is stored as bytes ([`LogStore`]); the console shows lines. [`LineIndex`] maps line
//! numbers to byte offsets without holding an offset per line: it keeps the offset of every
//! [`STRIDE`]th line (about 100 KB for a 1.5M-line log) and reads forward from the nearest one.
//! Logs only grow, so an index is extended with the bytes appended since it was last used,
//! never rebuilt. [`LineCache`] keeps the indexes of the logs read lately.
//!
//! ## Guarantees
//! - Line numbers start at 1; a last line without its newline is a line (it may still grow).
//! - A page of lines and its `total` come from one state of the index: the lines are those of
//!   the first `length` bytes of the log, the `length` a follower resumes from.
//! - A line longer than [`MAX_LINE`] bytes is cut there (the byte API has it whole).
//! - Search folds ASCII case and skips ANSI escape sequences: it finds what the viewer shows.
//!
//! ## Assumptions
//! A log's bytes never change once written ([`LogStore`]'s own guarantee).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hodei_domain::ids::JobId;
use hodei_domain::ports::{LogError, LogStore};

mod index;

pub use index::{LineIndex, MAX_LINE, STRIDE, fold, take_lines};
use index::{consumed, matches, text_of};

/// How many bytes are read at once while indexing or searching.
const CHUNK: u64 = 4 * 1024 * 1024;
/// How many logs' indexes are kept.
const CACHED: usize = 256;

/// A page of a log's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The first line's number, from 1.
    pub from: u64,
    pub lines: Vec<String>,
    /// How many lines the log has (in its first `length` bytes).
    pub total: u64,
    /// The bytes the lines were counted in: where a follower resumes.
    pub length: u64,
    /// Whether the last line has no newline yet: what follows `length` continues it.
    pub open: bool,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The numbers of the lines that contain the text, from 1, in order.
    pub lines: Vec<u64>,
    /// Whether more lines matched than the limit.
    pub truncated: bool,
    /// The bytes searched.
    pub length: u64,
}

/// A log's index, shared by the requests that read that log, with when it was last used.
type Entry = (u64, Arc<tokio::sync::Mutex<LineIndex>>);

/// The line indexes of the logs read lately, shared by every request.
#[derive(Default)]
pub struct LineCache {
    indexes: Mutex<HashMap<JobId, Entry>>,
    uses: std::sync::atomic::AtomicU64,
}

impl LineCache {
    /// The index of `job`'s log, extended to the log's current length.
    async fn index(
        &self,
        logs: &dyn LogStore,
        job: JobId,
    ) -> Result<tokio::sync::OwnedMutexGuard<LineIndex>, LogError> {
        let entry = {
            let tick = self.uses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut indexes = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
            if indexes.len() >= CACHED && !indexes.contains_key(&job) {
                let oldest = indexes
                    .iter()
                    .min_by_key(|(_, (used, _))| *used)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    indexes.remove(&oldest);
                }
            }
            let entry = indexes.entry(job).or_default();
            entry.0 = tick;
            entry.1.clone()
        };
        let mut index = entry.lock_owned().await;
        let length = logs.len(job)?;
        while index.len() < length {
            let to = length.min(index.len() + CHUNK);
            let bytes = logs.read(job, index.len(), Some(to)).await?;
            if bytes.is_empty() {
                break;
            }
            index.extend(&bytes);
        }
        Ok(index)
    }

    /// Lines `from` (from 1) to `from + count - 1` of `job`'s log, as far as they exist.
    pub async fn page(
        &self,
        logs: &dyn LogStore,
        job: JobId,
        from: u64,
        count: usize,
    ) -> Result<Page, LogError> {
        let index = self.index(logs, job).await?;
        let (total, length, open) = (index.lines(), index.len(), index.open());
        let wanted = from.max(1) - 1;
        if wanted >= total {
            return Ok(Page {
                from: wanted + 1,
                lines: Vec::new(),
                total,
                length,
                open,
            });
        }
        let (line, start) = index.checkpoint(wanted);
        drop(index);
        let skip = wanted - line;
        let mut buf = Vec::new();
        let (mut offset, mut size) = (start, 64 * 1024);
        let lines = loop {
            let to = length.min(offset + size);
            if to > offset {
                buf.extend(logs.read(job, offset, Some(to)).await?);
                offset = to;
            }
            let (mut got, more) = take_lines(&buf, skip, count);
            if !more || offset >= length {
                let newlines = memchr::memchr_iter(b'\n', &buf).count() as u64;
                if more && got.len() < count && newlines >= skip {
                    // The last line has no newline yet: it is a line all the same.
                    let rest = &buf[consumed(&buf, skip + got.len() as u64) as usize..];
                    if !rest.is_empty() {
                        got.push(text_of(rest));
                    }
                }
                break got;
            }
            size *= 2;
        };
        Ok(Page {
            from: wanted + 1,
            lines,
            total,
            length,
            open,
        })
    }

    /// The lines of `job`'s log that contain `text`, ASCII case folded, at most `limit`.
    pub async fn search(
        &self,
        logs: &dyn LogStore,
        job: JobId,
        text: &str,
        limit: usize,
    ) -> Result<Found, LogError> {
        let length = self.index(logs, job).await?.len();
        let mut needle = Vec::new();
        fold(text.as_bytes(), &mut needle);
        let mut found = Vec::new();
        let mut folded = Vec::new();
        let (mut offset, mut line) = (0, 0);
        while offset < length && found.len() < limit && !needle.is_empty() {
            let to = length.min(offset + CHUNK);
            let bytes = logs.read(job, offset, Some(to)).await?;
            // Whole lines only, so that no match is split between two reads.
            let cut = match memchr::memrchr(b'\n', &bytes) {
                Some(end) if to < length => end + 1,
                _ => bytes.len(),
            };
            fold(&bytes[..cut], &mut folded);
            line = matches(&folded, &needle, line, limit + 1, &mut found);
            offset += cut as u64;
            if cut == 0 {
                break;
            }
        }
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok(Found {
            lines: found,
            truncated,
            length,
        })
    }

    /// The number (from 1) of the line that holds byte `offset` of `job`'s log.
    pub async fn line_at(
        &self,
        logs: &dyn LogStore,
        job: JobId,
        offset: u64,
    ) -> Result<u64, LogError> {
        let index = self.index(logs, job).await?;
        let offset = offset.min(index.len());
        let (line, start) = index.checkpoint_before(offset);
        drop(index);
        let bytes = logs.read(job, start, Some(offset)).await?;
        Ok(line + memchr::memchr_iter(b'\n', &bytes).count() as u64 + 1)
    }
}
