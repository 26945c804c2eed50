//! Issue 5 item 5: "a backend outage of several minutes is fully delivered after recovery".
//!
//! The real collector (local mode) scrapes sequence-numbered samples every 500 ms into two
//! outputs, one buffered in a real Redis and one in memory (limit far above what the outage
//! queues), both writing to one real VictoriaMetrics. VictoriaMetrics is stopped for three
//! minutes and restarted on the same port and data directory; afterwards every sequence number
//! of every series of both outputs is read back through VictoriaMetrics' export API. Duplicates
//! are allowed (at least once) and printed.
//!
//! This test runs in the normal suite and takes about four minutes: its name says so.
//! `METRICSHARD_OUTAGE_SECS` shortens the outage for a quick local run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sequence.rs"]
mod sequence;

use std::time::{Duration, Instant};

use common::{Collector, within, write_atomically};
use metricshard_e2e::backends::{Redis, VictoriaMetrics};
use sequence::{input_manifest, read_sequences, start_sequence_target};

const SERIES: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(60);

fn outage() -> Duration {
    let seconds = std::env::var("METRICSHARD_OUTAGE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    Duration::from_secs(seconds)
}

fn outputs(backend: &VictoriaMetrics, redis: &Redis) -> String {
    let url = backend.remote_write_url();
    let redis = redis.url();
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: via-redis, namespace: demo}}\n\
         spec:\n  protocol:\n    remoteWrite: {{url: \"{url}\"}}\n  batch: {{maxSamples: 1000, flushInterval: 200ms}}\n\
         \x20 buffer:\n    redis: {{url: \"{redis}\", maxSamples: 1000000, leaseDuration: 2s}}\n---\n\
         apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: in-memory, namespace: demo}}\n\
         spec:\n  protocol:\n    remoteWrite: {{url: \"{url}\"}}\n  batch: {{maxSamples: 1000, flushInterval: 200ms}}\n\
         \x20 buffer:\n    memory: {{maxSamples: 1000000}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_three_minute_backend_outage_is_fully_delivered_after_recovery() {
    let (backend, redis) = tokio::join!(VictoriaMetrics::start(), Redis::start());
    let (mut backend, redis) = (backend.unwrap(), redis.unwrap());
    let (target, served) = start_sequence_target(SERIES).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_atomically(&manifests.join("outputs.yaml"), &outputs(&backend, &redis));
    write_atomically(
        &manifests.join("inputs.yaml"),
        &format!(
            "{}---\n{}",
            input_manifest("via-redis", target, "500ms", "400ms", "via-redis"),
            input_manifest("in-memory", target, "500ms", "400ms", "in-memory")
        ),
    );
    let mut collector = Collector::start(&manifests, work.path());
    within("both outputs deliver before the outage", TIMEOUT, || async {
        read_sequences(&backend, "via-redis").await.series() == SERIES && read_sequences(&backend, "in-memory").await.series() == SERIES
    })
    .await;

    // The outage. SIGTERM rather than SIGKILL: VictoriaMetrics keeps its last second of
    // acknowledged samples in memory, and a SIGKILL would lose those on the backend's side,
    // which no collector can prevent.
    let before = (served.of("via-redis"), served.of("in-memory"));
    backend.process().terminate(Duration::from_secs(10)).unwrap();
    let down = Instant::now();
    tokio::time::sleep(outage()).await;
    let during = (served.of("via-redis") - before.0, served.of("in-memory") - before.1);
    let buffered = collector.metric("metricshard_output_buffered_samples{output=\"MetricOutput/demo/in-memory\"}").await;
    assert!(buffered.unwrap_or(0.0) > 0.0, "the memory output should hold the outage's samples, holds {buffered:?}");
    let restarted = (served.of("via-redis"), served.of("in-memory"));
    backend.process().restart().unwrap();
    let http = metricshard_e2e::http_client(Duration::from_secs(2)).unwrap();
    let health = format!("{}/health", backend.base_url());
    within("VictoriaMetrics back", TIMEOUT, || {
        let request = http.get(&health);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let outage_length = down.elapsed();

    // Everything queued is delivered: the retry backoff is capped at 30 s.
    within("both outputs drained", Duration::from_secs(120), || async {
        collector.metric("metricshard_output_buffered_samples{output=\"MetricOutput/demo/in-memory\"}").await == Some(0.0)
            && collector.metric("metricshard_output_buffered_samples{output=\"MetricOutput/demo/via-redis\"}").await == Some(0.0)
    })
    .await;
    // A scrape that timed out on the collector's side was served (numbered) but never gathered:
    // such gaps are allowed exactly as often as the collector counted failed gathers.
    let mut failed_gathers = Vec::new();
    for input in ["via-redis", "in-memory"] {
        failed_gathers.push(collector.metric_sum(&format!("metricshard_input_gather_errors_total{{input=\"demo/{input}\"")).await as usize);
    }
    assert!(collector.terminate().success());

    for ((input, at_restart, during), failed) in
        [("via-redis", restarted.0, during.0), ("in-memory", restarted.1, during.1)].into_iter().zip(failed_gathers)
    {
        let report = read_sequences(&backend, input).await;
        let gaps = report.gaps();
        let missing = report.missing_scrapes();
        assert_eq!(gaps.len(), missing.len() * SERIES, "{input}: samples missing from only some series: {gaps:?}");
        assert!(
            missing.len() <= failed,
            "{input}: scrapes {missing:?} missing, only {failed} failed gathers to explain them"
        );
        assert_eq!(report.series(), SERIES);
        assert!(report.lowest_highest() >= at_restart, "{input}: holds up to {} of {at_restart}", report.lowest_highest());
        eprintln!(
            "{input}: outage {outage_length:?}, {during} scrapes during it; scrapes 1..={} × {SERIES} series delivered \
             except {} that failed on the collector's side ({failed} failed gathers counted), {} duplicates",
            report.lowest_highest(),
            missing.len(),
            report.duplicates
        );
    }
}
