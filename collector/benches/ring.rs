//! Consistent-hash ring: lookup of a series hash at 10, 100 and 1000 nodes × 128 virtual nodes
//! (goal: ≤ 50 ns at 1000), and the series identity hash of a 5-label series.
//!
//! Lookups walk a pre-generated array of 4096 random hashes, so the branch predictor cannot
//! learn one path and the numbers include the cache misses of a real mix of series.
//!
//! Run: `cargo bench -p metricshard-collector --bench ring`

// criterion's macros generate public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use metricshard_collector::fanout::ring::{DEFAULT_VIRTUAL_NODES, HashRing, series_hash, series_hash_with};
use metricshard_collector::sample::Labels;

/// The allocator of the collector binary (see its main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROBES: usize = 4096;

fn probes() -> Vec<u64> {
    // splitmix64: cheap, well spread, reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..PROBES)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let probes = probes();
    let mut group = c.benchmark_group("ring_lookup");
    group.throughput(Throughput::Elements(PROBES as u64));
    for nodes in [10usize, 100, 1000] {
        let ring =
            HashRing::new((0..nodes).map(|i| format!("node-{i}")), DEFAULT_VIRTUAL_NODES).map_err(|e| e.to_string());
        let Ok(ring) = ring else { panic!("ring: {ring:?}") };
        group.bench_with_input(BenchmarkId::from_parameter(format!("{nodes}_nodes")), &ring, |b, ring| {
            b.iter(|| {
                let mut acc = 0u32;
                for &probe in black_box(&probes) {
                    acc = acc.wrapping_add(ring.lookup(probe).0);
                }
                acc
            })
        });
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let labels = Labels::from_pairs([
        ("code", "200"),
        ("handler", "/api/v1/items/42"),
        ("instance", "10.0.3.17:9100"),
        ("method", "GET"),
        ("pod", "app-7d9f8c-00042"),
    ]);
    let mut group = c.benchmark_group("series_hash_5_labels");
    group.throughput(Throughput::Elements(1));
    group.bench_function("allocating", |b| {
        b.iter(|| series_hash(black_box("app_requests_4_total"), black_box(&labels)))
    });
    let mut scratch = Vec::with_capacity(256);
    group.bench_function("scratch", |b| {
        b.iter(|| series_hash_with(black_box("app_requests_4_total"), black_box(&labels), &mut scratch))
    });
    group.finish();
}

criterion_group!(benches, lookup, hashing);
criterion_main!(benches);
