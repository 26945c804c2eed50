//! Buffers: the encoding of buffered samples (chosen by these numbers), and the memory path
//! against the Redis path (push a scrape, take a batch, acknowledge it).
//!
//! - `buffer_encoding/*`: encode and decode 1,000 samples shaped like one node-exporter scrape
//!   (shared `job`/`instance`, families of 10 series, one timestamp) in four formats: the chosen
//!   codec (previous-sample references + deltas), a plain length-prefixed binary format, that
//!   codec snappy-compressed, and JSON. Bytes per sample are printed once.
//! - `buffer_path/*`: push 1,000 samples, batch 1,000, ack, through `MemoryBuffer` and through
//!   `RedisBuffer` against a `redis-server` the bench starts itself (AOF everysec, loopback).
//! - After criterion, a fixed run of the Redis path prints samples/s and samples per CPU-second
//!   counting the bench process and redis-server together.
//!
//! Run: `cargo bench -p metricshard-collector --bench buffer`
//! (needs the Debian package `redis-server`)

// criterion's macros generate public functions that cannot carry doc comments.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use metricshard_collector::buffer::codec;
use metricshard_collector::buffer::memory::MemoryBuffer;
use metricshard_collector::buffer::redis::{RedisBuffer, RedisBufferConfig};
use metricshard_collector::buffer::Buffer;
use metricshard_collector::sample::{Labels, Sample};

/// The allocator of the collector binary (see its main.rs), so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SCRAPE: usize = 1_000;

/// One scrape of a node-exporter-like target: families of 10 series, 3-4 labels each.
fn scrape(target: usize, tick: i64) -> Vec<Sample> {
    let instance = format!("10.0.{}.{}:9100", target / 256, target % 256);
    (0..SCRAPE)
        .map(|i| {
            let family = i / 10;
            let mut labels = Labels::from_pairs([("job", "node"), ("instance", instance.as_str())]);
            labels.set("cpu", (i % 10).to_string());
            if family % 3 == 0 {
                labels.set("mode", ["idle", "user", "system", "iowait"][family % 4]);
            }
            Sample::new(format!("node_metric_family_{family}_total"), labels, (i as f64) * 1.5 + tick as f64, 1_700_000_000_000 + tick * 15_000)
        })
        .collect()
}

/// The plain alternative: every string length-prefixed, no references, absolute timestamps.
mod plain {
    use metricshard_collector::sample::{Labels, Sample};

    pub fn encode(samples: &[Sample]) -> Vec<u8> {
        let mut out = Vec::with_capacity(samples.len() * 120);
        out.extend_from_slice(&(samples.len() as u32).to_le_bytes());
        for sample in samples {
            put(&mut out, &sample.name);
            out.extend_from_slice(&(sample.labels.len() as u16).to_le_bytes());
            for label in &sample.labels {
                put(&mut out, &label.name);
                put(&mut out, &label.value);
            }
            out.extend_from_slice(&sample.value.to_bits().to_le_bytes());
            out.extend_from_slice(&sample.timestamp_ms.to_le_bytes());
        }
        out
    }

    fn put(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Option<Vec<Sample>> {
        let mut pos = 0;
        let count = u32::from_le_bytes(take(bytes, &mut pos)?);
        let mut samples = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name = text(bytes, &mut pos)?;
            let labels_len = u16::from_le_bytes(take(bytes, &mut pos)?);
            let mut labels = Labels::default();
            for _ in 0..labels_len {
                let label_name = text(bytes, &mut pos)?;
                labels.set(label_name, text(bytes, &mut pos)?);
            }
            let value = f64::from_bits(u64::from_le_bytes(take(bytes, &mut pos)?));
            let timestamp = i64::from_le_bytes(take(bytes, &mut pos)?);
            samples.push(Sample::new(name, labels, value, timestamp));
        }
        Some(samples)
    }

    fn take<const N: usize>(bytes: &[u8], pos: &mut usize) -> Option<[u8; N]> {
        let slice = bytes.get(*pos..*pos + N)?;
        *pos += N;
        slice.try_into().ok()
    }

    fn text(bytes: &[u8], pos: &mut usize) -> Option<String> {
        let len = u32::from_le_bytes(take(bytes, pos)?) as usize;
        let slice = bytes.get(*pos..*pos + len)?;
        *pos += len;
        String::from_utf8(slice.to_vec()).ok()
    }
}

/// The JSON alternative, through serde.
mod json {
    use metricshard_collector::sample::{Labels, Sample};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct JsonSample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
        timestamp: i64,
    }

    pub fn encode(samples: &[Sample]) -> Vec<u8> {
        let mirror: Vec<JsonSample> = samples
            .iter()
            .map(|s| JsonSample {
                name: s.name.to_string(),
                labels: s.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect(),
                value: s.value,
                timestamp: s.timestamp_ms,
            })
            .collect();
        serde_json::to_vec(&mirror).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Vec<Sample>> {
        let mirror: Vec<JsonSample> = serde_json::from_slice(bytes).ok()?;
        Some(mirror.into_iter().map(|s| Sample::new(s.name, Labels::from_pairs(s.labels), s.value, s.timestamp)).collect())
    }
}

fn snappy_encode(samples: &[Sample]) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&codec::encode(samples)).unwrap_or_default()
}

fn snappy_decode(bytes: &[u8]) -> Option<Vec<Sample>> {
    codec::decode(&snap::raw::Decoder::new().decompress_vec(bytes).ok()?).ok()
}

type Encode = fn(&[Sample]) -> Vec<u8>;
type Decode = fn(&[u8]) -> Option<Vec<Sample>>;

fn formats() -> [(&'static str, Encode, Decode); 4] {
    [
        ("codec", codec::encode, |bytes| codec::decode(bytes).ok()),
        ("plain_length_prefixed", plain::encode, plain::decode),
        ("codec_snappy", snappy_encode, snappy_decode),
        ("json", json::encode, json::decode),
    ]
}

fn encoding(c: &mut Criterion) {
    let samples = scrape(7, 1);
    let mut group = c.benchmark_group("buffer_encoding");
    group.throughput(Throughput::Elements(SCRAPE as u64));
    for (name, encode, decode) in formats() {
        let bytes = encode(&samples);
        assert_eq!(decode(&bytes).as_deref(), Some(samples.as_slice()), "{name} round trip");
        println!("buffer_encoding/{name}: {:.1} bytes/sample", bytes.len() as f64 / SCRAPE as f64);
        group.bench_function(format!("{name}/encode"), |b| b.iter(|| encode(black_box(&samples))));
        group.bench_function(format!("{name}/decode"), |b| b.iter(|| decode(black_box(&bytes))));
    }
    group.finish();
}

/// A redis-server of the bench on a free port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(6399);
        // BENCH_REDIS_APPENDFSYNC=always|everysec|no|off (off: no AOF) to see what durability costs.
        let fsync = std::env::var("BENCH_REDIS_APPENDFSYNC").unwrap_or_else(|_| "everysec".to_owned());
        let (appendonly, fsync) = if fsync == "off" { ("no", "everysec".to_owned()) } else { ("yes", fsync) };
        println!("redis-server: appendonly {appendonly}, appendfsync {fsync}");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", appendonly, "--appendfsync", &fsync])
            .args(["--dir", dir.path().to_str().unwrap_or("."), "--save", ""])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): install the Debian package `redis-server`"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, _dir: dir }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one inline command and returns its reply as text (bulk replies read whole).
fn command(port: u16, line: &str) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") && stream.read_exact(&mut byte).is_ok() {
        reply.push(byte[0]);
    }
    let header = String::from_utf8_lossy(&reply).trim_end().to_owned();
    let Some(len) = header.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else { return header };
    let mut body = vec![0u8; len + 2];
    let _ = stream.read_exact(&mut body);
    String::from_utf8_lossy(&body[..len]).into_owned()
}

/// Redis' time per command since the last reset, per round of `rounds` (microseconds), from
/// `INFO commandstats`: where redis-server's CPU goes.
fn print_commandstats(port: u16, name: &str, rounds: usize) {
    let info = command(port, "INFO commandstats");
    let mut total = 0.0;
    for line in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let Some((cmd, fields)) = line.split_once(':') else { continue };
        let field = |key: &str| {
            fields.split(',').find_map(|f| f.strip_prefix(key)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        };
        let (calls, usec) = (field("calls="), field("usec="));
        if cmd.starts_with("config") || cmd == "info" {
            continue;
        }
        total += usec;
        println!(
            "buffer_commandstats/{name}/{cmd}: {:.2} calls, {:.1} µs per round ({:.1} µs per call)",
            calls / rounds as f64,
            usec / rounds as f64,
            usec / calls.max(1.0)
        );
    }
    println!("buffer_commandstats/{name}: {:.1} µs of redis-server time per round in commands", total / rounds as f64);
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let mut reply = [0u8; 5];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG"
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on Linux whatever the kernel's HZ.
    (ticks(11) + ticks(12)) / 100.0
}

async fn round_trip(buffer: &mut dyn Buffer, samples: Vec<Sample>) {
    let _ = buffer.push(samples).await;
    if let Ok(Some(batch)) = buffer.batch(SCRAPE).await {
        black_box(&batch.samples);
        let _ = buffer.ack(batch.id).await;
    }
}

async fn redis_buffer(server: &RedisServer, prefix: &str) -> RedisBuffer {
    let mut config = RedisBufferConfig::new(format!("redis://127.0.0.1:{}/0", server.port), prefix);
    config.max_samples = 100_000_000;
    let buffer = RedisBuffer::start(config).unwrap_or_else(|e| panic!("{e}"));
    while buffer.owned_partitions().len() < usize::from(metricshard_collector::buffer::redis::PARTITIONS) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    buffer
}

fn paths(c: &mut Criterion, runtime: &tokio::runtime::Runtime, server: &RedisServer) {
    let inputs: Vec<Vec<Sample>> = (0..64).map(|t| scrape(t, 1)).collect();
    let mut group = c.benchmark_group("buffer_path");
    group.throughput(Throughput::Elements(SCRAPE as u64));
    let mut memory = MemoryBuffer::new(1_000_000);
    let mut next = 0;
    // The scrape's samples are cloned outside the timing: the pipeline hands the buffer owned
    // samples, it never copies them.
    let mut input = || {
        next = (next + 1) % inputs.len();
        inputs[next].clone()
    };
    group.bench_function("memory/push_batch_ack_1000", |b| {
        b.iter_batched(&mut input, |samples| runtime.block_on(round_trip(&mut memory, samples)), BatchSize::SmallInput)
    });
    let mut redis = runtime.block_on(redis_buffer(server, "bench"));
    group.bench_function("redis/push_batch_ack_1000", |b| {
        b.iter_batched(&mut input, |samples| runtime.block_on(round_trip(&mut redis, samples)), BatchSize::SmallInput)
    });
    group.finish();
}

/// CPU of this process and of redis-server while `work` runs; prints samples/s and samples per
/// CPU-second.
fn measure(name: &str, server: &RedisServer, samples: usize, work: impl FnOnce()) {
    let server_pid = server.child.id().to_string();
    let server_pid = server_pid.as_str();
    let _ = command(server.port, "CONFIG RESETSTAT");
    let (own, srv) = (cpu_seconds("self"), cpu_seconds(server_pid));
    let started = Instant::now();
    work();
    let wall = started.elapsed().as_secs_f64();
    let (own, srv) = (cpu_seconds("self") - own, cpu_seconds(server_pid) - srv);
    let samples = samples as f64;
    println!(
        "buffer_summary/{name}: {:.2} M samples/s wall; bench {own:.2} CPU-s + redis-server {srv:.2} CPU-s \
         = {:.2} M samples per CPU-second",
        samples / wall / 1e6,
        samples / (own + srv).max(1e-9) / 1e6,
    );
    if name.starts_with("redis") {
        print_commandstats(server.port, name, (samples / SCRAPE as f64) as usize);
    }
}

/// Fixed runs of each path with the scrapes generated beforehand, timed with the CPU of both
/// processes: steady state (push, batch, ack), then for Redis a backlog filled and drained.
fn cpu_summary(runtime: &tokio::runtime::Runtime, server: &RedisServer) {
    let rounds = 500;
    let generate = || -> Vec<Vec<Sample>> { (0..rounds).map(|r| scrape(r % 64, r as i64)).collect() };
    let mut memory = MemoryBuffer::new(10_000_000);
    let mut redis = runtime.block_on(redis_buffer(server, "summary"));
    for pass in 0..3 {
        for (name, buffer) in [("memory", &mut memory as &mut dyn Buffer), ("redis", &mut redis as &mut dyn Buffer)] {
            let inputs = generate();
            measure(&format!("{name}/steady/pass{pass}"), server, rounds * SCRAPE, || {
                runtime.block_on(async {
                    for samples in inputs {
                        round_trip(buffer, samples).await;
                    }
                })
            });
        }
    }
    let inputs = generate();
    measure("redis/backlog_push", server, rounds * SCRAPE, || {
        runtime.block_on(async {
            for samples in inputs {
                let _ = redis.push(samples).await;
            }
        })
    });
    measure("redis/backlog_drain", server, rounds * SCRAPE, || {
        runtime.block_on(async {
            while let Ok(Some(batch)) = redis.batch(SCRAPE).await {
                black_box(&batch.samples);
                let _ = redis.ack(batch.id).await;
            }
        })
    });
}

fn main() {
    let mut criterion = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).configure_from_args();
    encoding(&mut criterion);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let server = RedisServer::start();
    paths(&mut criterion, &runtime, &server);
    // Only under `cargo bench`: `cargo test --benches` runs each bench once, as a smoke test.
    if std::env::args().any(|arg| arg == "--bench") {
        cpu_summary(&runtime, &server);
    }
    criterion.final_summary();
}
