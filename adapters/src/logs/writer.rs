//! A log writer thread: it owns the chunk files of the jobs hashed to it, writes what
//! [`FileLogStore::append`](super::FileLogStore) queued, and syncs.
//!
//! Each turn it takes every command waiting (up to [`MAX_BATCH`]), merges the bytes queued for
//! each job into one write per job, then answers the barriers of that turn (a `flush` syncs the
//! job's files first; a `read` only needs the bytes written). Every
//! [`LogOptions::sync_interval`](super::LogOptions) it syncs every file written since the last
//! sync, and closes the files of jobs idle for a while.
//!
//! Ordering: a job's appends reach its writer in offset order (they are numbered and sent under
//! one lock) and are written in that order. When a chunk is full it is synced before the next
//! one is created, so after a crash a later chunk never survives an earlier chunk's lost tail.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hodei_domain::ids::JobId;
use tokio::sync::oneshot;

use super::JobLog;
use super::files;

/// The most commands taken in one turn.
const MAX_BATCH: usize = 4_096;
/// Files kept open per writer; the least recently written is synced and closed beyond that.
const MAX_OPEN: usize = 64;
/// A job's file is closed after this many sync intervals without a write.
const IDLE_TICKS: u64 = 10;

/// What a writer thread is asked to do.
pub(super) enum Command {
    /// Write `bytes` at `offset` of the job's log.
    Append {
        log: Arc<JobLog>,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// Answer once everything queued before is written (and synced, with `sync`), with the
    /// log's written length, or why the log failed.
    Barrier {
        log: Arc<JobLog>,
        sync: bool,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// The chunk a job's bytes go to.
struct Open {
    log: Arc<JobLog>,
    file: File,
    /// Where the chunk starts in the log, and its length.
    start: u64,
    size: u64,
    /// Written since the last sync: the file's data, the job directory's entries.
    dirty: bool,
    dir_dirty: bool,
    last_used: u64,
}

pub(super) struct Writer {
    root: PathBuf,
    chunk_size: u64,
    sync_interval: Duration,
    open: HashMap<JobId, Open>,
    /// A job directory was created since the root was last synced.
    root_dirty: bool,
    tick: u64,
}

impl Writer {
    pub fn new(root: PathBuf, chunk_size: u64, sync_interval: Duration) -> Writer {
        Writer {
            root,
            chunk_size: chunk_size.max(1),
            sync_interval,
            open: HashMap::new(),
            root_dirty: false,
            tick: 0,
        }
    }

    /// The thread's body: runs until every sender is gone, then writes and syncs what is left.
    pub fn run(mut self, commands: Receiver<Command>) {
        let mut next_sync = Instant::now() + self.sync_interval;
        let mut batch = Vec::new();
        loop {
            let wait = next_sync.saturating_duration_since(Instant::now());
            match commands.recv_timeout(wait) {
                Ok(first) => {
                    batch.push(first);
                    batch.extend(commands.try_iter().take(MAX_BATCH));
                    self.turn(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if Instant::now() >= next_sync {
                self.sync_all();
                self.close_idle();
                next_sync = Instant::now() + self.sync_interval;
            }
        }
        self.sync_all();
    }

    /// Writes the appends of a batch, one write per job, then answers its barriers.
    fn turn(&mut self, batch: &mut Vec<Command>) {
        let mut pending: Vec<(Arc<JobLog>, u64, Vec<u8>)> = Vec::new();
        let mut index: HashMap<JobId, usize> = HashMap::new();
        let mut barriers = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Append { log, offset, bytes } => match index.get(&log.job) {
                    Some(&i) if pending[i].1 + pending[i].2.len() as u64 == offset => {
                        pending[i].2.extend_from_slice(&bytes);
                    }
                    Some(_) => log.fail(format!("bytes at offset {offset} arrived out of order")),
                    None => {
                        index.insert(log.job, pending.len());
                        pending.push((log, offset, bytes));
                    }
                },
                Command::Barrier { log, sync, reply } => barriers.push((log, sync, reply)),
            }
        }
        for (log, offset, bytes) in pending {
            if log.failure().is_some() {
                continue;
            }
            match self.write(&log, offset, &bytes) {
                Ok(()) => {
                    let end = offset + bytes.len() as u64;
                    log.written.store(end, Ordering::Release);
                }
                Err(err) => self.fail(&log, &format!("cannot write: {err}")),
            }
        }
        for (log, sync, reply) in barriers {
            if sync
                && log.failure().is_none()
                && let Err(err) = self.sync(log.job)
            {
                self.fail(&log, &format!("cannot sync: {err}"));
            }
            let answer = match log.failure() {
                Some(reason) => Err(reason.to_owned()),
                None => Ok(log.written.load(Ordering::Acquire)),
            };
            // The caller may have stopped waiting.
            let _ = reply.send(answer);
        }
    }

    /// Appends `bytes` at `offset`, starting new chunks as the current one fills.
    fn write(&mut self, log: &Arc<JobLog>, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let tick = self.tick;
        let chunk_size = self.chunk_size;
        self.prepare(log, offset)?;
        let Some(open) = self.open.get_mut(&log.job) else {
            return Err(io::Error::other("the chunk was not opened"));
        };
        open.last_used = tick;
        let mut rest = bytes;
        while !rest.is_empty() {
            if open.size >= chunk_size {
                // Full: sync it before the next chunk exists (see the module's documentation).
                open.file.sync_data()?;
                let start = open.start + open.size;
                let dir = files::job_dir(&self.root, log.job);
                open.file = new_chunk(&dir, start)?;
                open.start = start;
                open.size = 0;
                open.dir_dirty = true;
            }
            let room = usize::try_from(chunk_size - open.size).unwrap_or(usize::MAX);
            let (now, later) = rest.split_at(room.min(rest.len()));
            open.file.write_all(now)?;
            open.size += now.len() as u64;
            open.dirty = true;
            rest = later;
        }
        Ok(())
    }

    /// Makes sure the job's current chunk is open and ends at `offset`.
    fn prepare(&mut self, log: &Arc<JobLog>, offset: u64) -> io::Result<()> {
        if let Some(open) = self.open.get_mut(&log.job) {
            if !Arc::ptr_eq(&open.log, log) {
                // The store forgot the job's old record and read it again from the disk.
                open.log = Arc::clone(log);
            }
            if open.start + open.size == offset {
                return Ok(());
            }
            return Err(io::Error::other(format!(
                "the log has {} bytes, not {offset}",
                open.start + open.size
            )));
        }
        if self.open.len() >= MAX_OPEN {
            self.close_least_recent();
        }
        let dir = files::job_dir(&self.root, log.job);
        let (file, start, size, dir_dirty) = match files::last_chunk(&dir)? {
            Some((start, size)) if start + size == offset => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(dir.join(files::chunk_name(start)))?;
                (file, start, size, false)
            }
            None if offset == 0 => {
                if !dir.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)?;
                    self.root_dirty = true;
                }
                (new_chunk(&dir, 0)?, 0, 0, true)
            }
            found => {
                let on_disk = found.map_or(0, |(start, size)| start + size);
                return Err(io::Error::other(format!(
                    "{} holds {on_disk} bytes, expected {offset}",
                    dir.display()
                )));
            }
        };
        self.open.insert(
            log.job,
            Open {
                log: Arc::clone(log),
                file,
                start,
                size,
                dirty: false,
                dir_dirty,
                last_used: self.tick,
            },
        );
        Ok(())
    }

    /// Syncs the job's current chunk and the directory entries created for it.
    fn sync(&mut self, job: JobId) -> io::Result<()> {
        let Some(open) = self.open.get_mut(&job) else {
            return Ok(()); // closed files were synced when closed
        };
        if self.root_dirty {
            files::sync_dir(&self.root)?;
            self.root_dirty = false;
        }
        if open.dirty {
            open.file.sync_data()?;
            open.dirty = false;
        }
        if open.dir_dirty {
            files::sync_dir(&files::job_dir(&self.root, job))?;
            open.dir_dirty = false;
        }
        let written = open.log.written.load(Ordering::Acquire);
        open.log.synced.fetch_max(written, Ordering::AcqRel);
        Ok(())
    }

    /// The periodic sync: every file written since the last one.
    fn sync_all(&mut self) {
        self.tick += 1;
        let jobs: Vec<JobId> = self
            .open
            .iter()
            .filter(|(_, open)| open.dirty || open.dir_dirty)
            .map(|(job, _)| *job)
            .collect();
        for job in jobs {
            self.sync_or_fail(job);
        }
    }

    /// Syncs the job's files; a failure fails the job's log.
    fn sync_or_fail(&mut self, job: JobId) {
        if let Err(err) = self.sync(job)
            && let Some(open) = self.open.get(&job)
        {
            let log = Arc::clone(&open.log);
            self.fail(&log, &format!("cannot sync: {err}"));
        }
    }

    /// Closes the (synced) files of jobs not written for a while.
    fn close_idle(&mut self) {
        let tick = self.tick;
        self.open.retain(|_, open| {
            open.dirty || open.dir_dirty || tick.saturating_sub(open.last_used) < IDLE_TICKS
        });
    }

    fn close_least_recent(&mut self) {
        let Some(job) = self
            .open
            .iter()
            .min_by_key(|(_, open)| open.last_used)
            .map(|(job, _)| *job)
        else {
            return;
        };
        self.sync_or_fail(job);
        self.open.remove(&job);
    }

    /// Records that the job's log failed: its later appends, flushes and reads fail too.
    fn fail(&mut self, log: &Arc<JobLog>, reason: &str) {
        tracing::error!(job_id = %log.job, error = %reason, "Job log failed.");
        log.fail(reason.to_owned());
        self.open.remove(&log.job);
    }
}

/// A new chunk file, readable by Hodei's user only (a log may hold what a secret mask missed).
fn new_chunk(dir: &Path, start: u64) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(files::chunk_name(start)))
}
