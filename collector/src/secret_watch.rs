//! Cluster mode's view of Secrets: one watch per Secret that an input or output of this
//! collector references (a field selector on `metadata.name` in the Secret's namespace), started
//! when the first reference appears and stopped when the last one goes. The collector never
//! lists Secrets it has no use for, and an edit of one Secret wakes only its own watch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client};
use metricshard_crds::watch::reflect;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::runtime::DesiredState;
use crate::secrets::SecretStore;

/// How long an apply waits for the first listing of a newly referenced Secret; past it the
/// Secret counts as missing until its watch delivers it.
pub const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// `(namespace, name)` of a Secret.
pub type SecretId = (String, String);

/// Every Secret the desired state references: inputs' in their namespace, `MetricOutput`s' in
/// theirs, `ClusterMetricOutput`s' in `cluster_namespace`.
pub fn referenced_secrets(desired: &DesiredState, cluster_namespace: &str) -> BTreeSet<SecretId> {
    let inputs = desired.inputs.values().flat_map(|desired| {
        let namespace = desired.input.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        desired
            .input
            .spec
            .source
            .prometheus
            .iter()
            .flat_map(|source| source.secret_refs())
            .map(move |selector| (namespace.clone(), selector.name.clone()))
            .collect::<Vec<_>>()
    });
    let outputs = desired.outputs.iter().flat_map(|(id, output)| {
        let namespace = id.namespace.clone().unwrap_or_else(|| cluster_namespace.to_owned());
        output.settings.protocol.secret_refs().into_iter().map(move |selector| (namespace.clone(), selector.name.clone()))
    });
    inputs.chain(outputs).collect()
}

/// The running Secret watches.
pub struct SecretWatches {
    client: Client,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
    cluster_namespace: String,
    watches: BTreeMap<SecretId, (Store<Secret>, CancellationToken)>,
}

impl SecretWatches {
    /// No watches yet; events poke `changed`; `ClusterMetricOutput` references resolve in
    /// `cluster_namespace` (the collectors' own).
    pub fn new(client: Client, changed: Arc<Notify>, shutdown: CancellationToken, cluster_namespace: String) -> Self {
        Self { client, changed, shutdown, cluster_namespace, watches: BTreeMap::new() }
    }

    /// Watches exactly the Secrets `desired` references, waiting (at most
    /// [`FIRST_SYNC_TIMEOUT`]) for the first listing of new ones, and returns their data.
    pub async fn follow(&mut self, desired: &DesiredState) -> SecretStore {
        let wanted = referenced_secrets(desired, &self.cluster_namespace);
        self.watches.retain(|id, (_, stop)| {
            let keep = wanted.contains(id);
            if !keep {
                stop.cancel();
            }
            keep
        });
        let mut new = Vec::new();
        for (namespace, name) in wanted {
            if self.watches.contains_key(&(namespace.clone(), name.clone())) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let store = reflect(api, config, self.changed.clone(), stop.clone());
            new.push(store.clone());
            self.watches.insert((namespace, name), (store, stop));
        }
        if !new.is_empty() {
            let ready = futures::future::join_all(new.iter().map(Store::wait_until_ready));
            if tokio::time::timeout(FIRST_SYNC_TIMEOUT, ready).await.is_err() {
                tracing::warn!("some referenced Secrets could not be listed yet (is reading Secrets allowed?); they count as missing");
            }
        }
        self.store()
    }

    fn store(&self) -> SecretStore {
        let mut secrets = SecretStore::new(self.cluster_namespace.clone());
        for ((namespace, name), (store, _)) in &self.watches {
            for secret in store.state() {
                let mut data: BTreeMap<String, Vec<u8>> =
                    secret.data.clone().unwrap_or_default().into_iter().map(|(key, value)| (key, value.0)).collect();
                // Only set on objects that were never stored; merged as the apiserver would.
                for (key, value) in secret.string_data.clone().unwrap_or_default() {
                    data.insert(key, value.into_bytes());
                }
                secrets.insert(namespace.clone(), name.clone(), data);
            }
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TaskKey;
    use crate::routing::OutputId;
    use crate::runtime::{DesiredInput, DesiredOutput};
    use metricshard_crds::{MetricInput, OutputKind};

    #[test]
    fn references_resolve_in_the_referencing_objects_namespace() {
        let input: MetricInput = serde_yaml::from_str(
            "apiVersion: metricshard.io/v1alpha1\nkind: MetricInput\nmetadata: {name: web, namespace: team-a}\nspec:\n  source:\n    prometheus:\n      staticTargets: ['a:1']\n      basicAuth: {username: {name: scrape, key: user}, password: {name: scrape, key: pass}}\n      tlsConfig: {ca: {secret: {name: ca, key: ca.crt}}}\n  outputs: [{name: out}]\n",
        )
        .unwrap();
        let protocol: metricshard_crds::OutputProtocol = serde_yaml::from_str(
            "remoteWrite: {url: 'http://x/api/v1/write', authorization: {credentials: {name: token, key: t}}}",
        )
        .unwrap();
        let mut desired = DesiredState::default();
        desired.inputs.insert(TaskKey::new("team-a", "web"), DesiredInput { generation: 1, input, window: crate::engine::TickWindow::ALL });
        let settings = crate::runtime::OwnedOutputSettings {
            protocol,
            batch: Default::default(),
            buffer: Default::default(),
        };
        let output = |namespace: Option<&str>| {
            (
                OutputId {
                    kind: if namespace.is_some() { OutputKind::MetricOutput } else { OutputKind::ClusterMetricOutput },
                    namespace: namespace.map(str::to_owned),
                    name: "out".into(),
                },
                DesiredOutput { generation: 1, settings: settings.clone(), namespace_selector: None },
            )
        };
        desired.outputs.extend([output(Some("team-b")), output(None)]);
        let expected: BTreeSet<SecretId> = [("metricshard", "token"), ("team-a", "ca"), ("team-a", "scrape"), ("team-b", "token")]
            .into_iter()
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
            .collect();
        assert_eq!(referenced_secrets(&desired, "metricshard"), expected);
    }
}
