//! The stateful side of handovers in cluster mode: remembers this collector's shard between
//! applies, reads an input that left it (its label-selected watch no longer shows it) to learn
//! whether to drain it until its fence, keeps the draining inputs in the desired state until
//! their fence, and counts what happened.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kube::{Api, Client, ResourceExt};
use metricshard_crds::MetricInput;

use super::{Arrival, CurrentAssignment, Departure, Handover, arrival_window, classify_arrival, departure};
use crate::cluster::COLLECTOR_LABEL;
use crate::engine::{TaskKey, TickWindow};
use crate::runtime::{DesiredInput, DesiredState};
use crate::schedule::unix_nanos;
use crate::telemetry::{HandoverLabels, Telemetry};

/// How soon an input read back as still ours, but missing from the watch, is read again.
const RECHECK_KEPT: Duration = Duration::from_secs(5);
/// How long a drained task stays after its fence. It parks itself after the last tick before the
/// fence; stopping it only later means a gather of that tick that woke up late (a loaded node)
/// is not cancelled.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// An input this collector keeps running although its watch no longer shows it.
struct Retained {
    input: MetricInput,
    window: TickWindow,
    /// Drop it (drained: fence + [`DRAIN_GRACE`]) or read it again (kept) at this instant,
    /// nanoseconds since the epoch.
    until_unix_nanos: u64,
    draining: bool,
}

/// Handover state of one collector.
pub struct HandoverTracker {
    me: String,
    client: Client,
    telemetry: Telemetry,
    /// The shard as last applied: key → window.
    shard: BTreeMap<TaskKey, TickWindow>,
    retained: BTreeMap<TaskKey, Retained>,
    /// False until the first desired state: what is in the shard at start-up did not arrive by
    /// a handover seen here (a restarted collector would count passed fences as late).
    started: bool,
}

impl HandoverTracker {
    /// A tracker for the collector pod `me`.
    pub fn new(me: String, client: Client, telemetry: Telemetry) -> Self {
        Self { me, client, telemetry, shard: BTreeMap::new(), retained: BTreeMap::new(), started: false }
    }

    /// Turns the shard as watched into what this collector should run: fences applied to the
    /// inputs handed to it, and the inputs handed away that it still drains.
    pub async fn desired(&mut self, mut desired: DesiredState) -> DesiredState {
        let now = unix_nanos(SystemTime::now());
        for (key, input) in &mut desired.inputs {
            let handover = match Handover::from_annotations(input.input.annotations()) {
                Ok(handover) => handover,
                Err(error) => {
                    // A fence nobody can read is no fence: run the input rather than stall it.
                    tracing::warn!(input = %key, "ignoring the handover fence: {error}");
                    None
                }
            };
            input.window = arrival_window(&self.me, handover.as_ref());
            if !self.shard.contains_key(key) {
                // Back in the shard while draining (moved back): the shard's window rules again.
                self.retained.remove(key);
                if let Some(arrival) = classify_arrival(&self.me, handover.as_ref(), now).filter(|_| self.started) {
                    self.count("in", arrival.as_str());
                    if arrival == Arrival::Late {
                        tracing::warn!(input = %key, "handed over to this collector after its fence: ticks since the fence were missed");
                    }
                }
            }
        }
        let departed: Vec<(TaskKey, TickWindow)> = self
            .shard
            .iter()
            .filter(|(key, _)| !desired.inputs.contains_key(*key) && !self.retained.contains_key(*key))
            .map(|(key, window)| (key.clone(), *window))
            .collect();
        self.shard = desired.inputs.iter().map(|(key, input)| (key.clone(), input.window)).collect();
        self.started = true;
        for (key, window) in departed {
            self.depart(key, window).await;
        }
        self.expire().await;
        for (key, retained) in &self.retained {
            desired.inputs.entry(key.clone()).or_insert_with(|| DesiredInput {
                generation: retained.input.metadata.generation.unwrap_or_default(),
                input: retained.input.clone(),
                window: retained.window,
            });
        }
        self.telemetry.draining_inputs.set(self.retained.values().filter(|r| r.draining).count() as i64);
        desired
    }

    /// When the desired state changes next without a watch event: a drain ending or a kept
    /// input to read again.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.retained.values().map(|r| SystemTime::UNIX_EPOCH + Duration::from_nanos(r.until_unix_nanos)).min()
    }

    /// True while some input is still drained towards its fence.
    pub fn is_draining(&self) -> bool {
        self.retained.values().any(|r| r.draining)
    }

    async fn depart(&mut self, key: TaskKey, window: TickWindow) {
        let Some((namespace, name)) = key.as_str().split_once('/') else { return };
        let api: Api<MetricInput> = Api::namespaced(self.client.clone(), namespace);
        let current = match api.get_opt(name).await {
            Ok(current) => current,
            Err(error) => {
                // Without the object there is no fence to honour; stopping risks a gap, never
                // a duplicate.
                tracing::warn!(input = %key, "cannot read an input that left this shard, stopping it: {error}");
                self.count("out", "unfenced");
                return;
            }
        };
        let assignment = current.as_ref().map(|input| CurrentAssignment {
            collector: input.labels().get(COLLECTOR_LABEL).cloned(),
            handover: Handover::from_annotations(input.annotations()).ok().flatten(),
        });
        let now = unix_nanos(SystemTime::now());
        match (departure(&self.me, assignment.as_ref(), now), current) {
            (Departure::Drain { until_unix_nanos }, Some(input)) => {
                self.count("out", "fenced");
                self.telemetry.owner_disagreement.observe(Duration::from_nanos(until_unix_nanos - now).as_secs_f64());
                tracing::info!(input = %key, fence_in = ?Duration::from_nanos(until_unix_nanos - now), "handed over: gathering until the fence");
                // Keep the start of the window: a collector that got the input fenced and loses it
                // again before gathering gathers only between the two fences.
                let window = window.ending_before(until_unix_nanos);
                let until_unix_nanos = until_unix_nanos.saturating_add(nanos(DRAIN_GRACE));
                self.retained.insert(key, Retained { input, window, until_unix_nanos, draining: true });
            }
            (Departure::Keep, Some(input)) => {
                let until_unix_nanos = now.saturating_add(nanos(RECHECK_KEPT));
                self.retained.insert(key, Retained { input, window, until_unix_nanos, draining: false });
            }
            (Departure::Stop(reason), _) => {
                if let Some(outcome) = reason.handover_label() {
                    self.count("out", outcome);
                    tracing::info!(input = %key, outcome, "handed over: stopped");
                }
            }
            (Departure::Drain { .. } | Departure::Keep, None) => {}
        }
    }

    /// Ends drains whose fence passed and reads kept inputs again.
    async fn expire(&mut self) {
        let now = unix_nanos(SystemTime::now());
        let due: Vec<(TaskKey, bool, TickWindow)> = self
            .retained
            .iter()
            .filter(|(_, r)| r.until_unix_nanos <= now)
            .map(|(key, r)| (key.clone(), r.draining, r.window))
            .collect();
        for (key, draining, window) in due {
            self.retained.remove(&key);
            if !draining {
                // Still not back in the watch: decide again from the object.
                self.depart(key, window).await;
            }
        }
    }

    fn count(&self, direction: &'static str, outcome: &'static str) {
        self.telemetry.handovers.get_or_create(&HandoverLabels { direction, outcome }).inc();
    }
}
