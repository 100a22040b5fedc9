//! Approval gates under `hodei run`: a job with `approval:` runs only when the person running
//! Hodei lets it. `--approve JOB` (repeatable) approves it beforehand and `--approve all` every
//! gated job; otherwise `hodei run` asks on the terminal (`[y/N]`), and where there is no
//! terminal to ask on, it refuses. A job that is not approved is not run: its run is cancelled
//! (the post hooks run) with the reason said, and `hodei run` exits 1.
//!
//! The decision is [`decide`], a plain function; [`Gatekeeper`] hears the gates as the event bus
//! publishes them and [`keep_gates`] acts on them one at a time, so that two prompts never mix.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use actix::{Actor, Addr, Context, Handler};
use hodei_actors::messages::{ApproveJob, CancelRun, Published};
use hodei_actors::orchestrator::Orchestrator;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::Store;
use hodei_domain::state::{DomainEvent, JobState};
use tokio::sync::mpsc;

/// The gated jobs `--approve` lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// `--approve all`.
    All,
    /// `--approve NAME`...: a job's name, or for a matrix job the name of every instance.
    Jobs(BTreeSet<String>),
}

impl Granted {
    /// What the `--approve` values grant.
    pub fn from_args(values: &[String]) -> Granted {
        if values.iter().any(|v| v == "all") {
            return Granted::All;
        }
        Granted::Jobs(values.iter().cloned().collect())
    }

    /// Whether the job named `name` (`deploy`, or `test (os=alpine)` for a matrix instance) is
    /// approved beforehand.
    fn covers(&self, name: &str) -> bool {
        match self {
            Granted::All => true,
            Granted::Jobs(names) => {
                let base = name.split_once(" (").map_or(name, |(base, _)| base);
                names.contains(name) || names.contains(base)
            }
        }
    }
}

/// What to do with a job waiting at its gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `--approve` names it: approve it.
    Approve,
    /// Ask the person at the terminal.
    Ask,
    /// Nobody approved it and there is nobody to ask: do not run it.
    Refuse,
}

/// The decision for the gated job `name`, given `--approve` and whether there is a terminal to
/// ask on.
pub fn decide(granted: &Granted, name: &str, terminal: bool) -> Decision {
    if granted.covers(name) {
        Decision::Approve
    } else if terminal {
        Decision::Ask
    } else {
        Decision::Refuse
    }
}

/// Whether an answer to the prompt approves: `y` or `yes`, in any case; anything else, an
/// empty line included, does not.
pub fn approves(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Hears the jobs that reach their gate and hands them to [`keep_gates`].
pub struct Gatekeeper {
    gates: mpsc::UnboundedSender<(RunId, JobId)>,
}

impl Actor for Gatekeeper {
    type Context = Context<Self>;
}

impl Handler<Published> for Gatekeeper {
    type Result = ();

    fn handle(&mut self, msg: Published, _: &mut Context<Self>) {
        for event in msg.events.iter() {
            if let DomainEvent::JobAwaitingApproval { run, job, .. } = event {
                let _ = self.gates.send((*run, *job));
            }
        }
    }
}

impl Gatekeeper {
    /// Also keeps the gates of these runs' jobs that already wait (a run resumed from the
    /// store was waiting before Hodei stopped: no event says so again), once the returned
    /// future is awaited.
    pub fn resume_for(
        &self,
        store: Arc<dyn Store>,
        runs: Vec<RunId>,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let gates = self.gates.clone();
        async move {
            for run in runs {
                if let Ok(Some(record)) = store.run(run).await {
                    for job in record.jobs {
                        if job.state == JobState::WaitingApproval {
                            let _ = gates.send((run, job.id));
                        }
                    }
                }
            }
        }
    }
}

/// Starts keeping the gates: every job that reaches its gate (from [`Gatekeeper`], which is to
/// be subscribed to the event bus) is approved or its run cancelled, one job at a time.
pub fn keep_gates(
    store: Arc<dyn Store>,
    orchestrator: Addr<Orchestrator>,
    granted: Granted,
) -> Gatekeeper {
    let (gates, mut waiting) = mpsc::unbounded_channel();
    let terminal = std::io::stdin().is_terminal();
    actix::spawn(async move {
        let mut seen = HashSet::new();
        while let Some((run, job)) = waiting.recv().await {
            if !seen.insert(job) {
                continue;
            }
            let Ok(Some(record)) = store.run(run).await else {
                continue;
            };
            let Some(name) = record
                .jobs
                .iter()
                .find(|j| j.id == job)
                .map(|j| j.name.clone())
            else {
                continue;
            };
            let verdict = match decide(&granted, &name, terminal) {
                Decision::Approve => Ok("local user (--approve)"),
                Decision::Ask => match ask(&name, run, &record.pipeline).await {
                    true => Ok("local user (asked)"),
                    false => Err(format!(
                        "job `{name}` was not approved: cancelling {run} (its post hooks run)."
                    )),
                },
                Decision::Refuse => Err(format!(
                    "job `{name}` of {run} waits for an approval and there is no terminal to ask on: cancelling {run} (its post hooks run). Approve it beforehand with `--approve {}` (or `--approve all`).",
                    name.split_once(" (")
                        .map_or(name.as_str(), |(base, _)| base)
                )),
            };
            match verdict {
                Ok(by) => orchestrator.do_send(ApproveJob {
                    run,
                    job,
                    by: by.to_owned(),
                }),
                Err(why) => {
                    eprintln!("error: {why}");
                    orchestrator.do_send(CancelRun {
                        run,
                        by: format!("local user (`{name}` not approved)"),
                    });
                }
            }
        }
    });
    Gatekeeper { gates }
}

/// Asks on the terminal whether to approve the job; `false` when the answer is not yes or
/// standard input is closed.
async fn ask(name: &str, run: RunId, pipeline: &str) -> bool {
    let question = format!("Approve job `{name}` of {run} (pipeline `{pipeline}`)? [y/N] ");
    let answer = tokio::task::spawn_blocking(move || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(question.as_bytes());
        let _ = err.flush();
        let mut line = String::new();
        match std::io::stdin().lock().read_line(&mut line) {
            Ok(0) | Err(_) => String::new(),
            Ok(_) => line,
        }
    })
    .await;
    answer.is_ok_and(|line| approves(&line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(names: &[&str]) -> Granted {
        Granted::from_args(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn a_gated_job_is_approved_by_name_asked_on_a_terminal_and_refused_elsewhere() {
        let deploy = jobs(&["deploy"]);
        assert_eq!(decide(&deploy, "deploy", false), Decision::Approve);
        assert_eq!(decide(&deploy, "release", false), Decision::Refuse);
        assert_eq!(decide(&deploy, "release", true), Decision::Ask);
        assert_eq!(decide(&jobs(&[]), "deploy", true), Decision::Ask);
        assert_eq!(decide(&jobs(&[]), "deploy", false), Decision::Refuse);
        assert_eq!(
            decide(&jobs(&["all"]), "anything", false),
            Decision::Approve
        );
        // A matrix job's name approves each of its instances.
        let test = jobs(&["test"]);
        assert_eq!(decide(&test, "test (os=alpine)", false), Decision::Approve);
        assert_eq!(decide(&test, "tests (os=alpine)", false), Decision::Refuse);
    }

    #[test]
    fn only_yes_approves() {
        for yes in ["y\n", "Y", "yes\n", " YES "] {
            assert!(approves(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "sure"] {
            assert!(!approves(no), "{no:?}");
        }
    }
}
