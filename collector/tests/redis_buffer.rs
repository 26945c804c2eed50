//! The Redis buffer against a real `redis-server` (Debian package `redis-server`), started by each
//! test on a free loopback port with AOF (`appendfsync everysec`) in a temporary directory:
//! acknowledgement, redelivery, a Redis restart, a dead collector's data drained by another,
//! drop-oldest accounting, a model test against the memory buffer, and the real collector binary
//! SIGKILLed repeatedly while it delivers to a remote-write receiver.

// Test harness helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metricshard_collector::buffer::memory::MemoryBuffer;
use metricshard_collector::buffer::redis::orphans::{Discarded, OrphanedQueues};
use metricshard_collector::buffer::redis::{RedisBuffer, RedisBufferConfig};
use metricshard_collector::buffer::{Batch, Buffer, BufferError};
use metricshard_collector::sample::{Labels, Sample};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const MISSING_REDIS: &str = "`redis-server` is not installed: these tests need a real Redis. Install the Debian package \
     `redis-server` (apt-get install -y redis-server) or run scripts/test.sh, which does";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` process of this test, with AOF on, killed when dropped.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let mut server = Self { child: None, port: free_port(), dir: tempfile::tempdir().unwrap() };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server on this port and directory (again), waiting until it answers PING
    /// (after loading its AOF).
    fn spawn(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec", "--dir", &dir, "--save", "", "--logfile", log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{MISSING_REDIS}"),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ping(self.port) {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer PING; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url()).unwrap().get_multiplexed_async_connection().await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 5];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG"
}

fn config(server: &RedisServer, prefix: &str, partitions: u16) -> RedisBufferConfig {
    let mut config = RedisBufferConfig::new(server.url(), prefix);
    config.partitions = partitions;
    config.lease = Duration::from_secs(1);
    config
}

/// Polls until `condition` holds, failing after `timeout`.
async fn within<F: std::future::Future<Output = bool>>(what: &str, timeout: Duration, mut condition: impl FnMut() -> F) {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < timeout, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn owning(buffer: &RedisBuffer, partitions: usize) {
    within(&format!("the buffer leases {partitions} partitions"), Duration::from_secs(10), || async {
        buffer.owned_partitions().len() == partitions
    })
    .await;
}

/// Sample `seq` of a series of scrape target `target`.
fn sample(target: &str, seq: i64) -> Sample {
    Sample::new("seq", Labels::from_pairs([("job", "test"), ("instance", target)]), seq as f64, seq)
}

fn seqs(samples: &[Sample]) -> Vec<i64> {
    samples.iter().map(|s| s.timestamp_ms).collect()
}

/// Retries a buffer operation that fails while Redis is away or reconnecting.
async fn batch_retrying(buffer: &mut RedisBuffer, max: usize) -> Option<Batch> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match buffer.batch(max).await {
            Ok(batch) => return batch,
            Err(error) => {
                assert!(Instant::now() < deadline, "batch kept failing: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Takes and acknowledges batches until the buffer is empty; returns what was delivered.
async fn drain(buffer: &mut RedisBuffer, max: usize) -> Vec<Sample> {
    let mut delivered = Vec::new();
    while let Some(batch) = batch_retrying(buffer, max).await {
        buffer.ack(batch.id).await.unwrap();
        delivered.extend(batch.samples);
    }
    delivered
}

/// Every target's samples in delivery order must be strictly increasing, and together exactly
/// `expected` per target (no loss, no duplicate).
fn assert_exactly_once_in_order(delivered: &[Sample], expected: &BTreeMap<String, Vec<i64>>) {
    let mut per_target: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for sample in delivered {
        per_target.entry(sample.labels.get("instance").unwrap().to_owned()).or_default().push(sample.timestamp_ms);
    }
    assert_eq!(per_target.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    for (target, got) in &per_target {
        assert_eq!(got, &expected[target], "target {target}: delivered sequence differs (loss, duplicate or reorder)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_leave_and_unacknowledged_ones_come_back() {
    let server = RedisServer::start();
    let mut buffer = RedisBuffer::start(config(&server, "ack", 1)).unwrap();
    owning(&buffer, 1).await;

    let outcome = buffer.push((0..10).map(|i| sample("a", i)).collect()).await.unwrap();
    assert_eq!((outcome.accepted, outcome.dropped_oldest), (10, 0));
    assert_eq!(buffer.len(), 10);
    let first = buffer.batch(4).await.unwrap().unwrap();
    assert_eq!(seqs(&first.samples), vec![0, 1, 2, 3]);
    assert_eq!(buffer.batch(100).await.unwrap().unwrap(), first, "an unacknowledged batch is handed out again, unchanged");
    assert!(matches!(buffer.ack(first.id + 99).await, Err(BufferError::UnknownBatch(_))));

    // Every client connection is cut: the buffer reconnects and hands out the same batch.
    let mut admin = server.connection().await;
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query_async(&mut admin).await.unwrap();
    assert!(killed >= 1, "the buffer's connection was cut");
    assert_eq!(batch_retrying(&mut buffer, 4).await.unwrap(), first, "redelivered after reconnecting");
    buffer.ack(first.id).await.unwrap();
    assert_eq!(buffer.len(), 6);
    assert!(matches!(buffer.ack(first.id).await, Err(BufferError::UnknownBatch(_))), "a batch is acknowledged once");
    let rest = buffer.batch(100).await.unwrap().unwrap();
    assert_eq!(seqs(&rest.samples), vec![4, 5, 6, 7, 8, 9]);
    buffer.ack(rest.id).await.unwrap();
    assert_eq!(buffer.batch(100).await.unwrap(), None);
    assert_eq!(buffer.len(), 0);
    assert_eq!(buffer.held_in_redis().await.unwrap(), 0);
    let entries: i64 = redis::cmd("XLEN").arg("{ack:0}:s").query_async(&mut admin).await.unwrap();
    assert_eq!(entries, 0, "acknowledged chunks are removed from the stream");

    // A collector dies with a batch in flight: the next owner of the partition sends it again.
    buffer.push((10..15).map(|i| sample("a", i)).collect()).await.unwrap();
    let in_flight = buffer.batch(3).await.unwrap().unwrap();
    buffer.abandon();
    let mut successor = RedisBuffer::start(config(&server, "ack", 1)).unwrap();
    owning(&successor, 1).await;
    let again = successor.batch(100).await.unwrap().unwrap();
    assert_eq!(again.samples, in_flight.samples, "the dead owner's batch in flight is redelivered first, as it was");
    successor.ack(again.id).await.unwrap();
    assert_eq!(seqs(&drain(&mut successor, 100).await), vec![13, 14]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_that_reached_it() {
    let mut server = RedisServer::start();
    let mut buffer = RedisBuffer::start(config(&server, "restart", 4)).unwrap();
    owning(&buffer, 4).await;
    let targets: Vec<String> = (0..8).map(|t| format!("t{t}")).collect();
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let push_round = |from: i64, to: i64, expected: &mut BTreeMap<String, Vec<i64>>| {
        let mut samples = Vec::new();
        for target in &targets {
            for seq in from..to {
                samples.push(sample(target, seq));
                expected.entry(target.clone()).or_default().push(seq);
            }
        }
        samples
    };
    buffer.push(push_round(0, 250, &mut expected)).await.unwrap();
    let mut delivered = Vec::new();
    while delivered.len() < 1000 {
        let batch = buffer.batch(100).await.unwrap().unwrap();
        buffer.ack(batch.id).await.unwrap();
        delivered.extend(batch.samples);
    }
    // One batch in flight (written, perhaps, but not acknowledged) when Redis dies.
    let _in_flight = buffer.batch(100).await.unwrap().unwrap();
    let held_before = buffer.held_in_redis().await.unwrap();
    assert_eq!(held_before, 2000 - delivered.len() as u64, "the batch in flight is still held");

    server.kill();
    // Redis is down: pushes wait locally, batches fail, nothing panics.
    let outcome = buffer.push(push_round(250, 275, &mut expected)).await.unwrap();
    assert_eq!((outcome.accepted, outcome.dropped_oldest), (200, 0));
    assert_eq!(buffer.staged(), 200);
    assert!(buffer.batch(100).await.is_err());

    server.spawn();
    delivered.extend(drain(&mut buffer, 100).await);
    assert_eq!(buffer.staged(), 0);
    assert_exactly_once_in_order(&delivered, &expected);
    assert_eq!(buffer.held_in_redis().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_collector_drains_what_a_dead_one_left() {
    let server = RedisServer::start();
    let prefix = "handover";
    let mut dead = RedisBuffer::start(config(&server, prefix, 16)).unwrap();
    owning(&dead, 16).await;
    let targets: Vec<String> = (0..40).map(|t| format!("10.0.0.{t}:9100")).collect();
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut round = |from: i64, to: i64| {
        let mut samples = Vec::new();
        for seq in from..to {
            for target in &targets {
                samples.push(sample(target, seq));
                expected.entry(target.clone()).or_default().push(seq);
            }
        }
        samples
    };
    dead.push(round(0, 100)).await.unwrap();
    let mut delivered = Vec::new();
    for _ in 0..5 {
        let batch = dead.batch(200).await.unwrap().unwrap();
        dead.ack(batch.id).await.unwrap();
        delivered.extend(batch.samples);
    }
    let _in_flight = dead.batch(200).await.unwrap().unwrap();
    dead.abandon();

    // The survivor first gets its share, then every partition once the dead one's leases and
    // membership expire, and delivers everything, the dead one's batch in flight included.
    let started = Instant::now();
    let mut survivor = RedisBuffer::start(config(&server, prefix, 16)).unwrap();
    owning(&survivor, 16).await;
    eprintln!("survivor leased all 16 partitions {:?} after the other collector died (lease 1s)", started.elapsed());
    delivered.extend(drain(&mut survivor, 200).await);
    assert_eq!(survivor.held_in_redis().await.unwrap(), 0);

    // Two live collectors share the partitions and together deliver everything, once, in order.
    let mut peer = RedisBuffer::start(config(&server, prefix, 16)).unwrap();
    within("the partitions are split between the two", Duration::from_secs(10), || async {
        let (a, b) = (survivor.owned_partitions(), peer.owned_partitions());
        a.len() == 8 && b.len() == 8 && a.iter().all(|p| !b.contains(p))
    })
    .await;
    survivor.push(round(100, 150)).await.unwrap();
    peer.push(round(150, 200)).await.unwrap();
    let mut idle_rounds = 0;
    while idle_rounds < 3 {
        let mut idle = true;
        for buffer in [&mut survivor, &mut peer] {
            if let Some(batch) = batch_retrying(buffer, 150).await {
                buffer.ack(batch.id).await.unwrap();
                delivered.extend(batch.samples);
                idle = false;
            }
        }
        idle_rounds = if idle { idle_rounds + 1 } else { 0 };
    }
    assert_exactly_once_in_order(&delivered, &expected);
    assert_eq!(peer.held_in_redis().await.unwrap(), 0);
}

/// Samples held in Redis under a queue prefix, read through a buffer of its own (which joins the
/// queue's members and takes leases for a while).
async fn held_under(server: &RedisServer, prefix: &str) -> u64 {
    let mut reader = RedisBuffer::start(config(server, prefix, 16)).unwrap();
    let held = reader.held_in_redis().await.unwrap();
    reader.abandon();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_no_destination_uses_is_discarded_after_its_retention_and_counted() {
    let server = RedisServer::start();
    let live = "out:node/a/00000000000000aa";
    let orphan = "out:node/b/00000000000000bb";
    let targets = |from: usize, count: usize| (from..from + count).map(|t| sample(&format!("10.0.1.{t}:9100"), 1)).collect::<Vec<_>>();

    // The live destination's queue; a queue whose address left the spec, its collector gone
    // with a batch in flight; the output's plain queue, which a collector still runs (an older
    // generation of the output, say); and another output's abandoned queue.
    let mut running = RedisBuffer::start(config(&server, live, 16)).unwrap();
    running.push(targets(0, 100)).await.unwrap();
    let mut gone = RedisBuffer::start(config(&server, orphan, 16)).unwrap();
    gone.push(targets(0, 300)).await.unwrap();
    owning(&gone, 16).await;
    let _in_flight = gone.batch(50).await.unwrap().unwrap();
    gone.abandon();
    let abandoned = Instant::now();
    let mut older_generation = RedisBuffer::start(config(&server, "out", 16)).unwrap();
    older_generation.push(targets(0, 70)).await.unwrap();
    let mut other_output = RedisBuffer::start(config(&server, "out2:node/b/00000000000000bb", 16)).unwrap();
    other_output.push(targets(0, 10)).await.unwrap();
    other_output.abandon();

    let retention = Duration::from_secs(2);
    let mut sweeper = OrphanedQueues::new(&server.url(), "out", [live.to_owned()], retention).unwrap();
    let mut discarded = Vec::new();
    while discarded.is_empty() {
        assert!(abandoned.elapsed() < Duration::from_secs(20), "the orphaned queue was never discarded");
        discarded = sweeper.pass().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited = abandoned.elapsed();
    eprintln!("orphaned queue discarded {waited:?} after its collector died (lease 1s, retention 2s)");
    assert!(waited >= retention, "discarded after {waited:?}, before the retention of {retention:?}");
    assert_eq!(discarded, vec![Discarded { queue: orphan.to_owned(), samples: 300 }], "its 300 samples, the batch in flight included");
    let mut connection = server.connection().await;
    let left: Vec<String> = redis::cmd("KEYS").arg(format!("{{{orphan}:*")).query_async(&mut connection).await.unwrap();
    assert!(left.is_empty(), "keys of the discarded queue left: {left:?}");

    // Long after, nothing else went: not the live queue, not the queue a collector still runs,
    // not another output's.
    tokio::time::sleep(retention + Duration::from_millis(500)).await;
    assert_eq!(sweeper.pass().await.unwrap(), vec![]);
    assert_eq!(held_under(&server, live).await, 100);
    assert_eq!(older_generation.held_in_redis().await.unwrap(), 70);
    assert_eq!(held_under(&server, "out2:node/b/00000000000000bb").await, 10);
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_at_the_limit_is_counted_exactly() {
    let server = RedisServer::start();
    let mut cfg = config(&server, "limit", 1);
    cfg.max_samples = 100;
    let mut buffer = RedisBuffer::start(cfg).unwrap();
    owning(&buffer, 1).await;

    let outcome = buffer.push((0..150).map(|i| sample("a", i)).collect()).await.unwrap();
    assert_eq!(outcome.dropped_oldest, 50);
    assert_eq!(buffer.len(), 100);
    let in_flight = buffer.batch(30).await.unwrap().unwrap();
    assert_eq!(seqs(&in_flight.samples), (50..80).collect::<Vec<_>>(), "the oldest 50 went");
    // 70 queued + 50 new, room for 70 beside the batch in flight: the 50 oldest queued go.
    let outcome = buffer.push((150..200).map(|i| sample("a", i)).collect()).await.unwrap();
    assert_eq!(outcome.dropped_oldest, 50);
    assert_eq!(buffer.len(), 100);
    assert_eq!(buffer.batch(30).await.unwrap().unwrap(), in_flight, "the batch in flight is never dropped");
    buffer.ack(in_flight.id).await.unwrap();
    assert_eq!(seqs(&drain(&mut buffer, 1000).await), (130..200).collect::<Vec<_>>());
    assert_eq!(buffer.dropped_in_redis().await.unwrap(), 100);

    // Many partitions: every dropped sample is counted once, and what is held respects the limit.
    let mut cfg = config(&server, "limit16", 16);
    cfg.max_samples = 1600;
    let mut buffer = RedisBuffer::start(cfg).unwrap();
    owning(&buffer, 16).await;
    let mut dropped = 0;
    for round in 0..20 {
        let samples: Vec<Sample> = (0..64).flat_map(|t| (0..10).map(move |i| sample(&format!("t{t}"), round * 10 + i))).collect();
        dropped += buffer.push(samples).await.unwrap().dropped_oldest;
        let held = buffer.held_in_redis().await.unwrap();
        assert!(held <= 1600, "held {held} beyond the limit");
        assert_eq!(held + dropped, (round as u64 + 1) * 640, "every sample is held or counted as dropped");
    }
    assert_eq!(buffer.dropped_in_redis().await.unwrap(), dropped);
    assert!(dropped > 0);
}

/// Collectors pushing to one partition at once while its owner drains it: every push appends at
/// the partition's tail and the drainer's batches and acks move its head meanwhile. Nothing may
/// be lost, duplicated or reordered, and what each writer pushed must be in Redis when its push
/// returns (nothing left staged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushers_and_a_drainer_lose_nothing_and_keep_order() {
    let server = RedisServer::start();
    let mut drainer = RedisBuffer::start(config(&server, "race", 1)).unwrap();
    owning(&drainer, 1).await;
    const PER_WRITER: i64 = 1_500;
    let writers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(w, target)| {
            let cfg = config(&server, "race", 1);
            tokio::spawn(async move {
                let mut buffer = RedisBuffer::start(cfg).unwrap();
                let mut seq = 0i64;
                let mut size = 7 * (w as i64 + 1);
                while seq < PER_WRITER {
                    // Pushes of 1..40 samples, different per writer.
                    size = (size * 13 + 5) % 40 + 1;
                    let end = (seq + size).min(PER_WRITER);
                    let outcome = buffer.push((seq..end).map(|i| sample(target, i)).collect()).await.unwrap();
                    assert_eq!(outcome.dropped_oldest, 0);
                    seq = end;
                }
                // Samples that could not reach Redis would only be staged: none may be.
                assert_eq!(buffer.staged(), 0, "writer {target} left samples staged");
            })
        })
        .collect();
    let mut delivered = Vec::new();
    let mut writers_done = false;
    loop {
        match drainer.batch(100).await.unwrap() {
            Some(batch) => {
                drainer.ack(batch.id).await.unwrap();
                delivered.extend(batch.samples);
            }
            None if writers_done => break,
            None => {
                // Checked before the next batch: once every writer is done, one more empty batch
                // means everything was delivered.
                writers_done = writers.iter().all(|w| w.is_finished());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let expected: BTreeMap<String, Vec<i64>> = ["a", "b", "c"].iter().map(|t| ((*t).to_owned(), (0..PER_WRITER).collect())).collect();
    assert_exactly_once_in_order(&delivered, &expected);
    assert_eq!(drainer.held_in_redis().await.unwrap(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Batch(usize),
    Ack { right_id: bool },
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..40).prop_map(Op::Push),
        3 => (1usize..30).prop_map(Op::Batch),
        3 => any::<bool>().prop_map(|right_id| Op::Ack { right_id }),
        1 => Just(Op::Reconnect),
    ]
}

/// Model test: with one partition, every push / batch / ack sequence gives exactly the memory
/// buffer's results (outcomes, batches with their ids, errors, lengths), connection cuts included.
#[test]
fn behaves_like_the_memory_buffer() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = RedisServer::start();
    let case = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() });
    let strategy = (1u64..60, proptest::collection::vec(op(), 1..40));
    runner
        .run(&strategy, |(limit, ops)| {
            let prefix = format!("model{}", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            runtime.block_on(async {
                let mut cfg = config(&server, &prefix, 1);
                cfg.max_samples = limit;
                let mut redis = RedisBuffer::start(cfg).unwrap();
                owning(&redis, 1).await;
                let mut admin = server.connection().await;
                let mut model = MemoryBuffer::new(limit);
                let (mut next, mut last_id) = (0i64, 0u64);
                for op in ops {
                    match op {
                        Op::Push(n) => {
                            let samples: Vec<Sample> = (next..next + n as i64).map(|i| sample("a", i)).collect();
                            next += n as i64;
                            let expected = model.push(samples.clone()).await.unwrap();
                            prop_assert_eq!(redis.push(samples).await.unwrap(), expected);
                        }
                        Op::Batch(max) => {
                            let expected = model.batch(max).await.unwrap();
                            let got = redis.batch(max).await.unwrap();
                            if let Some(batch) = &expected {
                                last_id = batch.id;
                            }
                            prop_assert_eq!(got, expected);
                        }
                        Op::Ack { right_id } => {
                            let id = if right_id { last_id } else { last_id + 1 };
                            let expected = model.ack(id).await;
                            let got = redis.ack(id).await;
                            prop_assert_eq!(got.is_ok(), expected.is_ok(), "ack {} gave {:?}, model {:?}", id, got, expected);
                        }
                        Op::Reconnect => {
                            let _: redis::RedisResult<i64> = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").query_async(&mut admin).await;
                            // The next command notices the cut and reconnects.
                            let deadline = Instant::now() + Duration::from_secs(10);
                            while redis.held_in_redis().await.is_err() {
                                assert!(Instant::now() < deadline, "the buffer did not reconnect");
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    prop_assert_eq!(redis.len(), model.len());
                }
                Ok(())
            })
        })
        .unwrap();
}

// ---- The real collector, SIGKILLed while it delivers --------------------------------------

/// Scrape targets: `/metrics/{name}` serves SERIES counters whose value is the number of times
/// that target was scraped, so every sample carries a sequence number.
const SERIES: usize = 50;

#[derive(Clone, Default)]
struct Scrapes(Arc<Mutex<HashMap<String, u64>>>);

async fn start_targets() -> (SocketAddr, Scrapes) {
    use axum::extract::{Path as UrlPath, State};
    let scrapes = Scrapes::default();
    let app = axum::Router::new()
        .route(
            "/metrics/{name}",
            axum::routing::get(|State(scrapes): State<Scrapes>, UrlPath(name): UrlPath<String>| async move {
                let count = {
                    let mut all = scrapes.0.lock().unwrap();
                    let count = all.entry(name.clone()).or_default();
                    *count += 1;
                    *count
                };
                let mut body = String::from("# TYPE seq_total counter\n");
                for series in 0..SERIES {
                    body.push_str(&format!("seq_total{{target=\"{name}\",series=\"{series}\"}} {count}\n"));
                }
                body
            }),
        )
        .with_state(scrapes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, scrapes)
}

/// One received sample: series (sorted labels), timestamp, value.
type Received = (String, i64, u64);

/// A remote-write receiver that records every sample before answering 204, after a short random
/// pause so that kills often land between "written" and "acknowledged".
async fn start_receiver() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    use axum::body::Bytes;
    use axum::extract::State;
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/api/v1/write",
            axum::routing::post(|State(received): State<Arc<Mutex<Vec<Received>>>>, body: Bytes| async move {
                let request = match metricshard_collector::outputs::remote_write::decode_body(&body) {
                    Ok(request) => request,
                    Err(_) => return axum::http::StatusCode::BAD_REQUEST,
                };
                {
                    let mut all = received.lock().unwrap();
                    for series in request.timeseries {
                        let key = series.labels.iter().map(|l| format!("{}={:?}", l.name, l.value)).collect::<Vec<_>>().join(",");
                        for sample in series.samples {
                            all.push((key.clone(), sample.timestamp, sample.value.to_bits()));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 25)).await;
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

struct Collector {
    child: Child,
    stderr: PathBuf,
}

impl Collector {
    fn start(manifests: &Path, stderr: PathBuf) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_metricshard-collector"))
            .args(["--manifests", manifests.to_str().unwrap(), "--listen", &format!("127.0.0.1:{}", free_port())])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, stderr }
    }

    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- collector stderr ----\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
        }
    }
}

/// Samples that ever reached Redis (each partition's next sequence number minus one), and those
/// still held there.
async fn redis_totals(connection: &mut redis::aio::MultiplexedConnection, prefix: &str) -> (u64, u64) {
    let (mut pushed, mut held) = (0, 0);
    for partition in 0..metricshard_collector::buffer::redis::PARTITIONS {
        let fields: Vec<Option<u64>> =
            redis::cmd("HMGET").arg(format!("{{{prefix}:{partition}}}:m")).arg(&["head", "flight", "gap", "tail"]).query_async(connection).await.unwrap();
        let head = fields[0].unwrap_or(1);
        let flight = fields[1].unwrap_or(head);
        let gap = fields[2].unwrap_or(flight);
        let tail = fields[3].unwrap_or(gap);
        pushed += tail - 1;
        held += (tail - head) - (gap - flight);
    }
    (pushed, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_flushes_loses_nothing_that_reached_redis() {
    let server = RedisServer::start();
    let (targets, scrapes) = start_targets().await;
    let (receiver, received) = start_receiver().await;
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let prefix = "crash";
    std::fs::write(
        manifests.join("output.yaml"),
        format!(
            "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: backend, namespace: demo}}\nspec:\n  \
             protocol: {{remoteWrite: {{url: 'http://{receiver}/api/v1/write'}}}}\n  batch: {{maxSamples: 300, flushInterval: 20ms}}\n  \
             buffer: {{redis: {{url: '{}', keyPrefix: {prefix}, leaseDuration: 1s}}}}\n",
            server.url()
        ),
    )
    .unwrap();
    let names = ["a", "b", "c", "d"];
    for name in names {
        std::fs::write(
            manifests.join(format!("input-{name}.yaml")),
            format!(
                "apiVersion: metricshard.io/v1alpha1\nkind: MetricInput\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  \
                 interval: 100ms\n  timeout: 90ms\n  source: {{prometheus: {{staticTargets: ['{targets}'], metricsPath: /metrics/{name}}}}}\n  \
                 outputs: [{{name: backend}}]\n"
            ),
        )
        .unwrap();
    }
    let stderr = work.path().join("collector.stderr");
    let mut connection = server.connection().await;

    // Kill the collector with SIGKILL at random moments while it scrapes and delivers.
    let kills = 10;
    for _ in 0..kills {
        let collector = Collector::start(&manifests, stderr.clone());
        let before = received.lock().unwrap().len();
        within("the collector delivers", Duration::from_secs(20), || async { received.lock().unwrap().len() > before }).await;
        tokio::time::sleep(Duration::from_millis(100 + rand::random::<u64>() % 700)).await;
        collector.sigkill();
    }

    // A last run without inputs drains what is left, then stops cleanly.
    for name in names {
        std::fs::remove_file(manifests.join(format!("input-{name}.yaml"))).unwrap();
    }
    let collector = Collector::start(&manifests, stderr.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let totals = loop {
        let totals = redis_totals(&mut connection, prefix).await;
        if totals.1 == 0 {
            break totals;
        }
        assert!(Instant::now() < deadline, "Redis was not drained: {totals:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    collector.terminate();
    let (reached_redis, _) = totals;

    let received = received.lock().unwrap().clone();
    let distinct: BTreeSet<&Received> = received.iter().collect();
    let duplicates = received.len() - distinct.len();
    // Per series, first arrivals must be in timestamp order (re-sent batches repeat older samples,
    // which is what at-least-once means; Prometheus ignores identical duplicates).
    let mut first_seen: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for sample in &received {
        if seen.insert(sample) {
            first_seen.entry(sample.0.as_str()).or_default().push(sample.1);
        }
    }
    for (series, timestamps) in &first_seen {
        assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "series {series} arrived out of order: {timestamps:?}");
    }
    // Sequence numbers per counter series: which scrapes never reached the backend.
    let served: HashMap<String, u64> = scrapes.0.lock().unwrap().clone();
    let mut missing_scrapes = 0u64;
    for name in names {
        let values: BTreeSet<u64> = distinct
            .iter()
            .filter(|(series, _, _)| series.contains("__name__=\"seq_total\"") && series.contains(&format!("target=\"{name}\"")) && series.contains("series=\"0\""))
            .map(|(_, _, bits)| f64::from_bits(*bits) as u64)
            .collect();
        missing_scrapes += served[name] - values.len() as u64;
    }
    let served_samples: u64 = served.values().sum::<u64>() * SERIES as u64;
    eprintln!(
        "crash test: {kills} SIGKILLs; scrapes served {} ({served_samples} counter samples); samples that reached Redis {reached_redis}; \
         received {} ({} distinct, {duplicates} duplicates); scrapes lost inside killed processes before reaching Redis: {missing_scrapes}",
        served.values().sum::<u64>(),
        received.len(),
        distinct.len(),
    );
    assert_eq!(distinct.len() as u64, reached_redis, "every sample that reached Redis reached the backend");
    assert!(missing_scrapes <= 2 * kills as u64 * names.len() as u64, "more scrapes lost than the kills can explain: {missing_scrapes}");
}
