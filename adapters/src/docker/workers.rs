//! Ephemeral workers of a pool as containers: [`PoolLauncher`] starts each as a container of
//! the pool's image running `hodei agent --one-job` on the pool's network, finds them by the
//! labels of [`crate::pools::WorkerPool::selector`], and removes them. The container's
//! configuration is the pure [`worker_container`].
//!
//! The credential reaches the agent in its environment ([`crate::pools::CREDENTIAL_VARIABLE`]);
//! whoever can inspect the engine's containers can read it while the worker lives, as they can
//! read everything the worker does. It opens nothing once the worker is removed.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::{API_DEFAULT_VERSION, Docker};
use hodei_domain::model::PullPolicy;
use hodei_domain::ports::{BoxFuture, LaunchError, Launched, Launcher, WorkerLaunch};

use super::error::DockerError;
use super::{convert, engine, images};
use crate::pools::{CREDENTIAL_VARIABLE, HODEI_BINARY, WorkerPool, agent_args};

/// A pool's settings on Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerPool {
    pub pool: WorkerPool,
    /// The network its containers join; `None`: the engine's default bridge.
    pub network: Option<String>,
}

/// The container of one worker.
pub fn worker_container(pool: &DockerPool, worker: &WorkerLaunch) -> ContainerCreateBody {
    let limits = convert::limits(pool.pool.resources);
    ContainerCreateBody {
        image: Some(pool.pool.image.clone()),
        entrypoint: Some(vec![HODEI_BINARY.to_owned()]),
        cmd: Some(agent_args(&pool.pool, worker)),
        env: Some(vec![format!("{CREDENTIAL_VARIABLE}={}", worker.credential)]),
        labels: Some(pool.pool.selector().into_iter().collect()),
        host_config: Some(HostConfig {
            network_mode: pool.network.clone(),
            ..limits
        }),
        ..Default::default()
    }
}

/// Starts, finds and removes a pool's workers on the Docker engine of this machine.
pub struct PoolLauncher {
    docker: Docker,
    pool: DockerPool,
}

impl PoolLauncher {
    /// A launcher on the engine at `socket` (`unix:///var/run/docker.sock` and the like).
    pub fn connect(socket: &str, pool: DockerPool) -> Result<PoolLauncher, LaunchError> {
        let docker = Docker::connect_with_unix(socket, 120, API_DEFAULT_VERSION)
            .map_err(|err| refusal(DockerError::engine(format!("connect at {socket}"), err)))?;
        Ok(PoolLauncher { docker, pool })
    }

    fn labels(&self) -> HashMap<String, String> {
        self.pool.pool.selector().into_iter().collect()
    }
}

fn refusal(err: DockerError) -> LaunchError {
    match err {
        DockerError::Unreachable { .. } => LaunchError::Unavailable {
            engine: "the Docker engine",
            reason: err.to_string(),
        },
        err => LaunchError::Refused {
            reason: err.to_string(),
        },
    }
}

impl Launcher for PoolLauncher {
    fn engine(&self) -> &'static str {
        "docker"
    }

    fn launch<'a>(&'a self, worker: &'a WorkerLaunch) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            images::ensure(
                &self.docker,
                &self.pool.pool.image,
                PullPolicy::IfNotPresent,
            )
            .await
            .map_err(refusal)?;
            let body = worker_container(&self.pool, worker);
            engine::run(&self.docker, &worker.name, body)
                .await
                .map_err(refusal)?;
            Ok(())
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<Launched>, LaunchError>> {
        Box::pin(async move {
            let found = engine::containers(&self.docker, &self.labels())
                .await
                .map_err(refusal)?;
            let mut workers = Vec::with_capacity(found.len());
            for container in found {
                let Some(name) = container
                    .names
                    .iter()
                    .flatten()
                    .next()
                    .map(|n| n.trim_start_matches('/').to_owned())
                else {
                    continue;
                };
                let running = matches!(
                    container.state.map(|s| s.to_string()).as_deref(),
                    Some("running" | "restarting" | "paused")
                );
                let exited = if running {
                    None
                } else {
                    // Its exit code is in its record (a container never started has none).
                    let code = engine::inspect(&self.docker, &name)
                        .await
                        .ok()
                        .and_then(|record| record.state)
                        .filter(|state| {
                            state
                                .finished_at
                                .as_deref()
                                .is_some_and(|at| !at.starts_with("0001"))
                        })
                        .and_then(|state| state.exit_code);
                    Some(code)
                };
                workers.push(Launched { name, exited });
            }
            Ok(workers)
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move { engine::remove(&self.docker, name).await.map_err(refusal) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_domain::model::Resources;

    #[test]
    fn a_worker_container_runs_the_one_job_agent_with_its_credential_in_its_environment() {
        let pool = DockerPool {
            pool: WorkerPool {
                name: "linux".into(),
                labels: vec!["linux".parse().unwrap()],
                image: "hodei:dev".into(),
                resources: Resources {
                    cpu: Some("500m".parse().unwrap()),
                    memory: Some("1Gi".parse().unwrap()),
                },
                owner: "store-1".into(),
            },
            network: Some("ci".into()),
        };
        let worker = WorkerLaunch {
            name: "hodei-pool-linux-abc".into(),
            server_url: "http://hodei:8080".into(),
            credential: "hodei_secret".into(),
            idle_timeout: std::time::Duration::from_secs(60),
        };
        let body = worker_container(&pool, &worker);
        assert_eq!(body.image.as_deref(), Some("hodei:dev"));
        assert_eq!(
            body.entrypoint,
            Some(vec!["/usr/local/bin/hodei".to_owned()])
        );
        assert_eq!(body.cmd.as_ref().unwrap()[..2], ["agent", "--one-job"]);
        assert_eq!(
            body.env,
            Some(vec!["HODEI_AGENT_CREDENTIAL=hodei_secret".to_owned()])
        );
        let labels = body.labels.unwrap();
        assert_eq!(labels["hodei.pool"], "linux");
        assert_eq!(labels["hodei.pool-owner"], "store-1");
        assert!(
            !labels.contains_key("hodei.instance"),
            "the provider's reaper must not see it"
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("ci"));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(1 << 30));
    }
}
