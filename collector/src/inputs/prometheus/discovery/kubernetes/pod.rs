//! The `pod` role: a target per declared container port (init containers included), or one per
//! container without ports at the bare pod IP; nothing for a pod without an IP yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

use super::{KubeTarget, add_object_meta, join_host_port, meta};

/// The targets of one pod.
pub fn targets(pod: &Pod) -> Vec<KubeTarget> {
    let Some(pod_ip) = pod_ip(pod) else {
        return Vec::new();
    };
    let mut group = pod_labels(pod);
    group.insert(meta("namespace"), pod.metadata.namespace.clone().unwrap_or_default());
    let mut targets = Vec::new();
    for (container, is_init) in containers(pod) {
        let container_id = container_id(pod, &container.name, is_init);
        let mut labels = group.clone();
        labels.insert(meta("pod_container_name"), container.name.clone());
        labels.insert(meta("pod_container_id"), container_id);
        labels.insert(meta("pod_container_image"), container.image.clone().unwrap_or_default());
        labels.insert(meta("pod_container_init"), is_init.to_string());
        let ports = container.ports.as_deref().unwrap_or_default();
        if ports.is_empty() {
            // No port: the address is the bare pod IP; relabeling has to add one.
            targets.push(KubeTarget { address: pod_ip.to_owned(), labels });
            continue;
        }
        for port in ports {
            let mut labels = labels.clone();
            labels.insert(meta("pod_container_port_name"), port.name.clone().unwrap_or_default());
            labels.insert(meta("pod_container_port_number"), port.container_port.to_string());
            labels.insert(meta("pod_container_port_protocol"), port.protocol.clone().unwrap_or_default());
            targets.push(KubeTarget { address: join_host_port(pod_ip, port.container_port), labels });
        }
    }
    targets
}

/// The pod's IP, if it has one.
pub fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|status| status.pod_ip.as_deref()).filter(|ip| !ip.is_empty())
}

/// The containers, then the init containers, each with whether it is an init container.
pub fn containers(pod: &Pod) -> impl Iterator<Item = (&Container, bool)> {
    let spec = pod.spec.as_ref();
    let regular = spec.map(|spec| spec.containers.as_slice()).unwrap_or_default().iter().map(|c| (c, false));
    let init = spec.and_then(|spec| spec.init_containers.as_deref()).unwrap_or_default().iter().map(|c| (c, true));
    regular.chain(init)
}

fn container_id(pod: &Pod, name: &str, is_init: bool) -> String {
    let statuses: &[ContainerStatus] = pod
        .status
        .as_ref()
        .and_then(|status| if is_init { status.init_container_statuses.as_deref() } else { status.container_statuses.as_deref() })
        .unwrap_or_default();
    statuses.iter().find(|status| status.name == name).and_then(|status| status.container_id.clone()).unwrap_or_default()
}

/// The labels of a pod shared by all its targets (also attached to EndpointSlice targets that
/// point at the pod): IP, readiness, phase, node, host IP, UID, controller, name, labels and
/// annotations. Without `__meta_kubernetes_namespace`, which the caller sets.
pub fn pod_labels(pod: &Pod) -> BTreeMap<String, String> {
    let status = pod.status.as_ref();
    let field = |get: fn(&k8s_openapi::api::core::v1::PodStatus) -> Option<&String>| {
        status.and_then(get).cloned().unwrap_or_default()
    };
    let mut labels = BTreeMap::from([
        (meta("pod_ip"), field(|s| s.pod_ip.as_ref())),
        (meta("pod_ready"), ready(pod)),
        (meta("pod_phase"), field(|s| s.phase.as_ref())),
        (meta("pod_node_name"), pod.spec.as_ref().and_then(|spec| spec.node_name.clone()).unwrap_or_default()),
        (meta("pod_host_ip"), field(|s| s.host_ip.as_ref())),
        (meta("pod_uid"), pod.metadata.uid.clone().unwrap_or_default()),
    ]);
    add_object_meta(&mut labels, "pod", &pod.metadata);
    let controller = pod.metadata.owner_references.iter().flatten().find(|owner| owner.controller == Some(true));
    if let Some(controller) = controller {
        if !controller.kind.is_empty() {
            labels.insert(meta("pod_controller_kind"), controller.kind.clone());
        }
        if !controller.name.is_empty() {
            labels.insert(meta("pod_controller_name"), controller.name.clone());
        }
    }
    labels
}

/// The `Ready` condition's status in lower case; `unknown` without one.
fn ready(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|condition| condition.type_ == "Ready")
        .map_or_else(|| "unknown".to_owned(), |condition| condition.status.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn web() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u-1",
                "labels": {"app.kubernetes.io/name": "web"},
                "annotations": {"prometheus.io/scrape": "true"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "o"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d", "uid": "r", "controller": true}
                ]
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [
                    {"name": "app", "image": "web:1", "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"containerPort": 9090, "protocol": "UDP"}
                    ]},
                    {"name": "sidecar", "image": "side:2"}
                ],
                "initContainers": [{"name": "init", "image": "init:3", "ports": [{"containerPort": 7000, "protocol": "TCP"}]}]
            },
            "status": {
                "podIP": "10.1.2.3", "hostIP": "192.168.0.7", "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "app", "containerID": "containerd://abc", "image": "web:1", "imageID": "", "ready": false, "restartCount": 0}]
            }
        }))
    }

    #[test]
    fn a_target_per_container_port_and_per_container_without_ports() {
        let targets = targets(&web());
        let addresses: Vec<&str> = targets.iter().map(|t| t.address.as_str()).collect();
        assert_eq!(addresses, ["10.1.2.3:8080", "10.1.2.3:9090", "10.1.2.3", "10.1.2.3:7000"]);

        let shared = [
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_pod_name", "web-1"),
            ("__meta_kubernetes_pod_ip", "10.1.2.3"),
            ("__meta_kubernetes_pod_ready", "false"),
            ("__meta_kubernetes_pod_phase", "Running"),
            ("__meta_kubernetes_pod_node_name", "node-a"),
            ("__meta_kubernetes_pod_host_ip", "192.168.0.7"),
            ("__meta_kubernetes_pod_uid", "u-1"),
            ("__meta_kubernetes_pod_label_app_kubernetes_io_name", "web"),
            ("__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name", "true"),
            ("__meta_kubernetes_pod_annotation_prometheus_io_scrape", "true"),
            ("__meta_kubernetes_pod_annotationpresent_prometheus_io_scrape", "true"),
            ("__meta_kubernetes_pod_controller_kind", "ReplicaSet"),
            ("__meta_kubernetes_pod_controller_name", "web-7d"),
        ];
        let expect = |own: &[(&str, &str)]| -> BTreeMap<String, String> {
            shared.iter().chain(own).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        assert_eq!(
            targets[0].labels,
            expect(&[
                ("__meta_kubernetes_pod_container_name", "app"),
                ("__meta_kubernetes_pod_container_id", "containerd://abc"),
                ("__meta_kubernetes_pod_container_image", "web:1"),
                ("__meta_kubernetes_pod_container_init", "false"),
                ("__meta_kubernetes_pod_container_port_name", "http"),
                ("__meta_kubernetes_pod_container_port_number", "8080"),
                ("__meta_kubernetes_pod_container_port_protocol", "TCP"),
            ])
        );
        assert_eq!(targets[1].labels["__meta_kubernetes_pod_container_port_name"], "");
        assert_eq!(targets[1].labels["__meta_kubernetes_pod_container_port_protocol"], "UDP");
        assert_eq!(
            targets[2].labels,
            expect(&[
                ("__meta_kubernetes_pod_container_name", "sidecar"),
                ("__meta_kubernetes_pod_container_id", ""),
                ("__meta_kubernetes_pod_container_image", "side:2"),
                ("__meta_kubernetes_pod_container_init", "false"),
            ])
        );
        assert_eq!(targets[3].labels["__meta_kubernetes_pod_container_init"], "true");
        assert_eq!(targets[3].labels["__meta_kubernetes_pod_container_name"], "init");
    }

    #[test]
    fn a_pod_without_ip_has_no_targets_and_missing_readiness_is_unknown() {
        let mut pending = web();
        if let Some(status) = pending.status.as_mut() {
            status.pod_ip = None;
        }
        assert!(targets(&pending).is_empty());

        let bare = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": "fd00::5"}
        }));
        let targets = targets(&bare);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].address, "fd00::5");
        assert_eq!(targets[0].labels["__meta_kubernetes_pod_ready"], "unknown");
        assert!(!targets[0].labels.contains_key("__meta_kubernetes_pod_controller_kind"));
        let with_port = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"podIP": "fd00::5"}
        }));
        assert_eq!(super::targets(&with_port)[0].address, "[fd00::5]:80");
    }
}
