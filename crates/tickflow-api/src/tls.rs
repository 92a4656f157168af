//! TLS for the HTTP API and the Postgres wire (`[tls]`, docs/security.md): one certificate
//! chain and key in PEM, read at start, served by rustls on ring with its safe defaults
//! (TLS 1.2 and 1.3, no client certificates).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tickflow_pipeline::config::TlsPlan;
use tokio_rustls::TlsAcceptor;

/// The acceptors of both endpoints: the same certificate, each with its protocol's ALPN name.
#[derive(Clone)]
pub struct Tls {
    pub http: TlsAcceptor,
    pub pgwire: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Reads the certificate chain and key `plan` names and checks that they go together.
///
/// # Errors
/// A message naming the key and the file: unreadable, no PEM block of the kind expected, or
/// a key that is not the certificate's.
pub fn load(plan: &TlsPlan) -> Result<Tls, String> {
    let cert = plan.cert_file.display();
    let key_file = plan.key_file.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&plan.cert_file)
        .and_then(Iterator::collect)
        .map_err(|e| format!("tls.cert_file: {cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert_file: {cert}: no certificate in it (expected PEM: BEGIN CERTIFICATE)"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&plan.key_file)
        .map_err(|e| format!("tls.key_file: {key_file}: {e} (expected a PEM private key)"))?;
    let config = |alpn: &[u8]| -> Result<TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                format!("tls.key_file: {key_file} does not go with tls.cert_file {cert}: {e}")
            })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    };
    Ok(Tls {
        http: config(b"http/1.1")?,
        // What libpq sends with `sslnegotiation=direct`; a client that starts in plain
        // text and asks for TLS (`SSLRequest`) sends none, which is accepted too.
        pgwire: config(b"postgresql")?,
    })
}
