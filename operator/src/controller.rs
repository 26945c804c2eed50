//! The operator's loop: while leading, watch inputs and collector Leases, plan, and write the
//! plan with server-side apply under the operator's own field manager: the assignment label on
//! the input's metadata, and `status.collector` plus the `Assigned` condition on its status.
//! Owning only those fields means Argo CD or Flux, which own the spec, see no drift.
//!
//! Plans are deterministic and keep inputs where they are, so a new leader reproduces the
//! current assignment and moves nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::assignment::{AssignmentConfig, InputKey};
use crate::leader::{LeaderElector, RETRY_PERIOD};
use crate::membership::{LeaseRecord, MembershipTracker};
use crate::plan::{self, COLLECTOR_LABEL, InputPlan, InputView, PLACEMENT_LABEL, Placement};
use crate::telemetry::Telemetry;

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "metricshard-operator";
/// Name of the leader-election Lease.
pub const LEADER_LEASE: &str = "metricshard-operator";
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
    tokio::select! {
        () = shutdown.cancelled() => return,
        _ = futures::future::join(inputs.wait_until_ready(), leases.wait_until_ready()) => {}
    }
    on_ready();
    let mut elector = LeaderElector::new(Api::namespaced(client.clone(), &settings.namespace), LEADER_LEASE, &settings.identity);
    let recorder = Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: Some(settings.identity.clone()) });
    let mut membership = MembershipTracker::default();
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
        let records = lease_records(&leases, settings.collector_statefulset.as_deref());
        let live = membership.observe(&records, Instant::now());
        telemetry.live_collectors.set(live.len() as i64);
        if leading {
            reconcile(&client, &recorder, &inputs, &live, &settings, &telemetry).await;
        }
        // Wake for changes, for the next election round, and when a silent collector expires.
        let mut wait = next_election.saturating_duration_since(Instant::now());
        if let Some(expiry) = membership.next_expiry(&records, Instant::now()) {
            wait = wait.min(expiry + Duration::from_millis(10));
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

fn lease_records(leases: &Store<Lease>, statefulset: Option<&str>) -> Vec<LeaseRecord> {
    let member = |holder: &str| {
        statefulset.is_none_or(|sts| {
            holder.strip_prefix(sts).and_then(|rest| rest.strip_prefix('-')).is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
        })
    };
    leases
        .state()
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            if !member(spec.holder_identity.as_deref()?) {
                return None;
            }
            Some(LeaseRecord {
                holder: spec.holder_identity.clone()?,
                renew_time: format!("{:?}", spec.renew_time),
                duration: Duration::from_secs(spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).unwrap_or(15)),
            })
        })
        .collect()
}

fn view_of(input: &MetricInput) -> InputView {
    InputView {
        key: InputKey::new(&input.namespace().unwrap_or_default(), &input.name_any()),
        placement: match input.spec.placement.mode {
            PlacementMode::Sharded => Placement::Sharded,
            PlacementMode::EveryNode => Placement::EveryNode,
        },
        collector_label: input.labels().get(COLLECTOR_LABEL).cloned(),
    }
}

async fn reconcile(
    client: &Client,
    recorder: &Recorder,
    store: &Store<MetricInput>,
    live: &[crate::assignment::CollectorId],
    settings: &OperatorSettings,
    telemetry: &Telemetry,
) {
    let started = Instant::now();
    let inputs = store.state();
    let views: Vec<InputView> = inputs.iter().map(|input| view_of(input)).collect();
    let plans = match plan::plan(&views, live, &settings.assignment) {
        Ok(plans) => plans,
        Err(error) => {
            tracing::error!("cannot plan the assignment: {error}");
            return;
        }
    };
    let mut moved = 0u64;
    for ((input, view), plan) in inputs.iter().zip(&views).zip(&plans) {
        if let Some(from) = plan.moved_from(view) {
            moved += 1;
            let note = format!("moved from collector {from} to {}", plan.collector.as_deref().unwrap_or("none"));
            publish(recorder, input, "Reassigned", note).await;
        }
        if let Err(error) = write(client, input, plan).await {
            tracing::warn!(input = %plan.key, "writing the assignment failed, will retry: {error}");
        }
    }
    if moved > 0 {
        telemetry.inputs_moved.inc_by(moved);
        telemetry.rebalance_duration.observe(started.elapsed().as_secs_f64());
        tracing::info!(moved, collectors = live.len(), inputs = plans.len(), "rebalanced");
    }
    telemetry.assigned_inputs.set(plans.iter().filter(|p| p.assigned.status).count() as i64);
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

/// Applies the plan of one input, writing only what differs from what is there.
async fn write(client: &Client, input: &MetricInput, plan: &InputPlan) -> Result<(), kube::Error> {
    let api: Api<MetricInput> = Api::namespaced(client.clone(), &input.namespace().unwrap_or_default());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let owned: BTreeMap<String, String> = input
        .labels()
        .iter()
        .filter(|(key, _)| key.as_str() == COLLECTOR_LABEL || key.as_str() == PLACEMENT_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if owned != plan.labels {
        let patch = json!({
            "apiVersion": "metricshard.io/v1alpha1",
            "kind": "MetricInput",
            "metadata": { "name": input.name_any(), "labels": plan.labels },
        });
        api.patch(&input.name_any(), &params, &Patch::Apply(&patch)).await?;
    }
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
