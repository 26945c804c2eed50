//! Kubernetes service discovery for the Prometheus source, as Prometheus' `kubernetes_sd_configs`.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Targets discovered from the Kubernetes API, as one entry of Prometheus' `kubernetes_sd_configs`.
/// Objects are watched (label and field selectors are applied by the apiserver); a change reaches
/// the scrape within a fraction of a second. Every discovered target carries the
/// `__meta_kubernetes_*` labels Prometheus gives it, for `relabelConfigs` to keep, drop or copy.
///
/// Tenancy: an input discovers only in its own namespace, unless it lives in the namespace the
/// collectors run in (the platform's own namespace), which may name any namespace and use the
/// cluster-scoped `node` role. A collector running without a cluster (local mode) uses the
/// default kubeconfig and applies no such limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.role != 'node' || !has(self.namespaces) || size(self.namespaces) == 0").message("kubernetesSD.namespaces does not apply to role node (nodes are cluster-scoped)").field_path(".namespaces"))]
pub struct KubernetesSd {
    /// What becomes a target: `pod` (every declared container port, or the pod IP for a
    /// container without ports), `service` (every service port, addressed by the service's DNS
    /// name), `endpointslice` (every endpoint address and port of an EndpointSlice), or `node`
    /// (every node, at its kubelet port).
    pub role: KubernetesRole,
    /// Namespaces to discover in; the input's own namespace when empty. Ignored by role `node`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))").message("kubernetesSD.namespaces must be namespace names"))]
    pub namespaces: Vec<String>,
    /// A label selector (`app=web,tier!=cache`) the apiserver applies to the role's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub label_selector: Option<String>,
    /// A field selector (`status.phase=Running`) the apiserver applies to the role's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub field_selector: Option<String>,
}

/// The kind of object that becomes a target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KubernetesRole {
    /// Pods: a target per declared container port, or per container without ports.
    Pod,
    /// Services: a target per service port.
    Service,
    /// EndpointSlices (`discovery.k8s.io/v1`): a target per endpoint address and port.
    EndpointSlice,
    /// Nodes: a target per node at its kubelet port.
    Node,
}

impl KubernetesRole {
    /// The role as Prometheus spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "pod",
            Self::Service => "service",
            Self::EndpointSlice => "endpointslice",
            Self::Node => "node",
        }
    }
}
