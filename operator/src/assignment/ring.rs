//! The hash ring: every collector's virtual nodes on a 64-bit circle, and the stable hashes
//! that put inputs and virtual nodes on it.
//!
//! The hash is XXH3-64 (the `xxh3_64` of xxHash ≥ 0.8, whose output is frozen by its
//! specification). A new leader must reproduce its predecessor's assignment exactly, possibly
//! built by another compiler for another CPU, so std's `Hasher`s (unspecified, randomly keyed)
//! are out. XXH3 is specified, has implementations in every language we might test against, and
//! hashes short keys in a few nanoseconds. Changing any of the functions below would move inputs
//! on upgrade (the sticky assignment keeps that to a rebalance, not a reshuffle, but still): the
//! golden tests in `tests.rs` pin their outputs.

use xxhash_rust::xxh3::xxh3_64;

use super::CollectorId;

/// Where an input sits on the ring: XXH3-64 of its key's UTF-8 bytes (`namespace/name`).
pub(super) fn input_point(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// Where replica `replica` of a collector sits: XXH3-64 of the collector id's UTF-8 bytes, the
/// byte `0xFF`, and the replica number as 4 little-endian bytes. `0xFF` never occurs in UTF-8,
/// so no two (id, replica) pairs share an encoding.
pub(super) fn virtual_node_point(collector: &str, replica: u32) -> u64 {
    let mut bytes = Vec::with_capacity(collector.len() + 5);
    bytes.extend_from_slice(collector.as_bytes());
    bytes.push(0xFF);
    bytes.extend_from_slice(&replica.to_le_bytes());
    xxh3_64(&bytes)
}

/// The collectors' virtual nodes sorted by position. Collectors are referred to by their index in
/// the sorted member list the ring was built from.
#[derive(Debug)]
pub(super) struct HashRing {
    /// `(position, collector index)`, sorted; a position shared by two virtual nodes (a 64-bit
    /// collision) is ordered by collector index, which is itself canonical.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    /// Builds the ring of `members` (sorted, distinct) with `virtual_nodes` replicas each.
    pub(super) fn new(members: &[&CollectorId], virtual_nodes: u32) -> Self {
        let mut points = Vec::with_capacity(members.len() * virtual_nodes as usize);
        for (index, member) in members.iter().enumerate() {
            for replica in 0..virtual_nodes {
                points.push((virtual_node_point(member.as_str(), replica), index));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The collectors met walking clockwise from `point` once around the circle: one entry per
    /// virtual node, starting at the first node at or after `point`. The first entry is the
    /// input's plain consistent-hashing owner; the order of first appearances is its preference
    /// list.
    pub(super) fn walk(&self, point: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(position, _)| position < point);
        let (before, from) = self.points.split_at(start);
        from.iter().chain(before).map(|&(_, collector)| collector)
    }
}
