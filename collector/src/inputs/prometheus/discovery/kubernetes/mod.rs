//! Kubernetes service discovery, as Prometheus' `kubernetes_sd_configs`: pods, services,
//! EndpointSlices and nodes are watched (selectors applied by the apiserver) and mapped to
//! targets with exactly Prometheus' `__meta_kubernetes_*` labels.
//!
//! Layers: the role modules ([`pod`], [`service`], [`endpointslice`], [`node`]) are pure
//! functions from typed objects to targets; [`plan`] checks an input's configuration against the
//! tenancy rules without a client; [`watch`] runs the reflectors and reads their stores.

pub mod endpointslice;
pub mod node;
pub mod pod;
pub mod service;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use metricshard_crds::{KubernetesRole, KubernetesSd, PlacementMode};

/// Prefix of every label Kubernetes discovery attaches.
pub const META_PREFIX: &str = "__meta_kubernetes_";

/// The value of every `*present_*` label.
const PRESENT: &str = "true";

/// One discovered target: its address and every label it starts relabeling with (the labels of
/// its object and those of the port or endpoint it stands for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTarget {
    /// `host:port`, or a bare host for a container without ports (as Prometheus does).
    pub address: String,
    /// `__meta_kubernetes_*` labels (and `instance` for nodes).
    pub labels: BTreeMap<String, String>,
}

/// Why an input's Kubernetes discovery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubernetesSdError {
    /// The input names a namespace other than its own and may not.
    #[error(
        "kubernetesSD[{index}].namespaces: {namespace:?} is not the input's namespace {own:?}; only inputs in the collectors' namespace{} may discover in other namespaces",
        .privileged.as_ref().map(|ns| format!(" {ns:?}")).unwrap_or_default()
    )]
    ForeignNamespace {
        /// Position of the entry.
        index: usize,
        /// The namespace asked for.
        namespace: String,
        /// The input's namespace.
        own: String,
        /// The namespace whose inputs may discover anywhere.
        privileged: Option<String>,
    },
    /// The input asks for the cluster-scoped node role and may not.
    #[error(
        "kubernetesSD[{index}].role: role node is cluster-scoped; only inputs in the collectors' namespace{} may use it",
        .privileged.as_ref().map(|ns| format!(" {ns:?}")).unwrap_or_default()
    )]
    NodeRoleForbidden {
        /// Position of the entry.
        index: usize,
        /// The namespace whose inputs may use it.
        privileged: Option<String>,
    },
    /// `EveryNode` placement without knowing this collector's node.
    #[error("spec.placement.mode: EveryNode with kubernetesSD needs the collector's node name (--node-name / NODE_NAME)")]
    NoNodeName,
    /// The service role under `EveryNode` placement: services belong to no node.
    #[error("kubernetesSD[{index}].role: services belong to no node, so with placement EveryNode every collector would scrape every service; use placement Sharded")]
    ServiceOnEveryNode {
        /// Position of the entry.
        index: usize,
    },
}

/// Where the collector gets its Kubernetes client from and what it knows about itself; shared by
/// every input of the collector.
#[derive(Clone)]
pub struct KubernetesContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    client: ClientSource,
    node_name: Option<String>,
    /// Cluster mode: the collectors' own namespace, whose inputs may discover anywhere.
    /// `None` in local mode, where no tenancy limit applies.
    privileged_namespace: Option<String>,
}

enum ClientSource {
    /// Cluster mode: the collector's own client (in-cluster or `KUBECONFIG`).
    Cluster(kube::Client),
    /// Local mode: built from the default kubeconfig the first time an input needs it.
    Kubeconfig(tokio::sync::OnceCell<Result<kube::Client, String>>),
}

impl std::fmt::Debug for KubernetesContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesContext")
            .field("cluster", &matches!(self.inner.client, ClientSource::Cluster(_)))
            .field("node_name", &self.inner.node_name)
            .field("privileged_namespace", &self.inner.privileged_namespace)
            .finish()
    }
}

impl Default for KubernetesContext {
    fn default() -> Self {
        Self::local(None)
    }
}

impl KubernetesContext {
    /// Cluster mode: discovery uses `client`; inputs in `collector_namespace` may discover in any
    /// namespace and use the node role, others only in their own namespace. `node_name` is the
    /// collector's node, which `EveryNode` inputs limit their discovery to.
    pub fn cluster(client: kube::Client, collector_namespace: String, node_name: Option<String>) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                client: ClientSource::Cluster(client),
                node_name,
                privileged_namespace: Some(collector_namespace),
            }),
        }
    }

    /// Local mode: discovery uses the default kubeconfig (`KUBECONFIG` or `~/.kube/config`),
    /// built once when the first input needs it; no namespace limit applies. With `node_name`,
    /// `EveryNode` inputs limit their discovery to that node as in a cluster.
    pub fn local(node_name: Option<String>) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                client: ClientSource::Kubeconfig(tokio::sync::OnceCell::new()),
                node_name,
                privileged_namespace: None,
            }),
        }
    }

    /// The scope of one input: its namespace and placement.
    pub fn scope(&self, input_namespace: &str, placement: PlacementMode) -> InputScope {
        InputScope { context: self.clone(), namespace: input_namespace.to_owned(), every_node: placement == PlacementMode::EveryNode }
    }

    async fn client(&self) -> Result<kube::Client, String> {
        match &self.inner.client {
            ClientSource::Cluster(client) => Ok(client.clone()),
            ClientSource::Kubeconfig(cell) => cell
                .get_or_init(|| async {
                    kube::Client::try_default().await.map_err(|e| format!("no Kubernetes client from the default kubeconfig: {e}"))
                })
                .await
                .clone(),
        }
    }
}

/// One input's view of the Kubernetes context.
#[derive(Debug, Clone)]
pub struct InputScope {
    context: KubernetesContext,
    namespace: String,
    every_node: bool,
}

impl InputScope {
    /// The Kubernetes client discovery watches with.
    pub async fn client(&self) -> Result<kube::Client, String> {
        self.context.client().await
    }
}

/// What one `kubernetesSD` entry watches, after the tenancy and placement rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPlan {
    /// Position of the entry, for messages.
    pub index: usize,
    /// The role.
    pub role: KubernetesRole,
    /// Namespaces watched (empty for the node role, which is cluster-scoped).
    pub namespaces: Vec<String>,
    /// Label selector for the role's objects.
    pub label_selector: Option<String>,
    /// Field selector for the role's objects, including the node restriction of `EveryNode`.
    pub field_selector: Option<String>,
    /// `EveryNode`: only endpoints on this node (EndpointSlices cannot be selected by node on
    /// the server, so this filter is applied to each endpoint).
    pub endpoint_node: Option<String>,
}

/// Checks an input's `kubernetesSD` entries against the tenancy and placement rules and decides
/// what each watches. Pure: no client needed.
pub fn plan(configs: &[KubernetesSd], scope: &InputScope) -> Result<Vec<WatchPlan>, KubernetesSdError> {
    let privileged = scope.context.inner.privileged_namespace.clone();
    let unrestricted = privileged.as_ref().is_none_or(|ns| *ns == scope.namespace);
    let node = if scope.every_node {
        match (&scope.context.inner.node_name, &privileged) {
            (Some(node), _) => Some(node.clone()),
            // Cluster mode must know its node; a local collector without one runs everything.
            (None, Some(_)) => return Err(KubernetesSdError::NoNodeName),
            (None, None) => None,
        }
    } else {
        None
    };
    configs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            let namespaces = if config.role == KubernetesRole::Node {
                if !unrestricted {
                    return Err(KubernetesSdError::NodeRoleForbidden { index, privileged: privileged.clone() });
                }
                Vec::new()
            } else if config.namespaces.is_empty() {
                vec![scope.namespace.clone()]
            } else {
                let mut namespaces = config.namespaces.clone();
                namespaces.sort();
                namespaces.dedup();
                if let Some(foreign) = namespaces.iter().find(|ns| !unrestricted && **ns != scope.namespace) {
                    return Err(KubernetesSdError::ForeignNamespace {
                        index,
                        namespace: foreign.clone(),
                        own: scope.namespace.clone(),
                        privileged: privileged.clone(),
                    });
                }
                namespaces
            };
            let node_field = match (config.role, &node) {
                (_, None) => None,
                (KubernetesRole::Pod, Some(node)) => Some(format!("spec.nodeName={node}")),
                (KubernetesRole::Node, Some(node)) => Some(format!("metadata.name={node}")),
                (KubernetesRole::Service, Some(_)) => return Err(KubernetesSdError::ServiceOnEveryNode { index }),
                (KubernetesRole::EndpointSlice, Some(_)) => None,
            };
            let field_selector = match (config.field_selector.as_deref().filter(|s| !s.trim().is_empty()), node_field) {
                (Some(user), Some(node)) => Some(format!("{user},{node}")),
                (user, node) => node.or(user.map(str::to_owned)),
            };
            Ok(WatchPlan {
                index,
                role: config.role,
                namespaces,
                label_selector: config.label_selector.clone().filter(|s| !s.trim().is_empty()),
                field_selector,
                endpoint_node: node.clone().filter(|_| config.role == KubernetesRole::EndpointSlice),
            })
        })
        .collect()
}

/// A label name as Prometheus sanitizes one: every character outside `[a-zA-Z0-9_]` becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// `host:port`, with brackets around an IPv6 host (Go's `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Sets `__meta_kubernetes_<role>_name` and the object's labels and annotations with their
/// `*present_*` companions, as Prometheus does for every role.
fn add_object_meta(labels: &mut BTreeMap<String, String>, role: &str, meta: &ObjectMeta) {
    labels.insert(format!("{META_PREFIX}{role}_name"), meta.name.clone().unwrap_or_default());
    for (name, value) in meta.labels.iter().flatten() {
        let name = sanitize_label_name(name);
        labels.insert(format!("{META_PREFIX}{role}_label_{name}"), value.clone());
        labels.insert(format!("{META_PREFIX}{role}_labelpresent_{name}"), PRESENT.to_owned());
    }
    for (name, value) in meta.annotations.iter().flatten() {
        let name = sanitize_label_name(name);
        labels.insert(format!("{META_PREFIX}{role}_annotation_{name}"), value.clone());
        labels.insert(format!("{META_PREFIX}{role}_annotationpresent_{name}"), PRESENT.to_owned());
    }
}

/// `__meta_kubernetes_<suffix>`.
fn meta(suffix: &str) -> String {
    format!("{META_PREFIX}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd(role: KubernetesRole, namespaces: &[&str]) -> KubernetesSd {
        KubernetesSd {
            role,
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            label_selector: Some("app=web".into()),
            field_selector: None,
        }
    }

    /// A cluster context without a reachable apiserver: `plan` never uses the client.
    fn cluster(node: Option<&str>) -> KubernetesContext {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = kube::Client::try_from(config).unwrap();
        KubernetesContext::cluster(client, "metricshard".into(), node.map(str::to_owned))
    }

    #[tokio::test]
    async fn a_namespaced_input_discovers_only_in_its_own_namespace() {
        let context = cluster(None);
        let scope = context.scope("team-a", PlacementMode::Sharded);
        let plans = plan(&[sd(KubernetesRole::Pod, &[])], &scope).unwrap();
        assert_eq!(plans[0].namespaces, ["team-a"]);
        assert_eq!(plans[0].label_selector.as_deref(), Some("app=web"));
        assert_eq!(plan(&[sd(KubernetesRole::Service, &["team-a"])], &scope).unwrap()[0].namespaces, ["team-a"]);

        let error = plan(&[sd(KubernetesRole::Pod, &[]), sd(KubernetesRole::Pod, &["team-a", "team-b"])], &scope).unwrap_err();
        assert_eq!(
            error.to_string(),
            "kubernetesSD[1].namespaces: \"team-b\" is not the input's namespace \"team-a\"; only inputs in the collectors' namespace \"metricshard\" may discover in other namespaces"
        );
        let error = plan(&[sd(KubernetesRole::Node, &[])], &scope).unwrap_err();
        assert!(error.to_string().starts_with("kubernetesSD[0].role: role node is cluster-scoped"), "{error}");

        // The collectors' own namespace may do both.
        let scope = context.scope("metricshard", PlacementMode::Sharded);
        let plans = plan(&[sd(KubernetesRole::EndpointSlice, &["b", "a", "b"]), sd(KubernetesRole::Node, &[])], &scope).unwrap();
        assert_eq!(plans[0].namespaces, ["a", "b"]);
        assert!(plans[1].namespaces.is_empty());
    }

    #[tokio::test]
    async fn every_node_placement_limits_discovery_to_the_collectors_node() {
        let context = cluster(Some("node-1"));
        let scope = context.scope("metricshard", PlacementMode::EveryNode);
        let mut pods = sd(KubernetesRole::Pod, &[]);
        pods.field_selector = Some("status.phase=Running".into());
        let plans =
            plan(&[pods, sd(KubernetesRole::Node, &[]), sd(KubernetesRole::EndpointSlice, &[]), sd(KubernetesRole::Pod, &[])], &scope)
                .unwrap();
        assert_eq!(plans[0].field_selector.as_deref(), Some("status.phase=Running,spec.nodeName=node-1"));
        assert_eq!(plans[1].field_selector.as_deref(), Some("metadata.name=node-1"));
        assert_eq!((plans[2].field_selector.as_deref(), plans[2].endpoint_node.as_deref()), (None, Some("node-1")));
        assert_eq!(plans[3].field_selector.as_deref(), Some("spec.nodeName=node-1"));
        assert_eq!(plan(&[sd(KubernetesRole::Service, &[])], &scope).unwrap_err(), KubernetesSdError::ServiceOnEveryNode { index: 0 });

        // Sharded inputs of the same collector see the whole namespace.
        let sharded = context.scope("metricshard", PlacementMode::Sharded);
        assert_eq!(plan(&[sd(KubernetesRole::Pod, &[])], &sharded).unwrap()[0].field_selector, None);
        // A cluster collector that does not know its node refuses EveryNode discovery.
        let unknown = cluster(None).scope("metricshard", PlacementMode::EveryNode);
        assert_eq!(plan(&[sd(KubernetesRole::Pod, &[])], &unknown).unwrap_err(), KubernetesSdError::NoNodeName);
    }

    #[test]
    fn local_mode_has_no_tenancy_limit() {
        let scope = KubernetesContext::local(None).scope("default", PlacementMode::EveryNode);
        let plans = plan(&[sd(KubernetesRole::Pod, &["x", "y"]), sd(KubernetesRole::Node, &[])], &scope).unwrap();
        assert_eq!(plans[0].namespaces, ["x", "y"]);
        assert_eq!(plans[0].field_selector, None, "no node name: nothing to limit to");
        let scope = KubernetesContext::local(Some("n".into())).scope("default", PlacementMode::EveryNode);
        assert_eq!(plan(&[sd(KubernetesRole::Pod, &[])], &scope).unwrap()[0].field_selector.as_deref(), Some("spec.nodeName=n"));
    }

    #[test]
    fn names_are_sanitized_and_ipv6_hosts_bracketed() {
        assert_eq!(sanitize_label_name("app.kubernetes.io/name"), "app_kubernetes_io_name");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
    }
}
