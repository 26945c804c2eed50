//! The TLS client configuration of a scrape (`tlsConfig`): trusted CAs, a client certificate,
//! the name the server's certificate is checked against, or no verification at all. PEM data
//! comes from Secrets; errors name the field and never quote key material.

use std::sync::Arc;

use metricshard_crds::TlsConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::secrets::{SecretError, SecretResolver};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A Secret reference could not be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A PEM value holds no usable certificate or key.
    #[error("{field}: {problem}")]
    Pem {
        /// The field (`tlsConfig.ca`).
        field: &'static str,
        /// What is wrong, without the data.
        problem: String,
    },
    /// `serverName` is not a DNS name or IP address.
    #[error("tlsConfig.serverName: {0:?} is not a DNS name or IP address")]
    ServerName(String),
    /// rustls refused the configuration (a key that does not match the certificate, say).
    #[error("tlsConfig: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the rustls configuration of `config` with the PEM data its Secrets hold.
pub fn client_config(field: &str, config: &TlsConfig, secrets: &mut SecretResolver<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_name = match &config.server_name {
        Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name.clone()))?),
        None => None,
    };
    let inner: Arc<dyn ServerCertVerifier> = match &config.ca {
        Some(ca) => {
            let pem = secrets.bytes(&format!("{field}.ca"), &ca.secret)?;
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("tlsConfig.ca", &pem)? {
                roots.add(certificate).map_err(|e| TlsError::Pem { field: "tlsConfig.ca", problem: e.to_string() })?;
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Pem { field: "tlsConfig.ca", problem: e.to_string() })?
        }
        None => Arc::new(rustls_platform_verifier::Verifier::new(provider.clone())?),
    };
    let verifier = Arc::new(ScrapeVerifier { inner, server_name, insecure: config.insecure_skip_verify, provider: provider.clone() });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client_config = match (&config.cert, &config.key_secret) {
        (Some(cert), Some(key)) => {
            let chain = certificates("tlsConfig.cert", &secrets.bytes(&format!("{field}.cert"), &cert.secret)?)?;
            let key_pem = secrets.bytes(&format!("{field}.keySecret"), key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
                field: "tlsConfig.keySecret",
                problem: "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".to_owned(),
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(client_config)
}

fn certificates(field: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem { field, problem: "the PEM data cannot be read".to_owned() })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem { field, problem: "no PEM certificate found".to_owned() });
    }
    Ok(certificates)
}

/// Verifies as `inner` does, against `server_name` instead of the URL's host when set, or
/// accepts every certificate when `insecure` (Prometheus' `insecure_skip_verify`). Handshake
/// signatures are always checked, so the peer holds the key of the certificate it sent.
#[derive(Debug)]
struct ScrapeVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    server_name: Option<ServerName<'static>>,
    insecure: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ScrapeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.insecure {
            return Ok(ServerCertVerified::assertion());
        }
        let name = self.server_name.as_ref().unwrap_or(server_name);
        self.inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
