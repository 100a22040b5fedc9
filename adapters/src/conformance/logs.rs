//! The logs of jobs on every store: contiguous offsets under concurrent appends, any range
//! read back, no gap while bytes are queued, lengths after a reopening, a second store on the
//! same database or directory, the agent's resend from the committed length.

use std::sync::Arc;

use hodei_domain::ids::JobId;

use super::{Backend, conformance, within};

conformance!(
    concurrent_appends_to_many_jobs_get_contiguous_offsets_in_order,
    a_read_right_after_an_append_waits_for_the_bytes_instead_of_showing_a_gap,
    reopening_recovers_lengths_and_appends_continue_where_they_stopped,
    flushed_bytes_are_visible_to_a_fresh_store_on_the_same_directory,
    empty_appends_and_reads_past_the_end_are_harmless,
    reads_return_any_range_across_stored_pieces,
    an_agent_resending_from_the_committed_length_neither_loses_nor_repeats,
);

/// Deterministic, non-repeating-looking bytes: `pattern(n)[i]` depends on `i`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn concurrent_appends_to_many_jobs_get_contiguous_offsets_in_order(backend: Backend) {
    let place = backend.place();
    let store = place.open_logs().await;
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

async fn a_read_right_after_an_append_waits_for_the_bytes_instead_of_showing_a_gap(
    backend: Backend,
) {
    let store = backend.place().open_logs().await;
    let job = JobId(5);
    let data = pattern(50_000);
    for piece in data.chunks(100) {
        store.append(job, piece).unwrap();
        let _ = store.len(job).unwrap();
    }
    // Most of it is likely still queued: the read must wait for it, not stop short.
    assert_eq!(within(store.read(job, 0, None)).await.unwrap(), data);
}

async fn reopening_recovers_lengths_and_appends_continue_where_they_stopped(backend: Backend) {
    let place = backend.place();
    let data = pattern(300);
    {
        let store = place.open_logs().await;
        store.append(JobId(1), &data[..200]).unwrap();
        store.append(JobId(2), b"other").unwrap();
        // Dropped without a flush: dropping writes and syncs what is queued.
    }
    let store = place.open_logs().await;
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

async fn flushed_bytes_are_visible_to_a_fresh_store_on_the_same_directory(backend: Backend) {
    let place = backend.place();
    let store = place.open_logs().await;
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
    let fresh = place.open_logs().await;
    assert_eq!(fresh.len(job).unwrap(), 10_000);
    assert_eq!(within(fresh.read(job, 0, None)).await.unwrap(), data);
}

async fn empty_appends_and_reads_past_the_end_are_harmless(backend: Backend) {
    let store = backend.place().open_logs().await;
    let job = JobId(6);
    assert_eq!(store.append(job, b"").unwrap(), 0);
    assert_eq!(within(store.flush(job)).await.unwrap(), 0);
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

async fn reads_return_any_range_across_stored_pieces(backend: Backend) {
    let store = backend.place().open_logs().await;
    let job = JobId(3);
    let data = pattern(100);
    let mut offset = 0;
    for piece in data.chunks(9) {
        assert_eq!(store.append(job, piece).unwrap(), offset);
        offset += piece.len() as u64;
        // Each piece stored on its own (a chunk row, or a file cut at 64 bytes).
        within(store.flush(job)).await.unwrap();
    }
    assert_eq!(within(store.flush(job)).await.unwrap(), 100);
    for from in 0..=101 {
        for to in [
            from,
            from + 1,
            from + 8,
            from + 9,
            from + 10,
            from + 50,
            200,
        ] {
            let got = within(store.read(job, from, Some(to))).await.unwrap();
            let (a, b) = ((from as usize).min(100), (to as usize).min(100));
            assert_eq!(got, data[a..b.max(a)], "[{from}, {to})");
        }
    }
    assert_eq!(within(store.read(job, 95, None)).await.unwrap(), data[95..]);
}

async fn an_agent_resending_from_the_committed_length_neither_loses_nor_repeats(backend: Backend) {
    // What an agent's append at an offset does with the port: take what lies beyond the
    // committed length, append it there.
    let store = backend.place().open_logs().await;
    let job = JobId(11);
    let data = pattern(1_000);
    let mut acknowledged = 0u64;
    for (offset, piece) in [
        (0, 0..300),
        (200, 200..600),
        (600, 600..1_000),
        (100, 100..400),
    ] {
        let committed = within(store.settle(job)).await.unwrap();
        assert_eq!(committed, acknowledged);
        let skip = usize::try_from(committed.saturating_sub(offset)).unwrap();
        let sent = &data[piece];
        let fresh = &sent[skip.min(sent.len())..];
        if !fresh.is_empty() {
            assert_eq!(store.append(job, fresh).unwrap(), committed);
        }
        acknowledged = within(store.settle(job)).await.unwrap();
    }
    assert_eq!(acknowledged, 1_000);
    assert_eq!(within(store.read(job, 0, None)).await.unwrap(), data);
}
