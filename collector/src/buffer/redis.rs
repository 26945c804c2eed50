//! A buffer in Redis: what reached it survives the collector, and every collector running the
//! output shares it, so nothing is stranded when one goes away. See docs/redis-buffer.md.
//!
//! - Samples are spread over a fixed number of partitions by their scrape target (`job` and
//!   `instance`, or the whole series identity when neither is set). That is a function of the
//!   series, so every sample of a series passes through one partition, in push order, whichever
//!   collector gathered it: order per series holds across handovers of inputs.
//! - A partition is a Redis stream of encoded chunks (many samples per entry, see
//!   [`super::codec`]) with its bookkeeping, changed only by atomic Lua scripts ([`scripts`]).
//! - Any collector pushes to any partition. Each partition is delivered by the one collector that
//!   holds its lease; leases are spread evenly over the live collectors, renewed in the
//!   background, and taken over by another collector when they expire.
//! - A batch stays in Redis until `ack` (after the backend's 2xx): a collector killed in between
//!   leaves the batch in flight, and the partition's next owner sends it again (at least once).
//! - Drop-oldest is done inside the push script against a per-partition limit, so the count of
//!   dropped samples is exact.
//! - Pushes that cannot reach Redis wait in a bounded local queue and are retried first.

mod leases;
pub mod orphans;
mod push;
mod scripts;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::Value;
use futures::future::{BoxFuture, FutureExt};

use super::codec;
use super::{Batch, Buffer, BufferError, PushOutcome};
use crate::sample::Sample;
use push::chunk_by_partition;
use scripts::Scripts;

/// Partitions per output. Part of the data layout in Redis: every collector writing an output
/// must use the same number, or a series could be split over two partitions.
pub const PARTITIONS: u16 = 16;

/// Most samples per stream entry. Large enough that Redis handles few entries (a 1 000-sample
/// scrape is one entry: ≈ 20 % less Redis time than 512, measured), small enough that a batch
/// ending inside a chunk re-reads little. Not part of the layout: readers take any count.
pub const CHUNK_SAMPLES: usize = 1024;

/// How long pushes only stage after a push found Redis unreachable.
const STAGING_QUIET: Duration = Duration::from_millis(500);

/// How long a Redis command may take before the connection counts as broken.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most chunks sent in one round trip when pushing.
const CHUNKS_PER_ROUND: usize = 64;

/// Settings of one [`RedisBuffer`].
#[derive(Debug, Clone)]
pub struct RedisBufferConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key; one per output.
    pub key_prefix: String,
    /// Most samples held in Redis over all partitions (each gets an equal share).
    pub max_samples: u64,
    /// How long a partition lease lasts without renewal.
    pub lease: Duration,
    /// Number of partitions; [`PARTITIONS`] outside tests.
    pub partitions: u16,
    /// Names this collector in lease values (`<identity>/<random>`), for people reading Redis.
    pub identity: String,
    /// Most samples held locally while Redis cannot be reached.
    pub staging_limit: u64,
    /// Longest wait for one Redis reply.
    pub response_timeout: Duration,
}

impl RedisBufferConfig {
    /// Defaults for everything but the server and the key prefix.
    pub fn new(url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: key_prefix.into(),
            max_samples: 10_000_000,
            lease: Duration::from_secs(10),
            partitions: PARTITIONS,
            identity: default_identity(),
            staging_limit: 100_000,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    fn partition_limit(&self) -> u64 {
        self.max_samples.div_ceil(u64::from(self.partitions.max(1))).max(1)
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// The pod name in a cluster, else the host name: only for reading lease values.
fn default_identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "collector".to_owned())
}

/// Why a Redis buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisBufferError {
    /// The URL cannot be used.
    #[error("invalid Redis URL: {0}")]
    Url(#[source] ::redis::RedisError),
    /// Building the buffer needs a running tokio runtime.
    #[error("no tokio runtime to run the lease keeper on")]
    NoRuntime,
    /// Redis could not be reached or refused a command.
    #[error("Redis command failed: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered something the scripts never return.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// Another collector holds the partition now (this one was too slow to renew its lease).
    #[error("partition {0} is no longer leased to this collector; its batch will be sent again by the new owner")]
    LeaseLost(u16),
    /// `ack` named a batch that is not in flight.
    #[error("batch {0} is not in flight")]
    NotInFlight(u64),
}

impl RedisBufferError {
    /// A short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Url(_) => "url",
            Self::NoRuntime => "no_runtime",
            Self::Redis(_) => "redis",
            Self::Reply(_) => "reply",
            Self::LeaseLost(_) => "lease_lost",
            Self::NotInFlight(_) => "not_in_flight",
        }
    }
}

impl From<RedisBufferError> for BufferError {
    fn from(error: RedisBufferError) -> Self {
        match error {
            RedisBufferError::NotInFlight(id) => Self::UnknownBatch(id),
            other => Self::Store(other.to_string()),
        }
    }
}

/// The keys of one partition (one hash tag, so scripts stay valid on a Redis Cluster).
#[derive(Debug)]
struct PartitionKeys {
    stream: String,
    meta: String,
    lease: String,
}

impl PartitionKeys {
    /// The keys of partition `partition` of the queue under `prefix`.
    fn of(prefix: &str, partition: u16) -> Self {
        let tag = format!("{{{prefix}:{partition}}}");
        Self { stream: format!("{tag}:s"), meta: format!("{tag}:m"), lease: format!("{tag}:l") }
    }
}

/// Few quick reconnection attempts per command: the pipeline has its own backoff, and a
/// command stuck in reconnection would hold the output's loop.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
}

/// What the buffer and its lease keeper share.
struct Shared {
    config: RedisBufferConfig,
    token: String,
    scripts: Scripts,
    partitions: Vec<PartitionKeys>,
    members: String,
    state: Mutex<Ownership>,
}

#[derive(Debug, Default)]
struct Ownership {
    /// Partitions leased to this instance, with the samples each held when last seen.
    owned: BTreeMap<u16, u64>,
    /// The partition of the batch in flight: never given up voluntarily.
    in_flight: Option<u16>,
    /// Live instances at the last heartbeat.
    members: u64,
    /// Whether the last lease round reached Redis (to log changes, not every failure).
    healthy: bool,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, Ownership> {
        // The lock guards plain data that every writer leaves consistent, so a panic elsewhere
        // cannot leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys(&self, partition: u16) -> Result<&PartitionKeys, RedisBufferError> {
        self.partitions.get(usize::from(partition)).ok_or_else(|| RedisBufferError::Reply(format!("no partition {partition}")))
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    partition: u16,
    end: u64,
    /// Where the ack trims the stream to (see the `ACK` script).
    trim_hint: String,
}

/// A buffer in Redis. Cheap to build: it connects lazily and reconnects by itself, so a Redis
/// that is down delays delivery (batch and ack fail and the pipeline retries) but never stops
/// the collector; pushes meanwhile wait in a bounded local queue.
pub struct RedisBuffer {
    shared: Arc<Shared>,
    connection: ConnectionManager,
    staged: VecDeque<Sample>,
    in_flight: Option<InFlight>,
    next_batch_id: u64,
    /// Round-robin position over partitions when choosing the next batch.
    cursor: u16,
    /// Per partition, where its next batch most likely starts (the end of the last batch
    /// acknowledged here): lets `batch` read the chunks in the same round trip as its script.
    /// Only a guess, checked against the script's answer.
    head_hints: BTreeMap<u16, u64>,
    keeper: tokio::task::JoinHandle<()>,
    /// Samples dropped because their chunk could not be decoded (a corrupt entry).
    undecodable: u64,
    /// After a failed push, pushes only stage until then: an unreachable Redis (a connect
    /// timeout per attempt) must not slow down the output's loop on every gather.
    quiet_until: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for RedisBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBuffer")
            .field("key_prefix", &self.shared.config.key_prefix)
            .field("token", &self.shared.token)
            .field("staged", &self.staged.len())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl RedisBuffer {
    /// Builds the buffer and starts its lease keeper on the current tokio runtime. Fails only on
    /// an unusable URL or without a runtime; Redis being down is not an error here.
    pub fn start(config: RedisBufferConfig) -> Result<Self, RedisBufferError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RedisBufferError::NoRuntime)?;
        let client = ::redis::Client::open(config.url.as_str()).map_err(RedisBufferError::Url)?;
        let connection =
            ConnectionManager::new_lazy_with_config(client, manager_config(config.response_timeout)).map_err(RedisBufferError::Url)?;
        let partitions = (0..config.partitions.max(1)).map(|p| PartitionKeys::of(&config.key_prefix, p)).collect();
        let shared = Arc::new(Shared {
            token: format!("{}/{:016x}", config.identity, rand::random::<u64>()),
            members: format!("{}:members", config.key_prefix),
            scripts: Scripts::new(),
            partitions,
            state: Mutex::new(Ownership { healthy: true, ..Ownership::default() }),
            config,
        });
        let keeper = runtime.spawn(leases::keep_leases(shared.clone(), connection.clone()));
        Ok(Self {
            shared,
            connection,
            staged: VecDeque::new(),
            in_flight: None,
            next_batch_id: 1,
            cursor: 0,
            head_hints: BTreeMap::new(),
            keeper,
            undecodable: 0,
            quiet_until: None,
        })
    }

    /// The lease token of this instance.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Partitions this instance delivers right now.
    pub fn owned_partitions(&self) -> Vec<u16> {
        self.shared.state().owned.keys().copied().collect()
    }

    /// Samples waiting locally because Redis could not be reached.
    pub fn staged(&self) -> u64 {
        self.staged.len() as u64
    }

    /// Samples skipped because their chunk in Redis could not be decoded.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Samples held in Redis over all partitions, whoever delivers them.
    pub async fn held_in_redis(&mut self) -> Result<u64, RedisBufferError> {
        let all: Vec<u16> = (0..self.shared.config.partitions.max(1)).collect();
        Ok(self.read_meta(&all).await?.iter().map(|m| m.held()).sum())
    }

    /// Samples dropped for room over all partitions since the output's keys were created.
    pub async fn dropped_in_redis(&mut self) -> Result<u64, RedisBufferError> {
        let all: Vec<u16> = (0..self.shared.config.partitions.max(1)).collect();
        Ok(self.read_meta(&all).await?.iter().map(|m| m.dropped).sum())
    }

    /// Stops this instance without handing its partitions over, as a killed collector would:
    /// its leases run out by themselves. For fault tests.
    pub fn abandon(mut self) {
        self.keeper.abort();
        self.shared.state().owned.clear();
        self.staged.clear();
    }

    /// Moves staged samples into Redis, oldest first. Returns the samples dropped for room.
    async fn flush_staged(&mut self) -> Result<u64, RedisBufferError> {
        let mut dropped = 0;
        while !self.staged.is_empty() {
            let round = self.staged.len().min(CHUNK_SAMPLES * CHUNKS_PER_ROUND);
            let chunks = chunk_by_partition(&self.staged.make_contiguous()[..round], self.shared.config.partitions);
            let pushed = push::push_chunks(&self.shared, &mut self.connection, &chunks).await?;
            // The staged samples are in Redis now.
            self.staged.drain(..round);
            dropped += pushed.dropped;
            let mut state = self.shared.state();
            for (partition, held) in pushed.held {
                if let Some(cached) = state.owned.get_mut(&partition) {
                    *cached = held;
                }
            }
        }
        Ok(dropped)
    }

    async fn push_inner(&mut self, samples: Vec<Sample>) -> PushOutcome {
        let mut outcome = PushOutcome { accepted: samples.len() as u64, dropped_oldest: 0 };
        self.staged.extend(samples);
        while self.staged.len() as u64 > self.shared.config.staging_limit {
            self.staged.pop_front();
            outcome.dropped_oldest += 1;
        }
        if self.quiet_until.is_some_and(|until| tokio::time::Instant::now() < until) {
            return outcome;
        }
        match self.flush_staged().await {
            Ok(dropped) => {
                outcome.dropped_oldest += dropped;
                self.quiet_until = None;
            }
            // Kept locally and retried by `batch` (on the pipeline's backoff) or a later push.
            Err(error) => {
                if self.quiet_until.is_none() {
                    tracing::warn!(
                        prefix = %self.shared.config.key_prefix,
                        staged = self.staged.len(),
                        category = error.category(),
                        "samples wait locally until Redis answers: {error}"
                    );
                }
                self.quiet_until = Some(tokio::time::Instant::now() + STAGING_QUIET);
            }
        }
        outcome
    }

    async fn batch_inner(&mut self, max: usize) -> Result<Option<Batch>, RedisBufferError> {
        if !self.staged.is_empty() {
            self.flush_staged().await?;
            self.quiet_until = None;
        }
        let max = max.max(1) as u64;
        if let Some(current) = self.in_flight.clone() {
            match self.read_batch(current.partition, max).await? {
                BatchRead::Batch { end, samples, .. } if end == current.end => {
                    return Ok(Some(Batch { id: current.id, samples }));
                }
                BatchRead::Batch { end, samples, trim_hint } => {
                    return Ok(Some(self.start_batch(current.partition, end, trim_hint, samples)));
                }
                BatchRead::Empty | BatchRead::LeaseLost => self.clear_in_flight(),
            }
        }
        let mut candidates = self.candidates();
        if candidates.is_empty() {
            let owned = self.owned_partitions();
            let metas = self.read_meta(&owned).await?;
            let mut state = self.shared.state();
            for (partition, meta) in owned.iter().zip(&metas) {
                if let Some(cached) = state.owned.get_mut(partition) {
                    *cached = meta.held();
                }
            }
            drop(state);
            candidates = self.candidates();
        }
        for partition in candidates {
            self.shared.state().in_flight = Some(partition);
            match self.read_batch(partition, max).await {
                Ok(BatchRead::Batch { end, trim_hint, samples }) if samples.is_empty() => {
                    // Every chunk of this batch was corrupt: skip it rather than block the partition.
                    self.in_flight = Some(InFlight { id: 0, partition, end, trim_hint });
                    self.ack_inner(0).await?;
                }
                Ok(BatchRead::Batch { end, trim_hint, samples }) => {
                    self.cursor = partition.wrapping_add(1);
                    return Ok(Some(self.start_batch(partition, end, trim_hint, samples)));
                }
                Ok(BatchRead::Empty) => {
                    let mut state = self.shared.state();
                    state.in_flight = None;
                    if let Some(cached) = state.owned.get_mut(&partition) {
                        *cached = 0;
                    }
                }
                Ok(BatchRead::LeaseLost) => {
                    let mut state = self.shared.state();
                    state.in_flight = None;
                    state.owned.remove(&partition);
                }
                Err(error) => {
                    self.shared.state().in_flight = None;
                    return Err(error);
                }
            }
        }
        Ok(None)
    }

    fn start_batch(&mut self, partition: u16, end: u64, trim_hint: String, samples: Vec<Sample>) -> Batch {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.in_flight = Some(InFlight { id, partition, end, trim_hint });
        self.shared.state().in_flight = Some(partition);
        Batch { id, samples }
    }

    fn clear_in_flight(&mut self) {
        self.in_flight = None;
        self.shared.state().in_flight = None;
    }

    /// Owned partitions believed to hold samples, in round-robin order from the cursor.
    fn candidates(&self) -> Vec<u16> {
        let state = self.shared.state();
        let (after, before): (Vec<u16>, Vec<u16>) =
            state.owned.iter().filter(|(_, held)| **held > 0).map(|(p, _)| *p).partition(|p| *p >= self.cursor);
        after.into_iter().chain(before).collect()
    }

    async fn read_batch(&mut self, partition: u16, max: u64) -> Result<BatchRead, RedisBufferError> {
        let keys = self.shared.keys(partition)?;
        let mut invocation = self.shared.scripts.batch.prepare_invoke();
        invocation.key(&keys.meta).key(&keys.lease).arg(&self.shared.token).arg(max);
        // Where the batch will most likely start (where the last ack left `head`): its chunks are
        // read in the same round trip as the script, and used only if the script agrees.
        let guess = self.head_hints.get(&partition).copied();
        let mut pipe = ::redis::pipe();
        pipe.ignore_errors().invoke_script(&invocation);
        if let Some(head) = guess {
            read_chunks(&mut pipe, &keys.stream, head, head.saturating_add(max));
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut self.connection).await?;
        if matches!(replies.first(), Some(Value::ServerError(error)) if error.code() == "NOSCRIPT") {
            // Redis lost its scripts (a restart): load and run again; the reads go with it.
            invocation.load_async(&mut self.connection).await?;
            replies = pipe.query_async(&mut self.connection).await?;
        }
        let mut replies = replies.into_iter();
        let reply = match replies.next() {
            Some(Value::ServerError(error)) => return Err(RedisBufferError::Reply(format!("batch script failed: {error:?}"))),
            Some(reply) => integers(&reply)?,
            None => return Err(RedisBufferError::Reply("batch returned nothing".to_owned())),
        };
        let (head, end, held) = match reply[..] {
            [-1] => {
                self.head_hints.remove(&partition);
                return Ok(BatchRead::LeaseLost);
            }
            [0] => return Ok(BatchRead::Empty),
            [1, head, end, held] => (to_u64(head)?, to_u64(end)?, to_u64(held)?),
            _ => return Err(RedisBufferError::Reply(format!("batch returned {reply:?}"))),
        };
        self.head_hints.insert(partition, head);
        if let Some(cached) = self.shared.state().owned.get_mut(&partition) {
            *cached = held;
        }
        // The chunk holding `head`, then every chunk starting before `end`. Nothing in
        // `[head, end)` can go meanwhile: only this lease holder's ack removes it. Reads made
        // from a guessed head that the script confirmed cover `[head, head + max)`, which holds
        // `[head, end)`; chunks past `end` are skipped below.
        let (first, rest) = match (guess, replies.next(), replies.next()) {
            (Some(guessed), Some(first), Some(rest)) if guessed == head && end <= head.saturating_add(max) => (first, rest),
            _ => {
                let mut pipe = ::redis::pipe();
                read_chunks(&mut pipe, &keys.stream, head, end);
                pipe.query_async(&mut self.connection).await?
            }
        };
        let mut samples = Vec::with_capacity(usize::try_from(end.saturating_sub(head)).unwrap_or(0));
        let mut trim_hint = format!("{end}-0");
        for (id, chunk) in stream_entries(first)?.into_iter().chain(stream_entries(rest)?) {
            let (start, count) = parse_entry_id(&id)?;
            let from = head.max(start);
            let to = end.min(start.saturating_add(count));
            if from >= to {
                continue;
            }
            if start + count > end {
                // This chunk outlives the batch: the ack must keep it.
                trim_hint = format!("{start}-{count}");
            }
            let before = samples.len();
            let (skip, take) = (usize::try_from(from - start).unwrap_or(usize::MAX), usize::try_from(to - from).unwrap_or(0));
            if let Err(error) = codec::decode_range(&chunk, skip, take, &mut samples) {
                samples.truncate(before);
                self.undecodable += to - from;
                tracing::error!(
                    prefix = %self.shared.config.key_prefix,
                    partition,
                    entry = %String::from_utf8_lossy(&id),
                    samples = to - from,
                    category = error.category(),
                    "skipping a chunk that cannot be decoded: {error}"
                );
            }
        }
        Ok(BatchRead::Batch { end, trim_hint, samples })
    }

    async fn ack_inner(&mut self, id: u64) -> Result<(), RedisBufferError> {
        let current = match &self.in_flight {
            Some(current) if current.id == id => current.clone(),
            _ => return Err(RedisBufferError::NotInFlight(id)),
        };
        let keys = self.shared.keys(current.partition)?;
        // On a Redis error the batch stays in flight: `batch` hands it out again.
        let held: i64 = self
            .shared
            .scripts
            .ack
            .key(&keys.stream)
            .key(&keys.meta)
            .key(&keys.lease)
            .arg(&self.shared.token)
            .arg(current.end)
            .arg(&current.trim_hint)
            .invoke_async(&mut self.connection)
            .await?;
        self.clear_in_flight();
        match held {
            -1 => {
                self.shared.state().owned.remove(&current.partition);
                Err(RedisBufferError::LeaseLost(current.partition))
            }
            -2 => Err(RedisBufferError::Reply(format!("batch ending at {} was no longer in flight", current.end))),
            held => {
                self.head_hints.insert(current.partition, current.end);
                if let Some(cached) = self.shared.state().owned.get_mut(&current.partition) {
                    *cached = u64::try_from(held).unwrap_or(0);
                }
                Ok(())
            }
        }
    }

    async fn read_meta(&mut self, partitions: &[u16]) -> Result<Vec<PartitionMeta>, RedisBufferError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for partition in partitions {
            pipe.cmd("HMGET").arg(&self.shared.keys(*partition)?.meta).arg(&["head", "flight", "gap", "tail", "dropped"]);
        }
        let replies: Vec<Vec<Option<u64>>> = pipe.query_async(&mut self.connection).await?;
        Ok(replies.iter().map(|fields| PartitionMeta::from_fields(fields)).collect())
    }
}

impl Buffer for RedisBuffer {
    fn push(&mut self, samples: Vec<Sample>) -> BoxFuture<'_, Result<PushOutcome, BufferError>> {
        async move { Ok(self.push_inner(samples).await) }.boxed()
    }

    fn batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, BufferError>> {
        async move { self.batch_inner(max).await.map_err(BufferError::from) }.boxed()
    }

    fn ack(&mut self, id: u64) -> BoxFuture<'_, Result<(), BufferError>> {
        async move { self.ack_inner(id).await.map_err(BufferError::from) }.boxed()
    }

    fn len(&self) -> u64 {
        self.staged.len() as u64 + self.shared.state().owned.values().sum::<u64>()
    }
}

impl Drop for RedisBuffer {
    fn drop(&mut self) {
        self.keeper.abort();
        if !self.staged.is_empty() {
            tracing::warn!(prefix = %self.shared.config.key_prefix, samples = self.staged.len(), "Redis buffer stopped with samples that never reached Redis");
        }
        let owned = self.owned_partitions();
        // Hand the partitions over now rather than after the lease runs out. Best effort: if this
        // does not finish, the leases expire anyway.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let shared = self.shared.clone();
            let mut connection = self.connection.clone();
            runtime.spawn(async move {
                let mut pipe = ::redis::pipe();
                pipe.load_script(&shared.scripts.release).ignore();
                for partition in owned {
                    if let Ok(keys) = shared.keys(partition) {
                        pipe.invoke_script(shared.scripts.release.key(&keys.meta).key(&keys.lease).arg(&shared.token).arg("1"));
                    }
                }
                pipe.cmd("ZREM").arg(&shared.members).arg(&shared.token);
                let _: Result<Value, _> = pipe.query_async(&mut connection).await;
            });
        }
    }
}

enum BatchRead {
    Batch { end: u64, trim_hint: String, samples: Vec<Sample> },
    Empty,
    LeaseLost,
}

#[derive(Debug, Default, Clone, Copy)]
struct PartitionMeta {
    head: u64,
    flight: u64,
    gap: u64,
    tail: u64,
    dropped: u64,
}

impl PartitionMeta {
    fn from_fields(fields: &[Option<u64>]) -> Self {
        let field = |i: usize| fields.get(i).copied().flatten();
        let head = field(0).unwrap_or(1);
        let flight = field(1).unwrap_or(head);
        let gap = field(2).unwrap_or(flight);
        let tail = field(3).unwrap_or(gap);
        Self { head, flight, gap, tail, dropped: field(4).unwrap_or(0) }
    }

    fn held(&self) -> u64 {
        self.tail.saturating_sub(self.head).saturating_sub(self.gap.saturating_sub(self.flight))
    }
}

/// Adds the reads of every chunk holding a sample of `[head, end)` to a pipeline: the chunk
/// holding `head` (the last one starting at or before it), then those starting before `end`.
fn read_chunks(pipe: &mut ::redis::Pipeline, stream: &str, head: u64, end: u64) {
    pipe.cmd("XREVRANGE").arg(stream).arg(head).arg("-").arg("COUNT").arg(1);
    pipe.cmd("XRANGE").arg(stream).arg(head + 1).arg(end.saturating_sub(1));
}

fn parse_entry_id(id: &[u8]) -> Result<(u64, u64), RedisBufferError> {
    let bad = || RedisBufferError::Reply(format!("stream id {:?}", String::from_utf8_lossy(id)));
    let text = std::str::from_utf8(id).map_err(|_| bad())?;
    let (start, count) = text.split_once('-').ok_or_else(bad)?;
    Ok((start.parse().map_err(|_| bad())?, count.parse().map_err(|_| bad())?))
}

fn to_u64(value: i64) -> Result<u64, RedisBufferError> {
    u64::try_from(value).map_err(|_| RedisBufferError::Reply(format!("negative sequence {value}")))
}

/// A stream entry as read back: its id and its chunk.
type StreamEntry = (Vec<u8>, Vec<u8>);

/// The entries of an XRANGE / XREVRANGE reply.
fn stream_entries(reply: Value) -> Result<Vec<StreamEntry>, RedisBufferError> {
    let bad = |what: &str| RedisBufferError::Reply(format!("stream reply: {what}"));
    let Value::Array(entries) = reply else { return Err(bad("not an array")) };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(mut parts) = entry else { return Err(bad("entry is not an array")) };
            let (Some(Value::Array(mut fields)), Some(Value::BulkString(id))) = (parts.pop(), parts.pop()) else {
                return Err(bad("entry is not [id, fields]"));
            };
            match fields.pop() {
                Some(Value::BulkString(chunk)) => Ok((id, chunk)),
                _ => Err(bad("entry has no chunk")),
            }
        })
        .collect()
}

fn integers(reply: &Value) -> Result<Vec<i64>, RedisBufferError> {
    match reply {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Int(n) => Ok(*n),
                other => Err(RedisBufferError::Reply(format!("expected an integer, got {other:?}"))),
            })
            .collect(),
        other => Err(RedisBufferError::Reply(format!("expected an array, got {other:?}"))),
    }
}

/// The partition of a sample: a hash of its scrape target (`job`, `instance`), or of the whole
/// series when it has neither. Either way a function of the series identity.
pub fn partition_of(sample: &Sample, partitions: u16) -> u16 {
    let partitions = u64::from(partitions.max(1));
    let (job, instance) = (sample.labels.get("job"), sample.labels.get("instance"));
    let hash = if job.is_some() || instance.is_some() {
        target_hash(job.unwrap_or(""), instance.unwrap_or(""))
    } else {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(sample.name.as_bytes());
        for label in &sample.labels {
            hasher.update(&[0xff]);
            hasher.update(label.name.as_bytes());
            hasher.update(&[0xfe]);
            hasher.update(label.value.as_bytes());
        }
        hasher.digest()
    };
    // Lossless: the remainder is below `partitions`, a u16.
    (hash % partitions) as u16
}

fn target_hash(job: &str, instance: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(job.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(instance.as_bytes());
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Labels;

    #[test]
    fn entry_ids_carry_start_and_count() {
        assert_eq!(parse_entry_id(b"1024-512").unwrap(), (1024, 512));
        assert!(parse_entry_id(b"1024").is_err());
        assert!(parse_entry_id(b"x-1").is_err());
    }

    #[test]
    fn meta_defaults_describe_an_empty_partition() {
        let empty = PartitionMeta::from_fields(&[None, None, None, None, None]);
        assert_eq!(empty.held(), 0);
        let busy = PartitionMeta::from_fields(&[Some(10), Some(15), Some(18), Some(30), Some(3)]);
        // 5 in flight + 12 queued; 3 dropped behind the batch in flight.
        assert_eq!(busy.held(), 17);
    }

    #[test]
    fn a_series_always_maps_to_one_partition_and_targets_spread() {
        let sample = |job: &str, instance: &str, name: &str| {
            Sample::new(name, Labels::from_pairs([("job", job), ("instance", instance)]), 1.0, 1)
        };
        let p = partition_of(&sample("a", "h:1", "up"), PARTITIONS);
        assert_eq!(partition_of(&sample("a", "h:1", "other_metric"), PARTITIONS), p, "one target, one partition");
        let used: std::collections::BTreeSet<u16> =
            (0..200).map(|i| partition_of(&sample("job", &format!("10.0.0.{i}:9100"), "up"), PARTITIONS)).collect();
        assert_eq!(used.len(), usize::from(PARTITIONS), "200 targets cover every partition");
        let total = 2 * CHUNK_SAMPLES + 176;
        let chunks = chunk_by_partition(&(0..total).map(|i| sample("a", "h:1", &format!("m{i}"))).collect::<Vec<_>>(), PARTITIONS);
        assert_eq!(chunks.iter().map(|c| c.1).collect::<Vec<_>>(), vec![CHUNK_SAMPLES as u64, CHUNK_SAMPLES as u64, 176]);
        assert!(chunks.iter().all(|c| c.0 == p));
    }
}
