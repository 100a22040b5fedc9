//! The layout of a job's log on disk, and the blocking file operations on it.
//!
//! ```text
//! <dir>/job-7/00000000000000000000.log   bytes [0, 8 MiB)
//!             00000000000008388608.log   bytes [8 MiB, 16 MiB)
//!             00000000000016777216.log   bytes [16 MiB, ...): the chunk being written
//! ```
//!
//! A chunk file is named by the offset of its first byte (20 decimal digits, so names sort as
//! numbers), and chunks follow each other without gap or overlap: the log is the chunks'
//! concatenation, and the file sizes are the truth. A chunk is at most the chunk size, which may
//! differ between two lives of the store: readers go by the names, never by the size.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use hodei_domain::ids::JobId;

/// The directory of a job's log.
pub(super) fn job_dir(root: &Path, job: JobId) -> PathBuf {
    root.join(job.to_string())
}

/// The file name of the chunk that starts at `start`.
pub(super) fn chunk_name(start: u64) -> String {
    format!("{start:020}.log")
}

/// The start offset of a chunk file name, or `None` for any other name.
pub(super) fn parse_chunk_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The chunks of a log directory, by start offset; none if the directory does not exist.
pub(super) fn chunks(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut chunks = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(start) = entry.file_name().to_str().and_then(parse_chunk_name) {
            chunks.push((start, entry.path()));
        }
    }
    chunks.sort_unstable();
    Ok(chunks)
}

/// The length of the log in `dir` after a restart: the chunks from offset 0 on, as long as each
/// starts where the previous one ends. Chunks after a gap (left by a crash: a later chunk
/// persisted, an earlier one lost its tail) are removed, so the log is a prefix of what was
/// appended.
pub(super) fn recover(dir: &Path) -> io::Result<u64> {
    let mut len = 0;
    let mut chunks = chunks(dir)?.into_iter();
    for (start, path) in chunks.by_ref() {
        let meta = fs::metadata(&path)?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a file",
                path.display()
            )));
        }
        if start != len {
            tracing::warn!(
                chunk = %path.display(),
                expected = len,
                "Log chunk does not follow the previous one; the log is cut there."
            );
            fs::remove_file(&path)?;
            break;
        }
        len += meta.len();
    }
    for (_, path) in chunks {
        fs::remove_file(&path)?;
    }
    Ok(len)
}

/// The last chunk of `dir`: its start and its size.
pub(super) fn last_chunk(dir: &Path) -> io::Result<Option<(u64, u64)>> {
    match chunks(dir)?.pop() {
        Some((start, path)) => Ok(Some((start, fs::metadata(path)?.len()))),
        None => Ok(None),
    }
}

/// The bytes `[from, end)` of the log in `dir`, which must all be written.
pub(super) fn read_range(dir: &Path, from: u64, end: u64) -> io::Result<Vec<u8>> {
    let chunks = chunks(dir)?;
    let capacity = usize::try_from(end.saturating_sub(from)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    let mut at = from;
    for (i, (start, path)) in chunks.iter().enumerate() {
        let next = chunks.get(i + 1).map_or(u64::MAX, |(next, _)| *next);
        if at >= end {
            break;
        }
        if next <= at {
            continue;
        }
        if *start > at {
            break; // a gap: reported below
        }
        let until = end.min(next);
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(at - start))?;
        let before = out.len();
        file.take(until - at).read_to_end(&mut out)?;
        at += (out.len() - before) as u64;
        if at < until {
            break; // a short chunk: reported below
        }
    }
    if at < end {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("bytes {at}..{end} are missing from {}", dir.display()),
        ));
    }
    Ok(out)
}

/// Makes the entries of a directory (new files, new subdirectories) durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_sort_as_their_offsets() {
        assert_eq!(chunk_name(0), "00000000000000000000.log");
        assert_eq!(chunk_name(8_388_608), "00000000000008388608.log");
        assert_eq!(chunk_name(u64::MAX).len(), 24);
        for start in [0, 1, 8_388_608, u64::MAX] {
            assert_eq!(parse_chunk_name(&chunk_name(start)), Some(start));
        }
        for name in [
            "0.log",
            "00000000000000000000.txt",
            "0000000000000000000x.log",
            ".log",
        ] {
            assert_eq!(parse_chunk_name(name), None, "{name}");
        }
        assert!(chunk_name(9) < chunk_name(10));
    }

    #[test]
    fn recovery_keeps_the_contiguous_prefix_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let write = |start: u64, bytes: &[u8]| fs::write(dir.path().join(chunk_name(start)), bytes);
        write(0, b"abcd").unwrap();
        write(4, b"ef").unwrap(); // a short chunk: the crash cut its tail
        write(8, b"ijkl").unwrap(); // starts after a gap
        write(12, b"mn").unwrap();
        fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        assert_eq!(recover(dir.path()).unwrap(), 6);
        let left: Vec<u64> = chunks(dir.path()).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(left, [0, 4]);
        assert_eq!(read_range(dir.path(), 2, 6).unwrap(), b"cdef");
        assert_eq!(last_chunk(dir.path()).unwrap(), Some((4, 2)));
        let missing = read_range(dir.path(), 5, 7).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_missing_directory_is_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("job-1");
        assert_eq!(recover(&absent).unwrap(), 0);
        assert_eq!(last_chunk(&absent).unwrap(), None);
        assert_eq!(read_range(&absent, 0, 0).unwrap(), b"");
    }
}
