//! The names and labels of what a job attempt creates on a cluster: a pod and its Secret share
//! one name, `hodei-<instance>-<run>-<job>-<attempt>`, and carry the labels below, so that a
//! later life of Hodei finds them by label and reads the job attempt and its lease epoch back.

use std::collections::BTreeMap;
use std::fmt;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::state::Attempt;

/// The Hodei store an object belongs to: reconciliation only touches its own.
pub const INSTANCE_LABEL: &str = "hodei.io/instance";
/// The run's number.
pub const RUN_LABEL: &str = "hodei.io/run";
/// The job's number.
pub const JOB_LABEL: &str = "hodei.io/job";
/// The job attempt.
pub const ATTEMPT_LABEL: &str = "hodei.io/attempt";
/// The epoch of the lease the attempt runs under; `0` for an attempt without a lease (one that
/// the server runs itself).
pub const EPOCH_LABEL: &str = "hodei.io/epoch";
/// The job's display name, as an annotation (a label value cannot hold every name).
pub const JOB_NAME_ANNOTATION: &str = "hodei.io/job-name";

/// The longest pod name used: a pod's name is also its hostname, a DNS label of at most 63.
const MAX_NAME: usize = 63;

/// One job attempt under a lease epoch: what every object of it is named and labelled after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub run: RunId,
    pub job: JobId,
    pub attempt: Attempt,
    /// The lease's epoch; 0 without a lease.
    pub epoch: u64,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.run, self.job, self.attempt)
    }
}

/// The labels of every object of a job attempt.
pub fn labels(instance: &str, key: PodKey) -> BTreeMap<String, String> {
    BTreeMap::from([
        (INSTANCE_LABEL.to_owned(), label_value(instance)),
        (RUN_LABEL.to_owned(), key.run.0.to_string()),
        (JOB_LABEL.to_owned(), key.job.0.to_string()),
        (ATTEMPT_LABEL.to_owned(), key.attempt.to_string()),
        (EPOCH_LABEL.to_owned(), key.epoch.to_string()),
    ])
}

/// A label selector for the objects of `instance`: `hodei.io/instance=<instance>`.
pub fn instance_selector(instance: &str) -> String {
    format!("{INSTANCE_LABEL}={}", label_value(instance))
}

/// Reads a job attempt back from an object's labels; `None` if one is missing or malformed.
pub fn parse_labels(labels: &BTreeMap<String, String>) -> Option<PodKey> {
    Some(PodKey {
        run: RunId(labels.get(RUN_LABEL)?.parse().ok()?),
        job: JobId(labels.get(JOB_LABEL)?.parse().ok()?),
        attempt: Attempt::new(labels.get(ATTEMPT_LABEL)?.parse().ok()?)?,
        epoch: labels.get(EPOCH_LABEL)?.parse().ok()?,
    })
}

/// The name of a job attempt's pod and Secret: `hodei-<instance>-<run>-<job>-<attempt>`, a DNS
/// label (lower-case letters, digits and `-`, at most 63 characters). The instance is reduced
/// to those characters and shortened when the name would be too long; run, job and attempt are
/// always whole, so two attempts never share a name within one instance.
pub fn pod_name(instance: &str, key: PodKey) -> String {
    let tail = format!("-{key}");
    let room = MAX_NAME.saturating_sub("hodei-".len() + tail.len());
    let instance: String = dns_chars(instance).chars().take(room).collect();
    let instance = instance.trim_matches('-');
    if instance.is_empty() {
        format!("hodei{tail}")
    } else {
        format!("hodei-{instance}{tail}")
    }
}

/// `text` in lower case, with every character a DNS label refuses replaced by `-`.
fn dns_chars(text: &str) -> String {
    text.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `text` as a label value: at most 63 of `A-Z a-z 0-9 - _ .`, starting and ending with a
/// letter or digit; other characters become `-`.
pub fn label_value(text: &str) -> String {
    let value: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    value
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}
