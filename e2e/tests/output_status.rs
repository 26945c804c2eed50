//! Output status (issue 5 item 4) in cluster mode: a collector from the chart (its
//! ServiceAccount token, so the chart's RBAC applies) writes its own entry of a MetricOutput's
//! `status.collectors`: the backend node reachable with `written > 0` while a real
//! VictoriaMetrics runs, then unreachable with the reason once it is stopped, and reachable again
//! after it comes back. On SIGTERM the collector removes its entry.
//!
//! Needs `target/debug/metricshard-collector` (`cargo build -p metricshard-collector`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use metricshard_e2e::backends::VictoriaMetrics;
use metricshard_e2e::release::{ChartPodProcess, ChartRelease, ScrapeTarget};
use metricshard_e2e::{Outcome, TestCluster, TestNamespace, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn api(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("metricshard.io", "v1alpha1", kind), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The node entries this collector wrote into the output's status.
async fn nodes_of(outputs: &Api<DynamicObject>, output: &str, collector: &str) -> Option<Vec<Value>> {
    let object = outputs.get(output).await.ok()?;
    let collectors = object.data.get("status")?.get("collectors")?.as_array()?.clone();
    let entry = collectors.into_iter().find(|entry| entry["collector"] == collector)?;
    entry["nodes"].as_array().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reports_each_backend_node_in_the_output_status() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let release = ChartRelease::install(cluster, &admin, "ostatus", &["operator.enabled=false", "collector.replicas=1"]).await.unwrap();
    let team = TestNamespace::new(&admin, "ostatus-team").await.unwrap();
    let mut backend = VictoriaMetrics::start().await.unwrap();
    let target = ScrapeTarget::start().await.unwrap();

    let outputs = api(&admin, team.name(), "MetricOutput", "metricoutputs");
    let output: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricOutput",
        "metadata": { "name": "vm" },
        "spec": {
            "protocol": { "remoteWrite": { "url": backend.remote_write_url(), "timeout": "2s" } },
            "batch": { "maxSamples": 100, "flushInterval": "100ms" },
        },
    }))
    .unwrap();
    outputs.create(&PostParams::default(), &output).await.unwrap();
    let pod = release.collector_pod(0).await.unwrap();
    let collector_name = release.collector_pod_name(0);
    let input: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": "scraped", "labels": { "metricshard.io/collector": collector_name } },
        "spec": {
            "interval": "200ms",
            "timeout": "100ms",
            "source": { "prometheus": { "staticTargets": [target.address().to_string()], "metricsPath": "/metrics/scraped" } },
            "outputs": [{ "name": "vm" }],
        },
    }))
    .unwrap();
    api(&admin, team.name(), "MetricInput", "metricinputs").create(&PostParams::default(), &input).await.unwrap();
    let collector = ChartPodProcess::start(cluster, &admin, &pod).await.unwrap();

    let address = backend.remote_write_url();
    wait_for("the node reachable with samples written", TIMEOUT, || async {
        collector.ensure_running()?;
        let nodes = nodes_of(&outputs, "vm", &collector_name).await.unwrap_or_default();
        let ready = nodes.len() == 1
            && nodes[0]["name"] == "default"
            && nodes[0]["address"] == address.as_str()
            && nodes[0]["reachable"] == true
            && nodes[0]["written"].as_u64().unwrap_or(0) > 0
            && nodes[0]["lastWriteTime"].is_string();
        anyhow::Ok(Outcome::ready_if(ready, nodes))
    })
    .await
    .unwrap();

    backend.process().terminate(Duration::from_secs(10)).unwrap();
    let down = wait_for("the node unreachable with a reason", TIMEOUT, || async {
        collector.ensure_running()?;
        let nodes = nodes_of(&outputs, "vm", &collector_name).await.unwrap_or_default();
        let down = nodes.len() == 1
            && nodes[0]["reachable"] == false
            && nodes[0]["lastError"].as_str().is_some_and(|e| !e.is_empty())
            && nodes[0]["retried"].as_u64().unwrap_or(0) > 0;
        anyhow::Ok(Outcome::ready_if(down, nodes))
    })
    .await
    .unwrap();
    eprintln!("status while the backend is down: {down:?}");
    let reachable = collector.sample("metricshard_output_node_reachable", &[("address", address.as_str())]).await.unwrap();
    assert_eq!(reachable, Some(0.0));

    backend.process().restart().unwrap();
    wait_for("the node reachable again", Duration::from_secs(120), || async {
        collector.ensure_running()?;
        let nodes = nodes_of(&outputs, "vm", &collector_name).await.unwrap_or_default();
        anyhow::Ok(Outcome::ready_if(nodes.len() == 1 && nodes[0]["reachable"] == true && nodes[0]["lastError"].is_null(), nodes))
    })
    .await
    .unwrap();

    // A clean stop removes this collector's entry (its field manager owned only that).
    assert!(collector.terminate(Duration::from_secs(20)).unwrap().success());
    let entry = nodes_of(&outputs, "vm", &collector_name).await;
    assert_eq!(entry, None, "the entry of a collector that stopped should be gone");
    release.uninstall().await.unwrap();
}
