//! The metric backends and Redis of the test bed: each starts, takes a sample through its
//! ingestion API and gives it back through its query API.
//!
//! The Prometheus remote-write request is encoded here by hand (protobuf + snappy), apart from
//! the collector's encoder, so that this test checks the backends and not our own code.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metricshard_e2e::backends::{InfluxDb, Prometheus, Redis, RespValue, VictoriaMetrics};
use metricshard_e2e::{Outcome, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Protobuf varint.
fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A length-delimited protobuf field.
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A snappy-compressed `prometheus.WriteRequest` with one series and one sample.
fn remote_write_body(labels: &[(&str, &str)], value: f64, timestamp_ms: i64) -> Vec<u8> {
    let mut series = Vec::new();
    for (name, label_value) in labels {
        let mut label = Vec::new();
        bytes_field(1, name.as_bytes(), &mut label);
        bytes_field(2, label_value.as_bytes(), &mut label);
        bytes_field(1, &label, &mut series);
    }
    let mut sample = Vec::new();
    varint((1 << 3) | 1, &mut sample); // value: double (fixed64)
    sample.extend_from_slice(&value.to_le_bytes());
    varint(2 << 3, &mut sample); // timestamp: int64 (varint)
    varint(timestamp_ms as u64, &mut sample);
    bytes_field(2, &sample, &mut series);
    let mut request = Vec::new();
    bytes_field(1, &series, &mut request);
    snap::raw::Encoder::new().compress_vec(&request).unwrap()
}

async fn remote_write(url: &str, body: Vec<u8>) {
    let response = metricshard_e2e::http_client(TIMEOUT)
        .unwrap()
        .post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "remote write to {url}: {status} {}",
        response.text().await.unwrap()
    );
}

#[tokio::test]
async fn prometheus_accepts_remote_write_and_answers_queries() {
    let prometheus = Prometheus::start().await.unwrap();
    let ts = now_ms();
    remote_write(
        &prometheus.remote_write_url(),
        remote_write_body(
            &[("__name__", "e2e_remote_write"), ("case", "prometheus")],
            42.5,
            ts,
        ),
    )
    .await;
    let samples = wait_for(
        "the sample to be queryable in Prometheus",
        TIMEOUT,
        || async {
            let samples = prometheus
                .query("e2e_remote_write{case=\"prometheus\"}")
                .await?;
            anyhow::Ok(Outcome::ready_if(!samples.is_empty(), samples))
        },
    )
    .await
    .unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].value, 42.5);
    assert_eq!(samples[0].label("case"), Some("prometheus"));
    // An unknown series is absent, not an error: the query really filters.
    assert!(
        prometheus
            .query("e2e_remote_write{case=\"other\"}")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn victoria_metrics_accepts_remote_write_and_exports_raw_samples() {
    let vm = VictoriaMetrics::start().await.unwrap();
    let ts = now_ms();
    for (offset, value) in [(0, 1.0), (1000, 2.0)] {
        remote_write(
            &vm.remote_write_url(),
            remote_write_body(
                &[("__name__", "e2e_remote_write"), ("case", "vm")],
                value,
                ts + offset,
            ),
        )
        .await;
    }
    let exported = wait_for(
        "both samples in VictoriaMetrics' export",
        TIMEOUT,
        || async {
            vm.force_flush().await?;
            let series = vm.export("e2e_remote_write{case=\"vm\"}").await?;
            let complete = series.first().is_some_and(|s| s.values.len() == 2);
            anyhow::Ok(Outcome::ready_if(complete, series))
        },
    )
    .await
    .unwrap();
    assert_eq!(exported[0].values, vec![1.0, 2.0]);
    assert_eq!(exported[0].timestamps, vec![ts, ts + 1000]);
    let samples = vm.query("e2e_remote_write{case=\"vm\"}").await.unwrap();
    assert_eq!(samples.len(), 1, "{samples:?}");
}

#[tokio::test]
async fn influxdb_accepts_line_protocol_and_answers_influxql() {
    let influx = InfluxDb::start().await.unwrap();
    influx.create_database("e2e").await.unwrap();
    let ts_ns = now_ms() * 1_000_000;
    let response = metricshard_e2e::http_client(TIMEOUT)
        .unwrap()
        .post(influx.write_url("e2e"))
        .body(format!("e2e_line,case=influx value=3.25 {ts_ns}\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        204,
        "{}",
        response.text().await.unwrap()
    );
    let series = wait_for("the point in InfluxDB", TIMEOUT, || async {
        let series = influx
            .query("e2e", "SELECT value, \"case\" FROM e2e_line")
            .await?;
        anyhow::Ok(Outcome::ready_if(!series.is_empty(), series))
    })
    .await
    .unwrap();
    assert_eq!(series[0].name, "e2e_line");
    assert_eq!(
        series[0].column("value").unwrap(),
        vec![&serde_json::json!(3.25)]
    );
    assert_eq!(
        series[0].column("time").unwrap(),
        vec![&serde_json::json!(ts_ns / 1_000_000)]
    );
    // A missing database is an error, not an empty answer.
    assert!(
        influx
            .query("no_such_db", "SELECT * FROM e2e_line")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn redis_keeps_its_data_across_a_crash_and_a_clean_restart() {
    let mut redis = Redis::start().await.unwrap();
    assert_eq!(
        redis.command(&["SET", "before-crash", "1"]).await.unwrap(),
        RespValue::Simple("OK".to_owned())
    );
    let port = redis.port();

    // SIGKILL: the AOF was written (not necessarily fsynced) before SET was answered, and the
    // page cache survives a process crash.
    redis.kill().unwrap();
    assert!(
        redis.command(&["PING"]).await.is_err(),
        "redis still answers after SIGKILL"
    );
    redis.restart().await.unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis
            .command(&["GET", "before-crash"])
            .await
            .unwrap()
            .as_text()
            .as_deref(),
        Some("1")
    );

    redis.command(&["RPUSH", "list", "a", "b"]).await.unwrap();
    redis.restart().await.unwrap(); // clean SIGTERM shutdown, then start
    assert_eq!(
        redis.command(&["LLEN", "list"]).await.unwrap().as_integer(),
        Some(2)
    );
    assert_eq!(
        redis
            .command(&["CONFIG", "GET", "appendonly"])
            .await
            .unwrap(),
        RespValue::Array(Some(vec![
            RespValue::Bulk(Some(b"appendonly".to_vec())),
            RespValue::Bulk(Some(b"yes".to_vec()))
        ]))
    );
    assert!(redis.data_dir().join("appendonlydir").is_dir());
}
