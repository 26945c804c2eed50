//! InfluxDB 1.x.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use super::{data_dir, http_client, path_str, send, wait_http_status};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};

/// An InfluxDB 1.x server (Debian's 1.6): line protocol on `/write?db=<db>`, InfluxQL on
/// `/query`.
#[derive(Debug)]
pub struct InfluxDb {
    process: ManagedProcess,
    port: u16,
    http: reqwest::Client,
    data_dir: tempfile::TempDir,
}

/// One series of an InfluxQL result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InfluxSeries {
    /// Measurement name.
    pub name: String,
    /// Tags, for `GROUP BY` queries.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Column names (`time` first).
    pub columns: Vec<String>,
    /// Rows, one value per column.
    #[serde(default)]
    pub values: Vec<Vec<serde_json::Value>>,
}

impl InfluxSeries {
    /// The values of column `name`, one per row.
    pub fn column(&self, name: &str) -> Option<Vec<&serde_json::Value>> {
        let index = self.columns.iter().position(|c| c == name)?;
        Some(
            self.values
                .iter()
                .filter_map(|row| row.get(index))
                .collect(),
        )
    }
}

#[derive(Deserialize)]
struct QueryResponse {
    #[serde(default)]
    results: Vec<StatementResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct StatementResult {
    #[serde(default)]
    series: Vec<InfluxSeries>,
    #[serde(default)]
    error: Option<String>,
}

impl InfluxDb {
    /// Starts InfluxDB and waits for `/ping`.
    pub async fn start() -> Result<Self> {
        let data_dir = data_dir("influxdb")?;
        let port = free_port()?;
        // The RPC service (backup/restore) listens too; give it a free port of its own.
        let rpc_port = free_port()?;
        let dir = data_dir.path();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta}"

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false
"#,
            meta = path_str(&dir.join("meta")),
            data = path_str(&dir.join("data")),
            wal = path_str(&dir.join("wal")),
        );
        let config_path = dir.join("influxdb.conf");
        std::fs::write(&config_path, config)?;
        let mut process = ManagedProcess::start(
            ProcessSpec::new("influxd", "influxd")
                .arg("run")
                .arg("-config")
                .arg(path_str(&config_path))
                .log_path(dir.join("influxd.log")),
        )?;
        let http = http_client()?;
        let ping = format!("http://127.0.0.1:{port}/ping");
        wait_http_status("influxd", &http, &ping, 204, &mut process).await?;
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

    /// The line-protocol write endpoint of database `db`.
    pub fn write_url(&self, db: &str) -> String {
        format!("{}/write?db={db}", self.base_url())
    }

    /// The server process (log, pid, signals).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// `CREATE DATABASE "<db>"`.
    pub async fn create_database(&self, db: &str) -> Result<()> {
        self.statement(None, &format!("CREATE DATABASE \"{db}\""))
            .await?;
        Ok(())
    }

    /// Runs an InfluxQL query against `db` and returns the series of its (single) statement.
    pub async fn query(&self, db: &str, influxql: &str) -> Result<Vec<InfluxSeries>> {
        self.statement(Some(db), influxql).await
    }

    async fn statement(&self, db: Option<&str>, influxql: &str) -> Result<Vec<InfluxSeries>> {
        let mut form = vec![("q", influxql), ("epoch", "ms")];
        if let Some(db) = db {
            form.push(("db", db));
        }
        let url = format!("{}/query", self.base_url());
        // POST: InfluxDB 1.x refuses writing statements (CREATE ...) over GET.
        let body = send(self.http.post(url).query(&form)).await?;
        let response: QueryResponse = serde_json::from_slice(&body).with_context(|| {
            format!("parsing influx response {}", String::from_utf8_lossy(&body))
        })?;
        if let Some(error) = response.error {
            bail!("influx query {influxql:?} failed: {error}");
        }
        let mut series = Vec::new();
        for result in response.results {
            if let Some(error) = result.error {
                bail!("influx query {influxql:?} failed: {error}");
            }
            series.extend(result.series);
        }
        Ok(series)
    }
}
