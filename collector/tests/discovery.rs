//! File and HTTP service discovery end to end: the real collector binary in local mode scrapes
//! targets listed in SD files in a temporary directory and served by a real HTTP SD endpoint on
//! loopback, and follows targets being added, removed and the SD document breaking.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use common::{Collector, Requests, output_manifest, start_targets, within, write_atomically};

/// What the HTTP SD endpoint answers: content type and body.
#[derive(Clone)]
struct SdAnswer(Arc<Mutex<(&'static str, String)>>);

/// An HTTP SD endpoint at `/sd` answering whatever `SdAnswer` holds.
async fn start_sd(answer: SdAnswer) -> SocketAddr {
    let app = axum::Router::new()
        .route(
            "/sd",
            get(|State(answer): State<SdAnswer>| async move {
                let (content_type, body) = answer.0.lock().unwrap().clone();
                ([(axum::http::header::CONTENT_TYPE, content_type)], body)
            }),
        )
        .with_state(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// Asserts that `target` is no longer scraped: its count stays put for several intervals.
async fn stops_being_scraped(requests: &Requests, target: &str) {
    // Let discovery see the change (watch or 200 ms refresh) and a tick already under way
    // finish, then watch a few more intervals.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = requests.count(target);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(requests.count(target), before, "{target} is still scraped");
}

/// A target group whose single target scrapes `/metrics/{name}` on `address`.
fn group(address: SocketAddr, name: &str) -> String {
    format!(r#"{{"targets": ["{address}"], "labels": {{"__metrics_path__": "/metrics/{name}", "name": "{name}"}}}}"#)
}

fn groups(address: SocketAddr, names: &[&str]) -> String {
    format!("[{}]", names.iter().map(|name| group(address, name)).collect::<Vec<_>>().join(", "))
}

fn input_manifest(name: &str, discovery: &str) -> String {
    format!(
        r#"apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata:
  name: {name}
  namespace: demo
spec:
  interval: 200ms
  timeout: 100ms
  source:
    prometheus:
{discovery}
      relabelConfigs:
        - sourceLabels: [__meta_filepath]
          targetLabel: sd_file
        - sourceLabels: [__meta_url]
          targetLabel: sd_url
  outputs:
    - name: file
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sd_targets_follow_the_files() {
    let (address, requests) = start_targets().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    let sd = work.path().join("sd");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::create_dir(&sd).unwrap();
    let output_file = work.path().join("samples.prom");
    write_atomically(&sd.join("one.json"), &groups(address, &["a"]));
    write_atomically(&sd.join("two.yaml"), &format!("- targets: ['{address}']\n  labels: {{__metrics_path__: /metrics/y, name: y}}\n"));
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&output_file));
    // A long refresh interval: changes must be seen through the watch.
    let discovery = format!("      fileSD:\n        files: [\"{}/*.json\", \"{}/two.yaml\"]\n        refreshInterval: 1h", sd.display(), sd.display());
    write_atomically(&manifests.join("files.yaml"), &input_manifest("files", &discovery));
    let collector = Collector::start(&manifests, work.path());

    within("the JSON and YAML files' targets are scraped", Duration::from_secs(10), || async {
        requests.count("a") >= 1 && requests.count("y") >= 1
    })
    .await;
    let line = within("a's samples carry the group labels and __meta_filepath", Duration::from_secs(5), || async {
        std::fs::read_to_string(&output_file).unwrap_or_default().lines().any(|l| l.starts_with("demo_requests_total") && l.contains("name=\"a\""))
    })
    .await;
    eprintln!("samples in the file after {line:?}");
    let text = std::fs::read_to_string(&output_file).unwrap();
    let line = text.lines().find(|l| l.starts_with("demo_requests_total") && l.contains("name=\"a\"")).unwrap();
    let one = sd.join("one.json");
    assert!(line.contains(&format!("sd_file=\"{}\"", one.display())), "{line}");
    assert!(line.contains(&format!("instance=\"{address}\"")) && line.contains("job=\"demo/files\""), "{line}");

    // Added: scraped within the watch latency plus one interval.
    write_atomically(&one, &groups(address, &["a", "b"]));
    let took = within("b is scraped", Duration::from_secs(2), || async { requests.count("b") >= 1 }).await;
    eprintln!("b scraped {took:?} after it was added");

    // Removed: a stops, b and y go on.
    write_atomically(&one, &groups(address, &["b"]));
    stops_being_scraped(&requests, "a").await;
    // Its series end with a Prometheus stale marker instead of lingering in queries.
    within("a's series get stale markers", Duration::from_secs(2), || async {
        let text = std::fs::read_to_string(&output_file).unwrap_or_default();
        ["demo_requests_total", "up"]
            .iter()
            .all(|name| text.lines().any(|l| l.starts_with(&format!("{name}{{")) && l.contains("name=\"a\"") && l.contains("} NaN ")))
    })
    .await;
    let (b, y) = (requests.count("b"), requests.count("y"));
    within("b and y keep going", Duration::from_secs(2), || async { requests.count("b") > b && requests.count("y") > y }).await;

    // Broken: the error is reported, the file's last good targets stay.
    write_atomically(&one, "[{\"targets\": ");
    let errors = "metricshard_input_gather_errors_total{input=\"demo/files\",reason=\"discovery\"}";
    within("the discovery error is counted", Duration::from_secs(2), || async { collector.metric(errors).await.unwrap_or(0.0) >= 1.0 }).await;
    within("the error names the file and the reason", Duration::from_secs(2), || async {
        let log = collector.log();
        log.contains(&format!("file SD {}: invalid JSON", one.display()))
    })
    .await;
    let b = requests.count("b");
    within("b is still scraped", Duration::from_secs(2), || async { requests.count("b") >= b + 2 }).await;
    assert_eq!(collector.metric("metricshard_input_task_starts_total{input=\"demo/files\"}").await, Some(1.0), "discovery restarted the task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sd_targets_follow_the_endpoint() {
    let (address, requests) = start_targets().await;
    let answer = SdAnswer(Arc::new(Mutex::new(("application/json", groups(address, &["p"])))));
    let sd = start_sd(answer.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let output_file = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&output_file));
    let url = format!("http://{sd}/sd");
    let discovery = format!("      httpSD:\n        url: {url}\n        refreshInterval: 200ms");
    write_atomically(&manifests.join("http.yaml"), &input_manifest("http", &discovery));
    let collector = Collector::start(&manifests, work.path());

    within("p is scraped", Duration::from_secs(10), || async { requests.count("p") >= 1 }).await;
    within("p's samples carry __meta_url", Duration::from_secs(5), || async {
        std::fs::read_to_string(&output_file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("demo_requests_total") && l.contains("name=\"p\"") && l.contains(&format!("sd_url=\"{url}\"")))
    })
    .await;

    answer.0.lock().unwrap().1 = groups(address, &["p", "q"]);
    let took = within("q is scraped", Duration::from_secs(2), || async { requests.count("q") >= 1 }).await;
    eprintln!("q scraped {took:?} after it was added");

    answer.0.lock().unwrap().1 = groups(address, &["q"]);
    stops_being_scraped(&requests, "p").await;

    // Not JSON by content type: an error; the last good targets stay.
    *answer.0.lock().unwrap() = ("text/plain", groups(address, &[]));
    let errors = "metricshard_input_gather_errors_total{input=\"demo/http\",reason=\"discovery\"}";
    within("the discovery error is counted", Duration::from_secs(2), || async { collector.metric(errors).await.unwrap_or(0.0) >= 1.0 }).await;
    within("the error names the endpoint and the reason", Duration::from_secs(2), || async {
        collector.log().contains(&format!("HTTP SD {url}: unsupported content type \\\"text/plain\\\""))
            || collector.log().contains(&format!("HTTP SD {url}: unsupported content type \"text/plain\""))
    })
    .await;
    // A malformed document: also an error, still the last good targets.
    *answer.0.lock().unwrap() = ("application/json", "{\"targets\": []}".to_owned());
    within("the malformed document is reported", Duration::from_secs(2), || async {
        collector.log().contains(&format!("HTTP SD {url}: invalid JSON"))
    })
    .await;
    let q = requests.count("q");
    within("q is still scraped", Duration::from_secs(2), || async { requests.count("q") >= q + 2 }).await;

    // Recovered: an empty list removes every target.
    *answer.0.lock().unwrap() = ("application/json", "[]".to_owned());
    stops_being_scraped(&requests, "q").await;
}
