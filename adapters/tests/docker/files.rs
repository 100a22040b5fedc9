//! Artifacts and caches between jobs of containers: what one job's container writes is copied
//! out of its workspace into the files directory, and into the workspace of the next job,
//! whose container reads it.

use hodei_adapters::files::{DiskFiles, FileLimits};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{CacheScope, FileStore, Provider};
use hodei_domain::state::StepExit;

use crate::support::{Fixture, step, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_and_caches_pass_between_jobs_in_containers() {
    let fx = Fixture::new("files").await;
    let dir = tempfile::tempdir().unwrap();
    let files = DiskFiles::open(
        dir.path().join("files"),
        FileLimits::default(),
        "main".into(),
    )
    .unwrap();
    // The producing job writes its files inside its container.
    let build = fx.set_up(1, |_| {}).await;
    let (exit, _) = fx
        .run(
            &build,
            &step(0, "mkdir -p dist/css target && echo app > dist/app.js && echo css > dist/css/a.css && echo o > target/obj && echo no > notes"),
        )
        .await;
    assert_eq!(exit, StepExit::code(0));
    let out = files.scratch().unwrap();
    let copied = within(
        "copy_out",
        fx.provider.copy_out(&build, &["dist".into()], &out),
    )
    .await
    .unwrap();
    assert_eq!(copied, ["dist/app.js", "dist/css/a.css"]);
    let kept = files
        .keep_artifacts(RunId(1), JobId(1), "build", &out)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2);
    let cache = files.scratch().unwrap();
    within(
        "copy_out",
        fx.provider.copy_out(&build, &["target".into()], &cache),
    )
    .await
    .unwrap();
    let scope = CacheScope {
        pipeline: "web".into(),
        branch: "main".into(),
        default_branch: String::new(),
    };
    files.save_cache(&scope, "deps-1", &cache).await.unwrap();
    fx.finish(&build).await;

    // The job that needs it gets both before its step runs.
    let test = fx.set_up(2, |_| {}).await;
    let staged = files.scratch().unwrap();
    assert_eq!(
        files
            .stage_artifacts(RunId(1), &[JobId(1)], &staged)
            .await
            .unwrap(),
        2
    );
    within("copy_in", fx.provider.copy_in(&test, &staged))
        .await
        .unwrap();
    let restored = files.scratch().unwrap();
    let hit = files
        .restore_cache(&scope, "deps-1", &[], &restored)
        .await
        .unwrap();
    assert!(hit.is_some());
    within("copy_in", fx.provider.copy_in(&test, &restored))
        .await
        .unwrap();
    let (exit, output) = fx
        .run(
            &test,
            &step(
                0,
                "cat dist/app.js dist/css/a.css target/obj; test ! -e notes",
            ),
        )
        .await;
    assert_eq!(
        (exit, output.as_str()),
        (StepExit::code(0), "app\ncss\no\n")
    );
    fx.finish(&test).await;
}
