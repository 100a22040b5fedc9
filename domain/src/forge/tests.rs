//! Deliveries in the forges' documented shapes, and what `on:` makes of them.

use super::*;
use crate::load::load;

const SHA: &str = "1f0c3e2d4b5a69788766554433221100ffeeddcc";
const OLD: &str = "0a0b0c0d0e0f1011121314151617181920212223";
const ZERO: &str = "0000000000000000000000000000000000000000";

fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> &'a [(&'a str, &'a str)] {
    pairs
}

#[test]
fn github_push_tag_pull_request_and_ping_are_read() {
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{OLD}","after":"{SHA}","deleted":false,"commits":[],"repository":{{"default_branch":"trunk"}}}}"#
    );
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1")]),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(d.id, "d-1");
    assert_eq!(d.default_branch, "trunk");
    assert_eq!(
        d.event,
        Event::Push {
            branch: "main".into(),
            before: Some(OLD.into()),
            commit: SHA.into()
        }
    );
    let tag = format!(r#"{{"ref":"refs/tags/v1.2","before":"{ZERO}","after":"{SHA}"}}"#);
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[("x-github-event", "push"), ("x-github-delivery", "d-2")]),
        tag.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        d.event,
        Event::Tag {
            tag: "v1.2".into(),
            commit: SHA.into()
        }
    );
    let pr = format!(
        r#"{{"action":"synchronize","number":7,"pull_request":{{"head":{{"ref":"feature","sha":"{SHA}"}},"base":{{"ref":"main"}}}}}}"#
    );
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-3"),
        ]),
        pr.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        d.event,
        Event::PullRequest {
            number: 7,
            head_branch: "feature".into(),
            base_branch: "main".into(),
            commit: SHA.into()
        }
    );
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[("x-github-event", "ping"), ("x-github-delivery", "d-4")]),
        br#"{"zen":"Keep it logically awesome.","hook_id":1}"#,
    )
    .unwrap();
    assert_eq!(d.event, Event::Ping);
    let closed = pr.replace("synchronize", "closed");
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-5"),
        ]),
        closed.as_bytes(),
    )
    .unwrap();
    assert!(matches!(d.event, Event::Ignored { .. }));
    let deleted =
        format!(r#"{{"ref":"refs/heads/old","before":"{SHA}","after":"{ZERO}","deleted":true}}"#);
    let d = parse_delivery(
        Forge::GitHub,
        headers(&[("x-github-event", "push"), ("x-github-delivery", "d-6")]),
        deleted.as_bytes(),
    )
    .unwrap();
    assert!(matches!(d.event, Event::Ignored { .. }));
}

#[test]
fn gitlab_and_gitea_shapes_are_read() {
    let body = format!(
        r#"{{"object_kind":"tag_push","ref":"refs/tags/v2","before":"{ZERO}","after":"ffff{}","checkout_sha":"{SHA}","project":{{"default_branch":"develop"}}}}"#,
        &SHA[4..]
    );
    let d = parse_delivery(
        Forge::GitLab,
        headers(&[
            ("X-Gitlab-Event", "Tag Push Hook"),
            ("X-Gitlab-Event-UUID", "u-1"),
        ]),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        d.event,
        Event::Tag {
            tag: "v2".into(),
            commit: SHA.into()
        }
    );
    assert_eq!(d.default_branch, "develop");
    let mr = format!(
        r#"{{"object_kind":"merge_request","object_attributes":{{"iid":3,"action":"update","source_branch":"fix","target_branch":"main","last_commit":{{"id":"{SHA}"}}}}}}"#
    );
    let d = parse_delivery(
        Forge::GitLab,
        headers(&[
            ("X-Gitlab-Event", "Merge Request Hook"),
            ("X-Gitlab-Event-UUID", "u-2"),
        ]),
        mr.as_bytes(),
    )
    .unwrap();
    assert!(matches!(d.event, Event::PullRequest { number: 3, .. }));
    let push = format!(r#"{{"ref":"refs/heads/dev","before":"{OLD}","after":"{SHA}"}}"#);
    let d = parse_delivery(
        Forge::Gitea,
        headers(&[("X-Forgejo-Event", "push"), ("X-Forgejo-Delivery", "g-1")]),
        push.as_bytes(),
    )
    .unwrap();
    assert_eq!(d.id, "g-1");
    assert!(matches!(d.event, Event::Push { .. }));
    let err =
        parse_delivery(Forge::Gitea, headers(&[("x-gitea-event", "push")]), b"{}").unwrap_err();
    assert!(err.to_string().contains("x-gitea-delivery"), "{err}");
    let err = parse_delivery(
        Forge::Gitea,
        headers(&[("x-gitea-event", "push"), ("x-gitea-delivery", "g")]),
        b"{not json",
    )
    .unwrap_err();
    assert!(matches!(err, PayloadError::NotJson { .. }));
}

fn on(yaml_on: &str) -> Triggers {
    load(&format!(
        "name: p\non: {yaml_on}\njobs:\n  a: {{steps: [{{run: x}}]}}\n"
    ))
    .pipeline
    .expect("valid")
    .on
}

fn push(branch: &str) -> Event {
    Event::Push {
        branch: branch.into(),
        before: Some(OLD.into()),
        commit: SHA.into(),
    }
}

#[test]
fn on_filters_branches_tags_paths_and_events_as_the_forges_ci_does() {
    let files = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let main_only = on("{push: {branches: [main, 'release/*']}}");
    assert!(decide(&main_only, &push("main"), None).is_ok());
    assert!(decide(&main_only, &push("release/1.0"), None).is_ok());
    let err = decide(&main_only, &push("feature"), None).unwrap_err();
    assert!(err.contains("`feature`"), "{err}");
    let tag = Event::Tag {
        tag: "v1".into(),
        commit: SHA.into(),
    };
    assert!(decide(&main_only, &tag, None).is_err());
    let tags_only = on("{push: {tags: ['v*']}}");
    assert!(decide(&tags_only, &tag, None).is_ok());
    assert!(decide(&tags_only, &push("main"), None).is_err());
    let every_push = on("push");
    assert!(decide(&every_push, &push("x"), None).is_ok());
    assert!(decide(&every_push, &tag, None).is_ok());

    let paths = on("{push: {paths: ['services/**']}}");
    let changed = files(&["services/api/main.rs", "README.md"]);
    assert!(decide(&paths, &push("main"), Some(&changed)).is_ok());
    let changed = files(&["README.md"]);
    assert!(decide(&paths, &push("main"), Some(&changed)).is_err());
    assert!(
        decide(&paths, &push("main"), None).is_ok(),
        "unknown changes run"
    );

    let pr = Event::PullRequest {
        number: 1,
        head_branch: "feature".into(),
        base_branch: "main".into(),
        commit: SHA.into(),
    };
    assert!(
        decide(&main_only, &pr, None).is_err(),
        "no pull_request trigger"
    );
    assert!(decide(&on("{pull_request: {branches: [main]}}"), &pr, None).is_ok());
    assert!(decide(&on("{pull_request: {branches: [develop]}}"), &pr, None).is_err());
    assert!(decide(&on("[manual]"), &push("main"), None).is_err());
    assert!(decide(&every_push, &Event::Ping, None).is_err());
}
