//! The operator's loop: while leading, watch inputs and collector Leases, plan, and write the
//! plan with server-side apply under the operator's own field manager: the assignment label on
//! the input's metadata, and `status.collector` plus the `Assigned` condition on its status.
//! Owning only those fields means Argo CD or Flux, which own the spec, see no drift.
//!
//! Plans are deterministic and keep inputs where they are, so a new leader reproduces the
//! current assignment and moves nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use metricshard_crds::watch::reflect;
use kube::{Api, Client, Resource, ResourceExt};
use metricshard_crds::{MetricInput, PlacementMode};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::assignment::{AssignmentConfig, CollectorId, InputKey};
use crate::handover::{HANDOVER_AT_ANNOTATION, HandoverState, PREVIOUS_COLLECTOR_ANNOTATION};
use crate::leader::{LeaderElector, RETRY_PERIOD};
use crate::membership::{LeaseRecord, MembershipTracker};
use crate::output_conditions::OutputWatches;
use crate::plan::{self, COLLECTOR_LABEL, InputPlan, InputView, PLACEMENT_LABEL, Placement, PlanContext};
use crate::telemetry::{HandoverKindLabels, Telemetry};
use crate::written::{OwnedFields, WrittenAssignments};

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "metricshard-operator";
/// Name of the leader-election Lease.
pub const LEADER_LEASE: &str = "metricshard-operator";
/// Annotation a leaving collector puts on its Lease (see the collector's cluster mode).
pub const LEASE_DRAINING_ANNOTATION: &str = "metricshard.io/draining";
/// Label selecting collector membership Leases.
pub const COLLECTOR_LEASE_SELECTOR: &str = "metricshard.io/role=collector,metricshard.io/placement=Sharded";

/// Settings of the operator.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// Namespace of the release: collector Leases and the leader Lease live here.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// When set, only Leases held by pods of this StatefulSet count as collectors.
    pub collector_statefulset: Option<String>,
    /// Assignment tuning.
    pub assignment: AssignmentConfig,
    /// How far ahead of a move between live collectors its fence lies; zero disables fencing.
    pub handover_margin: Duration,
    /// How long an output's status keeps the entry of a collector without a Lease.
    pub output_entry_retention: Duration,
}

/// Runs until `shutdown` fires.
pub async fn run(client: Client, settings: OperatorSettings, telemetry: Telemetry, shutdown: CancellationToken, on_ready: impl Fn()) {
    let changed = Arc::new(Notify::new());
    let inputs = reflect(Api::<MetricInput>::all(client.clone()), watcher::Config::default(), changed.clone(), shutdown.clone());
    let leases = reflect(
        Api::<Lease>::namespaced(client.clone(), &settings.namespace),
        watcher::Config::default().labels(COLLECTOR_LEASE_SELECTOR),
        changed.clone(),
        shutdown.clone(),
    );
    let outputs_changed = Arc::new(Notify::new());
    let outputs = OutputWatches::start(&client, outputs_changed.clone(), shutdown.clone());
    let (output_writers_tx, output_writers_rx) = watch::channel(None);
    tokio::spawn(outputs.run(client.clone(), outputs_changed, output_writers_rx, settings.output_entry_retention, shutdown.clone()));
    tokio::select! {
        () = shutdown.cancelled() => return,
        _ = futures::future::join(inputs.wait_until_ready(), leases.wait_until_ready()) => {}
    }
    on_ready();
    let mut elector = LeaderElector::new(Api::namespaced(client.clone(), &settings.namespace), LEADER_LEASE, &settings.identity);
    let recorder = Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: Some(settings.identity.clone()) });
    // Every collector's Lease: the sharded ones take inputs, and all of them run outputs.
    let mut membership = MembershipTracker::default();
    let mut written = WrittenAssignments::default();
    let mut leading = false;
    let mut next_election = Instant::now();
    loop {
        if Instant::now() >= next_election {
            let was_leading = leading;
            leading = match elector.try_acquire_or_renew().await {
                Ok(leading) => leading,
                Err(error) => {
                    tracing::warn!("leader election failed: {error}");
                    false
                }
            };
            if leading != was_leading {
                tracing::info!(identity = %settings.identity, leading, "leadership changed");
            }
            telemetry.is_leader.set(i64::from(leading));
            next_election = Instant::now() + RETRY_PERIOD;
        }
        let all_records = lease_records(&leases);
        let all_live = membership.observe(&all_records, Instant::now());
        let sharded = |holder: &str| is_sharded_collector(settings.collector_statefulset.as_deref(), holder);
        let records: Vec<LeaseRecord> = all_records.iter().filter(|r| sharded(&r.holder)).cloned().collect();
        let live: Vec<CollectorId> = all_live.iter().filter(|c| sharded(c.as_str())).cloned().collect();
        telemetry.live_collectors.set(live.len() as i64);
        let mut next_fence = None;
        if leading {
            let leaving: BTreeSet<&str> = records.iter().filter(|r| r.draining).map(|r| r.holder.as_str()).collect();
            let context = PlanContext {
                eligible: live.iter().filter(|c| !leaving.contains(c.as_str())).cloned().collect(),
                live: live.iter().map(|c| c.as_str().to_owned()).collect(),
                now_unix_nanos: unix_nanos(SystemTime::now()),
                margin: settings.handover_margin,
            };
            next_fence = reconcile(&client, &recorder, &inputs, &mut written, &context, &settings, &telemetry).await;
        }
        let writers: Option<BTreeSet<String>> = leading.then(|| all_live.iter().map(|c| c.as_str().to_owned()).collect());
        output_writers_tx.send_if_modified(|current| std::mem::replace(current, writers.clone()) != writers);
        // Wake for changes, for the next election round, when a silent collector expires, and
        // when a fence passes (a deferred move may go ahead) or its retention ends.
        let mut wait = next_election.saturating_duration_since(Instant::now());
        if let Some(expiry) = membership.next_expiry(&records, Instant::now()) {
            wait = wait.min(expiry + Duration::from_millis(10));
        }
        if let Some(fence) = next_fence {
            let until = (UNIX_EPOCH + Duration::from_nanos(fence)).duration_since(SystemTime::now()).unwrap_or_default();
            wait = wait.min(until + Duration::from_millis(10));
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = changed.notified() => tokio::time::sleep(Duration::from_millis(50)).await,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if leading {
        elector.release().await;
    }
}

/// Every collector Lease of the release namespace.
fn lease_records(leases: &Store<Lease>) -> Vec<LeaseRecord> {
    leases
        .state()
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            Some(LeaseRecord {
                holder: spec.holder_identity.clone()?,
                renew_time: format!("{:?}", spec.renew_time),
                duration: Duration::from_secs(spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(15)),
                draining: lease.annotations().get(LEASE_DRAINING_ANNOTATION).is_some_and(|v| v == "true"),
            })
        })
        .collect()
}

/// True when `holder` is a pod of the collector StatefulSet (`<name>-<ordinal>`), the collectors
/// inputs are sharded over; every holder when no StatefulSet is configured.
fn is_sharded_collector(statefulset: Option<&str>, holder: &str) -> bool {
    statefulset.is_none_or(|sts| {
        holder.strip_prefix(sts).and_then(|rest| rest.strip_prefix('-')).is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
    })
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The labels and annotations the operator owns on `input`, as the watch shows them.
fn owned_fields(input: &MetricInput) -> OwnedFields {
    let owned = |map: &BTreeMap<String, String>, keys: [&str; 2]| -> BTreeMap<String, String> {
        map.iter().filter(|(key, _)| keys.contains(&key.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    OwnedFields {
        labels: owned(input.labels(), [COLLECTOR_LABEL, PLACEMENT_LABEL]),
        annotations: owned(input.annotations(), [PREVIOUS_COLLECTOR_ANNOTATION, HANDOVER_AT_ANNOTATION]),
    }
}

fn input_key(input: &MetricInput) -> InputKey {
    InputKey::new(&input.namespace().unwrap_or_default(), &input.name_any())
}

/// The plan's view of `input`, with the operator-owned fields it should be planned with.
fn view_of(input: &MetricInput, owned: &OwnedFields) -> InputView {
    let (handover, error) = HandoverState::from_annotations(&owned.annotations);
    if let Some(error) = error {
        tracing::warn!(input = %input.name_any(), namespace = ?input.namespace(), "{error}; the fence is dropped");
    }
    InputView {
        handover,
        key: input_key(input),
        placement: match input.spec.placement.mode {
            PlacementMode::Sharded => Placement::Sharded,
            PlacementMode::EveryNode => Placement::EveryNode,
        },
        collector_label: owned.labels.get(COLLECTOR_LABEL).cloned(),
    }
}

/// Plans and writes; returns the next instant (nanoseconds since the epoch) at which a fence
/// passes or its retention ends, when the plan may change without any event.
async fn reconcile(
    client: &Client,
    recorder: &Recorder,
    store: &Store<MetricInput>,
    written: &mut WrittenAssignments,
    context: &PlanContext,
    settings: &OperatorSettings,
    telemetry: &Telemetry,
) -> Option<u64> {
    let started = Instant::now();
    let inputs = store.state();
    let keys: BTreeSet<InputKey> = inputs.iter().map(|input| input_key(input)).collect();
    written.retain(|key| keys.contains(key));
    // Plan from what this operator wrote where its watch has not caught up yet (see `written`).
    let owned: Vec<OwnedFields> =
        inputs.iter().map(|input| written.current(&input_key(input), owned_fields(input), started)).collect();
    let views: Vec<InputView> = inputs.iter().zip(&owned).map(|(input, owned)| view_of(input, owned)).collect();
    let plans = match plan::plan(&views, context, &settings.assignment) {
        Ok(plans) => plans,
        Err(error) => {
            tracing::error!("cannot plan the assignment: {error}");
            return None;
        }
    };
    // Assignments first, all of them: the fences of this round were computed from one clock
    // reading, and every write delayed by a status patch or an Event eats into their margin.
    for ((input, current), plan) in inputs.iter().zip(&owned).zip(&plans) {
        let wanted = OwnedFields { labels: plan.labels.clone(), annotations: plan.annotations.clone() };
        if *current == wanted {
            continue;
        }
        match write_assignment(client, input, &wanted).await {
            Ok(()) => written.record(plan.key.clone(), wanted, Instant::now()),
            Err(error) => tracing::warn!(input = %plan.key, "writing the assignment failed, will retry: {error}"),
        }
    }
    let mut moved = 0u64;
    for ((input, view), plan) in inputs.iter().zip(&views).zip(&plans) {
        if let Some(from) = plan.moved_from(view) {
            moved += 1;
            let fenced = plan.is_fenced_move(view);
            let kind = if fenced { "fenced" } else { "unfenced" };
            telemetry.handovers.get_or_create(&HandoverKindLabels { kind }).inc();
            let to = plan.collector.as_deref().unwrap_or("none");
            let note = match plan.annotations.get(HANDOVER_AT_ANNOTATION).filter(|_| fenced) {
                Some(fence) => format!("moved from collector {from} to {to}: {from} gathers the ticks before {fence}, {to} those from then on"),
                None => format!("moved from collector {from} to {to}"),
            };
            publish(recorder, input, "Reassigned", note).await;
        }
        if let Err(error) = write_status(client, input, plan).await {
            tracing::warn!(input = %plan.key, "writing the assignment status failed, will retry: {error}");
        }
    }
    if moved > 0 {
        telemetry.inputs_moved.inc_by(moved);
        telemetry.rebalance_duration.observe(started.elapsed().as_secs_f64());
        tracing::info!(moved, collectors = context.eligible.len(), inputs = plans.len(), "rebalanced");
    }
    telemetry.assigned_inputs.set(plans.iter().filter(|p| p.assigned.status).count() as i64);
    telemetry.moves_deferred.set(plans.iter().filter(|p| p.deferred).count() as i64);
    // What was just written: the fences of this round's moves and the ones kept.
    let written: Vec<HandoverState> = plans.iter().map(|p| HandoverState::from_annotations(&p.annotations).0).collect();
    telemetry.handovers_pending.set(written.iter().filter(|h| h.is_pending(context.now_unix_nanos)).count() as i64);
    written.iter().filter_map(|h| h.next_change(context.now_unix_nanos)).min()
}

async fn publish(recorder: &Recorder, input: &MetricInput, reason: &str, note: String) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Assign".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &input.object_ref(&())).await {
        tracing::debug!("publishing an event failed: {error}");
    }
}

/// Applies the operator-owned labels and annotations of one input.
async fn write_assignment(client: &Client, input: &MetricInput, wanted: &OwnedFields) -> Result<(), kube::Error> {
    let api: Api<MetricInput> = Api::namespaced(client.clone(), &input.namespace().unwrap_or_default());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    // One apply carries the label and the fence, so no collector ever sees one without the
    // other; fields this manager owned and left out are removed.
    let patch = json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": input.name_any(), "labels": wanted.labels, "annotations": wanted.annotations },
    });
    api.patch(&input.name_any(), &params, &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Applies `status.collector` and the `Assigned` condition of one input's plan, when they differ.
async fn write_status(client: &Client, input: &MetricInput, plan: &InputPlan) -> Result<(), kube::Error> {
    let api: Api<MetricInput> = Api::namespaced(client.clone(), &input.namespace().unwrap_or_default());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let generation = input.meta().generation;
    let status = input.status.clone().unwrap_or_default();
    let current = status.conditions.iter().find(|c| c.type_ == "Assigned");
    let wanted_status = if plan.assigned.status { "True" } else { "False" };
    let unchanged = current.is_some_and(|c| {
        c.status == wanted_status && c.reason == plan.assigned.reason && c.message == plan.assigned.message && c.observed_generation == generation
    }) && status.collector == plan.collector;
    if unchanged {
        return Ok(());
    }
    // The transition time moves only when the status flips, as the API conventions ask.
    let transition = current
        .filter(|c| c.status == wanted_status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    let condition = Condition {
        type_: "Assigned".into(),
        status: wanted_status.into(),
        reason: plan.assigned.reason.into(),
        message: plan.assigned.message.clone(),
        observed_generation: generation,
        last_transition_time: transition,
    };
    let patch = json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": input.name_any() },
        "status": { "collector": plan.collector, "observedGeneration": generation, "conditions": [condition] },
    });
    api.patch_status(&input.name_any(), &params, &Patch::Apply(&patch)).await?;
    Ok(())
}
