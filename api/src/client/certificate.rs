//! What is wrong with a server's certificate, when a TLS handshake fails on it: found in the
//! chain of causes of a failed request, and said in words with how to fix it, rather than as
//! rustls's `UnknownIssuer` or `CaUsedAsEndEntity` under "cannot reach the server".

use std::fmt;

/// Why the client does not trust a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// No authority the client trusts signed it: a self-signed certificate, or one signed by a
    /// private CA that was not given with `--ca-cert`.
    UnknownIssuer,
    /// It is a CA certificate (`basicConstraints CA:TRUE`, as `openssl req -x509` makes by
    /// default) that the server presents as its own.
    CaAsServer,
    /// It does not name the host the client connected to.
    WrongName,
    /// It has expired.
    Expired,
    /// It is not valid yet.
    NotYetValid,
    /// Anything else rustls refused, in its words.
    Other(String),
}

impl CertificateProblem {
    /// How to fix it, for a person.
    pub fn fix(&self) -> &'static str {
        match self {
            CertificateProblem::UnknownIssuer => {
                "give the client the certificate of the CA that signed the server's: `hodei login URL --ca-cert ca.pem` (saved in the context as `ca_cert`); a self-signed server certificate cannot be trusted that way, make a CA and a server certificate signed by it (docs/operations.md, \"TLS\")"
            }
            CertificateProblem::CaAsServer => {
                "the server must present a certificate signed by a CA, not the CA's own: make a CA and a server certificate signed by it, give the server the latter (`tls_cert`, `tls_key`) and the client the CA (`--ca-cert ca.pem`); docs/operations.md, \"TLS\", has the openssl commands"
            }
            CertificateProblem::WrongName => {
                "connect with a host name or address the certificate names in its subjectAltName, or make a certificate that names this one (`subjectAltName=DNS:ci.example.com,IP:10.0.0.5`; docs/operations.md, \"TLS\")"
            }
            CertificateProblem::Expired | CertificateProblem::NotYetValid => {
                "renew the server's certificate (docs/operations.md, \"TLS\"), and check that this machine's clock is right"
            }
            CertificateProblem::Other(_) => {
                "check the server's certificate and the CA given with `--ca-cert` (docs/operations.md, \"TLS\")"
            }
        }
    }

    /// The problem a failed request's error holds, if a certificate was refused.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<CertificateProblem> {
        let mut next = Some(err);
        while let Some(err) = next {
            if let Some(found) = from_rustls(err) {
                return Some(found);
            }
            // `io::Error::source` skips the error it wraps (which may be an `io::Error` around
            // rustls's): look inside it.
            next = match err.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as _),
                None => err.source(),
            };
        }
        None
    }
}

fn from_rustls(err: &(dyn std::error::Error + 'static)) -> Option<CertificateProblem> {
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(cert) = err.downcast_ref::<rustls::Error>()? else {
        return None;
    };
    Some(match cert {
        C::UnknownIssuer => CertificateProblem::UnknownIssuer,
        C::NotValidForName | C::NotValidForNameContext { .. } => CertificateProblem::WrongName,
        C::Expired | C::ExpiredContext { .. } => CertificateProblem::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => CertificateProblem::NotYetValid,
        // webpki's error has no variant of its own in rustls: it comes as `Other`.
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => {
            CertificateProblem::CaAsServer
        }
        other => CertificateProblem::Other(format!("{other:?}")),
    })
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertificateProblem::UnknownIssuer => f.write_str(
                "it is not signed by an authority this client trusts (a self-signed certificate, or one signed by a CA not given with `--ca-cert`)",
            ),
            CertificateProblem::CaAsServer => f.write_str(
                "it is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes) used as the server's own",
            ),
            CertificateProblem::WrongName => {
                f.write_str("it does not name the host this client connected to")
            }
            CertificateProblem::Expired => f.write_str("it has expired"),
            CertificateProblem::NotYetValid => f.write_str("it is not valid yet"),
            CertificateProblem::Other(reason) => write!(f, "rustls refused it: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_certificate_is_found_inside_an_io_error() {
        let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls);
        let io = std::io::Error::other(io);
        assert_eq!(
            CertificateProblem::of(&io),
            Some(CertificateProblem::UnknownIssuer)
        );
        let other = std::io::Error::other("connection refused");
        assert_eq!(CertificateProblem::of(&other), None);
    }
}
