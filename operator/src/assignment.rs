//! Which collector runs each MetricInput: bounded-load consistent hashing (Mirrokni, Thorup,
//! Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018), made sticky.
//!
//! Pure: no kube, no I/O, no clock, no randomness. The same inputs, collectors, previous
//! assignment and configuration give the same [`Assignment`] in any process, on any machine, in
//! any order of the arguments — which is what lets a newly elected leader recompute its
//! predecessor's assignment from the labels on the MetricInputs and move nothing.
//!
//! # Algorithm
//!
//! Collectors sit on a 64-bit hash ring, `virtual_nodes` points each; an input sits at the hash
//! of its key. Walking clockwise from an input, the order in which collectors first appear is
//! that input's *preference list*. Every collector may hold at most the
//! capacity `⌈(1 + ε) · m / n⌉` inputs (m inputs, n collectors; never below `⌈m / n⌉`), so no
//! collector carries more than (1 + ε) times the mean.
//!
//! Inputs are handled in a canonical order — by key hash, then key — so the result does not
//! depend on the order of the arguments:
//!
//! 1. **Keep.** An input whose previous collector is still a member starts there.
//! 2. **Pull.** Repeatedly, until nothing changes: an input moves to the first collector before
//!    its current one in its preference list that holds fewer than `⌊m / n⌋` inputs (below the
//!    mean). This is how a new collector gets its share — the inputs that now prefer it — and
//!    nothing else: it stops pulling once it reaches the mean.
//! 3. **Shed.** A collector above capacity (more inputs per collector after a scale-down was
//!    undone, or fewer collectors' worth of capacity after a scale-up) gives up its excess, last
//!    in canonical order first.
//! 4. **Place.** Every unassigned input (new, orphaned by a dead collector, or shed) takes the
//!    first collector in its preference list that is below capacity. Without a previous
//!    assignment this step alone runs, and it is exactly the paper's algorithm.
//!
//! The result is a fixed point: fed back as `previous`, it comes out unchanged (after step 2 no
//! input has a below-mean collector ahead of it; steps 3 and 4 only leave collectors at or above
//! the mean ahead of any input). So reconciling twice, or a new leader reconciling once, moves
//! nothing. The property tests check that, with the load bound and order independence.
//!
//! # Why sticky
//!
//! Measured (see `docs/benchmarks.md`, "Assignment (operator)"): with 1000 inputs, scaling 3 → 4
//! collectors moves about a quarter of the inputs either way, but the fresh recomputation also
//! moves inputs whenever an overflow chain shifts (a collector reaching capacity earlier or later
//! in the canonical order), which happens on every change of the input set and gets worse as
//! collectors are added; the sticky variant moves only the new collector's share plus the excess
//! of collectors above the new capacity, and never moves an existing input when another is
//! added. A fresh leader reads the previous assignment from the labels, so stickiness costs no
//! determinism.

mod ring;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use ring::HashRing;

/// The default ε: no collector holds more than 1.1 × the mean number of inputs (rounded up).
pub const DEFAULT_LOAD_FACTOR_EPSILON: f64 = 0.1;

/// The default number of ring points per collector. More points spread the inputs' first
/// choices more evenly, so fewer inputs overflow to a second choice and fewer move on a change;
/// the cost is ring size (n · points entries) and build time, both small at this value.
pub const DEFAULT_VIRTUAL_NODES: u32 = 256;

/// The most ring points per collector accepted: beyond this the ring costs memory and build time
/// for no measurable gain in balance.
pub const MAX_VIRTUAL_NODES: u32 = 4096;

/// Identifies an input: the `namespace/name` of its MetricInput.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InputKey(String);

impl InputKey {
    /// The key of the MetricInput `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}/{name}"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for InputKey {
    fn from(key: String) -> Self {
        Self(key)
    }
}

impl From<&str> for InputKey {
    fn from(key: &str) -> Self {
        Self(key.to_owned())
    }
}

impl Borrow<str> for InputKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InputKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies a collector: its pod name, e.g. `metricshard-collector-2`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectorId(String);

impl CollectorId {
    /// The collector whose pod is named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for CollectorId {
    fn from(name: String) -> Self {
        Self(name)
    }
}

impl From<&str> for CollectorId {
    fn from(name: &str) -> Self {
        Self(name.to_owned())
    }
}

impl Borrow<str> for CollectorId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tuning of the assignment. Every leader must use the same values, or the new leader computes a
/// different (though still valid) assignment and moves inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct AssignmentConfig {
    /// ε: each collector holds at most `⌈(1 + ε) · mean⌉` inputs. Must be finite and > 0; it is
    /// used rounded to millionths. Smaller values balance more tightly and move more inputs on
    /// changes.
    pub load_factor_epsilon: f64,
    /// Ring points per collector, 1 to [`MAX_VIRTUAL_NODES`].
    pub virtual_nodes: u32,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        Self { load_factor_epsilon: DEFAULT_LOAD_FACTOR_EPSILON, virtual_nodes: DEFAULT_VIRTUAL_NODES }
    }
}

impl AssignmentConfig {
    /// Checks ε and the number of virtual nodes.
    pub fn validate(&self) -> Result<(), AssignmentError> {
        let epsilon = self.load_factor_epsilon;
        if !epsilon.is_finite() || epsilon <= 0.0 {
            return Err(AssignmentError::InvalidLoadFactor(epsilon));
        }
        if self.virtual_nodes == 0 || self.virtual_nodes > MAX_VIRTUAL_NODES {
            return Err(AssignmentError::InvalidVirtualNodes(self.virtual_nodes));
        }
        Ok(())
    }
}

/// Why no assignment could be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AssignmentError {
    /// There are inputs but no live collector to run them.
    #[error("no live collector to assign {inputs} input(s) to: is the collector StatefulSet scaled to zero or are all its pods unready?")]
    NoCollectors {
        /// How many inputs are left unassigned.
        inputs: usize,
    },
    /// ε is not a finite number above zero.
    #[error("load factor epsilon must be a finite number > 0, got {0}")]
    InvalidLoadFactor(f64),
    /// The number of virtual nodes is zero or above [`MAX_VIRTUAL_NODES`].
    #[error("virtual nodes per collector must be between 1 and {MAX_VIRTUAL_NODES}, got {0}")]
    InvalidVirtualNodes(u32),
    /// The same input key was given twice.
    #[error("input {0} is listed twice")]
    DuplicateInput(InputKey),
    /// The same collector was given twice.
    #[error("collector {0} is listed twice")]
    DuplicateCollector(CollectorId),
}

impl AssignmentError {
    /// A short, fixed category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NoCollectors { .. } => "no_collectors",
            Self::InvalidLoadFactor(_) | Self::InvalidVirtualNodes(_) => "invalid_config",
            Self::DuplicateInput(_) | Self::DuplicateCollector(_) => "duplicate",
        }
    }
}

/// The outcome: every input mapped to exactly one live collector, no collector above capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    owners: BTreeMap<InputKey, CollectorId>,
    loads: BTreeMap<CollectorId, usize>,
    capacity: usize,
}

impl Assignment {
    /// The collector that runs `input`, if it is one of the assigned inputs.
    pub fn collector_of(&self, input: &str) -> Option<&CollectorId> {
        self.owners.get(input)
    }

    /// Every input with its collector, ordered by input key.
    pub fn owners(&self) -> &BTreeMap<InputKey, CollectorId> {
        &self.owners
    }

    /// Every input with its collector, ordered by input key, by value.
    pub fn into_owners(self) -> BTreeMap<InputKey, CollectorId> {
        self.owners
    }

    /// How many inputs `collector` runs (0 for a collector that is not a member).
    pub fn load(&self, collector: &str) -> usize {
        self.loads.get(collector).copied().unwrap_or(0)
    }

    /// Every member collector with its number of inputs, idle ones included.
    pub fn loads(&self) -> &BTreeMap<CollectorId, usize> {
        &self.loads
    }

    /// The largest number of inputs on one collector.
    pub fn max_load(&self) -> usize {
        self.loads.values().copied().max().unwrap_or(0)
    }

    /// The most inputs a collector may hold: `max(⌈(1 + ε) · m / n⌉, ⌈m / n⌉)`.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many inputs are assigned.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether no input is assigned.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// How many inputs run on a different collector than in `previous`. Inputs new since
    /// `previous` do not count; inputs whose previous collector is gone do.
    pub fn moved_from(&self, previous: &BTreeMap<InputKey, CollectorId>) -> usize {
        self.owners
            .iter()
            .filter(|(input, collector)| previous.get(*input).is_some_and(|before| before != *collector))
            .count()
    }
}

/// Assigns every input to one of `collectors` (the live ones).
///
/// `previous` is the assignment in force (read back from the inputs' labels); entries for inputs
/// that no longer exist or collectors that are no longer live are ignored. With `None` the
/// assignment is computed from scratch. The order of `inputs` and `collectors` does not matter.
///
/// An empty `inputs` gives an empty assignment even without collectors; inputs without
/// collectors are an error, as are an invalid `config` and duplicate keys or collectors.
pub fn assign(
    inputs: &[InputKey],
    collectors: &[CollectorId],
    previous: Option<&BTreeMap<InputKey, CollectorId>>,
    config: &AssignmentConfig,
) -> Result<Assignment, AssignmentError> {
    config.validate()?;
    let members = sorted_members(collectors)?;
    let order = canonical_order(inputs)?;
    if members.is_empty() {
        if order.is_empty() {
            return Ok(Assignment { owners: BTreeMap::new(), loads: BTreeMap::new(), capacity: 0 });
        }
        return Err(AssignmentError::NoCollectors { inputs: order.len() });
    }

    let capacity = capacity(order.len(), members.len(), config.load_factor_epsilon);
    let floor_mean = order.len() / members.len();
    let ring = HashRing::new(&members, config.virtual_nodes);

    // Step 1, keep: start from the previous owner where it is still a member.
    let mut owner: Vec<Option<usize>> = order
        .iter()
        .map(|(_, key)| {
            let before = previous?.get(*key)?;
            members.binary_search(&before).ok()
        })
        .collect();
    let mut load = vec![0_usize; members.len()];
    for &collector in owner.iter().flatten() {
        load[collector] += 1;
    }

    // Step 2, place the inputs without a live owner (new ones, a dead collector's) before
    // pulling, so that the pull sees the loads they bring and does not empty collectors' overflow
    // onto their first choices only to refill them.
    place_unassigned(&ring, &order, &mut owner, &mut load, capacity);
    pull_to_below_mean(&ring, &order, &mut owner, &mut load, floor_mean);
    shed_above_capacity(&mut owner, &mut load, capacity);
    place_unassigned(&ring, &order, &mut owner, &mut load, capacity);

    let owners = order
        .iter()
        .zip(&owner)
        .filter_map(|((_, key), slot)| slot.map(|collector| ((*key).clone(), members[collector].clone())))
        .collect();
    let loads = members.iter().zip(&load).map(|(member, &count)| ((*member).clone(), count)).collect();
    Ok(Assignment { owners, loads, capacity })
}

/// Gives every unassigned input the first collector in its preference list below capacity.
/// Capacity · n ≥ m, so the walk always finds one; the least-loaded fallback only keeps this
/// total without a panic.
fn place_unassigned(
    ring: &HashRing,
    order: &[(u64, &InputKey)],
    owner: &mut [Option<usize>],
    load: &mut [usize],
    capacity: usize,
) {
    for ((point, _), slot) in order.iter().zip(owner.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let target = ring
            .walk(*point)
            .find(|&candidate| load[candidate] < capacity)
            .or_else(|| (0..load.len()).min_by_key(|&candidate| (load[candidate], candidate)))
            .unwrap_or(0);
        load[target] += 1;
        *slot = Some(target);
    }
}

/// Moves inputs to a collector below the mean (`floor_mean`) that they prefer to their current
/// one, until no input has such a collector ahead of it. Every move lowers the input's rank in
/// its preference list, so this ends; a collector that drops below the mean by losing inputs
/// pulls in turn, hence the repeated passes.
fn pull_to_below_mean(
    ring: &HashRing,
    order: &[(u64, &InputKey)],
    owner: &mut [Option<usize>],
    load: &mut [usize],
    floor_mean: usize,
) {
    loop {
        let mut moved = false;
        for ((point, _), slot) in order.iter().zip(owner.iter_mut()) {
            let Some(current) = *slot else { continue };
            let preferred = ring
                .walk(*point)
                .take_while(|&candidate| candidate != current)
                .find(|&candidate| load[candidate] < floor_mean);
            if let Some(target) = preferred {
                load[current] -= 1;
                load[target] += 1;
                *slot = Some(target);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

/// Unassigns the excess of every collector above capacity, last in canonical order first (the
/// inputs the fresh algorithm would have overflowed).
fn shed_above_capacity(owner: &mut [Option<usize>], load: &mut [usize], capacity: usize) {
    for slot in owner.iter_mut().rev() {
        if let Some(current) = *slot
            && load[current] > capacity
        {
            load[current] -= 1;
            *slot = None;
        }
    }
}

/// `max(⌈(1 + ε) · m / n⌉, ⌈m / n⌉)` in exact integer arithmetic, with ε rounded to millionths.
/// In floating point, `1.1 · 100000 / 100` is `1100.0000000000002` and its ceiling 1101: exact
/// integers keep the bound what the formula says. The second term keeps `capacity · n ≥ m` for
/// an ε that rounds to zero.
fn capacity(inputs: usize, collectors: usize, epsilon: f64) -> usize {
    const MILLION: u128 = 1_000_000;
    // `as` saturates for huge values; NaN and negatives were rejected by `validate`.
    let epsilon_millionths = (epsilon * 1e6).round() as u64;
    let numerator = (inputs as u128).saturating_mul(MILLION + u128::from(epsilon_millionths));
    let bounded = numerator.div_ceil((collectors as u128) * MILLION);
    usize::try_from(bounded).unwrap_or(usize::MAX).max(inputs.div_ceil(collectors))
}

/// The collectors sorted, so that collector indices (and ring tie-breaks) are canonical.
fn sorted_members(collectors: &[CollectorId]) -> Result<Vec<&CollectorId>, AssignmentError> {
    let mut members: Vec<&CollectorId> = collectors.iter().collect();
    members.sort_unstable();
    if let Some(pair) = members.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(AssignmentError::DuplicateCollector(pair[0].clone()));
    }
    Ok(members)
}

/// The inputs with their ring points, sorted by point then key: the order every step uses.
fn canonical_order(inputs: &[InputKey]) -> Result<Vec<(u64, &InputKey)>, AssignmentError> {
    let mut order: Vec<(u64, &InputKey)> = inputs.iter().map(|key| (ring::input_point(key.as_str()), key)).collect();
    order.sort_unstable();
    // Equal keys have equal points, so duplicates end up adjacent.
    if let Some(pair) = order.windows(2).find(|pair| pair[0].1 == pair[1].1) {
        return Err(AssignmentError::DuplicateInput(pair[0].1.clone()));
    }
    Ok(order)
}
