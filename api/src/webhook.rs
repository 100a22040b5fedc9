//! The signatures of webhook deliveries: GitHub's `X-Hub-Signature-256` and Gitea's (and
//! Forgejo's) `X-Gitea-Signature` are an HMAC-SHA256 of the body with the hook's secret;
//! GitLab's `X-Gitlab-Token` is the secret itself. Compared in constant time.

use hmac::{Hmac, Mac};
use hodei_domain::forge::{Forge, Headers};
use sha2::Sha256;

/// Why a delivery's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no `{header}` header: the hook must be set up with the repository's webhook secret")]
    Missing { header: &'static str },
    #[error(
        "the `{header}` header does not match the body signed with the repository's webhook secret"
    )]
    Mismatch { header: &'static str },
}

/// Checks that the delivery was signed with `secret`.
pub fn verify(
    forge: Forge,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    secret: &str,
) -> Result<(), SignatureError> {
    match forge {
        Forge::GitHub => {
            let header = "x-hub-signature-256";
            let given = headers
                .header(header)
                .ok_or(SignatureError::Missing { header })?;
            let hex = given
                .strip_prefix("sha256=")
                .ok_or(SignatureError::Mismatch { header })?;
            check_hmac(secret, body, hex).map_err(|()| SignatureError::Mismatch { header })
        }
        Forge::Gitea => {
            let (header, given) = ["x-gitea-signature", "x-forgejo-signature"]
                .into_iter()
                .find_map(|h| headers.header(h).map(|v| (h, v)))
                .ok_or(SignatureError::Missing {
                    header: "x-gitea-signature",
                })?;
            check_hmac(secret, body, given).map_err(|()| SignatureError::Mismatch { header })
        }
        Forge::GitLab => {
            let header = "x-gitlab-token";
            let given = headers
                .header(header)
                .ok_or(SignatureError::Missing { header })?;
            match constant_eq(given.as_bytes(), secret.as_bytes()) {
                true => Ok(()),
                false => Err(SignatureError::Mismatch { header }),
            }
        }
    }
}

/// HMAC-SHA256 of `body` with `secret`, in lower-case hex: what a forge sends.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn check_hmac(secret: &str, body: &[u8], hex: &str) -> Result<(), ()> {
    let Some(given) = decode_hex(hex.trim()) else {
        return Err(());
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(drop)?;
    mac.update(body);
    mac.verify_slice(&given).map_err(drop)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_of_each_forge_are_checked_against_the_body() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = format!("sha256={}", sign("s3cret", body));
        let headers = [("X-Hub-Signature-256", good.as_str())];
        assert_eq!(verify(Forge::GitHub, &headers[..], body, "s3cret"), Ok(()));
        assert!(verify(Forge::GitHub, &headers[..], b"{}", "s3cret").is_err());
        assert!(verify(Forge::GitHub, &headers[..], body, "other").is_err());
        assert_eq!(
            verify(Forge::GitHub, &[][..], body, "s3cret"),
            Err(SignatureError::Missing {
                header: "x-hub-signature-256"
            })
        );
        let plain = sign("s3cret", body);
        let gitea = [("X-Gitea-Signature", plain.as_str())];
        assert_eq!(verify(Forge::Gitea, &gitea[..], body, "s3cret"), Ok(()));
        let forgejo = [("X-Forgejo-Signature", plain.as_str())];
        assert_eq!(verify(Forge::Gitea, &forgejo[..], body, "s3cret"), Ok(()));
        let gitlab = [("X-Gitlab-Token", "s3cret")];
        assert_eq!(verify(Forge::GitLab, &gitlab[..], body, "s3cret"), Ok(()));
        assert!(verify(Forge::GitLab, &gitlab[..], body, "s3cre").is_err());
        let bad_hex = [("X-Hub-Signature-256", "sha256=zz")];
        assert!(verify(Forge::GitHub, &bad_hex[..], body, "s3cret").is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
