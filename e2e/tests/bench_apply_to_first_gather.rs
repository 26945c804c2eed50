//! Benchmark, not a test (ignored by default; it asserts nothing about speed): how long from
//! creating a MetricInput to its first scrape at the target, with the chart's operator and three
//! collectors running on the test bed.
//!
//! ```text
//! cargo build -p metricshard-collector -p metricshard-operator --bins
//! cargo test -p metricshard-e2e --test bench_apply_to_first_gather -- --ignored --nocapture
//! ```
//!
//! What is measured: the instant before the create request is sent, to the instant the loopback
//! target receives the input's first scrape (the path is unique per input). That covers the
//! operator's watch, its plan and label write, the collector's watch, its apply, and the wait for
//! the first phase-aligned tick, which by design adds up to one interval: the inputs use 100 ms
//! so that the phase adds at most 100 ms (the figures say how much of the latency that is).
//! Inputs are created one at a time, and each is deleted once its first scrape arrived, so each
//! measures the quiet path, not a burst or a machine busy with the earlier inputs' scrapes.
//! `METRICSHARD_BENCH_INPUTS` sets how many (default 100).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use kube::api::PostParams;
use metricshard_e2e::release::{
    file_output, metric_inputs, metric_outputs, prometheus_input, wait_no_metric_inputs, wait_operator_leads,
};
use metricshard_e2e::{ChartPodProcess, ChartRelease, ScrapeTarget, TestCluster, TestNamespace, wait_for};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn apply_to_first_gather_latency() {
    let count: usize = std::env::var("METRICSHARD_BENCH_INPUTS").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let release =
        ChartRelease::install(cluster, &admin, "firstgather", &["collector.replicas=3", "operator.replicas=1"]).await.unwrap();
    wait_no_metric_inputs(&admin, TIMEOUT).await.unwrap();
    let team = TestNamespace::new(&admin, "firstgather").await.unwrap();
    let target = ScrapeTarget::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    metric_outputs(&admin, team.name())
        .create(&PostParams::default(), &file_output("file", &work.path().join("samples.prom")).unwrap())
        .await
        .unwrap();
    let mut processes = Vec::new();
    for ordinal in 0..3 {
        processes.push(ChartPodProcess::start(cluster, &admin, &release.collector_pod(ordinal).await.unwrap()).await.unwrap());
    }
    let operator = ChartPodProcess::start(cluster, &admin, &release.operator_pods(1).await.unwrap().remove(0)).await.unwrap();
    wait_operator_leads(&operator, 3, TIMEOUT).await.unwrap();

    let inputs = metric_inputs(&admin, team.name());
    let mut firsts = Vec::new();
    for index in 0..count {
        let name = format!("bench-{index:03}");
        let path = format!("/metrics/{name}");
        let input = prometheus_input(&name, target.address(), &path, "100ms", json!([{ "name": "file" }])).unwrap();
        let at = Instant::now();
        inputs.create(&PostParams::default(), &input).await.unwrap();
        // The target's own timestamp is the measurement; polling only waits for it.
        let first = wait_for(&format!("{name}'s first scrape"), TIMEOUT, || async { target.first_at_or_after(&path, at) })
            .await
            .unwrap();
        firsts.push(first - at);
        inputs.delete(&name, &Default::default()).await.unwrap();
    }
    let mut sorted = firsts.clone();
    sorted.sort();
    eprintln!(
        "apply → first scrape over {count} inputs (interval 100 ms, 3 collectors): p50 {:.0?}, p90 {:.0?}, p99 {:.0?}, max {:.0?}, min {:.0?}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 90.0),
        percentile(&sorted, 99.0),
        sorted[sorted.len() - 1],
        sorted[0],
    );
    drop(processes);
    drop(operator);
    release.uninstall().await.unwrap();
}
