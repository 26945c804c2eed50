//! Encode cost per sample of each output protocol: one batch of 10,000 samples with 5 labels
//! each (1,000 metric names × 10 series), the batch size of a busy output. Criterion reports
//! samples/s as "elem/s"; ns/sample = 1e9 / that.
//!
//! - `remote_write`: grouping + protobuf + snappy (the whole request body);
//! - `remote_write_protobuf_only`: the protobuf without snappy, to see the split;
//! - `influx_line`: line protocol at millisecond precision;
//! - `opentsdb_json`: the `/api/put` JSON array, with tag sanitising;
//! - `stdout_line`: the stdout/file line format (`outputs::line::render_batch`).
//!
//! Run: `cargo bench -p metricshard-collector --bench encoders`

// criterion's macros generate public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricshard_collector::outputs::{influx, line, opentsdb, remote_write};
use metricshard_collector::sample::{Labels, Sample};

/// The allocator of the collector binary (see its main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAMPLES: usize = 10_000;

/// Samples shaped like a scrape of a busy exporter: realistic label values, distinct series.
fn batch() -> Vec<Sample> {
    (0..SAMPLES)
        .map(|index| {
            let labels = Labels::from_pairs([
                ("method", ["GET", "POST", "PUT", "DELETE"][index % 4].to_owned()),
                ("code", ["200", "201", "404", "500", "503"][index % 5].to_owned()),
                ("handler", format!("/api/v1/items/{}", index % 97)),
                ("instance", format!("10.0.{}.{}:9100", index % 256, (index / 256) % 256)),
                ("pod", format!("app-7d9f8c-{index:05}")),
            ]);
            let value = (index as f64) * 1.25 + 0.5;
            Sample::new(format!("app_requests_{}_total", index / 10), labels, value, 1_700_000_000_000 + index as i64)
        })
        .collect()
}

fn encoders(c: &mut Criterion) {
    let batch = batch();
    let mut group = c.benchmark_group("encode_10k_samples_5_labels");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    group.bench_function("remote_write", |b| {
        b.iter(|| remote_write::encode_batch(black_box(&batch)).map(|body| body.len()))
    });
    group.bench_function("remote_write_protobuf_only", |b| {
        b.iter(|| remote_write::encode_protobuf(black_box(&batch)).len())
    });
    group.bench_function("influx_line", |b| {
        b.iter(|| influx::encode_batch(black_box(&batch), influx::Precision::Milliseconds).body.len())
    });
    group.bench_function("opentsdb_json", |b| {
        b.iter(|| opentsdb::encode_batch(black_box(&batch), opentsdb::encoder::DEFAULT_FALLBACK_TAG).body.len())
    });
    group.bench_function("stdout_line", |b| b.iter(|| line::render_batch(black_box(&batch)).len()));
    group.finish();

    // Body sizes, for the docs: bytes per sample on the wire.
    let sizes = [
        ("remote_write", remote_write::encode_batch(&batch).map(|b| b.len()).unwrap_or(0)),
        ("remote_write_protobuf_only", remote_write::encode_protobuf(&batch).len()),
        ("influx_line", influx::encode_batch(&batch, influx::Precision::Milliseconds).body.len()),
        ("opentsdb_json", opentsdb::encode_batch(&batch, opentsdb::encoder::DEFAULT_FALLBACK_TAG).body.len()),
        ("stdout_line", line::render_batch(&batch).len()),
    ];
    for (name, bytes) in sizes {
        println!("body size {name}: {bytes} bytes, {:.1} bytes/sample", bytes as f64 / SAMPLES as f64);
    }
}

criterion_group!(benches, encoders);
criterion_main!(benches);
