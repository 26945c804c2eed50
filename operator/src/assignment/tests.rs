use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::ring::{HashRing, input_point, virtual_node_point};
use super::*;

fn collectors(count: usize) -> Vec<CollectorId> {
    (0..count).map(|index| CollectorId::new(format!("metricshard-collector-{index}"))).collect()
}

/// `count` inputs spread over a few namespaces; `set` varies the names so that tests can sample
/// many independent input sets.
fn inputs(set: usize, count: usize) -> Vec<InputKey> {
    (0..count).map(|index| InputKey::new(&format!("team-{set}-{}", index % 7), &format!("input-{index}"))).collect()
}

/// ⌈(1 + ε)·m/n⌉ computed independently of the implementation: in floating point with a
/// tolerance for the rounding of 1 + ε (ε here never has more than 6 decimals).
fn expected_capacity(inputs: usize, collectors: usize, epsilon: f64) -> usize {
    let exact = (1.0 + epsilon) * inputs as f64 / collectors as f64;
    let bounded = (exact - 1e-6).ceil() as usize;
    bounded.max(inputs.div_ceil(collectors))
}

/// The first collector clockwise from the input: its plain consistent-hashing owner.
fn first_choice(
    inputs: &[InputKey],
    members: &[CollectorId],
    config: &AssignmentConfig,
) -> BTreeMap<InputKey, CollectorId> {
    let mut sorted: Vec<&CollectorId> = members.iter().collect();
    sorted.sort();
    let ring = HashRing::new(&sorted, config.virtual_nodes);
    inputs
        .iter()
        .map(|input| {
            let index = ring.walk(input_point(input.as_str())).next().unwrap();
            (input.clone(), sorted[index].clone())
        })
        .collect()
}

fn check_invariants(assignment: &Assignment, inputs: &[InputKey], members: &[CollectorId], epsilon: f64) {
    let live: BTreeSet<&CollectorId> = members.iter().collect();
    assert_eq!(assignment.len(), inputs.len(), "every input assigned exactly once");
    for input in inputs {
        let owner = assignment.collector_of(input.as_str()).expect("input assigned");
        assert!(live.contains(owner), "{input} assigned to non-member {owner}");
    }
    let mut counted: BTreeMap<CollectorId, usize> = members.iter().map(|member| (member.clone(), 0)).collect();
    for owner in assignment.owners().values() {
        *counted.get_mut(owner).unwrap() += 1;
    }
    assert_eq!(&counted, assignment.loads(), "loads match owners");
    let capacity = expected_capacity(inputs.len(), members.len(), epsilon);
    assert_eq!(assignment.capacity(), capacity);
    assert!(assignment.max_load() <= capacity, "max load {} above capacity {capacity}", assignment.max_load());
}

#[test]
fn xxh3_is_the_specified_function() {
    // XXH3-64 of the empty input with seed 0, from the xxHash reference test vectors. If this
    // fails the dependency no longer implements the specified hash and every input would move.
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
}

#[test]
fn ring_positions_are_pinned() {
    // Never change these: a different position moves inputs on upgrade, and a leader of the old
    // version and one of the new would disagree.
    assert_eq!(input_point("default/node-exporter"), xxhash_rust::xxh3::xxh3_64(b"default/node-exporter"));
    let mut encoded = b"metricshard-collector-0".to_vec();
    encoded.extend_from_slice(&[0xFF, 7, 0, 0, 0]);
    assert_eq!(virtual_node_point("metricshard-collector-0", 7), xxhash_rust::xxh3::xxh3_64(&encoded));
    assert_ne!(virtual_node_point("a", 1), virtual_node_point("a", 256));
}

#[test]
fn assignment_is_pinned() {
    // A golden assignment: if the algorithm, the hash or the defaults change, this fails, because
    // a mixed-version leader handover would then reshuffle inputs. Update it only on purpose and
    // say so in the release notes.
    let inputs = inputs(0, 12);
    let assignment = assign(&inputs, &collectors(3), None, &AssignmentConfig::default()).unwrap();
    let owners: Vec<(&str, &str)> =
        assignment.owners().iter().map(|(input, collector)| (input.as_str(), collector.as_str())).collect();
    assert_eq!(owners, GOLDEN);
}

const GOLDEN: [(&str, &str); 12] = [
    ("team-0-0/input-0", "metricshard-collector-1"),
    ("team-0-0/input-7", "metricshard-collector-1"),
    ("team-0-1/input-1", "metricshard-collector-0"),
    ("team-0-1/input-8", "metricshard-collector-2"),
    ("team-0-2/input-2", "metricshard-collector-2"),
    ("team-0-2/input-9", "metricshard-collector-1"),
    ("team-0-3/input-10", "metricshard-collector-2"),
    ("team-0-3/input-3", "metricshard-collector-1"),
    ("team-0-4/input-11", "metricshard-collector-1"),
    ("team-0-4/input-4", "metricshard-collector-0"),
    ("team-0-5/input-5", "metricshard-collector-2"),
    ("team-0-6/input-6", "metricshard-collector-0"),
];

#[test]
fn no_collectors_is_a_clear_error() {
    let error = assign(&inputs(0, 5), &[], None, &AssignmentConfig::default()).unwrap_err();
    assert_eq!(error, AssignmentError::NoCollectors { inputs: 5 });
    assert_eq!(error.category(), "no_collectors");
    assert!(error.to_string().contains("no live collector to assign 5 input(s)"), "{error}");
}

#[test]
fn nothing_to_assign_needs_no_collectors() {
    let assignment = assign(&[], &[], None, &AssignmentConfig::default()).unwrap();
    assert!(assignment.is_empty());
    assert_eq!(assignment.max_load(), 0);
}

#[test]
fn invalid_epsilon_is_rejected() {
    for epsilon in [0.0, -0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let config = AssignmentConfig { load_factor_epsilon: epsilon, ..AssignmentConfig::default() };
        let error = assign(&inputs(0, 3), &collectors(2), None, &config).unwrap_err();
        assert!(matches!(error, AssignmentError::InvalidLoadFactor(_)), "{epsilon}: {error:?}");
        assert_eq!(error.category(), "invalid_config");
    }
}

#[test]
fn invalid_virtual_nodes_are_rejected() {
    for virtual_nodes in [0, MAX_VIRTUAL_NODES + 1] {
        let config = AssignmentConfig { virtual_nodes, ..AssignmentConfig::default() };
        let error = assign(&inputs(0, 3), &collectors(2), None, &config).unwrap_err();
        assert_eq!(error, AssignmentError::InvalidVirtualNodes(virtual_nodes));
    }
}

#[test]
fn duplicates_are_rejected() {
    let mut twice = inputs(0, 3);
    twice.push(twice[1].clone());
    let error = assign(&twice, &collectors(2), None, &AssignmentConfig::default()).unwrap_err();
    assert_eq!(error, AssignmentError::DuplicateInput(twice[1].clone()));

    let mut members = collectors(3);
    members.push(members[0].clone());
    let error = assign(&inputs(0, 3), &members, None, &AssignmentConfig::default()).unwrap_err();
    assert_eq!(error, AssignmentError::DuplicateCollector(members[0].clone()));
    assert_eq!(error.category(), "duplicate");
}

#[test]
fn capacity_follows_the_formula() {
    assert_eq!(capacity(1000, 3, 0.1), 367);
    assert_eq!(capacity(1000, 4, 0.1), 275);
    assert_eq!(capacity(10, 3, 0.1), 4);
    assert_eq!(capacity(100_000, 100, 0.1), 1100, "not 1101 from float rounding");
    assert_eq!(capacity(1000, 4, 0.000_000_1), 250, "ε below a millionth rounds to zero");
    // ε so small that 1 + ε rounds to 1: capacity still covers every input.
    assert_eq!(capacity(10, 3, 1e-20), 4);
    assert_eq!(capacity(9, 3, 1e-20), 3);
    assert_eq!(capacity(0, 3, 0.1), 0);
}

#[test]
fn previous_entries_for_dead_collectors_and_deleted_inputs_are_ignored() {
    let inputs = inputs(1, 50);
    let mut previous = BTreeMap::new();
    previous.insert(inputs[0].clone(), CollectorId::new("metricshard-collector-9"));
    previous.insert(InputKey::new("gone", "input"), CollectorId::new("metricshard-collector-0"));
    let members = collectors(3);
    let assignment = assign(&inputs, &members, Some(&previous), &AssignmentConfig::default()).unwrap();
    check_invariants(&assignment, &inputs, &members, DEFAULT_LOAD_FACTOR_EPSILON);
    assert!(assignment.collector_of("gone/input").is_none());
    assert_eq!(assignment.moved_from(&previous), 1, "the dead collector's input moved");
}

/// The e2e issue's bound: scaling 3 → 4 collectors moves at most 1.1/4 of the inputs. Checked
/// on many independent input sets, since one set could pass by luck. The fresh recomputation is
/// measured alongside: it exceeds the bound on some sets, which is why assignment is sticky.
#[test]
fn scaling_three_to_four_moves_at_most_eleven_fortieths() {
    let config = AssignmentConfig::default();
    let bound = 1000 * 11 / 40;
    let (mut sticky_total, mut fresh_total, mut sticky_worst) = (0, 0, 0);
    for set in 0..40 {
        let inputs = inputs(set, 1000);
        let before = assign(&inputs, &collectors(3), None, &config).unwrap();
        let sticky = assign(&inputs, &collectors(4), Some(before.owners()), &config).unwrap();
        let fresh = assign(&inputs, &collectors(4), None, &config).unwrap();
        check_invariants(&sticky, &inputs, &collectors(4), config.load_factor_epsilon);
        assert!(sticky.max_load() <= 275, "set {set}: max load {}", sticky.max_load());
        let moved = sticky.moved_from(before.owners());
        assert!(moved <= bound, "set {set}: {moved} of 1000 moved, bound {bound}");
        // The new collector got (at least nearly) its share: the mean is 250.
        assert!(sticky.load("metricshard-collector-3") >= 200, "set {set}: {:?}", sticky.loads());
        sticky_worst = sticky_worst.max(moved);
        sticky_total += moved;
        fresh_total += fresh.moved_from(before.owners());
    }
    assert!(sticky_total <= fresh_total, "sticky moved {sticky_total}, fresh {fresh_total}");
    assert!(sticky_worst <= bound);
}

#[test]
fn adding_inputs_moves_no_existing_input() {
    let config = AssignmentConfig::default();
    let members = collectors(10);
    let before_inputs = inputs(2, 10_000);
    let before = assign(&before_inputs, &members, None, &config).unwrap();
    let mut after_inputs = before_inputs.clone();
    after_inputs.extend((0..100).map(|index| InputKey::new("new", &format!("input-{index}"))));
    let sticky = assign(&after_inputs, &members, Some(before.owners()), &config).unwrap();
    assert_eq!(sticky.moved_from(before.owners()), 0);
    check_invariants(&sticky, &after_inputs, &members, config.load_factor_epsilon);
}

fn unique_inputs(sizes: std::ops::Range<usize>) -> impl Strategy<Value = Vec<InputKey>> {
    proptest::collection::btree_set("[a-c]{1,2}/[a-z0-9]{1,6}", sizes)
        .prop_map(|keys| keys.into_iter().map(InputKey::from).collect())
}

fn config_strategy() -> impl Strategy<Value = AssignmentConfig> {
    (1u32..1000, 1u32..64).prop_map(|(epsilon_thousandths, virtual_nodes)| AssignmentConfig {
        load_factor_epsilon: f64::from(epsilon_thousandths) / 1000.0,
        virtual_nodes,
    })
}

/// An arbitrary previous assignment: any input on any collector, live or not (labels may be
/// stale, hand-edited or written under another configuration).
fn arbitrary_previous(inputs: &[InputKey], choices: &[usize]) -> BTreeMap<InputKey, CollectorId> {
    inputs
        .iter()
        .zip(choices.iter().cycle())
        .filter(|(_, choice)| **choice % 5 != 0)
        .map(|(input, choice)| (input.clone(), CollectorId::new(format!("metricshard-collector-{}", choice % 9))))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_input_once_within_capacity(
        inputs in unique_inputs(0..300),
        count in 1usize..8,
        config in config_strategy(),
        choices in proptest::collection::vec(0usize..50, 1..20),
    ) {
        let members = collectors(count);
        let previous = arbitrary_previous(&inputs, &choices);
        let fresh = assign(&inputs, &members, None, &config).unwrap();
        check_invariants(&fresh, &inputs, &members, config.load_factor_epsilon);
        let sticky = assign(&inputs, &members, Some(&previous), &config).unwrap();
        check_invariants(&sticky, &inputs, &members, config.load_factor_epsilon);
    }

    #[test]
    fn order_of_arguments_does_not_matter(
        (inputs, shuffled_inputs) in unique_inputs(0..200).prop_flat_map(|inputs| (Just(inputs.clone()), Just(inputs).prop_shuffle())),
        shuffled_members in Just(collectors(6)).prop_shuffle(),
        config in config_strategy(),
        choices in proptest::collection::vec(0usize..50, 1..20),
    ) {
        let previous = arbitrary_previous(&inputs, &choices);
        let a = assign(&inputs, &collectors(6), Some(&previous), &config).unwrap();
        let b = assign(&shuffled_inputs, &shuffled_members, Some(&previous), &config).unwrap();
        prop_assert_eq!(a, b);
    }

    /// A new leader reads the assignment back from the labels and must move nothing.
    #[test]
    fn assignment_is_a_fixed_point(
        inputs in unique_inputs(0..300),
        count in 1usize..8,
        config in config_strategy(),
        choices in proptest::collection::vec(0usize..50, 1..20),
    ) {
        let members = collectors(count);
        for previous in [None, Some(arbitrary_previous(&inputs, &choices))] {
            let first = assign(&inputs, &members, previous.as_ref(), &config).unwrap();
            let again = assign(&inputs, &members, Some(first.owners()), &config).unwrap();
            prop_assert_eq!(again.moved_from(first.owners()), 0);
            prop_assert_eq!(again, first);
        }
    }

    /// Removing a collector moves its own inputs and, beyond them, only inputs that were not on
    /// their first choice (the overflow that may now return to it); nothing else.
    #[test]
    fn removal_moves_only_the_removed_collectors_inputs_and_overflow(
        inputs in unique_inputs(0..400),
        count in 2usize..10,
        removed in 0usize..10,
        config in config_strategy(),
    ) {
        let members = collectors(count);
        let gone = members[removed % count].clone();
        let rest: Vec<CollectorId> = members.iter().filter(|member| **member != gone).cloned().collect();
        let before = assign(&inputs, &members, None, &config).unwrap();
        let first = first_choice(&inputs, &members, &config);
        let after = assign(&inputs, &rest, Some(before.owners()), &config).unwrap();
        for (input, owner) in after.owners() {
            let previous = &before.owners()[input];
            if previous != owner {
                prop_assert!(
                    *previous == gone || first[input] != *previous,
                    "{} moved from {} (its first choice, still live) to {}", input, previous, owner
                );
            }
        }
    }

    /// Adding a collector to N moves about the new collector's share s = m/(N + 1). Bound, from
    /// where the excess comes from: ε (the new capacity's slack), the relative spread of a
    /// collector's ring share with v virtual nodes (about 1/√v; collectors above the new capacity
    /// shed), and the sampling noise of m hashes (about √s), at two to three standard deviations.
    /// Measured worst cases over this space stay well inside it (docs/benchmarks.md); the e2e
    /// bound 1.1/4 for 3 → 4 with the defaults is the test above.
    #[test]
    fn adding_a_collector_moves_about_its_share(
        inputs in unique_inputs(200..2000),
        count in 1usize..10,
        epsilon_hundredths in 5u32..50,
        virtual_nodes in 64u32..=512,
    ) {
        let epsilon = f64::from(epsilon_hundredths) / 100.0;
        let config = AssignmentConfig { load_factor_epsilon: epsilon, virtual_nodes };
        let before = assign(&inputs, &collectors(count), None, &config).unwrap();
        let after = assign(&inputs, &collectors(count + 1), Some(before.owners()), &config).unwrap();
        let share = inputs.len() as f64 / (count + 1) as f64;
        let bound = share * (1.0 + epsilon + 2.0 / f64::from(virtual_nodes).sqrt()) + 3.0 * share.sqrt();
        let moved = after.moved_from(before.owners());
        prop_assert!(moved as f64 <= bound, "moved {} > {:.1} (share {:.1})", moved, bound, share);
    }

    /// Up to ε·m new inputs never move an existing one: the collectors ahead of an overflowed
    /// input are full, and the new mean does not exceed the old capacity.
    #[test]
    fn new_inputs_move_nothing(
        inputs in unique_inputs(0..300),
        extra in unique_inputs(0..300),
        count in 1usize..8,
        config in config_strategy(),
    ) {
        let members = collectors(count);
        let before = assign(&inputs, &members, None, &config).unwrap();
        let allowed = (config.load_factor_epsilon * inputs.len() as f64).floor() as usize;
        let mut all = inputs.clone();
        all.extend(extra.into_iter().map(|key| InputKey::from(format!("new-{key}"))).take(allowed));
        let after = assign(&all, &members, Some(before.owners()), &config).unwrap();
        prop_assert_eq!(after.moved_from(before.owners()), 0);
    }
}

/// Labels written under another ring configuration (here: round robin, balanced but unrelated
/// to the ring) are kept, not reshuffled, and the computation stays fast (no walk across the
/// ring per input when no collector is below the mean).
#[test]
fn a_balanced_foreign_assignment_is_kept() {
    let members = collectors(100);
    let inputs = inputs(3, 100_000);
    let previous: BTreeMap<InputKey, CollectorId> =
        inputs.iter().enumerate().map(|(index, input)| (input.clone(), members[index % 100].clone())).collect();
    let assignment = assign(&inputs, &members, Some(&previous), &AssignmentConfig::default()).unwrap();
    assert_eq!(assignment.moved_from(&previous), 0);
    check_invariants(&assignment, &inputs, &members, DEFAULT_LOAD_FACTOR_EPSILON);
}

#[test]
fn moved_from_counts_changed_owners_only() {
    let members = collectors(2);
    let inputs: Vec<InputKey> = ["a/1", "a/2", "b/1"].into_iter().map(InputKey::from).collect();
    let assignment = assign(&inputs, &members, None, &AssignmentConfig::default()).unwrap();
    let owner = |key: &str| assignment.collector_of(key).unwrap().clone();
    let other = |key: &str| members.iter().find(|member| **member != owner(key)).unwrap().clone();
    let previous: BTreeMap<InputKey, CollectorId> = [
        (InputKey::from("a/0"), members[0].clone()), // deleted since: not counted
        (InputKey::from("a/1"), owner("a/1")),       // same owner: not counted
        (InputKey::from("a/2"), other("a/2")),       // other owner: counted
                                                     // "b/1" is new: not counted
    ]
    .into_iter()
    .collect();
    assert_eq!(assignment.moved_from(&previous), 1);
    assert_eq!(assignment.moved_from(assignment.owners()), 0);
}

/// The same bound where it is tightest: few inputs, where one input more or less is a large part
/// of the share and the old collectors' excess over the new capacity is most of what must move.
/// Every set of 10 to 100 inputs (names as in a namespace of the e2e tests) scaled 3 → 4 moves
/// at most ⌊1.1·m/4⌋ and nobody exceeds capacity. (How many the new collector gets is up to the
/// hashes: it pulls only inputs that prefer it, which for 10 inputs may be one.)
#[test]
fn scaling_three_to_four_stays_within_the_bound_for_few_inputs() {
    let config = AssignmentConfig::default();
    for inputs_count in [10_usize, 20, 30, 40, 100] {
        let bound = inputs_count * 11 / 40;
        for set in 0..400 {
            let inputs: Vec<InputKey> =
                (0..inputs_count).map(|i| InputKey::new(&format!("ns-{set}"), &format!("in-{i:02}"))).collect();
            let before = assign(&inputs, &collectors(3), None, &config).unwrap();
            let after = assign(&inputs, &collectors(4), Some(before.owners()), &config).unwrap();
            check_invariants(&after, &inputs, &collectors(4), config.load_factor_epsilon);
            let moved = after.moved_from(before.owners());
            assert!(moved <= bound, "{inputs_count} inputs, set {set}: {moved} moved, bound {bound}");
        }
    }
}
