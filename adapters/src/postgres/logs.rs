//! # Job logs in PostgreSQL
//!
//! [`PgLogStore`] implements the [`LogStore`] port on the `log_chunks` table: each job's log is
//! an append-only byte stream stored as chunks, each row naming the offset of its first byte.
//! Any server that uses the database reads any job's log.
//!
//! ## How an append flows
//! As with the log files ([`crate::logs::FileLogStore`]), [`append`](LogStore::append) never
//! waits for the database once the job's log is known: under a short lock it takes the next
//! offset from the job's length (kept in memory) and queues the bytes for the writer, a task
//! on the store's runtime. The writer takes everything queued, merges each job's contiguous
//! bytes into one chunk, and inserts all the chunks in one transaction. The first use of a
//! job's log reads its committed length from the database (a blocking query: `append` and
//! `len` are synchronous by the port's contract), unless the job was created by this store's
//! [`PgStore`] since it opened: its log is empty then.
//!
//! ## Guarantees
//! - Offsets are contiguous and never change; a chunk's row is keyed by `(job, start)`, so two
//!   writers that both think they own a job's log cannot both write at one offset: the second
//!   fails, and its log is failed rather than forked.
//! - [`flush`](LogStore::flush) and [`settle`](LogStore::settle) return once everything
//!   appended before them is committed (durable, with PostgreSQL's default settings).
//! - [`read`](LogStore::read) never shows a gap: it waits for queued bytes to be committed,
//!   and reads them back from the database, never from a copy in memory.
//! - A failure of the database is retried with backoff for about 45 s before the job's
//!   log is failed: a restart of PostgreSQL pauses logs, it does not cut them.
//!
//! ## Doorbell
//! Each commit sends `NOTIFY hodei_logs, '<job id>'` for the jobs it wrote, in the same
//! transaction: a reader elsewhere may wake on it and read from its offset. Nothing depends
//! on it: a reader that polls (or whose notifications a pooler drops) sees the same bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hodei_domain::ids::JobId;
use hodei_domain::ports::{BoxFuture, Cause, LogError, LogStore};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::PgStore;
use super::error::store_error;
use super::leader::Fence;

/// The channel of the doorbell.
pub const NOTIFY_CHANNEL: &str = "hodei_logs";
/// The most bytes one chunk row holds when appends are merged (a single larger append is
/// stored whole).
const MAX_CHUNK: usize = 1024 * 1024;
/// The most bytes the writer takes into one transaction.
const MAX_BATCH: usize = 8 * 1024 * 1024;
/// How many times a batch is tried when the database is unavailable, with growing pauses
/// (about 45 s in all).
const TRIES: u32 = 12;
/// Logs known in memory before idle, fully written ones are forgotten.
const FORGET_AT: usize = 4_096;
/// How long a first use waits for the database to say a log's length.
const LENGTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Job logs in the PostgreSQL database of a [`PgStore`]. See the module documentation.
/// Dropping it waits (at most 30 s) for the writer to commit what was queued.
pub struct PgLogStore {
    store: PgStore,
    logs: Mutex<HashMap<JobId, Arc<JobLog>>>,
    writer: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    finished: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// What the store knows of one job's log.
struct JobLog {
    job: JobId,
    /// Bytes appended: the next offset. Changed only under the registry's lock.
    len: AtomicU64,
    /// Bytes committed, by the writer.
    written: AtomicU64,
    failure: OnceLock<String>,
}

enum Command {
    Append {
        log: Arc<JobLog>,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Answered once everything queued before it is committed: the log's committed length.
    Barrier {
        log: Arc<JobLog>,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

impl std::fmt::Debug for PgLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLogStore")
            .field("database", &self.store.shown_url())
            .finish_non_exhaustive()
    }
}

impl PgLogStore {
    pub(super) fn new(store: PgStore) -> PgLogStore {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (finished, wait) = std::sync::mpsc::channel();
        if let Some(handle) = store.shared.runtime.handle() {
            let pool = store.shared.pool.clone();
            let fence = store.fence_handle();
            handle.spawn(async move {
                write(pool, fence, receiver).await;
                let _ = finished.send(());
            });
        }
        PgLogStore {
            store,
            logs: Mutex::default(),
            writer: Mutex::new(Some(sender)),
            finished: Mutex::new(Some(wait)),
        }
    }

    fn send(&self, job: JobId, command: Command) -> Result<(), LogError> {
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .as_ref()
            .and_then(|writer| writer.send(command).ok())
            .ok_or(LogError::Closed { job })
    }

    /// The job's log, its committed length read from the database on first use.
    fn log(
        &self,
        logs: &mut HashMap<JobId, Arc<JobLog>>,
        job: JobId,
    ) -> Result<Arc<JobLog>, LogError> {
        if let Some(log) = logs.get(&job) {
            return match log.failure.get() {
                Some(reason) => Err(LogError::Io {
                    job,
                    reason: reason.clone(),
                    cause: None,
                }),
                None => Ok(Arc::clone(log)),
            };
        }
        if logs.len() >= FORGET_AT {
            // Idle and fully committed: its length is in the database for its next use.
            logs.retain(|_, log| {
                Arc::strong_count(log) > 1
                    || log.written.load(Ordering::Acquire) != log.len.load(Ordering::Relaxed)
                    || log.failure.get().is_some()
            });
        }
        let len = match self.store.take_fresh(job) {
            true => 0,
            false => self.committed_length(job)?,
        };
        let log = Arc::new(JobLog {
            job,
            len: AtomicU64::new(len),
            written: AtomicU64::new(len),
            failure: OnceLock::new(),
        });
        logs.insert(job, Arc::clone(&log));
        Ok(log)
    }

    /// The length of the job's log as committed, asked of the database on the store's runtime
    /// while this thread waits.
    fn committed_length(&self, job: JobId) -> Result<u64, LogError> {
        let io = |reason: String| LogError::Io {
            job,
            reason,
            cause: None,
        };
        let handle = self
            .store
            .shared
            .runtime
            .handle()
            .ok_or(LogError::Closed { job })?;
        let pool = self.store.shared.pool.clone();
        let key = i64::try_from(job.0).map_err(|_| io("the job id is too large".into()))?;
        let (reply, answer) = std::sync::mpsc::channel();
        handle.spawn(async move {
            let length: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
                "SELECT start + length(bytes) FROM log_chunks WHERE job_id = $1 \
                 ORDER BY start DESC LIMIT 1",
            )
            .bind(key)
            .fetch_optional(&pool)
            .await;
            let _ = reply.send(length);
        });
        match answer.recv_timeout(LENGTH_TIMEOUT) {
            Ok(Ok(length)) => Ok(length.map_or(0, |n| u64::try_from(n).unwrap_or(0))),
            Ok(Err(err)) => Err(LogError::Io {
                job,
                reason: format!("cannot read the log's length: {err}"),
                cause: Cause::of(err),
            }),
            Err(_) => Err(io(format!(
                "the database did not say the log's length within {} s",
                LENGTH_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The job's log and its length appended so far.
    fn snapshot(&self, job: JobId) -> Result<(Arc<JobLog>, u64), LogError> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let log = self.log(&mut logs, job)?;
        let len = log.len.load(Ordering::Relaxed);
        Ok((log, len))
    }

    /// Waits until everything queued for the job before this call is committed.
    async fn barrier(&self, log: Arc<JobLog>) -> Result<u64, LogError> {
        let job = log.job;
        let (reply, answer) = oneshot::channel();
        self.send(job, Command::Barrier { log, reply })?;
        match answer.await {
            Ok(Ok(len)) => Ok(len),
            Ok(Err(reason)) => Err(LogError::Io {
                job,
                reason,
                cause: None,
            }),
            Err(_) => Err(LogError::Closed { job }),
        }
    }

    async fn committed(&self, job: JobId) -> Result<u64, LogError> {
        let (log, len) = self.snapshot(job)?;
        if log.written.load(Ordering::Acquire) >= len {
            return Ok(len);
        }
        self.barrier(log).await
    }
}

impl LogStore for PgLogStore {
    fn append(&self, job: JobId, bytes: &[u8]) -> Result<u64, LogError> {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        let log = self.log(&mut logs, job)?;
        let offset = log.len.load(Ordering::Relaxed);
        if bytes.is_empty() {
            return Ok(offset);
        }
        // Numbered and queued under the registry's lock: the writer receives a job's bytes in
        // offset order.
        let command = Command::Append {
            log: Arc::clone(&log),
            offset,
            bytes: bytes.to_vec(),
        };
        self.send(job, command)?;
        log.len
            .store(offset + bytes.len() as u64, Ordering::Relaxed);
        Ok(offset)
    }

    fn flush(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(self.committed(job))
    }

    fn settle(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(self.committed(job))
    }

    fn read(
        &self,
        job: JobId,
        from: u64,
        to: Option<u64>,
    ) -> BoxFuture<'_, Result<Vec<u8>, LogError>> {
        Box::pin(async move {
            let (log, len) = self.snapshot(job)?;
            let end = to.map_or(len, |to| to.min(len));
            if from >= end {
                return Ok(Vec::new());
            }
            if log.written.load(Ordering::Acquire) < end {
                self.barrier(log).await?;
            }
            let io = |reason: String| LogError::Io {
                job,
                reason,
                cause: None,
            };
            let key = i64::try_from(job.0).map_err(|_| io("the job id is too large".into()))?;
            let (start, stop) = (
                i64::try_from(from).map_err(|_| io("the offset is too large".into()))?,
                i64::try_from(end).map_err(|_| io("the offset is too large".into()))?,
            );
            let rows = self.store.chunks(key, start, stop).await.map_err(io)?;
            assemble(job, from, end, rows)
        })
    }

    fn len(&self, job: JobId) -> Result<u64, LogError> {
        self.snapshot(job).map(|(_, len)| len)
    }
}

impl PgStore {
    /// The committed bytes of `job`'s log from `from` on, at most `max` of them (fewer at its
    /// end), read from the database whatever this process appended: how a replica follows a
    /// log that another one writes.
    ///
    /// # Errors
    /// [`LogError::Io`] when the database cannot be read.
    pub async fn read_committed(
        &self,
        job: JobId,
        from: u64,
        max: usize,
    ) -> Result<Vec<u8>, LogError> {
        let io = |reason: String| LogError::Io {
            job,
            reason,
            cause: None,
        };
        let key = i64::try_from(job.0).map_err(|_| io("the job id is too large".into()))?;
        let start = i64::try_from(from).map_err(|_| io("the offset is too large".into()))?;
        let stop = start.saturating_add(i64::try_from(max).unwrap_or(i64::MAX));
        let rows = self.chunks(key, start, stop).await.map_err(io)?;
        Ok(contiguous(from, from.saturating_add(max as u64), rows))
    }

    /// The chunk rows `(start, bytes)` of a job's log from the one that holds byte `from`
    /// (found by the primary key) to those that begin before `to`, in order.
    async fn chunks(&self, job: i64, from: i64, to: i64) -> Result<Vec<(i64, Vec<u8>)>, String> {
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT start, bytes FROM log_chunks WHERE job_id = $1 AND start < $3 \
                 AND start >= coalesce((SELECT max(start) FROM log_chunks \
                     WHERE job_id = $1 AND start <= $2), 0) \
                 ORDER BY start",
            )
            .bind(job)
            .bind(from)
            .bind(to)
            .fetch_all(&pool)
            .await
            .map_err(|err| store_error("reading a log", err))
        })
        .await
        .map_err(|err| format!("cannot read: {err}"))
    }

    /// Listens to the logs' doorbell ([`NOTIFY_CHANNEL`]) on a connection of its own, and sends
    /// on `ring` the id of each job whose log grew, until the store is dropped; reconnects after
    /// a lost connection. Nothing may depend on it alone: a pooler in transaction mode drops
    /// notifications.
    pub fn listen_logs(&self, ring: tokio::sync::broadcast::Sender<JobId>) {
        let Some(handle) = self.shared.runtime.handle() else {
            return;
        };
        let pool = self.shared.pool.clone();
        handle.spawn(async move {
            loop {
                let heard: Result<(), sqlx::Error> = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(NOTIFY_CHANNEL).await?;
                    loop {
                        let note = listener.recv().await?;
                        if let Ok(id) = note.payload().parse::<u64>() {
                            let _ = ring.send(JobId(id));
                        }
                    }
                }
                .await;
                if let Err(err) = heard {
                    tracing::warn!(error = %err, "The logs' notifications are not heard; logs are polled until they are.");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// The bytes `[from, end)` out of chunk rows `(start, bytes)` in order; an error on a gap.
fn assemble(
    job: JobId,
    from: u64,
    end: u64,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<Vec<u8>, LogError> {
    let out = contiguous(from, end, rows);
    let at = from + out.len() as u64;
    if at != end {
        return Err(LogError::Io {
            job,
            reason: format!("the stored log has a gap at byte {at} (asked for {from}..{end})"),
            cause: None,
        });
    }
    Ok(out)
}

/// The bytes from `from` out of chunk rows `(start, bytes)` in order, up to `end` or the first
/// gap.
fn contiguous(from: u64, end: u64, rows: Vec<(i64, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        usize::try_from(end.saturating_sub(from))
            .unwrap_or(0)
            .min(1 << 20),
    );
    let mut at = from;
    for (start, bytes) in rows {
        let start = u64::try_from(start).unwrap_or(0);
        let stop = start + bytes.len() as u64;
        if stop <= at {
            continue;
        }
        if start > at {
            break;
        }
        let take = usize::try_from(at - start).unwrap_or(0)
            ..usize::try_from(stop.min(end) - start).unwrap_or(0);
        out.extend_from_slice(&bytes[take]);
        at = stop.min(end);
        if at == end {
            break;
        }
    }
    out
}

/// One chunk to insert: a job's contiguous bytes from `start`.
struct Chunk {
    log: Arc<JobLog>,
    start: u64,
    bytes: Vec<u8>,
}

/// The writer: takes what is queued, commits it in one transaction, answers the barriers.
async fn write(pool: PgPool, fence: Arc<Fence>, mut commands: mpsc::UnboundedReceiver<Command>) {
    while let Some(first) = commands.recv().await {
        let mut batch = vec![first];
        let mut size = 0;
        while size < MAX_BATCH {
            let Ok(next) = commands.try_recv() else {
                break;
            };
            if let Command::Append { bytes, .. } = &next {
                size += bytes.len();
            }
            batch.push(next);
        }
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut last: HashMap<JobId, usize> = HashMap::new();
        let mut barriers = Vec::new();
        for command in batch {
            match command {
                Command::Append { log, offset, bytes } => {
                    if log.failure.get().is_some() {
                        continue;
                    }
                    match last.get(&log.job).map(|&i| &mut chunks[i]) {
                        Some(chunk)
                            if chunk.start + chunk.bytes.len() as u64 == offset
                                && chunk.bytes.len() + bytes.len() <= MAX_CHUNK =>
                        {
                            chunk.bytes.extend_from_slice(&bytes);
                        }
                        _ => {
                            last.insert(log.job, chunks.len());
                            chunks.push(Chunk {
                                log,
                                start: offset,
                                bytes,
                            });
                        }
                    }
                }
                Command::Barrier { log, reply } => barriers.push((log, reply)),
            }
        }
        if !chunks.is_empty() {
            match insert_with_retries(&pool, &fence, &chunks).await {
                Ok(()) => {
                    for chunk in &chunks {
                        let end = chunk.start + chunk.bytes.len() as u64;
                        chunk.log.written.fetch_max(end, Ordering::Release);
                    }
                }
                Err(reason) => {
                    tracing::error!(chunks = chunks.len(), error = %reason, "Log bytes could not be stored.");
                    for chunk in &chunks {
                        let _ = chunk.log.failure.set(reason.clone());
                    }
                }
            }
        }
        for (log, reply) in barriers {
            let answer = match log.failure.get() {
                Some(reason) => Err(reason.clone()),
                None => Ok(log.written.load(Ordering::Acquire)),
            };
            let _ = reply.send(answer);
        }
    }
}

async fn insert_with_retries(pool: &PgPool, fence: &Fence, chunks: &[Chunk]) -> Result<(), String> {
    let mut pause = Duration::from_millis(100);
    for tried in 1..=TRIES {
        match insert(pool, fence, chunks).await {
            Ok(()) => return Ok(()),
            // A deposed leader's writes fail for good.
            Err(err) if err.is_retryable() && tried < TRIES && !fence.is_deposed() => {
                tracing::warn!(error = %err, tried, "Storing log bytes failed; trying again.");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            Err(err) => return Err(format!("cannot store the log's bytes: {err}")),
        }
    }
    Err("cannot store the log's bytes".into())
}

async fn insert(
    pool: &PgPool,
    fence: &Fence,
    chunks: &[Chunk],
) -> Result<(), hodei_domain::ports::StoreError> {
    let what = "storing log bytes";
    let fail = |err| store_error(what, err);
    let mut jobs = Vec::with_capacity(chunks.len());
    let mut starts = Vec::with_capacity(chunks.len());
    let mut bytes = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        jobs.push(i64::try_from(chunk.log.job.0).unwrap_or(i64::MAX));
        starts.push(i64::try_from(chunk.start).unwrap_or(i64::MAX));
        bytes.push(chunk.bytes.as_slice());
    }
    let mut tx = pool.begin().await.map_err(fail)?;
    fence.check(&mut tx).await?;
    sqlx::query(
        "INSERT INTO log_chunks (job_id, start, bytes) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bytea[])",
    )
    .bind(&jobs)
    .bind(&starts)
    .bind(&bytes)
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    sqlx::query(
        "SELECT pg_notify($1, j::text) FROM (SELECT DISTINCT unnest($2::bigint[]) AS j) AS d",
    )
    .bind(NOTIFY_CHANNEL)
    .bind(&jobs)
    .execute(&mut *tx)
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)
}

impl Drop for PgLogStore {
    fn drop(&mut self) {
        // Closing the channel stops the writer once it has committed the rest.
        self.writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let finished = self
            .finished
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(finished) = finished {
            let _ = finished.recv_timeout(Duration::from_secs(30));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_to_the_range_asked_and_a_gap_is_an_error() {
        let rows = vec![(0, b"hello ".to_vec()), (6, b"world".to_vec())];
        assert_eq!(assemble(JobId(1), 3, 9, rows.clone()).unwrap(), b"lo wor");
        assert_eq!(assemble(JobId(1), 6, 11, rows.clone()).unwrap(), b"world");
        let gap = vec![(0, b"abc".to_vec()), (5, b"fg".to_vec())];
        assert!(assemble(JobId(1), 0, 7, gap).is_err());
    }
}
