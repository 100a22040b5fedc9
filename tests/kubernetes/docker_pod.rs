//! The Docker half of a fake cluster: a pod, as Hodei makes it (`hodei_adapters::kube::pod`),
//! run on the real Docker engine the way a kubelet runs it. A pause container holds the pod's
//! network (its containers reach each other on `localhost`); `emptyDir` volumes are host
//! directories and the Secret's volume a directory of its keys (a variable may take a key of
//! it, `secretKeyRef`); the init containers run one
//! after the other to their end, then the containers start; a container's status is read back
//! from the engine (`OOMKilled` included). An image that is not on the engine with the policy
//! `Never` leaves its container waiting with `ErrImageNeverPull`, as a kubelet does. What the
//! builder never uses is refused loudly, never ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Secret};
use serde_json::{Value, json};

/// The image of the pause container that holds the pod's network.
const PAUSE_IMAGE: &str = "debian:bookworm";

pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker command runs: these tests need the Docker engine");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A pod running on the engine; its containers go when it is dropped.
pub struct DockerPod {
    pause: String,
    /// The pod's containers: name, the engine's name (`None` for one left waiting), and why
    /// it waits.
    containers: Vec<PodContainer>,
    init: Vec<(String, i64)>,
    /// Each container's image, by the pod's container name.
    images: BTreeMap<String, String>,
    /// The pod's Secret: its name and values, which variables may take (`secretKeyRef`).
    secret: (Option<String>, BTreeMap<String, String>),
}

/// A container of the pod: its name in the pod, the engine's name of it (`None` for one left
/// waiting), and why it waits (reason, message).
struct PodContainer {
    name: String,
    engine: Option<String>,
    waiting: Option<(String, String)>,
}

impl DockerPod {
    /// Runs `pod` with its `secret` (the Secret its volume names), volumes under `dir`, every
    /// container named `<prefix>-<container>`.
    pub fn run(pod: &Pod, secret: &Secret, dir: &Path, prefix: &str) -> DockerPod {
        let spec = pod.spec.as_ref().expect("a pod spec");
        let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
        for volume in spec.volumes.iter().flatten() {
            let path = dir.join(&volume.name);
            std::fs::create_dir_all(&path).expect("volume dir");
            use std::os::unix::fs::PermissionsExt;
            if volume.empty_dir.is_some() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
            } else if let Some(source) = &volume.secret {
                assert_eq!(source.secret_name, secret.metadata.name, "the pod's Secret");
                let mode = u32::try_from(source.default_mode.unwrap_or(0o644)).expect("mode");
                for (key, value) in secret.data.iter().flatten() {
                    let file = path.join(key);
                    std::fs::write(&file, &value.0).expect("secret file");
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .expect("chmod");
                }
            } else {
                panic!("the fake cluster runs emptyDir and secret volumes only: {volume:?}");
            }
            volumes.insert(volume.name.clone(), path);
        }
        let pause = format!("{prefix}-pause");
        let _ = docker(&["rm", "-f", &pause]);
        docker(&[
            "run",
            "-d",
            "--name",
            &pause,
            PAUSE_IMAGE,
            "sleep",
            "infinity",
        ])
        .expect("the pause container runs");
        let mut running = DockerPod {
            pause,
            containers: Vec::new(),
            init: Vec::new(),
            images: spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
            secret: (
                secret.metadata.name.clone(),
                secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect(),
            ),
        };
        for init in spec.init_containers.iter().flatten() {
            let name = format!("{prefix}-{}", init.name);
            let args = running.run_args(init, &volumes, &name, false);
            let _ = docker(&["rm", "-f", &name]);
            let outcome = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let code = match outcome {
                Ok(_) => 0,
                Err(_) => docker(&["inspect", "-f", "{{.State.ExitCode}}", &name])
                    .ok()
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(-1),
            };
            running.init.push((init.name.clone(), code));
            let _ = docker(&["rm", "-f", &name]);
            if code != 0 {
                return running;
            }
        }
        for container in &spec.containers {
            let name = format!("{prefix}-{}", container.name);
            let image = container.image.clone().expect("an image");
            let absent = docker(&["image", "inspect", &image]).is_err();
            if absent && container.image_pull_policy.as_deref() == Some("Never") {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                running.containers.push(PodContainer {
                    name: container.name.clone(),
                    engine: None,
                    waiting: Some(("ErrImageNeverPull".into(), message)),
                });
                continue;
            }
            assert!(
                !absent,
                "the fake cluster pulls nothing: {image} must be on the engine"
            );
            let args = running.run_args(container, &volumes, &name, true);
            let _ = docker(&["rm", "-f", &name]);
            docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
                .unwrap_or_else(|err| panic!("cannot run container {name}: {err}"));
            running.containers.push(PodContainer {
                name: container.name.clone(),
                engine: Some(name),
                waiting: None,
            });
        }
        running
    }

    /// The engine's name of the pod's container `name`, if it runs.
    pub fn container(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.engine.as_deref())
    }

    /// `docker run` for a container of the pod (`detach`: a container; else an init
    /// container, run to its end).
    fn run_args(
        &self,
        container: &Container,
        volumes: &BTreeMap<String, PathBuf>,
        name: &str,
        detach: bool,
    ) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into(), "--name".into(), name.into()];
        if detach {
            args.push("-d".into());
        }
        args.push(format!("--network=container:{}", self.pause));
        if container.stdin == Some(true) {
            args.push("-i".into());
        }
        for mount in container.volume_mounts.iter().flatten() {
            let host = volumes.get(&mount.name).expect("a volume of the pod");
            let mode = if mount.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            };
            args.push("-v".into());
            args.push(format!("{}:{}:{mode}", host.display(), mount.mount_path));
        }
        if let Some(dir) = &container.working_dir {
            args.push("-w".into());
            args.push(dir.clone());
        }
        if let Some(context) = &container.security_context
            && let Some(uid) = context.run_as_user
        {
            let user = match context.run_as_group {
                Some(gid) => format!("{uid}:{gid}"),
                None => uid.to_string(),
            };
            args.push("--user".into());
            args.push(user);
        }
        if let Some(limits) = container.resources.as_ref().and_then(|r| r.limits.as_ref()) {
            if let Some(memory) = limits.get("memory") {
                args.push(format!("--memory={}", docker_memory(&memory.0)));
                args.push(format!("--memory-swap={}", docker_memory(&memory.0)));
            }
            if let Some(cpu) = limits.get("cpu") {
                args.push(format!("--cpus={}", docker_cpus(&cpu.0)));
            }
        }
        for var in container.env.iter().flatten() {
            let from_secret = var.value_from.as_ref().map(|from| {
                from.secret_key_ref
                    .as_ref()
                    .expect("the fake takes plain values and Secret keys only")
            });
            let value = match (&var.value, from_secret) {
                (Some(value), None) => value.clone(),
                (None, Some(key)) => {
                    assert_eq!(Some(&key.name), self.secret.0.as_ref(), "the pod's Secret");
                    self.secret
                        .1
                        .get(&key.key)
                        .cloned()
                        .expect("the Secret's key")
                }
                _ => panic!("the fake takes a value or a Secret's key: {var:?}"),
            };
            args.push("-e".into());
            args.push(format!("{}={value}", var.name));
        }
        let command = container.command.clone().unwrap_or_default();
        if let Some((program, _)) = command.split_first() {
            args.push("--entrypoint".into());
            args.push(program.clone());
        }
        args.push(container.image.clone().expect("an image"));
        args.extend(command.iter().skip(1).cloned());
        args.extend(container.args.iter().flatten().cloned());
        args
    }

    /// The pod's status as a kubelet reports it, from the engine's state of its containers.
    pub fn status(&self) -> PodStatus {
        let init: Vec<Value> = self
            .init
            .iter()
            .map(|(name, code)| {
                let reason = if *code == 0 { "Completed" } else { "Error" };
                json!({ "name": name, "image": self.images[name], "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": { "terminated": { "exitCode": code, "reason": reason } } })
            })
            .collect();
        let failed_init = self.init.iter().any(|(_, code)| *code != 0);
        let mut statuses = Vec::new();
        let mut any_running = false;
        // (terminated, of which with a code other than 0), for the phase.
        let mut ended = (0usize, 0usize);
        for PodContainer {
            name,
            engine: docker_name,
            waiting,
        } in &self.containers
        {
            let state = match (docker_name, waiting) {
                (_, Some((reason, message))) => {
                    json!({ "waiting": { "reason": reason, "message": message } })
                }
                (Some(docker_name), None) => {
                    let inspected = docker(&[
                        "inspect",
                        "-f",
                        "{{.State.Running}} {{.State.ExitCode}} {{.State.OOMKilled}}",
                        docker_name,
                    ])
                    .unwrap_or_else(|_| "false -1 false".into());
                    let parts: Vec<&str> = inspected.split(' ').collect();
                    if parts[0] == "true" {
                        any_running = true;
                        json!({ "running": {} })
                    } else {
                        let code: i64 = parts[1].parse().unwrap_or(-1);
                        ended.0 += 1;
                        ended.1 += usize::from(code != 0);
                        let reason = match (parts[2], code) {
                            ("true", _) => "OOMKilled",
                            (_, 0) => "Completed",
                            _ => "Error",
                        };
                        json!({ "terminated": { "exitCode": code, "reason": reason } })
                    }
                }
                (None, None) => unreachable!("a container either runs or waits"),
            };
            statuses.push(
                json!({ "name": name, "image": self.images[name], "imageID": "", "ready": false,
                "restartCount": 0, "state": state }),
            );
        }
        // As a kubelet with `restartPolicy: Never`: once every container ended, the pod
        // succeeded if each ended with 0, and failed otherwise.
        let all_ended = !self.containers.is_empty() && ended.0 == self.containers.len();
        let phase = if failed_init || (all_ended && ended.1 > 0) {
            "Failed"
        } else if all_ended {
            "Succeeded"
        } else if any_running {
            "Running"
        } else {
            "Pending"
        };
        serde_json::from_value(json!({
            "phase": phase,
            "initContainerStatuses": init,
            "containerStatuses": statuses,
        }))
        .expect("a pod status")
    }
}

impl Drop for DockerPod {
    fn drop(&mut self) {
        for name in self.containers.iter().filter_map(|c| c.engine.as_ref()) {
            let _ = docker(&["rm", "-f", name]);
        }
        let _ = docker(&["rm", "-f", &self.pause]);
    }
}

/// A Kubernetes memory quantity (`512Mi`, `1G`, bytes) as Docker takes it (bytes).
fn docker_memory(quantity: &str) -> String {
    let memory: hodei_domain::model::Memory = quantity.parse().expect("a memory quantity");
    memory.bytes().to_string()
}

/// A Kubernetes CPU quantity (`1500m`, `2`) as Docker takes it (`1.5`).
fn docker_cpus(quantity: &str) -> String {
    let cpu: hodei_domain::model::Cpu = quantity.parse().expect("a CPU quantity");
    format!("{}", f64::from(cpu.millis()) / 1000.0)
}
