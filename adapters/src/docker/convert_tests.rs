//! The translation of jobs, steps and services into the engine's configuration, without an
//! engine.

use bollard::models::{ContainerConfig, ContainerInspectResponse};
use hodei_domain::model::{Cpu, Image, Memory};

use super::*;

fn attempt(n: u32) -> Attempt {
    Attempt::new(n).expect("attempts start at 1")
}

fn key() -> JobKey {
    JobKey {
        run: RunId(3),
        job: JobId(7),
        attempt: attempt(2),
    }
}

fn step_key() -> StepKey {
    StepKey {
        job: key(),
        index: 1,
        attempt: attempt(4),
    }
}

fn settings() -> JobSettings {
    JobSettings {
        image: "rust:1".into(),
        user: Some("1000:1000".into()),
        resources: Resources {
            cpu: Some("1500m".parse::<Cpu>().expect("cpu")),
            memory: Some("512Mi".parse::<Memory>().expect("memory")),
        },
        workspace: "/var/lib/hodei/ws/run-3-job-7-2".into(),
        network: Some("net-id".into()),
    }
}

fn step(working_dir: Option<&str>) -> StepSpec {
    StepSpec {
        index: 1,
        attempt: attempt(4),
        script: "echo \"$A\" && cargo test".into(),
        shell: vec!["/bin/sh".into(), "-e".into(), "-c".into()],
        env: Env::from([("A".into(), "1".into()), ("B".into(), "x=y".into())]),
        working_dir: working_dir.map(str::to_owned),
    }
}

#[test]
fn names_carry_the_instance_run_job_and_attempts() {
    assert_eq!(
        job_name("store 1/a", key()),
        "hodei-store-1-a-run-3-job-7-2"
    );
    assert_eq!(step_name("s", step_key()), "hodei-s-run-3-job-7-2-step1-4");
    let db: Name = "db".parse().expect("name");
    assert_eq!(
        service_name("s", key(), &db),
        "hodei-s-run-3-job-7-2-svc-db"
    );
    assert_eq!(
        workspace_dir(Path::new("/ws"), key()),
        Path::new("/ws/run-3-job-7-2")
    );
}

#[test]
fn labels_read_back_to_the_same_step() {
    let labels = step_labels("store-1", step_key());
    assert_eq!(labels[INSTANCE_LABEL], "store-1");
    assert_eq!(labels[RUN_LABEL], "3");
    assert_eq!(labels[JOB_LABEL], "7");
    assert_eq!(labels[JOB_ATTEMPT_LABEL], "2");
    assert_eq!(labels[STEP_LABEL], "1");
    assert_eq!(labels[STEP_ATTEMPT_LABEL], "4");
    assert_eq!(parse_step_labels(&labels), Some(step_key()));
    assert_eq!(parse_job_labels(&labels), Some(key()));

    let job = job_labels("store-1", key());
    assert_eq!(parse_step_labels(&job), None, "a job label set is no step");
    assert_eq!(parse_job_labels(&job), Some(key()));
    let mut bad = job.clone();
    bad.insert(JOB_ATTEMPT_LABEL.into(), "0".into());
    assert_eq!(parse_job_labels(&bad), None);
}

#[test]
fn filters_name_every_label() {
    let filter = label_filter(&job_labels("i", key()));
    assert_eq!(
        filter["label"],
        [
            "hodei.instance=i",
            "hodei.job-attempt=2",
            "hodei.job=7",
            "hodei.run=3"
        ]
    );
}

#[test]
fn a_step_container_runs_the_shell_with_exactly_the_steps_environment() {
    let body =
        step_container("store-1", step_key(), &settings(), &step(Some("sub/dir"))).expect("valid");
    assert_eq!(body.image.as_deref(), Some("rust:1"));
    assert_eq!(
        body.entrypoint.expect("entrypoint"),
        ["/bin/sh", "-c", "exec \"$@\" 2>&1", "hodei-step"]
    );
    assert_eq!(
        body.cmd.expect("cmd"),
        ["/bin/sh", "-e", "-c", "echo \"$A\" && cargo test"]
    );
    assert_eq!(body.env.expect("env"), ["A=1", "B=x=y"]);
    assert_eq!(body.user.as_deref(), Some("1000:1000"));
    assert_eq!(body.working_dir.as_deref(), Some("/workspace/sub/dir"));
    assert_eq!(
        body.labels.expect("labels"),
        step_labels("store-1", step_key())
    );
    assert_eq!(body.tty, Some(false));
    assert_eq!(body.open_stdin, Some(false));
    let host = body.host_config.expect("host config");
    assert_eq!(
        host.binds.expect("binds"),
        ["/var/lib/hodei/ws/run-3-job-7-2:/workspace"]
    );
    assert_eq!(host.network_mode.as_deref(), Some("net-id"));
    assert_eq!(host.nano_cpus, Some(1_500_000_000));
    assert_eq!(host.memory, Some(512 << 20));
    assert_eq!(host.memory_swap, Some(512 << 20));
    assert_eq!(host.init, Some(true));
    assert_eq!(
        host.log_config.and_then(|log| log.typ).as_deref(),
        Some("json-file")
    );
}

#[test]
fn a_step_without_working_dir_user_limits_or_network_gets_the_engines_defaults() {
    let plain = JobSettings {
        user: None,
        resources: Resources::default(),
        network: None,
        ..settings()
    };
    let body = step_container("i", step_key(), &plain, &step(None)).expect("valid");
    assert_eq!(body.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(body.user, None);
    let host = body.host_config.expect("host config");
    assert_eq!(
        (
            host.nano_cpus,
            host.memory,
            host.memory_swap,
            host.network_mode
        ),
        (None, None, None, None)
    );
}

#[test]
fn steps_the_engine_would_misread_are_refused_with_the_reason() {
    let mut empty_shell = step(None);
    empty_shell.shell.clear();
    let mut bad_env = step(None);
    bad_env.env.insert("A=B".into(), "1".into());
    let mut nul = step(None);
    nul.env.insert("C".into(), "a\0b".into());
    let cases = [
        (step(Some("../up")), "`..` is not allowed"),
        (step(Some("/etc")), "relative to the workspace"),
        (empty_shell, "shell command line is empty"),
        (bad_env, "\"A=B\""),
        (nul, "\"C\""),
    ];
    for (step, expected) in cases {
        match step_container("i", step_key(), &settings(), &step) {
            Err(err) => assert!(err.to_string().contains(expected), "{err}"),
            Ok(body) => panic!("{expected}: accepted as {body:?}"),
        }
    }
}

#[test]
fn a_job_without_image_is_refused() {
    let job = JobSpec {
        run: RunId(1),
        job: JobId(2),
        attempt: attempt(1),
        name: "build".into(),
        image: None,
        pull: hodei_domain::model::PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Resources::default(),
        checkout: None,
        secrets: Default::default(),
        timeout: None,
    };
    let err = JobSettings::of(&job, "/ws".into(), None).expect_err("no image");
    assert!(
        err.to_string().contains("job `build`: expected an `image`"),
        "{err}"
    );
    let job = JobSpec {
        image: Some("alpine:3".parse::<Image>().expect("image")),
        ..job
    };
    let settings = JobSettings::of(&job, "/ws".into(), None).expect("image");
    assert_eq!(settings.image, "alpine:3");
}

#[test]
fn a_service_is_on_the_job_network_under_its_name() {
    let db: Name = "db".parse().expect("name");
    let service = Service {
        image: "postgres:16".parse().expect("image"),
        env: Env::from([("POSTGRES_PASSWORD".into(), "x".into())]),
        command: Vec::new(),
        ports: vec![5432],
    };
    let body = service_container("i", key(), &db, &service, "net-id").expect("valid");
    assert_eq!(body.image.as_deref(), Some("postgres:16"));
    assert_eq!(body.cmd, None, "the image's own command");
    assert_eq!(body.entrypoint, None, "the image's own entrypoint");
    assert_eq!(body.env.expect("env"), ["POSTGRES_PASSWORD=x"]);
    let labels = body.labels.expect("labels");
    assert_eq!(labels[SERVICE_LABEL], "db");
    assert_eq!(parse_job_labels(&labels), Some(key()));
    assert_eq!(
        body.host_config.and_then(|h| h.network_mode).as_deref(),
        Some("net-id")
    );
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("endpoints");
    assert_eq!(
        endpoints["net-id"].aliases.as_deref(),
        Some(&["db".to_owned()][..])
    );

    let with_command = Service {
        command: vec!["httpd".into(), "-f".into()],
        ..service
    };
    let body = service_container("i", key(), &db, &with_command, "n").expect("valid");
    assert_eq!(body.cmd.expect("cmd"), ["httpd", "-f"]);
}

#[test]
fn the_network_is_a_labelled_bridge_named_after_the_job() {
    let request = network("i", key());
    assert_eq!(request.name, "hodei-i-run-3-job-7-2");
    assert_eq!(request.driver.as_deref(), Some("bridge"));
    assert_eq!(request.labels, Some(job_labels("i", key())));
}

#[test]
fn exits_are_codes_unless_hodei_killed_the_step() {
    let cases = [
        ((0, false, false), StepExit::code(0)),
        ((3, false, false), StepExit::code(3)),
        ((137, false, false), StepExit::code(137)),
        ((137, false, true), StepExit::signal(9)),
        // It ended by itself before the kill landed.
        ((0, false, true), StepExit::code(0)),
        (
            (137, true, false),
            StepExit {
                code: Some(137),
                signal: None,
                oom_killed: true,
            },
        ),
    ];
    for ((code, oom, destroyed), expected) in cases {
        assert_eq!(
            step_exit(code, oom, destroyed),
            expected,
            "{code} {oom} {destroyed}"
        );
    }
}

#[test]
fn settings_read_back_from_a_step_container() {
    let body = step_container("i", step_key(), &settings(), &step(None)).expect("valid");
    let record = ContainerInspectResponse {
        config: Some(ContainerConfig {
            image: body.image.clone(),
            user: body.user.clone(),
            ..Default::default()
        }),
        host_config: body.host_config.clone(),
        ..Default::default()
    };
    assert_eq!(settings_from(&record), Some(settings()));

    let mut plain = settings();
    plain.user = None;
    plain.resources = Resources::default();
    plain.network = None;
    let body = step_container("i", step_key(), &plain, &step(None)).expect("valid");
    let record = ContainerInspectResponse {
        config: Some(ContainerConfig {
            image: body.image.clone(),
            user: Some(String::new()),
            ..Default::default()
        }),
        host_config: body.host_config.map(|host| HostConfig {
            network_mode: Some("bridge".into()),
            nano_cpus: Some(0),
            memory: Some(0),
            ..host
        }),
        ..Default::default()
    };
    assert_eq!(settings_from(&record), Some(plain));
    assert_eq!(settings_from(&ContainerInspectResponse::default()), None);
}
