//! Single-node VictoriaMetrics.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Deserialize;

use super::{
    VectorSample, data_dir, http_client, parse_vector_response, path_str, send, wait_http_status,
};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};

/// A VictoriaMetrics server (Debian's 1.79): Prometheus remote write on `/api/v1/write`,
/// PromQL on `/api/v1/query`, raw samples on `/api/v1/export`.
#[derive(Debug)]
pub struct VictoriaMetrics {
    process: ManagedProcess,
    port: u16,
    http: reqwest::Client,
    data_dir: tempfile::TempDir,
}

/// One series of `/api/v1/export` (JSON lines).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExportedSeries {
    /// Labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// Sample values, in timestamp order.
    pub values: Vec<f64>,
    /// Sample timestamps, Unix milliseconds.
    pub timestamps: Vec<i64>,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics and waits for `/health`.
    pub async fn start() -> Result<Self> {
        let data_dir = data_dir("victoria-metrics")?;
        let port = free_port()?;
        let mut process = ManagedProcess::start(
            ProcessSpec::new("victoria-metrics", "victoria-metrics")
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!(
                    "-storageDataPath={}",
                    path_str(&data_dir.path().join("data"))
                ))
                // Tests write samples with any timestamps; keep them all.
                .arg("-retentionPeriod=100y")
                // Answer with the newest samples at once instead of hiding the last 30 s.
                .arg("-search.latencyOffset=0s")
                .arg("-search.disableCache")
                .arg("-loggerLevel=WARN")
                .log_path(data_dir.path().join("victoria-metrics.log")),
        )?;
        let http = http_client()?;
        let health = format!("http://127.0.0.1:{port}/health");
        wait_http_status("victoria-metrics", &http, &health, 200, &mut process).await?;
        Ok(Self {
            process,
            port,
            http,
            data_dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Prometheus remote-write endpoint, `<base>/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.base_url())
    }

    /// The server process (log, pid, signals).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Makes recently ingested samples searchable now (`/internal/force_flush`); without it
    /// they become visible within about a second.
    pub async fn force_flush(&self) -> Result<()> {
        send(
            self.http
                .get(format!("{}/internal/force_flush", self.base_url())),
        )
        .await?;
        Ok(())
    }

    /// Evaluates a PromQL/MetricsQL instant query now (`/api/v1/query`).
    pub async fn query(&self, expr: &str) -> Result<Vec<VectorSample>> {
        let url = format!("{}/api/v1/query", self.base_url());
        let body = send(self.http.get(url).query(&[("query", expr)])).await?;
        parse_vector_response(&body)
    }

    /// Every raw sample of the series matching `selector` (`/api/v1/export?match[]=...`),
    /// over all time.
    pub async fn export(&self, selector: &str) -> Result<Vec<ExportedSeries>> {
        let url = format!("{}/api/v1/export", self.base_url());
        let body = send(
            self.http
                .get(url)
                .query(&[("match[]", selector), ("start", "0")]),
        )
        .await?;
        let text = String::from_utf8(body).context("export is not UTF-8")?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("parsing export line {line}"))
            })
            .collect()
    }
}
