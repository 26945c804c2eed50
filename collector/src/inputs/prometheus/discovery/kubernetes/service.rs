//! The `service` role: a target per service port, addressed `<name>.<namespace>.svc:<port>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::{KubeTarget, add_object_meta, join_host_port, meta};

/// The targets of one service.
pub fn targets(service: &Service) -> Vec<KubeTarget> {
    let group = service_labels(service);
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let spec = service.spec.as_ref();
    let service_type = spec.and_then(|spec| spec.type_.clone()).unwrap_or_default();
    spec.and_then(|spec| spec.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|port| {
            let mut labels = group.clone();
            labels.insert(meta("service_port_name"), port.name.clone().unwrap_or_default());
            labels.insert(meta("service_port_number"), port.port.to_string());
            labels.insert(meta("service_port_protocol"), port.protocol.clone().unwrap_or_default());
            labels.insert(meta("service_type"), service_type.clone());
            if service_type == "ExternalName" {
                labels.insert(meta("service_external_name"), spec.and_then(|s| s.external_name.clone()).unwrap_or_default());
            } else {
                labels.insert(meta("service_cluster_ip"), spec.and_then(|s| s.cluster_ip.clone()).unwrap_or_default());
            }
            if service_type == "LoadBalancer" {
                labels.insert(meta("service_loadbalancer_ip"), load_balancer_ips(service));
            }
            KubeTarget { address: join_host_port(&format!("{name}.{namespace}.svc"), port.port), labels }
        })
        .collect()
}

/// The labels of a service shared by its targets (and attached to its EndpointSlices' targets):
/// namespace, name, labels and annotations.
pub fn service_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(meta("namespace"), service.metadata.namespace.clone().unwrap_or_default())]);
    add_object_meta(&mut labels, "service", &service.metadata);
    labels
}

/// The ingress IPs of the load balancer joined with `,`, else `spec.loadBalancerIP`.
fn load_balancer_ips(service: &Service) -> String {
    let ips: Vec<&str> = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|ingress| ingress.ip.as_deref())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        service.spec.as_ref().and_then(|spec| spec.load_balancer_ip.clone()).unwrap_or_default()
    } else {
        ips.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_target_per_port_at_the_service_dns_name() {
        let svc = service(serde_json::json!({
            "metadata": {"name": "api", "namespace": "shop", "labels": {"tier": "front"}, "annotations": {"a/b": "c"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"port": 9100, "protocol": "TCP"}
            ]}
        }));
        let targets = targets(&svc);
        assert_eq!(targets.iter().map(|t| t.address.as_str()).collect::<Vec<_>>(), ["api.shop.svc:80", "api.shop.svc:9100"]);
        let expected: BTreeMap<String, String> = [
            ("__meta_kubernetes_namespace", "shop"),
            ("__meta_kubernetes_service_name", "api"),
            ("__meta_kubernetes_service_label_tier", "front"),
            ("__meta_kubernetes_service_labelpresent_tier", "true"),
            ("__meta_kubernetes_service_annotation_a_b", "c"),
            ("__meta_kubernetes_service_annotationpresent_a_b", "true"),
            ("__meta_kubernetes_service_port_name", "http"),
            ("__meta_kubernetes_service_port_number", "80"),
            ("__meta_kubernetes_service_port_protocol", "TCP"),
            ("__meta_kubernetes_service_type", "ClusterIP"),
            ("__meta_kubernetes_service_cluster_ip", "10.96.0.10"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(targets[0].labels, expected);
        assert_eq!(targets[1].labels["__meta_kubernetes_service_port_name"], "");
    }

    #[test]
    fn external_name_and_load_balancer_services() {
        let external = service(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "n"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"port": 5432}]}
        }));
        let labels = &targets(&external)[0].labels;
        assert_eq!(labels["__meta_kubernetes_service_external_name"], "db.example.com");
        assert!(!labels.contains_key("__meta_kubernetes_service_cluster_ip"));

        let lb = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "n"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "loadBalancerIP": "1.1.1.1", "ports": [{"port": 443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}, {"hostname": "x"}, {"ip": "3.3.3.3"}]}}
        }));
        assert_eq!(targets(&lb)[0].labels["__meta_kubernetes_service_loadbalancer_ip"], "2.2.2.2,3.3.3.3");
        let pending = service(serde_json::json!({
            "metadata": {"name": "lb", "namespace": "n"},
            "spec": {"type": "LoadBalancer", "loadBalancerIP": "1.1.1.1", "ports": [{"port": 443}]}
        }));
        assert_eq!(targets(&pending)[0].labels["__meta_kubernetes_service_loadbalancer_ip"], "1.1.1.1");
        let no_ports = service(serde_json::json!({"metadata": {"name": "x", "namespace": "n"}, "spec": {}}));
        assert!(targets(&no_ports).is_empty());
    }
}
