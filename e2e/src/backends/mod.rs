//! Real metric backends and Redis, from Debian's packages, on free loopback ports.
//!
//! Each backend gets its own data directory (a temp dir under the run directory, removed on
//! drop), waits for its readiness endpoint before `start` returns, and offers a small typed
//! query helper so tests read samples back through the backend's own query API. Create them
//! inside the test that uses them (their HTTP clients live on the test's tokio runtime).

mod influxdb;
mod prometheus;
mod redis;
mod victoria_metrics;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

pub use influxdb::{InfluxDb, InfluxSeries};
pub use prometheus::Prometheus;
pub use redis::{Redis, RespValue};
pub use victoria_metrics::{ExportedSeries, VictoriaMetrics};

use crate::process::ManagedProcess;
use crate::rundir::run_dir;
use crate::wait::{Outcome, wait_for};

/// How long a backend may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One element of an instant-vector result of a Prometheus-compatible `/api/v1/query`.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    /// The series' labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// Evaluation timestamp, Unix seconds.
    pub timestamp: f64,
    /// Sample value.
    pub value: f64,
}

impl VectorSample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.metric.get(name).map(String::as_str)
    }
}

#[derive(Deserialize)]
struct PromResponse {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct PromVectorElement {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Parses an instant-vector response of `/api/v1/query` (Prometheus and VictoriaMetrics).
pub(crate) fn parse_vector_response(body: &[u8]) -> Result<Vec<VectorSample>> {
    let response: PromResponse = serde_json::from_slice(body)
        .with_context(|| format!("parsing query response: {}", String::from_utf8_lossy(body)))?;
    if response.status != "success" {
        bail!(
            "query failed: {} {}",
            response.error_type.unwrap_or_default(),
            response.error.unwrap_or_default()
        );
    }
    let data = response.data.context("query response has no data")?;
    if data.result_type != "vector" {
        bail!("expected an instant vector, got {}", data.result_type);
    }
    let elements: Vec<PromVectorElement> = serde_json::from_value(data.result)?;
    elements
        .into_iter()
        .map(|e| {
            let value = parse_prom_float(&e.value.1)?;
            Ok(VectorSample {
                metric: e.metric,
                timestamp: e.value.0,
                value,
            })
        })
        .collect()
}

/// Parses a sample value as the Prometheus API writes it (`"1.5"`, `"NaN"`, `"+Inf"`).
fn parse_prom_float(text: &str) -> Result<f64> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse()
            .with_context(|| format!("bad sample value {text:?}")),
    }
}

/// A data directory under the run directory, removed when dropped.
pub(crate) fn data_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let parent = run_dir()?.join("backends");
    std::fs::create_dir_all(&parent)?;
    tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a data dir in {}", parent.display()))
}

/// Waits until `GET url` answers with `expected` status, failing at once (with its log) if the
/// process exits.
pub(crate) async fn wait_http_status(
    what: &str,
    http: &reqwest::Client,
    url: &str,
    expected: u16,
    process: &mut ManagedProcess,
) -> Result<()> {
    wait_for(
        &format!("{what} to answer {expected} on {url}"),
        READY_TIMEOUT,
        || {
            let running = process.ensure_running();
            let request = http.get(url).send();
            async move {
                running?;
                let response = request.await?;
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                anyhow::Ok(
                    Outcome::ready_if(status == expected, format!("{status} {body}")).map_ready(),
                )
            }
        },
    )
    .await
}

/// An HTTP client for talking to a backend.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    crate::http_client(Duration::from_secs(30))
}

/// Sends `request` and returns the body, failing with the body on a non-2xx status.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<Vec<u8>> {
    let response = request.send().await?;
    let status = response.status();
    let url = response.url().clone();
    let body = response.bytes().await?.to_vec();
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Path as a `String` for command lines and config files.
pub(crate) fn path_str(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vector_responses() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"a"},"value":[1700000000.5,"1"]},
            {"metric":{"__name__":"up","job":"b"},"value":[1700000000.5,"+Inf"]}]}}"#;
        let samples = parse_vector_response(body).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label("job"), Some("a"));
        assert_eq!(samples[0].value, 1.0);
        assert!(samples[1].value.is_infinite());
    }

    #[test]
    fn query_errors_are_errors() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let err = parse_vector_response(body).unwrap_err().to_string();
        assert!(err.contains("parse error"), "{err}");
    }
}
