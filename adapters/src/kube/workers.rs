//! Ephemeral workers of a pool as pods: [`PoolLauncher`] creates each as a pod of the pool's
//! image running `hodei agent --one-job`, with its credential in a Secret that the pod owns
//! (never in the pod's spec), finds them by the labels `hodei.io/pool` and
//! `hodei.io/pool-owner`, and deletes them. The objects are the pure [`worker_pod`] and
//! [`worker_secret`], pinned by golden files.
//!
//! The pool's pods carry none of the job pods' labels: the job reconciler leaves them alone.

use std::collections::BTreeMap;

use hodei_domain::ports::{BoxFuture, LaunchError, Launched, Launcher, WorkerLaunch};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, Pod, PodSpec, Secret, SecretKeySelector,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::error::KubeError;
use crate::pools::{CREDENTIAL_VARIABLE, HODEI_BINARY, WorkerPool, agent_args};

/// The label naming the pool on its pods and Secrets.
pub const POOL_LABEL: &str = "hodei.io/pool";
/// The label naming the Hodei store the pool belongs to.
pub const POOL_OWNER_LABEL: &str = "hodei.io/pool-owner";
/// The key of the credential in a worker's Secret.
pub const CREDENTIAL_KEY: &str = "credential";

fn labels(pool: &WorkerPool) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POOL_LABEL.to_owned(), super::label_value(&pool.name)),
        (POOL_OWNER_LABEL.to_owned(), super::label_value(&pool.owner)),
    ])
}

/// The pod of one worker: one container `agent`, the pool's resources as requests and limits,
/// its credential from its Secret, no service account token, `restartPolicy: Never`.
pub fn worker_pod(pool: &WorkerPool, namespace: &str, worker: &WorkerLaunch) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(worker.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(pool)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            containers: vec![Container {
                name: "agent".to_owned(),
                image: Some(pool.image.clone()),
                command: Some(vec![HODEI_BINARY.to_owned()]),
                args: Some(agent_args(pool, worker)),
                env: Some(vec![EnvVar {
                    name: CREDENTIAL_VARIABLE.to_owned(),
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: worker.name.clone(),
                            key: CREDENTIAL_KEY.to_owned(),
                            optional: Some(false),
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                }]),
                resources: super::pod::resources(pool.resources),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// The Secret of one worker: its credential, owned by its pod (the cluster deletes it with
/// the pod).
pub fn worker_secret(
    pool: &WorkerPool,
    namespace: &str,
    worker: &WorkerLaunch,
    pod_uid: &str,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(worker.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(pool)),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: worker.name.clone(),
                uid: pod_uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CREDENTIAL_KEY.to_owned(),
            ByteString(worker.credential.clone().into_bytes()),
        )])),
        ..Secret::default()
    }
}

/// Starts, finds and removes a pool's workers as pods of one namespace.
pub struct PoolLauncher {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    namespace: String,
    pool: WorkerPool,
}

impl PoolLauncher {
    /// A launcher in `namespace` (`None`: the client's default namespace).
    pub fn new(client: kube::Client, namespace: Option<&str>, pool: WorkerPool) -> PoolLauncher {
        let namespace = namespace
            .map(str::to_owned)
            .unwrap_or_else(|| client.default_namespace().to_owned());
        PoolLauncher {
            pods: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client, &namespace),
            namespace,
            pool,
        }
    }

    /// A launcher with the client of the environment: the kubeconfig (`KUBECONFIG`,
    /// `~/.kube/config`) or, inside a pod, its service account.
    pub async fn connect(
        namespace: Option<&str>,
        pool: WorkerPool,
    ) -> Result<PoolLauncher, LaunchError> {
        let client = kube::Client::try_default()
            .await
            .map_err(|err| LaunchError::Unavailable {
                engine: "the Kubernetes API server",
                reason: format!(
                    "no Kubernetes client (a kubeconfig or the pod's service account is needed): {err}"
                ),
            })?;
        Ok(PoolLauncher::new(client, namespace, pool))
    }

    fn selector(&self) -> String {
        labels(&self.pool)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn refusal(err: KubeError) -> LaunchError {
    match err {
        err @ KubeError::Unreachable { .. } => LaunchError::Unavailable {
            engine: "the Kubernetes API server",
            reason: err.to_string(),
        },
        err => LaunchError::Refused {
            reason: err.to_string(),
        },
    }
}

fn gone(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

impl Launcher for PoolLauncher {
    fn engine(&self) -> &'static str {
        "kubernetes"
    }

    fn launch<'a>(&'a self, worker: &'a WorkerLaunch) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            let pod = worker_pod(&self.pool, &self.namespace, worker);
            let created = self
                .pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|err| refusal(KubeError::api("create a worker's pod", &err)))?;
            let uid = created.metadata.uid.unwrap_or_default();
            let secret = worker_secret(&self.pool, &self.namespace, worker, &uid);
            if let Err(err) = self.secrets.create(&PostParams::default(), &secret).await {
                let _ = self
                    .pods
                    .delete(&worker.name, &DeleteParams::default())
                    .await;
                return Err(refusal(KubeError::api("create a worker's Secret", &err)));
            }
            Ok(())
        })
    }

    fn workers(&self) -> BoxFuture<'_, Result<Vec<Launched>, LaunchError>> {
        Box::pin(async move {
            let listed = self
                .pods
                .list(&ListParams::default().labels(&self.selector()))
                .await
                .map_err(|err| refusal(KubeError::api("list the workers' pods", &err)))?;
            Ok(listed
                .items
                .into_iter()
                .filter_map(|pod| {
                    let name = pod.metadata.name?;
                    let status = pod.status.unwrap_or_default();
                    let ended = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
                    let code = status
                        .container_statuses
                        .iter()
                        .flatten()
                        .find_map(|c| c.state.as_ref()?.terminated.as_ref())
                        .map(|t| i64::from(t.exit_code));
                    Some(Launched {
                        name,
                        exited: ended.then_some(code),
                    })
                })
                .collect())
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), LaunchError>> {
        Box::pin(async move {
            match self.pods.delete(name, &DeleteParams::default()).await {
                Err(err) if !gone(&err) => {
                    return Err(refusal(KubeError::api("delete a worker's pod", &err)));
                }
                _ => {}
            }
            // The cluster deletes the Secret with its pod; an API server without a garbage
            // collector (or a pod that never got its Secret) leaves it to this call.
            match self.secrets.delete(name, &DeleteParams::default()).await {
                Err(err) if !gone(&err) => {
                    Err(refusal(KubeError::api("delete a worker's Secret", &err)))
                }
                _ => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::pod::tests::golden;
    use hodei_domain::model::Resources;

    fn pool() -> WorkerPool {
        WorkerPool {
            name: "gpu".into(),
            labels: vec!["linux".parse().unwrap(), "gpu".parse().unwrap()],
            image: "registry.example/hodei:1".into(),
            resources: Resources {
                cpu: Some("2".parse().unwrap()),
                memory: Some("4Gi".parse().unwrap()),
            },
            owner: "store-1".into(),
        }
    }

    fn worker() -> WorkerLaunch {
        WorkerLaunch {
            name: "hodei-pool-gpu-k3x9".into(),
            server_url: "http://hodei.ci:8080".into(),
            credential: "hodei_worker-credential".into(),
            idle_timeout: std::time::Duration::from_secs(120),
        }
    }

    #[test]
    fn a_worker_pod_runs_the_one_job_agent_with_its_credential_from_its_secret() {
        let pod = worker_pod(&pool(), "ci", &worker());
        golden("worker-pod.json", &pod);
        let json = serde_json::to_string(&pod).unwrap();
        assert!(
            !json.contains("worker-credential"),
            "no credential in the pod: {json}"
        );
        let secret = worker_secret(&pool(), "ci", &worker(), "uid-1");
        golden("worker-secret.json", &secret);
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pod", "uid-1"));
    }
}
