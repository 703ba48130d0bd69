//! TLS settings for both connections (SQL via tokio-postgres, walsender via pgwire-replication).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{PostgresConfig, SslMode};

/// The tokio-postgres TLS mode and connector for `config.ssl_mode`.
pub(crate) fn sql_tls(
    config: &PostgresConfig,
) -> Result<(tokio_postgres::config::SslMode, tokio_postgres_rustls::MakeRustlsConnect), String> {
    use tokio_postgres::config::SslMode as Pg;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (mode, client) = match config.ssl_mode {
        // tokio-postgres never calls the connector when TLS is disabled.
        SslMode::Disable => (Pg::Disable, unverified(provider)?),
        SslMode::Prefer => (Pg::Prefer, unverified(provider)?),
        SslMode::Require => (Pg::Require, unverified(provider)?),
        SslMode::VerifyFull => (Pg::Require, verified(provider, config.ca_cert_path.as_deref())?),
    };
    Ok((mode, tokio_postgres_rustls::MakeRustlsConnect::new(client)))
}

/// The pgwire-replication TLS settings for `config.ssl_mode` (same trust as [`sql_tls`]).
pub(crate) fn replication_tls(config: &PostgresConfig) -> pgwire_replication::TlsConfig {
    use pgwire_replication::SslMode as Wire;
    let mode = match config.ssl_mode {
        SslMode::Disable => Wire::Disable,
        SslMode::Prefer => Wire::Prefer,
        SslMode::Require => Wire::Require,
        SslMode::VerifyFull => Wire::VerifyFull,
    };
    pgwire_replication::TlsConfig { mode, ca_pem_path: config.ca_cert_path.clone(), ..Default::default() }
}

fn base(provider: Arc<CryptoProvider>) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))
}

/// Chain and host name verified against the given CA file, else the webpki (Mozilla) roots.
fn verified(provider: Arc<CryptoProvider>, ca: Option<&Path>) -> Result<ClientConfig, String> {
    let roots = root_store(ca)?;
    Ok(base(provider)?.with_root_certificates(roots).with_no_client_auth())
}

fn root_store(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let Some(path) = ca else {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("no usable CA certificate in {}", path.display()));
    }
    Ok(roots)
}

/// Encrypted but unauthenticated, like libpq's `sslmode=require`: the handshake signature is
/// still checked, the certificate chain and host name are not.
fn unverified(provider: Arc<CryptoProvider>) -> Result<ClientConfig, String> {
    let verifier = AcceptAnyCertificate { algorithms: provider.signature_verification_algorithms };
    Ok(base(provider)?.dangerous().with_custom_certificate_verifier(Arc::new(verifier)).with_no_client_auth())
}

#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
