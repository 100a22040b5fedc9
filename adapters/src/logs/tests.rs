//! The log store against real files in temporary directories: chunk files, syncing, broken
//! directories, forgetting idle logs. What every log store must do is in the conformance suite
//! (`crate::conformance::logs`), run against this one too.

use std::future::Future;
use std::path::Path;
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

#[tokio::test]
async fn an_empty_log_has_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileLogStore::open(dir.path(), 1).unwrap();
    assert_eq!(store.append(JobId(6), b"").unwrap(), 0);
    assert_eq!(within(store.flush(JobId(6))).await.unwrap(), 0);
    assert!(!dir.path().join("job-6").exists());
}
