//! The `endpointslice` role: a target per endpoint address and port of an EndpointSlice, with
//! the labels of its service (found by the `kubernetes.io/service-name` label) and of the pod an
//! endpoint points at; plus, as Prometheus does, a target for every other declared container
//! port of such a pod.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};

use super::{KubeTarget, add_object_meta, join_host_port, meta, pod, sanitize_label_name, service};

/// The label that names an EndpointSlice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The targets of one EndpointSlice. `service` is the slice's service if known; `pod_of`
/// resolves an endpoint's `targetRef` to a pod. With `only_node`, endpoints on other nodes are
/// left out (`EveryNode` placement).
pub fn targets(
    slice: &EndpointSlice,
    service: Option<&Service>,
    pod_of: impl Fn(&ObjectReference) -> Option<Arc<Pod>>,
    only_node: Option<&str>,
) -> Vec<KubeTarget> {
    let mut group = BTreeMap::from([
        (meta("namespace"), slice.metadata.namespace.clone().unwrap_or_default()),
        (meta("endpointslice_address_type"), slice.address_type.clone()),
    ]);
    add_object_meta(&mut group, "endpointslice", &slice.metadata);
    if let Some(service) = service {
        group.extend(service::service_labels(service));
        if non_primary_ip_family(service, slice) {
            // A dual-stack service's secondary family would scrape every endpoint twice.
            return Vec::new();
        }
    }

    let mut targets = Vec::new();
    // Pods seen through endpoints, with the ports the slice already covers.
    let mut seen_pods: BTreeMap<(String, String), (Arc<Pod>, Vec<i32>)> = BTreeMap::new();
    let endpoints = slice.endpoints.iter().filter(|ep| only_node.is_none_or(|node| ep.node_name.as_deref() == Some(node)));
    for endpoint in endpoints {
        for port in slice.ports.as_deref().unwrap_or_default() {
            for address in &endpoint.addresses {
                let mut labels = group.clone();
                labels.extend(endpoint_labels(endpoint, port));
                let address = match port.port {
                    Some(number) => join_host_port(address, number),
                    None => address.clone(),
                };
                if let Some(pod) = endpoint.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(&pod_of) {
                    labels.extend(pod::pod_labels(&pod));
                    if let Some(number) = port.port {
                        add_matching_container(&mut labels, &pod, number);
                    }
                    let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
                    let entry = seen_pods.entry(key).or_insert_with(|| (pod.clone(), Vec::new()));
                    entry.1.extend(port.port);
                }
                targets.push(KubeTarget { address, labels });
            }
        }
    }
    for (pod, covered) in seen_pods.values() {
        let Some(ip) = pod::pod_ip(pod) else { continue };
        for (container, is_init) in pod::containers(pod) {
            for port in container.ports.as_deref().unwrap_or_default() {
                if covered.contains(&port.container_port) {
                    continue;
                }
                let mut labels = group.clone();
                labels.extend(pod::pod_labels(pod));
                labels.insert(meta("pod_container_name"), container.name.clone());
                labels.insert(meta("pod_container_image"), container.image.clone().unwrap_or_default());
                labels.insert(meta("pod_container_port_name"), port.name.clone().unwrap_or_default());
                labels.insert(meta("pod_container_port_number"), port.container_port.to_string());
                labels.insert(meta("pod_container_port_protocol"), port.protocol.clone().unwrap_or_default());
                labels.insert(meta("pod_container_init"), is_init.to_string());
                targets.push(KubeTarget { address: join_host_port(ip, port.container_port), labels });
            }
        }
    }
    targets
}

fn endpoint_labels(endpoint: &Endpoint, port: &EndpointPort) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut set = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            labels.insert(meta(name), value);
        }
    };
    set("endpointslice_port_name", port.name.clone());
    set("endpointslice_port_protocol", port.protocol.clone());
    set("endpointslice_port", port.port.map(|p| p.to_string()));
    set("endpointslice_port_app_protocol", port.app_protocol.clone());
    let conditions = endpoint.conditions.as_ref();
    set("endpointslice_endpoint_conditions_ready", conditions.and_then(|c| c.ready).map(|b| b.to_string()));
    set("endpointslice_endpoint_conditions_serving", conditions.and_then(|c| c.serving).map(|b| b.to_string()));
    set("endpointslice_endpoint_conditions_terminating", conditions.and_then(|c| c.terminating).map(|b| b.to_string()));
    set("endpointslice_endpoint_hostname", endpoint.hostname.clone());
    if let Some(target) = &endpoint.target_ref {
        set("endpointslice_address_target_kind", Some(target.kind.clone().unwrap_or_default()));
        set("endpointslice_address_target_name", Some(target.name.clone().unwrap_or_default()));
    }
    set("endpointslice_endpoint_node_name", endpoint.node_name.clone());
    set("endpointslice_endpoint_zone", endpoint.zone.clone());
    for (name, value) in endpoint.deprecated_topology.iter().flatten() {
        let name = sanitize_label_name(name);
        labels.insert(meta(&format!("endpointslice_endpoint_topology_{name}")), value.clone());
        labels.insert(meta(&format!("endpointslice_endpoint_topology_present_{name}")), "true".to_owned());
    }
    labels
}

/// The container port the endpoint's port lands on, as Prometheus labels it.
fn add_matching_container(labels: &mut BTreeMap<String, String>, pod: &Pod, number: i32) {
    for (container, is_init) in pod::containers(pod) {
        if let Some(port) = container.ports.as_deref().unwrap_or_default().iter().find(|p| p.container_port == number) {
            labels.insert(meta("pod_container_name"), container.name.clone());
            labels.insert(meta("pod_container_image"), container.image.clone().unwrap_or_default());
            labels.insert(meta("pod_container_port_name"), port.name.clone().unwrap_or_default());
            labels.insert(meta("pod_container_port_number"), number.to_string());
            labels.insert(meta("pod_container_port_protocol"), port.protocol.clone().unwrap_or_default());
            labels.insert(meta("pod_container_init"), is_init.to_string());
            return;
        }
    }
}

/// Whether the slice carries the secondary IP family of a dual-stack service.
fn non_primary_ip_family(service: &Service, slice: &EndpointSlice) -> bool {
    let Some(spec) = service.spec.as_ref() else { return false };
    let dual = matches!(spec.ip_family_policy.as_deref(), Some("PreferDualStack" | "RequireDualStack"));
    let primary = spec.ip_families.as_deref().and_then(<[String]>::first);
    dual && primary.is_some_and(|family| *family != slice.address_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> T {
        serde_json::from_value(json).unwrap()
    }

    fn slice() -> EndpointSlice {
        from(serde_json::json!({
            "metadata": {"name": "api-x1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                 "nodeName": "node-a", "zone": "z1", "hostname": "h1",
                 "targetRef": {"kind": "Pod", "name": "api-1", "namespace": "shop"}},
                {"addresses": ["10.0.0.2"], "nodeName": "node-b"}
            ]
        }))
    }

    fn api_pod() -> Arc<Pod> {
        Arc::new(from(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "shop", "uid": "u"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "api:1", "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9100, "protocol": "TCP"}
            ]}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running"}
        })))
    }

    fn service() -> Service {
        from(serde_json::json!({"metadata": {"name": "api", "namespace": "shop", "labels": {"team": "a"}}, "spec": {"ports": [{"port": 80}]}}))
    }

    #[test]
    fn endpoints_carry_slice_service_endpoint_and_pod_labels() {
        let pod = api_pod();
        let svc = service();
        let targets = targets(&slice(), Some(&svc), |r| (r.name.as_deref() == Some("api-1")).then(|| pod.clone()), None);
        let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(addresses, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.1:9100"]);
        let first = &targets[0].labels;
        for (name, value) in [
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_endpointslice_name", "api-x1"),
            ("__meta_kubernetes_endpointslice_address_type", "IPv4"),
            ("__meta_kubernetes_endpointslice_label_kubernetes_io_service_name", "api"),
            ("__meta_kubernetes_endpointslice_labelpresent_kubernetes_io_service_name", "true"),
            ("__meta_kubernetes_service_name", "api"),
            ("__meta_kubernetes_service_label_team", "a"),
            ("__meta_kubernetes_endpointslice_port_name", "http"),
            ("__meta_kubernetes_endpointslice_port", "8080"),
            ("__meta_kubernetes_endpointslice_port_protocol", "TCP"),
            ("__meta_kubernetes_endpointslice_port_app_protocol", "http"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_ready", "true"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_serving", "true"),
            ("__meta_kubernetes_endpointslice_endpoint_conditions_terminating", "false"),
            ("__meta_kubernetes_endpointslice_endpoint_hostname", "h1"),
            ("__meta_kubernetes_endpointslice_endpoint_node_name", "node-a"),
            ("__meta_kubernetes_endpointslice_endpoint_zone", "z1"),
            ("__meta_kubernetes_endpointslice_address_target_kind", "Pod"),
            ("__meta_kubernetes_endpointslice_address_target_name", "api-1"),
            ("__meta_kubernetes_pod_name", "api-1"),
            ("__meta_kubernetes_pod_container_name", "app"),
            ("__meta_kubernetes_pod_container_port_name", "http"),
            ("__meta_kubernetes_pod_container_port_number", "8080"),
        ] {
            assert_eq!(first.get(name).map(String::as_str), Some(value), "{name}");
        }
        // The second endpoint has no pod and no conditions: those labels are absent.
        let second = &targets[1].labels;
        assert!(!second.contains_key("__meta_kubernetes_pod_name"));
        assert!(!second.contains_key("__meta_kubernetes_endpointslice_endpoint_conditions_ready"));
        // The pod's other port is a target of its own, without endpoint labels.
        let extra = &targets[2].labels;
        assert_eq!(extra["__meta_kubernetes_pod_container_port_name"], "metrics");
        assert!(!extra.contains_key("__meta_kubernetes_endpointslice_port"));
        assert_eq!(extra["__meta_kubernetes_service_name"], "api");
    }

    #[test]
    fn every_node_keeps_only_endpoints_on_the_node_and_secondary_families_are_skipped() {
        let on_b = targets(&slice(), None, |_| None, Some("node-b"));
        assert_eq!(on_b.iter().map(|t| t.address.as_str()).collect::<Vec<_>>(), ["10.0.0.2:8080"]);
        assert!(!on_b[0].labels.contains_key("__meta_kubernetes_service_name"), "no service known");

        let dual: Service = from(serde_json::json!({
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv6", "IPv4"]}
        }));
        assert!(targets(&slice(), Some(&dual), |_| None, None).is_empty());
    }
}
