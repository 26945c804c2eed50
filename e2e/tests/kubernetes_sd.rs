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

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Api;
use metricshard_e2e::release::{self, file_output, metric_inputs, metric_outputs};
use metricshard_e2e::{ChartPodProcess, ChartRelease, Outcome, ScrapeTarget, TestCluster, TestNamespace, wait_for};
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
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), pod).await.unwrap();
    let status = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "podIPs": [{ "ip": "127.0.0.1" }],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_appearing_and_disappearing_start_and_stop_scrape_loops() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    // No operator: the test labels its inputs for collector pod 0 itself.
    let release = ChartRelease::install(cluster, &admin, "k8ssd", &["collector.replicas=1", "operator.enabled=false"])
        .await
        .unwrap();
    let namespace = release.name().to_owned();
    let collector_pod = release.collector_pod(0).await.unwrap();
    let collector = ChartPodProcess::start(cluster, &admin, &collector_pod).await.unwrap();
    let target = ScrapeTarget::start().await.unwrap();
    let port = target.address().port();
    let work = tempfile::tempdir().unwrap();
    metric_outputs(&admin, &namespace)
        .create(&PostParams::default(), &file_output("file", &work.path().join("samples.prom")).unwrap())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), &namespace);
    let selected = [("e2e-sd", "target"), ("scrape", "yes")];

    // A pod that exists before the input, and one outside the label selector.
    run_pod(&pods, &pod("alpha", &selected, port)).await;
    run_pod(&pods, &pod("outsider", &[("scrape", "yes")], port)).await;
    metric_inputs(&admin, &namespace)
        .create(&PostParams::default(), &input("pods", collector.pod_name(), &[]))
        .await
        .unwrap();
    wait_scraped(&target, "/pod/alpha", 0, 2).await;

    // A pod that appears starts its loop; alpha's loop runs on untouched meanwhile.
    let beta_created = Instant::now();
    run_pod(&pods, &pod("beta", &selected, port)).await;
    wait_scraped(&target, "/pod/beta", 0, 1).await;
    let discovered_after = target.requests("/pod/beta")[0] - beta_created;
    wait_scraped(&target, "/pod/beta", 0, 3).await;

    // A label change that relabeling drops stops beta's loop.
    pods.patch(
        "beta",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "labels": { "scrape": "no" } } })),
    )
    .await
    .unwrap();
    let beta_last = wait_stopped(&target, "/pod/beta").await.unwrap();

    // A deleted pod's loop stops.
    let alpha_before_delete = target.count("/pod/alpha");
    pods.delete("alpha", &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await.unwrap();
    let alpha_last = wait_stopped(&target, "/pod/alpha").await.unwrap();

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
    wait_scraped(&target, "/pod/gamma", 0, 2).await;

    // Tenancy: an input of another namespace may not discover in the release namespace.
    let team = TestNamespace::new(&admin, "k8ssd-team").await.unwrap();
    metric_outputs(&admin, team.name())
        .create(&PostParams::default(), &file_output("file", &work.path().join("team.prom")).unwrap())
        .await
        .unwrap();
    let inputs = metric_inputs(&admin, team.name());
    inputs.create(&PostParams::default(), &input("foreign", collector.pod_name(), &[&namespace])).await.unwrap();
    let error = wait_for("the foreign input's refusal in its status", TIMEOUT, || async {
        let input = inputs.get("foreign").await?;
        let error = input.data["status"]["lastError"].as_str().unwrap_or_default().to_owned();
        anyhow::Ok(Outcome::ready_if(error.contains("kubernetesSD[0].namespaces"), error))
    })
    .await
    .unwrap();
    assert!(error.contains("is not the input's namespace"), "{error}");
    assert_eq!(release::condition_status(&inputs.get("foreign").await.unwrap(), "Ready").as_deref(), Some("False"));

    collector.ensure_running().unwrap();
    drop(collector);
    team.delete().await.unwrap();
    release.uninstall().await.unwrap();
}
