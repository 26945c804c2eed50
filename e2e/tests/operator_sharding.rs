//! The operator and the collectors together, installed by the chart and running as stand-ins
//! for the chart's pods with their ServiceAccount tokens (so the chart's RBAC applies):
//!
//! 1. 30 inputs over 3 collectors: each is labelled for one live collector with `Assigned=True`,
//!    runs on exactly that collector and nowhere else, no collector holds more than ⌈1.1·mean⌉,
//!    and the target sees each input's path about once per interval.
//! 2. A fourth collector moves at most ⌊1.1·30/4⌋ inputs, some of them to it, and still no input
//!    runs twice; the moved inputs are scraped without a duplicate or a missed tick around the
//!    fenced handover (request times at the target; `operator_handover.rs` checks the same by
//!    tick identity over many handovers).
//! 3. A SIGKILLed collector's inputs move to the others and are scraped again within lease
//!    duration + renew period + one interval (+ slack); the other inputs stay where they are.
//! 4. Editing one input restarts only its task; deleting it stops its scrapes within a second.
//! 5. Killing the leading operator hands leadership to the standby, which moves nothing.
//!
//! The operator assigns every MetricInput of the cluster (docs/helm.md: one installation per
//! cluster), so the tests of this binary take turns. Needs `target/debug/metricshard-operator`
//! and `metricshard-collector` (`cargo build -p metricshard-operator -p metricshard-collector`).
//! Runs against the local control plane, or against `$KUBECONFIG`'s cluster when set (then no
//! other operator may run there meanwhile).

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use metricshard_e2e::release::{
    assigned_collector, condition_status, file_output, metric_inputs, metric_outputs,
    prometheus_input, samples, wait_operator_leads,
};
use metricshard_e2e::{
    ChartPodProcess, ChartRelease, Outcome, ScrapeCadence, ScrapeTarget, TestCluster,
    TestNamespace, wait_for,
};
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

const TIMEOUT: Duration = Duration::from_secs(60);
/// Every input's interval.
const INTERVAL: Duration = Duration::from_secs(1);
const INTERVAL_TEXT: &str = "1s";
/// The operator's default ε of bounded-load hashing.
const EPSILON: f64 = 0.1;
/// What the documented bound for a dead collector's inputs adds up to: Lease duration (15 s) +
/// renew period (5 s) + one interval (1 s), plus slack for a loaded test machine.
const DEAD_COLLECTOR_BOUND: Duration = Duration::from_secs(30);
/// Leader Lease duration (15 s) + one retry period of each side (2 s + 2 s), plus slack.
const FAILOVER_BOUND: Duration = Duration::from_secs(25);

/// The operator of every release assigns every input of the cluster, so the tests take turns.
/// The guarded list holds the namespaces where the tests created inputs.
static TURNS: Mutex<Vec<String>> = Mutex::const_new(Vec::new());

/// Waits for this test's turn and for the inputs of earlier tests to be gone (their namespaces
/// are deleted when a test ends, however it ends): this test's operator would take them on.
/// With `METRICSHARD_E2E_KEEP_NAMESPACES` a failed test keeps its inputs, and the next test
/// fails here saying so.
async fn take_turn(admin: &Client) -> MutexGuard<'static, Vec<String>> {
    let mut turn = TURNS.lock().await;
    for namespace in turn.drain(..) {
        let leftovers = metric_inputs(admin, &namespace);
        wait_for(
            &format!("the inputs of an earlier test in {namespace} to be deleted"),
            TIMEOUT,
            || async {
                let names: Vec<String> = leftovers
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .map(|input| input.name_any())
                    .collect();
                anyhow::Ok(Outcome::ready_if(names.is_empty(), names))
            },
        )
        .await
        .unwrap();
    }
    turn
}

fn input_name(index: usize) -> String {
    format!("in-{index:02}")
}

fn path_of(input: &str) -> String {
    format!("/metrics/{input}")
}

/// ⌈(1+ε)·inputs/collectors⌉: the most inputs one collector may hold.
fn capacity(inputs: usize, collectors: usize) -> usize {
    ((1.0 + EPSILON) * inputs as f64 / collectors as f64).ceil() as usize
}

// ----- what the API says ---------------------------------------------------------------------

/// An input as the API shows it: the collector it is labelled for, the one its status names
/// (what `kubectl get mi` shows), its `Assigned` status.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InputState {
    collector: Option<String>,
    status_collector: Option<String>,
    assigned: Option<String>,
}

async fn input_states(api: &Api<DynamicObject>) -> anyhow::Result<BTreeMap<String, InputState>> {
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|input| {
            let state = InputState {
                collector: assigned_collector(input),
                status_collector: input.data["status"]["collector"]
                    .as_str()
                    .map(str::to_owned),
                assigned: condition_status(input, "Assigned"),
            };
            (input.name_any(), state)
        })
        .collect())
}

fn labels_of(states: &BTreeMap<String, InputState>) -> BTreeMap<String, Option<String>> {
    states
        .iter()
        .map(|(name, state)| (name.clone(), state.collector.clone()))
        .collect()
}

/// Inputs per collector, by label.
fn loads(states: &BTreeMap<String, InputState>) -> BTreeMap<String, usize> {
    let mut loads = BTreeMap::new();
    for collector in states.values().filter_map(|state| state.collector.clone()) {
        *loads.entry(collector).or_default() += 1;
    }
    loads
}

// ----- what the collectors run ---------------------------------------------------------------

/// The live collectors, by pod name.
type Collectors = BTreeMap<String, ChartPodProcess>;

/// What the collectors run, read off their /metrics.
#[derive(Debug, Default)]
struct Running {
    /// `metricshard_tasks` of each collector.
    tasks: BTreeMap<String, f64>,
    /// `metricshard_input_task_starts_total` per input key, per collector that has the series.
    starts: BTreeMap<String, BTreeMap<String, f64>>,
}

impl Running {
    async fn read(collectors: &Collectors) -> anyhow::Result<Self> {
        let mut running = Self::default();
        for (pod, collector) in collectors {
            let text = collector.metrics().await?;
            let tasks = samples(&text, "metricshard_tasks")
                .first()
                .map_or(0.0, |(_, value)| *value);
            running.tasks.insert(pod.clone(), tasks);
            for (labels, value) in samples(&text, "metricshard_input_task_starts_total") {
                if let Some(input) = labels.get("input") {
                    running
                        .starts
                        .entry(input.clone())
                        .or_default()
                        .insert(pod.clone(), value);
                }
            }
        }
        Ok(running)
    }

    fn total_tasks(&self) -> f64 {
        self.tasks.values().sum()
    }

    /// The task starts of `input` on `collector`.
    fn starts_on(&self, input: &str, collector: &str) -> Option<f64> {
        self.starts.get(input)?.get(collector).copied()
    }
}

/// Everything that contradicts "each input is labelled for one live collector, which its
/// `status.collector` names too, with `Assigned=True`, and runs on exactly that collector; the
/// collectors run `states.len()` tasks in all".
fn placement_problems(
    namespace: &str,
    states: &BTreeMap<String, InputState>,
    running: &Running,
    live: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, state) in states {
        let key = format!("{namespace}/{name}");
        let runs_on: BTreeSet<&String> = running
            .starts
            .get(&key)
            .map(|on| on.keys().collect())
            .unwrap_or_default();
        match &state.collector {
            None => problems.push(format!("{name}: no collector label")),
            Some(collector) if !live.contains(collector) => {
                problems.push(format!(
                    "{name}: labelled for {collector}, not a live collector"
                ));
            }
            Some(collector) if runs_on.len() != 1 || !runs_on.contains(collector) => {
                problems.push(format!(
                    "{name}: labelled for {collector}, runs on {runs_on:?}"
                ));
            }
            Some(_) => {}
        }
        if state.status_collector != state.collector {
            problems.push(format!(
                "{name}: status.collector {:?}, label {:?}",
                state.status_collector, state.collector
            ));
        }
        if state.assigned.as_deref() != Some("True") {
            problems.push(format!("{name}: Assigned={:?}", state.assigned));
        }
    }
    // Anything running that is not an input of the test (there is nothing else to run).
    for (key, on) in &running.starts {
        let known = key
            .strip_prefix(&format!("{namespace}/"))
            .is_some_and(|name| states.contains_key(name));
        if !known {
            problems.push(format!("{key} runs on {:?} but is no input", on.keys()));
        }
    }
    if running.total_tasks() != states.len() as f64 {
        problems.push(format!(
            "{} tasks in all for {} inputs: {:?}",
            running.total_tasks(),
            states.len(),
            running.tasks
        ));
    }
    problems
}

/// Waits until the placement has no problems (see [`placement_problems`]); `what` names the
/// check in the timeout message.
async fn wait_placed(
    what: &str,
    inputs: &Api<DynamicObject>,
    namespace: &str,
    collectors: &Collectors,
) -> (BTreeMap<String, InputState>, Running) {
    let live: BTreeSet<String> = collectors.keys().cloned().collect();
    wait_for(what, TIMEOUT, || async {
        let states = input_states(inputs).await?;
        let running = Running::read(collectors).await?;
        let problems = placement_problems(namespace, &states, &running, &live);
        anyhow::Ok(if problems.is_empty() {
            Outcome::Ready((states, running))
        } else {
            Outcome::NotYet(problems.join("; "))
        })
    })
    .await
    .unwrap()
}

async fn operator_sample(operator: &ChartPodProcess, name: &str) -> f64 {
    operator
        .sample(&format!("metricshard_operator_{name}"), &[])
        .await
        .unwrap()
        .unwrap_or(0.0)
}

/// Starts one stand-in per pod, concurrently (each waits until its process is ready).
async fn start_all(
    cluster: &'static TestCluster,
    admin: &Client,
    pods: &[Pod],
) -> Vec<ChartPodProcess> {
    let mut starting = tokio::task::JoinSet::new();
    for (index, pod) in pods.iter().cloned().enumerate() {
        let admin = admin.clone();
        starting.spawn(async move {
            anyhow::Ok((index, ChartPodProcess::start(cluster, &admin, &pod).await?))
        });
    }
    let mut started: Vec<(usize, ChartPodProcess)> = starting
        .join_all()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    started.sort_by_key(|(index, _)| *index);
    started.into_iter().map(|(_, process)| process).collect()
}

async fn create_inputs(
    admin: &Client,
    namespace: &str,
    target: &ScrapeTarget,
    count: usize,
) -> Api<DynamicObject> {
    let inputs = metric_inputs(admin, namespace);
    for index in 0..count {
        let name = input_name(index);
        let input = prometheus_input(
            &name,
            target.address(),
            &path_of(&name),
            INTERVAL_TEXT,
            json!([{ "name": "file" }]),
        )
        .unwrap();
        inputs.create(&PostParams::default(), &input).await.unwrap();
    }
    inputs
}

// ----- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_are_sharded_rebalanced_and_reassigned_across_collectors() {
    let test_started = Instant::now();
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let mut turn = take_turn(&admin).await;
    let mut release = ChartRelease::install(
        cluster,
        &admin,
        "sharding",
        &["collector.replicas=3", "operator.replicas=1"],
    )
    .await
    .unwrap();
    let team = TestNamespace::new(&admin, "sharding-team").await.unwrap();
    turn.push(team.name().to_owned());
    let target = ScrapeTarget::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let samples_file = work.path().join("samples.prom");
    metric_outputs(&admin, team.name())
        .create(
            &PostParams::default(),
            &file_output("file", &samples_file).unwrap(),
        )
        .await
        .unwrap();

    // The chart's pods, played by processes with the chart's ServiceAccounts.
    let mut pods = Vec::new();
    for ordinal in 0..3 {
        pods.push(release.collector_pod(ordinal).await.unwrap());
    }
    pods.push(release.operator_pods(1).await.unwrap().remove(0));
    let mut started = start_all(cluster, &admin, &pods).await;
    let operator = started.pop().unwrap();
    let mut collectors: Collectors = started
        .into_iter()
        .map(|collector| (collector.pod_name().to_owned(), collector))
        .collect();
    wait_operator_leads(&operator, 3, TIMEOUT).await.unwrap();
    eprintln!(
        "release installed, 3 collectors and the operator running after {:.1?}",
        test_started.elapsed()
    );

    // ----- 1. 30 inputs over 3 collectors, each run exactly once ------------------------------
    const INPUTS: usize = 30;
    let created = Instant::now();
    let inputs = create_inputs(&admin, team.name(), &target, INPUTS).await;
    let (states, _) = wait_placed(
        "check 1 (30 inputs over 3 collectors): every input labelled for one live collector, \
         Assigned=True, running on exactly that collector, 30 tasks in all",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;
    eprintln!(
        "check 1: all 30 inputs placed and running {:.1?} after creation; load {:?}",
        created.elapsed(),
        loads(&states)
    );
    let max_load = loads(&states).into_values().max().unwrap();
    assert!(
        max_load <= capacity(INPUTS, 3),
        "check 1: a collector holds {max_load} inputs, more than ⌈1.1·30/3⌉ = {}: {:?}",
        capacity(INPUTS, 3),
        loads(&states)
    );
    assert_eq!(
        loads(&states).len(),
        3,
        "check 1: not every collector got inputs: {:?}",
        loads(&states)
    );
    // Each path scraped about once per second, by one collector: over 5 s, 4 to 6 requests.
    let window_start = Instant::now();
    let window_end = window_start + Duration::from_secs(5);
    wait_for(
        "check 1: every input scraped after a 5 s window",
        TIMEOUT,
        || async {
            let waiting: Vec<String> = states
                .keys()
                .filter(|name| {
                    target
                        .first_at_or_after(&path_of(name), window_end)
                        .is_none()
                })
                .cloned()
                .collect();
            Outcome::ready_if(waiting.is_empty(), waiting)
        },
    )
    .await
    .unwrap();
    let per_path: BTreeMap<&String, usize> = states
        .keys()
        .map(|name| {
            let count = target.count_between(&path_of(name), window_start, window_end);
            (name, count)
        })
        .collect();
    eprintln!(
        "check 1: scrapes per path in 5 s: min {}, max {}",
        per_path.values().min().unwrap(),
        per_path.values().max().unwrap()
    );
    for (name, count) in &per_path {
        assert!(
            (4..=6).contains(count),
            "check 1: {name} was scraped {count} times in 5 s (expected 5, one collector at 1s)"
        );
    }
    // The samples reach the output, labelled with the input that gathered them.
    wait_for(
        "check 1: samples of every input in the file output",
        TIMEOUT,
        || async {
            let text = std::fs::read_to_string(&samples_file).unwrap_or_default();
            let missing: Vec<&String> = states
                .keys()
                .filter(|name| !text.contains(&format!("job=\"{}/{name}\"", team.name())))
                .collect();
            Outcome::ready_if(missing.is_empty(), missing)
        },
    )
    .await
    .unwrap();

    // ----- 2. a fourth collector moves at most ⌊1.1·30/4⌋ inputs -------------------------------
    let before = labels_of(&states);
    let moved_before = operator_sample(&operator, "inputs_moved_total").await;
    release.upgrade(&["collector.replicas=4"]).await.unwrap();
    let pod3 = release.collector_pod(3).await.unwrap();
    let handover_start = Instant::now();
    let fourth = ChartPodProcess::start(cluster, &admin, &pod3)
        .await
        .unwrap();
    let new_collector = fourth.pod_name().to_owned();
    collectors.insert(new_collector.clone(), fourth);
    let live: BTreeSet<String> = collectors.keys().cloned().collect();
    let (states, moved, counted) = wait_for(
        "check 2 (scale to 4): the operator's rebalance written and every input running on \
         exactly its labelled collector, some on the new one",
        TIMEOUT,
        || async {
            let states = input_states(&inputs).await?;
            let running = Running::read(&collectors).await?;
            let problems = placement_problems(team.name(), &states, &running, &live);
            let moved = labels_of(&states)
                .iter()
                .filter(|(name, label)| before.get(*name) != Some(*label))
                .count();
            let counted = operator_sample(&operator, "inputs_moved_total").await - moved_before;
            let on_new = loads(&states).get(&new_collector).copied().unwrap_or(0);
            // The operator counts moves after writing a whole plan: a count that covers the
            // label changes means the rebalance is complete, not half written.
            anyhow::Ok(
                if problems.is_empty() && on_new > 0 && counted >= moved as f64 {
                    Outcome::Ready((states, moved, counted))
                } else {
                    Outcome::NotYet(format!(
                        "moved {moved}, operator counted {counted}, {on_new} on the new \
                         collector; {}",
                        problems.join("; ")
                    ))
                },
            )
        },
    )
    .await
    .unwrap();
    let settled = Instant::now();
    eprintln!(
        "check 2: {moved} of 30 inputs moved (operator counted {counted}), settled {:.1?} after \
         the 4th collector started; load {:?}",
        settled - handover_start,
        loads(&states)
    );
    let movable = ((1.0 + EPSILON) * INPUTS as f64 / 4.0).floor() as usize;
    assert!(
        moved <= movable,
        "check 2: scaling 3 → 4 moved {moved} inputs, more than ⌊1.1·30/4⌋ = {movable}"
    );
    assert_eq!(
        counted, moved as f64,
        "check 2: metricshard_operator_inputs_moved_total grew by {counted} for {moved} moved \
         inputs (an input moved more than once?)"
    );
    let max_load = loads(&states).into_values().max().unwrap();
    assert!(
        max_load <= capacity(INPUTS, 4),
        "check 2: a collector holds {max_load} inputs, more than ⌈1.1·30/4⌉ = {}",
        capacity(INPUTS, 4)
    );
    let moved_inputs: Vec<(String, String, String)> = labels_of(&states)
        .into_iter()
        .filter_map(|(name, label)| {
            let old = before.get(&name).cloned().flatten()?;
            let new = label?;
            (old != new).then_some((name, old, new))
        })
        .collect();
    // Duplicates and gaps around the handover, from 2 s before the new collector started to
    // 3 s after the rebalance settled (past the 2 s fence).
    let window_from = handover_start - Duration::from_secs(2);
    let window_to = settled + Duration::from_secs(3);
    wait_for(
        "check 2: every input scraped after the handover window",
        TIMEOUT,
        || async {
            let waiting: Vec<&String> = states
                .keys()
                .filter(|name| {
                    target
                        .first_at_or_after(&path_of(name), window_to)
                        .is_none()
                })
                .collect();
            Outcome::ready_if(waiting.is_empty(), waiting)
        },
    )
    .await
    .unwrap();
    let expected = ((window_to - window_from).as_secs_f64() / INTERVAL.as_secs_f64()).round();
    let mut moved_total = ScrapeCadence::default();
    for (name, old, new) in &moved_inputs {
        let cadence = target.cadence(&path_of(name), INTERVAL, window_from, window_to);
        eprintln!(
            "check 2: handover {name} {old} → {new}: {} scrapes in {:.1?} (≈{expected} ticks), \
             {} duplicate(s), {} missed tick(s), longest spacing {:.2?}",
            cadence.scrapes,
            window_to - window_from,
            cadence.duplicates,
            cadence.missed,
            cadence.longest_spacing
        );
        moved_total.add(&cadence);
    }
    let mut unmoved_total = ScrapeCadence::default();
    for name in states.keys() {
        if !moved_inputs.iter().any(|(moved, _, _)| moved == name) {
            unmoved_total.add(&target.cadence(&path_of(name), INTERVAL, window_from, window_to));
        }
    }
    eprintln!(
        "check 2: handover totals: moved inputs {moved_total:?}; unmoved inputs {unmoved_total:?}"
    );
    // Fenced handovers: the old owner gathers every tick before the fence, the new one every
    // tick from it on (docs/cluster-mode.md).
    assert_eq!(
        (moved_total.duplicates, moved_total.missed),
        (0, 0),
        "check 2: duplicate or missed ticks across the handover: {moved_total:?}"
    );
    // Still exactly one task per input, and the rebalance was the last word.
    let (after, _) = wait_placed(
        "check 2: every input on exactly its labelled collector after the handover window",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;
    assert_eq!(
        labels_of(&after),
        labels_of(&states),
        "check 2: labels changed after the rebalance had settled"
    );

    // ----- 3. a SIGKILLed collector's inputs resume elsewhere within the bound -----------------
    let (victim, _) = loads(&after)
        .into_iter()
        .max_by_key(|(pod, load)| (*load, pod.clone()))
        .unwrap();
    let orphans: Vec<String> = after
        .iter()
        .filter(|(_, state)| state.collector.as_deref() == Some(victim.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    let survivors_before: BTreeMap<String, Option<String>> = labels_of(&after)
        .into_iter()
        .filter(|(name, _)| !orphans.contains(name))
        .collect();
    let dead = collectors.remove(&victim).unwrap();
    let killed_at = Instant::now();
    dead.kill().unwrap();
    let live: BTreeSet<String> = collectors.keys().cloned().collect();
    wait_for(
        "check 3 (SIGKILL): the dead collector's inputs labelled for live collectors",
        TIMEOUT,
        || async {
            let states = input_states(&inputs).await?;
            let stranded: Vec<&String> = orphans
                .iter()
                .filter(|name| {
                    states[*name]
                        .collector
                        .as_ref()
                        .is_none_or(|collector| !live.contains(collector))
                })
                .collect();
            anyhow::Ok(Outcome::ready_if(stranded.is_empty(), stranded))
        },
    )
    .await
    .unwrap();
    let relabelled = killed_at.elapsed();
    // A request after the kill comes from another collector: the dead one is reaped.
    let resumed_at = wait_for(
        "check 3: the dead collector's inputs scraped again",
        TIMEOUT,
        || async {
            let firsts: Vec<Option<Instant>> = orphans
                .iter()
                .map(|name| target.first_at_or_after(&path_of(name), killed_at))
                .collect();
            firsts
                .iter()
                .all(Option::is_some)
                .then(|| firsts.into_iter().flatten().max())
                .flatten()
        },
    )
    .await
    .unwrap();
    let recovered = resumed_at - killed_at;
    let longest_silence = orphans
        .iter()
        .filter_map(|name| {
            let path = path_of(name);
            let last = target.last_before(&path, killed_at)?;
            Some(target.first_at_or_after(&path, killed_at)? - last)
        })
        .max()
        .unwrap();
    eprintln!(
        "check 3: killed {victim} with {} inputs: relabelled within {relabelled:.1?}, all \
         scraped again {recovered:.2?} after the kill (longest silence of an input \
         {longest_silence:.2?}; bound {DEAD_COLLECTOR_BOUND:?})",
        orphans.len()
    );
    assert!(
        recovered <= DEAD_COLLECTOR_BOUND,
        "check 3: the dead collector's inputs were scraped again only {recovered:.1?} after \
         SIGKILL (bound: lease 15 s + renew 5 s + interval 1 s + slack = \
         {DEAD_COLLECTOR_BOUND:?})"
    );
    let (after_kill, _) = wait_placed(
        "check 3: every input on exactly its labelled live collector after the kill",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;
    let survivors_after: BTreeMap<String, Option<String>> = labels_of(&after_kill)
        .into_iter()
        .filter(|(name, _)| !orphans.contains(name))
        .collect();
    // After the dead collector's inputs are placed (each on the first survivor below capacity),
    // a survivor left below the share ⌊0.9·m/n⌋ pulls the inputs that prefer it. That balance
    // correction fills at most the deficit below ⌊m/n⌋, which is at most the excess above it:
    // (n − 1) · (capacity − ⌊m/n⌋) inputs.
    let survivors = collectors.len();
    let pull_bound = (survivors - 1) * (capacity(INPUTS, survivors) - INPUTS / survivors);
    let survivors_moved: Vec<&String> = survivors_after
        .iter()
        .filter(|(name, owner)| survivors_before.get(*name) != Some(*owner))
        .map(|(name, _)| name)
        .collect();
    eprintln!(
        "check 3: {} survivor input(s) rebalanced after {victim} died: {survivors_moved:?}",
        survivors_moved.len()
    );
    assert!(
        survivors_moved.len() <= pull_bound,
        "check 3: {} inputs of live collectors moved when {victim} died (bound {pull_bound}): {survivors_moved:?}",
        survivors_moved.len()
    );
    let max_load = loads(&after_kill).into_values().max().unwrap();
    assert!(
        max_load <= capacity(INPUTS, 3),
        "check 3: a collector holds {max_load} inputs, more than ⌈1.1·30/3⌉ after the kill: {:?}",
        loads(&after_kill)
    );
    drop(dead);

    // ----- 4. an edit restarts one task; a delete stops it within a second ---------------------
    let running = Running::read(&collectors).await.unwrap();
    let key = |name: &str| format!("{}/{name}", team.name());
    for (name, state) in &after_kill {
        let owner = state.collector.as_deref().unwrap();
        assert_eq!(
            running.starts_on(&key(name), owner),
            Some(1.0),
            "check 4: before any edit, {name}'s task started more than once on {owner}"
        );
    }
    let (edited, edited_state) = after_kill.iter().next().unwrap();
    let owner = edited_state.collector.clone().unwrap();
    let owner_process = &collectors[&owner];
    let edited_key = key(edited);
    inputs
        .patch(
            edited,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "interval": "2s" } })),
        )
        .await
        .unwrap();
    wait_for(
        "check 4 (edit): the edited input's task restarted on its collector",
        TIMEOUT,
        || async {
            let starts = owner_process
                .sample(
                    "metricshard_input_task_starts_total",
                    &[("input", &edited_key)],
                )
                .await?;
            anyhow::Ok(Outcome::ready_if(starts == Some(2.0), starts))
        },
    )
    .await
    .unwrap();
    let running = Running::read(&collectors).await.unwrap();
    for (name, state) in after_kill.iter().filter(|(name, _)| *name != edited) {
        let collector = state.collector.as_deref().unwrap();
        assert_eq!(
            running.starts_on(&key(name), collector),
            Some(1.0),
            "check 4: editing {edited} restarted {name} (on {collector})"
        );
    }
    assert_eq!(
        running.starts.get(&edited_key).map(BTreeMap::len),
        Some(1),
        "check 4: the edited input has task series on several collectors: {:?}",
        running.starts.get(&edited_key)
    );

    let deleted_at = Instant::now();
    inputs
        .delete(edited, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "check 4 (delete): the deleted input's task gone from its collector",
        TIMEOUT,
        || async {
            let starts = owner_process
                .sample(
                    "metricshard_input_task_starts_total",
                    &[("input", &edited_key)],
                )
                .await?;
            anyhow::Ok(Outcome::ready_if(starts.is_none(), starts))
        },
    )
    .await
    .unwrap();
    let task_gone = deleted_at.elapsed();
    // Two more scrapes of every other input prove that time passed without this one.
    let others: Vec<(String, usize)> = after_kill
        .keys()
        .filter(|name| *name != edited)
        .map(|name| (name.clone(), target.count(&path_of(name))))
        .collect();
    wait_for(
        "check 4: two more scrapes of every other input",
        TIMEOUT,
        || async {
            others
                .iter()
                .all(|(name, seen)| target.count(&path_of(name)) >= seen + 2)
        },
    )
    .await
    .unwrap();
    let last = target.last(&path_of(edited)).unwrap();
    let last_relative = if last >= deleted_at {
        format!("{:.0?} after", last - deleted_at)
    } else {
        format!("{:.0?} before", deleted_at - last)
    };
    eprintln!(
        "check 4: deleted {edited}: task gone {task_gone:.0?} after the delete, last scrape \
         {last_relative} it"
    );
    assert!(
        last < deleted_at + Duration::from_secs(1),
        "check 4: {edited} was scraped {:.1?} after it was deleted",
        last - deleted_at
    );
    wait_placed(
        "check 4: 29 inputs, each on exactly its labelled collector, after the delete",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;

    eprintln!(
        "checks 1-4 passed in {:.1?} (install included)",
        test_started.elapsed()
    );
    drop(collectors);
    drop(operator);
    release.uninstall().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_moves_no_input() {
    let test_started = Instant::now();
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let mut turn = take_turn(&admin).await;
    let release = ChartRelease::install(
        cluster,
        &admin,
        "failover",
        &["collector.replicas=2", "operator.replicas=2"],
    )
    .await
    .unwrap();
    let team = TestNamespace::new(&admin, "failover-team").await.unwrap();
    turn.push(team.name().to_owned());
    let target = ScrapeTarget::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    metric_outputs(&admin, team.name())
        .create(
            &PostParams::default(),
            &file_output("file", &work.path().join("samples.prom")).unwrap(),
        )
        .await
        .unwrap();

    let operator_pods = release.operator_pods(2).await.unwrap();
    let mut pods = vec![
        release.collector_pod(0).await.unwrap(),
        release.collector_pod(1).await.unwrap(),
    ];
    pods.push(operator_pods[0].clone());
    let mut started = start_all(cluster, &admin, &pods).await;
    let leader = started.pop().unwrap();
    let collectors: Collectors = started
        .into_iter()
        .map(|collector| (collector.pod_name().to_owned(), collector))
        .collect();
    wait_for("the first operator to lead", TIMEOUT, || async {
        let leading = leader.sample("metricshard_operator_is_leader", &[]).await?;
        let live = leader
            .sample("metricshard_operator_live_collectors", &[])
            .await?;
        anyhow::Ok(Outcome::ready_if(
            leading == Some(1.0) && live == Some(2.0),
            (leading, live),
        ))
    })
    .await
    .unwrap();
    let standby = ChartPodProcess::start(cluster, &admin, &operator_pods[1])
        .await
        .unwrap();

    const INPUTS: usize = 10;
    let inputs = create_inputs(&admin, team.name(), &target, INPUTS).await;
    let (before, running) = wait_placed(
        "10 inputs over 2 collectors, each on exactly its labelled collector",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;
    assert_eq!(
        operator_sample(&standby, "is_leader").await,
        0.0,
        "two operators lead at once"
    );
    let leases: Api<Lease> = release.namespace().api();
    let holder = |lease: Lease| lease.spec.and_then(|spec| spec.holder_identity);
    assert_eq!(
        holder(leases.get("metricshard-operator").await.unwrap()).as_deref(),
        Some(leader.pod_name())
    );

    let killed_at = Instant::now();
    leader.kill().unwrap();
    wait_for(
        "the standby operator to lead after the leader's SIGKILL",
        TIMEOUT,
        || async {
            let leading = standby
                .sample("metricshard_operator_is_leader", &[])
                .await?;
            anyhow::Ok(Outcome::ready_if(leading == Some(1.0), leading))
        },
    )
    .await
    .unwrap();
    let failover = killed_at.elapsed();
    // It has reconciled as leader once it reports the assigned inputs.
    wait_for("the new leader's first reconcile", TIMEOUT, || async {
        let assigned = standby
            .sample("metricshard_operator_assigned_inputs", &[])
            .await?;
        anyhow::Ok(Outcome::ready_if(assigned == Some(INPUTS as f64), assigned))
    })
    .await
    .unwrap();
    eprintln!(
        "check 5: the standby leads {failover:.1?} after the leader's SIGKILL and reconciled \
         {:.1?} after it (bound {FAILOVER_BOUND:?})",
        killed_at.elapsed()
    );
    assert!(
        failover <= FAILOVER_BOUND,
        "check 5: the standby took {failover:.1?} to lead (lease 15 s + retry periods)"
    );
    assert_eq!(
        holder(leases.get("metricshard-operator").await.unwrap()).as_deref(),
        Some(standby.pod_name())
    );
    let (after, running_after) = wait_placed(
        "check 5: every input on exactly its labelled collector after the failover",
        &inputs,
        team.name(),
        &collectors,
    )
    .await;
    assert_eq!(
        labels_of(&after),
        labels_of(&before),
        "check 5: the failover changed input labels"
    );
    assert_eq!(
        operator_sample(&standby, "inputs_moved_total").await,
        0.0,
        "check 5: the new leader counted moved inputs"
    );
    assert_eq!(
        running_after.starts, running.starts,
        "check 5: the failover restarted tasks"
    );
    eprintln!(
        "check 5 passed in {:.1?} (install included)",
        test_started.elapsed()
    );
    drop(collectors);
    drop(standby);
    drop(leader);
    release.uninstall().await.unwrap();
}
