//! How `hodei run` ends: whatever its actors are doing when it stops, it releases them without
//! an internal error, and an internal error is never an exit with success.

use super::{hodei, run, scratch, text};

/// `hodei run --store DB` with nothing to resume stops while its actors still read the store
/// as they start. Those reads used to be dropped after the runtime had gone, and sqlx panicked
/// returning their connections ("this functionality requires a Tokio context") in about one
/// start of six, and the process exited 0. Forty starts make a miss of that very unlikely.
#[test]
fn resuming_an_empty_store_repeatedly_ends_cleanly_every_time() {
    let dir = scratch("resume-empty");
    let store = dir.join("runs.db");
    for attempt in 1..=40 {
        let out = run(hodei().arg("run").arg("--store").arg(&store));
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("internal error") && !stderr.contains("panicked"),
            "start {attempt}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "start {attempt}: {stderr}");
        assert_eq!(
            text(&out.stdout),
            "Nothing to run: the store has no unfinished run.\n"
        );
    }
}
