//! The agent desk under supervision: a desk that panics is restarted with what it knew — the
//! agents connected, the jobs offered to them — and the job goes to its agent all the same.

use std::time::Duration;

use hodei_actors::agents::{AgentSeen, JobToken, TryClaim};
use hodei_actors::contain::ActorKind;
use hodei_actors::fault::{Faults, Hits, Point};
use hodei_domain::plan::RunInputs;

use super::common::{Options, harness_with, quiet_injected_panics};

#[actix_rt::test]
async fn an_agent_desk_that_panics_is_restarted_and_keeps_its_agents_and_offers() {
    quiet_injected_panics();
    let h = harness_with(
        "desk-panic",
        Options {
            faults: Faults::panic_at(Point::AgentClaim, Hits::UpTo(2)),
            agents: Some(Duration::from_secs(60)),
            ..Options::default()
        },
    )
    .await;
    let desk = h.tree.desk.clone().expect("the tree takes agents");
    desk.send(AgentSeen {
        agent: "a1".into(),
        labels: vec!["gpu".parse().unwrap()],
        slots: 1,
        version: "test".into(),
    })
    .await
    .unwrap();
    let yaml = "name: p\njobs:\n  a:\n    runs_on: [gpu]\n    steps: [{ run: echo hi }]\n";
    let run = h.submit(yaml, RunInputs::default()).await;
    let token = JobToken {
        secret: "hodei_test-job-token".into(),
        digest: [7; 32],
    };
    // The first two claims panic in the desk; it is restarted each time and still has the
    // agent and its offer, which the third claim takes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let claimed = loop {
        let answer = desk
            .send(TryClaim {
                agent: "a1".into(),
                room: true,
                token: token.clone(),
            })
            .await;
        if let Ok(Ok(work)) = answer
            && let Some(job) = work.job
        {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was never claimed: likely lost with the desk's restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(claimed.run, run);
    assert_eq!(claimed.token, token.secret);
    assert!(
        h.tree.restarts.get(ActorKind::AgentDesk) >= 2,
        "the desk was restarted"
    );
}
