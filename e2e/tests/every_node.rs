//! Every-node placement end to end: the chart's DaemonSet on two Node objects (no kubelet: a
//! process stands in for each DaemonSet pod, with the pod's ServiceAccount token, so the chart's
//! RBAC applies, and `NODE_NAME` of its node), an `EveryNode` host-metrics input whose
//! `placement.nodeSelector` matches one node only:
//! - only that node's collector runs it, and its samples carry `instance="<that node>"`;
//! - relabelling the other node starts it there too (within the chart's `nodeLabelRefresh`);
//! - each collector reports its own `status.nodes[]` entry, and removes it when the input stops
//!   there (the first node relabelled away);
//! - a `Sharded` input is ignored by both.
//!
//! The operator is disabled: the test writes the `metricshard.io/placement=EveryNode` label the
//! operator would write (the operator's plan tests cover that it does), so that no operator
//! of a concurrent test fights over inputs. The nodes are tainted with a taint only this
//! test's DaemonSet tolerates, so DaemonSets of concurrent tests put no pods on them.
//!
//! Needs `target/debug/metricshard-collector`. Local control plane only (it creates Nodes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use metricshard_e2e::release::{self, ChartPodProcess, ChartRelease};
use metricshard_e2e::{Outcome, TestCluster, create_node, node_of, wait_for};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const TAINT_KEY: &str = "every-node.e2e.metricshard.io/test";

/// Node labels: `pool=<value>` under a key unique to this run.
async fn set_pool(admin: &Client, node: &str, key: &str, value: Option<&str>) {
    Api::<Node>::all(admin.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(json!({ "metadata": { "labels": { key: value } } })))
        .await
        .unwrap();
}

async fn taint(admin: &Client, node: &str, value: &str) {
    Api::<Node>::all(admin.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "taints": [{ "key": TAINT_KEY, "value": value, "effect": "NoSchedule" }] } })),
        )
        .await
        .unwrap();
}

fn host_input(name: &str, placement: Value, label: (&str, &str)) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": name, "labels": { (label.0): label.1 } },
        "spec": {
            "interval": "200ms",
            "source": { "host": { "collectors": ["loadavg", "meminfo"] } },
            "outputs": [{ "name": "file" }],
            "placement": placement,
        },
    }))
    .unwrap()
}

/// The `instance` labels of `node_load1` lines in the file output.
fn instances(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("node_load1{"))
        .filter_map(|line| line.split("instance=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

async fn tasks(collector: &ChartPodProcess) -> Option<f64> {
    collector.sample("metricshard_tasks", &[]).await.unwrap()
}

async fn task_starts(collector: &ChartPodProcess, input: &str) -> Option<f64> {
    collector.sample("metricshard_input_task_starts_total", &[("input", input)]).await.unwrap()
}

/// The nodes with an entry in the input's `status.nodes`.
async fn status_nodes(inputs: &Api<DynamicObject>, name: &str) -> BTreeSet<String> {
    let input = inputs.get(name).await.unwrap();
    input.data["status"]["nodes"]
        .as_array()
        .map(|entries| entries.iter().filter_map(|entry| entry["node"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_inputs_follow_node_selectors() {
    let cluster = TestCluster::shared().await.unwrap();
    if !cluster.is_local() {
        eprintln!("every_node: needs the local control plane (it registers Node objects); not run against $KUBECONFIG");
        return;
    }
    let admin = cluster.client().await.unwrap();
    let toleration = format!("daemonset.tolerations[0].key={TAINT_KEY}");
    let release = ChartRelease::install(
        cluster,
        &admin,
        "everynode",
        &[
            "daemonset.enabled=true",
            "collector.enabled=false",
            "operator.enabled=false",
            "daemonset.nodeLabelRefresh=500ms",
            &toleration,
            "daemonset.tolerations[0].operator=Exists",
            "daemonset.tolerations[0].effect=NoSchedule",
        ],
    )
    .await
    .unwrap();
    let ns = release.namespace().name().to_owned();
    let pool_key = format!("pool.e2e.metricshard.io/{ns}");
    let (node_a, node_b) = (format!("{ns}-a"), format!("{ns}-b"));
    for node in [&node_a, &node_b] {
        create_node(&admin, node).await.unwrap();
        taint(&admin, node, &ns).await;
    }
    set_pool(&admin, &node_a, &pool_key, Some("selected")).await;
    set_pool(&admin, &node_b, &pool_key, Some("other")).await;

    // The DaemonSet controller creates one pod per node; processes stand in for them.
    let pods = release.namespace().api::<Pod>();
    let ours = BTreeSet::from([node_a.clone(), node_b.clone()]);
    let node_pods = wait_for("a node collector pod on each node", TIMEOUT, || async {
        let list = pods.list(&ListParams::default().labels("app.kubernetes.io/component=node-collector")).await?;
        let found: Vec<Pod> = list.items.into_iter().filter(|pod| node_of(pod).is_some_and(|n| ours.contains(&n))).collect();
        let nodes: BTreeSet<String> = found.iter().filter_map(node_of).collect();
        anyhow::Ok(Outcome::ready_if(nodes == ours, found))
    })
    .await
    .unwrap();
    let pod_on = |node: &str| node_pods.iter().find(|pod| node_of(pod).as_deref() == Some(node)).unwrap().clone();
    let collector_a = ChartPodProcess::start(cluster, &admin, &pod_on(&node_a)).await.unwrap();
    let collector_b = ChartPodProcess::start(cluster, &admin, &pod_on(&node_b)).await.unwrap();

    let work = tempfile::tempdir().unwrap();
    let samples = work.path().join("samples.prom");
    release::metric_outputs(&admin, &ns).create(&PostParams::default(), &release::file_output("file", &samples).unwrap()).await.unwrap();
    let inputs = release::metric_inputs(&admin, &ns);
    let selected = host_input(
        "host-selected",
        json!({ "mode": "EveryNode", "nodeSelector": { (pool_key.clone()): "selected" } }),
        ("metricshard.io/placement", "EveryNode"),
    );
    inputs.create(&PostParams::default(), &selected).await.unwrap();
    // Sharded, assigned to a collector pod that does not exist: no node collector selects it.
    let sharded = host_input("host-sharded", json!({ "mode": "Sharded" }), ("metricshard.io/collector", "some-statefulset-pod-0"));
    inputs.create(&PostParams::default(), &sharded).await.unwrap();
    let key = format!("{ns}/host-selected");

    // Only node a's collector runs it.
    wait_for("host-selected on node a only", TIMEOUT, || async {
        let seen = instances(&samples);
        Outcome::ready_if(seen.contains(&node_a), seen)
    })
    .await
    .unwrap();
    wait_for("node a's status entry", TIMEOUT, || async {
        let nodes = status_nodes(&inputs, "host-selected").await;
        Outcome::ready_if(nodes == BTreeSet::from([node_a.clone()]), nodes)
    })
    .await
    .unwrap();
    assert_eq!(tasks(&collector_a).await, Some(1.0), "node a runs exactly the selected input");
    assert_eq!(tasks(&collector_b).await, Some(0.0), "node b runs nothing");
    assert_eq!(task_starts(&collector_b, &key).await, None);
    assert_eq!(instances(&samples), BTreeSet::from([node_a.clone()]));
    let entry = inputs.get("host-selected").await.unwrap().data["status"]["nodes"][0].clone();
    assert_eq!(entry["ready"], "True", "{entry}");
    assert!(entry["lastGatherSamples"].as_i64().unwrap() > 3, "{entry}");

    // Relabel node b: it starts there too.
    set_pool(&admin, &node_b, &pool_key, Some("selected")).await;
    wait_for("host-selected on node b too", TIMEOUT, || async {
        let seen = instances(&samples);
        Outcome::ready_if(seen.contains(&node_b), seen)
    })
    .await
    .unwrap();
    assert_eq!(tasks(&collector_b).await, Some(1.0));
    assert_eq!(task_starts(&collector_a, &key).await, Some(1.0), "node a's task was not restarted");
    wait_for("both status entries", TIMEOUT, || async {
        let nodes = status_nodes(&inputs, "host-selected").await;
        Outcome::ready_if(nodes == ours, nodes)
    })
    .await
    .unwrap();

    // Node a loses the label: its task stops and its entry goes; node b's stays.
    set_pool(&admin, &node_a, &pool_key, None).await;
    wait_for("host-selected stopped on node a", TIMEOUT, || async { Outcome::ready_if(tasks(&collector_a).await == Some(0.0), ()) })
        .await
        .unwrap();
    wait_for("only node b's status entry", TIMEOUT, || async {
        let nodes = status_nodes(&inputs, "host-selected").await;
        Outcome::ready_if(nodes == BTreeSet::from([node_b.clone()]), nodes)
    })
    .await
    .unwrap();

    // The sharded input never ran on either.
    let sharded_key = format!("{ns}/host-sharded");
    assert_eq!(task_starts(&collector_a, &sharded_key).await, None);
    assert_eq!(task_starts(&collector_b, &sharded_key).await, None);

    drop((collector_a, collector_b));
    let nodes: Api<Node> = Api::all(admin.clone());
    for node in [&node_a, &node_b] {
        nodes.delete(node, &DeleteParams::default()).await.unwrap();
    }
    release.uninstall().await.unwrap();
}
