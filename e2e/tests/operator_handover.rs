//! Fenced handovers between live collectors (docs/cluster-mode.md), end to end: the chart's
//! operator and collectors (as stand-in processes with the chart's ServiceAccounts) and a
//! loopback scrape target. A fourth collector joins and leaves (SIGTERM) several times, each time
//! moving inputs between live collectors; intervals are short, so ticks do fall inside the
//! window in which the two collectors' watches disagree.
//!
//! Checked exactly, by tick identity rather than by timing: every sample carries its tick's
//! scheduled instant as timestamp, so over all the handovers every input's samples in the file
//! output must be one per tick — no timestamp twice (a duplicate), no step longer than one
//! interval (a gap). Also: no collector noticed a move after its fence, and an input that never
//! moved was never restarted.
//!
//! To see the test fail without the fence, run it with `METRICSHARD_HANDOVER_MARGIN_MS=0` (the
//! operator inherits it and writes no fences); docs/cluster-mode.md has such a run's figures.
//! `METRICSHARD_E2E_HANDOVER_CYCLES` changes the number of join/leave cycles (default 4).

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::api::{DynamicObject, PostParams};
use kube::{Api, ResourceExt as _};
use metricshard_e2e::release::{
    assigned_collector, file_output, metric_inputs, metric_outputs, prometheus_input, samples,
    wait_no_metric_inputs, wait_operator_leads,
};
use metricshard_e2e::{
    ChartPodProcess, ChartRelease, Outcome, ScrapeTarget, TestCluster, TestNamespace, wait_for,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
const INPUTS: usize = 40;
/// Every input's interval: short, so that many ticks fall near the moments of the moves.
const INTERVAL_MS: u64 = 500;
const INTERVAL_TEXT: &str = "500ms";

fn input_name(index: usize) -> String {
    format!("in-{index:02}")
}

/// Sample timestamps (tick instants, ms) per input name, from the file output.
fn tick_timestamps(file: &Path, namespace: &str) -> BTreeMap<String, Vec<u64>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut ticks: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let job = format!("job=\"{namespace}/");
    for line in text.lines() {
        if !line.starts_with("e2e_target_requests_total{") {
            continue;
        }
        let Some(start) = line.find(&job) else { continue };
        let rest = &line[start + job.len()..];
        let Some(end) = rest.find('"') else { continue };
        let mut fields = line.rsplit(' ');
        let Some(timestamp) = fields.next().and_then(|t| t.parse::<u64>().ok()) else { continue };
        // A stale marker (NaN) is no gather; none is expected, since the target's series never
        // disappears.
        if fields.next() == Some("NaN") {
            continue;
        }
        ticks.entry(rest[..end].to_owned()).or_default().push(timestamp);
    }
    for timestamps in ticks.values_mut() {
        timestamps.sort_unstable();
    }
    ticks
}

/// Duplicated ticks, missed ticks and the longest step between consecutive ticks of one input
/// whose ticks are `interval_ms` apart (no jitter), within `[from, to)` (ms).
fn tick_problems(timestamps: &[u64], interval_ms: u64, from: u64, to: u64) -> (usize, u64, u64) {
    let inside: Vec<u64> = timestamps.iter().copied().filter(|t| *t >= from && *t < to).collect();
    let (mut duplicates, mut missed, mut longest) = (0, 0, 0);
    for pair in inside.windows(2) {
        let step = pair[1] - pair[0];
        longest = longest.max(step);
        if step == 0 {
            duplicates += 1;
        } else if step > interval_ms + 1 {
            // Timestamps are whole milliseconds of exact tick instants: ±1 ms of rounding.
            missed += (step + interval_ms / 2) / interval_ms - 1;
        }
    }
    (duplicates, missed, longest)
}

/// The steps of `timestamps` inside `[from, to)` that are not one interval, as (before, after)
/// in RFC 3339 with milliseconds.
fn irregular_steps(timestamps: &[u64], interval_ms: u64, from: u64, to: u64) -> Vec<(String, String)> {
    let inside: Vec<u64> = timestamps.iter().copied().filter(|t| *t >= from && *t < to).collect();
    let text = |ms: u64| {
        k8s_openapi::jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap()).map(|t| format!("{t:.3}")).unwrap_or_default()
    };
    inside
        .windows(2)
        .filter(|pair| pair[1] - pair[0] == 0 || pair[1] - pair[0] > interval_ms + 1)
        .map(|pair| (text(pair[0]), text(pair[1])))
        .collect()
}

fn unix_millis(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Sum of a counter over the processes, filtered by labels.
async fn counter_sum(processes: &[&ChartPodProcess], name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for process in processes {
        let text = process.metrics().await.unwrap();
        sum += samples(&text, name)
            .iter()
            .filter(|(have, _)| labels.iter().all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, value)| value)
            .sum::<f64>();
    }
    sum
}

/// Waits until every input is labelled for one of `collectors`, runs there and nowhere else,
/// `joining` (if any) holds some, and no handover is in flight (the operator reports none
/// pending, no collector drains).
async fn wait_settled(
    what: &str,
    joining: Option<&str>,
    inputs: &Api<DynamicObject>,
    namespace: &str,
    operator: &ChartPodProcess,
    collectors: &BTreeMap<String, ChartPodProcess>,
) -> BTreeMap<String, String> {
    wait_for(what, TIMEOUT, || async {
        let mut problems = Vec::new();
        let labels: BTreeMap<String, String> = inputs
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter_map(|input| Some((input.name_any(), assigned_collector(input)?)))
            .collect();
        let mut running: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (pod, collector) in collectors {
            let text = collector.metrics().await?;
            for (series, _) in samples(&text, "metricshard_input_task_starts_total") {
                if let Some(name) = series.get("input").and_then(|i| i.strip_prefix(&format!("{namespace}/"))) {
                    running.entry(name.to_owned()).or_default().insert(pod.clone());
                }
            }
            let draining = samples(&text, "metricshard_handover_draining_inputs").first().map_or(0.0, |(_, v)| *v);
            if draining != 0.0 {
                problems.push(format!("{pod} drains {draining}"));
            }
        }
        for index in 0..INPUTS {
            let name = input_name(index);
            let on = running.get(&name).cloned().unwrap_or_default();
            match labels.get(&name) {
                Some(owner) if collectors.contains_key(owner) && on.len() == 1 && on.contains(owner) => {}
                owner => problems.push(format!("{name}: labelled {owner:?}, runs on {on:?}")),
            }
        }
        if let Some(joining) = joining
            && !labels.values().any(|owner| owner == joining)
        {
            problems.push(format!("nothing on {joining} yet"));
        }
        let pending = operator.sample("metricshard_operator_handovers_pending", &[]).await?;
        let deferred = operator.sample("metricshard_operator_moves_deferred", &[]).await?;
        if pending != Some(0.0) || deferred != Some(0.0) {
            problems.push(format!("operator: {pending:?} handovers pending, {deferred:?} moves deferred"));
        }
        anyhow::Ok(if problems.is_empty() { Outcome::Ready(labels) } else { Outcome::NotYet(problems.join("; ")) })
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_moved_between_live_collectors_are_gathered_once_per_tick() {
    let test_started = Instant::now();
    let cycles: usize = std::env::var("METRICSHARD_E2E_HANDOVER_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(4);
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let release =
        ChartRelease::install(cluster, &admin, "handover", &["collector.replicas=4", "operator.replicas=1"]).await.unwrap();
    // The operator assigns every MetricInput of the cluster: wait until earlier tests'
    // are gone (after the install, which puts the CRDs in place).
    wait_no_metric_inputs(&admin, TIMEOUT).await.unwrap();
    let team = TestNamespace::new(&admin, "handover-team").await.unwrap();
    let target = ScrapeTarget::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let samples_file = work.path().join("samples.prom");
    metric_outputs(&admin, team.name())
        .create(&PostParams::default(), &file_output("file", &samples_file).unwrap())
        .await
        .unwrap();

    let operator_pod = release.operator_pods(1).await.unwrap().remove(0);
    let operator = ChartPodProcess::start(cluster, &admin, &operator_pod).await.unwrap();
    let mut collectors = BTreeMap::new();
    for ordinal in 0..3 {
        let process = ChartPodProcess::start(cluster, &admin, &release.collector_pod(ordinal).await.unwrap()).await.unwrap();
        collectors.insert(process.pod_name().to_owned(), process);
    }
    wait_operator_leads(&operator, 3, TIMEOUT).await.unwrap();
    let inputs = metric_inputs(&admin, team.name());
    for index in 0..INPUTS {
        let name = input_name(index);
        let input = prometheus_input(&name, target.address(), &format!("/metrics/{name}"), INTERVAL_TEXT, json!([{ "name": "file" }]))
            .unwrap();
        inputs.create(&PostParams::default(), &input).await.unwrap();
    }
    let initial = wait_settled("40 inputs placed on 3 collectors", None, &inputs, team.name(), &operator, &collectors).await;

    let window_from = unix_millis(SystemTime::now());
    let fourth_pod = release.collector_pod(3).await.unwrap();
    let mut moved_inputs = BTreeSet::new();
    let mut handovers = 0;
    let mut departed_logs = Vec::new();
    let mut departed_late = 0.0;
    for cycle in 1..=cycles {
        let before = wait_settled(&format!("cycle {cycle}: settled on 3"), None, &inputs, team.name(), &operator, &collectors).await;
        let fourth = ChartPodProcess::start(cluster, &admin, &fourth_pod).await.unwrap();
        let fourth_name = fourth.pod_name().to_owned();
        collectors.insert(fourth_name.clone(), fourth);
        let joined = wait_settled(&format!("cycle {cycle}: rebalanced onto 4"), Some(&fourth_name), &inputs, team.name(), &operator, &collectors).await;
        let on_fourth: Vec<&String> = joined.iter().filter(|(_, owner)| **owner == fourth_name).map(|(name, _)| name).collect();
        assert!(!on_fourth.is_empty(), "cycle {cycle}: the fourth collector got no inputs");
        let leaving = collectors.remove(&fourth_name).unwrap();
        // Moves onto the fourth collector that it noticed after their fence (counted by it).
        departed_late += counter_sum(&[&leaving], "metricshard_handovers_total", &[("outcome", "late")]).await;
        let left_at = Instant::now();
        let (status, log) = tokio::task::spawn_blocking(move || {
            let status = leaving.terminate(Duration::from_secs(30));
            (status, leaving.log_tail(200))
        })
        .await
        .unwrap();
        let status = status.unwrap();
        assert!(status.success(), "cycle {cycle}: the leaving collector exited with {status}\n{log}");
        // Kept for the report below: a leaving collector is gone before any failure dump.
        departed_logs.push((cycle, log));
        let after = wait_settled(&format!("cycle {cycle}: handed back to 3"), None, &inputs, team.name(), &operator, &collectors).await;
        let moves = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.iter().filter(|(name, owner)| b.get(*name) != Some(*owner)).map(|(name, _)| name.clone()).collect::<Vec<_>>()
        };
        let (up, down) = (moves(&before, &joined), moves(&joined, &after));
        eprintln!(
            "cycle {cycle}: {} inputs moved to the fourth collector, {} moved back when it left (its exit took {:.1?})",
            up.len(),
            down.len(),
            left_at.elapsed()
        );
        handovers += up.len() + down.len();
        moved_inputs.extend(up);
        moved_inputs.extend(down);
    }
    let window_to = unix_millis(SystemTime::now());
    // Every collector flushes its batches within 100 ms; wait until each input has a sample
    // past the window so the window is complete in the file.
    wait_for("samples of every input past the window in the file", TIMEOUT, || async {
        let ticks = tick_timestamps(&samples_file, team.name());
        let waiting: Vec<String> = (0..INPUTS)
            .map(input_name)
            .filter(|name| ticks.get(name).and_then(|t| t.last()).is_none_or(|last| *last < window_to))
            .collect();
        Outcome::ready_if(waiting.is_empty(), waiting)
    })
    .await
    .unwrap();

    let ticks = tick_timestamps(&samples_file, team.name());
    let (mut duplicates, mut missed, mut longest, mut gathered) = (0, 0, 0, 0);
    let mut offenders = Vec::new();
    for index in 0..INPUTS {
        let name = input_name(index);
        let timestamps = &ticks[&name];
        gathered += timestamps.iter().filter(|t| **t >= window_from && **t < window_to).count();
        let (d, m, l) = tick_problems(timestamps, INTERVAL_MS, window_from, window_to);
        if d + usize::try_from(m).unwrap() > 0 {
            // The instants around each gap or repeat, to set against the handovers' fences in the
            // Events and collector logs dumped below.
            let around = irregular_steps(timestamps, INTERVAL_MS, window_from, window_to);
            offenders.push(format!("{name}: {d} duplicate(s), {m} missed, longest step {l} ms, at {around:?}"));
        }
        duplicates += d;
        missed += m;
        longest = longest.max(l);
    }
    let remaining: Vec<&ChartPodProcess> = collectors.values().collect();
    let out_fenced = counter_sum(&remaining, "metricshard_handovers_total", &[("direction", "out"), ("outcome", "fenced")]).await;
    let late = counter_sum(&remaining, "metricshard_handovers_total", &[("outcome", "late")]).await + departed_late;
    let fenced = counter_sum(&[&operator], "metricshard_operator_handovers_total", &[("kind", "fenced")]).await;
    let unfenced = counter_sum(&[&operator], "metricshard_operator_handovers_total", &[("kind", "unfenced")]).await;
    eprintln!(
        "{cycles} cycles, {handovers} handovers ({} distinct inputs), {:.1} s window: {gathered} ticks gathered, \
         {duplicates} duplicate(s), {missed} missed, longest step {longest} ms (interval {INTERVAL_MS} ms); \
         operator: {fenced} fenced / {unfenced} unfenced moves; the 3 remaining collectors handed {out_fenced} \
         inputs out fenced; {late} moves noticed late (the fourth collector's counted before each exit)",
        moved_inputs.len(),
        (window_to - window_from) as f64 / 1000.0,
    );
    if duplicates + usize::try_from(missed).unwrap() > 0 {
        for (cycle, log) in &departed_logs {
            eprintln!("----- the fourth collector of cycle {cycle}, last 200 lines -----\n{log}");
        }
    }
    assert!(handovers >= 2 * cycles, "too few handovers to say anything: {handovers}");
    assert_eq!(duplicates, 0, "ticks gathered twice: {offenders:?}");
    assert_eq!(missed, 0, "ticks missed: {offenders:?}");
    assert_eq!(late, 0.0, "a collector noticed a move after its fence");
    assert!(fenced >= handovers as f64, "the operator fenced {fenced} of {handovers} moves");

    // Keys, not restarts: an input that never moved was started exactly once, where it started.
    for index in 0..INPUTS {
        let name = input_name(index);
        if moved_inputs.contains(&name) {
            continue;
        }
        let owner = &initial[&name];
        let starts = collectors[owner]
            .sample("metricshard_input_task_starts_total", &[("input", &format!("{}/{name}", team.name()))])
            .await
            .unwrap();
        assert_eq!(starts, Some(1.0), "{name} never moved but its task started {starts:?} times on {owner}");
    }
    eprintln!("handover test passed in {:.1?} (install included)", test_started.elapsed());
    drop(collectors);
    drop(operator);
    release.uninstall().await.unwrap();
}

#[test]
fn tick_problems_count_duplicates_and_missed_ticks() {
    assert_eq!(tick_problems(&[0, 500, 1000, 1500], 500, 0, 2000), (0, 0, 500));
    assert_eq!(tick_problems(&[0, 500, 500, 1000], 500, 0, 2000), (1, 0, 500));
    assert_eq!(tick_problems(&[0, 500, 1501, 2000], 500, 0, 3000), (0, 1, 1001));
    // Outside the window nothing counts.
    assert_eq!(tick_problems(&[0, 0, 500, 1000], 500, 100, 2000), (0, 0, 500));
}
