//! Output status (issue 5 item 4) in cluster mode: a collector from the chart (its
//! ServiceAccount token, so the chart's RBAC applies) writes its own entry of a MetricOutput's
//! `status.collectors`: the backend node reachable with `written > 0` while a real
//! VictoriaMetrics runs, then unreachable with the reason once it is stopped, and reachable again
//! after it comes back. On SIGTERM the collector removes its entry. The chart's operator
//! summarises the entries into the output's `Ready` condition: `True`/`Reachable`, then
//! `False`/`Unreachable` naming the collector and the address, `True` again, `False`/`Refused`
//! with the collector's reason while the output names a Secret that does not exist, `True` once
//! it does, and
//! `Unknown`/`NoCollector` once no collector reports; the entry a SIGKILLed collector leaves is
//! removed by the operator once its Lease expired and the retention passed.
//!
//! Needs the built collector and operator (`cargo build --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
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

/// Waits until the `vm` output's `Ready` condition has `status` and the output's generation;
/// returns the condition.
async fn wait_ready(outputs: &Api<DynamicObject>, status: &str, what: &str) -> Value {
    wait_for(what, TIMEOUT, || async {
        let output = outputs.get("vm").await?;
        let generation = output.metadata.generation;
        let condition = output.data["status"]["conditions"]
            .as_array()
            .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or(Value::Null);
        let done = condition["status"] == status && condition["observedGeneration"].as_i64() == generation;
        anyhow::Ok(if done { Outcome::Ready(condition) } else { Outcome::NotYet(condition.to_string()) })
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_reports_each_backend_node_in_the_output_status() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let release = ChartRelease::install(
        cluster,
        &admin,
        "ostatus",
        &["operator.replicas=1", "collector.replicas=1", "operator.extraArgs[0]=--output-entry-retention-seconds=1"],
    )
    .await
    .unwrap();
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
    // The operator summarises the collectors' entries into the output's Ready condition.
    let operator = ChartPodProcess::start(cluster, &admin, &release.operator_pods(1).await.unwrap().remove(0)).await.unwrap();

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

    let ready = wait_ready(&outputs, "True", "the output Ready once its node is reachable").await;
    assert_eq!(ready["reason"], "Reachable", "{ready}");

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
    let not_ready = wait_ready(&outputs, "False", "the output not Ready, naming the collector and address").await;
    assert_eq!(not_ready["reason"], "Unreachable", "{not_ready}");
    let message = not_ready["message"].as_str().unwrap_or_default();
    assert!(message.contains(&collector_name) && message.contains(address.as_str()), "{message}");

    backend.process().restart().unwrap();
    wait_for("the node reachable again", Duration::from_secs(120), || async {
        collector.ensure_running()?;
        let nodes = nodes_of(&outputs, "vm", &collector_name).await.unwrap_or_default();
        anyhow::Ok(Outcome::ready_if(nodes.len() == 1 && nodes[0]["reachable"] == true && nodes[0]["lastError"].is_null(), nodes))
    })
    .await
    .unwrap();

    wait_ready(&outputs, "True", "the output Ready again").await;

    // A generation the collector cannot run (its token Secret does not exist): the collector
    // says why in its entry and the condition carries it; creating the Secret brings it back.
    let token_ref = json!({ "authorization": { "credentials": { "name": "vm-token", "key": "token" } } });
    let patch = json!({ "spec": { "protocol": { "remoteWrite": token_ref } } });
    outputs.patch("vm", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let refused = wait_ready(&outputs, "False", "the output not Ready, with the collector's refusal").await;
    assert_eq!(refused["reason"], "Refused", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains(&collector_name) && message.contains(&format!("Secret {}/vm-token", team.name())), "{message}");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": "vm-token" },
        "stringData": { "token": "t0ken" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), team.name()).create(&PostParams::default(), &secret).await.unwrap();
    let ready = wait_ready(&outputs, "True", "the output Ready once its Secret exists").await;
    assert_eq!(ready["reason"], "Reachable", "{ready}");

    // A clean stop removes this collector's entry (its field manager owned only that).
    assert!(collector.terminate(Duration::from_secs(20)).unwrap().success());
    let entry = nodes_of(&outputs, "vm", &collector_name).await;
    assert_eq!(entry, None, "the entry of a collector that stopped should be gone");
    let unknown = wait_ready(&outputs, "Unknown", "the output's readiness unknown with no collector").await;
    assert_eq!(unknown["reason"], "NoCollector", "{unknown}");

    // A collector killed outright leaves its entry behind. It stops counting once its Lease
    // expires, and the operator removes it after the retention (1 s here, 10 min by default).
    let collector = ChartPodProcess::start(cluster, &admin, &pod).await.unwrap();
    wait_ready(&outputs, "True", "the output Ready with the collector back").await;
    collector.kill().unwrap();
    let killed = std::time::Instant::now();
    assert!(nodes_of(&outputs, "vm", &collector_name).await.is_some(), "a killed collector cannot remove its entry");
    wait_for("the killed collector's entry removed by the operator", Duration::from_secs(90), || async {
        let entry = nodes_of(&outputs, "vm", &collector_name).await;
        anyhow::Ok(Outcome::ready_if(entry.is_none(), entry))
    })
    .await
    .unwrap();
    eprintln!("the killed collector's entry was removed {:.1?} after the kill", killed.elapsed());
    operator.ensure_running().unwrap();
    drop(operator);
    release.uninstall().await.unwrap();
}
