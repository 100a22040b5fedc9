//! What every Docker scenario needs: the test images (built here from the host's static
//! busybox, since this machine has no registry), a provider with its own instance and
//! workspace base, jobs and steps, an output collector, and the check that nothing of the
//! instance is left on the engine.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerConfig, HealthConfig};
use bollard::query_parameters::{
    CommitContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions,
};
use futures_util::StreamExt;
use hodei_adapters::docker::{DockerConfig, DockerProvider, INSTANCE_LABEL};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::{Env, PullPolicy, Resources};
use hodei_domain::ports::{
    JobSpec, OutputSink, Provider, ProviderError, StepHandle, StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};
use tokio::sync::OnceCell;

/// The busybox image every scenario runs: `/bin/busybox` and its applets, `ENV PATH=/bin`.
pub const IMAGE: &str = "hodei-test/busybox:1";
/// The same with a health check: healthy once `/tmp/ready` exists.
pub const HEALTH_IMAGE: &str = "hodei-test/busybox-health:1";
/// Where the static busybox comes from (Debian's `busybox-static`).
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 27] = [
    "sh", "sleep", "echo", "nc", "cat", "seq", "kill", "httpd", "head", "dd", "env", "id", "pwd",
    "mkdir", "wget", "ls", "printf", "test", "true", "false", "sort", "touch", "tr", "yes", "wc",
    "cut", "rm",
];

/// Every wait of these tests is bounded: a hang is a bug, reported as such.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s, likely deadlocked"))
}

/// The engine, or a loud failure: these tests never skip.
pub async fn engine() -> Docker {
    let docker = Docker::connect_with_unix(
        "unix:///var/run/docker.sock",
        60,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("the Docker engine's socket /var/run/docker.sock must exist for these tests");
    docker
        .negotiate_version()
        .await
        .expect("the Docker engine at /var/run/docker.sock must answer for these tests")
}

static IMAGES: OnceCell<()> = OnceCell::const_new();

/// Builds the test images once per test binary; reuses them when the engine has them.
pub async fn images(docker: &Docker) {
    IMAGES
        .get_or_init(|| async {
            if docker.inspect_image(IMAGE).await.is_err() {
                import_busybox(docker).await;
            }
            if docker.inspect_image(HEALTH_IMAGE).await.is_err() {
                commit_health_image(docker).await;
            }
        })
        .await;
}

/// A root file system of busybox and its applets, imported as [`IMAGE`].
async fn import_busybox(docker: &Docker) {
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|err| {
        panic!("{BUSYBOX}: {err}; install it with `apt-get install -y busybox-static`")
    });
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = |path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(mode);
        header.set_size(0);
        tar.append_data(&mut header, path, std::io::empty())
            .expect("tar a directory");
    };
    dir("bin", 0o755);
    dir("etc", 0o755);
    dir("tmp", 0o1777);
    let mut file = |path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data)
            .expect("tar a file");
    };
    file("bin/busybox", 0o755, &busybox);
    file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    );
    file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("tar a link");
    }
    let rootfs = tar.into_inner().expect("a tar archive");
    let (repo, tag) = IMAGE.split_once(':').expect("a tag");
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        changes: vec!["ENV PATH=/bin".into()],
        ..Default::default()
    };
    let mut progress =
        docker.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
    while let Some(item) = progress.next().await {
        item.expect("the engine imports the busybox root file system");
    }
}

/// [`IMAGE`] with a health check, committed from a stopped container of it.
async fn commit_health_image(docker: &Docker) {
    let base = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(IMAGE.into()),
                cmd: Some(vec!["true".into()]),
                ..Default::default()
            },
        )
        .await
        .expect("a container to commit");
    let (repo, tag) = HEALTH_IMAGE.split_once(':').expect("a tag");
    let config = ContainerConfig {
        env: Some(vec!["PATH=/bin".into()]),
        healthcheck: Some(HealthConfig {
            test: Some(vec![
                "CMD".into(),
                "test".into(),
                "-f".into(),
                "/tmp/ready".into(),
            ]),
            interval: Some(200_000_000),
            timeout: Some(1_000_000_000),
            retries: Some(50),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CommitContainerOptions {
        container: Some(base.id.clone()),
        repo: Some(repo.into()),
        tag: Some(tag.into()),
        ..Default::default()
    };
    docker
        .commit_container(options, config)
        .await
        .expect("commit the health-checked image");
    docker
        .remove_container(&base.id, None)
        .await
        .expect("remove the committed container");
}

/// A unique instance for one test of this process.
pub fn instance(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

/// A provider of its own instance, workspaces under a temporary directory.
pub struct Fixture {
    pub provider: DockerProvider,
    pub docker: Docker,
    pub instance: String,
    _base: tempfile::TempDir,
}

impl Fixture {
    pub async fn new(test: &str) -> Fixture {
        Fixture::with(test, |_| {}).await
    }

    /// A fixture whose provider's configuration `adjust` changes.
    pub async fn with(test: &str, adjust: impl FnOnce(&mut DockerConfig)) -> Fixture {
        let docker = engine().await;
        images(&docker).await;
        let base = tempfile::tempdir().expect("a temporary directory");
        let instance = instance(test);
        let mut config = DockerConfig::new(base.path().to_path_buf(), instance.clone());
        adjust(&mut config);
        let provider = DockerProvider::connect(config)
            .await
            .expect("the Docker provider connects to the engine of this machine");
        Fixture {
            provider,
            docker,
            instance,
            _base: base,
        }
    }

    /// A second provider of the same instance and base: the next life of Hodei.
    pub async fn next_life(&self) -> DockerProvider {
        let config = DockerConfig::new(self._base.path().to_path_buf(), self.instance.clone());
        DockerProvider::connect(config).await.expect("connects")
    }

    /// Sets up a job of [`IMAGE`] with `adjust` applied.
    pub async fn set_up(&self, job: u64, adjust: impl FnOnce(&mut JobSpec)) -> Workspace {
        let mut spec = job_spec(job);
        adjust(&mut spec);
        within("set_up", self.provider.set_up(&spec))
            .await
            .expect("the job is set up")
    }

    /// Starts a step and returns its handle and output.
    pub async fn start(
        &self,
        workspace: &Workspace,
        step: &StepSpec,
    ) -> (StepHandle, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let handle = within(
            "start_step",
            self.provider.start_step(workspace, step, sink.clone()),
        )
        .await
        .expect("the step starts");
        (handle, sink)
    }

    /// Runs a step to its end: its exit and its output.
    pub async fn run(&self, workspace: &Workspace, step: &StepSpec) -> (StepExit, String) {
        let (handle, sink) = self.start(workspace, step).await;
        let exit = within("wait_step", self.provider.wait_step(&handle))
            .await
            .expect("the step's exit");
        (exit, sink.text())
    }

    /// Sets up a job that must fail; tears it down (twice: that is safe after a failed set-up),
    /// checks that nothing is left, and returns the set-up error's reason.
    pub async fn refused(&self, job: JobSpec) -> String {
        let err = within("set_up", self.provider.set_up(&job))
            .await
            .expect_err("the set-up fails");
        let workspace = Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: String::new(),
        };
        self.finish(&workspace).await;
        match err {
            ProviderError::SetUp { reason, .. } => reason,
            other => panic!("expected a set-up error, got {other:?}"),
        }
    }

    /// Tears the job down (twice: it is idempotent) and checks that nothing is left.
    pub async fn finish(&self, workspace: &Workspace) {
        for _ in 0..2 {
            within("tear_down", self.provider.tear_down(workspace))
                .await
                .expect("the job is torn down");
        }
        assert_clean(&self.docker, &self.instance).await;
    }
}

/// No container, network or volume of `instance` is left on the engine.
pub async fn assert_clean(docker: &Docker, instance: &str) {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters.clone()),
        }))
        .await
        .expect("list networks");
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default();
    let names = |names: Vec<Option<String>>| names.into_iter().flatten().collect::<Vec<_>>();
    assert!(
        containers.is_empty() && networks.is_empty() && volumes.is_empty(),
        "left on the engine for {instance}: containers {:?}, networks {:?}, volumes {:?}",
        names(
            containers
                .into_iter()
                .map(|c| c.names.map(|n| n.join(",")))
                .collect()
        ),
        names(networks.into_iter().map(|n| n.name).collect()),
        volumes.into_iter().map(|v| v.name).collect::<Vec<_>>(),
    );
}

pub fn attempt(n: u32) -> Attempt {
    Attempt::new(n).expect("attempts start at 1")
}

/// A job of [`IMAGE`], no services, pulled if not present.
pub fn job_spec(job: u64) -> JobSpec {
    JobSpec {
        run: RunId(1),
        job: JobId(job),
        attempt: Attempt::FIRST,
        name: format!("job {job}"),
        image: Some(IMAGE.parse().expect("an image")),
        pull: PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    }
}

/// Step `index` running `script` with `/bin/sh -e -c` and no environment.
pub fn step(index: u32, script: &str) -> StepSpec {
    StepSpec {
        index,
        attempt: Attempt::FIRST,
        script: script.into(),
        shell: vec!["/bin/sh".into(), "-e".into(), "-c".into()],
        env: Env::new(),
        working_dir: None,
    }
}

/// Collects a step's output.
#[derive(Default)]
pub struct Collect(Mutex<Vec<u8>>);

impl OutputSink for Collect {
    fn output(&self, chunk: &[u8]) {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(chunk);
    }
}

impl Collect {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }

    /// Waits until the output holds `text`.
    pub async fn wait_for(&self, text: &str) {
        within(&format!("output {text:?}"), async {
            while !self.text().contains(text) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}
