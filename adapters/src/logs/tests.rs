//! The log store against real files in temporary directories.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hodei_domain::ids::JobId;
use hodei_domain::ports::{LogError, LogStore};

use super::files::{chunk_name, chunks};
use super::{FileLogStore, LogOptions};

/// Fails the test instead of hanging it.
async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the log store did not answer within 30 s: likely deadlocked")
}

fn tiny_chunks(dir: &Path, chunk_size: u64) -> FileLogStore {
    let options = LogOptions {
        writers: 2,
        chunk_size,
        ..LogOptions::default()
    };
    FileLogStore::open_with(dir, options).unwrap()
}

/// Deterministic, non-repeating-looking bytes: `pattern(n)[i]` depends on `i`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_to_many_jobs_get_contiguous_offsets_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(tiny_chunks(dir.path(), 64));
    let jobs: Vec<JobId> = (1..=16).map(JobId).collect();
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let (store, jobs) = (Arc::clone(&store), jobs.clone());
            std::thread::spawn(move || {
                let mut placed = Vec::new();
                for seq in 0..200 {
                    for &job in &jobs {
                        let record = format!("<{thread}:{seq}:{job}>");
                        let offset = store.append(job, record.as_bytes()).unwrap();
                        placed.push((job, offset, record));
                    }
                }
                placed
            })
        })
        .collect();
    let placed: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    for &job in &jobs {
        let log = within(store.read(job, 0, None)).await.unwrap();
        let mine: Vec<_> = placed.iter().filter(|(j, _, _)| *j == job).collect();
        let total: usize = mine.iter().map(|(_, _, r)| r.len()).sum();
        assert_eq!(log.len(), total, "{job}: no byte lost or duplicated");
        assert_eq!(store.len(job).unwrap(), total as u64);
        for (_, offset, record) in &mine {
            let at = *offset as usize;
            assert_eq!(
                &log[at..at + record.len()],
                record.as_bytes(),
                "{job} at {at}"
            );
        }
        // Each thread's records appear in the order it appended them.
        let text = String::from_utf8(log).unwrap();
        for thread in 0..4 {
            let seqs: Vec<u32> = text
                .split('<')
                .filter_map(|r| r.strip_suffix('>'))
                .filter_map(|r| {
                    let mut parts = r.split(':');
                    let t: u32 = parts.next()?.parse().ok()?;
                    let s: u32 = parts.next()?.parse().ok()?;
                    (t == thread).then_some(s)
                })
                .collect();
            assert_eq!(
                seqs,
                (0..200).collect::<Vec<u32>>(),
                "{job} thread {thread}"
            );
        }
    }
}

#[tokio::test]
async fn reads_return_any_range_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_chunks(dir.path(), 7);
    let job = JobId(3);
    let data = pattern(100);
    let mut offset = 0;
    for piece in data.chunks(9) {
        assert_eq!(store.append(job, piece).unwrap(), offset);
        offset += piece.len() as u64;
    }
    assert_eq!(within(store.flush(job)).await.unwrap(), 100);
    let starts: Vec<u64> = chunks(&dir.path().join("job-3"))
        .unwrap()
        .iter()
        .map(|(start, _)| *start)
        .collect();
    assert_eq!(starts, (0..100).step_by(7).collect::<Vec<u64>>());
    for from in 0..=101 {
        for to in [from, from + 1, from + 6, from + 7, from + 8, from + 50, 200] {
            let got = within(store.read(job, from, Some(to))).await.unwrap();
            let (a, b) = ((from as usize).min(100), (to as usize).min(100));
            assert_eq!(got, data[a..b.max(a)], "[{from}, {to})");
        }
    }
    assert_eq!(within(store.read(job, 95, None)).await.unwrap(), data[95..]);
}

#[tokio::test]
async fn a_read_right_after_an_append_waits_for_the_bytes_instead_of_showing_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_chunks(dir.path(), 1024);
    let job = JobId(5);
    let data = pattern(50_000);
    for piece in data.chunks(100) {
        store.append(job, piece).unwrap();
        let _ = store.len(job).unwrap();
    }
    // Most of it is likely still queued: the read must wait for it, not stop short.
    assert_eq!(within(store.read(job, 0, None)).await.unwrap(), data);
}

#[tokio::test]
async fn reopening_recovers_lengths_and_appends_continue_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(300);
    {
        let store = tiny_chunks(dir.path(), 16);
        store.append(JobId(1), &data[..200]).unwrap();
        store.append(JobId(2), b"other").unwrap();
        // Dropped without a flush: dropping writes and syncs what is queued.
    }
    // A different chunk size in the next life: readers go by the chunk names.
    let store = tiny_chunks(dir.path(), 50);
    assert_eq!(store.len(JobId(1)).unwrap(), 200);
    assert_eq!(store.len(JobId(2)).unwrap(), 5);
    assert_eq!(store.len(JobId(9)).unwrap(), 0, "a job without a log");
    assert_eq!(store.append(JobId(1), &data[200..]).unwrap(), 200);
    assert_eq!(within(store.read(JobId(1), 0, None)).await.unwrap(), data);
    assert_eq!(
        within(store.read(JobId(2), 0, None)).await.unwrap(),
        b"other"
    );
}

#[tokio::test]
async fn flushed_bytes_are_visible_to_a_fresh_store_on_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_chunks(dir.path(), 4096);
    let job = JobId(8);
    let data = pattern(10_000);
    for piece in data.chunks(333) {
        store.append(job, piece).unwrap();
    }
    assert_eq!(within(store.flush(job)).await.unwrap(), 10_000);
    assert_eq!(
        within(store.flush(job)).await.unwrap(),
        10_000,
        "a second flush finds nothing to do"
    );
    // As if the process had been killed here: a second store reads the files as they are.
    let fresh = tiny_chunks(dir.path(), 4096);
    assert_eq!(fresh.len(job).unwrap(), 10_000);
    assert_eq!(within(fresh.read(job, 0, None)).await.unwrap(), data);
}

#[tokio::test]
async fn written_bytes_are_synced_within_the_interval_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        writers: 1,
        chunk_size: 1024,
        sync_interval: Duration::from_millis(10),
    };
    let store = FileLogStore::open_with(dir.path(), options).unwrap();
    let job = JobId(4);
    store.append(job, b"quiet line\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let synced = || {
        let (log, _) = store.snapshot(job).unwrap();
        log.synced.load(std::sync::atomic::Ordering::Acquire)
    };
    while synced() < 11 {
        assert!(
            Instant::now() < deadline,
            "not synced after 10 s: likely deadlocked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test]
async fn empty_appends_and_reads_past_the_end_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileLogStore::open(dir.path(), 1).unwrap();
    let job = JobId(6);
    assert_eq!(store.append(job, b"").unwrap(), 0);
    assert_eq!(within(store.flush(job)).await.unwrap(), 0);
    assert!(
        !dir.path().join("job-6").exists(),
        "no files for an empty log"
    );
    store.append(job, b"abc").unwrap();
    assert_eq!(store.append(job, b"").unwrap(), 3);
    assert!(within(store.read(job, 3, None)).await.unwrap().is_empty());
    assert!(
        within(store.read(job, 10, Some(20)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        within(store.read(job, 2, Some(1)))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_unusable_job_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_chunks(dir.path(), 4);
    // Found at the first use: the job's directory is a file.
    let blocked = JobId(1);
    std::fs::write(dir.path().join("job-1"), b"not a directory").unwrap();
    assert!(matches!(
        store.append(blocked, b"x"),
        Err(LogError::Io { job, .. }) if job == blocked
    ));
    assert!(matches!(store.len(blocked), Err(LogError::Io { .. })));
    assert!(matches!(
        within(store.flush(blocked)).await,
        Err(LogError::Io { .. })
    ));

    // Found by the writer: the next chunk cannot be created (a directory holds its name).
    let job = JobId(2);
    assert_eq!(store.len(job).unwrap(), 0);
    std::fs::create_dir_all(dir.path().join("job-2").join(chunk_name(4))).unwrap();
    assert_eq!(store.append(job, b"0123456789").unwrap(), 0);
    let err = within(store.flush(job)).await.unwrap_err();
    assert!(
        matches!(&err, LogError::Io { job: j, .. } if *j == job),
        "{err:?}"
    );
    assert!(
        matches!(store.append(job, b"more"), Err(LogError::Io { .. })),
        "a failed log stays failed: a later append would leave a gap"
    );

    // Unreadable by permissions, where they apply (root reads everything).
    let locked = dir.path().join("job-3");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join(chunk_name(0)), b"abc").unwrap();
    set_mode(&locked, 0o000);
    if std::fs::read_dir(&locked).is_err() {
        assert!(matches!(store.len(JobId(3)), Err(LogError::Io { .. })));
    }
    set_mode(&locked, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn idle_logs_are_forgotten_and_read_again_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = tiny_chunks(dir.path(), 1024);
    let job = JobId(1);
    store.append(job, b"before").unwrap();
    within(store.flush(job)).await.unwrap();
    // Many short-lived jobs: every shard fills past its threshold twice and forgets the logs
    // that stayed idle and fully synced in between.
    let many = 2 * 40 * super::FORGET_AT as u64;
    for id in 100..100 + many {
        store.len(JobId(id)).unwrap();
    }
    let known: usize = store
        .shards
        .iter()
        .map(|s| s.lock().unwrap().logs.len())
        .sum();
    assert!((known as u64) < many, "the registry is bounded: {known}");
    assert!(
        !store.shard(job).logs.contains_key(&job),
        "the idle log was forgotten"
    );
    assert_eq!(store.len(job).unwrap(), 6);
    assert_eq!(store.append(job, b" after").unwrap(), 6);
    assert_eq!(
        within(store.read(job, 0, None)).await.unwrap(),
        b"before after"
    );
}
