//! The API half of the Kubernetes provider: a job attempt's pod and Secret created, its status
//! followed until its steps container runs, its log followed to its end across dropped
//! streams, its objects deleted, and what an earlier life left reaped. Each call is a plain
//! request of the kube client; the decisions are the pure functions beside (`status.rs`,
//! `logs.rs`, `protocol.rs`, `reconcile.rs`). Tested against a mock of the API server that
//! checks every call (`cluster_tests.rs`).

use std::collections::BTreeMap;
use std::pin::pin;
use std::time::Duration;

use futures_util::AsyncReadExt as _;
use hodei_domain::ids::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};

use super::error::KubeError;
use super::logs::LogCursor;
use super::names::{PodKey, instance_selector, parse_labels, pod_name};
use super::pod::{PodJob, PodSettings, STEPS_CONTAINER, pod, secret};
use super::protocol::TOKEN_KEY;
use super::protocol::{Decoder, Frame};
use super::reconcile::{Found, Kind, Move, reconcile};
use super::status::{Graces, PodVerdict, PodWatch};

/// A namespace of a cluster, where job attempts become pods.
#[derive(Clone)]
pub struct Cluster {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    settings: PodSettings,
    graces: Graces,
    /// How often a pod's status is read while waiting for it.
    poll: Duration,
}

/// A pod as the cluster created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub name: String,
    pub uid: String,
}

impl Cluster {
    /// The namespace `settings.namespace` through `client`, with the default [`Graces`] and a
    /// status read every second.
    pub fn new(client: kube::Client, settings: PodSettings) -> Cluster {
        Cluster {
            pods: Api::namespaced(client.clone(), &settings.namespace),
            secrets: Api::namespaced(client, &settings.namespace),
            settings,
            graces: Graces::default(),
            poll: Duration::from_secs(1),
        }
    }

    /// Other graces and another interval between status reads.
    pub fn with_graces(self, graces: Graces, poll: Duration) -> Cluster {
        Cluster {
            graces,
            poll,
            ..self
        }
    }

    /// Creates the pod of a job attempt, then its Secret (the job's `secrets` and the marker
    /// `token`) owned by the pod. A Secret that cannot be created takes the pod with it.
    ///
    /// # Errors
    /// [`KubeError::Invalid`] for a job the pod cannot run; the API server's refusal or
    /// absence otherwise.
    pub async fn create(
        &self,
        job: PodJob<'_>,
        secrets: &BTreeMap<String, String>,
        token: &str,
    ) -> Result<Created, KubeError> {
        let pod = pod(&self.settings, job)?;
        let made = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|err| KubeError::api("create the pod", &err))?;
        let name = made.metadata.name.unwrap_or_default();
        let Some(uid) = made.metadata.uid else {
            return Err(KubeError::Refused {
                action: "create the pod",
                code: 0,
                reason: "NoUid".into(),
                message: format!("the API server gave pod `{name}` no uid"),
            });
        };
        let secret = secret(&self.settings, job.key(), &uid, secrets, token);
        if let Err(err) = self.secrets.create(&PostParams::default(), &secret).await {
            // Without its Secret the pod never starts: it goes.
            let _ = self.delete(&name).await;
            return Err(KubeError::api("create the pod's Secret", &err));
        }
        Ok(Created { name, uid })
    }

    /// Reads the pod's status until it is no longer starting: the steps container runs, or
    /// it ended, or the pod failed (an image that cannot be pulled, a pod that cannot be
    /// placed, past their graces; a pod deleted). Never waits for ever.
    ///
    /// # Errors
    /// When the API server cannot be asked.
    pub async fn wait_running(&self, name: &str) -> Result<PodVerdict, KubeError> {
        let start = tokio::time::Instant::now();
        let mut watch = PodWatch::new(self.graces);
        loop {
            let (next, verdict) = self.status(name, watch, start).await?;
            watch = next;
            if verdict != PodVerdict::Starting {
                return Ok(verdict);
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Follows the log of the steps container from `cursor` to the end of the container,
    /// handing each decoded [`Frame`] to `on_frame`, once and in order. A stream that drops is
    /// opened again (from the cursor), while the pod's status says the container runs; then
    /// the rest of the log is read once more, and the pod's last verdict answered: the
    /// container's end ([`PodVerdict::Ended`]) or the pod's failure.
    ///
    /// # Errors
    /// When the API server cannot be asked, or the log is not a timestamped log.
    pub async fn follow(
        &self,
        name: &str,
        token: &str,
        cursor: &mut LogCursor,
        on_frame: &mut (dyn FnMut(Frame) + Send),
    ) -> Result<PodVerdict, KubeError> {
        let start = tokio::time::Instant::now();
        let mut decoder = Decoder::new(token);
        let mut watch = PodWatch::new(self.graces);
        loop {
            self.read_log(name, true, cursor, &mut decoder, on_frame)
                .await?;
            cursor.reopen();
            // The stream ended: the container ended, or the stream dropped.
            let (next, verdict) = self.status(name, watch, start).await?;
            watch = next;
            match verdict {
                PodVerdict::Starting | PodVerdict::Running => tokio::time::sleep(self.poll).await,
                PodVerdict::Ended(_) => {
                    // What the runtime wrote after the stream dropped, if it did.
                    self.read_log(name, false, cursor, &mut decoder, on_frame)
                        .await?;
                    on_frame_rest(&mut decoder, on_frame);
                    return Ok(verdict);
                }
                PodVerdict::Failed(_) => {
                    on_frame_rest(&mut decoder, on_frame);
                    return Ok(verdict);
                }
            }
        }
    }

    /// Attaches to the standard input of the pod's steps container (`pods/attach`), where the
    /// entrypoint takes its requests.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn attach(&self, name: &str) -> Result<kube::api::AttachedProcess, KubeError> {
        let params = kube::api::AttachParams::default()
            .container(STEPS_CONTAINER)
            .stdin(true)
            .stdout(false)
            .stderr(false);
        self.pods
            .attach(name, &params)
            .await
            .map_err(|err| KubeError::api("attach to the pod's steps", &err))
    }

    /// Deletes the pod and its Secret; either may already be gone.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn delete(&self, name: &str) -> Result<(), KubeError> {
        delete_gone_too(&self.pods, name, "delete the pod").await?;
        delete_gone_too(&self.secrets, name, "delete the pod's Secret").await
    }

    /// The name of the pod of the attempt `key` in this namespace.
    pub fn pod_name(&self, key: PodKey) -> String {
        pod_name(&self.settings.instance, key)
    }

    /// Asks the API server for this instance's pods (one at most): whether it answers, and
    /// lets Hodei list pods in the namespace.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn ping(&self) -> Result<(), KubeError> {
        let params = ListParams::default()
            .labels(&instance_selector(&self.settings.instance))
            .limit(1);
        self.pods
            .list(&params)
            .await
            .map(|_| ())
            .map_err(|err| KubeError::api("list the pods", &err))
    }

    /// The marker token of pod `name`, from its Secret; `None` when the Secret is gone or
    /// holds none.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn token(&self, name: &str) -> Result<Option<String>, KubeError> {
        let secret = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|err| KubeError::api("read the pod's Secret", &err))?;
        Ok(secret
            .and_then(|secret| secret.data)
            .and_then(|data| data.get(TOKEN_KEY).cloned())
            .and_then(|bytes| String::from_utf8(bytes.0).ok()))
    }

    /// Lists the pods and Secrets of this instance, adopts those of the `live` attempts and
    /// deletes the rest. Answers the moves made.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn reap(&self, live: &[PodKey]) -> Result<Vec<Move>, KubeError> {
        self.reap_sparing(&|key| live.contains(key)).await
    }

    /// Lists the pods and Secrets of this instance, adopts the pods whose attempt `spare`
    /// names and deletes the rest. Answers the moves made.
    ///
    /// # Errors
    /// When the API server refuses or cannot be reached.
    pub async fn reap_sparing(
        &self,
        spare: &(dyn Fn(&PodKey) -> bool + Sync),
    ) -> Result<Vec<Move>, KubeError> {
        let selector = ListParams::default().labels(&instance_selector(&self.settings.instance));
        let pods = self
            .pods
            .list(&selector)
            .await
            .map_err(|err| KubeError::api("list the pods", &err))?;
        let secrets = self
            .secrets
            .list(&selector)
            .await
            .map_err(|err| KubeError::api("list the Secrets", &err))?;
        let found: Vec<Found> = pods
            .items
            .into_iter()
            .map(|pod| (Kind::Pod, pod.metadata))
            .chain(
                secrets
                    .items
                    .into_iter()
                    .map(|s| (Kind::Secret, s.metadata)),
            )
            .map(|(kind, meta)| Found {
                kind,
                name: meta.name.unwrap_or_default(),
                labels: meta.labels.unwrap_or_default(),
            })
            .collect();
        let live: Vec<PodKey> = found
            .iter()
            .filter(|object| object.kind == Kind::Pod)
            .filter_map(|object| parse_labels(&object.labels))
            .filter(|key| spare(key))
            .collect();
        let moves = reconcile(&found, &live);
        for step in &moves {
            match step {
                Move::Delete {
                    kind: Kind::Pod,
                    name,
                } => delete_gone_too(&self.pods, name, "delete the pod").await?,
                Move::Delete {
                    kind: Kind::Secret,
                    name,
                } => delete_gone_too(&self.secrets, name, "delete the Secret").await?,
                Move::Adopt { .. } => {}
            }
        }
        Ok(moves)
    }

    /// The pod's next verdict, from its status now (a pod that is gone is deleted).
    async fn status(
        &self,
        name: &str,
        watch: PodWatch,
        start: tokio::time::Instant,
    ) -> Result<(PodWatch, PodVerdict), KubeError> {
        let now = Timestamp(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
        match self
            .pods
            .get_opt(name)
            .await
            .map_err(|err| KubeError::api("read the pod", &err))?
        {
            Some(pod) => Ok(watch.on_status(&pod, now)),
            None => Ok(watch.on_deleted()),
        }
    }

    /// Reads one stream of the log from the cursor (following it or not) until it ends or
    /// drops. A stream the API server refuses to open counts as one that dropped at once:
    /// the pod's status then tells what to do.
    async fn read_log(
        &self,
        name: &str,
        follow: bool,
        cursor: &mut LogCursor,
        decoder: &mut Decoder,
        on_frame: &mut (dyn FnMut(Frame) + Send),
    ) -> Result<(), KubeError> {
        let since_time = match cursor.since_time() {
            Some(text) => Some(
                text.parse::<k8s_openapi::jiff::Timestamp>()
                    .map_err(|err| KubeError::Invalid {
                        what: format!("the time {text}: {err}"),
                        expected: "an RFC 3339 time",
                    })?,
            ),
            None => None,
        };
        let params = LogParams {
            container: Some(STEPS_CONTAINER.to_owned()),
            follow,
            timestamps: true,
            since_time,
            ..LogParams::default()
        };
        let Ok(stream) = self.pods.log_stream(name, &params).await else {
            return Ok(());
        };
        let mut stream = pin!(stream);
        let mut buf = vec![0; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    let lines = cursor.feed(&buf[..n]).map_err(|source| KubeError::Log {
                        pod: name.to_owned(),
                        source,
                    })?;
                    for frame in decoder.feed(&lines) {
                        on_frame(frame);
                    }
                }
            }
        }
    }
}

fn on_frame_rest(decoder: &mut Decoder, on_frame: &mut (dyn FnMut(Frame) + Send)) {
    if let Some(frame) = decoder.finish() {
        on_frame(frame);
    }
}

/// Deletes `name`; one that is already gone is not an error.
async fn delete_gone_too<K>(api: &Api<K>, name: &str, action: &'static str) -> Result<(), KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(KubeError::api(action, &err)),
    }
}

/// A marker token: 128 random bits in hex, from the operating system.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn new_token() -> Result<String, KubeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| KubeError::Random {
        message: err.to_string(),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
