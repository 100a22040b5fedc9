//! # Kubernetes: a job attempt as a pod
//!
//! The first layers of the Kubernetes provider: the pure translation of a job attempt into a
//! pod and its Secret (`pod.rs`, with golden files in `golden/`), the names and labels of what
//! an attempt creates (`names.rs`), and the small protocol between Hodei and the entrypoint
//! that runs the steps inside the pod (`protocol.rs`), with the entrypoint itself
//! (`entrypoint.rs`, the hidden command `hodei pod-steps`). The decisions of following a pod
//! are pure too: what its status means for the job, with bounded graces so that a pod that
//! will never run ends the job instead of hanging it (`status.rs`), and which pods and Secrets
//! of an earlier life to adopt or delete (`reconcile.rs`), and how a pod's log is followed
//! across dropped streams without a gap or a duplicate (`logs.rs`). [`Cluster`]
//! (`cluster.rs`) makes the calls to the API server (kube client): it creates a pod and its
//! Secret, waits for the pod to run or fail, follows its log to its end, deletes it, and reaps
//! what an earlier life left. Where to start reading: `pod.rs`, then `cluster.rs`.
//!
//! [`KubernetesProvider`] (`provider.rs`) is the [`Provider`](hodei_domain::ports::Provider)
//! port made of these parts: a step is a request to the entrypoint over `pods/attach`, its
//! output and end come back through the log (what the log showed of a pod, and the requests
//! to it, are in `pod_state.rs`); after a restart of Hodei, a step that still runs
//! in its pod is taken back. [`client`] (`connect.rs`) makes the kube client from a kubeconfig
//! or the pod's service account. The server's `[kubernetes]` table configures all this and
//! routes jobs to it (`src/kube_config.rs`, `src/wiring.rs`); `docs/kubernetes.md` says what
//! is and what is not.
//!
//! ## Design: one pod per job attempt, steps sequenced inside it
//! A job's steps share a workspace and its services; in Kubernetes the unit that shares
//! volumes and `localhost` is the pod. So a job attempt is one pod (the shape of GitLab
//! Runner's and Tekton's executors): its containers are the steps container and one container
//! per service. Hodei's port runs a job step by step (a step's retry, a `continue_on_error`,
//! the hooks by outcome are decided by Hodei between steps), so the steps container does not
//! get a fixed list: it runs Hodei's own entrypoint, which takes one step at a time on its
//! standard input and frames each step's output and exit in the container's log, which is
//! where Hodei reads them (`pods/log`). Exit codes and the kernel's out-of-memory kills are
//! told by the entrypoint (its step may die of memory while the container lives on); the
//! container's own state tells when the whole container was killed.
//!
//! ## Guarantees
//! - Everything an attempt creates carries the labels `hodei.io/instance`, `hodei.io/run`,
//!   `hodei.io/job`, `hodei.io/attempt` and `hodei.io/epoch`, from which the attempt and its
//!   lease epoch are read back ([`parse_labels`]).
//! - Secret values are never in a pod's spec nor in a request to the entrypoint: they are in
//!   the pod's Secret, which the pod owns.
//!
//! ## Assumptions
//! The job's image can run Hodei's binary (Hodei is linked against glibc: images based on
//! musl, such as Alpine's, cannot) and the job's `user`, if any, is numeric.

mod cluster;
mod connect;
mod entrypoint;
mod error;
mod logs;
mod names;
mod pod;
mod pod_state;
mod protocol;
mod provider;
mod reconcile;
mod status;
mod workers;

pub use cluster::{Cluster, Created, new_token};
pub use connect::client;
pub use entrypoint::{EntrypointConfig, EntrypointError, install, run as run_entrypoint};
pub use error::{KubeError, PROVIDER};
pub use logs::{LogCursor, NoTimestamp};
pub use names::{
    ATTEMPT_LABEL, EPOCH_LABEL, INSTANCE_LABEL, JOB_LABEL, JOB_NAME_ANNOTATION, PodKey, RUN_LABEL,
    instance_selector, label_value, labels, parse_labels, pod_name,
};
pub use pod::{
    BIN_MOUNT, DEADLINE_GRACE, HODEI_IN_IMAGE, INIT_CONTAINER, PodJob, PodSettings, SECRETS_MOUNT,
    SERVICE_READY_TIMEOUT, STEPS_CONTAINER, WORKSPACE_MOUNT, pod, secret,
};
pub use protocol::{
    Decoder, EnvValue, Frame, Marker, Request, RunStep, TOKEN_KEY, run_request, step_outputs,
};
pub use provider::KubernetesProvider;
pub use reconcile::{Found, Kind, Move, reconcile};
pub use status::{Graces, PodFailure, PodVerdict, PodWatch};
pub use workers::{
    CREDENTIAL_KEY, POOL_LABEL, POOL_OWNER_LABEL, PoolLauncher, worker_pod, worker_secret,
};
