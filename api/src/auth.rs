//! Bearer tokens: how they are made, stored and checked.
//!
//! A token is `hodei_` followed by 43 characters of URL-safe base64 of 32 random bytes (256
//! bits). Only its SHA-256 digest is stored: a token is high-entropy, so a fast hash is enough
//! (no password hashing), and a stolen database reveals no usable token. A request's token is
//! looked up by its digest, then the stored digest is compared with the request's in constant
//! time; the lookup's timing depends only on the digest, which tells nothing about a valid
//! token.
//!
//! [`Caller`] is the extractor that authenticates a request, by its bearer token or by the
//! console session in its cookie; handlers then ask [`Caller::require`] for the role they need.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use hodei_domain::model::Role;
use hodei_domain::ports::{NewToken, StoreError, TokenRecord, TokenStore};
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::error::ApiError;

/// What every generated token starts with, so that secret scanners can recognise them.
pub const TOKEN_PREFIX: &str = "hodei_";

/// The shortest token accepted from outside (`HODEI_BOOTSTRAP_TOKEN`): 32 characters.
pub const MIN_TOKEN_LEN: usize = 32;

/// The SHA-256 digest of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub use hodei_domain::ports::same_digest;

/// A new random token.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn generate() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| ApiError::Internal {
        reason: format!("no randomness for a token: {err}"),
    })?;
    Ok(format!("{TOKEN_PREFIX}{}", base64url(&bytes)))
}

/// URL-safe base64 without padding.
pub(crate) fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Whether `token` may be used as a token given from outside: at least [`MIN_TOKEN_LEN`]
/// printable ASCII characters, no space. Says what is wrong otherwise.
pub fn check_external(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "it has {} characters: expected at least {MIN_TOKEN_LEN}",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected printable ASCII characters without spaces".into());
    }
    Ok(())
}

/// Stores a token with `secret` and answers its record.
pub async fn store_token(
    tokens: &dyn TokenStore,
    name: &str,
    role: Role,
    secret: &str,
    at: hodei_domain::ids::Timestamp,
) -> Result<TokenRecord, StoreError> {
    tokens
        .create_token(NewToken {
            name: name.to_owned(),
            role,
            digest: digest(secret),
            at,
        })
        .await
}

/// How a server's first admin token came to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// Tokens exist already: nothing was created.
    Existing,
    /// A new admin token was generated: show it once.
    Generated { token: String },
    /// The given token was stored as the admin token.
    Given,
}

/// At a server's first start (no token was ever created), stores an admin token: `given` if
/// there is one (it must pass [`check_external`]), a new random one otherwise.
pub async fn bootstrap(
    tokens: &dyn TokenStore,
    given: Option<&str>,
    at: hodei_domain::ids::Timestamp,
) -> Result<Bootstrap, ApiError> {
    if tokens.any_token().await? {
        return Ok(Bootstrap::Existing);
    }
    let (secret, outcome) = match given {
        Some(token) => (token.to_owned(), Bootstrap::Given),
        None => {
            let token = generate()?;
            (token.clone(), Bootstrap::Generated { token })
        }
    };
    store_token(tokens, "admin (bootstrap)", Role::Admin, &secret, at).await?;
    Ok(outcome)
}

/// The name of the agent registration token that [`bootstrap_agents`] stores.
pub const BOOTSTRAP_AGENT_TOKEN: &str = "bootstrap";

/// Stores `given` (it must pass [`check_external`]) as the agent registration token named
/// [`BOOTSTRAP_AGENT_TOKEN`], unless a valid token of that name exists or this very secret was
/// stored before: a deployment's agents can then register with a token set before the first
/// start (Compose, Kubernetes). A revoked one stays revoked however often the server starts
/// with the same secret; a new secret makes a new token. Whether it was stored now.
pub async fn bootstrap_agents(
    agents: &dyn hodei_domain::ports::AgentStore,
    given: &str,
    at: hodei_domain::ids::Timestamp,
) -> Result<bool, ApiError> {
    let known = agents.agent_tokens().await?;
    if known.iter().any(|t| t.name == BOOTSTRAP_AGENT_TOKEN) {
        return Ok(false);
    }
    let created = agents
        .create_agent_token(hodei_domain::ports::NewAgentToken {
            name: BOOTSTRAP_AGENT_TOKEN.to_owned(),
            digest: digest(given),
            labels: None,
            expires: None,
            at,
        })
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: u64,
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// Fails with 403 unless the caller's role allows `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                needed,
                has: self.role,
            })
        }
    }
}

pub(crate) fn bearer(req: &HttpRequest) -> Result<String, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthenticated {
            reason: "no token: send `Authorization: Bearer <token>`",
        })?;
    let text = value.to_str().map_err(|_| ApiError::Unauthenticated {
        reason: "the Authorization header is not ASCII: expected `Bearer <token>`",
    })?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated {
            reason: "the Authorization header is not `Bearer <token>`",
        })?;
    Ok(token.to_owned())
}

/// The caller whose token has `wanted` as its digest, unless it is unknown or revoked.
pub(crate) async fn authenticate_digest(
    tokens: &dyn TokenStore,
    wanted: [u8; 32],
) -> Result<Caller, ApiError> {
    let record = tokens.token_by_digest(&wanted).await?;
    match record {
        Some(record) if same_digest(&record.digest, &wanted) && record.revoked.is_none() => {
            Ok(Caller {
                token: record.id,
                name: record.name,
                role: record.role,
            })
        }
        Some(record) if record.revoked.is_some() => Err(ApiError::Unauthenticated {
            reason: "the token was revoked",
        }),
        _ => Err(ApiError::Unauthenticated {
            reason: "unknown token",
        }),
    }
}

/// How a request authenticates: a bearer token, or else a console session's cookie (see
/// [`crate::console::session`]).
enum Credential {
    Bearer(String),
    Session { id: String, digest: [u8; 32] },
}

fn credential(req: &HttpRequest, state: &ApiState) -> Result<Credential, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer(req).map(Credential::Bearer);
    }
    match crate::console::session::api_session(req, &state.sessions)? {
        Some((id, digest)) => Ok(Credential::Session { id, digest }),
        None => bearer(req).map(Credential::Bearer),
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let prepared = match req.app_data::<web::Data<ApiState>>() {
            Some(state) => Ok((state.clone(), credential(req, state))),
            None => Err(ApiError::Internal {
                reason: "the API state is missing from the app".into(),
            }),
        };
        Box::pin(async move {
            let (state, credential) = prepared?;
            match credential? {
                Credential::Bearer(token) => {
                    authenticate_digest(state.tokens.as_ref(), digest(&token)).await
                }
                Credential::Session { id, digest } => {
                    let caller = authenticate_digest(state.tokens.as_ref(), digest).await;
                    if caller.is_err() {
                        state.sessions.close(&id);
                    }
                    caller
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_long_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert!(check_external(&a).is_ok());
    }

    #[test]
    fn base64url_matches_the_rfc_4648_vectors() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn digests_compare_equal_only_when_equal() {
        let a = digest("one");
        let mut b = a;
        assert!(same_digest(&a, &b));
        b[31] ^= 1;
        assert!(!same_digest(&a, &b));
    }

    #[test]
    fn external_tokens_must_be_long_and_printable() {
        assert!(check_external("short").unwrap_err().contains("at least 32"));
        let spaced = format!("{} x", "a".repeat(40));
        assert!(check_external(&spaced).is_err());
        assert!(check_external(&"a".repeat(32)).is_ok());
    }
}
