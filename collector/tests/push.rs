//! Push receivers driven by real clients: the real collector binary in local mode with push
//! inputs and a file output; Prometheus (the Debian binary) remote-writes into it, `curl` posts
//! Influx line protocol, OpenTSDB JSON and Open-Falcon JSON; bad, oversized and unauthenticated
//! requests are refused with the right status and reason without disturbing anything else.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Collector, free_port, output_manifest, start_targets, within, write_atomically};

fn push_manifest(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata:
  name: {name}
  namespace: demo
spec:
  source:
    push:
      listen: "127.0.0.1:{port}"{extra}
  labels:
    via: {name}
  outputs:
    - name: file
"#
    )
}

fn scrape_manifest(target: std::net::SocketAddr) -> String {
    format!(
        r#"apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata:
  name: scraped
  namespace: demo
spec:
  interval: 200ms
  timeout: 100ms
  source:
    prometheus:
      staticTargets: ["{target}"]
      metricsPath: /metrics/scraped
  outputs:
    - name: file
"#
    )
}

/// What `curl` answered: status code and body.
struct Answer {
    status: u16,
    body: String,
}

/// POSTs `body` with the real curl; `args` adds headers and options.
fn curl(url: &str, body: &[u8], args: &[&str]) -> Answer {
    let work = tempfile::tempdir().unwrap();
    let payload = work.path().join("payload");
    let answer = work.path().join("answer");
    std::fs::write(&payload, body).unwrap();
    let output = Command::new("curl")
        .args(["-sS", "-o", answer.to_str().unwrap(), "-w", "%{http_code}", "--data-binary"])
        .arg(format!("@{}", payload.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    Answer {
        status: String::from_utf8_lossy(&output.stdout).trim().parse().unwrap(),
        body: std::fs::read_to_string(&answer).unwrap_or_default(),
    }
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

fn has_line(path: &Path, expected: &str) -> bool {
    file_lines(path).iter().any(|line| line == expected)
}

/// The manifests directory with the file output; returns (workdir, manifests dir, output file).
fn workspace() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let output = work.path().join("samples.prom");
    write_atomically(&manifests.join("output.yaml"), &output_manifest(&output));
    (work, manifests, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_pushes_every_protocol_and_bad_requests_are_refused_with_the_reason() {
    let (target, requests) = start_targets().await;
    let (work, manifests, output) = workspace();
    let open_port = free_port();
    let guarded_port = free_port();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    write_atomically(&manifests.join("scraped.yaml"), &scrape_manifest(target));
    write_atomically(&manifests.join("open.yaml"), &push_manifest("open", open_port, "\n      maxSamplesPerRequest: 3"));
    let guarded = format!(
        "\n      protocols: [Influx]\n      maxBodyBytes: 1024\n      auth:\n        bearerToken: {{tokenFile: {}}}",
        token_file.display()
    );
    write_atomically(&manifests.join("guarded.yaml"), &push_manifest("guarded", guarded_port, &guarded));
    let relabelled_port = free_port();
    let relabel = concat!(
        "\n      protocols: [Influx]",
        "\n      metricRelabelConfigs:",
        "\n        - {sourceLabels: [__name__], regex: 'debug_.*', action: drop}",
        "\n        - {sourceLabels: [host], targetLabel: node}",
        "\n        - {regex: host, action: labeldrop}",
    );
    write_atomically(&manifests.join("relabelled.yaml"), &push_manifest("relabelled", relabelled_port, relabel));
    let collector = Collector::start(&manifests, work.path());
    let open = format!("http://127.0.0.1:{open_port}");
    let guarded = format!("http://127.0.0.1:{guarded_port}");
    within("the push listeners serve", Duration::from_secs(20), || async {
        Command::new("curl").args(["-sf", &format!("{open}/ping"), "-o", "/dev/null"]).status().unwrap().success()
            && Command::new("curl").args(["-sf", &format!("{guarded}/ping"), "-o", "/dev/null"]).status().unwrap().success()
    })
    .await;

    // Influx 1.x line protocol with db and precision: one sample per numeric field.
    let answer = curl(&format!("{open}/write?db=telegraf&precision=s"), b"cpu,host=web01 usage_idle=97.5,cores=4i 1700000000\n", &[]);
    assert_eq!((answer.status, answer.body.as_str()), (204, ""));
    // Influx 2.x, gzip-compressed as its clients send.
    let gzipped = {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"mem,host=web01 used=42 1700000001000\n").unwrap();
        encoder.finish().unwrap()
    };
    let answer = curl(&format!("{open}/api/v2/write?bucket=b&precision=ms"), &gzipped, &["-H", "Content-Encoding: gzip"]);
    assert_eq!(answer.status, 204, "{}", answer.body);
    // OpenTSDB, an array, with ?details.
    let put = br#"[{"metric":"sys.cpu.nice","timestamp":1700000002,"value":18,"tags":{"host":"web01"}}]"#;
    let answer = curl(&format!("{open}/api/put?details"), put, &["-H", "Content-Type: application/json"]);
    assert_eq!(answer.status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&answer.body).unwrap(), serde_json::json!({"errors": [], "failed": 0, "success": 1}));
    // Open-Falcon agent JSON.
    let falcon = br#"[{"endpoint":"web01","metric":"load.1min","timestamp":1700000003,"step":60,"value":0.75,"counterType":"GAUGE","tags":"idc=bj"}]"#;
    let answer = curl(&format!("{open}/api/push"), falcon, &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["total"], 1);

    let expected = [
        r#"cpu_usage_idle{db="telegraf",host="web01",via="open"} 97.5 1700000000000"#,
        r#"cpu_cores{db="telegraf",host="web01",via="open"} 4 1700000000000"#,
        r#"mem_used{db="b",host="web01",via="open"} 42 1700000001000"#,
        r#"sys.cpu.nice{host="web01",via="open"} 18 1700000002000"#,
        r#"load.1min{endpoint="web01",idc="bj",via="open"} 0.75 1700000003000"#,
    ];
    within("every pushed sample reaches the file output", Duration::from_secs(10), || async {
        expected.iter().all(|line| has_line(&output, line))
    })
    .await;

    // Bad payloads: 400 with the reason, in each protocol's error shape.
    let answer = curl(&format!("{open}/write"), b"cpu usage=1\ncpu,host usage=2\n", &[]);
    assert_eq!(answer.status, 400);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["error"],
        "line 2: invalid tag \"host\": tags must be key=value with neither empty"
    );
    let answer = curl(&format!("{open}/api/put?details"), br#"{"metric":"x","timestamp":1,"value":1,"tags":{}}"#, &[]);
    assert_eq!(answer.status, 400);
    let details: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(details["errors"][0]["error"], "at least one tag is required");
    assert_eq!(details["failed"], 1);
    let answer = curl(&format!("{open}/api/push"), br#"[{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"RATE"}]"#, &[]);
    assert_eq!((answer.status, answer.body.as_str()), (400, "item 0: counterType \"RATE\" is not GAUGE, COUNTER or DERIVE"));
    let answer = curl(&format!("{open}/api/v1/write"), b"not snappy", &["-H", "Content-Encoding: snappy"]);
    assert_eq!(answer.status, 400);
    assert!(answer.body.starts_with("body is not a snappy block"), "{}", answer.body);
    // Too many samples for the input's maxSamplesPerRequest (3): 413, nothing delivered.
    let answer = curl(&format!("{open}/write?precision=s"), b"many a=1,b=2,c=3,d=4 1700000009\n", &[]);
    assert_eq!((answer.status, answer.body.as_str()), (413, r#"{"error":"4 samples exceed the limit of 3 per request"}"#));

    // Auth: missing and wrong tokens get 401; the right one (Bearer or Influx's Token) passes.
    let line = b"guarded_metric value=1 1700000004000000000\n";
    let answer = curl(&format!("{guarded}/write"), line, &[]);
    assert_eq!(answer.status, 401);
    assert_eq!(curl(&format!("{guarded}/write"), line, &["-H", "Authorization: Bearer wrong"]).status, 401);
    assert_eq!(curl(&format!("{guarded}/api/v2/write"), line, &["-H", "Authorization: Token s3cret"]).status, 204);
    // Only Influx is enabled on this listener.
    assert_eq!(curl(&format!("{guarded}/api/push"), b"[]", &["-H", "Authorization: Bearer s3cret"]).status, 404);
    // Oversize (maxBodyBytes 1024): 413 before parsing.
    let big = "guarded_metric value=2\n".repeat(100);
    let answer = curl(&format!("{guarded}/write"), big.as_bytes(), &["-H", "Authorization: Bearer s3cret"]);
    assert_eq!(answer.status, 413);
    assert!(answer.body.contains("exceeds the limit of 1024 bytes"), "{}", answer.body);

    within("the authenticated push arrives", Duration::from_secs(10), || async {
        has_line(&output, r#"guarded_metric{via="guarded"} 1 1700000004000"#)
    })
    .await;

    // Metric relabeling of pushed samples, after spec.labels: one metric dropped, a label renamed.
    // (An Influx field named `value` gives the measurement's name alone.)
    let relabelled = format!("http://127.0.0.1:{relabelled_port}");
    within("the relabelling listener serves", Duration::from_secs(20), || async {
        Command::new("curl").args(["-sf", &format!("{relabelled}/ping"), "-o", "/dev/null"]).status().unwrap().success()
    })
    .await;
    let answer = curl(&format!("{relabelled}/write?precision=s"), b"debug_probe value=1 1700000005\napp,host=h1 value=2 1700000005\n", &[]);
    assert_eq!(answer.status, 204, "{}", answer.body);
    within("the relabelled sample arrives", Duration::from_secs(10), || async {
        has_line(&output, r#"app{node="h1",via="relabelled"} 2 1700000005000"#)
    })
    .await;
    assert!(!file_lines(&output).iter().any(|l| l.starts_with("debug_probe")), "a dropped metric was delivered");
    // None of the refused requests delivered anything.
    let lines = file_lines(&output);
    assert!(!lines.iter().any(|l| l.starts_with("many_") || l.starts_with("guarded_metric{via=\"guarded\"} 2") || l.contains("RATE")));
    assert_eq!(lines.iter().filter(|l| l.starts_with("cpu_usage_idle")).count(), 1, "the refused Influx body delivered its good line");

    // The scrape input next door went on all along, and the counters say what happened.
    let before = requests.count("scraped");
    within("the scrape input keeps gathering", Duration::from_secs(5), || async { requests.count("scraped") >= before + 3 }).await;
    let counter = |protocol: &str, outcome: &str| {
        format!("metricshard_push_requests_total{{input=\"demo/open\",protocol=\"{protocol}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(collector.metric(&counter("influx", "accepted")).await, Some(2.0));
    assert_eq!(collector.metric(&counter("influx", "bad_request")).await, Some(1.0));
    assert_eq!(collector.metric(&counter("influx", "too_many_samples")).await, Some(1.0));
    assert_eq!(collector.metric(&counter("opentsdb", "accepted")).await, Some(1.0));
    assert_eq!(collector.metric(&counter("falcon", "bad_request")).await, Some(1.0));
    assert_eq!(collector.metric(&counter("remote_write", "bad_request")).await, Some(1.0));
    assert_eq!(
        collector.metric("metricshard_push_requests_total{input=\"demo/guarded\",protocol=\"influx\",outcome=\"unauthorized\"}").await,
        Some(2.0)
    );
    assert_eq!(collector.metric("metricshard_input_samples_total{input=\"demo/open\"}").await, Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_conflict_is_reported_and_removing_the_input_frees_its_port() {
    let (work, manifests, output) = workspace();
    let port = free_port();
    write_atomically(&manifests.join("first.yaml"), &push_manifest("first", port, ""));
    let collector = Collector::start(&manifests, work.path());
    let url = format!("http://127.0.0.1:{port}/api/push");
    let item = |metric: &str| format!(r#"[{{"endpoint":"h","metric":"{metric}","timestamp":1700000000,"step":60,"value":1,"counterType":"GAUGE"}}]"#);
    within("first serves", Duration::from_secs(20), || async {
        Command::new("curl").args(["-sf", "-o", "/dev/null", "--data-binary", &item("one"), &url]).status().unwrap().success()
    })
    .await;

    // A second input on the same port cannot listen: its error is counted and logged, first
    // goes on serving.
    write_atomically(&manifests.join("second.yaml"), &push_manifest("second", port, ""));
    let conflict = "metricshard_input_gather_errors_total{input=\"demo/second\",reason=\"listen\"}";
    within("second reports the conflict", Duration::from_secs(10), || async { collector.metric(conflict).await >= Some(1.0) }).await;
    assert!(collector.log().contains(&format!("cannot listen on 127.0.0.1:{port}")), "{}", collector.log());
    assert_eq!(curl(&url, item("two").as_bytes(), &[]).status, 200);
    within("first delivered", Duration::from_secs(5), || async { has_line(&output, r#"two{endpoint="h",via="first"} 1 1700000000000"#) }).await;

    // Removing first closes its socket; second takes the port on its next retry.
    std::fs::remove_file(manifests.join("first.yaml")).unwrap();
    within("second takes over the port", Duration::from_secs(40), || async {
        // Between first closing and second binding, connections are refused: retry.
        let posted = Command::new("curl").args(["-sf", "-o", "/dev/null", "--data-binary", &item("three"), &url]).status().unwrap().success();
        posted && has_line(&output, r#"three{endpoint="h",via="second"} 1 1700000000000"#)
    })
    .await;
    // Removing second too leaves the port free for anyone.
    std::fs::remove_file(manifests.join("second.yaml")).unwrap();
    within("the port is free", Duration::from_secs(10), || async { std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() }).await;
}

/// Prometheus, started from the test with its own scrape of itself and a remote write into the
/// collector; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(workdir: &Path, remote_write_url: &str) -> Self {
        let port = free_port();
        let config = workdir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: self\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n\
                 remote_write:\n  - url: {remote_write_url}\n    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", workdir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(workdir.join("prometheus.stderr")).unwrap())
            .spawn()
            .unwrap();
        Self { child, port }
    }

    /// The value Prometheus stored for `selector` at exactly `timestamp_ms`.
    async fn value_at(&self, selector: &str, timestamp_ms: i64) -> Option<f64> {
        let client = metricshard_collector::build_http_client().unwrap();
        let time = format!("{}.{:03}", timestamp_ms / 1000, timestamp_ms % 1000);
        // A 1ms range selector at that instant returns exactly the raw sample stored there.
        let query = format!("{selector}[1ms]");
        let text = client
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", query.as_str()), ("time", time.as_str())])
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let answer: serde_json::Value = serde_json::from_str(&text).ok()?;
        let values = answer["data"]["result"][0]["values"].as_array()?;
        let [point] = values.as_slice() else { return None };
        point[1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_writes_into_the_collector() {
    let (work, manifests, output) = workspace();
    let port = free_port();
    write_atomically(&manifests.join("receiver.yaml"), &push_manifest("receiver", port, "\n      protocols: [RemoteWrite]"));
    let collector = Collector::start(&manifests, work.path());
    let prometheus = Prometheus::start(work.path(), &format!("http://127.0.0.1:{port}/api/v1/write"));
    let instance = format!("127.0.0.1:{}", prometheus.port);

    // `up` of Prometheus' scrape of itself arrives with Prometheus' target labels and ours.
    let up_prefix = format!(r#"up{{instance="{instance}",job="self",via="receiver"}} 1 "#);
    within("Prometheus' samples arrive through remote write", Duration::from_secs(60), || async {
        file_lines(&output).iter().any(|line| line.starts_with(&up_prefix))
    })
    .await;

    // Values and timestamps are the ones Prometheus stored: pick a sample of a series whose
    // value changes and ask Prometheus for its value at that exact instant.
    let prefix = format!(r#"scrape_samples_scraped{{instance="{instance}",job="self",via="receiver"}} "#);
    let (value, timestamp_ms) = {
        let lines = file_lines(&output);
        let line = lines.iter().find(|line| line.starts_with(&prefix)).expect("scrape_samples_scraped arrived").clone();
        let mut parts = line[prefix.len()..].split(' ');
        let value: f64 = parts.next().unwrap().parse().unwrap();
        let timestamp: i64 = parts.next().unwrap().parse().unwrap();
        (value, timestamp)
    };
    assert!(value > 100.0, "Prometheus exposes hundreds of series about itself: {value}");
    let selector = format!(r#"scrape_samples_scraped{{instance="{instance}",job="self"}}"#);
    let stored = prometheus.value_at(&selector, timestamp_ms).await;
    assert_eq!(stored, Some(value), "the collector received {value} at {timestamp_ms}");
    let accepted = "metricshard_push_requests_total{input=\"demo/receiver\",protocol=\"remote_write\",outcome=\"accepted\"}";
    assert!(collector.metric(accepted).await >= Some(1.0));
}
