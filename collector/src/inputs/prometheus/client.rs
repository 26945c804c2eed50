//! The HTTP side of a scrape that depends on Secrets: the client (its own when `tlsConfig` is
//! set, the shared one otherwise) and the credentials sent with every request (`basicAuth` or
//! `authorization`).

use metricshard_crds::PrometheusSource;
use reqwest::header::HeaderValue;

use super::tls::{self, TlsError};
use crate::secrets::{SecretError, SecretResolver, SecretText};

/// Why the scrape client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A Secret or key it needs is missing.
    #[error("spec.source.prometheus.{0}")]
    Secret(#[from] SecretError),
    /// The TLS settings are unusable.
    #[error("spec.source.prometheus.{0}")]
    Tls(TlsError),
    /// The credentials cannot be sent in an HTTP header.
    #[error("spec.source.prometheus.authorization: the type and credentials do not form a valid HTTP header value")]
    InvalidHeader,
    /// The HTTP client could not be built.
    #[error("spec.source.prometheus.tlsConfig: building the HTTP client failed: {0}")]
    Build(String),
}

impl ClientError {
    /// Short static category: `secret` when a Secret or key is missing, `config` otherwise.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Secret(_) | Self::Tls(TlsError::Secret(_)) => "secret",
            _ => "config",
        }
    }
}

impl From<TlsError> for ClientError {
    fn from(error: TlsError) -> Self {
        match error {
            TlsError::Secret(secret) => Self::Secret(secret),
            other => Self::Tls(other),
        }
    }
}

/// What every scrape request carries.
#[derive(Debug, Clone)]
enum Credentials {
    None,
    Basic { username: String, password: SecretText },
    Header(HeaderValue),
}

/// The client and credentials of one Prometheus source.
#[derive(Debug, Clone)]
pub struct ScrapeClient {
    client: reqwest::Client,
    credentials: Credentials,
}

impl ScrapeClient {
    /// The client of `source`, its Secrets resolved through `secrets`; `shared` is used when
    /// the source has no TLS settings of its own.
    pub fn build(source: &PrometheusSource, secrets: &mut SecretResolver<'_>, shared: reqwest::Client) -> Result<Self, ClientError> {
        let credentials = if let Some(basic) = &source.basic_auth {
            Credentials::Basic {
                username: secrets.text("basicAuth.username", &basic.username)?,
                password: SecretText(secrets.text("basicAuth.password", &basic.password)?),
            }
        } else if let Some(authorization) = &source.authorization {
            let credentials = secrets.text("authorization.credentials", &authorization.credentials)?;
            let mut value = HeaderValue::try_from(format!("{} {}", authorization.scheme(), credentials.trim_end_matches('\n')))
                .map_err(|_| ClientError::InvalidHeader)?;
            value.set_sensitive(true);
            Credentials::Header(value)
        } else {
            Credentials::None
        };
        let client = match &source.tls_config {
            Some(config) => {
                let tls = tls::client_config("tlsConfig", config, secrets)?;
                crate::build_http_client_with_tls(tls).map_err(|e| ClientError::Build(e.to_string()))?
            }
            None => shared,
        };
        Ok(Self { client, credentials })
    }

    /// A GET of `url` with the credentials.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.get(url);
        match &self.credentials {
            Credentials::None => request,
            Credentials::Basic { username, password } => request.basic_auth(username, Some(&password.0)),
            Credentials::Header(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
        }
    }
}
