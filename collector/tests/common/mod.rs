//! The harness the collector's process-level tests share: a loopback scrape target that records
//! requests, the real collector binary in local mode, and polling helpers.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;

/// Scrape requests seen per target name, with the instant each arrived.
#[derive(Clone, Default)]
pub struct Requests(Arc<Mutex<HashMap<String, Vec<Instant>>>>);

impl Requests {
    pub fn count(&self, target: &str) -> usize {
        self.0.lock().unwrap().get(target).map_or(0, Vec::len)
    }
    pub fn last(&self, target: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(target).and_then(|times| times.last().copied())
    }
}

/// An HTTP server exposing `/metrics/{name}` in the Prometheus text format.
pub async fn start_targets() -> (SocketAddr, Requests) {
    let requests = Requests::default();
    let app = axum::Router::new()
        .route(
            "/metrics/{name}",
            get(|State(requests): State<Requests>, UrlPath(name): UrlPath<String>| async move {
                let count = {
                    let mut all = requests.0.lock().unwrap();
                    let times = all.entry(name.clone()).or_default();
                    times.push(Instant::now());
                    times.len()
                };
                format!("# TYPE demo_requests_total counter\ndemo_requests_total{{target=\"{name}\"}} {count}\n")
            }),
        )
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, requests)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The collector process; killed on drop, with its stderr printed if the test failed.
pub struct Collector {
    child: Child,
    stderr: PathBuf,
    metrics_url: String,
}

impl Collector {
    pub fn start(manifests: &Path, workdir: &Path) -> Self {
        let port = free_port();
        let stderr = workdir.join("collector.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_metricshard-collector"))
            .args(["--manifests", manifests.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, stderr, metrics_url: format!("http://127.0.0.1:{port}/metrics") }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.stderr).unwrap().read_to_string(&mut text).unwrap();
        text
    }

    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let client = metricshard_collector::build_http_client().ok()?;
        let body = client.get(&self.metrics_url).send().await.ok()?.text().await.ok()?;
        body.lines().find(|line| line.starts_with(line_prefix))?.rsplit(' ').next()?.parse().ok()
    }

    /// The sum of every sample whose line starts with `line_prefix` (all label combinations).
    pub async fn metric_sum(&self, line_prefix: &str) -> f64 {
        let client = metricshard_collector::build_http_client().unwrap();
        let body = client.get(&self.metrics_url).send().await.unwrap().text().await.unwrap();
        body.lines()
            .filter(|line| line.starts_with(line_prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- collector stderr ----\n{}", self.log());
        }
    }
}

/// Polls `condition` every 10 ms until it holds, failing after `timeout`; returns the time taken.
pub async fn within<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut condition: impl FnMut() -> F) -> Duration {
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn output_manifest(path: &Path) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: file, namespace: demo}}\nspec:\n  protocol:\n    file: {{path: {}}}\n  batch: {{maxSamples: 1000, flushInterval: 50ms}}\n",
        path.display()
    )
}

/// Writes a file atomically, as editors and ConfigMap volumes do.
pub fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp~");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

