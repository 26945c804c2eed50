//! The collector in local mode writes to each real backend of the test bed, and what it wrote
//! is read back exactly through that backend's own query API: Prometheus (remote-write
//! receiver), VictoriaMetrics (remote write) and InfluxDB 1.x (line protocol).

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metricshard_e2e::backends::{InfluxDb, Prometheus, VictoriaMetrics};
use metricshard_e2e::{
    ManagedProcess, Outcome, ProcessSpec, free_port, wait_for, workspace_binary,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The exposition every scrape returns: one gauge with a label value that needs escaping in
/// every protocol (a space and a comma), and one with a fractional value.
const EXPOSITION: &str = "# TYPE demo_temperature gauge\n\
demo_temperature{room=\"lab, north\"} 21.5\n\
# TYPE demo_doors gauge\n\
demo_doors 3\n";

/// Serves `EXPOSITION` to every HTTP request on a free loopback port.
async fn start_target() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{EXPOSITION}",
                    EXPOSITION.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

fn output(name: &str, protocol: &str) -> String {
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: {name}, namespace: e2e}}\n\
         spec:\n  protocol:\n    {protocol}\n  batch: {{maxSamples: 100, flushInterval: 200ms}}\n---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_writes_to_every_backend_and_reads_back_exactly() {
    let (prometheus, victoria, influx) = tokio::join!(
        Prometheus::start(),
        VictoriaMetrics::start(),
        InfluxDb::start()
    );
    let (prometheus, victoria, influx) = (prometheus.unwrap(), victoria.unwrap(), influx.unwrap());
    influx.create_database("metrics").await.unwrap();
    let target_port = start_target().await;

    let dir = tempfile::tempdir().unwrap();
    let manifests = format!(
        "{}{}{}\
apiVersion: metricshard.io/v1alpha1
kind: MetricInput
metadata: {{name: lab, namespace: e2e}}
spec:
  interval: 1s
  source:
    prometheus:
      staticTargets: [\"127.0.0.1:{target_port}\"]
  labels:
    site: berlin
  outputs: [{{name: prometheus}}, {{name: victoria}}, {{name: influx}}]
",
        output(
            "prometheus",
            &format!(
                "remoteWrite: {{url: \"{}\"}}",
                prometheus.remote_write_url()
            )
        ),
        output(
            "victoria",
            &format!("remoteWrite: {{url: \"{}\"}}", victoria.remote_write_url())
        ),
        output(
            "influx",
            &format!(
                "influx: {{url: \"{}\", database: metrics}}",
                influx.base_url()
            )
        ),
    );
    std::fs::write(dir.path().join("pipeline.yaml"), manifests).unwrap();
    let _collector = ManagedProcess::start(
        ProcessSpec::new(
            "collector",
            workspace_binary("metricshard-collector").unwrap(),
        )
        .args([
            "--manifests",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", free_port().unwrap()),
        ])
        .env("RUST_LOG", "info"),
    )
    .unwrap();

    let instance = format!("127.0.0.1:{target_port}");
    let expected_labels = |name: &str, extra: &[(&str, &str)]| {
        let mut labels: std::collections::BTreeMap<String, String> = [
            ("__name__", name),
            ("job", "e2e/lab"),
            ("instance", instance.as_str()),
            ("site", "berlin"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        labels.retain(|_, v| !v.is_empty());
        labels
    };

    for (backend, query) in [("prometheus", 0), ("victoria-metrics", 1)] {
        let temperature = wait_for(
            &format!("demo_temperature in {backend}"),
            TIMEOUT,
            || async {
                let result = if query == 0 {
                    prometheus.query("demo_temperature").await
                } else {
                    victoria.query("demo_temperature").await
                };
                result.map(|samples| Outcome::ready_if(!samples.is_empty(), samples))
            },
        )
        .await
        .unwrap();
        assert_eq!(temperature.len(), 1, "{backend}: {temperature:?}");
        assert_eq!(
            temperature[0].metric,
            expected_labels("demo_temperature", &[("room", "lab, north")]),
            "{backend}"
        );
        assert_eq!(temperature[0].value, 21.5, "{backend}");
        let up = if query == 0 {
            prometheus.query("up").await
        } else {
            victoria.query("up").await
        }
        .unwrap();
        assert_eq!(up.len(), 1, "{backend}: {up:?}");
        assert_eq!(
            (up[0].metric.clone(), up[0].value),
            (expected_labels("up", &[]), 1.0),
            "{backend}"
        );
    }

    let series = wait_for("demo_temperature in InfluxDB", TIMEOUT, || async {
        influx
            .query(
                "metrics",
                "SELECT \"value\" FROM \"demo_temperature\" GROUP BY *",
            )
            .await
            .map(|series| Outcome::ready_if(!series.is_empty(), series))
    })
    .await
    .unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    let mut tags = expected_labels("", &[("room", "lab, north")]);
    tags.remove("__name__");
    assert_eq!(series[0].tags, tags);
    assert!(
        series[0]
            .column("value")
            .unwrap()
            .iter()
            .all(|v| v.as_f64() == Some(21.5)),
        "{series:?}"
    );
    let doors = influx
        .query("metrics", "SELECT last(\"value\") FROM \"demo_doors\"")
        .await
        .unwrap();
    assert_eq!(doors[0].column("last").unwrap()[0].as_f64(), Some(3.0));
}
