//! Kubernetes service discovery against the test bed's real apiserver, with the collector in
//! cluster mode standing in for the chart's collector pod 0 (its ServiceAccount token, so the
//! chart's RBAC for pods is what is exercised).
//!
//! There is no kubelet: the test creates Pods and writes their status (pod IP `127.0.0.1`,
//! phase, readiness) through the status subresource, with a container port equal to the port
//! of a loopback [`ScrapeTarget`]. Relabeling turns each pod's name into the metrics path, so
//! the target's request log tells which pod's scrape loop runs: a pod that appears starts its
//! loop, a pod deleted or relabelled away stops it, a pod outside the label selector is never
//! scraped, and a running loop keeps its cadence while other pods come and go. An input that
//! asks for another namespace is refused with the tenancy reason in its status.
//!
//! Needs `target/debug/metricshard-collector`. Runs against the local control plane, or
//! against `$KUBECONFIG`'s cluster when set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use metricshard_e2e::release::{self, file_output, metric_inputs, metric_outputs};
use metricshard_e2e::{ChartPodProcess, ChartRelease, E2E_LABEL, Outcome, ScrapeTarget, TestCluster, TestNamespace, wait_for};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The input's scrape interval.
const INTERVAL: Duration = Duration::from_secs(1);
/// A loop counts as stopped once its path saw no request for this long (three intervals).
const QUIET: Duration = Duration::from_secs(3);

/// A Pod labelled `labels` whose one container declares `port`.
fn pod(name: &str, labels: &[(&str, &str)], port: u16) -> Pod {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{
            "name": "app",
            "image": "metricshard-e2e.invalid/target",
            "ports": [{ "name": "metrics", "containerPort": port, "protocol": "TCP" }],
        }]},
    }))
    .unwrap()
}

/// Creates `pod` and writes the status a kubelet would once it runs: IP 127.0.0.1, Running,
/// Ready.
async fn run_pod(pods: &Api<Pod>, pod: &Pod) {
    run_pod_at(pods, pod, "127.0.0.1").await;
}

/// [`run_pod`] with the pod IP `ip`.
async fn run_pod_at(pods: &Api<Pod>, pod: &Pod, ip: &str) {
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), pod).await.unwrap();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{ "ip": ip }],
            "hostIP": "127.0.0.1",
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    });
    pods.patch_status(&name, &PatchParams::apply("metricshard-e2e-kubelet").force(), &Patch::Apply(status))
        .await
        .unwrap();
}

/// The MetricInput: pods labelled `e2e-sd=target`, kept only with `scrape=yes`, each scraped
/// at `/pod/<name>`, labelled `pod=<name>`.
fn input(name: &str, collector: &str, namespaces: &[&str]) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": name, "labels": { release::COLLECTOR_LABEL: collector } },
        "spec": {
            "interval": "1s",
            "source": { "prometheus": {
                "kubernetesSD": [{ "role": "pod", "labelSelector": "e2e-sd=target", "namespaces": namespaces }],
                "relabelConfigs": [
                    { "sourceLabels": ["__meta_kubernetes_pod_label_scrape"], "regex": "yes", "action": "keep" },
                    { "sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "__metrics_path__", "replacement": "/pod/$1" },
                    { "sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod" },
                ],
            }},
            "outputs": [{ "kind": "MetricOutput", "name": "file" }],
        },
    }))
    .unwrap()
}

/// Waits until `path` has been requested at least `count` times more than `before`.
async fn wait_scraped(target: &ScrapeTarget, path: &str, before: usize, count: usize) {
    wait_for(&format!("{count} more scrapes of {path}"), TIMEOUT, || async {
        let now = target.count(path);
        Outcome::ready_if(now >= before + count, now)
    })
    .await
    .unwrap();
}

/// Waits until `path` has seen no request for [`QUIET`]; returns when its last request came.
async fn wait_stopped(target: &ScrapeTarget, path: &str) -> Option<Instant> {
    wait_for(&format!("the loop of {path} to stop"), TIMEOUT, || async {
        let last = target.last(path);
        let quiet = last.is_none_or(|last| last.elapsed() >= QUIET);
        Outcome::ready_if(quiet, last.map(|l| l.elapsed()))
    })
    .await
    .unwrap();
    target.last(path)
}

/// What both tests run against: the chart installed with one collector and no operator (the
/// tests label their inputs for collector pod 0 themselves), that collector running, a loopback
/// scrape target, and a file output `file` in the release namespace.
struct DiscoveryBed {
    admin: kube::Client,
    release: ChartRelease,
    namespace: String,
    collector: ChartPodProcess,
    target: ScrapeTarget,
    work: tempfile::TempDir,
}

impl DiscoveryBed {
    async fn start(release_name: &str) -> Self {
        let cluster = TestCluster::shared().await.unwrap();
        let admin = cluster.client().await.unwrap();
        let release = ChartRelease::install(cluster, &admin, release_name, &["collector.replicas=1", "operator.enabled=false"])
            .await
            .unwrap();
        let namespace = release.name().to_owned();
        let collector = ChartPodProcess::start(cluster, &admin, &release.collector_pod(0).await.unwrap()).await.unwrap();
        let target = ScrapeTarget::start().await.unwrap();
        let work = tempfile::tempdir().unwrap();
        metric_outputs(&admin, &namespace)
            .create(&PostParams::default(), &file_output("file", &work.path().join("samples.prom")).unwrap())
            .await
            .unwrap();
        Self { admin, release, namespace, collector, target, work }
    }

    /// Checks the collector survived, stops it and uninstalls the release.
    async fn finish(self) {
        self.collector.ensure_running().unwrap();
        drop(self.collector);
        self.release.uninstall().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_appearing_and_disappearing_start_and_stop_scrape_loops() {
    let bed = DiscoveryBed::start("k8ssd").await;
    let DiscoveryBed { admin, namespace, collector, target, work, .. } = &bed;
    let port = target.address().port();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let selected = [("e2e-sd", "target"), ("scrape", "yes")];

    // A pod that exists before the input, and one outside the label selector.
    run_pod(&pods, &pod("alpha", &selected, port)).await;
    run_pod(&pods, &pod("outsider", &[("scrape", "yes")], port)).await;
    metric_inputs(admin, namespace)
        .create(&PostParams::default(), &input("pods", collector.pod_name(), &[]))
        .await
        .unwrap();
    wait_scraped(target, "/pod/alpha", 0, 2).await;

    // A pod that appears starts its loop; alpha's loop runs on untouched meanwhile.
    let beta_created = Instant::now();
    run_pod(&pods, &pod("beta", &selected, port)).await;
    wait_scraped(target, "/pod/beta", 0, 1).await;
    let discovered_after = target.requests("/pod/beta")[0] - beta_created;
    wait_scraped(target, "/pod/beta", 0, 3).await;

    // A label change that relabeling drops stops beta's loop.
    pods.patch(
        "beta",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "scrape": "no" } } })),
    )
    .await
    .unwrap();
    let beta_last = wait_stopped(target, "/pod/beta").await.unwrap();

    // A deleted pod's loop stops.
    let alpha_before_delete = target.count("/pod/alpha");
    pods.delete("alpha", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.unwrap();
    let alpha_last = wait_stopped(target, "/pod/alpha").await.unwrap();

    // Alpha was scraped at every tick while beta came and went: no gap longer than two
    // intervals between consecutive scrapes, up to its deletion.
    let alpha = target.requests("/pod/alpha");
    let gaps: Vec<Duration> = alpha.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(alpha.len() >= alpha_before_delete, "alpha scrapes {}", alpha.len());
    assert!(
        gaps.iter().all(|gap| *gap < INTERVAL * 2),
        "alpha's loop was disturbed while beta came and went: gaps {gaps:?}"
    );
    assert!(alpha_last > beta_last, "alpha kept running after beta stopped");
    assert_eq!(target.count("/pod/outsider"), 0, "a pod outside the selector was scraped");
    // The collector's scrape of beta began within a scrape interval of the pod's status being
    // written (discovery coalesces for 200 ms); not a timing assertion, a sanity bound.
    assert!(discovered_after < TIMEOUT, "beta scraped {discovered_after:?} after creation");

    // Discovery keeps working after loops stopped: a new pod starts one.
    run_pod(&pods, &pod("gamma", &selected, port)).await;
    wait_scraped(target, "/pod/gamma", 0, 2).await;

    // Tenancy: an input of another namespace may not discover in the release namespace.
    let team = TestNamespace::new(admin, "k8ssd-team").await.unwrap();
    metric_outputs(admin, team.name())
        .create(&PostParams::default(), &file_output("file", &work.path().join("team.prom")).unwrap())
        .await
        .unwrap();
    let inputs = metric_inputs(admin, team.name());
    inputs.create(&PostParams::default(), &input("foreign", collector.pod_name(), &[namespace])).await.unwrap();
    let error = wait_for("the foreign input's refusal in its status", TIMEOUT, || async {
        let input = inputs.get("foreign").await?;
        let error = input.data["status"]["lastError"].as_str().unwrap_or_default().to_owned();
        anyhow::Ok(Outcome::ready_if(error.contains("kubernetesSD[0].namespaces"), error))
    })
    .await
    .unwrap();
    assert!(error.contains("is not the input's namespace"), "{error}");
    assert_eq!(release::condition_status(&inputs.get("foreign").await.unwrap(), "Ready").as_deref(), Some("False"));

    team.delete().await.unwrap();
    bed.finish().await;
}

/// A MetricInput discovering the `role` objects that `selector` selects, each scraped at the
/// address discovery gives unless `address` replaces it, at `/<role>/<name>` where `<name>` is
/// the value of `name_label`.
fn role_input(name: &str, collector: &str, role: &str, selector: &str, name_label: &str, address: Option<String>) -> DynamicObject {
    let mut relabel = vec![
        json!({ "sourceLabels": [name_label], "targetLabel": "__metrics_path__", "replacement": format!("/{role}/$1") }),
        json!({ "sourceLabels": [name_label], "targetLabel": "object" }),
    ];
    if let Some(address) = address {
        relabel.push(json!({ "targetLabel": "__address__", "replacement": address }));
    }
    serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": name, "labels": { release::COLLECTOR_LABEL: collector } },
        "spec": {
            "interval": "1s",
            "source": { "prometheus": {
                "kubernetesSD": [{ "role": role, "labelSelector": selector }],
                "relabelConfigs": relabel,
            }},
            "outputs": [{ "kind": "MetricOutput", "name": "file" }],
        },
    }))
    .unwrap()
}

/// The `web` pods' IPs: TEST-NET-1 (RFC 5737), since EndpointSlices refuse loopback addresses.
const WEB_POD_IPS: [&str; 2] = ["192.0.2.10", "192.0.2.11"];

/// A pod of the `web` Service, scheduled to `node`.
fn pod_on(name: &str, node: &str, port: u16) -> Pod {
    let mut pod = pod(name, &[("app", "web")], port);
    pod.spec.as_mut().unwrap().node_name = Some(node.to_owned());
    pod
}

/// A Node with the status a kubelet reports: its InternalIP and its kubelet port.
fn kubelet_node(name: &str, role_label: &str, kubelet_port: u16) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "e2e-sd-role": role_label, E2E_LABEL: "true" } },
        "status": {
            "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }, { "type": "Hostname", "address": name }],
            "daemonEndpoints": { "kubeletEndpoint": { "Port": kubelet_port } },
            "conditions": [{ "type": "Ready", "status": "True" }],
        },
    }))
    .unwrap()
}

/// The service, endpointslice and node roles against the real apiserver and the real
/// kube-controller-manager: the EndpointSlices are the ones its EndpointSlice controller writes
/// for a Service's selected, ready pods; Nodes carry the kubelet's address and port. Objects
/// that appear start a loop, objects that go stop theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_endpointslices_and_nodes_start_and_stop_scrape_loops() {
    let bed = DiscoveryBed::start("k8sroles").await;
    let DiscoveryBed { admin, namespace, collector, target, .. } = &bed;
    let port = target.address().port();
    let role_label = namespace.clone();
    let inputs = metric_inputs(admin, namespace);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
    let services: Api<Service> = Api::namespaced(admin.clone(), namespace);
    let nodes: Api<Node> = Api::all(admin.clone());

    // One Node, as a kubelet registers it: the EndpointSlice controller skips pods whose node it
    // cannot find, and the node role discovers it.
    let node_name = format!("{namespace}-node");
    nodes.create(&PostParams::default(), &kubelet_node(&node_name, &role_label, port)).await.unwrap();
    let status = kubelet_node(&node_name, &role_label, port);
    nodes
        .patch_status(&node_name, &PatchParams::apply("metricshard-e2e-kubelet").force(), &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": { "name": node_name }, "status": status.status,
        })))
        .await
        .unwrap();

    // ----- endpointslice: the controller's slices for a Service over ready pods ----------------
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "web", "labels": { "e2e-sd-role": role_label } },
        "spec": {
            "selector": { "app": "web" },
            "ports": [{ "name": "metrics", "port": port, "targetPort": port, "protocol": "TCP" }],
        },
    }))
    .unwrap();
    services.create(&PostParams::default(), &service).await.unwrap();
    run_pod_at(&pods, &pod_on("web-1", &node_name, port), WEB_POD_IPS[0]).await;
    // Slices carry the Service's name as a label, not the Service's own labels: select them by
    // that, as a ServiceMonitor-style input would.
    // EndpointSlices refuse loopback addresses, so the pods have a TEST-NET address and
    // relabeling sends the scrape to the loopback target at the slice's port.
    let mut slices = role_input(
        "slices",
        collector.pod_name(),
        "endpointslice",
        "kubernetes.io/service-name=web",
        "__meta_kubernetes_endpointslice_address_target_name",
        None,
    );
    slices.data["spec"]["source"]["prometheus"]["relabelConfigs"].as_array_mut().unwrap().push(json!({
        "sourceLabels": ["__address__", "__meta_kubernetes_endpointslice_port"],
        "regex": "192\\.0\\.2\\.\\d+:\\d+;(\\d+)",
        "targetLabel": "__address__",
        "replacement": "127.0.0.1:$1",
    }));
    inputs.create(&PostParams::default(), &slices).await.unwrap();
    wait_scraped(target, "/endpointslice/web-1", 0, 2).await;
    run_pod_at(&pods, &pod_on("web-2", &node_name, port), WEB_POD_IPS[1]).await;
    wait_scraped(target, "/endpointslice/web-2", 0, 2).await;
    pods.delete("web-2", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.unwrap();
    let web_2_last = wait_stopped(target, "/endpointslice/web-2").await.unwrap();
    let web_1_before = target.count("/endpointslice/web-1");
    wait_scraped(target, "/endpointslice/web-1", web_1_before, 2).await;
    assert!(target.last("/endpointslice/web-1").unwrap() > web_2_last, "web-1's loop stopped with web-2's");

    // ----- service: a target per service port, addressed by its cluster DNS name ---------------
    // There is no cluster DNS on the test bed: relabeling points the target at the loopback
    // scrape target, as a user would point it at a blackbox exporter.
    let role_selector = format!("e2e-sd-role={role_label}");
    let services_input = role_input(
        "services",
        collector.pod_name(),
        "service",
        &role_selector,
        "__meta_kubernetes_service_name",
        Some(format!("127.0.0.1:{port}")),
    );
    inputs.create(&PostParams::default(), &services_input).await.unwrap();
    wait_scraped(target, "/service/web", 0, 2).await;
    services.delete("web", &DeleteParams::default()).await.unwrap();
    wait_stopped(target, "/service/web").await.unwrap();

    // ----- node: a target per Node at its InternalIP and kubelet port ---------------------------
    let nodes_input = role_input("nodes", collector.pod_name(), "node", &role_selector, "__meta_kubernetes_node_name", None);
    inputs.create(&PostParams::default(), &nodes_input).await.unwrap();
    let node_path = format!("/node/{node_name}");
    wait_scraped(target, &node_path, 0, 2).await;
    nodes.delete(&node_name, &DeleteParams::default()).await.unwrap();
    wait_stopped(target, &node_path).await.unwrap();

    bed.finish().await;
}
