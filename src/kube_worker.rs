//! The Kubernetes worker of a server (a `[kubernetes]` table): its provider, made from the
//! table with a kube client of its kubeconfig (or inferred), and its offer to the scheduler —
//! the worker `kubernetes`, with its labels and `docker`, `max_pods` slots — offline while the
//! API server does not answer, watched as a circuit breaker ([`hodei_adapters::health`]).
//! `src/wiring.rs` puts the provider in the ports for the jobs placed on that worker.

use std::sync::Arc;

use hodei_actors::messages::{RegisterWorker, WorkerSpec};
use hodei_adapters::health::{self, Probe};
use hodei_adapters::kube::{Cluster, KubernetesProvider, PodSettings};
use hodei_domain::ids::WorkerId;
use hodei_domain::model::Label;
use hodei_supervisors::Tree;

use crate::kube_config::KubernetesConfig;

/// The id of the Kubernetes worker.
pub const KUBERNETES_WORKER: &str = "kubernetes";

/// The provider and the worker of a `[kubernetes]` table: the kube client made from its
/// kubeconfig (or inferred), the pods' settings, the API server asked once.
pub async fn kubernetes_worker(
    config: KubernetesConfig,
    instance: &str,
) -> Result<(Arc<KubernetesProvider>, WorkerSpec), String> {
    let client = hodei_adapters::kube::client(config.kubeconfig.as_deref())
        .await
        .map_err(|err| format!("kubernetes: {err}"))?;
    let settings = PodSettings {
        namespace: config.namespace.clone(),
        instance: instance.to_owned(),
        entrypoint_image: config.image.clone(),
        node_selector: config.node_selector.clone(),
        tolerations: config.tolerations.clone(),
        image_pull_secrets: config.image_pull_secrets.clone(),
    };
    let provider = Arc::new(
        KubernetesProvider::new(Cluster::new(client, settings))
            .with_default_image(config.default_image.clone()),
    );
    provider.probe().await;
    let mut labels = config.labels;
    if !labels.contains(&Label::docker()) {
        // It runs jobs' images, as a worker with a Docker engine does.
        labels.push(Label::docker());
    }
    let spec = WorkerSpec {
        id: WorkerId(KUBERNETES_WORKER.into()),
        labels,
        slots: config.max_pods,
        agent: false,
        offline: false,
    };
    Ok((provider, spec))
}

/// Offers the Kubernetes worker to the scheduler, offline while the API server does not
/// answer, and watches the API server for as long as the provider lives.
pub fn offer_kubernetes(tree: &Tree, kube: &Arc<KubernetesProvider>, spec: WorkerSpec) {
    let offer = move |trouble: &Option<String>| WorkerSpec {
        offline: trouble.is_some(),
        ..spec.clone()
    };
    let trouble = kube.trouble();
    if let Some(trouble) = &trouble {
        tracing::warn!(error = %trouble, "The Kubernetes worker takes no job until the API server answers.");
    }
    tree.workers.do_send(RegisterWorker {
        worker: offer(&trouble),
        lease: None,
    });
    let workers = tree.workers.clone();
    health::watch(
        kube,
        Arc::new(move |trouble| {
            match &trouble {
                None => tracing::warn!(
                    "The Kubernetes API server answers again: the Kubernetes worker takes jobs."
                ),
                Some(trouble) => {
                    tracing::warn!(error = %trouble, "The Kubernetes API server does not answer: the Kubernetes worker takes no job.")
                }
            }
            workers.do_send(RegisterWorker {
                worker: offer(&trouble),
                lease: None,
            });
        }),
    );
}
