//! The pure half of the Kubernetes provider: a job attempt as a pod, and the pod's Secret.
//! No cluster here; the golden files in `golden/` pin the exact objects (see `pod_tests.rs`).
//!
//! ## The pod of a job attempt
//! - An init container of Hodei's own image copies the `hodei` binary into the volume
//!   `hodei-bin` (`hodei pod-steps install`).
//! - The container `steps`, of the job's image, runs that binary as its entrypoint
//!   (`hodei pod-steps run`): it waits for the job's services, says it is ready, then runs the
//!   steps it is asked for on its standard input one after the other (see `protocol.rs`). Its
//!   working directory is the workspace, the volume `workspace` at [`WORKSPACE_MOUNT`]; its
//!   user is the job's `user` (`runAsUser`, `runAsGroup`); the job's `resources` are its
//!   requests and its limits alike (the scheduler places it only where they fit, the kernel
//!   holds it to them).
//! - Each service is a container `svc-<name>` of the same pod: the steps reach it on
//!   `localhost` at its ports.
//! - The job's secrets are in the pod's Secret (same name as the pod, owned by it, so that the
//!   cluster deletes it with the pod), mounted read-only at [`SECRETS_MOUNT`]: never values in
//!   the pod's spec.
//! - `restartPolicy: Never`; `activeDeadlineSeconds` is the job's timeout plus a grace: Hodei
//!   enforces the timeout itself, the cluster only as a last resort. No service account token
//!   is mounted and no service links are injected: the job sees nothing of the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use hodei_domain::model::{Name, PullPolicy, Resources, Service};
use hodei_domain::ports::JobSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, LocalObjectReference, Pod, PodSpec,
    ResourceRequirements, Secret, SecretVolumeSource, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::error::KubeError;
use super::names::{self, JOB_NAME_ANNOTATION, PodKey};
use super::protocol::TOKEN_KEY;

/// Where the workspace volume is mounted in the steps container: its working directory.
pub const WORKSPACE_MOUNT: &str = "/workspace";
/// Where the init container puts the `hodei` binary.
pub const BIN_MOUNT: &str = "/hodei/bin";
/// Where the pod's Secret is mounted in the steps container.
pub const SECRETS_MOUNT: &str = "/hodei/secrets";
/// The path of the `hodei` binary in Hodei's image.
pub const HODEI_IN_IMAGE: &str = "/usr/local/bin/hodei";
/// The name of the container that runs the steps.
pub const STEPS_CONTAINER: &str = "steps";
/// The name of the init container that copies the entrypoint.
pub const INIT_CONTAINER: &str = "hodei-entrypoint";
/// How much longer than the job's timeout the cluster lets the pod live.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(60);
/// How long the steps container waits for the job's services to listen.
pub const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where jobs' pods go and what every one of them gets, from the configuration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSettings {
    pub namespace: String,
    /// The Hodei store the pods belong to (label `hodei.io/instance`).
    pub instance: String,
    /// Hodei's own image, with the binary at [`HODEI_IN_IMAGE`]: the init container's.
    pub entrypoint_image: String,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Names of Secrets of the namespace to pull images with.
    pub image_pull_secrets: Vec<String>,
}

/// One job attempt, as its pod is made from it.
#[derive(Debug, Clone, Copy)]
pub struct PodJob<'a> {
    pub spec: &'a JobSpec,
    /// The lease's epoch; 0 without a lease.
    pub epoch: u64,
    /// The job's timeout, if it has one.
    pub timeout: Option<Duration>,
}

impl PodJob<'_> {
    /// The names and labels of the attempt's objects.
    pub fn key(&self) -> PodKey {
        PodKey {
            run: self.spec.run,
            job: self.spec.job,
            attempt: self.spec.attempt,
            epoch: self.epoch,
        }
    }
}

/// The pod of a job attempt. See the documentation of this module.
///
/// # Errors
/// [`KubeError::Invalid`] for a job without `image`, with a `checkout` (not supported on
/// Kubernetes), with a `user` that is not numeric, with two services on one port, or with a
/// service whose environment has an invalid name.
pub fn pod(settings: &PodSettings, job: PodJob<'_>) -> Result<Pod, KubeError> {
    let spec = job.spec;
    let Some(image) = &spec.image else {
        return Err(KubeError::Invalid {
            what: format!("job `{}`", spec.name),
            expected: "an `image`: the Kubernetes provider runs a job in a pod of its image",
        });
    };
    if spec.checkout.is_some() {
        return Err(KubeError::Invalid {
            what: format!("job `{}`: its run checks out a repository", spec.name),
            expected: "a job without a checkout: the Kubernetes provider cannot check out a repository yet (run the job on a Docker or local worker)",
        });
    }
    let key = job.key();
    let name = names::pod_name(&settings.instance, key);
    let mut containers = vec![steps_container(spec, image.as_str())?];
    for (service_name, service) in &spec.services {
        containers.push(service_container(service_name, service, spec.pull)?);
    }
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(names::labels(&settings.instance, key)),
            annotations: Some(BTreeMap::from([(
                JOB_NAME_ANNOTATION.to_owned(),
                spec.name.clone(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            active_deadline_seconds: job.timeout.map(|timeout| {
                i64::try_from((timeout + DEADLINE_GRACE).as_secs()).unwrap_or(i64::MAX)
            }),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(5),
            node_selector: (!settings.node_selector.is_empty())
                .then(|| settings.node_selector.clone()),
            tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
            image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
                settings
                    .image_pull_secrets
                    .iter()
                    .map(|secret| LocalObjectReference {
                        name: secret.clone(),
                    })
                    .collect()
            }),
            init_containers: Some(vec![init_container(&settings.entrypoint_image)]),
            containers,
            volumes: Some(vec![
                Volume {
                    name: "hodei-bin".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "workspace".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "hodei-secrets".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(name),
                        // Readable by the job's user, whoever it is: only the job's own
                        // processes run in the container.
                        default_mode: Some(0o444),
                        optional: Some(false),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// The pod's Secret: the job's `secrets` (name → value, each name a variable name) and the
/// marker token, owned by the pod (its name and uid, as the cluster gave them) so that it goes
/// with the pod.
pub fn secret(
    settings: &PodSettings,
    key: PodKey,
    pod_uid: &str,
    secrets: &BTreeMap<String, String>,
    token: &str,
) -> Secret {
    let name = names::pod_name(&settings.instance, key);
    let mut data: BTreeMap<String, ByteString> = secrets
        .iter()
        .map(|(name, value)| (name.clone(), ByteString(value.clone().into_bytes())))
        .collect();
    data.insert(TOKEN_KEY.to_owned(), ByteString(token.as_bytes().to_vec()));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(names::labels(&settings.instance, key)),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name,
                uid: pod_uid.to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        data: Some(data),
        immutable: Some(true),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

fn init_container(image: &str) -> Container {
    Container {
        name: INIT_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        command: Some(vec![
            HODEI_IN_IMAGE.to_owned(),
            "pod-steps".to_owned(),
            "install".to_owned(),
            format!("{BIN_MOUNT}/hodei"),
        ]),
        volume_mounts: Some(vec![mount("hodei-bin", BIN_MOUNT, false)]),
        ..Container::default()
    }
}

fn steps_container(spec: &JobSpec, image: &str) -> Result<Container, KubeError> {
    let mut command = vec![
        format!("{BIN_MOUNT}/hodei"),
        "pod-steps".to_owned(),
        "run".to_owned(),
        "--workspace".to_owned(),
        WORKSPACE_MOUNT.to_owned(),
        "--secrets".to_owned(),
        SECRETS_MOUNT.to_owned(),
        "--ready-timeout".to_owned(),
        format!("{}s", SERVICE_READY_TIMEOUT.as_secs()),
    ];
    // The services share the pod's network: one port, one service.
    let mut ports: BTreeMap<u16, &Name> = BTreeMap::new();
    for (name, service) in &spec.services {
        for port in &service.ports {
            if let Some(other) = ports.insert(*port, name) {
                return Err(KubeError::Invalid {
                    what: format!(
                        "job `{}`: services `{other}` and `{name}` both listen on port {port}",
                        spec.name
                    ),
                    expected: "each port to one service: the services of a job share the pod's network (`localhost`)",
                });
            }
        }
    }
    for port in ports.keys() {
        command.push("--wait-tcp".to_owned());
        command.push(port.to_string());
    }
    Ok(Container {
        name: STEPS_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(pull_policy(spec.pull).to_owned()),
        command: Some(command),
        // Requests come on the standard input, which stays open between steps.
        stdin: Some(true),
        stdin_once: Some(false),
        tty: Some(false),
        working_dir: Some(WORKSPACE_MOUNT.to_owned()),
        resources: resources(spec.resources),
        security_context: spec
            .user
            .as_deref()
            .map(|user| security_context(&spec.name, user))
            .transpose()?,
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE_MOUNT, false),
            mount("hodei-bin", BIN_MOUNT, true),
            mount("hodei-secrets", SECRETS_MOUNT, true),
        ]),
        ..Container::default()
    })
}

fn service_container(
    name: &Name,
    service: &Service,
    pull: PullPolicy,
) -> Result<Container, KubeError> {
    let env = service
        .env
        .iter()
        .map(|(var, value)| {
            if var.is_empty() || var.contains('=') {
                return Err(KubeError::Invalid {
                    what: format!("service `{name}`: environment variable {var:?}"),
                    expected: "a non-empty name without `=`",
                });
            }
            Ok(EnvVar {
                name: var.clone(),
                value: Some(value.clone()),
                value_from: None,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Container {
        name: format!("svc-{name}"),
        image: Some(service.image.as_str().to_owned()),
        image_pull_policy: Some(pull_policy(pull).to_owned()),
        // A service's `command` is its image's command (Docker's `CMD`): the image's
        // entrypoint stays.
        args: (!service.command.is_empty()).then(|| service.command.clone()),
        env: (!env.is_empty()).then_some(env),
        ports: (!service.ports.is_empty()).then(|| {
            service
                .ports
                .iter()
                .map(|port| ContainerPort {
                    container_port: i32::from(*port),
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    })
}

/// The job's user as a security context: `uid` or `uid:gid`, numbers (a cluster runs
/// containers by number; a name would need the image's `/etc/passwd`).
fn security_context(job: &str, user: &str) -> Result<SecurityContext, KubeError> {
    let invalid = || KubeError::Invalid {
        what: format!("job `{job}`: user `{user}`"),
        expected: "a numeric `uid` or `uid:gid` on Kubernetes (runAsUser, runAsGroup)",
    };
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let uid: i64 = uid.parse().map_err(|_| invalid())?;
    let gid: Option<i64> = gid
        .map(|gid| gid.parse().map_err(|_| invalid()))
        .transpose()?;
    if uid < 0 || gid.is_some_and(|gid| gid < 0) {
        return Err(invalid());
    }
    Ok(SecurityContext {
        run_as_user: Some(uid),
        run_as_group: gid,
        run_as_non_root: Some(uid != 0),
        ..SecurityContext::default()
    })
}

/// The job's CPU and memory as requests and as limits.
pub(super) fn resources(resources: Resources) -> Option<ResourceRequirements> {
    let mut amounts = BTreeMap::new();
    if let Some(cpu) = resources.cpu {
        amounts.insert("cpu".to_owned(), Quantity(cpu.to_string()));
    }
    if let Some(memory) = resources.memory {
        amounts.insert("memory".to_owned(), Quantity(memory.to_string()));
    }
    (!amounts.is_empty()).then(|| ResourceRequirements {
        limits: Some(amounts.clone()),
        requests: Some(amounts),
        ..ResourceRequirements::default()
    })
}

fn pull_policy(pull: PullPolicy) -> &'static str {
    match pull {
        PullPolicy::Never => "Never",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Always => "Always",
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
pub(super) mod tests;
