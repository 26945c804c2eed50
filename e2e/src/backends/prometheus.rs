//! Prometheus with its remote-write receiver enabled.

use anyhow::Result;

use super::{
    VectorSample, data_dir, http_client, parse_vector_response, path_str, send, wait_http_status,
};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};

/// A Prometheus server (Debian's 2.42) that accepts remote write on `/api/v1/write` and
/// scrapes nothing.
#[derive(Debug)]
pub struct Prometheus {
    process: ManagedProcess,
    port: u16,
    http: reqwest::Client,
    data_dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus and waits for `/-/ready`.
    pub async fn start() -> Result<Self> {
        let data_dir = data_dir("prometheus")?;
        let port = free_port()?;
        let config = data_dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nscrape_configs: []\n",
        )?;
        let mut process = ManagedProcess::start(
            ProcessSpec::new("prometheus", "prometheus")
                .arg(format!("--config.file={}", path_str(&config)))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    path_str(&data_dir.path().join("tsdb"))
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--log.level=warn")
                .log_path(data_dir.path().join("prometheus.log")),
        )?;
        let http = http_client()?;
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        wait_http_status("prometheus", &http, &ready, 200, &mut process).await?;
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

    /// The remote-write endpoint, `<base>/api/v1/write`.
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

    /// Evaluates a PromQL instant query now (`/api/v1/query`).
    pub async fn query(&self, expr: &str) -> Result<Vec<VectorSample>> {
        let url = format!("{}/api/v1/query", self.base_url());
        let body = send(self.http.get(url).query(&[("query", expr)])).await?;
        parse_vector_response(&body)
    }
}
