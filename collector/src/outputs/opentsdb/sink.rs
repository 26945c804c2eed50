//! The OpenTSDB sink: one POST to `/api/put?details` per batch.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

use super::config::OpenTsdbConfig;
use super::encoder::encode_batch;
use super::error::{OpenTsdbError, PutDetails};
use crate::outputs::remote_write::sink::USER_AGENT_VALUE;
use crate::outputs::remote_write::{MAX_ERROR_BODY, truncate_utf8};
use crate::outputs::{Sink, WriteError, Written};
use crate::sample::Sample;

/// Writes batches to one OpenTSDB server.
///
/// Each [`Sink::write`] sends the batch as one JSON array to `/api/put?details`, so that a
/// refusal names each failed point. `Ok` only on a 2xx answer without failed points. No
/// answer, 5xx and 429 are retryable; a 400 (some points failed: OpenTSDB stored the others)
/// and any other status are permanent, with the per-point errors in the message.
#[derive(Debug)]
pub struct OpenTsdbSink {
    client: reqwest::Client,
    url: reqwest::Url,
    display_url: String,
    headers: HeaderMap,
    fallback_tag: (String, String),
    timeout: Duration,
}

impl OpenTsdbSink {
    /// A sink for the server in `config`, sending through `client`.
    pub fn new(config: OpenTsdbConfig, client: reqwest::Client) -> Result<Self, OpenTsdbError> {
        let config_error = |reason: String| OpenTsdbError::Config { reason };
        let mut url =
            reqwest::Url::parse(&config.url).map_err(|e| config_error(format!("url {:?}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(config_error(format!("url {:?}: must be an http(s) base URL", config.url)));
        }
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "put"]);
        }
        // `details` makes OpenTSDB answer with per-point errors instead of a bare status.
        url.set_query(Some("details"));
        let mut display = url.clone();
        let _ = display.set_password(None);
        let _ = display.set_username("");
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        Ok(Self {
            client,
            url,
            display_url: display.to_string(),
            headers,
            fallback_tag: config.fallback_tag,
            timeout: config.timeout,
        })
    }

    /// The put endpoint, without credentials.
    pub fn url(&self) -> &str {
        &self.display_url
    }

    /// Sends a batch; `Ok` carries how many samples JSON could not carry (NaN, stale markers,
    /// infinities) and were left out.
    async fn send(&self, batch: &[Sample]) -> Result<u64, OpenTsdbError> {
        let encoded = encode_batch(batch, (&self.fallback_tag.0, &self.fallback_tag.1));
        let left_out = encoded.dropped_non_finite as u64;
        if encoded.points == 0 {
            return Ok(left_out);
        }
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(encoded.body)
            .send()
            .await
            .map_err(|source| OpenTsdbError::Network { url: self.display_url.clone(), source })?;
        let status = response.status();
        // Read whole: a details answer lists every failed point and is useless cut short.
        let bytes = response.bytes().await.unwrap_or_default();
        let body = String::from_utf8_lossy(&bytes);
        let details = PutDetails::parse(&body);
        if status.is_success() {
            return match details {
                Some(details) if details.failed > 0 => Err(OpenTsdbError::PartialSuccess {
                    url: self.display_url.clone(),
                    status,
                    message: details.message(),
                }),
                _ => Ok(left_out),
            };
        }
        let message = match details {
            Some(details) if details.failed > 0 || !details.errors.is_empty() => details.message(),
            _ => format!("{} points sent: {}", encoded.points, truncate_utf8(&body, MAX_ERROR_BODY)),
        };
        Err(OpenTsdbError::Status { url: self.display_url.clone(), status, message })
    }
}

impl Sink for OpenTsdbSink {
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
        async move {
            let unrepresentable = self.send(batch).await.map_err(WriteError::from)?;
            Ok(Written { unrepresentable })
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
        // Nothing is held between writes.
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_api_put_with_details() {
        let sink =
            OpenTsdbSink::new(OpenTsdbConfig::new("http://tsdb:4242"), crate::build_http_client().unwrap()).unwrap();
        assert_eq!(sink.url(), "http://tsdb:4242/api/put?details");
        let sink =
            OpenTsdbSink::new(OpenTsdbConfig::new("http://gw/tsdb/"), crate::build_http_client().unwrap()).unwrap();
        assert_eq!(sink.url(), "http://gw/tsdb/api/put?details");
    }
}
