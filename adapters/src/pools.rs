//! What the launchers of ephemeral workers share: a pool's settings and the command line of a
//! one-job agent. The launchers themselves are `docker::PoolLauncher` (containers, through
//! bollard) and `kube::PoolLauncher` (pods, through the kube client); both implement
//! [`hodei_domain::ports::Launcher`].

use std::collections::BTreeMap;

use hodei_domain::model::{Label, Resources};
use hodei_domain::ports::WorkerLaunch;

/// The label naming the pool on each of its workers' containers or pods.
pub const POOL_LABEL: &str = "hodei.pool";
/// The label naming the Hodei store the worker belongs to (another Hodei on the same engine
/// leaves it alone).
pub const OWNER_LABEL: &str = "hodei.pool-owner";
/// The variable that carries a worker's one-job credential to `hodei agent`.
pub const CREDENTIAL_VARIABLE: &str = "HODEI_AGENT_CREDENTIAL";
/// Where Hodei's binary is in a worker's image.
pub const HODEI_BINARY: &str = "/usr/local/bin/hodei";

/// A pool's settings, as its launcher needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPool {
    pub name: String,
    /// The labels its workers offer.
    pub labels: Vec<Label>,
    /// The image of its workers (with Hodei's binary at [`HODEI_BINARY`]).
    pub image: String,
    pub resources: Resources,
    /// The Hodei store the pool belongs to.
    pub owner: String,
}

impl WorkerPool {
    /// The labels every worker of the pool carries: pool and owner, which find them.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (POOL_LABEL.to_owned(), self.name.clone()),
            (OWNER_LABEL.to_owned(), self.owner.clone()),
        ])
    }
}

/// The arguments of `hodei` that a worker runs: a one-job agent of the pool's labels, named
/// for the worker, that reaches the server at its URL. The credential is not among them: it
/// goes in [`CREDENTIAL_VARIABLE`].
pub fn agent_args(pool: &WorkerPool, worker: &WorkerLaunch) -> Vec<String> {
    let labels: Vec<&str> = pool.labels.iter().map(Label::as_str).collect();
    vec![
        "agent".into(),
        "--one-job".into(),
        "--server".into(),
        worker.server_url.clone(),
        "--name".into(),
        worker.name.clone(),
        "--labels".into(),
        labels.join(","),
        "--slots".into(),
        "1".into(),
        "--idle-timeout".into(),
        worker.idle_timeout.as_secs().max(1).to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_a_one_job_agent_of_the_pools_labels_without_its_credential_in_argv() {
        let pool = WorkerPool {
            name: "linux".into(),
            labels: vec!["linux".parse().unwrap(), "ephemeral".parse().unwrap()],
            image: "hodei:dev".into(),
            resources: Resources::default(),
            owner: "store-1".into(),
        };
        let worker = WorkerLaunch {
            name: "hodei-pool-linux-abc".into(),
            server_url: "http://hodei:8080".into(),
            credential: "hodei_secret".into(),
            idle_timeout: std::time::Duration::from_secs(90),
        };
        let args = agent_args(&pool, &worker);
        assert_eq!(
            args.join(" "),
            "agent --one-job --server http://hodei:8080 --name hodei-pool-linux-abc --labels linux,ephemeral --slots 1 --idle-timeout 90"
        );
        assert!(!args.iter().any(|a| a.contains("secret")));
        assert_eq!(
            pool.selector(),
            BTreeMap::from([
                ("hodei.pool".to_owned(), "linux".to_owned()),
                ("hodei.pool-owner".to_owned(), "store-1".to_owned())
            ])
        );
    }
}
