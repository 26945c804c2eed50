//! Node-local placement: which `EveryNode` inputs this collector's node admits.
//!
//! An input's `spec.placement.nodeSelector` names node labels that must all carry the given
//! values. The collector reads its own Node (`NODE_NAME`) with `get` (the only verb on nodes the
//! chart grants: a watch would need `list` and `watch` on every Node of the cluster) every
//! `refresh`, and wakes the desired-state loop when the labels change, so relabelling a node
//! starts or stops the input there within one refresh.
//!
//! Failing closed: until the node's labels are known (no `NODE_NAME`, the Node cannot be read),
//! inputs with a selector are not run; inputs without one are.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt};
use metricshard_crds::MetricInput;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Default of how often a node-local collector re-reads its node's labels.
pub const DEFAULT_NODE_LABEL_REFRESH: Duration = Duration::from_secs(30);

/// Whether a node with `labels` (`None`: unknown) admits an input with `selector`.
pub fn admits(selector: Option<&BTreeMap<String, String>>, labels: Option<&BTreeMap<String, String>>) -> bool {
    match (selector, labels) {
        (None, _) => true,
        (Some(selector), _) if selector.is_empty() => true,
        (Some(_), None) => false,
        (Some(selector), Some(labels)) => selector.iter().all(|(name, value)| labels.get(name) == Some(value)),
    }
}

/// The last known labels of this collector's node, kept current by a task.
#[derive(Clone, Default)]
pub struct NodeLabels {
    current: Arc<RwLock<Option<BTreeMap<String, String>>>>,
}

impl NodeLabels {
    /// Reads the labels of `node` once, then every `refresh` until `shutdown`, notifying
    /// `changed` whenever they change. Without a node name nothing is read.
    pub async fn start(
        client: Client,
        node: Option<String>,
        refresh: Duration,
        changed: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Self {
        let labels = Self::default();
        let Some(node) = node else {
            tracing::warn!("NODE_NAME is not set: inputs with a placement.nodeSelector will not run here");
            return labels;
        };
        let nodes: Api<Node> = Api::all(client);
        let mut last_error = None;
        labels.refresh(&nodes, &node, &mut last_error).await;
        let task_labels = labels.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(refresh) => {}
                }
                if task_labels.refresh(&nodes, &node, &mut last_error).await {
                    changed.notify_one();
                }
            }
        });
        labels
    }

    /// Reads the node; true when its labels changed. A failed read keeps the last labels and is
    /// logged once per distinct error.
    async fn refresh(&self, nodes: &Api<Node>, node: &str, last_error: &mut Option<String>) -> bool {
        match nodes.get(node).await {
            Ok(object) => {
                *last_error = None;
                let labels = object.labels().clone();
                let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if current.as_ref() == Some(&labels) {
                    return false;
                }
                tracing::info!(%node, ?labels, "node labels read");
                *current = Some(labels);
                true
            }
            Err(error) => {
                let message = error.to_string();
                if last_error.as_deref() != Some(&message) {
                    tracing::warn!(%node, "reading this collector's Node failed, keeping its last labels: {message}");
                    *last_error = Some(message);
                }
                false
            }
        }
    }

    /// Whether this node admits `input`.
    pub fn admits(&self, input: &MetricInput) -> bool {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        admits(input.spec.placement.node_selector.as_ref(), current.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_selector_label_must_match_exactly() {
        let node = map(&[("kubernetes.io/os", "linux"), ("pool", "gpu")]);
        assert!(admits(None, Some(&node)));
        assert!(admits(Some(&map(&[])), None));
        assert!(admits(Some(&map(&[("pool", "gpu")])), Some(&node)));
        assert!(admits(Some(&map(&[("pool", "gpu"), ("kubernetes.io/os", "linux")])), Some(&node)));
        assert!(!admits(Some(&map(&[("pool", "cpu")])), Some(&node)));
        assert!(!admits(Some(&map(&[("pool", "gpu"), ("zone", "a")])), Some(&node)));
        assert!(!admits(Some(&map(&[("pool", "")])), Some(&map(&[]))), "an empty value still needs the label");
    }

    #[test]
    fn unknown_labels_fail_closed_for_selectors_only() {
        assert!(admits(None, None));
        assert!(!admits(Some(&map(&[("pool", "gpu")])), None));
    }
}
