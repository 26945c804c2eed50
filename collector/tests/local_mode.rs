//! Local mode end to end: the real collector binary runs a manifest directory against real HTTP
//! targets on loopback, and follows files being added, edited, broken and removed.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Collector, output_manifest, start_targets, within, write_atomically};

fn input_manifest(name: &str, target: SocketAddr, interval: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata:
  name: {name}
  namespace: demo
spec:
  interval: {interval}
  timeout: 100ms
  source:
    prometheus:
      staticTargets: ["{target}"]
      metricsPath: /metrics/{name}
  labels:
    source: {name}{extra}
  outputs:
    - name: file
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_follow_files_being_added_edited_and_removed() {
    let (target, requests) = start_targets().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let output_file = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&output_file));
    write_atomically(&manifests.join("alpha.yaml"), &input_manifest("alpha", target, "200ms", ""));
    let collector = Collector::start(&manifests, work.path());

    within("alpha is scraped", Duration::from_secs(10), || async { requests.count("alpha") >= 2 }).await;
    within("alpha's samples reach the file", Duration::from_secs(5), || async {
        std::fs::read_to_string(&output_file).unwrap_or_default().contains("demo_requests_total{instance=")
    })
    .await;
    let lines = std::fs::read_to_string(&output_file).unwrap();
    let line = lines.lines().find(|l| l.starts_with("demo_requests_total")).unwrap();
    assert!(line.contains(&format!("instance=\"{target}\"")) && line.contains("job=\"demo/alpha\"") && line.contains("source=\"alpha\""), "{line}");

    // Added: a new file starts its task within a second.
    write_atomically(&manifests.join("beta.yaml"), &input_manifest("beta", target, "200ms", ""));
    let took = within("beta starts", Duration::from_secs(1), || async { requests.count("beta") >= 1 }).await;
    eprintln!("beta started {took:?} after its file appeared");

    // Edited: beta restarts with its new spec; alpha is not restarted.
    let alpha_starts = "metricshard_input_task_starts_total{input=\"demo/alpha\"}";
    let beta_starts = "metricshard_input_task_starts_total{input=\"demo/beta\"}";
    assert_eq!(collector.metric(alpha_starts).await, Some(1.0));
    write_atomically(&manifests.join("beta.yaml"), &input_manifest("beta", target, "200ms", "\n    edited: \"yes\""));
    within("beta restarts with its new labels", Duration::from_secs(1), || async { collector.metric(beta_starts).await == Some(2.0) }).await;
    within("edited samples reach the file", Duration::from_secs(2), || async {
        std::fs::read_to_string(&output_file).unwrap_or_default().contains("edited=\"yes\"")
    })
    .await;
    assert_eq!(collector.metric(alpha_starts).await, Some(1.0), "editing beta restarted alpha");

    // A change that leaves the spec alone (a comment) restarts nothing.
    let text = std::fs::read_to_string(manifests.join("beta.yaml")).unwrap();
    write_atomically(&manifests.join("beta.yaml"), &format!("# a comment\n{text}"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(collector.metric(beta_starts).await, Some(2.0), "a comment restarted beta");

    // Removed: beta stops within a second, alpha goes on.
    std::fs::remove_file(manifests.join("beta.yaml")).unwrap();
    let removed_at = Instant::now();
    within("beta stops", Duration::from_secs(1), || async { collector.metric(beta_starts).await.is_none() }).await;
    let before = requests.count("beta");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(requests.count("beta"), before, "beta was still scraped after its task stopped");
    assert!(requests.last("beta").unwrap() < removed_at + Duration::from_secs(1));
    let alpha_before = requests.count("alpha");
    within("alpha keeps going", Duration::from_secs(2), || async { requests.count("alpha") >= alpha_before + 2 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_reported_and_the_other_tasks_keep_running() {
    let (target, requests) = start_targets().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&work.path().join("samples.prom")));
    write_atomically(&manifests.join("good.yaml"), &input_manifest("good", target, "200ms", ""));
    write_atomically(&manifests.join("edited.yaml"), &input_manifest("edited", target, "200ms", ""));
    let collector = Collector::start(&manifests, work.path());
    within("both scraped", Duration::from_secs(10), || async { requests.count("good") >= 1 && requests.count("edited") >= 1 }).await;

    // A new file with a timeout longer than its interval, behind a valid document.
    let bad = format!("{}---\n{}", output_manifest(&work.path().join("other.prom")).replace("name: file", "name: other"), input_manifest("broken", target, "200ms", "").replace("timeout: 100ms", "timeout: 5s"));
    write_atomically(&manifests.join("broken.yaml"), &bad);
    // An edit that breaks a running input: its last valid version keeps running.
    write_atomically(&manifests.join("edited.yaml"), &input_manifest("edited", target, "soon", ""));

    let log = within("the errors are logged with file, document and field path", Duration::from_secs(2), || async {
        let log = collector.log();
        log.contains("broken.yaml: document 2 (MetricInput demo/broken): spec.timeout: spec.timeout must not exceed spec.interval")
            && log.contains("edited.yaml: document 1 (MetricInput demo/edited): spec.interval: \"soon\" should match")
    })
    .await;
    eprintln!("errors reported within {log:?}");
    assert_eq!(collector.metric("metricshard_manifest_invalid_documents").await, Some(2.0));
    assert_eq!(requests.count("broken"), 0, "an invalid input was started");

    let (good, edited) = (requests.count("good"), requests.count("edited"));
    within("the good and the last valid edited input keep being scraped", Duration::from_secs(2), || async {
        requests.count("good") >= good + 3 && requests.count("edited") >= edited + 3
    })
    .await;
    assert_eq!(collector.metric("metricshard_input_task_starts_total{input=\"demo/edited\"}").await, Some(1.0));

    // Fixing the file starts the input.
    write_atomically(&manifests.join("broken.yaml"), &input_manifest("broken", target, "200ms", ""));
    within("the fixed input starts", Duration::from_secs(1), || async { requests.count("broken") >= 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_tasks_and_flushes_outputs() {
    let (target, requests) = start_targets().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let output_file = work.path().join("samples.prom");
    // An hour-long flush interval and a huge batch: only the shutdown flush can write the file.
    let output = output_manifest(&output_file).replace("maxSamples: 1000, flushInterval: 50ms", "maxSamples: 1000000, flushInterval: 1h");
    write_atomically(&manifests.join("output.yaml"), &output);
    write_atomically(&manifests.join("alpha.yaml"), &input_manifest("alpha", target, "100ms", ""));
    let mut collector = Collector::start(&manifests, work.path());
    within("scraped a few times", Duration::from_secs(10), || async { requests.count("alpha") >= 3 }).await;
    assert!(std::fs::read_to_string(&output_file).unwrap_or_default().is_empty());
    let status = collector.terminate();
    assert!(status.success(), "collector exited with {status}");
    let scrapes = requests.count("alpha");
    let written = std::fs::read_to_string(&output_file).unwrap();
    let counters: Vec<&str> = written.lines().filter(|l| l.starts_with("demo_requests_total")).collect();
    // Every scrape that completed before the signal was flushed.
    assert!(counters.len() >= scrapes - 1 && counters.len() <= scrapes, "{} samples for {scrapes} scrapes", counters.len());
}
