//! TLS for the sink's connection, as libpq's `sslmode` and `sslrootcert` ask for it.
//!
//! tokio-postgres reads `sslmode` `disable`, `prefer` and `require` but not `verify-ca` or
//! `verify-full`, and checks no certificate itself: that is the TLS connector's. So the two
//! settings are taken out of the connection string here and the rest is left to
//! tokio-postgres. Every mode that encrypts checks the server's certificate against the
//! system's roots, or the `sslrootcert` file: `require` and `verify-full` check the host
//! name too (stricter than libpq's `require`, which checks nothing without a root file),
//! `verify-ca` only the chain. `prefer` (libpq's default) connects in the clear: an attempt
//! that falls back silently protects nothing against whoever can make it fall back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// What a connection string asks of TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    /// Whether the connection is encrypted.
    pub fn encrypts(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

/// A connection string without its TLS settings, and those settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// For tokio-postgres to parse.
    pub rest: String,
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, a URL
/// (`postgres://…?sslmode=verify-full`) or key-value pairs (`host=… sslmode=…`).
///
/// # Errors
/// An `sslmode` libpq does not know.
pub fn split(connection: &str) -> Result<Split, String> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        // The query starts at the first `?` after the credentials: a password may hold one.
        let after_at = connection.rfind('@').map_or(0, |at| at + 1);
        let split = connection[after_at..]
            .find('?')
            .map(|q| connection.split_at(after_at + q));
        match split.map(|(base, query)| (base, &query[1..])) {
            None => connection.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, &percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for pair in connection.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key.trim(), value.trim_matches('\''))? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    Ok(Split {
        rest,
        mode: mode.unwrap_or(SslMode::Prefer),
        root_cert,
    })
}

/// `%XX` escapes decoded (a path in a URL).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The TLS client a mode that encrypts connects with; `None` for one that does not.
///
/// # Errors
/// The root file cannot be read or holds no certificate, or the system has no roots.
pub fn client(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<Option<Arc<ClientConfig>>, String> {
    if !mode.encrypts() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no root certificates on this system: give sslrootcert=<ca.pem> in the url"
                        .into(),
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if mode == SslMode::VerifyCa {
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(chain)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

/// `verify-ca`: the chain to a root is checked, the host name is not.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_come_out_of_urls_and_key_value_strings() {
        let s = split("postgres://u:p@db.example.com:5432/ticks?sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem&application_name=tf").unwrap();
        assert_eq!(
            s.rest,
            "postgres://u:p@db.example.com:5432/ticks?application_name=tf"
        );
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/etc/rds.pem")));
        let s = split("postgres://u:pa?ss@h/db?sslmode=verify-full").unwrap();
        assert_eq!(
            (s.rest.as_str(), s.mode),
            ("postgres://u:pa?ss@h/db", SslMode::VerifyFull)
        );
        let s = split("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (s.rest.as_str(), s.mode),
            ("postgres://u@h/db", SslMode::Require)
        );
        let s =
            split("host=h user=u sslmode=verify-ca sslrootcert='/tmp/ca.pem' dbname=d").unwrap();
        assert_eq!(s.rest, "host=h user=u dbname=d");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some(Path::new("/tmp/ca.pem")));
        assert_eq!(split("postgres://u@h/db").unwrap().mode, SslMode::Prefer);
        assert!(
            split("postgres://u@h/db?sslmode=verify")
                .unwrap_err()
                .contains("sslmode=verify: expected")
        );
    }

    #[test]
    fn a_root_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = client(SslMode::VerifyFull, Some(&empty)).unwrap_err();
        assert!(e.contains("ca.pem: no certificate in it"), "{e}");
        let e = client(SslMode::VerifyFull, Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        assert!(client(SslMode::Prefer, None).unwrap().is_none());
    }
}
