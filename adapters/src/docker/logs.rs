//! A container's output, from the engine's log of it to an [`OutputSink`].
//!
//! Step containers write stdout and stderr into one pipe (see `convert::ENTRYPOINT`), so the
//! engine's stdout stream holds both in the order they were written; the follower still takes
//! both streams of the engine's multiplexed framing (the entrypoint's own errors come on
//! stderr), in the order the engine sends them. The engine keeps the whole log (json-file
//! driver) until the container is removed, so following from byte 0 after `start` loses
//! nothing, and a re-attach can resume at any byte offset by skipping what was delivered.
//!
//! A follow of the engine's log ends when the container stops, and Docker 20.10 ends it even
//! when it has not sent the whole log yet (a 1.3 MB output lost its last 480 KB here). So once
//! the follow ends, a second read of the log delivers what lies past the bytes already
//! delivered: the step's output is whole, at the cost of reading the log once more.

use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use hodei_domain::ports::OutputSink;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::error::DockerError;

/// Where a follower stands: `None` while it runs, then the total length of the container's
/// output (bytes skipped included) or why it broke off.
pub type Progress = watch::Receiver<Option<Result<u64, String>>>;

/// A task delivering a container's output to a sink until the container stops.
pub struct Follower {
    pub progress: Progress,
    pub task: JoinHandle<()>,
}

/// Follows `container`'s output from byte `from` to its end, into `sink`.
pub fn follow(docker: Docker, container: String, from: u64, sink: Arc<dyn OutputSink>) -> Follower {
    let (tx, progress) = watch::channel(None);
    let task = tokio::spawn(async move {
        let result = deliver(&docker, &container, from, sink.as_ref()).await;
        if let Err(err) = &result {
            tracing::warn!(container = %container, error = %err, "Lost a container's output.");
        }
        let _ = tx.send(Some(result.map_err(|err| err.to_string())));
    });
    Follower { progress, task }
}

async fn deliver(
    docker: &Docker,
    container: &str,
    from: u64,
    sink: &dyn OutputSink,
) -> Result<u64, DockerError> {
    let followed = copy(docker, container, Pass::Follow, from, sink).await?;
    // The engine (seen with 20.10) ends a follow when the container stops, even when the
    // reader has not caught up with the log yet; by then the log is complete: read the rest.
    copy(docker, container, Pass::Rest, from.max(followed), sink).await
}

/// How a pass over a container's log reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Until the container stops.
    Follow,
    /// What the log holds now.
    Rest,
}

/// Delivers the bytes of the log at or after `from`; returns the log's length as read.
async fn copy(
    docker: &Docker,
    container: &str,
    pass: Pass,
    from: u64,
    sink: &dyn OutputSink,
) -> Result<u64, DockerError> {
    let options = LogsOptions {
        follow: pass == Pass::Follow,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut seen = 0u64;
    while let Some(item) = stream.next().await {
        let chunk = item.map_err(|err| DockerError::Output {
            container: container.to_owned(),
            problem: format!("broke off after {seen} bytes: {err}"),
        })?;
        let bytes = chunk.into_bytes();
        if let Some(rest) = unseen(&bytes, seen, from) {
            sink.output(rest);
        }
        seen += bytes.len() as u64;
    }
    Ok(seen)
}

/// The part of a chunk that starts at byte `seen` of the output and that lies at or after
/// byte `from`: what a follower resuming at `from` has not delivered yet.
pub fn unseen(chunk: &[u8], seen: u64, from: u64) -> Option<&[u8]> {
    let skip = usize::try_from(from.saturating_sub(seen)).unwrap_or(usize::MAX);
    (skip < chunk.len()).then(|| &chunk[skip..])
}

/// The output a container has written so far, whole (`tail: None`) or its last `tail` lines.
pub async fn read(
    docker: &Docker,
    container: &str,
    tail: Option<u32>,
) -> Result<Vec<u8>, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
        ..Default::default()
    };
    let mut stream = docker.logs(container, Some(options));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let chunk = item.map_err(|err| {
            DockerError::engine(format!("read the output of container {container}"), err)
        })?;
        out.extend_from_slice(&chunk.into_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_follower_skips_exactly_what_was_delivered() {
        let chunk = b"abcdef";
        // (bytes of the output before this chunk, resume offset) -> what is delivered
        let cases: [(u64, u64, Option<&[u8]>); 6] = [
            (0, 0, Some(b"abcdef")),
            (0, 2, Some(b"cdef")),
            (0, 6, None),
            (0, 9, None),
            (10, 4, Some(b"abcdef")),
            (10, 13, Some(b"def")),
        ];
        for (seen, from, expected) in cases {
            assert_eq!(
                unseen(chunk, seen, from),
                expected,
                "seen {seen}, from {from}"
            );
        }
    }
}
