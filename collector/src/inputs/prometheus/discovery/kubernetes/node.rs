//! The `node` role: a target per node at its kubelet port, addressed by the first address of
//! the first type present in Prometheus' order (InternalIP, InternalDNS, ExternalIP,
//! ExternalDNS, LegacyHostIP, Hostname); `instance` is the node name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use super::{KubeTarget, add_object_meta, join_host_port, meta, sanitize_label_name};

/// Address types in the order Prometheus picks the target address from.
const ADDRESS_PREFERENCE: [&str; 6] = ["InternalIP", "InternalDNS", "ExternalIP", "ExternalDNS", "LegacyHostIP", "Hostname"];

/// The target of one node; none when the node has no address.
pub fn targets(node: &Node) -> Vec<KubeTarget> {
    let status = node.status.as_ref();
    let addresses = status.and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    // The first address of each type, as Prometheus labels them.
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for address in addresses {
        first.entry(address.type_.as_str()).or_insert(address.address.as_str());
    }
    let Some(host) = ADDRESS_PREFERENCE.iter().find_map(|kind| first.get(kind)) else {
        return Vec::new();
    };
    let port = status.and_then(|s| s.daemon_endpoints.as_ref()).and_then(|d| d.kubelet_endpoint.as_ref()).map_or(0, |e| e.port);

    let mut labels = BTreeMap::from([(meta("node_provider_id"), node.spec.as_ref().and_then(|s| s.provider_id.clone()).unwrap_or_default())]);
    for condition in status.and_then(|s| s.conditions.as_deref()).unwrap_or_default() {
        labels.insert(
            format!("{}{}", meta("node_condition_"), sanitize_label_name(&condition.type_.to_lowercase())),
            condition.status.to_lowercase(),
        );
    }
    add_object_meta(&mut labels, "node", &node.metadata);
    labels.insert("instance".to_owned(), node.metadata.name.clone().unwrap_or_default());
    for (kind, address) in &first {
        labels.insert(sanitize_label_name(&format!("{}{kind}", meta("node_address_"))), (*address).to_owned());
    }
    vec![KubeTarget { address: join_host_port(host, port), labels }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_kubelet_endpoint_at_the_preferred_address() {
        let n = node(serde_json::json!({
            "metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"}},
            "spec": {"providerID": "aws:///i-1"},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "node-a"},
                    {"type": "ExternalIP", "address": "3.3.3.3"},
                    {"type": "InternalIP", "address": "10.0.0.5"},
                    {"type": "InternalIP", "address": "10.0.0.6"}
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]
            }
        }));
        let targets = targets(&n);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].address, "10.0.0.5:10250");
        let expected: BTreeMap<String, String> = [
            ("__meta_kubernetes_node_name", "node-a"),
            ("__meta_kubernetes_node_provider_id", "aws:///i-1"),
            ("__meta_kubernetes_node_label_kubernetes_io_os", "linux"),
            ("__meta_kubernetes_node_labelpresent_kubernetes_io_os", "true"),
            ("__meta_kubernetes_node_condition_ready", "true"),
            ("__meta_kubernetes_node_condition_memorypressure", "false"),
            ("__meta_kubernetes_node_address_Hostname", "node-a"),
            ("__meta_kubernetes_node_address_ExternalIP", "3.3.3.3"),
            ("__meta_kubernetes_node_address_InternalIP", "10.0.0.5"),
            ("instance", "node-a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(targets[0].labels, expected);
    }

    #[test]
    fn hostname_is_the_last_resort_and_no_address_means_no_target() {
        let n = node(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "Hostname", "address": "n.local"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
        }));
        assert_eq!(targets(&n)[0].address, "n.local:10250");
        assert!(targets(&node(serde_json::json!({"metadata": {"name": "n"}}))).is_empty());
    }
}
