//! The queue view: why a queued job waits ([`WaitReason`]), where it stands
//! ([`Cluster::position`], [`Cluster::queue_order`]), which workers could take it
//! ([`Cluster::candidates`]) and its effective priority now.
//!
//! These read the cluster; they are for the API and CLI, not for placement, and cost O(workers)
//! or O(queued jobs) per call as documented on each.

use std::collections::BTreeSet;
use std::fmt;

use super::Cluster;
use super::job::tick;
use super::worker::{WorkerEntry, WorkerState};
use crate::ids::{JobId, RunId, Timestamp, WorkerId};
use crate::model::{Label, Name, Resources};

/// Why a queued job is not placed, with what a user can act on. The first that applies, in the
/// order of the variants: a permanent reason before a passing one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// No worker at all (in any state) has these labels of the job's `runs_on`: add a worker
    /// with them or fix `runs_on`.
    NoWorkerHasLabels { missing: Vec<Label> },
    /// Each label of `runs_on` is on some worker, but no worker has them all. `closest` has the
    /// most of them and lacks `lacking`.
    NoWorkerHasAllLabels {
        closest: WorkerId,
        lacking: Vec<Label>,
    },
    /// Workers with the labels exist, but none is ready: they are draining or offline.
    EligibleWorkersDraining { draining: usize, offline: usize },
    /// No ready worker with the labels could hold the job even idle. `largest` is, per
    /// dimension, the most such a worker offers (`None` where no such worker has a slot, or where
    /// one does not count that dimension).
    InsufficientResources {
        requested: Resources,
        largest: Resources,
    },
    /// Another job of its concurrency group is placed or running.
    ConcurrencyGroupHeld {
        group: Name,
        by_job: JobId,
        by_run: RunId,
    },
    /// `eligible` ready workers could hold the job, none has a free slot and enough free CPU and
    /// memory now. `reserved` is the worker kept for this job if it starved (it takes nothing else
    /// until the job fits).
    AllEligibleBusy {
        eligible: usize,
        reserved: Option<WorkerId>,
    },
    /// The only workers with room now are kept for these starving jobs.
    EligibleWorkersReserved { for_jobs: Vec<JobId> },
    /// The job fits a worker now and waits for the next placement round; `position` queued jobs
    /// are ahead of it.
    QueuedBehind { position: usize },
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels = |labels: &[Label]| {
            labels
                .iter()
                .map(|label| format!("`{label}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            WaitReason::NoWorkerHasLabels { missing } => {
                write!(f, "no worker has the label(s) {}", labels(missing))
            }
            WaitReason::NoWorkerHasAllLabels { closest, lacking } => write!(
                f,
                "no worker has all the labels of `runs_on`; the closest, `{closest}`, lacks {}",
                labels(lacking)
            ),
            WaitReason::EligibleWorkersDraining { draining, offline } => write!(
                f,
                "every worker with the labels is unavailable \
                 ({draining} draining, {offline} offline)"
            ),
            WaitReason::InsufficientResources { requested, largest } => write!(
                f,
                "no ready worker with the labels is big enough: requested {}, largest offered {}",
                show(*requested),
                show(*largest)
            ),
            WaitReason::ConcurrencyGroupHeld {
                group,
                by_job,
                by_run,
            } => write!(
                f,
                "concurrency group `{group}` is held by {by_job} of {by_run}"
            ),
            WaitReason::AllEligibleBusy { eligible, reserved } => {
                write!(f, "all {eligible} eligible worker(s) are busy")?;
                match reserved {
                    Some(worker) => write!(f, "; `{worker}` is kept for this job"),
                    None => Ok(()),
                }
            }
            WaitReason::EligibleWorkersReserved { for_jobs } => {
                let jobs: Vec<String> = for_jobs.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the workers with room are kept for starving job(s) {}",
                    jobs.join(", ")
                )
            }
            WaitReason::QueuedBehind { position } => {
                write!(f, "waiting for the next placement, {position} job(s) ahead")
            }
        }
    }
}

fn show(resources: Resources) -> String {
    let cpu = resources.cpu.map_or("-".to_owned(), |cpu| cpu.to_string());
    let memory = resources
        .memory
        .map_or("-".to_owned(), |memory| memory.to_string());
    format!("cpu {cpu}, memory {memory}")
}

impl Cluster {
    /// Why a queued job waits, or `None` if it is not queued. O(workers).
    pub fn explain(&self, job: JobId) -> Option<WaitReason> {
        let index = *self.job_ids.get(&job)?;
        let entry = &self.jobs[index];
        entry.lane()?;
        let class = &self.classes[entry.class];
        let need = &self.needs[class.need];
        if need.pools.is_empty() {
            return Some(self.missing_labels(&need.labels));
        }
        let eligible: Vec<(u32, &WorkerEntry)> = need
            .pools
            .iter()
            .flat_map(|&pool| self.pools[pool].workers.iter())
            .map(|&worker| (worker, &self.workers[worker]))
            .collect();
        let ready: Vec<(u32, &WorkerEntry)> = eligible
            .iter()
            .copied()
            .filter(|(_, worker)| worker.spec.state == WorkerState::Ready)
            .collect();
        if ready.is_empty() {
            let count = |state| {
                eligible
                    .iter()
                    .filter(|(_, worker)| worker.spec.state == state)
                    .count()
            };
            return Some(WaitReason::EligibleWorkersDraining {
                draining: count(WorkerState::Draining),
                offline: count(WorkerState::Offline),
            });
        }
        let holders: Vec<(u32, &WorkerEntry)> = ready
            .iter()
            .copied()
            .filter(|(_, worker)| worker.could_hold(class.demand))
            .collect();
        if holders.is_empty() {
            return Some(WaitReason::InsufficientResources {
                requested: class.demand.resources(),
                largest: largest(&ready),
            });
        }
        if let Some(group) = entry.group
            && let Some(holder) = self.groups[group].holder
        {
            return Some(WaitReason::ConcurrencyGroupHeld {
                group: self.groups[group].name.clone(),
                by_job: self.jobs[holder].id,
                by_run: self.jobs[holder].run,
            });
        }
        let with_room: Vec<&WorkerEntry> = holders
            .iter()
            .map(|(_, worker)| *worker)
            .filter(|worker| worker.fits_now(class.demand))
            .collect();
        if with_room.is_empty() {
            return Some(WaitReason::AllEligibleBusy {
                eligible: holders.len(),
                reserved: entry
                    .reserved
                    .map(|worker| self.workers[worker].spec.id.clone()),
            });
        }
        if with_room
            .iter()
            .all(|worker| worker.reserved_for.is_some_and(|j| j != index))
        {
            let for_jobs: BTreeSet<JobId> = with_room
                .iter()
                .filter_map(|worker| worker.reserved_for)
                .map(|j| self.jobs[j].id)
                .collect();
            return Some(WaitReason::EligibleWorkersReserved {
                for_jobs: for_jobs.into_iter().collect(),
            });
        }
        Some(WaitReason::QueuedBehind {
            position: self.position(job)?,
        })
    }

    fn missing_labels(&self, runs_on: &[Label]) -> WaitReason {
        let missing: Vec<Label> = runs_on
            .iter()
            .filter(|label| {
                !self
                    .pools
                    .iter()
                    .any(|(_, pool)| pool.labels.contains(*label))
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            return WaitReason::NoWorkerHasLabels { missing };
        }
        let (_, closest) = self
            .workers
            .iter()
            .map(|(_, worker)| {
                let has = runs_on
                    .iter()
                    .filter(|label| worker.spec.labels.contains(*label))
                    .count();
                // Most labels first, then the worker registered first.
                ((std::cmp::Reverse(has), worker.reg), worker)
            })
            .min_by_key(|(key, _)| *key)
            .expect("labels that some worker has imply a worker");
        WaitReason::NoWorkerHasAllLabels {
            closest: closest.spec.id.clone(),
            lacking: runs_on
                .iter()
                .filter(|label| !closest.spec.labels.contains(*label))
                .cloned()
                .collect(),
        }
    }

    /// How many queued jobs are ahead of a queued job in the policy's order (0: it is first), or
    /// `None` if it is not queued. Jobs that cannot be placed now count too. O(queued jobs).
    pub fn position(&self, job: JobId) -> Option<usize> {
        let index = *self.job_ids.get(&job)?;
        self.jobs[index].lane()?;
        let key = self.order_key(index);
        Some(
            self.queued_indices()
                .filter(|&other| self.order_key(other) < key)
                .count(),
        )
    }

    /// Every queued job in the policy's order, the next to be considered first. O(n log n).
    pub fn queue_order(&self) -> Vec<JobId> {
        let mut order: Vec<u32> = self.queued_indices().collect();
        order.sort_by_key(|&job| self.order_key(job));
        order.into_iter().map(|job| self.jobs[job].id).collect()
    }

    /// The workers that could take a queued job: ready, with all its labels, and able to hold it
    /// when idle (whether or not they have room now), sorted by id; `None` if it is not queued.
    /// O(workers).
    pub fn candidates(&self, job: JobId) -> Option<Vec<WorkerId>> {
        let index = *self.job_ids.get(&job)?;
        let entry = &self.jobs[index];
        entry.lane()?;
        let class = &self.classes[entry.class];
        let mut workers: Vec<WorkerId> = self.needs[class.need]
            .pools
            .iter()
            .flat_map(|&pool| self.pools[pool].workers.iter())
            .map(|&worker| &self.workers[worker])
            .filter(|worker| {
                worker.spec.state == WorkerState::Ready && worker.could_hold(class.demand)
            })
            .map(|worker| worker.spec.id.clone())
            .collect();
        workers.sort();
        Some(workers)
    }

    /// A queued job's priority plus the aging ticks it has waited at `now`; `None` if it is not
    /// queued.
    pub fn effective_priority(&self, job: JobId, now: Timestamp) -> Option<i64> {
        let entry = &self.jobs[*self.job_ids.get(&job)?];
        entry.lane()?;
        Some(tick(now, self.aging_ms) - entry.rank)
    }

    fn queued_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.jobs
            .iter()
            .filter(|(_, entry)| entry.lane().is_some())
            .map(|(index, _)| index)
    }

    /// The policy's order: rank, then the project's running jobs, then `seq`.
    fn order_key(&self, job: u32) -> (i64, u32, u64, u32) {
        let entry = &self.jobs[job];
        (
            entry.rank,
            self.running[entry.project as usize],
            entry.seq,
            job,
        )
    }
}

/// Per dimension, the most any of these workers with a slot offers; `None` if none has a slot or
/// one of them does not count that dimension.
fn largest(workers: &[(u32, &WorkerEntry)]) -> Resources {
    let with_slot: Vec<&WorkerEntry> = workers
        .iter()
        .map(|(_, worker)| *worker)
        .filter(|worker| worker.spec.slots >= 1)
        .collect();
    if with_slot.is_empty() {
        return Resources::default();
    }
    let cpu = with_slot
        .iter()
        .map(|worker| worker.spec.capacity.cpu)
        .collect::<Option<Vec<_>>>()
        .and_then(|cpus| cpus.into_iter().max());
    let memory = with_slot
        .iter()
        .map(|worker| worker.spec.capacity.memory)
        .collect::<Option<Vec<_>>>()
        .and_then(|memories| memories.into_iter().max());
    Resources { cpu, memory }
}
