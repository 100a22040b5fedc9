//! Images and the engine: pull policies without a registry, a job without image, an engine
//! that cannot be reached.

use hodei_adapters::docker::{DockerConfig, DockerProvider};
use hodei_domain::model::{Name, PullPolicy, Service};
use hodei_domain::ports::ProviderError;

use crate::support::{Fixture, job_spec};

const MISSING: &str = "hodei-test/never-built:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_set_up_naming_the_image_and_the_reason() {
    let fx = Fixture::new("missing").await;
    let mut never = job_spec(1);
    never.image = Some(MISSING.parse().expect("image"));
    never.pull = PullPolicy::Never;
    let reason = fx.refused(never).await;
    assert!(reason.contains(&format!("`{MISSING}`")), "{reason}");
    assert!(reason.contains("`pull: never`"), "{reason}");

    // No registry on this machine: the pull fails, with the engine's reason.
    for pull in [PullPolicy::IfNotPresent, PullPolicy::Always] {
        let mut job = job_spec(2);
        job.image = Some(MISSING.parse().expect("image"));
        job.pull = pull;
        let reason = fx.refused(job).await;
        assert!(
            reason.contains(&format!("cannot pull the image `{MISSING}`: ")),
            "{pull:?}: {reason}"
        );
        assert!(reason.len() > 60, "the engine's reason is kept: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_on_the_machine_is_used_with_pull_never_and_a_missing_service_image_fails() {
    let fx = Fixture::new("present").await;
    let ws = fx.set_up(1, |job| job.pull = PullPolicy::Never).await;
    fx.finish(&ws).await;

    let mut job = job_spec(2);
    job.services = vec![(
        "db".parse::<Name>().expect("name"),
        Service {
            image: MISSING.parse().expect("image"),
            env: Default::default(),
            command: Vec::new(),
            ports: Vec::new(),
        },
    )];
    let reason = fx.refused(job).await;
    assert!(reason.contains(MISSING), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_image_is_refused() {
    let fx = Fixture::new("noimage").await;
    let mut job = job_spec(1);
    job.image = None;
    let reason = fx.refused(job).await;
    assert!(reason.contains("expected an `image`"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_cannot_be_reached_is_retryable() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = DockerConfig::new(dir.path().into(), "unreachable".into());
    config.socket = format!("unix://{}/no-engine.sock", dir.path().display());
    let err = DockerProvider::connect(config)
        .await
        .err()
        .expect("no engine there");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(
            err,
            ProviderError::Unavailable {
                provider: "docker",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-engine.sock"), "{err}");
}
