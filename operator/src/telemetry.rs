//! The operator's own metrics.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `metricshard_operator_handovers_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverKindLabels {
    /// `fenced` (between live collectors) or `unfenced` (away from a dead collector).
    pub kind: &'static str,
}

/// Every metric of the operator.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
    /// `metricshard_operator_inputs_moved_total`.
    pub inputs_moved: Counter,
    /// `metricshard_operator_rebalance_duration_seconds`.
    pub rebalance_duration: Histogram,
    /// `metricshard_operator_is_leader`.
    pub is_leader: Gauge,
    /// `metricshard_operator_live_collectors`.
    pub live_collectors: Gauge,
    /// `metricshard_operator_assigned_inputs`.
    pub assigned_inputs: Gauge,
    /// `metricshard_operator_handovers_total`.
    pub handovers: Family<HandoverKindLabels, Counter>,
    /// `metricshard_operator_handovers_pending`.
    pub handovers_pending: Gauge,
    /// `metricshard_operator_moves_deferred`.
    pub moves_deferred: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metricshard_operator");
        let telemetry = Self {
            registry: Arc::new(Registry::default()),
            inputs_moved: Counter::default(),
            rebalance_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            is_leader: Gauge::default(),
            live_collectors: Gauge::default(),
            assigned_inputs: Gauge::default(),
            handovers: Family::default(),
            handovers_pending: Gauge::default(),
            moves_deferred: Gauge::default(),
        };
        registry.register("inputs_moved", "Inputs moved to another collector", telemetry.inputs_moved.clone());
        registry.register(
            "rebalance_duration_seconds",
            "Time to plan and write a rebalance that moved inputs",
            telemetry.rebalance_duration.clone(),
        );
        registry.register("is_leader", "1 while this replica leads", telemetry.is_leader.clone());
        registry.register("live_collectors", "Collectors whose Lease is fresh", telemetry.live_collectors.clone());
        registry.register("assigned_inputs", "Inputs with a live owner", telemetry.assigned_inputs.clone());
        registry.register("handovers", "Inputs moved, by whether the move carried a fence", telemetry.handovers.clone());
        registry.register("handovers_pending", "Inputs whose handover fence has not passed yet", telemetry.handovers_pending.clone());
        registry.register(
            "moves_deferred",
            "Inputs the assignment wants elsewhere, waiting for their handover in flight",
            telemetry.moves_deferred.clone(),
        );
        Self { registry: Arc::new(registry), ..telemetry }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
