//! Assignment of MetricInputs to collectors: time for 100k inputs over 100 collectors (goal
//! ≤ 100 ms), and the movement and max-load figures of scaling N → N + 1, fresh and sticky,
//! printed before the timings.
//!
//! `cargo bench -p metricshard-operator --bench assignment -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

use criterion::{Criterion, SamplingMode};
use metricshard_operator::assignment::{Assignment, AssignmentConfig, CollectorId, InputKey, assign};

fn collectors(count: usize) -> Vec<CollectorId> {
    (0..count).map(|index| CollectorId::new(format!("metricshard-collector-{index}"))).collect()
}

/// `count` inputs over 50 namespaces; `set` gives independent input sets.
fn inputs(set: usize, count: usize) -> Vec<InputKey> {
    (0..count).map(|index| InputKey::new(&format!("team-{set}-{}", index % 50), &format!("input-{index}"))).collect()
}

fn run(inputs: &[InputKey], members: &[CollectorId], previous: Option<&Assignment>) -> Assignment {
    assign(inputs, members, previous.map(Assignment::owners), &AssignmentConfig::default())
        .unwrap_or_else(|error| panic!("assignment failed: {error}"))
}

/// Median / worst of a set of figures.
fn spread(values: &mut [usize]) -> String {
    values.sort_unstable();
    format!("{} / {}", values[values.len() / 2], values[values.len() - 1])
}

/// Movement and balance of N → N + 1, back to N, and 1 % more inputs, over several input sets.
fn print_figures() {
    println!("Assignment figures (defaults: epsilon 0.1, 256 virtual nodes); median / worst over the input sets");
    println!(
        "{:>7} {:>8} {:>4} {:>5} | {:>11} {:>11} {:>9} {:>11} | {:>11} {:>11} | {:>11} {:>11}",
        "inputs",
        "N->N+1",
        "sets",
        "share",
        "add fresh",
        "add sticky",
        "1.1*share",
        "max / cap",
        "rm fresh",
        "rm sticky",
        "+1% fresh",
        "+1% sticky"
    );
    for (count, members, sets) in [(1000, 3, 40), (10_000, 10, 10), (100_000, 100, 3)] {
        let mut figures: [Vec<usize>; 6] = Default::default();
        let (mut worst_max_load, mut capacity) = (0, 0);
        for set in 0..sets {
            let inputs = inputs(set, count);
            let before = run(&inputs, &collectors(members), None);
            // Add one collector.
            let added_fresh = run(&inputs, &collectors(members + 1), None);
            let added = run(&inputs, &collectors(members + 1), Some(&before));
            figures[0].push(added_fresh.moved_from(before.owners()));
            figures[1].push(added.moved_from(before.owners()));
            worst_max_load = worst_max_load.max(added.max_load());
            capacity = added.capacity();
            // Remove it again: inputs moved beyond the removed collector's own.
            for (index, from) in [(2, &added_fresh), (3, &added)] {
                let own = from.load(&format!("metricshard-collector-{members}"));
                let previous = (index == 3).then_some(from);
                let removed = run(&inputs, &collectors(members), previous);
                figures[index].push(removed.moved_from(from.owners()) - own);
            }
            // 1 % more inputs: existing inputs moved.
            let mut more = inputs.clone();
            more.extend((0..count / 100).map(|index| InputKey::new("new", &format!("input-{set}-{index}"))));
            figures[4].push(run(&more, &collectors(members), None).moved_from(before.owners()));
            figures[5].push(run(&more, &collectors(members), Some(&before)).moved_from(before.owners()));
        }
        let share = count as f64 / (members + 1) as f64;
        let [add_fresh, add_sticky, rm_fresh, rm_sticky, more_fresh, more_sticky] = &mut figures;
        println!(
            "{:>7} {:>8} {:>4} {:>5.0} | {:>11} {:>11} {:>9.0} {:>11} | {:>11} {:>11} | {:>11} {:>11}",
            count,
            format!("{members}->{}", members + 1),
            sets,
            share,
            spread(add_fresh),
            spread(add_sticky),
            1.1 * share,
            format!("{worst_max_load} / {capacity}"),
            spread(rm_fresh),
            spread(rm_sticky),
            spread(more_fresh),
            spread(more_sticky),
        );
    }
}

fn benches(criterion: &mut Criterion) {
    let inputs = inputs(0, 100_000);
    let hundred = collectors(100);
    let hundred_one = collectors(101);
    let steady = run(&inputs, &hundred, None);

    let mut group = criterion.benchmark_group("assign 100k inputs");
    // Tens of milliseconds per iteration: flat sampling keeps the run within the measurement time.
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    group.bench_function("fresh, 100 collectors", |bench| {
        bench.iter(|| run(black_box(&inputs), black_box(&hundred), None));
    });
    group.bench_function("sticky, unchanged (a reconcile), 100 collectors", |bench| {
        bench.iter(|| run(black_box(&inputs), black_box(&hundred), Some(&steady)));
    });
    group.bench_function("sticky, scale 100 -> 101 collectors", |bench| {
        bench.iter(|| run(black_box(&inputs), black_box(&hundred_one), Some(&steady)));
    });
    group.finish();
}

fn main() {
    print_figures();
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
