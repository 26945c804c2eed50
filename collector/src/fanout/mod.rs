//! Fan-out of an output's samples over its backend nodes.
//!
//! An output with several nodes either shards series over them with a consistent hash ring
//! ([`ring::HashRing`], keyed by series identity) or broadcasts every sample to all of them.
//! The pipeline keeps one queue per node and asks [`FanOut::route`] (or [`FanOut::partition`]
//! for a whole batch) where each sample goes, so a slow or dead node only backs up its own
//! queue. A series always maps to the same node while the node set is unchanged, so per-series
//! order within a node queue is the order of arrival.
//!
//! A node is a name on the ring. Copying to every address of a node (replicas behind one
//! node) is done by [`delivery`], which splits an output's samples by destination and runs one
//! buffer and delivery loop per address.

pub mod delivery;
pub mod ring;

pub use ring::{DEFAULT_VIRTUAL_NODES, HashRing, NodeIndex, RingError, sample_hash, series_hash};

use crate::sample::Sample;

/// How an output spreads samples over its nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanOutMode {
    /// Each series goes to one node, chosen by the ring.
    #[default]
    Hash,
    /// Every sample goes to every node.
    Broadcast,
}

/// Where one sample goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this node only.
    One(NodeIndex),
    /// To every node.
    All,
}

/// The routing of one output: its nodes and mode.
#[derive(Clone, Debug)]
pub struct FanOut {
    ring: HashRing,
    mode: FanOutMode,
}

impl FanOut {
    /// Routing over `nodes` (names in queue order) with `virtual_nodes` ring points each.
    pub fn new<I, S>(nodes: I, virtual_nodes: u32, mode: FanOutMode) -> Result<Self, RingError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Ok(Self { ring: HashRing::new(nodes, virtual_nodes)?, mode })
    }

    /// Where a sample goes.
    pub fn route(&self, sample: &Sample) -> Route {
        match self.mode {
            FanOutMode::Broadcast => Route::All,
            // With one node there is nothing to choose; skip the hash.
            FanOutMode::Hash if self.ring.len() == 1 => Route::One(NodeIndex(0)),
            FanOutMode::Hash => Route::One(self.ring.node_of(sample)),
        }
    }

    /// The indices of `batch`'s samples per node (outer index = [`NodeIndex`]), in batch order.
    /// In broadcast mode every node gets every index.
    pub fn partition(&self, batch: &[Sample]) -> Vec<Vec<usize>> {
        let nodes = self.ring.len();
        if self.mode == FanOutMode::Broadcast || nodes == 1 {
            return vec![(0..batch.len()).collect(); nodes];
        }
        let mut parts = vec![Vec::with_capacity(batch.len() / nodes + 1); nodes];
        let mut scratch = Vec::with_capacity(128);
        for (index, sample) in batch.iter().enumerate() {
            let hash = ring::series_hash_with(&sample.name, &sample.labels, &mut scratch);
            parts[self.ring.lookup(hash).get()].push(index);
        }
        parts
    }

    /// The ring (node names, ownership).
    pub fn ring(&self) -> &HashRing {
        &self.ring
    }

    /// The mode.
    pub fn mode(&self) -> FanOutMode {
        self.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Labels;

    fn batch() -> Vec<Sample> {
        (0..200)
            .map(|i| {
                Sample::new("m", Labels::from_pairs([("series", (i % 50).to_string())]), f64::from(i), i64::from(i))
            })
            .collect()
    }

    #[test]
    fn hash_mode_partitions_by_series_and_keeps_order() {
        let fanout = FanOut::new(["a", "b", "c"], DEFAULT_VIRTUAL_NODES, FanOutMode::Hash).unwrap();
        let batch = batch();
        let parts = fanout.partition(&batch);
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), batch.len());
        for (node, indices) in parts.iter().enumerate() {
            assert!(indices.windows(2).all(|w| w[0] < w[1]), "batch order kept");
            for &index in indices {
                assert_eq!(fanout.route(&batch[index]), Route::One(NodeIndex(node as u32)));
            }
        }
        assert!(parts.iter().all(|p| !p.is_empty()), "50 series spread over 3 nodes");
    }

    #[test]
    fn broadcast_sends_everything_everywhere() {
        let fanout = FanOut::new(["a", "b"], 8, FanOutMode::Broadcast).unwrap();
        let batch = batch();
        assert_eq!(fanout.route(&batch[0]), Route::All);
        let parts = fanout.partition(&batch);
        assert_eq!(parts, vec![(0..batch.len()).collect::<Vec<_>>(); 2]);
    }

    #[test]
    fn single_node_takes_all() {
        let fanout = FanOut::new(["only"], 8, FanOutMode::Hash).unwrap();
        assert_eq!(fanout.route(&batch()[3]), Route::One(NodeIndex(0)));
    }
}
