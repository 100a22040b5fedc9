//! Jobs' pods, as `hodei_adapters::kube` makes them, run on the real Docker engine by the
//! Docker half of a fake cluster (`kubernetes/docker_pod.rs`): Hodei's image copies the
//! entrypoint in, the job's image runs it as the job's user under its limits, a service is
//! reached on `localhost`, a secret reaches a step through the pod's Secret, and the pod's
//! status reads as a cluster's would. Then the same through the fake's HTTP half
//! (`kubernetes/api_server.rs`) with Hodei's real kube client (`Cluster`): a pod and its Secret
//! created, waited for, its log followed across a dropped stream, deleted from outside, and the
//! pods of an earlier life reaped. Last, a pool of ephemeral workers with `provider =
//! "kubernetes"`: a server whose kube client is the fake's runs a job on a worker pod.

#[path = "kubernetes/api_server.rs"]
mod api_server;
mod common;
#[path = "kubernetes/docker_pod.rs"]
mod docker_pod;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{hodei_image, scratch};
use docker_pod::{DockerPod, docker};
use hodei_adapters::kube::{
    Decoder, EnvValue, Frame, Graces, LogCursor, Marker, PodFailure, PodJob, PodSettings,
    PodVerdict, PodWatch, Request, RunStep, pod, secret, step_outputs,
};
use hodei_domain::ids::{JobId, RunId, Timestamp};
use hodei_domain::model::{PullPolicy, Resources, Service};
use hodei_domain::ports::JobSpec;
use hodei_domain::state::Attempt;

const JOB_IMAGE: &str = "debian:bookworm";
const TOKEN: &str = "7a6b5c4d3e2f10fedcba98765432100a";

fn settings() -> PodSettings {
    PodSettings {
        namespace: "ci".into(),
        instance: "kube-test".into(),
        entrypoint_image: hodei_image().into(),
        ..PodSettings::default()
    }
}

fn job(image: &str, pull: PullPolicy) -> JobSpec {
    JobSpec {
        run: RunId(1),
        job: JobId(1),
        attempt: Attempt::new(1).expect("attempt"),
        name: "build".into(),
        image: Some(image.parse().expect("image")),
        pull,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    }
}

/// Runs the pod of `job` on the engine, under the name prefix `prefix`.
fn run_pod(job: &JobSpec, dir: &Path, prefix: &str) -> DockerPod {
    let settings = settings();
    let pod_job = PodJob {
        spec: job,
        epoch: 0,
        timeout: Some(Duration::from_secs(600)),
    };
    let pod = pod(&settings, pod_job).expect("a pod");
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), "s3cr3t".to_owned())]);
    let secret = secret(&settings, pod_job.key(), "uid-of-the-fake", &secrets, TOKEN);
    DockerPod::run(&pod, &secret, dir, prefix)
}

/// Reads the pod's status (every 100 ms) until it is no longer starting; fails after 120 s.
fn verdict(pod: &DockerPod) -> PodVerdict {
    let start = Instant::now();
    let mut watch = PodWatch::new(Graces::default());
    loop {
        let status = k8s_openapi::api::core::v1::Pod {
            status: Some(pod.status()),
            ..Default::default()
        };
        let now = Timestamp(i64::try_from(start.elapsed().as_millis()).expect("ms"));
        let (next, verdict) = watch.on_status(&status, now);
        watch = next;
        if verdict != PodVerdict::Starting {
            return verdict;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "likely deadlocked: the pod never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The frames of a container's log so far (`docker logs --timestamps`, read as `pods/log`).
fn frames(container: &str) -> Vec<Frame> {
    let out = Command::new("docker")
        .args(["logs", "--timestamps", container])
        .output()
        .expect("docker logs");
    let mut cursor = LogCursor::new();
    let lines = cursor.feed(&out.stdout).expect("a timestamped log");
    let mut decoder = Decoder::new(TOKEN);
    let mut frames = decoder.feed(&lines);
    frames.extend(decoder.finish());
    frames
}

/// The standard input of a running container (`docker attach`), and the attaching process.
fn attach(container: &str) -> (std::process::Child, std::process::ChildStdin) {
    let mut attach = Command::new("docker")
        .args(["attach", "--sig-proxy=false", container])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker attach");
    let stdin = attach.stdin.take().expect("stdin");
    (attach, stdin)
}

fn request(step: RunStep) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Request::Run(step)).expect("json");
    line.push(b'\n');
    line
}

#[test]
fn a_jobs_pod_runs_its_steps_as_its_user_with_its_service_and_its_secret() {
    let dir = scratch("runs");
    let service = Service {
        image: hodei_image().parse().expect("image"),
        env: Default::default(),
        command: vec![
            "server".into(),
            "--listen".into(),
            "127.0.0.1:7001".into(),
            "--data".into(),
            "/tmp/hodei-service".into(),
        ],
        ports: vec![7001],
    };
    let spec = JobSpec {
        user: Some("1000:1000".into()),
        services: vec![("api".parse().expect("name"), service)],
        resources: Resources {
            cpu: Some("1".parse().expect("cpu")),
            memory: Some("256Mi".parse().expect("memory")),
        },
        ..job(JOB_IMAGE, PullPolicy::Never)
    };
    let prefix = format!("hodei-kube-test-{}-runs", std::process::id());
    let pod = run_pod(&spec, &dir, &prefix);
    assert_eq!(verdict(&pod), PodVerdict::Running);
    let steps = pod
        .container("steps")
        .expect("the steps container runs")
        .to_owned();

    let (mut attach, mut stdin) = attach(&steps);
    let first = RunStep {
        index: 0,
        attempt: 1,
        shell: vec!["/bin/bash".into(), "-c".into()],
        script: "id -u; echo \"token=$API_TOKEN\"; exec 3<>/dev/tcp/127.0.0.1/7001 && echo \"service reached\"; echo kept > file".into(),
        working_dir: None,
        env: BTreeMap::from([("API_TOKEN".into(), EnvValue::Secret("API_TOKEN".into()))]),
    };
    stdin.write_all(&request(first)).expect("send");
    let second = RunStep {
        index: 1,
        attempt: 1,
        shell: vec!["/bin/sh".into(), "-c".into()],
        script: "cat file; exit 3".into(),
        working_dir: None,
        env: BTreeMap::new(),
    };
    stdin.write_all(&request(second)).expect("send");

    let deadline = Instant::now() + Duration::from_secs(120);
    let ends = loop {
        let ends: Vec<Marker> = frames(&steps)
            .into_iter()
            .filter_map(|frame| match frame {
                Frame::Marker(marker @ Marker::End { .. }) => Some(marker),
                _ => None,
            })
            .collect();
        if ends.len() == 2 {
            break ends;
        }
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: {:?}",
            frames(&steps)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(
        matches!(
            ends[0],
            Marker::End {
                index: 0,
                code: Some(0),
                ..
            }
        ),
        "{ends:?}"
    );
    assert!(
        matches!(
            ends[1],
            Marker::End {
                index: 1,
                code: Some(3),
                ..
            }
        ),
        "{ends:?}"
    );
    let outputs: Vec<Vec<u8>> = step_outputs(frames(&steps))
        .into_iter()
        .map(|(_, output)| output)
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&outputs[0]),
        "1000\ntoken=s3cr3t\nservice reached\n"
    );
    assert_eq!(String::from_utf8_lossy(&outputs[1]), "kept\n");
    drop(pod);
    let left = docker(&["ps", "-aq", "--filter", &format!("name={prefix}")]).expect("ps");
    assert_eq!(left, "", "containers of the pod are left");
}

#[test]
fn an_image_that_may_not_be_pulled_ends_the_job_at_once() {
    let dir = scratch("absent");
    let prefix = format!("hodei-kube-test-{}-absent", std::process::id());
    let pod = run_pod(
        &job("hodei-test/absent:1", PullPolicy::Never),
        &dir,
        &prefix,
    );
    let verdict = verdict(&pod);
    assert!(
        matches!(&verdict, PodVerdict::Failed(PodFailure::ImagePull { image, reason, .. })
            if image == "hodei-test/absent:1" && reason == "ErrImageNeverPull"),
        "{verdict:?}"
    );
}

// ---- Through the API, with Hodei's kube client ---------------------------------------------

use std::sync::{Arc, Mutex};

use api_server::FakeApi;
use hodei_adapters::kube::{Cluster, Kind, Move};
use k8s_openapi::api::core::v1::Pod as KubePod;

async fn fake(test: &str) -> (FakeApi, Cluster, String) {
    let dir = scratch(&format!("api-{test}"));
    let prefix = format!("hodei-kube-test-{}-{test}", std::process::id());
    let api = FakeApi::start(dir, &prefix).await;
    let cluster = Cluster::new(api.client(), settings());
    (api, cluster, prefix)
}

async fn create(cluster: &Cluster, spec: &JobSpec) -> String {
    let secrets = BTreeMap::from([("API_TOKEN".to_owned(), "s3cr3t".to_owned())]);
    let job = PodJob {
        spec,
        epoch: 0,
        timeout: None,
    };
    cluster
        .create(job, &secrets, TOKEN)
        .await
        .expect("created")
        .name
}

fn left(prefix: &str) -> String {
    docker(&["ps", "-aq", "--filter", &format!("name={prefix}")]).expect("ps")
}

/// Waits until no container of `prefix` is left (a deleted pod's go in the background).
/// Drops the fake API server (its pods go with it) and waits until its containers are gone.
async fn gone(api: FakeApi, prefix: &str) {
    tokio::task::spawn_blocking(move || drop(api))
        .await
        .expect("dropped");
    all_gone(prefix).await;
}

async fn all_gone(prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !left(prefix).is_empty() {
        assert!(Instant::now() < deadline, "containers of {prefix} are left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_client_follows_a_pod_across_a_dropped_log_stream_until_it_is_deleted() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("follow").await;
    let name = create(&cluster, &job(JOB_IMAGE, PullPolicy::Never)).await;
    let verdict = tokio::time::timeout(Duration::from_secs(120), cluster.wait_running(&name))
        .await
        .expect("likely deadlocked: the pod never ran")
        .expect("asked");
    assert_eq!(verdict, PodVerdict::Running);
    // The first log stream drops in the middle of the step's output.
    api.drop_next_log_after(400);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let follower = {
        let cluster = cluster.clone();
        let name = name.clone();
        let frames = Arc::clone(&frames);
        tokio::spawn(async move {
            let mut cursor = LogCursor::new();
            let mut on_frame = move |frame: Frame| frames.lock().expect("frames").push(frame);
            cluster
                .follow(&name, TOKEN, &mut cursor, &mut on_frame)
                .await
        })
    };
    // The step goes to the entrypoint directly (attaching through the API is not faked).
    let steps = api
        .container(&name, "steps")
        .expect("the steps container runs");
    let (mut attach, mut stdin) = attach(&steps);
    let step = RunStep {
        index: 0,
        attempt: 1,
        shell: vec!["/bin/sh".into(), "-c".into()],
        script: "for i in $(seq 1 30); do echo \"line $i of the step\"; sleep 0.05; done".into(),
        working_dir: None,
        env: BTreeMap::new(),
    };
    stdin.write_all(&request(step)).expect("send");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ended = frames
            .lock()
            .expect("frames")
            .iter()
            .any(|f| matches!(f, Frame::Marker(Marker::End { .. })));
        if ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: {:?}",
            api.log_requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stdin);
    let _ = attach.kill();
    let _ = attach.wait();
    // Deleted from outside Hodei: the follower ends with that.
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    pods.delete(&name, &Default::default())
        .await
        .expect("deleted");
    let verdict = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("likely deadlocked: the follower goes on after the deletion")
        .expect("no panic")
        .expect("followed");
    assert_eq!(verdict, PodVerdict::Failed(PodFailure::Deleted));

    let requests = api.log_requests();
    assert!(
        requests.len() >= 2,
        "the stream was not opened again: {requests:?}"
    );
    assert!(requests[1].contains("sinceTime="), "{requests:?}");
    let frames = frames.lock().expect("frames").clone();
    let outputs = step_outputs(frames.clone());
    let expected: String = (1..=30)
        .map(|i| format!("line {i} of the step\n"))
        .collect();
    assert_eq!(outputs.len(), 1, "{frames:?}");
    assert_eq!(String::from_utf8_lossy(&outputs[0].1), expected);
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_client_ends_the_wait_for_a_pod_whose_image_may_not_be_pulled() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("absent").await;
    let name = create(&cluster, &job("hodei-test/absent:1", PullPolicy::Never)).await;
    let verdict = tokio::time::timeout(Duration::from_secs(120), cluster.wait_running(&name))
        .await
        .expect("likely deadlocked: the wait never ended")
        .expect("asked");
    assert!(
        matches!(&verdict, PodVerdict::Failed(PodFailure::ImagePull { reason, .. }) if reason == "ErrImageNeverPull"),
        "{verdict:?}"
    );
    cluster.delete(&name).await.expect("deleted");
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_of_an_earlier_life_are_reaped_through_the_api() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("reap").await;
    let name = create(&cluster, &job(JOB_IMAGE, PullPolicy::Never)).await;
    let verdict = tokio::time::timeout(Duration::from_secs(120), cluster.wait_running(&name))
        .await
        .expect("likely deadlocked")
        .expect("asked");
    assert_eq!(verdict, PodVerdict::Running);
    // A new life, with no attempt running: everything of the instance goes.
    let later = Cluster::new(api.client(), settings());
    let moves = later.reap(&[]).await.expect("reaped");
    assert_eq!(
        moves,
        [
            Move::Delete {
                kind: Kind::Pod,
                name: name.clone()
            },
            Move::Delete {
                kind: Kind::Secret,
                name: name.clone()
            },
        ]
    );
    assert_eq!(
        later.reap(&[]).await.expect("reaped"),
        [],
        "a second reap finds nothing"
    );
    gone(api, &prefix).await;
}

// ---- The provider, through the API ---------------------------------------------------------

use hodei_adapters::kube::KubernetesProvider;
use hodei_domain::model::Env;
use hodei_domain::ports::{
    JobAttempt, OutputSink, Provider, ProviderError, Reconcile, SecretVars, StepSpec, Workspace,
};
use hodei_domain::state::StepExit;

/// A step's output, as the provider delivers it.
#[derive(Default)]
struct Collect(Mutex<Vec<u8>>);

impl OutputSink for Collect {
    fn output(&self, chunk: &[u8]) {
        self.0.lock().expect("output").extend_from_slice(chunk);
    }
}

fn step_spec(index: u32, script: &str, env: &[(&str, &str)]) -> StepSpec {
    StepSpec {
        index,
        attempt: Attempt::new(1).expect("attempt"),
        script: script.into(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Env>(),
        working_dir: None,
    }
}

fn secret_job(image: &str) -> JobSpec {
    JobSpec {
        secrets: SecretVars(BTreeMap::from([(
            "API_TOKEN".to_owned(),
            "s3cr3t".to_owned(),
        )])),
        ..job(image, PullPolicy::Never)
    }
}

/// Runs `step` to its end; its exit and output.
async fn run_step(
    provider: &KubernetesProvider,
    workspace: &Workspace,
    step: &StepSpec,
) -> (Result<StepExit, ProviderError>, String) {
    let sink = Arc::new(Collect::default());
    let handle = provider
        .start_step(workspace, step, sink.clone())
        .await
        .expect("started");
    let exit = tokio::time::timeout(Duration::from_secs(120), provider.wait_step(&handle))
        .await
        .expect("likely deadlocked: the step never ended");
    let output = String::from_utf8_lossy(&sink.0.lock().expect("output")).into_owned();
    (exit, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_a_pod_step_by_step_across_a_dropped_log_stream() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider").await;
    let provider = KubernetesProvider::new(cluster);
    // The first log stream drops in the middle of the first step's output.
    api.drop_next_log_after(400);
    let spec = secret_job(JOB_IMAGE);
    let workspace = tokio::time::timeout(Duration::from_secs(120), provider.set_up(&spec))
        .await
        .expect("likely deadlocked: the set-up never ended")
        .expect("set up");

    let script = "for i in $(seq 1 20); do echo \"line $i $API_TOKEN\"; sleep 0.02; done";
    let first = step_spec(0, script, &[("API_TOKEN", "s3cr3t"), ("A", "x")]);
    let (exit, output) = run_step(&provider, &workspace, &first).await;
    assert_eq!(exit, Ok(StepExit::code(0)));
    let expected: String = (1..=20).map(|i| format!("line {i} s3cr3t\n")).collect();
    assert_eq!(output, expected, "once each, in order, none missing");
    let (exit, output) = run_step(
        &provider,
        &workspace,
        &step_spec(1, "echo $A; exit 3", &[("A", "x")]),
    )
    .await;
    assert_eq!((exit, output.as_str()), (Ok(StepExit::code(3)), "x\n"));

    // A step stopped while it runs.
    let sink = Arc::new(Collect::default());
    let long = step_spec(2, "echo started; sleep 60", &[]);
    let handle = provider
        .start_step(&workspace, &long, sink.clone())
        .await
        .expect("started");
    provider.destroy_step(&handle).await.expect("destroyed");
    let exit = tokio::time::timeout(Duration::from_secs(30), provider.wait_step(&handle))
        .await
        .expect("likely deadlocked: a destroyed step goes on");
    assert_eq!(exit, Ok(StepExit::signal(9)));
    provider
        .destroy_step(&handle)
        .await
        .expect("destroying again is harmless");

    let requests = api.log_requests();
    assert!(
        requests.len() >= 2 && requests[1].contains("sinceTime="),
        "{requests:?}"
    );
    assert!(!api.attaches().is_empty());
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    let pod = pods.get(&workspace.id).await.expect("the pod");
    let text = serde_json::to_string(&pod.spec).expect("json");
    assert!(
        !text.contains("s3cr3t"),
        "a secret value in the pod's spec: {text}"
    );

    provider.tear_down(&workspace).await.expect("torn down");
    provider
        .tear_down(&workspace)
        .await
        .expect("tearing down again is harmless");
    assert!(pods.get_opt(&workspace.id).await.expect("asked").is_none());
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_whose_image_may_not_be_pulled_fails_the_set_up_with_the_reason() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider-pull").await;
    let provider = KubernetesProvider::new(cluster);
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        provider.set_up(&secret_job("hodei-test/absent:1")),
    )
    .await
    .expect("likely deadlocked: the set-up never ended")
    .expect_err("refused");
    assert!(
        matches!(&err, ProviderError::SetUp { reason, .. }
            if reason.contains("cannot pull the image `hodei-test/absent:1`")
                && reason.contains("ErrImageNeverPull")),
        "{err}"
    );
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    let left_pods = pods.list(&Default::default()).await.expect("list");
    assert!(left_pods.items.is_empty(), "a failed set-up leaves its pod");
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_from_outside_ends_the_running_step_with_that_reason() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider-deleted").await;
    let provider = KubernetesProvider::new(cluster);
    let workspace = provider
        .set_up(&secret_job(JOB_IMAGE))
        .await
        .expect("set up");
    let sink = Arc::new(Collect::default());
    let handle = provider
        .start_step(&workspace, &step_spec(0, "sleep 300", &[]), sink)
        .await
        .expect("started");
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    pods.delete(&workspace.id, &Default::default())
        .await
        .expect("deleted");
    let err = tokio::time::timeout(Duration::from_secs(60), provider.wait_step(&handle))
        .await
        .expect("likely deadlocked: the step outlives its pod")
        .expect_err("lost");
    assert!(
        matches!(&err, ProviderError::Wait { reason, .. } if reason == "the pod was deleted from outside Hodei"),
        "{err}"
    );
    provider.tear_down(&workspace).await.expect("torn down");
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_of_an_earlier_life_are_reaped_by_the_next_provider() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider-reap").await;
    let first = KubernetesProvider::new(cluster.clone());
    let spec = secret_job(JOB_IMAGE);
    let workspace = first.set_up(&spec).await.expect("set up");
    drop(first);
    // Hodei starts again: the pod of the earlier life goes.
    let next = KubernetesProvider::new(Cluster::new(api.client(), settings()));
    let orphans = next.reap_orphans(&[]).await.expect("reaped");
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert_eq!(
        (orphans[0].job, orphans[0].job_attempt),
        (spec.job, spec.attempt)
    );
    assert_eq!(orphans[0].id, workspace.id);
    assert!(next.reap_orphans(&[]).await.expect("reaped").is_empty());
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_running_when_hodei_stopped_is_taken_back_by_the_next_provider() {
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider-adopt").await;
    let first = KubernetesProvider::new(cluster.clone());
    let spec = secret_job(JOB_IMAGE);
    let other = JobSpec {
        job: JobId(2),
        ..secret_job(JOB_IMAGE)
    };
    let workspace = first.set_up(&spec).await.expect("set up");
    let (exit, _) = run_step(&first, &workspace, &step_spec(0, "echo first", &[])).await;
    assert_eq!(exit, Ok(StepExit::code(0)));
    let abandoned = first.set_up(&other).await.expect("set up");
    // A step that goes on while Hodei is away: a file tells it when to end.
    let script = "echo \"before $API_TOKEN\"; while [ ! -e /workspace/go ]; do sleep 0.1; done; echo after; exit 4";
    let step = step_spec(1, script, &[("API_TOKEN", "s3cr3t")]);
    let handle = first
        .start_step(&workspace, &step, Arc::new(Collect::default()))
        .await
        .expect("started");
    drop(first);

    // Hodei starts again: the pod of the attempt the store shows running a step stays, the
    // other goes.
    let next = KubernetesProvider::new(Cluster::new(api.client(), settings()));
    let spare = [JobAttempt {
        job: spec.job,
        attempt: spec.attempt,
    }];
    let orphans = next.reap_orphans(&spare).await.expect("reaped");
    let reaped: Vec<&str> = orphans.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(reaped, [abandoned.id.as_str()]);
    let sink = Arc::new(Collect::default());
    let taken = tokio::time::timeout(
        Duration::from_secs(120),
        next.reattach_step(&spec, 1, step.attempt, sink.clone()),
    )
    .await
    .expect("likely deadlocked: the re-attach never ended")
    .expect("re-attached")
    .expect("the step is taken back");
    assert_eq!(taken.workspace, workspace);
    assert_eq!(taken.step, handle);
    // A step that never ran in the pod is not taken back.
    let never = next
        .reattach_step(&spec, 5, step.attempt, Arc::new(Collect::default()))
        .await
        .expect("asked");
    assert_eq!(never, None);
    let steps = api
        .container(&workspace.id, "steps")
        .expect("the steps container");
    docker(&["exec", &steps, "touch", "/workspace/go"]).expect("docker exec");
    let exit = tokio::time::timeout(Duration::from_secs(60), next.wait_step(&taken.step))
        .await
        .expect("likely deadlocked: the step taken back never ended");
    assert_eq!(exit, Ok(StepExit::code(4)));
    let output = String::from_utf8_lossy(&sink.0.lock().expect("output")).into_owned();
    assert_eq!(
        output, "before s3cr3t\nafter\n",
        "from its first byte, once"
    );
    // The job goes on in the same pod with its next step.
    let (exit, output) =
        run_step(&next, &taken.workspace, &step_spec(2, "ls /workspace", &[])).await;
    assert_eq!((exit, output.as_str()), (Ok(StepExit::code(0)), "go\n"));
    next.tear_down(&taken.workspace).await.expect("torn down");
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_answers_503_opens_the_breaker_and_set_ups_wait_for_it() {
    use hodei_adapters::health::Probe;
    hodei_api::client::install_crypto();
    let (api, cluster, prefix) = fake("provider-health").await;
    let provider = KubernetesProvider::new(cluster);
    assert!(!provider.probe().await, "answers: no change");
    assert_eq!(provider.trouble(), None);
    api.set_down(true);
    assert!(provider.probe().await, "a change");
    let trouble = provider.trouble().expect("the API server is away");
    // The kube client tries again while the API server answers 503: the probe does not wait.
    assert!(
        trouble.starts_with("the Kubernetes API server cannot be used: ")
            && (trouble.contains("503") || trouble.contains("did not answer within 5 s")),
        "{trouble}"
    );
    let err = provider
        .set_up(&secret_job(JOB_IMAGE))
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, ProviderError::Unavailable { reason, .. } if *reason == trouble),
        "{err}"
    );
    api.set_down(false);
    assert!(provider.probe().await, "a change");
    assert_eq!(provider.trouble(), None);
    gone(api, &prefix).await;
}

// ---- A pool of ephemeral workers through the fake API server --------------------------------

/// The address of the engine's default bridge on this machine: where a container reaches a
/// server of the machine that listens on every address.
fn bridge_gateway() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "docker0"])
        .output()
        .expect("`ip` runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .expect("docker0 has an IPv4 address: the engine's default bridge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_pool_runs_a_queued_job_on_a_worker_pod_and_deletes_the_pod_after() {
    hodei_api::client::install_crypto();
    let image = hodei_image();
    let (api, _, prefix) = fake("pool").await;
    let dir = scratch("kube-pool");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: ci}}}}]\ncurrent-context: fake\n",
            api.url
        ),
    )
    .unwrap();
    // The worker's pod reaches the server through the bridge: it listens on every address.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("hodei.toml");
    std::fs::write(
        &config,
        format!(
            "[[pools]]\nname = \"kube\"\nprovider = \"kubernetes\"\nlabels = [\"kube-pool\"]\nimage = \"{image}\"\nmax = 1\nidle_timeout = \"30s\"\nnamespace = \"ci\"\nserver_url = \"http://{}:{port}\"\n",
            bridge_gateway()
        ),
    )
    .unwrap();
    let token = format!("hodei_kubepool{}", "x".repeat(40));
    let server = common::Server::start_on(
        &format!("0.0.0.0:{port}"),
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("HODEI_BOOTSTRAP_TOKEN", &token),
            ("HODEI_LOCAL_SLOTS", "0"),
        ],
        Stdio::inherit(),
        "",
    );
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{}{path}", server.url))
            .bearer_auth(&token)
    };
    let applied = call(reqwest::Method::PUT, "/api/v1/pipelines/on-pool")
        .header("content-type", "application/yaml")
        .body("name: on-pool\non: { manual: {} }\njobs:\n  work:\n    runs_on: [kube-pool]\n    steps:\n      - run: echo \"in the pod $HOSTNAME\"\n")
        .send()
        .await
        .unwrap();
    assert!(
        applied.status().is_success(),
        "{}",
        applied.text().await.unwrap()
    );
    let run: serde_json::Value = call(reqwest::Method::POST, "/api/v1/pipelines/on-pool/runs")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = run["id"].as_u64().expect("a run");
    let deadline = Instant::now() + Duration::from_secs(180);
    let run = loop {
        let run: serde_json::Value = call(reqwest::Method::GET, &format!("/api/v1/runs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if matches!(
            run["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            break run;
        }
        assert!(Instant::now() < deadline, "the run never ended: {run:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(run["state"], "succeeded", "{run:#}");
    let worker = run["jobs"][0]["worker"].as_str().unwrap_or_default();
    assert!(worker.starts_with("hodei-pool-kube-"), "{run:#}");
    // The worker's pod ends with its one job, and the pool deletes it with its Secret.
    let client = api.client();
    let pods: kube::Api<KubePod> = kube::Api::namespaced(client.clone(), "ci");
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, "ci");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let params = kube::api::ListParams::default().labels("hodei.io/pool=kube");
        let left = pods.list(&params).await.unwrap().items.len()
            + secrets.list(&params).await.unwrap().items.len();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} pod(s) and Secret(s) of the pool are left"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    all_gone(&prefix).await;
    drop(server);
    tokio::task::spawn_blocking(move || drop(api))
        .await
        .expect("dropped");
}

// ---- Against a real cluster (not in CI) ----------------------------------------------------

/// The provider on a real cluster. Not in CI (no cluster can be run there); run it with
///
/// ```text
/// HODEI_TEST_KUBECONFIG=~/.kube/config HODEI_TEST_IMAGE=registry.example/hodei:dev \
///     cargo test --test kubernetes -- --ignored
/// ```
///
/// `HODEI_TEST_IMAGE` is Hodei's image, pushed where the cluster pulls from;
/// `HODEI_TEST_JOB_IMAGE` (default `debian:bookworm`) the job's; `HODEI_TEST_NAMESPACE`
/// (default `default`) where the pod goes. Without the two first, it fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: HODEI_TEST_KUBECONFIG and HODEI_TEST_IMAGE (docs/kubernetes.md)"]
async fn on_a_real_cluster_a_job_runs_as_a_pod() {
    hodei_api::client::install_crypto();
    let path = std::env::var("HODEI_TEST_KUBECONFIG")
        .expect("HODEI_TEST_KUBECONFIG: the kubeconfig of the cluster to test against");
    let image = std::env::var("HODEI_TEST_IMAGE")
        .expect("HODEI_TEST_IMAGE: Hodei's image, where the cluster can pull it");
    let job_image =
        std::env::var("HODEI_TEST_JOB_IMAGE").unwrap_or_else(|_| "debian:bookworm".into());
    let namespace = std::env::var("HODEI_TEST_NAMESPACE").unwrap_or_else(|_| "default".into());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a cluster in the kubeconfig");
    let client = kube::Client::try_from(config).expect("a client");
    let settings = PodSettings {
        namespace,
        instance: format!("hodei-test-{}", std::process::id()),
        entrypoint_image: image,
        ..PodSettings::default()
    };
    let provider = KubernetesProvider::new(Cluster::new(client, settings));
    let spec = JobSpec {
        pull: PullPolicy::IfNotPresent,
        ..secret_job(&job_image)
    };
    let workspace = tokio::time::timeout(Duration::from_secs(600), provider.set_up(&spec))
        .await
        .expect("the set-up ends within 10 min")
        .expect("set up");
    let step = step_spec(
        0,
        "echo \"token=$API_TOKEN\"; exit 3",
        &[("API_TOKEN", "s3cr3t")],
    );
    let (exit, output) = run_step(&provider, &workspace, &step).await;
    provider.tear_down(&workspace).await.expect("torn down");
    assert_eq!(exit, Ok(StepExit::code(3)));
    assert_eq!(output, "token=s3cr3t\n");
}

// ---- Through the server --------------------------------------------------------------------

use common::Server;
use serde_json::Value;

/// `hodei server` with a `[kubernetes]` table naming the fake API server through a kubeconfig
/// file, and no local worker: every job runs as a pod.
fn kubernetes_server(api_url: &str, data: &Path) -> Server {
    let config_dir = data.with_extension("config");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(
        config_dir.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{ server: \"{}\" }}\nusers:\n- name: hodei\n  user: {{}}\ncontexts:\n- name: fake\n  context: {{ cluster: fake, user: hodei, namespace: ci }}\ncurrent-context: fake\n",
            api_url
        ),
    )
    .expect("kubeconfig");
    let config = config_dir.join("hodei.toml");
    std::fs::write(
        &config,
        format!(
            "local_slots = 0\n\n[kubernetes]\nkubeconfig = \"kubeconfig\"\nnamespace = \"ci\"\nimage = \"{}\"\ndefault_image = \"{JOB_IMAGE}\"\nmax_pods = 4\n",
            hodei_image()
        ),
    )
    .expect("hodei.toml");
    let config = config.to_string_lossy().into_owned();
    let grace = [("HODEI_SHUTDOWN_GRACE_SECONDS", "1")];
    Server::start_args(data, &["--config", &config], &grace, Stdio::null())
}

/// Stops the server (a blocking wait).
async fn stop(server: Server) {
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .expect("stopped");
}

/// The server's HTTP client and the admin's `authorization` header.
fn admin(data: &Path) -> (reqwest::Client, String) {
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin token");
    (reqwest::Client::new(), format!("Bearer {}", token.trim()))
}

async fn get(http: &reqwest::Client, url: &str, auth: &str) -> Value {
    let answer = http
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .expect("GET");
    answer.json().await.expect("JSON")
}

/// Applies `pipeline` as `name` and starts a run of it: the run's id.
async fn start_run(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    name: &str,
    pipeline: &str,
) -> u64 {
    let applied = http
        .put(format!("{base}/api/v1/pipelines/{name}"))
        .header("authorization", auth)
        .header("content-type", "application/yaml")
        .body(pipeline.to_owned())
        .send()
        .await
        .expect("PUT");
    assert!(
        applied.status().is_success(),
        "{}",
        applied.text().await.unwrap_or_default()
    );
    let run = http
        .post(format!("{base}/api/v1/pipelines/{name}/runs"))
        .header("authorization", auth)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("POST");
    let run: Value = run.json().await.expect("JSON");
    run["id"].as_u64().unwrap_or_else(|| panic!("a run: {run}"))
}

/// The run once it ended, and the log of its first job; fails after `limit`.
async fn run_end(
    http: &reqwest::Client,
    base: &str,
    auth: &str,
    id: u64,
    limit: Duration,
) -> (Value, String) {
    let deadline = Instant::now() + limit;
    loop {
        let run = get(http, &format!("{base}/api/v1/runs/{id}"), auth).await;
        if ["succeeded", "failed", "cancelled"].contains(&run["state"].as_str().unwrap_or("")) {
            let log = job_log(http, base, auth, &run).await;
            return (run, log);
        }
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: the run never ended: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn job_log(http: &reqwest::Client, base: &str, auth: &str, run: &Value) -> String {
    let job = run["jobs"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a job: {run}"));
    let answer = http
        .get(format!("{base}/api/v1/jobs/{job}/log"))
        .header("authorization", auth)
        .send()
        .await
        .expect("GET log");
    answer.text().await.expect("log")
}

/// Waits until the first job of run `id` logged `text`; fails after 120 s.
async fn until_logged(http: &reqwest::Client, base: &str, auth: &str, id: u64, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = get(http, &format!("{base}/api/v1/runs/{id}"), auth).await;
        if run["jobs"][0]["id"].as_u64().is_some()
            && job_log(http, base, auth, &run).await.contains(text)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: never logged {text:?}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of `hodei_provider_up{provider="kubernetes"}` in the server's metrics.
async fn kubernetes_up(http: &reqwest::Client, base: &str) -> String {
    let answer = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    let metrics = answer.text().await.expect("text");
    let line = metrics
        .lines()
        .find(|line| line.starts_with("hodei_provider_up{provider=\"kubernetes\"}"))
        .unwrap_or_else(|| panic!("no kubernetes provider in {metrics}"));
    line.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// The names of the fake's pods now.
async fn pod_names(api: &FakeApi) -> Vec<String> {
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    let list = pods.list(&Default::default()).await.expect("list");
    list.items
        .into_iter()
        .filter_map(|pod| pod.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_jobs_as_pods_through_its_kubernetes_table() {
    hodei_api::client::install_crypto();
    let (api, _, prefix) = fake("server").await;
    let data = scratch("server-kubernetes");
    let server = {
        let (url, dir) = (api.url.clone(), data.clone());
        tokio::task::spawn_blocking(move || kubernetes_server(&url, &dir))
            .await
            .expect("started")
    };
    let base = server.url.clone();
    let (http, auth) = admin(&data);

    // The worker and the API server's health, as an operator sees them.
    let ready = get(&http, &format!("{base}/readyz"), &auth).await;
    assert_eq!(ready["checks"]["kubernetes"], "ok", "{ready}");
    assert_eq!(kubernetes_up(&http, &base).await, "1");

    // A job with an image as a pod, its log through the API (the jobs below without one run
    // in the default image).
    let pipeline = "name: pods\njobs:\n  build:\n    image: debian:bookworm\n    pull: never\n    timeout: 10m\n    steps:\n      - run: echo \"debian $(cut -c1-2 /etc/debian_version)\"\n      - run: test -d /workspace && echo workspace\n";
    let id = start_run(&http, &base, &auth, "pods", pipeline).await;
    let (run, log) = run_end(&http, &base, &auth, id, Duration::from_secs(180)).await;
    assert_eq!(run["state"], "succeeded", "{run}\n{log}");
    assert!(
        log.contains("debian 12\n") && log.contains("workspace\n"),
        "{log}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pod_names(&api).await.is_empty() {
        assert!(Instant::now() < deadline, "the pod outlives its job");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An image that may not be pulled ends the job with the cluster's reason.
    let pipeline = "name: absent\njobs:\n  build:\n    image: hodei-test/absent:1\n    pull: never\n    steps:\n      - run: echo never\n";
    let id = start_run(&http, &base, &auth, "absent", pipeline).await;
    let (run, log) = run_end(&http, &base, &auth, id, Duration::from_secs(120)).await;
    assert_eq!(run["state"], "failed", "{run}");
    let told = format!("{run}{log}");
    assert!(
        told.contains("cannot pull the image `hodei-test/absent:1`"),
        "{told}"
    );

    // A pod deleted from outside ends its job with that reason.
    let pipeline =
        "name: deleted\njobs:\n  build:\n    steps:\n      - run: echo started; sleep 300\n";
    let id = start_run(&http, &base, &auth, "deleted", pipeline).await;
    until_logged(&http, &base, &auth, id, "started").await;
    let pods: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    for name in pod_names(&api).await {
        pods.delete(&name, &Default::default())
            .await
            .expect("deleted");
    }
    let (run, log) = run_end(&http, &base, &auth, id, Duration::from_secs(120)).await;
    assert_eq!(run["state"], "failed", "{run}");
    let told = format!("{run}{log}");
    assert!(
        told.contains("the pod was deleted from outside Hodei"),
        "{told}"
    );

    // The API server away: the worker is offline, /readyz and /metrics say why, the queue says
    // the job waits for it; back: the job runs.
    api.set_down(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = get(&http, &format!("{base}/readyz"), &auth).await;
        let check = ready["checks"]["kubernetes"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if check
            .starts_with("unavailable (its jobs wait): the Kubernetes API server cannot be used")
        {
            break;
        }
        assert!(Instant::now() < deadline, "likely deadlocked: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(kubernetes_up(&http, &base).await, "0");
    let pipeline = "name: waits\njobs:\n  build:\n    runs_on: [kubernetes]\n    steps:\n      - run: echo ran\n";
    let id = start_run(&http, &base, &auth, "waits", pipeline).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queue = get(&http, &format!("{base}/api/v1/queue?run={id}"), &auth).await;
        if queue.to_string().contains("1 offline") {
            break;
        }
        assert!(Instant::now() < deadline, "likely deadlocked: {queue}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.set_down(false);
    let (run, log) = run_end(&http, &base, &auth, id, Duration::from_secs(120)).await;
    assert_eq!(run["state"], "succeeded", "{run}\n{log}");
    assert!(log.contains("ran\n"), "{log}");
    let ready = get(&http, &format!("{base}/readyz"), &auth).await;
    assert_eq!(ready["checks"]["kubernetes"], "ok", "{ready}");

    stop(server).await;
    gone(api, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_running_when_the_server_is_killed_is_taken_back_after_its_restart() {
    taken_back_after_a_restart(libc::SIGKILL, "killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_running_past_the_grace_of_a_sigterm_runs_on_and_is_taken_back_after_a_restart() {
    taken_back_after_a_restart(libc::SIGTERM, "sigterm").await;
}

/// A job's pod runs a step when the server gets `signal`; the server starts again and the job
/// goes on in the same pod, each step once.
async fn taken_back_after_a_restart(signal: i32, test: &str) {
    hodei_api::client::install_crypto();
    let (api, _, prefix) = fake(&format!("server-{test}")).await;
    let data = scratch(&format!("server-kubernetes-{test}"));
    let start = || {
        let (url, dir) = (api.url.clone(), data.clone());
        tokio::task::spawn_blocking(move || kubernetes_server(&url, &dir))
    };
    let mut server = start().await.expect("started");
    let (http, auth) = admin(&data);
    let pipeline = "name: adopt\njobs:\n  build:\n    image: debian:bookworm\n    pull: never\n    timeout: 10m\n    steps:\n      - run: echo first\n      - run: echo before; while [ ! -e /workspace/go ]; do sleep 0.1; done; echo after\n      - run: echo last\n";
    let id = start_run(&http, &server.url, &auth, "adopt", pipeline).await;
    until_logged(&http, &server.url, &auth, id, "before").await;
    let pods = pod_names(&api).await;
    assert_eq!(pods.len(), 1, "{pods:?}");
    // The job's timeout, as the last resort of the cluster: 10 min and a grace of 60 s.
    let listed: kube::Api<KubePod> = kube::Api::namespaced(api.client(), "ci");
    let pod = listed.get(&pods[0]).await.expect("the pod");
    let deadline = pod.spec.and_then(|spec| spec.active_deadline_seconds);
    assert_eq!(deadline, Some(660));
    tokio::task::spawn_blocking(move || {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(server.child.id() as i32, signal) };
        let _ = server.child.wait();
    })
    .await
    .expect("stopped");

    let server = start().await.expect("started again");
    assert_eq!(
        pod_names(&api).await,
        pods,
        "the pod of the running step stays"
    );
    let steps = api
        .container(&pods[0], "steps")
        .expect("the steps container");
    docker(&["exec", &steps, "touch", "/workspace/go"]).expect("docker exec");
    let (run, log) = run_end(&http, &server.url, &auth, id, Duration::from_secs(120)).await;
    assert_eq!(run["state"], "succeeded", "{run}\n{log}");
    for line in ["first\n", "before\n", "after\n", "last\n"] {
        assert_eq!(log.matches(line).count(), 1, "{line:?} once: {log}");
    }
    assert!(
        log.contains("ran on while Hodei was down: it was taken back"),
        "{log}"
    );
    stop(server).await;
    gone(api, &prefix).await;
}
