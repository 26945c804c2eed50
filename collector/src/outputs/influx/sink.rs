//! The Influx sink: one POST of line protocol per batch.

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};

use super::config::{InfluxApi, InfluxConfig, InfluxCredentials};
use super::error::{InfluxError, status_message};
use super::line::encode_batch;
use crate::outputs::remote_write::read_error_body;
use crate::outputs::remote_write::sink::USER_AGENT_VALUE;
use crate::outputs::{Sink, WriteError, Written};
use crate::sample::Sample;

/// Writes batches to one InfluxDB 1.x or 2.x server (or anything speaking its write API).
///
/// Each [`Sink::write`] encodes the batch (leaving out, and reporting
/// in [`crate::outputs::Written`], what line protocol cannot carry) and sends it in one POST;
/// `Ok` only on a 2xx answer (1.x and 2.x answer 204). No answer, 5xx and 429 are retryable;
/// any other status is permanent, including 1.x's 400 for a partial write, where the server
/// stored the other points and the message names the refused ones.
#[derive(Debug)]
pub struct InfluxSink {
    client: reqwest::Client,
    url: reqwest::Url,
    display_url: String,
    headers: HeaderMap,
    credentials: Option<InfluxCredentials>,
    precision: super::line::Precision,
    timeout: Duration,
}

impl InfluxSink {
    /// A sink for the server in `config`, sending through `client` (share one client: it pools
    /// connections).
    pub fn new(config: InfluxConfig, client: reqwest::Client) -> Result<Self, InfluxError> {
        let config_error = |reason: String| InfluxError::Config { reason };
        let mut url =
            reqwest::Url::parse(&config.url).map_err(|e| config_error(format!("url {:?}: {e}", config.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(config_error(format!("url {:?}: must be an http(s) base URL", config.url)));
        }
        url.set_query(None);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let credentials = match &config.api {
            InfluxApi::V1 { database, retention_policy, credentials } => {
                append_path(&mut url, &["write"]);
                let mut query = url.query_pairs_mut();
                query.append_pair("db", database);
                if let Some(rp) = retention_policy {
                    query.append_pair("rp", rp);
                }
                query.append_pair("precision", config.precision.v1_param());
                drop(query);
                credentials.clone()
            }
            InfluxApi::V2 { org, bucket, token } => {
                append_path(&mut url, &["api", "v2", "write"]);
                url.query_pairs_mut()
                    .append_pair("org", org)
                    .append_pair("bucket", bucket)
                    .append_pair("precision", config.precision.v2_param());
                let mut value = HeaderValue::try_from(format!("Token {}", token.0))
                    .map_err(|_| config_error("the token is not a valid HTTP header value".to_owned()))?;
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
                None
            }
        };
        let mut display = url.clone();
        let _ = display.set_password(None);
        let _ = display.set_username("");
        Ok(Self {
            client,
            url,
            display_url: display.to_string(),
            headers,
            credentials,
            precision: config.precision,
            timeout: config.timeout,
        })
    }

    /// The write endpoint with its query, without credentials.
    pub fn url(&self) -> &str {
        &self.display_url
    }

    /// Sends a batch; `Ok` carries how many samples line protocol could not carry (NaN, stale
    /// markers, infinities, newlines in names; see [`super::line`]) and were left out.
    async fn send(&self, batch: &[Sample]) -> Result<u64, InfluxError> {
        let encoded = encode_batch(batch, self.precision);
        let left_out = encoded.dropped.total() as u64;
        if encoded.points == 0 {
            return Ok(left_out);
        }
        let mut request =
            self.client.post(self.url.clone()).headers(self.headers.clone()).timeout(self.timeout).body(encoded.body);
        if let Some(credentials) = &self.credentials {
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let response =
            request.send().await.map_err(|source| InfluxError::Network { url: self.display_url.clone(), source })?;
        let status = response.status();
        if status.is_success() {
            return Ok(left_out);
        }
        let body = read_error_body(response).await;
        Err(InfluxError::Status {
            url: self.display_url.clone(),
            status,
            message: status_message(&body, encoded.points),
        })
    }
}

/// Appends path segments to a base URL, keeping any prefix it has (`/influx` + `/write`).
fn append_path(url: &mut reqwest::Url, segments: &[&str]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

impl Sink for InfluxSink {
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
    use crate::outputs::influx::config::InfluxToken;
    use crate::outputs::influx::line::Precision;

    fn sink(url: &str, api: InfluxApi, precision: Precision) -> InfluxSink {
        let mut config = InfluxConfig::new(url, api);
        config.precision = precision;
        InfluxSink::new(config, crate::build_http_client().unwrap()).unwrap()
    }

    #[test]
    fn v1_url_carries_database_retention_policy_and_precision() {
        let api = InfluxApi::V1 {
            database: "my db".into(),
            retention_policy: Some("one_week".into()),
            credentials: Some(InfluxCredentials { username: "u".into(), password: "p".into() }),
        };
        let sink = sink("http://influx:8086", api, Precision::Microseconds);
        assert_eq!(sink.url(), "http://influx:8086/write?db=my+db&rp=one_week&precision=u");
    }

    #[test]
    fn v2_url_keeps_a_proxy_prefix() {
        let api = InfluxApi::V2 { org: "o".into(), bucket: "b/c".into(), token: InfluxToken("t".into()) };
        let sink = sink("https://gw.example/influx/", api, Precision::Nanoseconds);
        assert_eq!(sink.url(), "https://gw.example/influx/api/v2/write?org=o&bucket=b%2Fc&precision=ns");
        assert_eq!(sink.headers.get(AUTHORIZATION).unwrap(), "Token t");
    }

    #[test]
    fn rejects_non_http_urls() {
        let api = InfluxApi::V1 { database: "d".into(), retention_policy: None, credentials: None };
        let error =
            InfluxSink::new(InfluxConfig::new("unix:/tmp/x", api), crate::build_http_client().unwrap()).unwrap_err();
        assert_eq!(error.category(), "config");
    }
}
