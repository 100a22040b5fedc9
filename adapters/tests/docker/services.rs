//! Services: reachable by name from the steps, ready by TCP check or health check, and a clear
//! set-up failure when they are not.

use std::time::Duration;

use hodei_domain::model::{Env, Name, Service};
use hodei_domain::state::StepExit;

use crate::support::{Fixture, HEALTH_IMAGE, IMAGE, job_spec, step, within};

fn service(image: &str, command: &str, ports: Vec<u16>) -> Service {
    Service {
        image: image.parse().expect("image"),
        env: Env::from([("GREETING".into(), "hello from web".into())]),
        command: vec!["sh".into(), "-c".into(), command.into()],
        ports,
    }
}

fn name(text: &str) -> Name {
    text.parse().expect("a name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_ready_on_its_port_and_reachable_by_its_name() {
    let fx = Fixture::new("svc").await;
    // The page is written only after a second: readiness must wait for the port.
    let web = service(
        IMAGE,
        r#"echo "web starting"; sleep 1; mkdir -p /tmp/www; echo "$GREETING" > /tmp/www/index.html; exec httpd -f -v -p 8080 -h /tmp/www"#,
        vec![8080],
    );
    let ws = fx
        .set_up(1, |job| job.services = vec![(name("web"), web)])
        .await;
    let (exit, output) = fx
        .run(&ws, &step(0, "wget -q -O - http://web:8080/index.html"))
        .await;
    assert_eq!(
        (exit, output.as_str()),
        (StepExit::code(0), "hello from web\n")
    );
    let logs = within("service logs", fx.provider.service_logs(&ws, "web"))
        .await
        .expect("the service's output");
    assert!(
        String::from_utf8_lossy(&logs).starts_with("web starting\n"),
        "{}",
        String::from_utf8_lossy(&logs)
    );
    fx.finish(&ws).await;
    let gone = fx.provider.service_logs(&ws, "web").await;
    assert!(gone.is_err(), "no service logs after tear_down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_a_health_check_is_ready_when_healthy() {
    let fx = Fixture::new("health").await;
    let db = service(
        HEALTH_IMAGE,
        "sleep 1; touch /tmp/ready; exec sleep 600",
        Vec::new(),
    );
    let ws = fx
        .set_up(1, |job| job.services = vec![(name("db"), db)])
        .await;
    let status = fx
        .docker
        .inspect_container(&format!("hodei-{}-run-1-job-1-1-svc-db", fx.instance), None)
        .await
        .expect("the service container")
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status)
        .map(|s| s.to_string());
    assert_eq!(status.as_deref(), Some("healthy"));
    fx.finish(&ws).await;
}

async fn set_up_fails(fx: &Fixture, services: Vec<(Name, Service)>) -> String {
    let mut job = job_spec(1);
    job.services = services;
    fx.refused(job).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_not_ready_in_time_fails_the_set_up_with_its_output() {
    let fx = Fixture::with("notready", |config| {
        config.service_ready_timeout = Duration::from_secs(1)
    })
    .await;
    let silent = service(IMAGE, "echo listening soon; exec sleep 600", vec![9]);
    let reason = set_up_fails(&fx, vec![(name("db"), silent)]).await;
    assert!(
        reason.contains(&format!(
            "the service `db` (image `{IMAGE}`) is not ready after 1 s"
        )),
        "{reason}"
    );
    assert!(reason.contains("port 9"), "{reason}");
    assert!(
        reason.contains("listening soon"),
        "quotes its output: {reason}"
    );

    let crashing = service(IMAGE, "echo cannot start >&2; exit 4", vec![9]);
    let reason = set_up_fails(&fx, vec![(name("db"), crashing)]).await;
    assert!(reason.contains("stopped with exit code 4"), "{reason}");
    assert!(reason.contains("cannot start"), "{reason}");
}
