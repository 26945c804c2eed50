//! The HTTP outputs against real backends: each sink writes a batch to a real server started
//! here on a free loopback port in a temp dir, and the test reads it back exactly through the
//! backend's own query API. Failure classification is checked against real refusals (an
//! out-of-bounds sample in Prometheus, a partial write in InfluxDB), a refused connection, and
//! a small local server answering 503, 429 and 400.
//!
//! Backends come from Debian's packages `prometheus`, `victoria-metrics` and `influxdb`. A
//! missing binary fails the test with the package to install; nothing here skips.

// Test helpers outside #[test] functions are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metricshard_collector::outputs::influx::{
    InfluxApi, InfluxConfig, InfluxCredentials, InfluxSink, InfluxToken, Precision,
};
use metricshard_collector::outputs::opentsdb::{OpenTsdbConfig, OpenTsdbSink};
use metricshard_collector::outputs::remote_write::{RemoteWriteConfig, RemoteWriteSink, decode_body};
use metricshard_collector::outputs::{Sink, WriteError, Written};
use metricshard_collector::sample::{Labels, STALE_NAN_BITS, Sample};
use serde::Deserialize;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Backend processes

/// A backend process in its own temp dir; killed on drop, its log printed if the test failed.
struct Backend {
    name: &'static str,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Backend {
    /// Starts `binary` (from Debian package `package`) with `args`, logging to the temp dir.
    fn start(name: &'static str, binary: &str, package: &str, dir: tempfile::TempDir, args: &[String]) -> Self {
        let path = find_binary(binary).unwrap_or_else(|| {
            panic!(
                "`{binary}` is not installed: install the Debian package `{package}` \
                 (apt-get install -y {package}, or scripts/testbed/install-deps.sh)"
            )
        });
        let log = dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(path)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Self { name, child, log, dir }
    }

    /// Polls `GET url` until it answers `expected`; fails at once if the process exited.
    async fn wait_ready(&mut self, http: &reqwest::Client, url: &str, expected: u16) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status} before it was ready:\n{}", self.name, self.log_text());
            }
            if let Ok(response) = http.get(url).send().await
                && response.status().as_u16() == expected
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready on {url} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ({}) ----\n{}", self.name, self.dir.path().display(), self.log_text());
        }
    }
}

fn find_binary(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]).find_map(|dir| {
        let candidate = dir.join(binary);
        candidate.is_file().then_some(candidate)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

async fn start_prometheus(http: &reqwest::Client) -> (Backend, String) {
    let dir = temp_dir("prometheus-");
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\nscrape_configs: []\n").unwrap();
    let args = [
        format!("--config.file={}", path_str(&config)),
        format!("--storage.tsdb.path={}", path_str(&dir.path().join("tsdb"))),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-remote-write-receiver".to_owned(),
        "--log.level=warn".to_owned(),
    ];
    let mut backend = Backend::start("prometheus", "prometheus", "prometheus", dir, &args);
    let base = format!("http://127.0.0.1:{port}");
    backend.wait_ready(http, &format!("{base}/-/ready"), 200).await;
    (backend, base)
}

/// VictoriaMetrics with its OpenTSDB HTTP listener; returns (backend, base URL, OpenTSDB URL).
async fn start_victoria_metrics(http: &reqwest::Client) -> (Backend, String, String) {
    let dir = temp_dir("victoria-metrics-");
    let port = free_port();
    let opentsdb_port = free_port();
    let args = [
        format!("-httpListenAddr=127.0.0.1:{port}"),
        format!("-opentsdbHTTPListenAddr=127.0.0.1:{opentsdb_port}"),
        format!("-storageDataPath={}", path_str(&dir.path().join("data"))),
        "-retentionPeriod=100y".to_owned(),
        "-search.latencyOffset=0s".to_owned(),
        "-search.disableCache".to_owned(),
        "-loggerLevel=WARN".to_owned(),
    ];
    let mut backend = Backend::start("victoria-metrics", "victoria-metrics", "victoria-metrics", dir, &args);
    let base = format!("http://127.0.0.1:{port}");
    backend.wait_ready(http, &format!("{base}/health"), 200).await;
    (backend, base, format!("http://127.0.0.1:{opentsdb_port}"))
}

async fn start_influxdb(http: &reqwest::Client) -> (Backend, String) {
    let dir = temp_dir("influxdb-");
    let port = free_port();
    let rpc_port = free_port();
    let root = path_str(dir.path());
    let config = format!(
        "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc_port}\"\n\
         [meta]\n  dir = \"{root}/meta\"\n\
         [data]\n  dir = \"{root}/data\"\n  wal-dir = \"{root}/wal\"\n  query-log-enabled = false\n\
         [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = false\n  log-enabled = false\n\
         [monitor]\n  store-enabled = false\n[subscriber]\n  enabled = false\n[continuous_queries]\n  enabled = false\n"
    );
    let config_path = dir.path().join("influxdb.conf");
    std::fs::write(&config_path, config).unwrap();
    let args = ["run".to_owned(), "-config".to_owned(), path_str(&config_path)];
    let mut backend = Backend::start("influxdb", "influxd", "influxdb", dir, &args);
    let base = format!("http://127.0.0.1:{port}");
    backend.wait_ready(http, &format!("{base}/ping"), 204).await;
    (backend, base)
}

// ---------------------------------------------------------------------------------------------
// Data and comparison

/// Samples by series, each as (timestamp ms, value bits): what a backend must give back.
type SeriesSet = BTreeMap<(String, BTreeMap<String, String>), Vec<(i64, u64)>>;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn series_set(batch: &[Sample]) -> SeriesSet {
    let mut set = SeriesSet::new();
    for sample in batch {
        let labels = sample.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
        set.entry((sample.name.to_string(), labels)).or_default().push((sample.timestamp_ms, sample.value.to_bits()));
    }
    for samples in set.values_mut() {
        samples.sort_unstable();
    }
    set
}

fn assert_same(what: &str, got: &SeriesSet, expected: &SeriesSet) {
    if got != expected {
        let show = |set: &SeriesSet| {
            set.iter()
                .map(|(k, v)| {
                    let values: Vec<(i64, f64)> = v.iter().map(|(t, b)| (*t, f64::from_bits(*b))).collect();
                    format!("  {k:?} => {values:?}")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!("{what}: read back differs\n got:\n{}\n expected:\n{}", show(got), show(expected));
    }
}

/// Polls `read` until it returns `expected` (backends make writes visible asynchronously).
async fn read_until<F, Fut>(what: &str, expected: &SeriesSet, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = SeriesSet>,
{
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let got = read().await;
        if &got == expected || Instant::now() > deadline {
            assert_same(what, &got, expected);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Values that only a bit-exact path keeps: shortest-round-trip decimals with 17 digits,
/// extremes, negative zero.
const HARD_VALUES: [f64; 6] = [0.1 + 0.2, 1e-300, -1.797_693_134_862_315_7e308, -0.0, 123_456_789.012_345_68, 42.0];

/// Values VictoriaMetrics stores exactly: it keeps floats as decimals of at most ~12
/// significant digits.
const SIMPLE_VALUES: [f64; 5] = [1027.0, 0.25, -3.5, 0.001, 12_345.678];

fn special_labels() -> Labels {
    labels(&[
        ("job", "shop/api"),
        ("instance", "10.0.0.1:8080"),
        ("path", "/a b,c=d\"e\\f"),
        ("city", "Zürich 東京"),
        ("empty", ""),
    ])
}

/// Expected series of a remote-write receiver: empty labels dropped, `__name__` added.
fn prometheus_view(batch: &[Sample]) -> SeriesSet {
    let mut set = SeriesSet::new();
    for sample in batch {
        let mut labels: BTreeMap<String, String> =
            sample.labels.iter().filter(|l| !l.value.is_empty()).map(|l| (l.name.to_string(), l.value.to_string())).collect();
        labels.insert("__name__".to_owned(), sample.name.to_string());
        // -0.0 travels as +0.0 in remote write (proto3 leaves out zero doubles).
        let bits = if sample.value == 0.0 { 0 } else { sample.value.to_bits() };
        set.entry((String::new(), labels)).or_default().push((sample.timestamp_ms, bits));
    }
    for samples in set.values_mut() {
        samples.sort_unstable();
    }
    set
}

// ---------------------------------------------------------------------------------------------
// Query helpers

#[derive(Deserialize)]
struct PromResponse {
    status: String,
    #[serde(default)]
    data: Option<PromData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PromData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<PromSeries>,
}

#[derive(Deserialize)]
struct PromSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    value: Option<(f64, String)>,
}

fn parse_prom_value(text: &str) -> f64 {
    match text {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|e| panic!("bad value {other:?}: {e}")),
    }
}

async fn prom_query(http: &reqwest::Client, base: &str, query: &str, time_ms: i64) -> PromData {
    let time = format!("{:.3}", time_ms as f64 / 1000.0);
    let response =
        http.get(format!("{base}/api/v1/query")).query(&[("query", query), ("time", &time)]).send().await.unwrap();
    let body = response.text().await.unwrap();
    let parsed: PromResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(parsed.status, "success", "{query}: {:?}", parsed.error);
    parsed.data.unwrap()
}

/// Every raw sample of the selected series through a range-vector query at `time_ms`.
async fn prom_range(http: &reqwest::Client, base: &str, selector: &str, time_ms: i64) -> SeriesSet {
    let data = prom_query(http, base, &format!("{selector}[1h]"), time_ms).await;
    assert_eq!(data.result_type, "matrix");
    let mut set = SeriesSet::new();
    for series in data.result {
        let samples =
            series.values.iter().map(|(t, v)| ((t * 1000.0).round() as i64, parse_prom_value(v).to_bits())).collect();
        set.insert((String::new(), series.metric), samples);
    }
    set
}

#[derive(Deserialize)]
struct VmExport {
    metric: BTreeMap<String, String>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
}

async fn vm_export(http: &reqwest::Client, base: &str, selector: &str) -> SeriesSet {
    let _ = http.get(format!("{base}/internal/force_flush")).send().await;
    let response =
        http.get(format!("{base}/api/v1/export")).query(&[("match[]", selector), ("start", "0")]).send().await.unwrap();
    let text = response.text().await.unwrap();
    let mut set = SeriesSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let series: VmExport = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let mut samples: Vec<(i64, u64)> =
            series.timestamps.iter().zip(&series.values).map(|(t, v)| (*t, v.to_bits())).collect();
        samples.sort_unstable();
        set.insert((String::new(), series.metric), samples);
    }
    set
}

#[derive(Deserialize)]
struct InfluxResponse {
    #[serde(default)]
    results: Vec<InfluxResult>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct InfluxResult {
    #[serde(default)]
    error: Option<String>,
}

/// Runs an InfluxQL statement that returns no data (CREATE ...), failing on any error.
async fn influxql(http: &reqwest::Client, base: &str, statement: &str) {
    // POST: InfluxDB 1.x refuses writing statements over GET.
    let response = http.post(format!("{base}/query")).query(&[("q", statement)]).send().await.unwrap();
    let body = response.text().await.unwrap();
    let parsed: InfluxResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(parsed.error.is_none() && parsed.results.iter().all(|r| r.error.is_none()), "{statement}: {body}");
}

/// Every point of every measurement, as measurement + non-empty tags → (time, value).
///
/// Read as CSV: InfluxDB prints floats there with Go's shortest exact formatting, which Rust
/// parses back bit-exact, whereas serde_json's default float parser is approximate for some
/// values (3.3333333333333334e-301 came back one ulp off through JSON).
async fn influx_points(http: &reqwest::Client, base: &str, db: &str) -> SeriesSet {
    let query = [("q", "SELECT \"value\" FROM /.*/ GROUP BY *"), ("epoch", "ms"), ("db", db)];
    let response =
        http.post(format!("{base}/query")).header("accept", "application/csv").query(&query).send().await.unwrap();
    let text = response.text().await.unwrap();
    let mut set = SeriesSet::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields = csv_fields(line);
        assert_ne!(fields[0], "error", "influx query failed: {text}");
        if fields[0] == "name" {
            assert_eq!(fields, ["name", "tags", "time", "value"], "{text}");
            continue;
        }
        let [name, tags, time, value] = <[String; 4]>::try_from(fields).unwrap_or_else(|f| panic!("row {f:?}"));
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("value {value:?}: {e}"));
        set.entry((name, influx_tags(&tags))).or_default().push((time.parse().unwrap(), value.to_bits()));
    }
    for samples in set.values_mut() {
        samples.sort_unstable();
    }
    set
}

/// The fields of one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (other, _) => fields.last_mut().unwrap().push(other),
        }
    }
    fields
}

/// The `k=v,k2=v2` tag column of InfluxDB's CSV, which escapes `,`, `=` and ` ` with a
/// backslash like line protocol; empty values (GROUP BY * lists every key) are left out.
fn influx_tags(text: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let (mut key, mut value, mut in_value) = (String::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    loop {
        let ch = chars.next();
        match ch {
            Some('\\') if matches!(chars.peek(), Some(',' | '=' | ' ')) => {
                let escaped = chars.next().unwrap();
                if in_value { value.push(escaped) } else { key.push(escaped) }
            }
            Some('=') if !in_value => in_value = true,
            Some(',') | None => {
                if !value.is_empty() {
                    tags.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                }
                key.clear();
                in_value = false;
                if ch.is_none() {
                    return tags;
                }
            }
            Some(other) => {
                if in_value {
                    value.push(other)
                } else {
                    key.push(other)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sink helpers

fn http_client() -> reqwest::Client {
    metricshard_collector::build_http_client().unwrap()
}

fn remote_write_sink(url: String) -> RemoteWriteSink {
    let mut config = RemoteWriteConfig::new(url);
    config.timeout = Duration::from_secs(10);
    RemoteWriteSink::new(config, http_client()).unwrap()
}

fn influx_v1_sink(base: &str, database: &str, precision: Precision) -> InfluxSink {
    let api = InfluxApi::V1 { database: database.to_owned(), retention_policy: None, credentials: None };
    let mut config = InfluxConfig::new(base, api);
    config.precision = precision;
    config.timeout = Duration::from_secs(10);
    InfluxSink::new(config, http_client()).unwrap()
}

fn opentsdb_sink(base: &str) -> OpenTsdbSink {
    let mut config = OpenTsdbConfig::new(base);
    config.timeout = Duration::from_secs(10);
    OpenTsdbSink::new(config, http_client()).unwrap()
}

fn expect_permanent(result: Result<Written, WriteError>, category: &str, message_part: &str) -> String {
    match result {
        Err(WriteError::Permanent { category: got, message }) => {
            assert_eq!(got, category, "{message}");
            assert!(message.contains(message_part), "{message:?} should contain {message_part:?}");
            message
        }
        other => panic!("expected a permanent {category} failure, got {other:?}"),
    }
}

fn expect_retryable(result: Result<Written, WriteError>, category: &str) -> String {
    match result {
        Err(WriteError::Retryable { category: got, message }) => {
            assert_eq!(got, category, "{message}");
            message
        }
        other => panic!("expected a retryable {category} failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests against real backends

#[tokio::test]
async fn remote_write_to_prometheus_reads_back_exactly() {
    let http = http_client();
    let (_prometheus, base) = start_prometheus(&http).await;
    let sink = remote_write_sink(format!("{base}/api/v1/write"));

    let t0 = now_ms() - 60_000;
    let mut batch = Vec::new();
    for (step, value) in HARD_VALUES.iter().enumerate() {
        let t = t0 + step as i64 * 1_000 + 7;
        batch.push(Sample::new("rw_test_hard", special_labels(), *value, t));
        batch.push(Sample::new("rw_test_plain", labels(&[("Zone", "upper"), ("a", "1")]), *value / 2.0, t + 1));
    }
    // Out of order within the batch on purpose: the encoder sorts per series.
    batch.swap(0, 2);
    sink.write(&batch).await.unwrap();

    let read_at = t0 + 60_000;
    read_until("prometheus rw_test_*", &prometheus_view(&batch), || {
        prom_range(&http, &base, "{__name__=~\"rw_test_.*\"}", read_at)
    })
    .await;

    // Stale markers must keep their bits: Prometheus then ends the series, while a plain NaN
    // is a value like any other.
    let t_end = t0 + 10_000;
    let ends = [
        Sample::new("rw_test_stale", labels(&[("kind", "stale")]), 1.0, t_end - 1_000),
        Sample::new("rw_test_stale", labels(&[("kind", "stale")]), f64::from_bits(STALE_NAN_BITS), t_end),
        Sample::new("rw_test_stale", labels(&[("kind", "nan")]), 1.0, t_end - 1_000),
        Sample::new("rw_test_stale", labels(&[("kind", "nan")]), f64::NAN, t_end),
    ];
    sink.write(&ends).await.unwrap();
    let deadline = Instant::now() + QUERY_TIMEOUT;
    loop {
        let data = prom_query(&http, &base, "rw_test_stale", t_end + 1_000).await;
        let kinds: Vec<(String, String)> = data
            .result
            .iter()
            .map(|s| (s.metric["kind"].clone(), s.value.clone().map(|v| v.1).unwrap_or_default()))
            .collect();
        if kinds == [("nan".to_owned(), "NaN".to_owned())] {
            break;
        }
        assert!(Instant::now() < deadline, "stale series should be gone, NaN series present: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A sample older than the head accepts is refused with 400: permanent, reason kept.
    let ancient = [Sample::new("rw_test_ancient", Labels::default(), 1.0, 1_000)];
    expect_permanent(sink.write(&ancient).await, "http_4xx", "out of bounds");
}

#[tokio::test]
async fn victoria_metrics_receives_remote_write_influx_and_opentsdb() {
    let http = http_client();
    let (_vm, base, opentsdb_base) = start_victoria_metrics(&http).await;
    let t0 = now_ms() - 60_000;

    // remote write
    let mut batch = Vec::new();
    for (step, value) in SIMPLE_VALUES.iter().enumerate() {
        let t = t0 + step as i64 * 1_000 + 3;
        batch.push(Sample::new("vm_rw_a", special_labels(), *value, t));
        batch.push(Sample::new("vm_rw_b", labels(&[("k", "v")]), -*value, t));
    }
    remote_write_sink(format!("{base}/api/v1/write")).write(&batch).await.unwrap();
    read_until("victoria-metrics remote write", &prometheus_view(&batch), || {
        vm_export(&http, &base, "{__name__=~\"vm_rw_.*\"}")
    })
    .await;

    // Influx line protocol on /write: the metric becomes <measurement>_<field> and the `db`
    // parameter a label.
    let mut influx_batch = Vec::new();
    for (step, value) in SIMPLE_VALUES.iter().enumerate() {
        let t = t0 + step as i64 * 1_000 + 5;
        influx_batch.push(Sample::new("vm_influx", labels(&[("host", "a b,c=d"), ("dc", "eu-1")]), *value, t));
    }
    influx_v1_sink(&base, "telemetry", Precision::Milliseconds).write(&influx_batch).await.unwrap();
    let mut expected = SeriesSet::new();
    for sample in &influx_batch {
        let mut labels: BTreeMap<String, String> =
            sample.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
        labels.insert("__name__".into(), "vm_influx_value".into());
        labels.insert("db".into(), "telemetry".into());
        expected.entry((String::new(), labels)).or_default().push((sample.timestamp_ms, sample.value.to_bits()));
    }
    read_until("victoria-metrics influx", &expected, || vm_export(&http, &base, "{__name__=\"vm_influx_value\"}"))
        .await;

    // OpenTSDB /api/put: names and tags sanitised, a label-less sample gets the fallback tag.
    let tsdb_batch = vec![
        Sample::new("vm:tsdb", labels(&[("instance", "10.0.0.1:80"), ("city", "Zürich")]), 0.25, t0 + 11),
        Sample::new("vm:tsdb", labels(&[("instance", "10.0.0.1:80"), ("city", "Zürich")]), 1027.0, t0 + 1_011),
        Sample::new("vm:tsdb", Labels::default(), -3.5, t0 + 12),
        Sample::new("vm:tsdb", Labels::default(), f64::NAN, t0 + 1_012),
    ];
    let sink = opentsdb_sink(&opentsdb_base);
    let written = sink.write(&tsdb_batch).await.unwrap();
    assert_eq!(written.unrepresentable, 1, "the NaN is left out and reported");
    let mut expected = SeriesSet::new();
    let tagged: BTreeMap<String, String> = [("__name__", "vm_tsdb"), ("instance", "10.0.0.1_80"), ("city", "Zürich")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let fallback: BTreeMap<String, String> = [("__name__", "vm_tsdb"), ("source", "metricshard")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    expected.insert((String::new(), tagged), vec![(t0 + 11, 0.25f64.to_bits()), (t0 + 1_011, 1027f64.to_bits())]);
    expected.insert((String::new(), fallback), vec![(t0 + 12, (-3.5f64).to_bits())]);
    read_until("victoria-metrics opentsdb", &expected, || vm_export(&http, &base, "{__name__=\"vm_tsdb\"}")).await;
}

#[tokio::test]
async fn influx_v1_to_influxdb_reads_back_exactly() {
    let http = http_client();
    let (_influx, base) = start_influxdb(&http).await;
    for db in ["ms", "ns", "us", "s", "short"] {
        let statement = if db == "short" {
            "CREATE DATABASE \"short\" WITH DURATION 1h".to_owned()
        } else {
            format!("CREATE DATABASE \"{db}\"")
        };
        influxql(&http, &base, &statement).await;
    }

    let t0 = now_ms() - 60_000;
    let mut batch = Vec::new();
    for (step, value) in HARD_VALUES.iter().enumerate() {
        let t = t0 + step as i64 * 1_000 + 7;
        batch.push(Sample::new("influx test,m=1", special_labels(), *value, t));
        batch.push(Sample::new("plain", labels(&[("host", "h1")]), *value / 3.0, t));
    }
    let stale = Sample::new("plain", labels(&[("host", "h1")]), f64::from_bits(STALE_NAN_BITS), t0 + 50_000);
    batch.push(stale);
    let sink = influx_v1_sink(&base, "ms", Precision::Milliseconds);
    let written = sink.write(&batch).await.unwrap();
    assert_eq!(written.unrepresentable, 1, "the stale marker cannot be written and is reported");
    let expected = series_set(&batch[..batch.len() - 1]);
    let expected: SeriesSet = expected
        .into_iter()
        .map(|((name, labels), samples)| ((name, labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()), samples))
        .collect();
    read_until("influxdb ms", &expected, || influx_points(&http, &base, "ms")).await;

    // Each precision lands on the same instant (seconds truncate the milliseconds).
    let t = t0 + 1_234;
    for (db, precision, expected_ms) in [
        ("ns", Precision::Nanoseconds, t),
        ("us", Precision::Microseconds, t),
        ("s", Precision::Seconds, t.div_euclid(1000) * 1000),
    ] {
        let sample = Sample::new("precision", labels(&[("p", db)]), 0.5, t);
        influx_v1_sink(&base, db, precision).write(std::slice::from_ref(&sample)).await.unwrap();
        let mut expected = SeriesSet::new();
        expected.insert(
            ("precision".to_owned(), [("p".to_owned(), db.to_owned())].into()),
            vec![(expected_ms, 0.5f64.to_bits())],
        );
        read_until(&format!("influxdb precision {db}"), &expected, || influx_points(&http, &base, db)).await;
    }

    // A point beyond the retention policy is a partial write: 400, permanent, the message says
    // how many points were refused, and the other point is stored.
    let mixed = [
        Sample::new("retained", labels(&[("k", "v")]), 1.0, t0),
        Sample::new("retained", labels(&[("k", "v")]), 2.0, 1_000),
    ];
    let message = expect_permanent(
        influx_v1_sink(&base, "short", Precision::Milliseconds).write(&mixed).await,
        "http_4xx",
        "1 of 2 points refused",
    );
    assert!(message.contains("retention policy"), "{message}");
    let expected: SeriesSet =
        [(("retained".to_owned(), [("k".to_owned(), "v".to_owned())].into()), vec![(t0, 1f64.to_bits())])].into();
    read_until("influxdb partial write", &expected, || influx_points(&http, &base, "short")).await;

    // An unknown database is a 404: permanent.
    expect_permanent(
        influx_v1_sink(&base, "missing", Precision::Milliseconds).write(&mixed[..1]).await,
        "http_4xx",
        "database not found",
    );
}

// ---------------------------------------------------------------------------------------------
// Classification without a backend

#[tokio::test]
async fn connection_refused_is_retryable() {
    let port = free_port(); // bound and released: nothing listens there now
    let base = format!("http://127.0.0.1:{port}");
    let batch = [Sample::new("m", labels(&[("k", "v")]), 1.0, now_ms())];
    let message = expect_retryable(remote_write_sink(format!("{base}/api/v1/write")).write(&batch).await, "network");
    assert!(message.to_lowercase().contains("connect"), "{message}");
    expect_retryable(influx_v1_sink(&base, "db", Precision::Milliseconds).write(&batch).await, "network");
    expect_retryable(opentsdb_sink(&base).write(&batch).await, "network");
}

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Captured {
    uri: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct FakeState {
    reply: Arc<Mutex<(u16, String)>>,
    seen: Arc<Mutex<Vec<Captured>>>,
}

impl FakeState {
    fn reply(&self, status: u16, body: &str) {
        *self.reply.lock().unwrap() = (status, body.to_owned());
    }
    fn last(&self) -> Captured {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

/// A server answering every request with the configured status and body, recording requests.
async fn start_fake_server() -> (SocketAddr, FakeState) {
    let state = FakeState::default();
    let app = axum::Router::new()
        .fallback(
            |axum::extract::State(state): axum::extract::State<FakeState>,
             uri: axum::http::Uri,
             headers: axum::http::HeaderMap,
             body: axum::body::Bytes| async move {
                state.seen.lock().unwrap().push(Captured { uri: uri.to_string(), headers, body: body.to_vec() });
                let (status, body) = state.reply.lock().unwrap().clone();
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            },
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, state)
}

#[tokio::test]
async fn statuses_are_classified_and_protocol_headers_sent() {
    let (address, fake) = start_fake_server().await;
    let base = format!("http://{address}");
    let batch = vec![
        Sample::new("m", labels(&[("k", "v")]), 1.5, 1_700_000_000_000),
        Sample::new("m", labels(&[("k", "v")]), f64::from_bits(STALE_NAN_BITS), 1_700_000_001_000),
    ];
    let remote_write = remote_write_sink(format!("{base}/api/v1/write"));
    let influx = influx_v1_sink(&base, "db", Precision::Milliseconds);
    let opentsdb = opentsdb_sink(&base);
    let sinks: [&dyn Sink; 3] = [&remote_write, &influx, &opentsdb];

    for sink in sinks {
        fake.reply(503, "busy");
        expect_retryable(sink.write(&batch).await, "http_5xx");
        fake.reply(429, "slow down");
        expect_retryable(sink.write(&batch).await, "http_429");
        fake.reply(400, "bad data here");
        expect_permanent(sink.write(&batch).await, "http_4xx", "bad data here");
        fake.reply(204, "");
        sink.write(&batch).await.unwrap();
    }

    // What remote write sent: the spec's headers and a snappy protobuf with the stale marker.
    remote_write.write(&batch).await.unwrap();
    let request = fake.last();
    assert_eq!(request.uri, "/api/v1/write");
    assert_eq!(request.headers["content-encoding"], "snappy");
    assert_eq!(request.headers["content-type"], "application/x-protobuf");
    assert_eq!(request.headers["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(request.headers["user-agent"], concat!("metricshard/", env!("CARGO_PKG_VERSION")));
    let decoded = decode_body(&request.body).unwrap();
    assert_eq!(decoded.timeseries.len(), 1);
    assert_eq!(decoded.timeseries[0].samples[1].value.to_bits(), STALE_NAN_BITS);

    // Influx v1 with credentials: basic auth, `u` for microseconds.
    let api = InfluxApi::V1 {
        database: "db".into(),
        retention_policy: Some("rp".into()),
        credentials: Some(InfluxCredentials { username: "user".into(), password: "pass".into() }),
    };
    let mut config = InfluxConfig::new(&base, api);
    config.precision = Precision::Microseconds;
    InfluxSink::new(config, http_client()).unwrap().write(&batch).await.unwrap();
    let request = fake.last();
    assert_eq!(request.uri, "/write?db=db&rp=rp&precision=u");
    assert_eq!(request.headers["authorization"], "Basic dXNlcjpwYXNz");
    assert_eq!(String::from_utf8(request.body).unwrap(), "m,k=v value=1.5 1700000000000000\n");

    // Influx v2: org, bucket, token; the v2 error body's message is surfaced.
    let api = InfluxApi::V2 { org: "acme".into(), bucket: "metrics".into(), token: InfluxToken("s3cret".into()) };
    let v2 = InfluxSink::new(InfluxConfig::new(&base, api), http_client()).unwrap();
    fake.reply(400, r#"{"code":"invalid","message":"unable to parse 'm,k=v value=1.5': bad timestamp"}"#);
    expect_permanent(
        v2.write(&batch).await,
        "http_4xx",
        "1 points sent: unable to parse 'm,k=v value=1.5': bad timestamp",
    );
    let request = fake.last();
    assert_eq!(request.uri, "/api/v2/write?org=acme&bucket=metrics&precision=ms");
    assert_eq!(request.headers["authorization"], "Token s3cret");

    // OpenTSDB: per-point errors of the details answer in the message; the body is JSON.
    fake.reply(
        400,
        r#"{"success":0,"failed":1,"errors":[{"datapoint":{"metric":"m","timestamp":1700000000000,"value":1.5,"tags":{"k":"v"}},"error":"Unknown metric"}]}"#,
    );
    let message = expect_permanent(opentsdb.write(&batch).await, "http_4xx", "1 of 1 points failed (0 stored)");
    assert!(message.contains("m{k=v} @1700000000000: Unknown metric"), "{message}");
    let request = fake.last();
    assert_eq!(request.uri, "/api/put?details");
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        r#"[{"metric":"m","timestamp":1700000000000,"value":1.5,"tags":{"k":"v"}}]"#
    );
    // A 2xx whose details still report failures is not a success.
    fake.reply(200, r#"{"success":0,"failed":1,"errors":[]}"#);
    expect_permanent(opentsdb.write(&batch).await, "partial_write", "1 of 1 points failed");
}
