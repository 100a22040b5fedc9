//! The pipeline format end to end: YAML text to a valid model or to positioned diagnostics, the
//! Rust builder producing the same model, planning, and hostile input.

use std::collections::BTreeMap;

use hodei_domain::builder::{JobBuilder, PipelineBuilder, ServiceBuilder, StepBuilder};
use hodei_domain::diagnostic::{Code, Diagnostic, Severity};
use hodei_domain::load::{load, load_bytes};
use hodei_domain::model::{PullPolicy, Role};
use hodei_domain::plan::{InputError, JobRef, RunInputs, Skip, plan};
use hodei_domain::{job, pipeline, retry, sh, timeout};

fn example(name: &str) -> String {
    let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// The errors of `source`.
fn errors(source: &str) -> Vec<Diagnostic> {
    let loaded = load(source);
    assert!(
        loaded.pipeline.is_none(),
        "expected errors, got a valid pipeline"
    );
    loaded
        .diagnostics
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .collect()
}

/// The one error of `source`, checked for its code, position, path and message.
fn assert_error(
    source: &str,
    code: Code,
    line: usize,
    column: usize,
    path: &str,
    message: &str,
) -> Diagnostic {
    let errs = errors(source);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    let err = errs.into_iter().next().unwrap();
    assert_eq!(err.code, code, "{err:#?}");
    let span = err.span.unwrap_or_else(|| panic!("no position: {err:#?}"));
    assert_eq!(
        (span.start.line, span.start.column),
        (line, column),
        "{err:#?}"
    );
    assert_eq!(err.path.to_string(), path, "{err:#?}");
    assert!(
        err.message.contains(message),
        "{:?} does not contain {message:?}",
        err.message
    );
    err
}

#[test]
fn every_example_is_valid() {
    for name in ["rust-crate.yml", "web-app.yml", "monorepo.yml"] {
        let loaded = load(&example(name));
        assert!(
            loaded.diagnostics.is_empty(),
            "{name}: {:#?}",
            loaded.diagnostics
        );
        assert!(loaded.pipeline.is_some(), "{name}");
    }
}

#[test]
fn yaml_and_builder_make_the_same_pipeline() {
    let yaml = r#"
name: web
on: { push: { branches: [main] }, manual: {} }
parameters: { TARGET: { default: debug, choices: [debug, release] } }
env: { RUST_LOG: info }
defaults: { image: "rust:1", timeout: 30m, retry: 0 }
jobs:
  build:
    runs_on: [linux]
    resources: { cpu: 2, memory: 2Gi }
    services: { db: { image: "postgres:16", env: { POSTGRES_PASSWORD: x }, ports: [5432] } }
    steps:
      - run: cargo build --profile $TARGET
      - { name: test, run: cargo test, timeout: 10m, retry: 2 }
  lint: { steps: [{ run: cargo clippy }] }
  deploy:
    needs: [build, lint]
    when: "branch == 'main' && params.TARGET == 'release'"
    approval: { role: operator }
    concurrency: production
    pull: always
    steps: [{ run: ./deploy.sh, env: { STAGE: prod }, working_dir: ops, shell: bash }]
    post: { failure: [{ run: ./rollback.sh }] }
  test:
    matrix: { os: [bookworm, alpine], rust: [stable, beta] }
    priority: 5
    continue_on_error: true
    steps: [{ run: "echo $os $rust", retry: { max: 1, delay: 10s } }]
post: { always: [{ run: ./notify.sh }] }
"#;
    let from_yaml = load(yaml);
    assert!(
        from_yaml.diagnostics.is_empty(),
        "{:#?}",
        from_yaml.diagnostics
    );
    let from_yaml = from_yaml.pipeline.unwrap();

    let from_macros = pipeline! {
        name: "web",
        on_push: ["main"],
        manual: true,
        param: ("TARGET", "debug", ["debug", "release"]),
        env: { "RUST_LOG" => "info" },
        default_image: "rust:1",
        default_timeout: timeout!(30m),
        default_retry: retry!(0),
        jobs: [
            job! {
                name: "build",
                runs_on: ["linux"],
                cpu: "2",
                memory: "2Gi",
                services: { "db" => ServiceBuilder::new("postgres:16").env("POSTGRES_PASSWORD", "x").port(5432) },
                steps: [
                    sh!("cargo build --profile $TARGET"),
                    sh!("cargo test", name: "test", timeout: timeout!(10m), retry: retry!(2)),
                ],
            },
            job! { name: "lint", steps: [sh!("cargo clippy")] },
            job! {
                name: "deploy",
                needs: ["build", "lint"],
                when: "branch == 'main' && params.TARGET == 'release'",
                approval: Role::Operator,
                concurrency: "production",
                pull: PullPolicy::Always,
                steps: [sh!("./deploy.sh", env: { "STAGE" => "prod" }, working_dir: "ops", shell: "bash")],
                post_failure: [sh!("./rollback.sh")],
            },
            job! {
                name: "test",
                matrix: { os: ["bookworm", "alpine"], rust: ["stable", "beta"] },
                priority: 5,
                continue_on_error: true,
                steps: [sh!("echo $os $rust", retry: retry!(1, delay: 10s))],
            },
        ],
        post_always: [sh!("./notify.sh")],
    }
    .expect("the macro pipeline is valid");
    assert_eq!(from_yaml, from_macros);

    // The plain builder, without macros, is the same model too.
    let from_builder = PipelineBuilder::new("web")
        .on_push(["main"])
        .manual(true)
        .param("TARGET", "debug", ["debug", "release"])
        .env("RUST_LOG", "info")
        .default_image("rust:1")
        .default_timeout(timeout!(30m))
        .default_retry(retry!(0))
        .job(
            JobBuilder::new("build")
                .runs_on(["linux"])
                .cpu("2")
                .memory("2Gi")
                .service(
                    "db",
                    ServiceBuilder::new("postgres:16")
                        .env("POSTGRES_PASSWORD", "x")
                        .port(5432),
                )
                .steps([
                    StepBuilder::new("cargo build --profile $TARGET"),
                    StepBuilder::new("cargo test")
                        .name("test")
                        .timeout(timeout!(10m))
                        .retry(retry!(2)),
                ]),
        )
        .job(JobBuilder::new("lint").step(StepBuilder::new("cargo clippy")))
        .job(
            JobBuilder::new("deploy")
                .needs(["build", "lint"])
                .when("branch == 'main' && params.TARGET == 'release'")
                .approval(Role::Operator)
                .concurrency("production")
                .pull(PullPolicy::Always)
                .step(
                    StepBuilder::new("./deploy.sh")
                        .env("STAGE", "prod")
                        .working_dir("ops")
                        .shell("bash"),
                )
                .post_failure([StepBuilder::new("./rollback.sh")]),
        )
        .job(
            JobBuilder::new("test")
                .matrix("os", ["bookworm", "alpine"])
                .matrix("rust", ["stable", "beta"])
                .priority(5)
                .continue_on_error(true)
                .step(StepBuilder::new("echo $os $rust").retry(retry!(1, delay: 10s))),
        )
        .post_always([StepBuilder::new("./notify.sh")])
        .build()
        .expect("the builder pipeline is valid");
    assert_eq!(from_yaml, from_builder);
}

#[test]
fn builder_reports_every_problem_with_its_path() {
    let errs = pipeline! {
        name: "web app",
        jobs: [
            job! { name: "build", image: "rust 1", cpu: "lots", steps: [sh!("make")] },
            job! { name: "deploy", needs: ["biuld"], when: "branch = 'main'", steps: [] },
        ],
    }
    .unwrap_err();
    let found: Vec<(Code, String)> = errs.iter().map(|d| (d.code, d.path.to_string())).collect();
    for expected in [
        (Code::InvalidValue, "name"),
        (Code::InvalidValue, "jobs.build.image"),
        (Code::InvalidValue, "jobs.build.resources.cpu"),
        (Code::Expression, "jobs.deploy.when"),
        (Code::UnknownReference, "jobs.deploy.needs[0]"),
        (Code::InvalidValue, "jobs.deploy.steps"),
    ] {
        assert!(
            found.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} not in {found:#?}"
        );
    }
    let unknown = errs
        .iter()
        .find(|d| d.code == Code::UnknownReference)
        .unwrap();
    assert_eq!(unknown.help.as_deref(), Some("did you mean \"build\"?"));
}

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let err = assert_error(
        "name: w\njobs:\n  build:\n    stpes: [make]\n    steps: [make]\n",
        Code::UnknownKey,
        4,
        5,
        "jobs.build.stpes",
        "unknown key `stpes`",
    );
    assert_eq!(err.help.as_deref(), Some("did you mean \"steps\"?"));
    assert_error(
        "name: w\nnmae: x\njobs: {a: {steps: [x]}}\n",
        Code::UnknownKey,
        2,
        1,
        "nmae",
        "unknown key",
    );
    assert_error(
        "name: w\njobs: {a: {steps: [{run: x, tiemout: 5m}]}}\n",
        Code::UnknownKey,
        2,
        29,
        "jobs.a.steps[0].tiemout",
        "tiemout",
    );
}

#[test]
fn unknown_needs_point_at_the_name_with_a_suggestion() {
    let src = "name: w\njobs:\n  build: {steps: [make]}\n  lint: {steps: [make]}\n  deploy:\n    needs: [build, lnit]\n    steps: [make]\n";
    let err = assert_error(
        src,
        Code::UnknownReference,
        6,
        20,
        "jobs.deploy.needs[1]",
        "unknown job `lnit`",
    );
    assert_eq!(err.help.as_deref(), Some("did you mean \"lint\"?"));
    assert_eq!(
        err.one_line("p.yml"),
        "p.yml:6:20: jobs.deploy.needs[1]: unknown job `lnit` (did you mean \"lint\"?)"
    );
}

#[test]
fn cycles_are_spelled_out() {
    let src = "name: w\njobs:\n  a: {needs: [c], steps: [x]}\n  b: {needs: [a], steps: [x]}\n  c: {needs: [b], steps: [x]}\n";
    let err = assert_error(
        src,
        Code::Cycle,
        3,
        15,
        "jobs.a.needs[0]",
        "a -> c -> b -> a",
    );
    assert!(err.message.contains("cycle"));
    assert_error(
        "name: w\njobs:\n  a: {needs: a, steps: [x]}\n",
        Code::Cycle,
        3,
        14,
        "jobs.a.needs[0]",
        "needs itself",
    );
}

#[test]
fn needs_named_twice_are_warned_about_in_short_and_long_lists() {
    // Short lists are checked by looking back, long ones through a set: the same warnings.
    for jobs in [3, 40] {
        let mut src = String::from("name: w\njobs:\n");
        let names: Vec<String> = (0..jobs).map(|i| format!("j{i}")).collect();
        for name in &names {
            src.push_str(&format!("  {name}: {{steps: [x]}}\n"));
        }
        let mut needs = names.clone();
        needs.insert(1, "j0".to_owned());
        needs.push("j2".to_owned());
        src.push_str(&format!(
            "  last: {{needs: [{}], steps: [x]}}\n",
            needs.join(", ")
        ));
        let loaded = load(&src);
        assert!(loaded.pipeline.is_some(), "{:#?}", loaded.diagnostics);
        let twice: Vec<(String, String)> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.path.to_string(), d.message.clone()))
            .collect();
        assert_eq!(
            twice,
            vec![
                (
                    "jobs.last.needs[1]".to_owned(),
                    "job `j0` is needed twice".to_owned()
                ),
                (
                    format!("jobs.last.needs[{}]", jobs + 1),
                    "job `j2` is needed twice".to_owned()
                ),
            ],
            "{jobs} jobs"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let src = "name: w\njobs:\n  a: {needs: [zz], steps: [x], timeout: 5y}\n  b: {steps: [x], priority: 1000}\n  c: {steps: [x], image: 'a b'}\n";
    let codes: Vec<Code> = errors(src).iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        vec![
            Code::UnknownReference,
            Code::InvalidValue,
            Code::InvalidValue,
            Code::InvalidValue
        ],
        "{codes:?}"
    );
}

#[test]
fn values_with_a_syntax_are_checked_where_written() {
    for (src, line, column, path) in [
        (
            "name: w\njobs: {a: {steps: [x], timeout: 10x}}\n",
            2,
            33,
            "jobs.a.timeout",
        ),
        (
            "name: w\njobs: {a: {steps: [x], resources: {cpu: 0}}}\n",
            2,
            41,
            "jobs.a.resources.cpu",
        ),
        (
            "name: w\njobs: {a: {steps: [x], resources: {memory: 2GB}}}\n",
            2,
            44,
            "jobs.a.resources.memory",
        ),
        (
            "name: w\non: {schedule: '61 * * * *'}\njobs: {a: {steps: [x]}}\n",
            2,
            16,
            "on.schedule",
        ),
        (
            "name: w\njobs: {a: {steps: [x], runs_on: [has space]}}\n",
            2,
            34,
            "jobs.a.runs_on[0]",
        ),
        ("name: -w\njobs: {a: {steps: [x]}}\n", 1, 7, "name"),
    ] {
        assert_error(src, Code::InvalidValue, line, column, path, "invalid value");
    }
}

#[test]
fn types_are_checked_with_what_was_found() {
    let err = assert_error(
        "name: w\njobs: {a: {steps: make}}\n",
        Code::Type,
        2,
        19,
        "jobs.a.steps",
        "expected a list of steps, found text",
    );
    assert!(err.expected.is_some());
    assert_error(
        "name: w\njobs: [a, b]\n",
        Code::Type,
        2,
        7,
        "jobs",
        "found a list",
    );
    assert_error(
        "name: w\njobs: {a: {steps: [x], continue_on_error: yes}}\n",
        Code::Type,
        2,
        43,
        "jobs.a.continue_on_error",
        "true or false",
    );
}

#[test]
fn missing_keys_point_at_their_mapping() {
    assert_error(
        "jobs: {a: {steps: [x]}}\n",
        Code::MissingKey,
        1,
        1,
        "name",
        "`name` is missing",
    );
    assert_error(
        "name: w\njobs:\n  a: {needs: []}\n",
        Code::MissingKey,
        3,
        3,
        "jobs.a.steps",
        "`steps` is missing",
    );
    assert_error(
        "name: w\njobs:\n  a:\n",
        Code::MissingKey,
        3,
        3,
        "jobs.a",
        "empty",
    );
}

#[test]
fn when_errors_point_inside_the_expression() {
    let src = "name: w\nparameters: {TARGET: debug}\njobs:\n  a:\n    when: \"branch == 'main' && params.TARGT == 'x'\"\n    steps: [x]\n";
    let err = assert_error(src, Code::Expression, 5, 39, "jobs.a.when", "TARGT");
    assert!(err.help.unwrap().contains("TARGET"));
    assert_error(
        "name: w\njobs:\n  a:\n    when: branch = 'x'\n    steps: [x]\n",
        Code::Expression,
        4,
        18,
        "jobs.a.when",
        "",
    );
}

#[test]
fn parameters_defaults_must_be_a_choice() {
    let src = "name: w\nparameters:\n  T: {default: debg, choices: [debug, release]}\njobs: {a: {steps: [x]}}\n";
    let err = assert_error(
        src,
        Code::InvalidValue,
        3,
        16,
        "parameters.T.default",
        "not one of the choices",
    );
    assert_eq!(err.help.as_deref(), Some("did you mean \"debug\"?"));
}

#[test]
fn duplicate_keys_are_errors() {
    assert_error(
        "name: w\njobs:\n  a: {steps: [x]}\n  a: {steps: [y]}\n",
        Code::DuplicateKey,
        4,
        3,
        "",
        "twice",
    );
}

#[test]
fn paths_must_stay_in_the_workspace() {
    assert_error(
        "name: w\njobs: {a: {steps: [x], artifacts: [../secret]}}\n",
        Code::InvalidValue,
        2,
        36,
        "jobs.a.artifacts[0]",
        "leaves",
    );
    assert_error(
        "name: w\njobs: {a: {steps: [{run: x, working_dir: /etc}]}}\n",
        Code::InvalidValue,
        2,
        42,
        "jobs.a.steps[0].working_dir",
        "leaves",
    );
}

#[test]
fn hostile_input_gets_a_clear_diagnostic() {
    let mut bomb = String::from("name: w\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        bomb.push_str(&format!(
            "l{i}: &l{i} [{}]\n",
            vec![format!("*l{}", i - 1); 9].join(", ")
        ));
    }
    let deep_flow = format!("name: w\njobs: {}\n", "[".repeat(10_000));
    let deep_block: String = (0..10_000)
        .map(|i| format!("{}a:\n", " ".repeat(i)))
        .collect();
    let huge = format!("name: w\n#{}\n", "x".repeat(5 << 20));
    let wide_matrix = "name: w\njobs:\n  t:\n    matrix: {a: [1,2,3,4,5,6,7], b: [1,2,3,4,5,6,7], c: [1,2,3,4,5,6]}\n    steps: [x]\n";
    let many_jobs: String = format!(
        "name: w\njobs:\n{}",
        (0..40)
            .map(|i| format!(
                "  j{i}: {{matrix: {{a: [{}]}}, steps: [x]}}\n",
                (0..256)
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        ("alias bomb", bomb.into_bytes(), Code::Limit),
        ("deep flow nesting", deep_flow.into_bytes(), Code::Limit),
        ("deep block nesting", deep_block.into_bytes(), Code::Limit),
        ("oversized file", huge.into_bytes(), Code::Limit),
        (
            "matrix over the limit",
            wide_matrix.as_bytes().to_vec(),
            Code::Limit,
        ),
        ("too many jobs", many_jobs.into_bytes(), Code::Limit),
        (
            "binary garbage",
            vec![
                0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0xff, 0xfe, 0x00, 0x00,
            ],
            Code::Syntax,
        ),
        (
            "NUL bytes",
            b"name: w\x00\njobs: {}\n".to_vec(),
            Code::Syntax,
        ),
        ("empty file", Vec::new(), Code::MissingKey),
        (
            "comments only",
            b"# nothing here\n".to_vec(),
            Code::MissingKey,
        ),
        ("a bare scalar", b"hello\n".to_vec(), Code::Type),
        ("a list", b"- a\n- b\n".to_vec(), Code::Type),
        ("unclosed flow", b"name: [w\n".to_vec(), Code::Syntax),
        (
            "tabs for indentation",
            b"name: w\njobs:\n\tbuild: {}\n".to_vec(),
            Code::Syntax,
        ),
    ];
    for (what, bytes, code) in cases {
        let loaded = load_bytes(&bytes);
        assert!(loaded.pipeline.is_none(), "{what}: accepted");
        let first = loaded
            .diagnostics
            .iter()
            .find(|d| d.is_error())
            .unwrap_or_else(|| panic!("{what}: no error"));
        assert!(
            loaded.diagnostics.iter().any(|d| d.code == code),
            "{what}: expected {code:?}, got {:#?}",
            loaded.diagnostics
        );
        assert!(
            first.span.is_some() || first.code == Code::Limit,
            "{what}: no position: {first:#?}"
        );
        assert!(!first.message.is_empty(), "{what}");
    }
}

#[test]
fn matrix_instances_are_named_and_get_their_variables() {
    let src = "name: w\njobs:\n  build: {steps: [make]}\n  test:\n    needs: [build]\n    matrix: {os: [deb, alp], ver: [1, 2], exclude: [{os: alp, ver: 2}], include: [{os: win, ver: 1}]}\n    steps: [x]\n  report: {needs: [test], steps: [x]}\n";
    let loaded = load(src);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let plan = plan(&loaded.pipeline.unwrap());
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "build",
            "test (os=deb, ver=1)",
            "test (os=deb, ver=2)",
            "test (os=alp, ver=1)",
            "test (os=win, ver=1)",
            "report"
        ]
    );
    assert_eq!(plan.jobs[5].needs, vec![1, 2, 3, 4]);
    assert_eq!(plan.edges, 4 + 4);
    let resolved = plan.resolve(RunInputs::default()).unwrap();
    let env = resolved.step_env(&plan, JobRef::Planned(2), &plan.jobs[2].steps[0]);
    assert_eq!(env.get("os").map(String::as_str), Some("deb"));
    assert_eq!(env.get("ver").map(String::as_str), Some("2"));
    assert_eq!(
        env.get("HODEI_JOB").map(String::as_str),
        Some("test (os=deb, ver=2)")
    );
}

#[test]
fn plan_orders_jobs_after_their_needs() {
    let loaded = load(&example("monorepo.yml"));
    let plan = plan(&loaded.pipeline.unwrap());
    let position: BTreeMap<usize, usize> = plan
        .order
        .iter()
        .enumerate()
        .map(|(pos, &job)| (job, pos))
        .collect();
    for (i, job) in plan.jobs.iter().enumerate() {
        for need in &job.needs {
            assert!(
                position[need] < position[&i],
                "{} runs before {}",
                job.name,
                plan.jobs[*need].name
            );
        }
    }
}

#[test]
fn run_inputs_are_checked_and_when_skips_propagate() {
    let loaded = load(&example("monorepo.yml"));
    let plan = plan(&loaded.pipeline.unwrap());
    let errs = plan
        .resolve(RunInputs {
            params: BTreeMap::from([("TARGT".into(), "x".into())]),
            ..RunInputs::default()
        })
        .unwrap_err();
    assert!(
        errs.contains(&InputError::UnknownParameter {
            name: "TARGT".into(),
            suggestion: Some("TARGET".into())
        }),
        "{errs:?}"
    );
    assert!(
        errs.contains(&InputError::MissingParameter {
            name: "VERSION".into()
        }),
        "{errs:?}"
    );
    let errs = plan
        .resolve(RunInputs {
            params: BTreeMap::from([
                ("VERSION".into(), "1".into()),
                ("TARGET".into(), "prod".into()),
            ]),
            ..RunInputs::default()
        })
        .unwrap_err();
    assert!(
        matches!(&errs[0], InputError::NotAChoice { name, .. } if name == "TARGET"),
        "{errs:?}"
    );

    let inputs = RunInputs {
        branch: "feature/x".into(),
        event: "push".into(),
        params: BTreeMap::from([
            ("VERSION".into(), "1.4.2".into()),
            ("TARGET".into(), "production".into()),
        ]),
        ..RunInputs::default()
    };
    let resolved = plan.resolve(inputs).unwrap();
    let skip_of =
        |name: &str| resolved.skips[plan.jobs.iter().position(|j| j.name == name).unwrap()];
    assert_eq!(skip_of("deploy-staging"), Some(Skip::WhenFalse));
    let staging = plan
        .jobs
        .iter()
        .position(|j| j.name == "deploy-staging")
        .unwrap() as u32;
    assert_eq!(
        skip_of("deploy-production"),
        Some(Skip::NeedSkipped { job: staging })
    );
    assert_eq!(skip_of("lint"), None);

    let main = RunInputs {
        branch: "main".into(),
        event: "push".into(),
        params: BTreeMap::from([("VERSION".into(), "1.4.2".into())]),
        ..RunInputs::default()
    };
    let resolved = plan.resolve(main).unwrap();
    let skip_of =
        |name: &str| resolved.skips[plan.jobs.iter().position(|j| j.name == name).unwrap()];
    assert_eq!(skip_of("deploy-staging"), None);
    assert_eq!(
        skip_of("deploy-production"),
        Some(Skip::WhenFalse),
        "TARGET defaults to staging"
    );
}

#[test]
fn parameters_reach_steps_as_environment_never_as_shell_text() {
    let src = "name: w\nparameters: {MSG: hi}\nenv: {MSG: pipeline, KEEP: k}\njobs:\n  a:\n    env: {JOB: j}\n    steps: [{run: 'echo \"$MSG\"', env: {STEP: s}}]\n";
    let plan = plan(&load(src).pipeline.unwrap());
    let hostile = "$(rm -rf /); `id`; ' \" \n";
    let resolved = plan
        .resolve(RunInputs {
            params: BTreeMap::from([("MSG".into(), hostile.into())]),
            env: BTreeMap::from([("EXTRA".into(), "e".into())]),
            ..RunInputs::default()
        })
        .unwrap();
    let step = &plan.jobs[0].steps[0];
    assert_eq!(
        step.run, "echo \"$MSG\"",
        "the script text is never rewritten"
    );
    let env = resolved.step_env(&plan, JobRef::Planned(0), step);
    assert_eq!(
        env["MSG"], hostile,
        "parameters override the pipeline's env and arrive verbatim"
    );
    assert_eq!(
        (
            env["KEEP"].as_str(),
            env["JOB"].as_str(),
            env["STEP"].as_str(),
            env["EXTRA"].as_str()
        ),
        ("k", "j", "s", "e")
    );
    assert_eq!(env["CI"], "true");
}

#[test]
fn matrix_include_extends_matching_instances_or_adds_its_own() {
    let src = "name: w\njobs:\n  t:\n    matrix:\n      os: [deb, alp]\n      rust: [stable]\n      include:\n        - {os: deb, experimental: 'yes'}\n        - {os: win, rust: nightly}\n    steps: [x]\n";
    let loaded = load(src);
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let plan = plan(&loaded.pipeline.unwrap());
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "t (os=deb, rust=stable, experimental=yes)",
            "t (os=alp, rust=stable)",
            "t (os=win, rust=nightly)"
        ]
    );
}

#[test]
fn null_list_items_are_type_errors_not_text() {
    assert_error(
        "name: w\njobs: {a: {steps: [~]}}\n",
        Code::Type,
        2,
        20,
        "jobs.a.steps[0]",
        "found null",
    );
    assert_error(
        "name: w\njobs: {a: {steps: [x], artifacts: [null]}}\n",
        Code::Type,
        2,
        36,
        "jobs.a.artifacts[0]",
        "found null",
    );
}

#[test]
fn a_key_without_its_value_is_reported_at_the_key() {
    assert_error(
        "name:\njobs: {a: {steps: [x]}}\n",
        Code::MissingKey,
        1,
        1,
        "name",
        "has no value",
    );
}

#[test]
fn suspicious_but_legal_things_are_warnings() {
    let loaded = load(
        "name: w\non: []\nenv: {HODEI_JOB: x}\njobs: {a: {steps: [x]}, b: {user: '1000', pull: always, steps: [x]}}\n",
    );
    assert!(
        loaded.pipeline.is_some(),
        "warnings keep the pipeline valid"
    );
    let warnings: Vec<(Code, String)> = loaded
        .diagnostics
        .iter()
        .map(|d| (d.code, d.path.to_string()))
        .collect();
    assert_eq!(
        warnings,
        [
            (Code::Suspicious, "on".to_owned()),
            (Code::Suspicious, "env.HODEI_JOB".to_owned()),
            (Code::Suspicious, "jobs.b.user".to_owned()),
            (Code::Suspicious, "jobs.b.pull".to_owned())
        ]
    );
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning && d.span.is_some())
    );
}

#[test]
fn a_mapping_used_as_a_key_is_one_error() {
    let errs = errors("name: w\njobs:\n  a: {steps: [x]}\n  ? [b, c]\n  : {steps: [y]}\n");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].code, Code::Type);
}

#[test]
fn secrets_name_variables_each_once_and_none_of_hodeis() {
    let loaded =
        load("name: p\nsecrets: [DEPLOY_TOKEN, NPM_TOKEN]\njobs:\n  a: {steps: [{run: x}]}\n");
    let pipeline = loaded.pipeline.expect("valid");
    assert_eq!(pipeline.secrets, ["DEPLOY_TOKEN", "NPM_TOKEN"]);
    let built = PipelineBuilder::new("p")
        .secret("DEPLOY_TOKEN")
        .secret("NPM_TOKEN")
        .job(JobBuilder::new("a").step(StepBuilder::new("x")))
        .build()
        .expect("valid");
    assert_eq!(built.secrets, pipeline.secrets);

    assert_error(
        "name: p\nsecrets: [OK, 9BAD]\njobs:\n  a: {steps: [{run: x}]}\n",
        Code::InvalidValue,
        2,
        15,
        "secrets[1]",
        "`9BAD` is not a valid secret name",
    );
    let errs = errors("name: p\nsecrets: [HODEI_TOKEN]\njobs:\n  a: {steps: [{run: x}]}\n");
    assert!(errs[0].message.contains("HODEI_TOKEN"), "{errs:#?}");
    let twice = load("name: p\nsecrets: [A, A]\njobs:\n  a: {steps: [{run: x}]}\n");
    assert!(
        twice
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("listed twice")),
        "{:#?}",
        twice.diagnostics
    );
    errors("name: p\nsecrets: {A: b}\njobs:\n  a: {steps: [{run: x}]}\n");
}

#[test]
fn the_kinds_of_start_on_allows_are_named_in_order() {
    let kinds = |source: &str| load(source).pipeline.expect("valid").on.kinds();
    let jobs = "jobs:\n  a: {steps: [{run: x}]}\n";
    assert_eq!(kinds(&format!("name: p\n{jobs}")), ["manual"]);
    assert_eq!(
        kinds(&format!(
            "name: p\non: {{manual: {{}}, push: {{}}}}\n{jobs}"
        )),
        ["push", "manual"]
    );
    assert_eq!(
        kinds(&format!("name: p\non: {{pull_request: {{}}}}\n{jobs}")),
        ["pull_request"]
    );
    assert!(kinds(&format!("name: p\non: []\n{jobs}")).is_empty());
}

#[test]
fn checkout_is_shallow_by_default_and_takes_a_depth_submodules_or_false() {
    use hodei_domain::model::CheckoutSettings;
    let jobs = "jobs:\n  a: {steps: [{run: x}]}\n";
    let settings = |checkout: &str| {
        load(&format!("name: p\n{checkout}{jobs}"))
            .pipeline
            .expect("valid")
            .checkout
    };
    assert_eq!(settings(""), CheckoutSettings::default());
    assert_eq!(settings("").depth, Some(1));
    assert!(!settings("checkout: false\n").enabled);
    let deep = settings("checkout: { depth: 0, submodules: true }\n");
    assert_eq!((deep.depth, deep.submodules), (None, true));
    assert_eq!(settings("checkout: { depth: 50 }\n").depth, Some(50));
    assert_error(
        &format!("name: p\ncheckout: {{ depth: -1 }}\n{jobs}"),
        Code::InvalidValue,
        2,
        20,
        "checkout.depth",
        "-1 is out of range",
    );
    let errs = errors(&format!("name: p\ncheckout: {{ deep: 1 }}\n{jobs}"));
    assert_eq!(errs[0].code, Code::UnknownKey, "{errs:#?}");
    let plan = hodei_domain::plan::plan(&load(&format!("name: p\n{jobs}")).pipeline.unwrap());
    let from_repo = RunInputs {
        repository: "app".into(),
        commit: "abc".into(),
        ..RunInputs::default()
    };
    let checkout = plan
        .checkout_for(&from_repo)
        .expect("a run from a repository checks out");
    assert_eq!(
        (checkout.repository.as_str(), checkout.commit.as_str()),
        ("app", "abc")
    );
    assert_eq!(plan.checkout_for(&RunInputs::default()), None);
}

#[test]
fn schedules_artifacts_and_caches_are_accepted_and_bad_cache_templates_refused() {
    let loaded = load(
        "name: p\non: {schedule: ['TZ=Europe/Paris 0 3 * * *', '*/10 * * * * *'], manual: {}}\njobs:\n  a:\n    steps: [{run: x}]\n    artifacts: [dist]\n    cache: {key: \"k-{{ hash('Cargo.lock') }}\", fallback: [k-], paths: [target]}\n",
    );
    let pipeline = loaded.pipeline.expect("a valid pipeline");
    assert_eq!(pipeline.on.schedule.len(), 2);
    assert_eq!(pipeline.jobs[0].cache.as_ref().unwrap().fallback, ["k-"]);
    let errors = errors(
        "name: p\njobs:\n  a:\n    steps: [{run: x}]\n    cache: {key: k, fallback: [\"{{ commit }}\", \"{{ hash('../x') }}\"], paths: [target]}\n",
    );
    let paths: Vec<String> = errors.iter().map(|d| d.path.to_string()).collect();
    assert_eq!(
        paths,
        ["jobs.a.cache.fallback[0]", "jobs.a.cache.fallback[1]"],
        "{errors:#?}"
    );
    assert!(
        errors[0]
            .message
            .contains("unknown cache key template `{{ commit }}`")
    );
    assert!(errors[1].message.contains("leaves the job's workspace"));
    assert!(errors.iter().all(|d| d.span.is_some()), "{errors:#?}");
}
