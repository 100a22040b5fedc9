//! Sealed secrets against a real SQLite file and real key files: the key files, and that no
//! file of the data directory holds a value. The rest runs against every store in the
//! conformance suite (`crate::conformance::secrets`).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{SecretScope, SecretStore, SecretVault, StoreError};

use super::{SealedRows, SealedSecrets, SecretKey, SecretKeyError};
use crate::sqlite::SqliteStore;

fn pipeline(name: &str) -> SecretScope {
    SecretScope::Pipeline(name.into())
}

#[test]
fn a_key_file_is_made_once_private_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    let first = SecretKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    let again = SecretKey::load_or_create(&path).unwrap();
    assert_eq!(first.0, again.0);
    let other = SecretKey::load_or_create(&dir.path().join("other.key")).unwrap();
    assert_ne!(first.0, other.0, "each new key is random");
}

#[test]
fn a_key_file_others_may_read_or_of_the_wrong_length_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets.key");
    SecretKey::load_or_create(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SecretKey::load_or_create(&path).unwrap_err();
    assert!(matches!(err, SecretKeyError::Exposed { mode: 0o644, .. }));
    assert!(err.to_string().contains("chmod 600"), "{err}");

    let short = dir.path().join("short.key");
    std::fs::write(&short, b"0123").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = SecretKey::load_or_create(&short).unwrap_err();
    assert!(
        matches!(err, SecretKeyError::Length { len: 4, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn values_are_sealed_at_rest_and_open_only_for_their_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hodei.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let key = SecretKey::load_or_create(&dir.path().join("secrets.key")).unwrap();
    let secrets = SealedSecrets::new(Arc::new(store.clone()), &key);
    let value = "hunter2-very-recognisable-value";
    let (info, new) = secrets
        .put_secret(&pipeline("web"), "TOKEN", value, Timestamp(5))
        .await
        .unwrap();
    assert!(new);
    assert_eq!((info.created, info.updated), (Timestamp(5), Timestamp(5)));
    assert_eq!(
        secrets.get(&[pipeline("web")], "TOKEN").await.unwrap(),
        Some(value.to_owned())
    );
    // No file of the database holds the value.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
            "a file of the data directory holds the plain value"
        );
    }
    // The sealed bytes of one secret do not open as another's.
    let (nonce, sealed) = store
        .sealed(&pipeline("web"), "TOKEN")
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        secrets.open(&pipeline("web"), "OTHER", &nonce, &sealed),
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        secrets.open(&pipeline("api"), "TOKEN", &nonce, &sealed),
        Err(StoreError::Corrupt { .. })
    ));
    // Nor with another key.
    let other = SecretKey::load_or_create(&dir.path().join("other.key")).unwrap();
    let stranger = SealedSecrets::new(Arc::new(store.clone()), &other);
    let err = stranger.get(&[pipeline("web")], "TOKEN").await.unwrap_err();
    assert!(
        err.to_string().contains("secret `TOKEN` of pipeline `web`"),
        "{err}"
    );
}
