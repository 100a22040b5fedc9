//! A job attempt as a pod and a Secret, pinned by the golden files of `golden/`. To write
//! them anew after a deliberate change: `HODEI_BLESS=1 cargo test -p hodei-adapters kube::`,
//! then read the difference before committing it.

use std::path::PathBuf;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::{Cpu, Env, Image, Memory};
use hodei_domain::ports::Checkout;
use hodei_domain::state::Attempt;

use super::*;
use crate::kube::{
    ATTEMPT_LABEL, EPOCH_LABEL, INSTANCE_LABEL, JOB_LABEL, RUN_LABEL, parse_labels, pod_name,
};

/// Compares `value`, as pretty JSON, with the golden file `name`; writes the file instead when
/// `HODEI_BLESS` is set. The file must parse back into the same object.
pub(crate) fn golden<T>(name: &str, value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/kube/golden")
        .join(name);
    let json = serde_json::to_string_pretty(value).expect("serialise") + "\n";
    if std::env::var_os("HODEI_BLESS").is_some() {
        std::fs::write(&path, &json).expect("write the golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err} (HODEI_BLESS=1 writes it)",
            path.display()
        )
    });
    assert_eq!(
        json,
        expected,
        "{} differs (HODEI_BLESS=1 writes it anew)",
        path.display()
    );
    let parsed: T = serde_json::from_str(&expected).expect("the golden file parses");
    assert_eq!(&parsed, value);
}

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).expect("attempts start at 1")
}

pub(crate) fn settings() -> PodSettings {
    PodSettings {
        namespace: "ci".into(),
        instance: "store-1".into(),
        entrypoint_image: "hodei:0.1.0".into(),
        ..PodSettings::default()
    }
}

pub(crate) fn plain_job() -> JobSpec {
    JobSpec {
        run: RunId(3),
        job: JobId(7),
        attempt: attempt(1),
        name: "build".into(),
        image: Some("busybox:1".parse::<Image>().expect("image")),
        pull: PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    }
}

fn full_job() -> JobSpec {
    let db = Service {
        image: "postgres:16".parse().expect("image"),
        env: Env::from([("POSTGRES_PASSWORD".into(), "x".into())]),
        command: Vec::new(),
        ports: vec![5432],
    };
    let cache = Service {
        image: "redis:7".parse().expect("image"),
        env: Env::new(),
        command: vec!["redis-server".into(), "--save".into(), String::new()],
        ports: vec![6379],
    };
    JobSpec {
        attempt: attempt(2),
        name: "test (os=bookworm, rust=stable)".into(),
        pull: PullPolicy::Always,
        user: Some("1000:1000".into()),
        services: vec![
            ("db".parse().expect("name"), db),
            ("cache".parse().expect("name"), cache),
        ],
        resources: Resources {
            cpu: Some("1500m".parse::<Cpu>().expect("cpu")),
            memory: Some("512Mi".parse::<Memory>().expect("memory")),
        },
        ..plain_job()
    }
}

fn full_settings() -> PodSettings {
    PodSettings {
        node_selector: BTreeMap::from([("hodei.io/pool".into(), "linux".into())]),
        tolerations: vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("ci".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }],
        image_pull_secrets: vec!["registry".into()],
        ..settings()
    }
}

#[test]
fn a_plain_job_is_a_pod_of_its_image_with_the_entrypoint_copied_in() {
    let pod = pod(
        &settings(),
        PodJob {
            spec: &plain_job(),
            epoch: 0,
            timeout: None,
        },
    )
    .expect("pod");
    golden("plain-pod.json", &pod);
}

#[test]
fn services_resources_user_timeout_and_pool_settings_reach_the_pod() {
    let pod = pod(
        &full_settings(),
        PodJob {
            spec: &full_job(),
            epoch: 4,
            timeout: Some(Duration::from_secs(30 * 60)),
        },
    )
    .expect("pod");
    golden("full-pod.json", &pod);
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.active_deadline_seconds, Some(30 * 60 + 60));
    let steps = &spec.containers[0];
    let context = steps.security_context.as_ref().expect("a security context");
    assert_eq!(
        (context.run_as_user, context.run_as_group),
        (Some(1000), Some(1000))
    );
    let command = steps.command.as_ref().expect("command");
    let waits: Vec<&str> = command
        .windows(2)
        .filter(|pair| pair[0] == "--wait-tcp")
        .map(|pair| pair[1].as_str())
        .collect();
    assert_eq!(waits, ["5432", "6379"], "every service's ports, in order");
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["steps", "svc-db", "svc-cache"]);
}

#[test]
fn the_secret_holds_the_values_and_the_token_and_is_owned_by_the_pod() {
    let key = PodJob {
        spec: &plain_job(),
        epoch: 2,
        timeout: None,
    }
    .key();
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), "s3cr3t".to_owned())]);
    let secret = secret(
        &settings(),
        key,
        "0b5a4c52-9a4c-4c1e-8f7e-6d9c2f6b1a3e",
        &secrets,
        "token-word",
    );
    golden("secret.json", &secret);
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Pod", "hodei-store-1-run-3-job-7-1")
    );
}

#[test]
fn no_secret_value_is_in_the_pod() {
    let mut job = full_job();
    job.services[0].1.env.clear();
    let pod = pod(
        &full_settings(),
        PodJob {
            spec: &job,
            epoch: 1,
            timeout: None,
        },
    )
    .expect("pod");
    let containers = pod.spec.as_ref().expect("spec").containers.iter();
    assert!(
        containers
            .clone()
            .all(|c| c.env.is_none() && c.env_from.is_none()),
        "the steps' variables come by request, secrets from the Secret's volume"
    );
}

#[test]
fn jobs_the_pod_cannot_run_are_refused_with_what_is_expected() {
    let run = |job: &JobSpec| {
        pod(
            &settings(),
            PodJob {
                spec: job,
                epoch: 0,
                timeout: None,
            },
        )
        .map(|_| ())
        .map_err(|err| err.to_string())
    };
    let no_image = JobSpec {
        image: None,
        ..plain_job()
    };
    assert!(
        run(&no_image)
            .expect_err("refused")
            .contains("expected an `image`")
    );
    let named_user = JobSpec {
        user: Some("builder".into()),
        ..plain_job()
    };
    assert_eq!(
        run(&named_user).expect_err("refused"),
        "job `build`: user `builder`: expected a numeric `uid` or `uid:gid` on Kubernetes (runAsUser, runAsGroup)"
    );
    for user in ["1000:", "-1", "1000:x", ""] {
        let job = JobSpec {
            user: Some(user.into()),
            ..plain_job()
        };
        assert!(run(&job).is_err(), "user {user:?} accepted");
    }
    let checkout = JobSpec {
        checkout: Some(Checkout {
            repository: "web".into(),
            commit: "0123abc".into(),
            depth: None,
            submodules: false,
        }),
        ..plain_job()
    };
    assert!(
        run(&checkout)
            .expect_err("refused")
            .contains("cannot check out a repository yet")
    );
    assert_eq!(
        run(&JobSpec {
            user: Some("0".into()),
            ..plain_job()
        }),
        Ok(())
    );
    let mut same_port = full_job();
    same_port.services[1].1.ports.push(5432);
    assert_eq!(
        run(&same_port).expect_err("refused"),
        "job `test (os=bookworm, rust=stable)`: services `db` and `cache` both listen on port 5432: expected each port to one service: the services of a job share the pod's network (`localhost`)"
    );
}

#[test]
fn labels_read_back_to_the_attempt_and_its_epoch() {
    let key = PodKey {
        run: RunId(3),
        job: JobId(7),
        attempt: attempt(2),
        epoch: 9,
    };
    let labels = crate::kube::labels("store 1/a", key);
    assert_eq!(labels[INSTANCE_LABEL], "store-1-a");
    assert_eq!(labels[RUN_LABEL], "3");
    assert_eq!(labels[JOB_LABEL], "7");
    assert_eq!(labels[ATTEMPT_LABEL], "2");
    assert_eq!(labels[EPOCH_LABEL], "9");
    assert_eq!(parse_labels(&labels), Some(key));
    let mut broken = labels.clone();
    broken.insert(ATTEMPT_LABEL.into(), "0".into());
    assert_eq!(parse_labels(&broken), None);
}

#[test]
fn pod_names_are_dns_labels_that_keep_the_attempt_whole() {
    let key = PodKey {
        run: RunId(123_456_789),
        job: JobId(987_654_321),
        attempt: attempt(12),
        epoch: 0,
    };
    assert_eq!(
        pod_name("Store_1", key),
        "hodei-store-1-run-123456789-job-987654321-12"
    );
    let long = pod_name(&"x".repeat(200), key);
    assert!(long.len() <= 63, "{long} is too long");
    assert!(long.ends_with("-run-123456789-job-987654321-12"), "{long}");
    assert_eq!(pod_name("--", key), "hodei-run-123456789-job-987654321-12");
    assert!(
        long.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    );
}
