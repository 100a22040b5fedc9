//! Sealed secrets on every store: scopes, replacement, listing and deletion.

use std::sync::Arc;

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{SecretScope, SecretStore, SecretVault};

use super::{Backend, conformance};
use crate::secrets::{SealedRows, SealedSecrets, SecretKey};

conformance!(
    a_run_finds_its_pipelines_secret_before_its_repositorys,
    a_replaced_secret_keeps_its_creation_and_a_deleted_one_is_gone,
);

fn pipeline(name: &str) -> SecretScope {
    SecretScope::Pipeline(name.into())
}

fn repository(name: &str) -> SecretScope {
    SecretScope::Repository(name.into())
}

/// The store's secret rows, as [`SealedSecrets`] takes them.
async fn rows(backend: Backend) -> Arc<dyn SealedRows> {
    backend.store().await
}

async fn a_run_finds_its_pipelines_secret_before_its_repositorys(backend: Backend) {
    let store = rows(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::load_or_create(&dir.path().join("secrets.key")).unwrap();
    let secrets = SealedSecrets::new(store, &key);
    secrets
        .put_secret(&repository("app"), "TOKEN", "from-repo", Timestamp(1))
        .await
        .unwrap();
    secrets
        .put_secret(&repository("app"), "ONLY_REPO", "repo-only", Timestamp(1))
        .await
        .unwrap();
    secrets
        .put_secret(&pipeline("web"), "TOKEN", "from-pipeline", Timestamp(2))
        .await
        .unwrap();
    let scopes = SecretScope::of_run("web", Some("app"));
    assert_eq!(
        secrets.get(&scopes, "TOKEN").await.unwrap().as_deref(),
        Some("from-pipeline")
    );
    assert_eq!(
        secrets.get(&scopes, "ONLY_REPO").await.unwrap().as_deref(),
        Some("repo-only")
    );
    assert_eq!(secrets.get(&scopes, "MISSING").await.unwrap(), None);
    // Another pipeline of no repository sees none of them.
    assert_eq!(
        secrets
            .get(&SecretScope::of_run("api", None), "TOKEN")
            .await
            .unwrap(),
        None
    );
}

async fn a_replaced_secret_keeps_its_creation_and_a_deleted_one_is_gone(backend: Backend) {
    let store = rows(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::load_or_create(&dir.path().join("secrets.key")).unwrap();
    let secrets = SealedSecrets::new(store, &key);
    secrets
        .put_secret(&pipeline("web"), "B", "1", Timestamp(1))
        .await
        .unwrap();
    secrets
        .put_secret(&pipeline("web"), "A", "1", Timestamp(2))
        .await
        .unwrap();
    let (info, new) = secrets
        .put_secret(&pipeline("web"), "B", "2", Timestamp(3))
        .await
        .unwrap();
    assert!(!new);
    assert_eq!((info.created, info.updated), (Timestamp(1), Timestamp(3)));
    assert_eq!(
        secrets
            .get(&[pipeline("web")], "B")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    secrets
        .put_secret(&repository("app"), "C", "x", Timestamp(4))
        .await
        .unwrap();
    let names = |list: Vec<hodei_domain::ports::SecretInfo>| {
        list.into_iter()
            .map(|s| format!("{}/{}", s.scope.owner(), s.name))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(secrets.secrets(Some(&pipeline("web"))).await.unwrap()),
        ["web/A", "web/B"]
    );
    assert_eq!(
        names(secrets.secrets(None).await.unwrap()),
        ["web/A", "web/B", "app/C"]
    );
    assert!(secrets.delete_secret(&pipeline("web"), "A").await.unwrap());
    assert!(!secrets.delete_secret(&pipeline("web"), "A").await.unwrap());
    assert_eq!(secrets.get(&[pipeline("web")], "A").await.unwrap(), None);
}
