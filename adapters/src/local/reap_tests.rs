//! Reconciliation against real processes: an earlier life simulated by processes that carry the
//! markers, another Hodei's processes, and this provider's own step.

use std::time::Duration;

use super::tests::{Fixture, gone, instance, running, within};
use super::*;

/// The processes of a process group, from `/proc`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse().ok())
                    == Some(pgid)
            })
        })
        .collect()
}

#[tokio::test]
async fn reap_orphans_kills_an_earlier_life_and_spares_the_rest() {
    let ws = Fixture::new("reap").await;
    let me = instance("reap");
    let spawn = |instance: &str, step: &str| {
        tokio::process::Command::new("/bin/sh")
            .args(["-c", "sleep 600 & sleep 600"])
            .env_clear()
            .env(INSTANCE_VAR, instance)
            .env(STEP_VAR, step)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawned")
    };
    let mut orphan = spawn(&me, "9/2/1/3");
    let mut stranger = spawn("another-hodei", "9/2/1/3");
    let (current, _) = ws.start("sleep 600").await;
    // Let the shell start its background child, so the whole group is there to be killed.
    let orphan_group = i32::try_from(orphan.id().expect("running")).expect("pid fits");
    let members = within("the orphan's group to form", async {
        loop {
            let members = group_members(orphan_group);
            if members.len() >= 2 {
                return members;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let found = within("reap_orphans", ws.provider.reap_orphans(&[]))
        .await
        .expect("reaped");
    let pgid = orphan.id().expect("a pid").to_string();
    let expected = Orphan {
        job: JobId(9),
        job_attempt: Attempt::new(2).expect("valid"),
        step: 1,
        step_attempt: Attempt::new(3).expect("valid"),
        id: pgid,
    };
    assert_eq!(found, [expected]);
    let status = within("the orphan to die", orphan.wait())
        .await
        .expect("reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    for member in members {
        gone(member).await;
    }
    let again = within("reap_orphans again", ws.provider.reap_orphans(&[]))
        .await
        .expect("reaped");
    assert_eq!(again, [], "idempotent");
    assert!(
        stranger.try_wait().expect("status").is_none(),
        "another Hodei's process survives"
    );
    let current_pid: i32 = current.id.parse().expect("a pid");
    assert!(running(current_pid), "this provider's own step survives");

    // The stranger's whole group: its shell is our child, so its pid (the pgid) is pinned.
    let stranger_group = i32::try_from(stranger.id().expect("running")).expect("pid fits");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(-stranger_group, libc::SIGKILL) };
    within("the stranger to die", stranger.wait())
        .await
        .expect("reaped");
    ws.done().await;
}
