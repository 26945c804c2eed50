//! Running one output: split samples by destination first, then one buffer and one delivery loop
//! per destination (an address of a node).
//!
//! ```text
//! inputs ─▶ output channel ─▶ router ──┬─▶ channel ─▶ buffer ─▶ delivery loop ─▶ node a, address 1
//!                            (ring or  ├─▶ channel ─▶ buffer ─▶ delivery loop ─▶ node a, address 2
//!                             broadcast)└─▶ channel ─▶ buffer ─▶ delivery loop ─▶ node b, address 1
//! ```
//!
//! Splitting before buffering gives every destination its own at-least-once queue: a batch is
//! acknowledged when *its* address answered 2xx, and a dead address fills (and, at its limit,
//! drops from) only its own buffer. The delivery loops read their channels while writing, so the
//! router never waits on a slow address. See docs/design.md, "Fan-out".

use std::time::Duration;

use metricshard_crds::{BufferSpec, EffectiveNodes, FanOutMode, MemoryBuffer, OutputProtocol};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;

use super::{FanOut, RingError};
use crate::buffer;
use crate::buffer::redis::orphans::OrphanedQueues;
use crate::output_status::NodeHandle;
use crate::outputs::Sink;
use crate::pipeline::{self, PipelineSettings};
use crate::routing::OutputId;
use crate::runtime::OwnedOutputSettings;
use crate::sample::Sample;
use crate::telemetry::{OutputReasonLabels, Telemetry};

/// Gathers queued between the router and one destination's delivery loop. The loops read their
/// channel while a write is in flight, so this only absorbs scheduling delays.
const DESTINATION_CHANNEL_DEPTH: usize = 64;

/// Why an output cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The nodes do not make a ring (duplicate names, no nodes, too many points).
    #[error("spec.protocol fanOut: {0}")]
    Ring(#[from] RingError),
    /// An HTTP protocol without `url` or `fanOut` (the schema refuses it).
    #[error("spec.protocol: exactly one of url and fanOut must be set")]
    NoNodes,
    /// The sink of one address cannot be built.
    #[error("{address}: {reason}")]
    Sink {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The buffer cannot be built (an unusable Redis URL).
    #[error("spec.buffer: {0}")]
    Buffer(#[from] buffer::redis::RedisBufferError),
}

/// One address of one node: where one delivery loop writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The node's name.
    pub node: String,
    /// The address (URL; `stdout` or the path for those protocols).
    pub address: String,
}

impl Destination {
    /// The queue name of this destination in a fanned-out output's Redis keys:
    /// `node/<name>/<xxh3 of the address, hex>`. The address is hashed because URLs may hold
    /// characters a key prefix should not (braces are Redis Cluster hash tags); the node name
    /// keeps the keys readable. Reordering nodes or addresses keeps every queue's name.
    pub fn queue_name(&self) -> String {
        format!("node/{}/{:016x}", self.node, xxh3_64(self.address.as_bytes()))
    }
}

/// Where each sample of an output goes: the ring (or broadcast) over nodes, and the addresses
/// of each node.
#[derive(Debug, Clone)]
pub struct OutputPlan {
    fanout: FanOut,
    /// Destination indices of each node, in ring node order.
    addresses_of: Vec<Vec<usize>>,
    destinations: Vec<Destination>,
    single_url: bool,
}

impl OutputPlan {
    /// The plan of `protocol`: its nodes, or one node (`default`) for a single `url`, `stdout`
    /// or `file`.
    pub fn of(protocol: &OutputProtocol) -> Result<Self, DeliveryError> {
        let nodes = match protocol.nodes() {
            Some(nodes) => nodes,
            None if protocol.remote_write.is_some() || protocol.influx.is_some() || protocol.open_tsdb.is_some() => {
                return Err(DeliveryError::NoNodes);
            }
            None => {
                let address = protocol.file.as_ref().map_or_else(|| "stdout".to_owned(), |file| file.path.clone());
                EffectiveNodes::single(address)
            }
        };
        Self::from_nodes(&nodes)
    }

    /// The plan of explicit nodes.
    pub fn from_nodes(nodes: &EffectiveNodes) -> Result<Self, DeliveryError> {
        let mode = match nodes.mode {
            FanOutMode::Hash => super::FanOutMode::Hash,
            FanOutMode::Broadcast => super::FanOutMode::Broadcast,
        };
        let fanout = FanOut::new(nodes.nodes.iter().map(|node| node.name.clone()), nodes.virtual_nodes, mode)?;
        let mut destinations = Vec::new();
        let mut addresses_of = Vec::with_capacity(nodes.nodes.len());
        for node in &nodes.nodes {
            let mut indices = Vec::with_capacity(node.addresses.len());
            for address in &node.addresses {
                indices.push(destinations.len());
                destinations.push(Destination { node: node.name.clone(), address: address.clone() });
            }
            addresses_of.push(indices);
        }
        Ok(Self { fanout, addresses_of, destinations, single_url: nodes.single_url })
    }

    /// Every destination, in node order then address order.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// True when the output named one `url` (or is `stdout`/`file`): its single queue keeps the
    /// output's own Redis key prefix, so buffers written before fan-out existed are still drained.
    pub fn is_single(&self) -> bool {
        self.single_url
    }

    /// The routing.
    pub fn fanout(&self) -> &FanOut {
        &self.fanout
    }

    /// Splits a batch into what each destination receives: `(destination index, samples)`,
    /// destinations that receive nothing left out, batch order kept within each part.
    pub fn split(&self, batch: Vec<Sample>) -> Vec<(usize, Vec<Sample>)> {
        if self.destinations.len() == 1 {
            return vec![(0, batch)];
        }
        let mut parts = Vec::with_capacity(self.destinations.len());
        for (node, indices) in self.fanout.partition(&batch).into_iter().enumerate() {
            if indices.is_empty() {
                continue;
            }
            let samples: Vec<Sample> = indices.iter().map(|&index| batch[index].clone()).collect();
            // Every address but the last gets a copy; the last takes the node's batch.
            if let Some((&last, others)) = self.addresses_of[node].split_last() {
                for &destination in others {
                    parts.push((destination, samples.clone()));
                }
                parts.push((last, samples));
            }
        }
        parts
    }
}

/// The buffer spec of one of `destinations` queues: `maxSamples` is the output's total, split
/// evenly over its destinations.
fn buffer_share(spec: &BufferSpec, destinations: usize) -> BufferSpec {
    let destinations = destinations.max(1) as u64;
    let mut spec = spec.clone();
    if let Some(redis) = &mut spec.redis {
        redis.max_samples = redis.max_samples.div_ceil(destinations).max(1);
    } else {
        let memory = spec.memory.clone().unwrap_or_default();
        spec.memory = Some(MemoryBuffer { max_samples: memory.max_samples.div_ceil(destinations).max(1) });
    }
    spec
}

/// Builds one sink per destination of an output, in the order of its plan, with `build` (which
/// resolves the output's Secrets, so the caller can fingerprint what was read).
pub fn build_sinks(
    protocol: &OutputProtocol,
    mut build: impl FnMut(&OutputProtocol) -> Result<Box<dyn Sink>, String>,
) -> Result<Vec<Box<dyn Sink>>, String> {
    let plan = OutputPlan::of(protocol).map_err(|error| error.to_string())?;
    let single = plan.is_single();
    plan.destinations()
        .iter()
        .map(|destination| {
            let protocol = if single { protocol.clone() } else { protocol.for_address(&destination.address) };
            build(&protocol).map_err(|reason| DeliveryError::Sink { address: destination.address.clone(), reason }.to_string())
        })
        .collect()
}

/// Builds the sinks and buffers of every destination of `output` and starts its router and
/// delivery loops. The returned task ends once `cancel` fired (or `incoming` closed) and every
/// delivery loop has drained within its grace period. Registers the destinations' handles on
/// the telemetry's [`crate::output_status::OutputNodeBoard`] while it runs.
pub fn start(
    output: &OutputId,
    generation: i64,
    settings: &OwnedOutputSettings,
    sinks: Vec<Box<dyn Sink>>,
    telemetry: &Telemetry,
    incoming: mpsc::Receiver<Vec<Sample>>,
    cancel: CancellationToken,
) -> Result<JoinHandle<()>, DeliveryError> {
    let plan = OutputPlan::of(&settings.protocol)?;
    let single = plan.is_single();
    let share = buffer_share(&settings.buffer, plan.destinations().len());
    // A single destination keeps the output's plain queue; fanned-out ones get one each.
    let queues: Vec<Option<String>> = plan.destinations().iter().map(|destination| (!single).then(|| destination.queue_name())).collect();
    let mut loops = Vec::with_capacity(plan.destinations().len());
    for ((destination, sink), queue) in plan.destinations().iter().zip(sinks).zip(&queues) {
        let buffer = buffer::spec::build_queue(&share, output, queue.as_deref())?;
        loops.push((destination.clone(), sink, buffer));
    }
    let name = output.to_string();
    let mut senders = Vec::with_capacity(loops.len());
    let mut handles = Vec::with_capacity(loops.len());
    let mut nodes = Vec::with_capacity(loops.len());
    let pipeline_settings = PipelineSettings::from_batch(&settings.batch);
    for (destination, sink, buffer) in loops {
        let (sender, receiver) = mpsc::channel(DESTINATION_CHANNEL_DEPTH);
        let node = NodeHandle::new(&name, &destination.node, &destination.address, telemetry.clone());
        nodes.push(node.clone());
        // Delivery loops end when the router closes their channel, after it forwarded everything
        // it still held; cancelling them directly could drop what the router is handing over.
        let never = CancellationToken::new();
        handles.push(tokio::spawn(pipeline::run(node, pipeline_settings.clone(), sink, buffer, receiver, never)));
        senders.push(sender);
    }
    let sweeper = sweep_orphaned_queues(output, &settings.buffer, &queues, telemetry)?;
    let board = telemetry.output_nodes.clone();
    board.register(output.clone(), generation, nodes.clone());
    let output = output.clone();
    Ok(tokio::spawn(async move {
        route(&plan, incoming, &senders, cancel).await;
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        drop(senders);
        for handle in handles {
            if let Err(error) = handle.await {
                tracing::error!(output = %output, "a delivery loop ended abnormally: {error}");
            }
        }
        for node in &nodes {
            node.retire();
        }
        board.unregister(&output, generation);
    }))
}

/// Starts the task that discards the Redis queues other than `queues` (this output's running
/// destinations, as passed to [`buffer::spec::build_queue`]) under the output's prefix
/// (`buffer::redis::orphans`), counting their samples as dropped (`queue_orphaned`). Only for a
/// Redis buffer; it looks every tenth of the retention, between 1 s and 1 min.
fn sweep_orphaned_queues(
    output: &OutputId,
    spec: &BufferSpec,
    queues: &[Option<String>],
    telemetry: &Telemetry,
) -> Result<Option<JoinHandle<()>>, DeliveryError> {
    let Some(redis) = &spec.redis else { return Ok(None) };
    let output_prefix = buffer::spec::output_prefix(redis, output);
    let live: Vec<String> = queues.iter().map(|queue| buffer::spec::queue_prefix(&output_prefix, queue.as_deref())).collect();
    let retention = redis.orphan_retention.get();
    let mut queues = OrphanedQueues::new(&redis.url, output_prefix, live, retention)?;
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let (output, telemetry) = (output.to_string(), telemetry.clone());
    Ok(Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            match queues.pass().await {
                Ok(discarded) => {
                    for queue in discarded {
                        tracing::warn!(output = %output, queue = %queue.queue, samples = queue.samples, "discarded the Redis queue of a destination this output no longer has");
                        let labels = OutputReasonLabels { output: output.clone(), reason: "queue_orphaned" };
                        telemetry.output_dropped.get_or_create(&labels).inc_by(queue.samples);
                    }
                }
                Err(error) => tracing::debug!(output = %output, "looking for orphaned Redis queues failed: {error}"),
            }
        }
    })))
}

/// Forwards every batch to its destinations until `cancel` fires or `incoming` closes, then
/// forwards what is still queued.
async fn route(plan: &OutputPlan, mut incoming: mpsc::Receiver<Vec<Sample>>, senders: &[mpsc::Sender<Vec<Sample>>], cancel: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            received = incoming.recv() => match received {
                Some(batch) => forward(plan, senders, batch).await,
                None => break,
            },
        }
    }
    incoming.close();
    while let Some(batch) = incoming.recv().await {
        forward(plan, senders, batch).await;
    }
}

async fn forward(plan: &OutputPlan, senders: &[mpsc::Sender<Vec<Sample>>], batch: Vec<Sample>) {
    for (destination, samples) in plan.split(batch) {
        if let Some(sender) = senders.get(destination)
            && sender.send(samples).await.is_err()
        {
            // Only after a delivery loop panicked; its end is logged by `start`.
            tracing::error!(address = %plan.destinations()[destination].address, "delivery loop gone, samples lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use metricshard_crds::BackendNode;

    use super::*;
    use crate::sample::Labels;

    fn nodes(mode: FanOutMode, spec: &[(&str, &[&str])]) -> EffectiveNodes {
        EffectiveNodes {
            nodes: spec
                .iter()
                .map(|(name, addresses)| BackendNode {
                    name: (*name).to_owned(),
                    addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
                })
                .collect(),
            mode,
            virtual_nodes: 64,
            single_url: false,
        }
    }

    fn batch(series: u32, offset: i64) -> Vec<Sample> {
        (0..series)
            .map(|i| Sample::new("m", Labels::from_pairs([("instance", format!("host-{i}"))]), f64::from(i), offset + i64::from(i)))
            .collect()
    }

    /// Destination address → the `instance` labels it received, over several batches.
    fn received(plan: &OutputPlan, batches: usize) -> BTreeMap<String, Vec<String>> {
        let mut by_address: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for round in 0..batches {
            for (destination, samples) in plan.split(batch(300, round as i64 * 1000)) {
                let address = plan.destinations()[destination].address.clone();
                by_address.entry(address).or_default().extend(samples.iter().map(|s| s.labels.get("instance").unwrap().to_owned()));
            }
        }
        by_address
    }

    #[test]
    fn a_series_always_goes_to_one_node_and_every_address_of_it_gets_a_copy() {
        let plan = OutputPlan::from_nodes(&nodes(FanOutMode::Hash, &[("a", &["a1", "a2"]), ("b", &["b1"]), ("c", &["c1", "c2", "c3"])])).unwrap();
        let by_address = received(&plan, 3);
        // Replicas of a node receive exactly the same samples, in the same order.
        assert_eq!(by_address["a1"], by_address["a2"]);
        assert_eq!(by_address["c1"], by_address["c2"]);
        assert_eq!(by_address["c1"], by_address["c3"]);
        // Each series lands on exactly one node, and on it in every batch.
        let node_sets = [&by_address["a1"], &by_address["b1"], &by_address["c1"]];
        let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
        for (node, series) in node_sets.iter().enumerate() {
            for name in series.iter() {
                assert_eq!(*owner.entry(name.as_str()).or_insert(node), node, "{name} went to two nodes");
            }
        }
        assert_eq!(owner.len(), 300, "every series routed");
        let total: usize = node_sets.iter().map(|s| s.len()).sum();
        assert_eq!(total, 900, "no sample lost or doubled across nodes");
        assert!(node_sets.iter().all(|s| !s.is_empty()), "300 series spread over 3 nodes");
        // The node is the ring's choice for the series.
        for (destination, samples) in plan.split(batch(300, 0)) {
            for sample in &samples {
                let node = plan.fanout().route(sample);
                let super::super::Route::One(index) = node else { panic!("hash mode routes to one node") };
                assert_eq!(plan.fanout().ring().node_name(index), Some(plan.destinations()[destination].node.as_str()));
            }
        }
    }

    #[test]
    fn broadcast_sends_every_sample_to_every_address() {
        let plan = OutputPlan::from_nodes(&nodes(FanOutMode::Broadcast, &[("a", &["a1", "a2"]), ("b", &["b1"])])).unwrap();
        let by_address = received(&plan, 2);
        let expected: Vec<String> = (0..2).flat_map(|_| (0..300).map(|i| format!("host-{i}"))).collect();
        assert_eq!(by_address.len(), 3);
        for series in by_address.values() {
            assert_eq!(series, &expected);
        }
    }

    #[test]
    fn a_single_url_is_one_queue_under_the_output_prefix() {
        let protocol: OutputProtocol = serde_json::from_str(r#"{"remoteWrite": {"url": "http://vm:8428/api/v1/write"}}"#).unwrap();
        let plan = OutputPlan::of(&protocol).unwrap();
        assert!(plan.is_single());
        assert_eq!(plan.destinations(), &[Destination { node: "default".into(), address: "http://vm:8428/api/v1/write".into() }]);
        let samples = batch(5, 0);
        assert_eq!(plan.split(samples.clone()), vec![(0, samples)]);
        let stdout: OutputProtocol = serde_json::from_str(r#"{"stdout": {}}"#).unwrap();
        assert!(OutputPlan::of(&stdout).unwrap().is_single());
        let fanned: OutputProtocol =
            serde_json::from_str(r#"{"influx": {"database": "db", "fanOut": {"nodes": [{"name": "a", "addresses": ["http://a:8086"]}]}}}"#).unwrap();
        let plan = OutputPlan::of(&fanned).unwrap();
        assert!(!plan.is_single(), "an explicit fanOut has its own queue names even with one node");
        let built = fanned.for_address("http://a:8086");
        assert_eq!(built.influx.as_ref().unwrap().url.as_deref(), Some("http://a:8086"));
        assert!(built.influx.unwrap().fan_out.is_none());
    }

    #[test]
    fn queue_names_are_stable_and_distinct_per_address() {
        let a1 = Destination { node: "a".into(), address: "http://a1:8428/api/v1/write".into() };
        let a2 = Destination { node: "a".into(), address: "http://a2:8428/api/v1/write".into() };
        assert_eq!(a1.queue_name(), a1.clone().queue_name());
        assert_ne!(a1.queue_name(), a2.queue_name());
        assert!(a1.queue_name().starts_with("node/a/"));
        assert!(!a1.queue_name().contains(['{', '}']));
    }

    #[test]
    fn duplicate_node_names_are_refused_with_the_field() {
        let error = OutputPlan::from_nodes(&nodes(FanOutMode::Hash, &[("a", &["x"]), ("a", &["y"])])).unwrap_err();
        assert!(error.to_string().contains("fanOut") && error.to_string().contains("\"a\""), "{error}");
    }

    #[test]
    fn the_buffer_limit_is_the_outputs_total_split_over_destinations() {
        let share = buffer_share(&BufferSpec::default(), 3);
        assert_eq!(share.memory.unwrap().max_samples, 33_334);
        let redis: BufferSpec = serde_json::from_str(r#"{"redis": {"url": "redis://r", "maxSamples": 10}}"#).unwrap();
        let share = buffer_share(&redis, 4);
        assert_eq!(share.redis.unwrap().max_samples, 3);
        assert!(share.memory.is_none(), "a Redis output must not gain a memory buffer");
    }

    #[test]
    fn the_api_default_matches_the_ring_default() {
        assert_eq!(metricshard_crds::fanout::DEFAULT_VIRTUAL_NODES, super::super::DEFAULT_VIRTUAL_NODES);
    }
}
