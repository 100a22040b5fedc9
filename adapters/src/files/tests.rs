//! The files directory on a real temporary directory.

use std::fs;
use std::path::Path;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{CacheScope, FileError, FileStore};

use super::{DiskFiles, FileLimits};

fn open(dir: &Path, limits: FileLimits) -> DiskFiles {
    DiskFiles::open(dir.join("files"), limits, "main".into()).unwrap()
}

fn fill(files: &DiskFiles, content: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = files.scratch().unwrap();
    for (path, text) in content {
        let at = dir.join(path);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        fs::write(at, text).unwrap();
    }
    dir
}

#[tokio::test]
async fn artifacts_are_kept_listed_found_and_given_to_other_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let files = open(tmp.path(), FileLimits::default());
    let (run, build) = (RunId(3), JobId(7));
    let dir = fill(&files, &[("dist/app.js", "js"), ("report.xml", "<ok/>")]);
    let kept = files
        .keep_artifacts(run, build, "build", &dir)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2);
    assert!(!dir.exists(), "the scratch directory is consumed");
    let listed = files.artifacts(run).await.unwrap();
    assert_eq!(listed, kept);
    assert_eq!(listed[0].path, "dist/app.js");
    assert_eq!(listed[0].size, 2);
    // SHA-256 of "js".
    assert_eq!(
        listed[0].sha256,
        super::file_sha256(&files.artifact_file(run, build, "dist/app.js").unwrap()).unwrap()
    );
    assert_eq!(listed[0].sha256.len(), 64);
    let file = files.artifact_file(run, build, "dist/app.js").unwrap();
    assert_eq!(fs::read_to_string(file).unwrap(), "js");
    assert!(files.artifact_file(run, build, "nope").is_none());
    assert!(files.artifact_file(run, JobId(8), "dist/app.js").is_none());
    let into = files.scratch().unwrap();
    assert_eq!(
        files
            .stage_artifacts(run, &[build, JobId(99)], &into)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        fs::read_to_string(into.join("report.xml")).unwrap(),
        "<ok/>"
    );
    assert!(files.artifacts(RunId(4)).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_job_over_the_artifact_limit_keeps_nothing_and_says_which_setting_to_raise() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = FileLimits {
        artifacts_per_job: 10,
        ..FileLimits::default()
    };
    let files = open(tmp.path(), limits);
    let dir = fill(&files, &[("big", "0123456789ab")]);
    let err = files
        .keep_artifacts(RunId(1), JobId(1), "build", &dir)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FileError::TooLarge {
                size: 12,
                limit: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("artifacts_max_job_mib"), "{err}");
    assert!(files.artifacts(RunId(1)).await.unwrap().is_empty());
}

#[tokio::test]
async fn caches_hit_by_key_by_prefix_and_on_the_default_branch_or_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let files = open(tmp.path(), FileLimits::default());
    let main = CacheScope {
        pipeline: "web".into(),
        branch: "main".into(),
        default_branch: String::new(),
    };
    let feature = CacheScope {
        branch: "feature/x".into(),
        ..main.clone()
    };
    let dir = fill(&files, &[("target/a", "1")]);
    assert_eq!(files.save_cache(&main, "cargo-abc", &dir).await.unwrap(), 1);
    let into = files.scratch().unwrap();
    let exact = files
        .restore_cache(&main, "cargo-abc", &[], &into)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (exact.key.as_str(), exact.branch.as_str()),
        ("cargo-abc", "main")
    );
    assert_eq!(fs::read_to_string(into.join("target/a")).unwrap(), "1");
    // Another lock file: no exact entry, the fallback prefix finds the last one.
    let into = files.scratch().unwrap();
    let by_prefix = files
        .restore_cache(&main, "cargo-def", &["cargo-".into()], &into)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_prefix.key, "cargo-abc");
    // A feature branch falls back to the default branch's entries.
    let into = files.scratch().unwrap();
    let fallback = files
        .restore_cache(&feature, "cargo-abc", &[], &into)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fallback.branch, "main");
    // Its own save stays on its branch, and another pipeline sees nothing.
    let dir = fill(&files, &[("target/a", "2")]);
    files.save_cache(&feature, "cargo-abc", &dir).await.unwrap();
    let into = files.scratch().unwrap();
    let own = files
        .restore_cache(&feature, "cargo-abc", &[], &into)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(own.branch, "feature/x");
    assert_eq!(fs::read_to_string(into.join("target/a")).unwrap(), "2");
    // A repository whose default branch is `trunk`: its feature branches fall back to it.
    let dir = fill(&files, &[("target/a", "trunk")]);
    let trunk = CacheScope {
        branch: "trunk".into(),
        default_branch: "trunk".into(),
        ..main.clone()
    };
    files.save_cache(&trunk, "cargo-t", &dir).await.unwrap();
    let into = files.scratch().unwrap();
    let from_trunk = files
        .restore_cache(
            &CacheScope {
                branch: "topic".into(),
                ..trunk.clone()
            },
            "cargo-t",
            &[],
            &into,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_trunk.branch, "trunk");
    let other = CacheScope {
        pipeline: "api".into(),
        ..main
    };
    let into = files.scratch().unwrap();
    assert_eq!(
        files
            .restore_cache(&other, "cargo-abc", &["cargo".into()], &into)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn two_saves_of_one_key_at_once_leave_one_whole_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let files = open(tmp.path(), FileLimits::default());
    let scope = CacheScope {
        pipeline: "web".into(),
        branch: "main".into(),
        default_branch: String::new(),
    };
    let big_a = "a".repeat(4 << 20);
    let big_b = "b".repeat(4 << 20);
    let one = fill(&files, &[("blob", &big_a), ("tag", "a")]);
    let two = fill(&files, &[("blob", &big_b), ("tag", "b")]);
    let (x, y) = tokio::join!(
        files.save_cache(&scope, "k", &one),
        files.save_cache(&scope, "k", &two)
    );
    x.unwrap();
    y.unwrap();
    let into = files.scratch().unwrap();
    files
        .restore_cache(&scope, "k", &[], &into)
        .await
        .unwrap()
        .unwrap();
    let tag = fs::read_to_string(into.join("tag")).unwrap();
    let blob = fs::read_to_string(into.join("blob")).unwrap();
    let expected = if tag == "a" { &big_a } else { &big_b };
    assert!(blob == *expected, "the entry mixes two saves");
}

#[tokio::test]
async fn a_cache_entry_over_its_limit_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = FileLimits {
        cache_entry: 3,
        ..FileLimits::default()
    };
    let files = open(tmp.path(), limits);
    let scope = CacheScope {
        pipeline: "web".into(),
        branch: "main".into(),
        default_branch: String::new(),
    };
    let dir = fill(&files, &[("x", "four")]);
    let err = files.save_cache(&scope, "k", &dir).await.unwrap_err();
    assert!(err.to_string().contains("caches_max_entry_mib"), "{err}");
}

#[tokio::test]
async fn prune_removes_what_is_older_than_its_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let files = open(tmp.path(), FileLimits::default());
    let dir = fill(&files, &[("a", "1")]);
    files
        .keep_artifacts(RunId(1), JobId(1), "build", &dir)
        .await
        .unwrap();
    let scope = CacheScope {
        pipeline: "web".into(),
        branch: "main".into(),
        default_branch: String::new(),
    };
    let dir = fill(&files, &[("a", "1")]);
    files.save_cache(&scope, "k", &dir).await.unwrap();
    let now = std::time::SystemTime::now();
    assert_eq!(files.prune(now), (0, 0));
    let later = now + std::time::Duration::from_secs(31 * 24 * 3600);
    assert_eq!(files.prune(later), (1, 1));
    assert!(files.artifacts(RunId(1)).await.unwrap().is_empty());
}

#[tokio::test]
async fn carried_artifacts_belong_to_the_new_job_and_survive_the_old_run() {
    let tmp = tempfile::tempdir().unwrap();
    let files = open(tmp.path(), FileLimits::default());
    let dir = fill(&files, &[("dist/app.js", "js")]);
    files
        .keep_artifacts(RunId(1), JobId(1), "build", &dir)
        .await
        .unwrap();
    files
        .carry_artifacts((RunId(1), JobId(1)), (RunId(2), JobId(5)))
        .await
        .unwrap();
    // Nothing kept, nothing carried.
    files
        .carry_artifacts((RunId(1), JobId(9)), (RunId(2), JobId(6)))
        .await
        .unwrap();
    let listed = files.artifacts(RunId(2)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].job, listed[0].path.as_str()),
        (JobId(5), "dist/app.js")
    );
    fs::remove_dir_all(tmp.path().join("files/artifacts/run-1")).unwrap();
    let file = files
        .artifact_file(RunId(2), JobId(5), "dist/app.js")
        .unwrap();
    assert_eq!(fs::read_to_string(file).unwrap(), "js");
}
