//! The running side of Kubernetes discovery: one reflector per role, namespace and kind, whose
//! events poke the discovery task, and the current targets read from their stores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use metricshard_crds::KubernetesRole;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{InputScope, KubeTarget, WatchPlan, endpointslice, node, pod, service};

/// The current watch error of each watch that has one, by what it watches.
type WatchErrors = Arc<Mutex<BTreeMap<String, String>>>;

/// Kubernetes discovery of one input: its watches, which stop when this is dropped.
pub struct KubernetesDiscovery {
    watches: Vec<RoleWatch>,
    errors: WatchErrors,
    _stop: DropGuard,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery").field("watches", &self.watches.len()).finish()
    }
}

/// The stores of one `kubernetesSD` entry.
enum RoleWatch {
    Pod(Vec<Store<Pod>>),
    Service(Vec<Store<Service>>),
    EndpointSlice {
        slices: Vec<Store<EndpointSlice>>,
        services: Vec<Store<Service>>,
        pods: Vec<Store<Pod>>,
        only_node: Option<String>,
    },
    Node(Store<Node>),
}

impl KubernetesDiscovery {
    /// Starts the watches of `plans`; every event (and every watch error) sends on `changed`.
    /// Fails only when no client can be had (local mode without a kubeconfig).
    pub async fn start(plans: &[WatchPlan], scope: &InputScope, changed: UnboundedSender<()>) -> Result<Self, String> {
        let client = scope.client().await?;
        let stop = CancellationToken::new();
        let errors = WatchErrors::default();
        let watcher = Watcher { client, changed, errors: errors.clone(), stop: stop.clone() };
        let watches = plans.iter().map(|plan| watcher.role(plan)).collect();
        Ok(Self { watches, errors, _stop: stop.drop_guard() })
    }

    /// Every target the watched objects yield now.
    pub fn targets(&self) -> Vec<KubeTarget> {
        let mut targets = Vec::new();
        for watch in &self.watches {
            match watch {
                RoleWatch::Pod(stores) => targets.extend(objects(stores).iter().flat_map(|p| pod::targets(p))),
                RoleWatch::Service(stores) => targets.extend(objects(stores).iter().flat_map(|s| service::targets(s))),
                RoleWatch::Node(store) => targets.extend(sorted(store.state()).iter().flat_map(|n| node::targets(n))),
                RoleWatch::EndpointSlice { slices, services, pods, only_node } => {
                    for slice in objects(slices) {
                        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
                        let service = slice
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|labels| labels.get(endpointslice::SERVICE_NAME_LABEL))
                            .and_then(|name| find(services, &ObjectRef::new(name).within(&namespace)));
                        let pod_of = |reference: &k8s_openapi::api::core::v1::ObjectReference| {
                            let name = reference.name.as_deref()?;
                            let within = reference.namespace.as_deref().unwrap_or(&namespace);
                            find(pods, &ObjectRef::new(name).within(within))
                        };
                        targets.extend(endpointslice::targets(&slice, service.as_deref(), pod_of, only_node.as_deref()));
                    }
                }
            }
        }
        targets
    }

    /// The current watch errors (an apiserver that cannot be reached, a forbidden list).
    pub fn problems(&self) -> Vec<String> {
        let errors = self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        errors.iter().map(|(what, error)| format!("{what}: {error}")).collect()
    }
}

/// Objects of several stores, in a stable order (namespace, name) so that the target list, and
/// with it the published target set, changes only when the objects do.
fn objects<K: kube::Resource + Clone + 'static>(stores: &[Store<K>]) -> Vec<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    sorted(stores.iter().flat_map(Store::state).collect())
}

fn sorted<K: kube::Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by(|a, b| (a.meta().namespace.as_deref(), a.meta().name.as_deref()).cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref())));
    objects
}

fn find<K: kube::Resource + Clone + 'static>(stores: &[Store<K>], reference: &ObjectRef<K>) -> Option<Arc<K>>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    stores.iter().find_map(|store| store.get(reference))
}

/// Starts reflectors that report to one discovery task.
struct Watcher {
    client: kube::Client,
    changed: UnboundedSender<()>,
    errors: WatchErrors,
    stop: CancellationToken,
}

impl Watcher {
    fn role(&self, plan: &WatchPlan) -> RoleWatch {
        let selected = || {
            let mut config = watcher::Config::default();
            if let Some(labels) = &plan.label_selector {
                config = config.labels(labels);
            }
            if let Some(fields) = &plan.field_selector {
                config = config.fields(fields);
            }
            config
        };
        match plan.role {
            KubernetesRole::Pod => RoleWatch::Pod(self.each_namespace(plan, "pods", &selected)),
            KubernetesRole::Service => RoleWatch::Service(self.each_namespace(plan, "services", &selected)),
            KubernetesRole::EndpointSlice => RoleWatch::EndpointSlice {
                slices: self.each_namespace(plan, "endpointslices", &selected),
                // Services and pods only add labels; the selectors are the slices'.
                services: self.each_namespace(plan, "services", &watcher::Config::default),
                pods: self.each_namespace(plan, "pods", &watcher::Config::default),
                only_node: plan.endpoint_node.clone(),
            },
            KubernetesRole::Node => {
                RoleWatch::Node(self.watch(Api::all(self.client.clone()), selected(), format!("kubernetesSD[{}] nodes", plan.index)))
            }
        }
    }

    /// One reflector of `K` per namespace of `plan`.
    fn each_namespace<K>(&self, plan: &WatchPlan, kind: &str, config: &dyn Fn() -> watcher::Config) -> Vec<Store<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        plan.namespaces
            .iter()
            .map(|namespace| {
                let what = format!("kubernetesSD[{}] {kind} in namespace {namespace}", plan.index);
                self.watch(Api::namespaced(self.client.clone(), namespace), config(), what)
            })
            .collect()
    }

    /// A reflector whose every event pokes the discovery task: unlike `touched_objects`, a
    /// relist that ends with fewer objects (or none) is seen too.
    fn watch<K>(&self, api: Api<K>, config: watcher::Config, what: String) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let (changed, errors, stop) = (self.changed.clone(), self.errors.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    () = stop.cancelled() => return,
                    event = stream.next() => event,
                };
                let mut current = errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    Some(Ok(_)) => {
                        current.remove(&what);
                    }
                    Some(Err(error)) => {
                        tracing::warn!("{what}: watch failed, retrying: {error}");
                        current.insert(what.clone(), error.to_string());
                    }
                    None => return,
                }
                drop(current);
                if changed.send(()).is_err() {
                    return;
                }
            }
        });
        reader
    }
}
