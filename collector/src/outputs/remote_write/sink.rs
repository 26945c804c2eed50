//! The remote-write sink: one HTTP POST per batch.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::RemoteWriteError;
use super::config::{BasicAuth, RemoteWriteConfig};
use super::encoder::encode_batch;
use super::error::read_error_body;
use crate::outputs::{Sink, WriteError, Written};
use crate::sample::Sample;

/// The protocol version header value of remote write 1.0.
pub const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// The `User-Agent` of every request: `metricshard/<crate version>`.
pub const USER_AGENT_VALUE: &str = concat!("metricshard/", env!("CARGO_PKG_VERSION"));

/// Writes batches to one remote-write receiver.
///
/// Each [`Sink::write`] is exactly one POST; it returns `Ok` only on a 2xx answer. Failures are
/// classified for the pipeline: no answer, 5xx and 429 are retryable, any other status is
/// permanent (the receiver saw the data and refused it).
#[derive(Debug)]
pub struct RemoteWriteSink {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without credentials, for messages.
    display_url: String,
    headers: HeaderMap,
    basic_auth: Option<BasicAuth>,
    bearer_token: Option<String>,
    timeout: Duration,
}

impl RemoteWriteSink {
    /// A sink for the receiver in `config`, sending through `client` (share one client across
    /// sinks: it pools connections).
    pub fn new(config: RemoteWriteConfig, client: reqwest::Client) -> Result<Self, RemoteWriteError> {
        let config_error = |reason: String| RemoteWriteError::Config { reason };
        let url = reqwest::Url::parse(&config.url).map_err(|e| config_error(format!("url {:?}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(format!("url {:?}: scheme must be http or https", config.url)));
        }
        let mut display = url.clone();
        // Neither can fail for http(s) URLs, which always have a host.
        let _ = display.set_password(None);
        let _ = display.set_username("");

        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let name =
                HeaderName::try_from(name.as_str()).map_err(|e| config_error(format!("header name {name:?}: {e}")))?;
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|e| config_error(format!("value of header {name}: {e}")))?;
            // Extra headers often carry tenant ids or tokens; keep them out of debug output.
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        // Inserted last so configuration cannot override what the protocol requires.
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static(REMOTE_WRITE_VERSION),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));

        Ok(Self {
            client,
            url,
            display_url: display.to_string(),
            headers,
            basic_auth: config.basic_auth,
            bearer_token: config.bearer_token,
            timeout: config.timeout,
        })
    }

    /// The endpoint, without credentials.
    pub fn url(&self) -> &str {
        &self.display_url
    }

    async fn send(&self, batch: &[Sample]) -> Result<(), RemoteWriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        let body = encode_batch(batch)?;
        let mut request =
            self.client.post(self.url.clone()).headers(self.headers.clone()).timeout(self.timeout).body(body);
        if let Some(auth) = &self.basic_auth {
            request = request.basic_auth(&auth.username, Some(&auth.password));
        }
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|source| RemoteWriteError::Network { url: self.display_url.clone(), source })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_error_body(response).await;
        Err(RemoteWriteError::Status { url: self.display_url.clone(), status, body })
    }
}

impl Sink for RemoteWriteSink {
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
        async move { self.send(batch).await.map(|()| Written::default()).map_err(WriteError::from) }.boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
        // Nothing is held between writes: a write returns only once the receiver answered.
        async { Ok(()) }.boxed()
    }
}
