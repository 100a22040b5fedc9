//! TLS for the server: a certificate chain and its private key, PEM files, with rustls (the
//! `ring` provider, no C toolchain beyond `ring`'s own).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A server's TLS configuration, as [`load`] makes it.
pub type TlsConfig = ServerConfig;

/// The server's TLS configuration from a certificate chain file and a private key file; the
/// error names the file and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|err| {
            format!(
                "{}: expected PEM certificates (the server's first): {err}",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: expected PEM certificates, found none",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|err| {
        format!(
            "{}: expected a PEM private key (PKCS#8, PKCS#1 or SEC1): {err}",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS: {err}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|err| {
            format!(
                "{} and {}: the key does not go with the certificate: {err}",
                cert.display(),
                key.display()
            )
        })
}
