//! The pure half of the Docker provider: labels and names of what a job creates, and the
//! engine's configuration of step containers, service containers and the job network, built
//! from [`JobSpec`], [`StepSpec`] and [`Service`]. No engine here; everything is table-tested
//! below.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig,
    HostConfigLogConfig, NetworkCreateRequest, NetworkingConfig,
};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::{Cpu, Env, Memory, Name, Resources, Service};
use hodei_domain::ports::{JobSpec, StepSpec};
use hodei_domain::state::{Attempt, StepExit};

use super::error::DockerError;
use crate::local::convert as local;

/// The Hodei store a container or network belongs to: reconciliation only touches its own.
pub const INSTANCE_LABEL: &str = "hodei.instance";
/// The run, job and job attempt (their numbers) on every container and network of a job.
pub const RUN_LABEL: &str = "hodei.run";
pub const JOB_LABEL: &str = "hodei.job";
pub const JOB_ATTEMPT_LABEL: &str = "hodei.job-attempt";
/// The step index and step attempt, on step containers only.
pub const STEP_LABEL: &str = "hodei.step";
pub const STEP_ATTEMPT_LABEL: &str = "hodei.step-attempt";
/// The service name, on service containers only.
pub const SERVICE_LABEL: &str = "hodei.service";

/// Where the job's workspace is mounted in every step container; the steps' working directory.
pub const WORKSPACE_MOUNT: &str = "/workspace";

/// The program that starts every step container: it sends the step's stderr into its stdout
/// (one pipe, so that their order is kept) and `exec`s the step's shell with the script as its
/// last argument, untouched. Images need `/bin/sh`.
pub const ENTRYPOINT: [&str; 4] = ["/bin/sh", "-c", "exec \"$@\" 2>&1", "hodei-step"];

/// The log driver of every container Hodei starts: the engine keeps the whole output until
/// `tear_down`, so that a re-attach can read it again from any byte offset.
pub const LOG_DRIVER: &str = "json-file";

/// One job attempt: what every object of its workspace is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub run: RunId,
    pub job: JobId,
    pub attempt: Attempt,
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.run, self.job, self.attempt)
    }
}

/// One step attempt of a job attempt, as its container's labels tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StepKey {
    pub job: JobKey,
    pub index: u32,
    pub attempt: Attempt,
}

/// The labels of every object of a job attempt.
pub fn job_labels(instance: &str, key: JobKey) -> HashMap<String, String> {
    HashMap::from([
        (INSTANCE_LABEL.to_owned(), instance.to_owned()),
        (RUN_LABEL.to_owned(), key.run.0.to_string()),
        (JOB_LABEL.to_owned(), key.job.0.to_string()),
        (JOB_ATTEMPT_LABEL.to_owned(), key.attempt.to_string()),
    ])
}

/// The labels of a step container: the job's, the step index and the step attempt.
pub fn step_labels(instance: &str, key: StepKey) -> HashMap<String, String> {
    let mut labels = job_labels(instance, key.job);
    labels.insert(STEP_LABEL.to_owned(), key.index.to_string());
    labels.insert(STEP_ATTEMPT_LABEL.to_owned(), key.attempt.to_string());
    labels
}

/// A list filter for the engine: objects that carry every one of `labels`.
pub fn label_filter(labels: &HashMap<String, String>) -> HashMap<String, Vec<String>> {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    HashMap::from([("label".to_owned(), pairs)])
}

/// Reads a job attempt back from an object's labels; `None` if one is missing or malformed.
pub fn parse_job_labels(labels: &HashMap<String, String>) -> Option<JobKey> {
    Some(JobKey {
        run: RunId(labels.get(RUN_LABEL)?.parse().ok()?),
        job: JobId(labels.get(JOB_LABEL)?.parse().ok()?),
        attempt: Attempt::new(labels.get(JOB_ATTEMPT_LABEL)?.parse().ok()?)?,
    })
}

/// Reads a step attempt back from a container's labels; `None` if it is not a step container.
pub fn parse_step_labels(labels: &HashMap<String, String>) -> Option<StepKey> {
    Some(StepKey {
        job: parse_job_labels(labels)?,
        index: labels.get(STEP_LABEL)?.parse().ok()?,
        attempt: Attempt::new(labels.get(STEP_ATTEMPT_LABEL)?.parse().ok()?)?,
    })
}

/// The name prefix of a job attempt's objects: `hodei-<instance>-<run>-<job>-<attempt>`, the
/// instance reduced to the characters the engine accepts in names.
pub fn job_name(instance: &str, key: JobKey) -> String {
    let instance: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("hodei-{instance}-{key}")
}

/// The name of a step container: `<job name>-step<index>-<attempt>`.
pub fn step_name(instance: &str, key: StepKey) -> String {
    format!(
        "{}-step{}-{}",
        job_name(instance, key.job),
        key.index,
        key.attempt
    )
}

/// The name of a service container: `<job name>-svc-<service>`.
pub fn service_name(instance: &str, key: JobKey, service: &Name) -> String {
    format!("{}-svc-{service}", job_name(instance, key))
}

/// The host directory of a job attempt's workspace: `<base>/<run>-<job>-<attempt>`, the same
/// layout as the local provider's.
pub fn workspace_dir(base: &Path, key: JobKey) -> std::path::PathBuf {
    local::workspace_dir(base, key.run, key.job, key.attempt)
}

/// What a step container needs from its job, remembered from `set_up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub image: String,
    pub user: Option<String>,
    pub resources: Resources,
    /// The host directory mounted at [`WORKSPACE_MOUNT`].
    pub workspace: String,
    /// The id of the job's network, when it has services.
    pub network: Option<String>,
}

impl JobSettings {
    /// The settings of `job`; refuses a job without an image.
    pub fn of(
        job: &JobSpec,
        workspace: String,
        network: Option<String>,
    ) -> Result<JobSettings, DockerError> {
        let Some(image) = &job.image else {
            return Err(DockerError::Invalid {
                what: format!("job `{}`", job.name),
                expected: "an `image`: the Docker provider runs steps in containers (a job without `image` runs on the local provider)",
            });
        };
        Ok(JobSettings {
            image: image.as_str().to_owned(),
            user: job.user.clone(),
            resources: job.resources,
            workspace,
            network,
        })
    }
}

/// The configuration of a step's container: [`ENTRYPOINT`] then `shell... script`, exactly
/// the step's environment on top of the image's own, the job's user and limits, the workspace
/// mounted at [`WORKSPACE_MOUNT`] and the working directory inside it.
pub fn step_container(
    instance: &str,
    key: StepKey,
    job: &JobSettings,
    step: &StepSpec,
) -> Result<ContainerCreateBody, DockerError> {
    let invalid = |err: hodei_domain::ports::ProviderError| DockerError::Invalid {
        what: format!("step {}: {err}", step.index),
        expected: "a valid step",
    };
    let (program, args) = local::shell(step).map_err(invalid)?;
    let working_dir = local::working_dir(Path::new(WORKSPACE_MOUNT), step.working_dir.as_deref())
        .map_err(invalid)?;
    let mut cmd = Vec::with_capacity(args.len() + 2);
    cmd.push(program.to_owned());
    cmd.extend(args.iter().cloned());
    cmd.push(step.script.clone());
    let limits = limits(job.resources);
    Ok(ContainerCreateBody {
        image: Some(job.image.clone()),
        entrypoint: Some(ENTRYPOINT.iter().map(|s| (*s).to_owned()).collect()),
        cmd: Some(cmd),
        env: Some(env(&step.env, step.index)?),
        user: job.user.clone(),
        working_dir: Some(working_dir.to_string_lossy().into_owned()),
        labels: Some(step_labels(instance, key)),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        open_stdin: Some(false),
        tty: Some(false),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{WORKSPACE_MOUNT}", job.workspace)]),
            network_mode: job.network.clone(),
            // tini as pid 1: the shell gets default signal handling, orphans are reaped.
            init: Some(true),
            log_config: Some(log_config()),
            ..limits
        }),
        ..Default::default()
    })
}

/// The configuration of a service's container: its image with its own entrypoint, the
/// service's environment and command, on the job network under the service's name.
pub fn service_container(
    instance: &str,
    key: JobKey,
    name: &Name,
    service: &Service,
    network: &str,
) -> Result<ContainerCreateBody, DockerError> {
    let mut labels = job_labels(instance, key);
    labels.insert(SERVICE_LABEL.to_owned(), name.as_str().to_owned());
    let endpoint = EndpointSettings {
        aliases: Some(vec![name.as_str().to_owned()]),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(service.image.as_str().to_owned()),
        cmd: (!service.command.is_empty()).then(|| service.command.clone()),
        env: Some(env(&service.env, 0).map_err(|err| DockerError::Invalid {
            what: format!("service `{name}`: {err}"),
            expected: "valid environment variables",
        })?),
        labels: Some(labels),
        hostname: Some(name.as_str().to_owned()),
        host_config: Some(HostConfig {
            network_mode: Some(network.to_owned()),
            log_config: Some(log_config()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
        }),
        ..Default::default()
    })
}

/// The configuration of a job's network: a labelled bridge, named after the job.
pub fn network(instance: &str, key: JobKey) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: job_name(instance, key),
        driver: Some("bridge".to_owned()),
        labels: Some(job_labels(instance, key)),
        ..Default::default()
    }
}

/// The job settings a step container was created with, read back from the engine's record of
/// it (to continue a job after a re-attach); `None` if the record lacks the image or the
/// workspace mount.
pub fn settings_from(record: &ContainerInspectResponse) -> Option<JobSettings> {
    let config = record.config.as_ref()?;
    let host = record.host_config.as_ref()?;
    let suffix = format!(":{WORKSPACE_MOUNT}");
    let workspace = host
        .binds
        .as_ref()?
        .iter()
        .find_map(|bind| bind.strip_suffix(&suffix))?;
    let cpu = host
        .nano_cpus
        .and_then(|nanos| u32::try_from(nanos / 1_000_000).ok())
        .and_then(Cpu::from_millis);
    let memory = host
        .memory
        .and_then(|bytes| u64::try_from(bytes).ok())
        .and_then(Memory::from_bytes);
    Some(JobSettings {
        image: config.image.clone()?,
        user: config.user.clone().filter(|user| !user.is_empty()),
        resources: Resources { cpu, memory },
        workspace: workspace.to_owned(),
        network: host
            .network_mode
            .clone()
            .filter(|mode| !matches!(mode.as_str(), "" | "default" | "bridge")),
    })
}

/// CPU (`NanoCpus`: 1 CPU = 10⁹) and memory (bytes; swap equal to the limit, so none more).
pub fn limits(resources: Resources) -> HostConfig {
    let memory = resources
        .memory
        .map(|m| i64::try_from(m.bytes()).unwrap_or(i64::MAX));
    HostConfig {
        nano_cpus: resources.cpu.map(|cpu| i64::from(cpu.millis()) * 1_000_000),
        memory,
        memory_swap: memory,
        ..Default::default()
    }
}

fn log_config() -> HostConfigLogConfig {
    HostConfigLogConfig {
        typ: Some(LOG_DRIVER.to_owned()),
        config: None,
    }
}

/// `NAME=value` for each variable, refusing names the engine would misread.
fn env(vars: &Env, step: u32) -> Result<Vec<String>, DockerError> {
    vars.iter()
        .map(|(name, value)| {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                Err(DockerError::Invalid {
                    what: format!("step {step}: environment variable {name:?}"),
                    expected: "a non-empty name without `=` or NUL, and a value without NUL",
                })
            } else {
                Ok(format!("{name}={value}"))
            }
        })
        .collect()
}

/// How a step container ended, from the engine's record of it. Docker reports a process killed
/// by a signal as exit code 128 + N, like a shell does; the signal is known for certain only
/// when Hodei sent it (`destroyed`, `SIGKILL`), so only then is the exit a signal.
pub fn step_exit(exit_code: i64, oom_killed: bool, destroyed: bool) -> StepExit {
    if destroyed && exit_code == 128 + i64::from(libc::SIGKILL) {
        return StepExit {
            code: None,
            signal: Some(libc::SIGKILL),
            oom_killed,
        };
    }
    StepExit {
        code: Some(i32::try_from(exit_code).unwrap_or(i32::MAX)),
        signal: None,
        oom_killed,
    }
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
