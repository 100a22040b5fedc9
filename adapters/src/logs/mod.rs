//! # Job logs on files
//!
//! [`FileLogStore`] implements the [`LogStore`] port: each job's log is an append-only byte
//! stream stored as chunk files under `<dir>/job-<id>/`, each named by the offset of its first
//! byte (`files.rs` has the layout). Nothing about logs is in the database.
//!
//! Where to start reading: this file (the API, offsets, the registry of open logs), then
//! `writer.rs` (the writer threads: batching, chunks, syncing), `files.rs` (layout, recovery,
//! reading).
//!
//! ## How an append flows
//! [`append`](LogStore::append) runs on the caller's thread and never touches the disk once the
//! job's log is known: under a short lock it takes the next offset from the job's length (kept in
//! memory) and sends the bytes to the job's writer thread over a `crossbeam-channel`. Jobs are
//! hashed to one of `writers` threads, so one job's bytes are written by one thread, in order.
//!
//! ## Guarantees
//! - Offsets are contiguous and never change: `append` returns the offset of its first byte,
//!   and the next append of the job starts where it ends.
//! - [`flush`](LogStore::flush) returns once every byte appended before it is written and synced
//!   (`fdatasync` of the chunk, `fsync` of new directory entries); [`settle`](LogStore::settle)
//!   once it is written (the sync follows within the sync interval).
//! - [`read`](LogStore::read) never shows a gap: it returns exactly the bytes `[from, end)`,
//!   where `end` is `to` or the length appended when it was called. If some of those bytes are
//!   still queued it waits for the writer to write them (not to sync them): the bytes come from
//!   the files, never from a second copy in memory.
//! - After a crash the log on disk is a prefix of what was appended: chunks are written in
//!   order, a full chunk is synced before the next one is created, and on the first use of a
//!   job after a restart the chunk file sizes are taken as the truth (chunks after a gap are
//!   removed).
//!
//! ## Durability window
//! Bytes are written to the OS as soon as the writer thread takes them (typically well under a
//! millisecond after `append`), so a crash of Hodei loses only bytes still queued. Files are
//! synced on `flush`, when a chunk fills, when a file is closed, and every `sync_interval`
//! (100 ms by default): a power loss or OS crash loses at most the bytes of the last interval
//! that were not flushed.
//!
//! ## Assumptions
//! - One process uses a log directory at a time.
//! - Bytes found on disk at the first use of a job (after a restart) are taken as durable: a
//!   crash of Hodei alone leaves them to the OS to write back.
//! - `flush` and `read` run inside a Tokio runtime (`read` reads files on its blocking pool).
//!
//! ## Errors
//! [`LogError::Io`] when the job's directory cannot be read or written; a log that failed to be
//! written stays failed for the life of the store (its later appends would leave a gap), and
//! its prefix on disk is what a restart recovers. [`LogError::Closed`] if a writer thread is gone.

mod files;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use hodei_domain::ids::JobId;
use hodei_domain::ports::Cause;
use hodei_domain::ports::{BoxFuture, LogError, LogStore};
use tokio::sync::oneshot;

use self::writer::{Command, Writer};

/// Independent locks over the registry of known logs, so that appends to different jobs do
/// not wait for each other.
const SHARDS: usize = 32;
/// A shard forgets idle, fully synced logs once it holds at least this many.
const FORGET_AT: usize = 1_024;

/// How a [`FileLogStore`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Writer threads; each job's log is written by one of them. At least 1.
    pub writers: usize,
    /// The most bytes in one chunk file. At least 1.
    pub chunk_size: u64,
    /// How often written files are synced without being asked: the durability window.
    pub sync_interval: Duration,
}

impl Default for LogOptions {
    /// Two writers, 8 MiB chunks, a sync every 100 ms.
    fn default() -> LogOptions {
        LogOptions {
            writers: 2,
            chunk_size: 8 * 1024 * 1024,
            sync_interval: Duration::from_millis(100),
        }
    }
}

/// The log directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot use {} as the log directory: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a log writer thread: {source}")]
    Thread {
        #[source]
        source: io::Error,
    },
}

/// Job logs as append-only chunk files, written by dedicated threads. See the module
/// documentation for the guarantees. Dropping it waits for the writers to write and sync
/// everything queued.
pub struct FileLogStore {
    dir: PathBuf,
    shards: Box<[Mutex<Shard>]>,
    writers: Vec<Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shard {
    logs: HashMap<JobId, Arc<JobLog>>,
    forget_at: usize,
}

/// What the store knows of one job's log.
struct JobLog {
    job: JobId,
    /// Bytes appended: the next offset. Changed only under the shard's lock.
    len: AtomicU64,
    /// Bytes written to the files, by the writer.
    written: AtomicU64,
    /// Bytes synced, by the writer.
    synced: AtomicU64,
    failure: OnceLock<String>,
    /// Used since the registry last looked for logs to forget.
    touched: AtomicBool,
}

impl JobLog {
    fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }
}

impl FileLogStore {
    /// Opens (creating it if missing) the log directory `dir` with `writers` writer threads and
    /// the other [`LogOptions`] at their defaults.
    ///
    /// # Errors
    /// [`OpenError`] if the directory cannot be created or a thread cannot be started.
    pub fn open(dir: &Path, writers: usize) -> Result<FileLogStore, OpenError> {
        FileLogStore::open_with(
            dir,
            LogOptions {
                writers,
                ..LogOptions::default()
            },
        )
    }

    /// Opens the log directory `dir` with `options`.
    ///
    /// # Errors
    /// [`OpenError`] if the directory cannot be created or a thread cannot be started.
    pub fn open_with(dir: &Path, options: LogOptions) -> Result<FileLogStore, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut store = FileLogStore {
            dir: dir.to_path_buf(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            writers: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..options.writers.max(1) {
            let (sender, receiver) = crossbeam_channel::unbounded();
            let writer = Writer::new(dir.to_path_buf(), options.chunk_size, options.sync_interval);
            let thread = std::thread::Builder::new()
                .name(format!("hodei-log-writer-{i}"))
                .spawn(move || writer.run(receiver))
                .map_err(|source| OpenError::Thread { source })?;
            store.writers.push(sender);
            store.threads.push(thread);
        }
        Ok(store)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The jobs that have a log in the directory, by id.
    ///
    /// # Errors
    /// When the directory cannot be listed.
    pub fn jobs(&self) -> io::Result<Vec<JobId>> {
        let mut jobs: Vec<JobId> = std::fs::read_dir(&self.dir)?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                let id = name.to_str()?.strip_prefix("job-")?.parse().ok()?;
                entry.path().is_dir().then_some(JobId(id))
            })
            .collect();
        jobs.sort_unstable();
        Ok(jobs)
    }

    fn slot(&self, job: JobId, n: usize) -> usize {
        // Job ids are sequential: spread them with a multiplicative hash.
        let mixed = job.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        usize::try_from(mixed).unwrap_or(0) % n
    }

    fn shard(&self, job: JobId) -> MutexGuard<'_, Shard> {
        self.shards[self.slot(job, self.shards.len())]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self, job: JobId) -> Result<&Sender<Command>, LogError> {
        self.writers
            .get(self.slot(job, self.writers.len().max(1)))
            .ok_or(LogError::Closed { job })
    }

    /// The job's log, read from the disk on its first use.
    fn log<'s>(&self, shard: &'s mut Shard, job: JobId) -> Result<&'s Arc<JobLog>, LogError> {
        if !shard.logs.contains_key(&job) {
            shard.forget_idle();
            let len =
                files::recover(&files::job_dir(&self.dir, job)).map_err(|err| LogError::Io {
                    job,
                    reason: format!("cannot read the log's files: {err}"),
                    cause: Cause::of(err),
                })?;
            let log = JobLog {
                job,
                len: AtomicU64::new(len),
                written: AtomicU64::new(len),
                synced: AtomicU64::new(len),
                failure: OnceLock::new(),
                touched: AtomicBool::new(true),
            };
            shard.logs.insert(job, Arc::new(log));
        }
        let log = shard.logs.get(&job).ok_or(LogError::Closed { job })?;
        log.touched.store(true, Ordering::Relaxed);
        if let Some(reason) = log.failure() {
            return Err(LogError::Io {
                job,
                reason: reason.to_owned(),
                cause: None,
            });
        }
        Ok(log)
    }

    /// The job's log, and its length appended so far.
    fn snapshot(&self, job: JobId) -> Result<(Arc<JobLog>, u64), LogError> {
        let mut shard = self.shard(job);
        let log = self.log(&mut shard, job)?;
        Ok((Arc::clone(log), log.len.load(Ordering::Relaxed)))
    }

    /// Waits until the writer has handled everything queued for the job before this call.
    async fn barrier(&self, log: Arc<JobLog>, sync: bool) -> Result<u64, LogError> {
        let job = log.job;
        let (reply, answer) = oneshot::channel();
        self.writer(job)?
            .send(Command::Barrier { log, sync, reply })
            .map_err(|_| LogError::Closed { job })?;
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
}

impl Shard {
    /// Forgets logs that are idle since the last look and fully synced, once the shard is big:
    /// their length is on disk, to be read again on their next use.
    fn forget_idle(&mut self) {
        if self.logs.len() < self.forget_at.max(FORGET_AT) {
            return;
        }
        self.logs.retain(|_, log| {
            let idle = !log.touched.swap(false, Ordering::Relaxed);
            let synced = log.synced.load(Ordering::Acquire) == log.len.load(Ordering::Relaxed);
            !(idle && synced && log.failure().is_none())
        });
        self.forget_at = 2 * self.logs.len();
    }
}

impl LogStore for FileLogStore {
    fn append(&self, job: JobId, bytes: &[u8]) -> Result<u64, LogError> {
        let mut shard = self.shard(job);
        let log = self.log(&mut shard, job)?;
        let offset = log.len.load(Ordering::Relaxed);
        if bytes.is_empty() {
            return Ok(offset);
        }
        // Numbered and sent under the shard's lock: the writer receives the job's bytes in
        // offset order.
        let command = Command::Append {
            log: Arc::clone(log),
            offset,
            bytes: bytes.to_vec(),
        };
        self.writer(job)?
            .send(command)
            .map_err(|_| LogError::Closed { job })?;
        log.len
            .store(offset + bytes.len() as u64, Ordering::Relaxed);
        Ok(offset)
    }

    fn flush(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(async move {
            let (log, len) = self.snapshot(job)?;
            if log.synced.load(Ordering::Acquire) >= len {
                return Ok(len);
            }
            self.barrier(log, true).await
        })
    }

    fn settle(&self, job: JobId) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(async move {
            let (log, len) = self.snapshot(job)?;
            if log.synced.load(Ordering::Acquire) >= len {
                return Ok(len);
            }
            self.barrier(log, false).await
        })
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
                self.barrier(log, false).await?;
            }
            let dir = files::job_dir(&self.dir, job);
            let read = tokio::task::spawn_blocking(move || files::read_range(&dir, from, end));
            match read.await {
                Ok(Ok(bytes)) => Ok(bytes),
                Ok(Err(err)) => Err(LogError::Io {
                    job,
                    reason: format!("cannot read: {err}"),
                    cause: Cause::of(err),
                }),
                Err(err) => Err(LogError::Io {
                    job,
                    reason: format!("the read was interrupted: {err}"),
                    cause: Cause::of(err),
                }),
            }
        })
    }

    fn len(&self, job: JobId) -> Result<u64, LogError> {
        self.snapshot(job).map(|(_, len)| len)
    }
}

impl Drop for FileLogStore {
    fn drop(&mut self) {
        // Closing the channels stops the writers once they have written and synced the rest.
        self.writers.clear();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("A log writer thread panicked.");
            }
        }
    }
}

impl std::fmt::Debug for FileLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLogStore")
            .field("dir", &self.dir)
            .field("writers", &self.writers.len())
            .finish_non_exhaustive()
    }
}
