//! From inputs to outputs: which output pipelines exist, which an input may use (tenancy), and
//! handing samples to them.
//!
//! Inputs resolve their outputs at delivery time through the shared [`OutputRegistry`], so that
//! replacing an output never restarts the inputs that use it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, RwLock};

use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use metricshard_crds::{OutputKind, OutputRef};
use tokio::sync::mpsc;

use crate::engine::{Destination, StatusBoard, TaskKey};
use crate::sample::{Labels, Sample};
use crate::telemetry::{InputErrorLabels, Telemetry};

/// Every `reason` an undeliverable sample is counted under.
pub const UNDELIVERABLE_REASONS: &[&str] = &["output_not_found", "namespace_not_admitted", "output_stopped"];

/// The label Kubernetes puts on every namespace, so selectors can match by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Identifies an output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputId {
    /// Kind of the output object.
    pub kind: OutputKind,
    /// Namespace for a `MetricOutput`, `None` for a `ClusterMetricOutput`.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl OutputId {
    /// The output an input in `namespace` means by `reference`.
    pub fn resolve(namespace: &str, reference: &OutputRef) -> Self {
        match reference.kind {
            OutputKind::MetricOutput => {
                Self { kind: reference.kind, namespace: Some(namespace.to_owned()), name: reference.name.clone() }
            }
            OutputKind::ClusterMetricOutput => Self { kind: reference.kind, namespace: None, name: reference.name.clone() },
        }
    }
}

impl fmt::Display for OutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{:?}/{namespace}/{}", self.kind, self.name),
            None => write!(f, "{:?}/{}", self.kind, self.name),
        }
    }
}

/// A running output as inputs see it.
#[derive(Clone)]
pub struct OutputEntry {
    /// Feeds the output's pipeline.
    pub sender: mpsc::Sender<Vec<Sample>>,
    /// For a `ClusterMetricOutput`: which namespaces may use it (`None` admits none).
    pub namespace_selector: Option<LabelSelector>,
}

/// The outputs that exist right now and the labels of known namespaces.
#[derive(Default)]
pub struct OutputRegistry {
    outputs: RwLock<HashMap<OutputId, OutputEntry>>,
    namespace_labels: RwLock<BTreeMap<String, Labels>>,
}

/// Why an input may not send to an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The output does not exist (or is not visible from the input's namespace).
    #[error("{0} not found")]
    NotFound(OutputId),
    /// The cluster output's `namespaceSelector` does not admit the input's namespace.
    #[error("{output} does not admit namespace {namespace:?} (see its spec.namespaceSelector)")]
    NamespaceNotAdmitted {
        /// The output.
        output: OutputId,
        /// The input's namespace.
        namespace: String,
    },
}

impl RouteError {
    /// Short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "output_not_found",
            Self::NamespaceNotAdmitted { .. } => "namespace_not_admitted",
        }
    }
}

impl OutputRegistry {
    /// Publishes (or replaces) an output.
    pub fn insert(&self, id: OutputId, entry: OutputEntry) {
        if let Ok(mut outputs) = self.outputs.write() {
            outputs.insert(id, entry);
        }
    }

    /// Withdraws an output.
    pub fn remove(&self, id: &OutputId) {
        if let Ok(mut outputs) = self.outputs.write() {
            outputs.remove(id);
        }
    }

    /// Replaces the known namespaces' labels.
    pub fn set_namespace_labels(&self, labels: BTreeMap<String, Labels>) {
        if let Ok(mut current) = self.namespace_labels.write() {
            *current = labels;
        }
    }

    /// The pipeline an input in `namespace` may send to for `reference`, or why not.
    pub fn route(&self, namespace: &str, reference: &OutputRef) -> Result<mpsc::Sender<Vec<Sample>>, RouteError> {
        let id = OutputId::resolve(namespace, reference);
        let entry = self
            .outputs
            .read()
            .ok()
            .and_then(|outputs| outputs.get(&id).cloned())
            .ok_or_else(|| RouteError::NotFound(id.clone()))?;
        if id.kind == OutputKind::ClusterMetricOutput {
            let labels = self.labels_of(namespace);
            let admitted = entry.namespace_selector.as_ref().is_some_and(|selector| selector_matches(selector, &labels));
            if !admitted {
                return Err(RouteError::NamespaceNotAdmitted { output: id, namespace: namespace.to_owned() });
            }
        }
        Ok(entry.sender)
    }

    fn labels_of(&self, namespace: &str) -> Labels {
        let mut labels = self
            .namespace_labels
            .read()
            .ok()
            .and_then(|all| all.get(namespace).cloned())
            .unwrap_or_default();
        labels.set(NAMESPACE_NAME_LABEL, namespace);
        labels
    }
}

/// True when `labels` satisfy `selector` (Kubernetes semantics: every term must hold; an empty
/// selector matches everything).
pub fn selector_matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_match = selector
        .match_labels
        .as_ref()
        .is_none_or(|wanted| wanted.iter().all(|(name, value)| labels.get(name) == Some(value.as_str())));
    let expressions_match = selector.match_expressions.as_ref().is_none_or(|expressions| {
        expressions.iter().all(|expression| {
            let value = labels.get(&expression.key);
            let values = expression.values.as_deref().unwrap_or_default();
            match expression.operator.as_str() {
                "In" => value.is_some_and(|v| values.iter().any(|candidate| candidate == v)),
                "NotIn" => value.is_none_or(|v| values.iter().all(|candidate| candidate != v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // An unknown operator matches nothing, as the apiserver would have refused it.
                _ => false,
            }
        })
    });
    labels_match && expressions_match
}

/// Delivers one input's samples to each of its outputs.
pub struct InputDestination {
    key: TaskKey,
    namespace: String,
    outputs: Vec<OutputRef>,
    registry: Arc<OutputRegistry>,
    telemetry: Telemetry,
    status: StatusBoard,
}

impl InputDestination {
    /// The destination of input `key` in `namespace`, sending to `outputs`.
    pub fn new(
        key: TaskKey,
        namespace: String,
        outputs: Vec<OutputRef>,
        registry: Arc<OutputRegistry>,
        telemetry: Telemetry,
        status: StatusBoard,
    ) -> Self {
        Self { key, namespace, outputs, registry, telemetry, status }
    }

    fn count_undeliverable(&self, reason: &'static str, samples: usize) {
        self.telemetry
            .undeliverable
            .get_or_create(&InputErrorLabels { input: self.key.to_string(), reason })
            .inc_by(samples as u64);
    }
}

impl Destination for InputDestination {
    fn deliver(&self, samples: Vec<Sample>) -> BoxFuture<'_, ()> {
        async move {
            let count = samples.len();
            let mut senders = Vec::with_capacity(self.outputs.len());
            let mut problems = Vec::new();
            for reference in &self.outputs {
                match self.registry.route(&self.namespace, reference) {
                    Ok(sender) => senders.push(sender),
                    Err(error) => {
                        self.count_undeliverable(error.category(), count);
                        tracing::warn!(input = %self.key, "cannot deliver {count} samples: {error}");
                        problems.push(error.to_string());
                    }
                }
            }
            let problem = (!problems.is_empty()).then(|| problems.join("; "));
            self.status.update(&self.key, |status| status.delivery_problem = problem);
            let last = senders.len().saturating_sub(1);
            let mut samples = Some(samples);
            for (index, sender) in senders.into_iter().enumerate() {
                // Clone for all but the last output; the last one takes the original.
                let batch = if index == last { samples.take().unwrap_or_default() } else { samples.clone().unwrap_or_default() };
                if sender.send(batch).await.is_err() {
                    self.count_undeliverable("output_stopped", count);
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn selector(labels: &[(&str, &str)], expressions: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()),
            match_expressions: Some(
                expressions
                    .iter()
                    .map(|(key, operator, values)| LabelSelectorRequirement {
                        key: (*key).to_owned(),
                        operator: (*operator).to_owned(),
                        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn selector_semantics_follow_kubernetes() {
        let labels = Labels::from_pairs([("team", "platform"), ("tier", "prod")]);
        assert!(selector_matches(&LabelSelector::default(), &labels));
        assert!(selector_matches(&selector(&[("team", "platform")], &[]), &labels));
        assert!(!selector_matches(&selector(&[("team", "web")], &[]), &labels));
        assert!(selector_matches(&selector(&[], &[("tier", "In", &["prod", "stage"])]), &labels));
        assert!(!selector_matches(&selector(&[], &[("tier", "NotIn", &["prod"])]), &labels));
        assert!(selector_matches(&selector(&[], &[("missing", "NotIn", &["x"])]), &labels));
        assert!(selector_matches(&selector(&[], &[("team", "Exists", &[])]), &labels));
        assert!(!selector_matches(&selector(&[], &[("team", "DoesNotExist", &[])]), &labels));
        assert!(!selector_matches(&selector(&[], &[("team", "Bogus", &[])]), &labels));
    }

    #[tokio::test]
    async fn tenancy_is_enforced_when_routing() {
        let registry = OutputRegistry::default();
        let (sender, _receiver) = mpsc::channel(1);
        let shared = OutputRef { name: "shared".into(), kind: OutputKind::ClusterMetricOutput };
        let local = OutputRef { name: "local".into(), kind: OutputKind::MetricOutput };
        registry.insert(
            OutputId { kind: OutputKind::MetricOutput, namespace: Some("team-a".into()), name: "local".into() },
            OutputEntry { sender: sender.clone(), namespace_selector: None },
        );
        registry.insert(
            OutputId { kind: OutputKind::ClusterMetricOutput, namespace: None, name: "shared".into() },
            OutputEntry { sender, namespace_selector: Some(selector(&[("team", "a")], &[])) },
        );
        registry.set_namespace_labels([("team-a".to_owned(), Labels::from_pairs([("team", "a")]))].into());

        assert!(registry.route("team-a", &local).is_ok());
        // A MetricOutput of another namespace is simply not visible.
        assert_eq!(registry.route("team-b", &local).unwrap_err().category(), "output_not_found");
        assert!(registry.route("team-a", &shared).is_ok());
        assert_eq!(registry.route("team-b", &shared).unwrap_err().category(), "namespace_not_admitted");
        // The automatic name label makes `kubernetes.io/metadata.name` selectors work.
        let by_name = OutputRef { name: "by-name".into(), kind: OutputKind::ClusterMetricOutput };
        let (sender, _receiver) = mpsc::channel(1);
        registry.insert(
            OutputId { kind: OutputKind::ClusterMetricOutput, namespace: None, name: "by-name".into() },
            OutputEntry { sender, namespace_selector: Some(selector(&[(NAMESPACE_NAME_LABEL, "team-b")], &[])) },
        );
        assert!(registry.route("team-b", &by_name).is_ok());
        assert!(registry.route("team-a", &by_name).is_err());
    }
}
