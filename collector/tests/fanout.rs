//! Fan-out through the real collector (local mode) to two real VictoriaMetrics servers:
//!
//! - `sharded` (hash mode, nodes `a` → VM A and `b` → VM B): every series lands in exactly one
//!   backend;
//! - `replicated` (one node with both servers as addresses): every series lands in both.
//!
//! Then VM B is stopped: VM A keeps receiving both outputs' samples while B's queues fill, and
//! after B is restarted on the same port and data directory it catches up from its queues: in
//! the end every backend holds every sequence number it was routed, with no gap.
//!
//! A second test gives the `replicated` output a Redis buffer and an address that refuses
//! connections, then removes that address from the spec: its queue is discarded after
//! `orphanRetention` and its samples counted as `queue_orphaned`, while the other address keeps
//! receiving.
//!
//! Routing details (same node for a series, copies to every address, broadcast) are unit-tested
//! in `collector/src/fanout/delivery.rs`; this test checks the behaviour with real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/sequence.rs"]
mod sequence;

use std::time::Duration;

use common::{Collector, within, write_atomically};
use metricshard_e2e::backends::{Redis, VictoriaMetrics};
use sequence::{input_manifest, read_sequences, start_sequence_target};

const SERIES: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(60);

fn outputs(a: &VictoriaMetrics, b: &VictoriaMetrics) -> String {
    let (a, b) = (a.remote_write_url(), b.remote_write_url());
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: sharded, namespace: demo}}\n\
         spec:\n  protocol:\n    remoteWrite:\n      fanOut:\n        mode: Hash\n        nodes:\n\
         \x20         - {{name: a, addresses: [\"{a}\"]}}\n          - {{name: b, addresses: [\"{b}\"]}}\n\
         \x20 batch: {{maxSamples: 500, flushInterval: 100ms}}\n---\n\
         apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: replicated, namespace: demo}}\n\
         spec:\n  protocol:\n    remoteWrite:\n      fanOut:\n        nodes:\n\
         \x20         - {{name: pair, addresses: [\"{a}\", \"{b}\"]}}\n\
         \x20 batch: {{maxSamples: 500, flushInterval: 100ms}}\n"
    )
}

async fn wait_healthy(backend: &VictoriaMetrics) {
    let http = metricshard_e2e::http_client(Duration::from_secs(2)).unwrap();
    let health = format!("{}/health", backend.base_url());
    within("VictoriaMetrics healthy again", TIMEOUT, || {
        let request = http.get(&health);
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_holds_up_no_other_and_catches_up_after_restart() {
    let (a, b) = tokio::join!(VictoriaMetrics::start(), VictoriaMetrics::start());
    let (a, mut b) = (a.unwrap(), b.unwrap());
    let (target, served) = start_sequence_target(SERIES).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_atomically(&manifests.join("outputs.yaml"), &outputs(&a, &b));
    write_atomically(
        &manifests.join("inputs.yaml"),
        &format!(
            "{}---\n{}",
            input_manifest("sharded", target, "200ms", "150ms", "sharded"),
            input_manifest("replicated", target, "200ms", "150ms", "replicated")
        ),
    );
    let mut collector = Collector::start(&manifests, work.path());

    // Both outputs deliver to both servers.
    within("both servers receive both outputs", TIMEOUT, || async {
        let (sa, sb) = (read_sequences(&a, "sharded").await, read_sequences(&b, "sharded").await);
        let (ra, rb) = (read_sequences(&a, "replicated").await, read_sequences(&b, "replicated").await);
        sa.series() > 0 && sb.series() > 0 && ra.series() == SERIES && rb.series() == SERIES
    })
    .await;

    // B stops (SIGTERM, so that B itself keeps what it acknowledged; a SIGKILL would lose B's
    // own unflushed second of data, which is B's durability window, not the collector's).
    b.process().terminate(Duration::from_secs(10)).unwrap();
    let stopped_at = served.of("replicated");
    // A keeps receiving while B is down: both outputs' samples newer than the stop reach A.
    within("A keeps receiving while B is down", TIMEOUT, || async {
        read_sequences(&a, "replicated").await.highest() >= stopped_at + 10
    })
    .await;
    let a_address = a.remote_write_url();
    let b_address = b.remote_write_url();
    let node_metric = |family: &str, output: &str, node: &str, address: &str| {
        format!("metricshard_output_node_{family}{{output=\"MetricOutput/demo/{output}\",node=\"{node}\",address=\"{address}\"}}")
    };
    within("B's queue grows and B is reported unreachable", TIMEOUT, || async {
        collector.metric(&node_metric("reachable", "replicated", "pair", &b_address)).await == Some(0.0)
            && collector.metric(&node_metric("buffered_samples", "replicated", "pair", &b_address)).await.unwrap_or(0.0) > 0.0
    })
    .await;
    assert_eq!(collector.metric(&node_metric("reachable", "replicated", "pair", &a_address)).await, Some(1.0));
    // Another 3 s of outage: A stays current, so nothing waits on B.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served_now = served.of("replicated");
    let sharded_at_restart = served.of("sharded");
    within("A current during the outage", TIMEOUT, || async { read_sequences(&a, "replicated").await.highest() >= served_now }).await;

    // B comes back on the same port and data directory and catches up from its queues.
    b.process().restart().unwrap();
    wait_healthy(&b).await;
    within("B's queues drained", Duration::from_secs(120), || async {
        collector.metric(&node_metric("reachable", "replicated", "pair", &b_address)).await == Some(1.0)
            && collector.metric(&node_metric("buffered_samples", "replicated", "pair", &b_address)).await == Some(0.0)
            && collector.metric(&node_metric("buffered_samples", "sharded", "b", &b_address)).await == Some(0.0)
    })
    .await;
    // Everything served before B came back has to be on both; take the count now.
    let replicated_at_restart = served_now;
    // A scrape that timed out on the collector's side was served (numbered) but never gathered:
    // such gaps are allowed exactly as often as the collector counted failed gathers.
    let failed_replicated = collector.metric_sum("metricshard_input_gather_errors_total{input=\"demo/replicated\"").await as usize;
    let failed_sharded = collector.metric_sum("metricshard_input_gather_errors_total{input=\"demo/sharded\"").await as usize;
    // Stop the collector cleanly (it flushes what it holds), then compare.
    assert!(collector.terminate().success());
    let last_replicated = served.of("replicated");
    let last_sharded = served.of("sharded");

    let (ra, rb) = (read_sequences(&a, "replicated").await, read_sequences(&b, "replicated").await);
    assert!(ra.missing_scrapes().len() <= failed_replicated, "A lost replicated samples: {:?}", ra.gaps());
    assert!(rb.missing_scrapes().len() <= failed_replicated, "B did not catch up on replicated samples: {:?}", rb.gaps());
    assert_eq!(ra.series(), SERIES);
    assert_eq!(ra.numbers, rb.numbers, "both addresses of the node hold the same samples");
    assert!(rb.lowest_highest() >= replicated_at_restart, "B holds {} of {replicated_at_restart}", rb.lowest_highest());

    let (sa, sb) = (read_sequences(&a, "sharded").await, read_sequences(&b, "sharded").await);
    let sharded_missing: std::collections::BTreeSet<u64> = sa.missing_scrapes().union(&sb.missing_scrapes()).copied().collect();
    assert!(sharded_missing.len() <= failed_sharded, "sharded samples lost: A {:?}, B {:?}", sa.gaps(), sb.gaps());
    // Every series on exactly one node, and complete there up to B's restart at least.
    for series in 0..SERIES {
        let name = series.to_string();
        let on_a = sa.numbers.contains_key(&name);
        let on_b = sb.numbers.contains_key(&name);
        assert!(on_a != on_b, "series {name}: on A {on_a}, on B {on_b}; it must be on exactly one node");
        let numbers = if on_a { &sa.numbers[&name] } else { &sb.numbers[&name] };
        assert!(numbers.last().copied().unwrap_or(0) >= sharded_at_restart, "series {name} stops at {:?}", numbers.last());
    }
    assert!(sa.series() > 0 && sb.series() > 0, "16 series spread over two nodes");
    eprintln!(
        "fan-out: {last_replicated} scrapes replicated, {last_sharded} sharded ({} series on A, {} on B); duplicates A {} B {}",
        sa.series(),
        sb.series(),
        ra.duplicates + sa.duplicates,
        rb.duplicates + sb.duplicates
    );
}

/// The `replicated` output with a Redis buffer, over `addresses`; a queue unused for 1 s goes.
fn redis_output(redis: &Redis, addresses: &[String]) -> String {
    let addresses = addresses.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: replicated, namespace: demo}}\n\
         spec:\n  protocol:\n    remoteWrite:\n      fanOut:\n        nodes:\n\
         \x20         - {{name: pair, addresses: [{addresses}]}}\n\
         \x20 batch: {{maxSamples: 500, flushInterval: 100ms}}\n\
         \x20 buffer:\n    redis: {{url: \"{}\", leaseDuration: 1s, orphanRetention: 1s}}\n",
        redis.url()
    )
}

/// Queue prefixes of the `replicated` output that hold data in Redis.
async fn queues_in_redis(redis: &Redis) -> std::collections::BTreeSet<String> {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        ::redis::cmd("KEYS").arg("{metricshard:v1:MetricOutput/demo/replicated:*}:m").query_async(&mut connection).await.unwrap();
    keys.iter().filter_map(|key| key.rsplit_once(':').and_then(|(head, _)| head.rsplit_once(':')).map(|(queue, _)| queue.to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_of_a_removed_address_is_discarded_and_counted() {
    let (backend, redis) = tokio::join!(VictoriaMetrics::start(), Redis::start());
    let (backend, redis) = (backend.unwrap(), redis.unwrap());
    // The second address refuses connections: its queue only grows.
    let dead = format!("http://127.0.0.1:{}/api/v1/write", common::free_port());
    let (target, _served) = start_sequence_target(SERIES).await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    write_atomically(&manifests.join("outputs.yaml"), &redis_output(&redis, &[backend.remote_write_url(), dead.clone()]));
    write_atomically(&manifests.join("inputs.yaml"), &input_manifest("replicated", target, "200ms", "150ms", "replicated"));
    let collector = Collector::start(&manifests, work.path());
    let buffered = format!(
        "metricshard_output_node_buffered_samples{{output=\"MetricOutput/demo/replicated\",node=\"pair\",address=\"{dead}\"}}"
    );
    within("the dead address's queue holds samples", TIMEOUT, || async {
        collector.metric(&buffered).await.unwrap_or(0.0) >= (SERIES * 5) as f64
    })
    .await;
    assert_eq!(queues_in_redis(&redis).await.len(), 2, "one queue per address");

    // The dead address leaves the spec: its queue has no delivery loop any more.
    let held_before = collector.metric(&buffered).await.unwrap_or(0.0);
    write_atomically(&manifests.join("outputs.yaml"), &redis_output(&redis, &[backend.remote_write_url()]));
    let discarded = "metricshard_output_dropped_samples_total{output=\"MetricOutput/demo/replicated\",reason=\"queue_orphaned\"}";
    within("the orphaned queue is discarded and counted", TIMEOUT, || async { collector.metric(discarded).await.unwrap_or(0.0) > 0.0 })
        .await;
    let counted = collector.metric(discarded).await.unwrap();
    eprintln!("discarded {counted} samples of the removed address (its depth before the edit: {held_before})");
    assert!(counted >= held_before, "counted {counted}, but the queue held {held_before} before the edit");
    assert_eq!(queues_in_redis(&redis).await.len(), 1, "only the remaining address's queue is left");
    // The remaining address keeps receiving.
    let highest = read_sequences(&backend, "replicated").await.highest();
    within("the remaining address keeps receiving", TIMEOUT, || async {
        read_sequences(&backend, "replicated").await.highest() >= highest + 5
    })
    .await;
    assert!(!collector.log().contains("panicked"), "collector log:\n{}", collector.log());
}
