//! What to do, at the start of a life of Hodei, with the pods and Secrets an earlier life left
//! on the cluster: the pure half of reconciliation. Hodei lists its objects by the label
//! `hodei.io/instance` and hands them here with the job attempts that the store shows running
//! (each with its lease epoch); [`reconcile`] says which pods to adopt and which objects to
//! delete, so that nothing is orphaned when Hodei dies.

use std::collections::{BTreeMap, BTreeSet};

use super::names::{PodKey, parse_labels};

/// An object of this instance found on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The kinds of object a job attempt creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Secret,
}

/// One move of reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Move {
    /// The pod of a running attempt under its current lease: the job goes on with it.
    Adopt { key: PodKey, pod: String },
    /// An object that no running attempt owns (its attempt ended, a newer epoch took it, or
    /// its labels are not Hodei's): it goes.
    Delete { kind: Kind, name: String },
}

/// The moves for the objects `found`, given the attempts that run (`live`, with their lease
/// epochs). A pod is adopted only when its run, job, attempt **and** epoch are those of a live
/// attempt: a pod of a deposed epoch is deleted, never adopted. A Secret stays when its pod is
/// adopted (it goes with its pod otherwise, and is deleted here too, for a Secret whose pod was
/// never made). Adopt moves come first, then deletes; each object gets one move.
pub fn reconcile(found: &[Found], live: &[PodKey]) -> Vec<Move> {
    let live: BTreeSet<PodKey> = live.iter().copied().collect();
    let adopted: BTreeSet<PodKey> = found
        .iter()
        .filter(|object| object.kind == Kind::Pod)
        .filter_map(|object| parse_labels(&object.labels))
        .filter(|key| live.contains(key))
        .collect();
    let mut moves: Vec<Move> = found
        .iter()
        .filter_map(|object| match (parse_labels(&object.labels), object.kind) {
            (Some(key), Kind::Pod) if adopted.contains(&key) => Some(Move::Adopt {
                key,
                pod: object.name.clone(),
            }),
            // The Secret of an adopted pod stays with it.
            (Some(key), Kind::Secret) if adopted.contains(&key) => None,
            _ => Some(Move::Delete {
                kind: object.kind,
                name: object.name.clone(),
            }),
        })
        .collect();
    moves.sort();
    moves.dedup();
    moves
}

#[cfg(test)]
mod tests {
    use hodei_domain::ids::{JobId, RunId};
    use hodei_domain::state::Attempt;

    use super::*;
    use crate::kube::names::{labels, pod_name};

    fn key(job: u64, attempt: u32, epoch: u64) -> PodKey {
        PodKey {
            run: RunId(1),
            job: JobId(job),
            attempt: Attempt::new(attempt).expect("attempt"),
            epoch,
        }
    }

    fn found(kind: Kind, key: PodKey) -> Found {
        Found {
            kind,
            name: pod_name("s", key),
            labels: labels("s", key),
        }
    }

    #[test]
    fn live_pods_are_adopted_and_everything_else_is_deleted() {
        let running = key(1, 1, 3);
        let deposed = key(2, 1, 4);
        let ended = key(3, 2, 0);
        let mut odd = found(Kind::Pod, key(4, 1, 0));
        odd.labels.remove("hodei.io/epoch");
        let moves = reconcile(
            &[
                found(Kind::Pod, running),
                found(Kind::Secret, running),
                found(Kind::Pod, deposed),
                found(Kind::Secret, deposed),
                found(Kind::Pod, ended),
                found(Kind::Secret, key(5, 1, 0)),
                odd.clone(),
            ],
            &[running, key(2, 1, 5)],
        );
        assert_eq!(
            moves,
            [
                Move::Adopt {
                    key: running,
                    pod: pod_name("s", running)
                },
                Move::Delete {
                    kind: Kind::Pod,
                    name: pod_name("s", deposed)
                },
                Move::Delete {
                    kind: Kind::Pod,
                    name: pod_name("s", ended)
                },
                Move::Delete {
                    kind: Kind::Pod,
                    name: odd.name
                },
                Move::Delete {
                    kind: Kind::Secret,
                    name: pod_name("s", deposed)
                },
                Move::Delete {
                    kind: Kind::Secret,
                    name: pod_name("s", key(5, 1, 0))
                },
            ]
        );
    }

    #[test]
    fn a_second_reconciliation_after_the_moves_finds_nothing_to_do_but_adopt() {
        let running = key(1, 1, 1);
        let found = [found(Kind::Pod, running), found(Kind::Secret, running)];
        let first = reconcile(&found, &[running]);
        assert_eq!(reconcile(&found, &[running]), first);
        assert_eq!(reconcile(&[], &[running]), []);
    }
}
