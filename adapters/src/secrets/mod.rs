//! Stored secrets, sealed at rest: [`SealedSecrets`] implements the [`SecretStore`] and
//! [`SecretVault`] ports on the rows of a store ([`SealedRows`]: SQLite's or PostgreSQL's) with
//! a key file of the data directory.
//!
//! ## Guarantees
//! - A value is stored only sealed with XChaCha20-Poly1305 under the key of [`SecretKey`], with
//!   a random 192-bit nonce of its own and its scope and name as associated data: the database
//!   alone reveals no value, and a sealed value copied to another secret's row does not open.
//! - The key never enters the database; its file is created on first use with mode 0600 and
//!   refused when others may read it.
//!
//! ## Errors
//! [`SecretKeyError`] when the key file cannot be made or read, or is not a key; a value that
//! does not open (another key, an altered row) is [`StoreError::Corrupt`], naming the secret.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{
    BoxFuture, SecretInfo, SecretScope, SecretStore, SecretVault, StoreError,
};

use std::sync::Arc;

/// A sealed value to store as secret `name` of `scope`.
#[derive(Debug, Clone)]
pub struct SealedSecret {
    pub scope: SecretScope,
    pub name: String,
    pub nonce: Vec<u8>,
    pub sealed: Vec<u8>,
    pub at: Timestamp,
}

/// A secret as stored: its nonce and its sealed value.
pub type Sealed = (Vec<u8>, Vec<u8>);

/// Where the sealed values live: the rows of a store. Nothing here seals or opens.
///
/// ## Guarantees
/// - [`put_sealed`](SealedRows::put_sealed) replaces the value of an existing secret and keeps
///   its creation time; the answer says whether the secret is new.
pub trait SealedRows: Send + Sync {
    /// Stores a sealed secret, replacing an existing one; answers it and whether it is new.
    fn put_sealed(
        &self,
        secret: SealedSecret,
    ) -> BoxFuture<'_, Result<(SecretInfo, bool), StoreError>>;

    /// The nonce and sealed value of a secret.
    fn sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Sealed>, StoreError>>;

    /// The secrets of a scope, or of all, by scope, owner and name, without their values.
    fn secret_list<'a>(
        &'a self,
        scope: Option<&'a SecretScope>,
    ) -> BoxFuture<'a, Result<Vec<SecretInfo>, StoreError>>;

    /// Deletes a secret; `false` if there was none.
    fn delete_sealed<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// The length of a key, in bytes.
const KEY_LEN: usize = 32;
/// The length of a nonce, in bytes.
const NONCE_LEN: usize = 24;

/// The key file could not be made or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretKeyError {
    #[error("cannot {doing} the secrets key file {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secrets key file {} holds {len} bytes: expected exactly {KEY_LEN} (restore it from a backup; a new key cannot open the stored secrets)", path.display())]
    Length { path: PathBuf, len: usize },
    #[error("the secrets key file {} has mode {mode:o}: others than its owner may read it (expected 600: `chmod 600 {}`)", path.display(), path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("no randomness for a key: {reason}")]
    Random { reason: String },
}

/// The key that seals stored secrets: 32 random bytes in a file of the data directory.
pub struct SecretKey([u8; KEY_LEN]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads the key file at `path`; creates it with a new random key (mode 0600) when it does
    /// not exist.
    ///
    /// # Errors
    /// When the file cannot be read or created, is not 32 bytes long, or may be read by others
    /// than its owner.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretKeyError> {
        let io = |doing, source| SecretKeyError::Io {
            doing,
            path: path.to_owned(),
            source,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key).map_err(|err| SecretKeyError::Random {
                    reason: err.to_string(),
                })?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|err| io("write", err))?;
                return Ok(SecretKey(key));
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(io("create", err)),
        }
        let mode = std::fs::metadata(path)
            .map_err(|err| io("read", err))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretKeyError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(|err| io("read", err))?;
        let key: [u8; KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretKeyError::Length {
                    path: path.to_owned(),
                    len: bytes.len(),
                })?;
        Ok(SecretKey(key))
    }
}

/// Secrets in a store, sealed with a [`SecretKey`].
pub struct SealedSecrets {
    store: Arc<dyn SealedRows>,
    cipher: XChaCha20Poly1305,
}

impl SealedSecrets {
    pub fn new(store: Arc<dyn SealedRows>, key: &SecretKey) -> SealedSecrets {
        SealedSecrets {
            store,
            cipher: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// Seals `value` for secret `name` of `scope`: a fresh nonce and the ciphertext with its tag.
    fn seal(
        &self,
        scope: &SecretScope,
        name: &str,
        value: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| StoreError::Unavailable {
            reason: format!("no randomness for a nonce: {err}"),
            cause: None,
        })?;
        let aad = associated(scope, name);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Corrupt {
                what: format!("secret `{name}` of {scope}"),
                reason: "it cannot be sealed".into(),
                cause: None,
            })?;
        Ok((nonce.to_vec(), sealed))
    }

    /// Opens a sealed value of secret `name` of `scope`.
    fn open(
        &self,
        scope: &SecretScope,
        name: &str,
        nonce: &[u8],
        sealed: &[u8],
    ) -> Result<String, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            what: format!("secret `{name}` of {scope}"),
            reason: reason.to_owned(),
            cause: None,
        };
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| corrupt("its nonce has the wrong length"))?;
        let aad = associated(scope, name);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                corrupt("it does not open with the key file (another key, or an altered row)")
            })?;
        String::from_utf8(plain).map_err(|_| corrupt("it is not UTF-8 once opened"))
    }
}

/// What binds a sealed value to its row: the scope's kind and owner and the secret's name.
fn associated(scope: &SecretScope, name: &str) -> Vec<u8> {
    format!("hodei-secret\0{}\0{}\0{name}", scope.kind(), scope.owner()).into_bytes()
}

impl SecretStore for SealedSecrets {
    fn get<'a>(
        &'a self,
        scopes: &'a [SecretScope],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            for scope in scopes {
                if let Some((nonce, sealed)) = self.store.sealed(scope, name).await? {
                    return self.open(scope, name, &nonce, &sealed).map(Some);
                }
            }
            Ok(None)
        })
    }
}

impl SecretVault for SealedSecrets {
    fn put_secret<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
        value: &'a str,
        at: Timestamp,
    ) -> BoxFuture<'a, Result<(SecretInfo, bool), StoreError>> {
        Box::pin(async move {
            let (nonce, sealed) = self.seal(scope, name, value)?;
            self.store
                .put_sealed(SealedSecret {
                    scope: scope.clone(),
                    name: name.to_owned(),
                    nonce,
                    sealed,
                    at,
                })
                .await
        })
    }

    fn secrets<'a>(
        &'a self,
        scope: Option<&'a SecretScope>,
    ) -> BoxFuture<'a, Result<Vec<SecretInfo>, StoreError>> {
        self.store.secret_list(scope)
    }

    fn delete_secret<'a>(
        &'a self,
        scope: &'a SecretScope,
        name: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.store.delete_sealed(scope, name)
    }
}

#[cfg(test)]
mod tests;
