//! Exposition-format parse throughput: a generated body of 10,000 samples with 5 labels each,
//! in families of 10 with `# HELP`/`# TYPE`, parsed as text 0.0.4 and as OpenMetrics 1.0.
//! Criterion reports samples/s as "elem/s".
//!
//! Run: `cargo bench -p metricshard-collector --bench parser`. With `PARSER_BENCH_BODY_DIR` set, the
//! bodies are also written there (`text.prom`, `openmetrics.txt`) so that
//! `bench/parser-vs-prometheus/run.sh` can give Prometheus' parser the very same input.

// criterion's macros generate public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::fmt::Write;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metricshard_collector::inputs::prometheus::parser::{ExpositionFormat, parse};

/// The allocator of the collector binary (see its main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAMPLES: usize = 10_000;
const FAMILY_SIZE: usize = 10;

/// A body shaped like a busy exporter's: counters with realistic label values and timestamps.
fn generate_body(format: ExpositionFormat) -> String {
    let mut body = String::with_capacity(SAMPLES * 160);
    for index in 0..SAMPLES {
        let family = index / FAMILY_SIZE;
        if index % FAMILY_SIZE == 0 {
            let _ = writeln!(body, "# HELP app_requests_{family}_total Requests served by handler group {family}.");
            let _ = writeln!(body, "# TYPE app_requests_{family}_total counter");
        }
        let value = (index as f64) * 1.25 + 0.5;
        let _ = write!(
            body,
            "app_requests_{family}_total{{method=\"{}\",code=\"{}\",handler=\"/api/v1/items/{}\",instance=\"10.0.{}.{}:9100\",pod=\"app-7d9f8c-{:05}\"}} {value}",
            ["GET", "POST", "PUT", "DELETE"][index % 4],
            [200, 201, 404, 500, 503][index % 5],
            index % 97,
            index % 256,
            (index / 256) % 256,
            index,
        );
        match format {
            ExpositionFormat::PrometheusText => {
                let _ = writeln!(body, " {}", 1_700_000_000_000_i64 + index as i64);
            }
            ExpositionFormat::OpenMetrics => {
                let _ = writeln!(body, " {}.{:03}", 1_700_000_000 + index / 1000, index % 1000);
            }
        }
    }
    if format == ExpositionFormat::OpenMetrics {
        body.push_str("# EOF\n");
    }
    body
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("exposition_parse");
    group.throughput(Throughput::Elements(SAMPLES as u64));
    for (name, format) in
        [("text_0_0_4", ExpositionFormat::PrometheusText), ("openmetrics_1_0", ExpositionFormat::OpenMetrics)]
    {
        let body = generate_body(format);
        if let Some(dir) = std::env::var_os("PARSER_BENCH_BODY_DIR") {
            let file = if format == ExpositionFormat::OpenMetrics { "openmetrics.txt" } else { "text.prom" };
            if let Err(err) = std::fs::write(std::path::Path::new(&dir).join(file), &body) {
                panic!("cannot write the bench body to {}: {err}", dir.to_string_lossy());
            }
        }
        // Fail loudly rather than measure the speed of an error path.
        match parse(&body, format) {
            Ok(samples) => assert_eq!(samples.len(), SAMPLES, "generated body parses fully"),
            Err(err) => panic!("generated {name} body does not parse: {err}"),
        }
        group.bench_function(name, |b| b.iter(|| parse(black_box(&body), format)));
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
