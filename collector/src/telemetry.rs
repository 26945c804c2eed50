//! The collector's own metrics, served on `/metrics`.
//!
//! Every family is declared here with its name, help and label set, so the full list of what we
//! expose is in one place. Labels are bounded by configuration (inputs, outputs) and by short
//! static categories, never by scraped data.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-input families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabels {
    /// `namespace/name` of the MetricInput.
    pub input: String,
}

/// Labels of per-input error families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputErrorLabels {
    /// `namespace/name` of the MetricInput.
    pub input: String,
    /// Short static category.
    pub reason: &'static str,
}

/// Labels of per-output families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputLabels {
    /// `Kind/namespace/name` of the output.
    pub output: String,
}

/// Labels of per-output counters with a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputReasonLabels {
    /// `Kind/namespace/name` of the output.
    pub output: String,
    /// Short static category.
    pub reason: &'static str,
}

/// Labels of handover counters: both bounded by static values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    /// `in` (an input handed to this collector) or `out` (handed away from it).
    pub direction: &'static str,
    /// `fenced`, `late` or `unfenced` (see docs/cluster-mode.md).
    pub outcome: &'static str,
}

/// Labels of [`Telemetry::builds`]: `input` (a task's gatherer) or `output` (an output's sinks).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// `input` or `output`.
    pub kind: &'static str,
}

/// Labels of per-address families of a fanned-out output: bounded by the configured addresses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutputNodeLabels {
    /// `Kind/namespace/name` of the output.
    pub output: String,
    /// Node name (`default` for an output with a single `url`).
    pub node: String,
    /// One address of the node.
    pub address: String,
}

/// Labels of the push receivers' request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushRequestLabels {
    /// `namespace/name` of the MetricInput.
    pub input: String,
    /// `remote_write`, `influx`, `opentsdb` or `falcon`.
    pub protocol: &'static str,
    /// `accepted` or why the request was refused (a short static category).
    pub outcome: &'static str,
}

fn gather_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metric families of a collector.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Registry>,
    /// `metricshard_input_gather_duration_seconds`.
    pub gather_duration: Family<InputLabels, Histogram, fn() -> Histogram>,
    /// `metricshard_input_samples_total`.
    pub input_samples: Family<InputLabels, Counter>,
    /// `metricshard_input_gather_errors_total`.
    pub gather_errors: Family<InputErrorLabels, Counter>,
    /// `metricshard_input_task_restarts_total`.
    pub task_restarts: Family<InputLabels, Counter>,
    /// `metricshard_input_task_starts_total`.
    pub task_starts: Family<InputLabels, Counter>,
    /// `metricshard_input_undeliverable_samples_total`.
    pub undeliverable: Family<InputErrorLabels, Counter>,
    /// `metricshard_tasks`.
    pub tasks: Gauge,
    /// `metricshard_output_buffered_samples`.
    pub output_buffered: Family<OutputLabels, Gauge>,
    /// `metricshard_output_written_samples_total`.
    pub output_written: Family<OutputLabels, Counter>,
    /// `metricshard_output_dropped_samples_total`.
    pub output_dropped: Family<OutputReasonLabels, Counter>,
    /// `metricshard_output_write_errors_total`.
    pub output_write_errors: Family<OutputReasonLabels, Counter>,
    /// `metricshard_manifest_invalid_documents`.
    pub invalid_documents: Gauge,
    /// `metricshard_handovers_total`.
    pub handovers: Family<HandoverLabels, Counter>,
    /// `metricshard_builds_total`: objects built from their spec and Secrets. An apply that
    /// changes nothing builds nothing, so a rate here that follows no edit means churn.
    pub builds: Family<BuildLabels, Counter>,
    /// `metricshard_handover_owner_disagreement_seconds`.
    pub owner_disagreement: Histogram,
    /// `metricshard_handover_draining_inputs`.
    pub draining_inputs: Gauge,
    /// Per-address figures of every running output, for the status writer.
    pub output_nodes: crate::output_status::OutputNodeBoard,
    /// `metricshard_output_node_written_samples_total`.
    pub output_node_written: Family<OutputNodeLabels, Counter>,
    /// `metricshard_output_node_dropped_samples_total`.
    pub output_node_dropped: Family<OutputNodeLabels, Counter>,
    /// `metricshard_output_node_write_retries_total`.
    pub output_node_retries: Family<OutputNodeLabels, Counter>,
    /// `metricshard_output_node_buffered_samples`.
    pub output_node_buffered: Family<OutputNodeLabels, Gauge>,
    /// `metricshard_output_node_reachable`.
    pub output_node_reachable: Family<OutputNodeLabels, Gauge>,
    /// `metricshard_push_requests_total`.
    pub push_requests: Family<PushRequestLabels, Counter>,
    /// `metricshard_push_samples_total`: samples in accepted push requests, by outcome.
    pub push_samples: Family<PushRequestLabels, Counter>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("metricshard");
        let gather_duration = Family::<InputLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            gather_duration_histogram as fn() -> Histogram,
        );
        let telemetry = Self {
            registry: Arc::new(Registry::default()),
            gather_duration,
            input_samples: Family::default(),
            gather_errors: Family::default(),
            task_restarts: Family::default(),
            task_starts: Family::default(),
            undeliverable: Family::default(),
            tasks: Gauge::default(),
            output_buffered: Family::default(),
            output_written: Family::default(),
            output_dropped: Family::default(),
            output_write_errors: Family::default(),
            invalid_documents: Gauge::default(),
            handovers: Family::default(),
            builds: Family::default(),
            owner_disagreement: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            draining_inputs: Gauge::default(),
            output_nodes: crate::output_status::OutputNodeBoard::default(),
            output_node_written: Family::default(),
            output_node_dropped: Family::default(),
            output_node_retries: Family::default(),
            output_node_buffered: Family::default(),
            output_node_reachable: Family::default(),
            push_requests: Family::default(),
            push_samples: Family::default(),
        };
        registry.register(
            "input_gather_duration_seconds",
            "Duration of each gather of an input",
            telemetry.gather_duration.clone(),
        );
        registry.register("input_samples", "Samples gathered by an input", telemetry.input_samples.clone());
        registry.register("input_gather_errors", "Failed gathers and failed targets of an input", telemetry.gather_errors.clone());
        registry.register("input_task_restarts", "Times an input's task was restarted after a crash", telemetry.task_restarts.clone());
        registry.register(
            "input_task_starts",
            "Times an input's task was started: once, plus once per new generation",
            telemetry.task_starts.clone(),
        );
        registry.register(
            "input_undeliverable_samples",
            "Samples an input could not hand to an output (missing output, refused by tenancy)",
            telemetry.undeliverable.clone(),
        );
        registry.register("tasks", "Gather tasks running", telemetry.tasks.clone());
        registry.register("output_buffered_samples", "Samples waiting in an output's buffer", telemetry.output_buffered.clone());
        registry.register("output_written_samples", "Samples an output's backend accepted", telemetry.output_written.clone());
        registry.register("output_dropped_samples", "Samples an output dropped, by reason", telemetry.output_dropped.clone());
        registry.register("output_write_errors", "Failed batch writes of an output, by reason", telemetry.output_write_errors.clone());
        registry.register(
            "manifest_invalid_documents",
            "Manifest documents currently rejected by validation (local mode)",
            telemetry.invalid_documents.clone(),
        );
        registry.register(
            "handovers",
            "Inputs handed to (in) or away from (out) this collector by the operator, by outcome",
            telemetry.handovers.clone(),
        );
        registry.register(
            "builds",
            "Input tasks and output sinks built from their spec and Secrets, by kind (a rebuild that restarts nothing counts too)",
            telemetry.builds.clone(),
        );
        registry.register(
            "handover_owner_disagreement_seconds",
            "From noticing an input left this collector to the fence until which it still gathers it",
            telemetry.owner_disagreement.clone(),
        );
        registry.register(
            "handover_draining_inputs",
            "Inputs this collector still gathers until their handover fence",
            telemetry.draining_inputs.clone(),
        );
        registry.register(
            "output_node_written_samples",
            "Samples one address of an output's node accepted",
            telemetry.output_node_written.clone(),
        );
        registry.register(
            "output_node_dropped_samples",
            "Samples dropped on their way to one address of an output's node (every reason)",
            telemetry.output_node_dropped.clone(),
        );
        registry.register(
            "output_node_write_retries",
            "Failed writes to one address of an output's node that will be retried",
            telemetry.output_node_retries.clone(),
        );
        registry.register(
            "output_node_buffered_samples",
            "Samples waiting in the buffer of one address of an output's node",
            telemetry.output_node_buffered.clone(),
        );
        registry.register(
            "output_node_reachable",
            "1 while the last write to one address of an output's node did not fail retryably, else 0",
            telemetry.output_node_reachable.clone(),
        );
        registry.register(
            "push_requests",
            "Requests a push input received, by protocol and outcome (accepted or why refused)",
            telemetry.push_requests.clone(),
        );
        registry.register(
            "push_samples",
            "Samples in push requests, by protocol and outcome (accepted, or refused when the count is known)",
            telemetry.push_samples.clone(),
        );
        Self { registry: Arc::new(registry), ..telemetry }
    }

    /// Renders every family in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Forgets every per-address series of an output's address that stopped.
    pub fn forget_output_node(&self, labels: &OutputNodeLabels) {
        self.output_node_written.remove(labels);
        self.output_node_dropped.remove(labels);
        self.output_node_retries.remove(labels);
        self.output_node_buffered.remove(labels);
        self.output_node_reachable.remove(labels);
    }

    /// Forgets every series of a removed input, keeping cardinality bounded by live inputs.
    pub fn forget_input(&self, input: &str) {
        let labels = InputLabels { input: input.to_owned() };
        self.gather_duration.remove(&labels);
        self.input_samples.remove(&labels);
        self.task_restarts.remove(&labels);
        self.task_starts.remove(&labels);
        for reason in crate::engine::GATHER_ERROR_REASONS {
            self.gather_errors.remove(&InputErrorLabels { input: input.to_owned(), reason });
        }
        for protocol in crate::inputs::push::PROTOCOL_NAMES {
            for outcome in crate::inputs::push::OUTCOMES {
                let labels = PushRequestLabels { input: input.to_owned(), protocol, outcome };
                self.push_requests.remove(&labels);
                self.push_samples.remove(&labels);
            }
        }
        for reason in crate::routing::UNDELIVERABLE_REASONS {
            self.undeliverable.remove(&InputErrorLabels { input: input.to_owned(), reason });
        }
    }
}
