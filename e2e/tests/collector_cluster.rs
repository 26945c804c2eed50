//! The collector's cluster mode against the API server, installed by the chart and running as
//! a stand-in for the chart's collector pod 0 with that pod's ServiceAccount token (so the
//! chart's RBAC applies): it runs exactly the inputs labelled for its pod, scrapes a target
//! served by the test and writes the samples to a file output; an input relabelled to another
//! pod stops within a second; a new generation restarts only that input's task; tenancy holds
//! (a ClusterMetricOutput that does not admit the namespace gets nothing, a MetricOutput of
//! another namespace is never used); its membership Lease is renewed while it lives, goes
//! stale after SIGKILL and is deleted on SIGTERM.
//!
//! Needs `target/debug/metricshard-collector` (`cargo build -p metricshard-collector`). Runs
//! against the local control plane, or against `$KUBECONFIG`'s cluster when set.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use metricshard_e2e::release;
use metricshard_e2e::{
    Outcome, PodStandIn, TestCluster, TestNamespace, free_port, wait_for, workspace_binary,
    workspace_root,
};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
/// What the collector's cluster module renews its Lease with (`LEASE_DURATION`).
const LEASE_DURATION_SECONDS: i32 = 15;

// ----- the chart ----------------------------------------------------------------------------

/// The chart installed into a fresh namespace, as a release named like the namespace (so the
/// collector pods of concurrent tests have different names and never share a shard).
struct Installation {
    cluster: &'static TestCluster,
    namespace: TestNamespace,
}

impl Installation {
    async fn new(cluster: &'static TestCluster, admin: &Client, prefix: &str) -> Self {
        release::ensure_crds(cluster).await.unwrap();
        let namespace = TestNamespace::new(admin, prefix).await.unwrap();
        release::helm(cluster)
            .unwrap()
            .args(["install", namespace.name()])
            .arg(workspace_root().join("charts/metricshard"))
            .args(["--namespace", namespace.name()])
            .args(["--set", "crds.install=false"])
            .args(["--set", "collector.replicas=2"])
            // The operator would relabel the inputs this test labels by hand.
            .args(["--set", "operator.enabled=false"])
            // On a cluster with kubelets, pods that can never pull their image never compete
            // with the stand-in process for the pod's identity.
            .args([
                "--set",
                "collector.image.repository=metricshard-e2e.invalid/collector",
            ])
            .run_ok()
            .await
            .unwrap();
        Self { cluster, namespace }
    }

    fn release(&self) -> &str {
        self.namespace.name()
    }

    fn collector_pod_name(&self, ordinal: usize) -> String {
        format!("{}-metricshard-collector-{ordinal}", self.release())
    }

    /// Collector pod `ordinal`, once the StatefulSet controller has created it.
    async fn collector_pod(&self, ordinal: usize) -> Pod {
        let pods = self.namespace.api::<Pod>();
        let name = self.collector_pod_name(ordinal);
        wait_for(&format!("pod {name}"), TIMEOUT, || async {
            pods.get_opt(&name).await
        })
        .await
        .unwrap()
    }

    /// Uninstalls (the namespace goes with the test; the cluster-scoped RBAC would not).
    async fn uninstall(self) {
        release::helm(self.cluster)
            .unwrap()
            .args([
                "uninstall",
                self.release(),
                "--namespace",
                self.namespace.name(),
            ])
            .run_ok()
            .await
            .unwrap();
    }
}

// ----- the collector ------------------------------------------------------------------------

/// `metricshard-collector --cluster` standing in for a collector pod of the chart.
struct Collector {
    /// In a mutex so that waits can check, through `&self`, that the process still runs.
    stand_in: Mutex<PodStandIn>,
    base_url: String,
    http: reqwest::Client,
}

impl Collector {
    /// Starts the collector for `pod` and waits until it is ready (first shard applied).
    async fn start(cluster: &TestCluster, admin: &Client, pod: &Pod) -> Self {
        let port = free_port().unwrap();
        let program = workspace_binary("metricshard-collector").unwrap();
        let stand_in = PodStandIn::start(
            cluster,
            admin,
            pod,
            "node-a",
            &program,
            ["--cluster", "--listen", &format!("127.0.0.1:{port}")],
        )
        .await
        .unwrap();
        let collector = Self {
            stand_in: Mutex::new(stand_in),
            base_url: format!("http://127.0.0.1:{port}"),
            http: metricshard_e2e::http_client(TIMEOUT).unwrap(),
        };
        collector.wait_ready().await;
        collector
    }

    async fn wait_ready(&self) {
        let url = format!("{}/readyz", self.base_url);
        wait_for("the collector's /readyz", TIMEOUT, || async {
            self.assert_running();
            let response = self.http.get(&url).send().await?;
            anyhow::Ok(response.status().is_success())
        })
        .await
        .unwrap();
    }

    /// Fails the test at once, with the collector's log, when the process has exited: waits
    /// call this so that a crashed collector does not look like a slow one.
    fn assert_running(&self) {
        self.stand_in
            .lock()
            .unwrap()
            .process()
            .ensure_running()
            .unwrap();
    }

    async fn metrics(&self) -> Option<String> {
        self.assert_running();
        let response = self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }

    /// The value of the sample `name{labels...}` (other labels ignored) on /metrics.
    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        release::sample_value(&self.metrics().await?, name, labels)
    }

    async fn task_starts(&self, input: &str) -> Option<f64> {
        self.metric("metricshard_input_task_starts_total", &[("input", input)])
            .await
    }

    fn process(&mut self) -> &mut metricshard_e2e::ManagedProcess {
        self.stand_in.get_mut().unwrap().process()
    }
}

// ----- objects ------------------------------------------------------------------------------

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metricshard.io", "v1alpha1", kind),
        plural,
    )
}

fn inputs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &resource("MetricInput", "metricinputs"),
    )
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// A MetricInput scraping `/metrics/<name>` of `target` every `interval`, labelled for
/// collector pod `collector`, sending to `outputs`.
async fn create_input(
    client: &Client,
    namespace: &str,
    name: &str,
    target: SocketAddr,
    collector: &str,
    outputs: Value,
) {
    let input = object(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": {
            "name": name,
            "labels": { "metricshard.io/collector": collector },
        },
        "spec": {
            "interval": "200ms",
            "timeout": "100ms",
            "source": { "prometheus": {
                "staticTargets": [target.to_string()],
                "metricsPath": format!("/metrics/{name}"),
            }},
            "outputs": outputs,
        },
    }));
    inputs(client, namespace)
        .create(&PostParams::default(), &input)
        .await
        .unwrap();
}

fn file_output_spec(path: &Path) -> Value {
    json!({
        "protocol": { "file": { "path": path } },
        "batch": { "maxSamples": 1000, "flushInterval": "50ms" },
    })
}

async fn create_file_output(client: &Client, namespace: &str, name: &str, path: &Path) {
    let output = object(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricOutput",
        "metadata": { "name": name },
        "spec": file_output_spec(path),
    }));
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &resource("MetricOutput", "metricoutputs"),
    )
    .create(&PostParams::default(), &output)
    .await
    .unwrap();
}

/// The lines of a file output that came from input `namespace/name`.
fn lines_of(path: &Path, input: &str) -> Vec<String> {
    let job = format!("job=\"{input}\"");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(&job))
        .map(str::to_owned)
        .collect()
}

fn renew_time(lease: &Lease) -> Option<k8s_openapi::jiff::Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|time| time.0)
}

// ----- tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_runs_its_shard_and_restarts_only_what_changed() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let chart = Installation::new(cluster, &admin, "shard").await;
    let team = TestNamespace::new(&admin, "shard-team").await.unwrap();
    let requests = release::ScrapeTarget::start().await.unwrap();
    let target = requests.address();
    let work = tempfile::tempdir().unwrap();
    let samples = work.path().join("samples.prom");
    create_file_output(&admin, team.name(), "file", &samples).await;

    let pod0 = chart.collector_pod(0).await;
    let pod0_name = chart.collector_pod_name(0);
    let pod1_name = chart.collector_pod(1).await.metadata.name.unwrap();
    let started = Instant::now();
    let collector = Collector::start(cluster, &admin, &pod0).await;
    eprintln!("collector ready {:?} after start", started.elapsed());

    let to_file = json!([{ "name": "file" }]);
    for (name, owner) in [
        ("alpha", &pod0_name),
        ("beta", &pod0_name),
        ("gamma", &pod1_name),
    ] {
        create_input(&admin, team.name(), name, target, owner, to_file.clone()).await;
    }
    let created = Instant::now();
    wait_for("alpha and beta to be scraped", TIMEOUT, || async {
        collector.assert_running();
        Outcome::ready_if(
            requests.count("/metrics/alpha") >= 2 && requests.count("/metrics/beta") >= 2,
            (
                requests.count("/metrics/alpha"),
                requests.count("/metrics/beta"),
            ),
        )
    })
    .await
    .unwrap();
    eprintln!(
        "inputs scraped {:?} after they were created",
        created.elapsed()
    );
    let alpha = format!("{}/alpha", team.name());
    let beta = format!("{}/beta", team.name());
    for (input, name) in [(&alpha, "alpha"), (&beta, "beta")] {
        let line = wait_for(
            &format!("{input}'s samples in the file"),
            TIMEOUT,
            || async {
                lines_of(&samples, input)
                    .into_iter()
                    .find(|line| line.starts_with("e2e_target_requests_total{"))
            },
        )
        .await
        .unwrap();
        assert!(line.contains(&format!("instance=\"{target}\"")), "{line}");
        assert!(
            line.contains(&format!("path=\"/metrics/{name}\"")),
            "{line}"
        );
    }
    assert_eq!(collector.task_starts(&alpha).await, Some(1.0));
    assert_eq!(collector.task_starts(&beta).await, Some(1.0));

    // A new generation restarts that input's task and no other.
    let team_inputs = inputs(&admin, team.name());
    let edit_interval = |interval: &str| Patch::Merge(json!({ "spec": { "interval": interval } }));
    team_inputs
        .patch("alpha", &PatchParams::default(), &edit_interval("300ms"))
        .await
        .unwrap();
    wait_for("alpha's task to restart", TIMEOUT, || async {
        collector.task_starts(&alpha).await == Some(2.0)
    })
    .await
    .unwrap();
    assert_eq!(
        collector.task_starts(&beta).await,
        Some(1.0),
        "editing alpha restarted beta"
    );

    // Metadata is not spec: an annotation on beta restarts nothing. Its watch event comes
    // before alpha's next edit on the same watch, so once alpha restarted, beta's was seen.
    team_inputs
        .patch(
            "beta",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "note": "metadata only" } } })),
        )
        .await
        .unwrap();
    team_inputs
        .patch("alpha", &PatchParams::default(), &edit_interval("250ms"))
        .await
        .unwrap();
    wait_for("alpha's second restart", TIMEOUT, || async {
        collector.task_starts(&alpha).await == Some(3.0)
    })
    .await
    .unwrap();
    assert_eq!(
        collector.task_starts(&beta).await,
        Some(1.0),
        "an annotation restarted beta"
    );

    // gamma belongs to pod 1: this collector never ran it.
    assert_eq!(
        requests.count("/metrics/gamma"),
        0,
        "pod 0 scraped pod 1's input"
    );
    assert_eq!(
        collector
            .task_starts(&format!("{}/gamma", team.name()))
            .await,
        None
    );

    // Relabelled to pod 1, beta stops here within a second.
    let relabel = Patch::Merge(
        json!({ "metadata": { "labels": { "metricshard.io/collector": pod1_name } } }),
    );
    let relabelled_at = Instant::now();
    team_inputs
        .patch("beta", &PatchParams::default(), &relabel)
        .await
        .unwrap();
    wait_for("beta's task to stop", TIMEOUT, || async {
        collector.task_starts(&beta).await.is_none()
    })
    .await
    .unwrap();
    eprintln!(
        "beta's task gone {:?} after the relabel",
        relabelled_at.elapsed()
    );
    // Two more of alpha's scrapes (each interval is shorter than beta's) prove time passed.
    let (alpha_seen, beta_seen) = (
        requests.count("/metrics/alpha"),
        requests.count("/metrics/beta"),
    );
    wait_for("two more scrapes of alpha", TIMEOUT, || async {
        requests.count("/metrics/alpha") >= alpha_seen + 2
    })
    .await
    .unwrap();
    assert_eq!(
        requests.count("/metrics/beta"),
        beta_seen,
        "beta still scraped after its task stopped"
    );
    let last = requests.last("/metrics/beta").unwrap();
    assert!(
        last < relabelled_at + Duration::from_secs(1),
        "beta was scraped {:?} after the relabel",
        last - relabelled_at
    );
    assert_eq!(
        collector.task_starts(&alpha).await,
        Some(3.0),
        "the relabel restarted alpha"
    );

    drop(collector);
    chart.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_holds_for_cluster_outputs_and_other_namespaces_outputs() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let chart = Installation::new(cluster, &admin, "tenancy").await;
    let a = TestNamespace::new(&admin, "tenant-a").await.unwrap();
    let b = TestNamespace::new(&admin, "tenant-b").await.unwrap();
    let requests = release::ScrapeTarget::start().await.unwrap();
    let target = requests.address();
    let work = tempfile::tempdir().unwrap();
    let file = |name: &str| -> PathBuf { work.path().join(format!("{name}.prom")) };

    // Two cluster outputs: one admits only namespace a, the other only namespace b.
    let cluster_outputs: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &resource("ClusterMetricOutput", "clustermetricoutputs"),
    );
    let admits = |namespace: &str| format!("{}-admits-{namespace}", a.name());
    for (namespace, path) in [(a.name(), file("admits-a")), (b.name(), file("admits-b"))] {
        let mut spec = file_output_spec(&path);
        spec["namespaceSelector"] =
            json!({ "matchLabels": { "kubernetes.io/metadata.name": namespace } });
        let output = object(json!({
            "apiVersion": "metricshard.io/v1alpha1",
            "kind": "ClusterMetricOutput",
            "metadata": { "name": admits(namespace), "labels": { "metricshard.io/e2e": "true" } },
            "spec": spec,
        }));
        cluster_outputs
            .create(&PostParams::default(), &output)
            .await
            .unwrap();
    }
    // A MetricOutput named `sink` exists in namespace b only.
    create_file_output(&admin, b.name(), "sink", &file("sink-b")).await;

    let pod0 = chart.collector_pod(0).await;
    let collector = Collector::start(cluster, &admin, &pod0).await;
    let owner = chart.collector_pod_name(0);
    let both_cluster_outputs = json!([
        { "kind": "ClusterMetricOutput", "name": admits(a.name()) },
        { "kind": "ClusterMetricOutput", "name": admits(b.name()) },
    ]);
    create_input(
        &admin,
        a.name(),
        "shared",
        target,
        &owner,
        both_cluster_outputs,
    )
    .await;
    create_input(
        &admin,
        a.name(),
        "foreign",
        target,
        &owner,
        json!([{ "name": "sink" }]),
    )
    .await;
    create_input(
        &admin,
        b.name(),
        "own",
        target,
        &owner,
        json!([{ "name": "sink" }]),
    )
    .await;

    let shared = format!("{}/shared", a.name());
    let foreign = format!("{}/foreign", a.name());
    let own = format!("{}/own", b.name());
    // What is allowed arrives: a's input in the output admitting a, b's input in b's sink.
    wait_for(
        "a/shared in the output admitting a, b/own in b's sink",
        TIMEOUT,
        || async {
            Outcome::ready_if(
                !lines_of(&file("admits-a"), &shared).is_empty()
                    && !lines_of(&file("sink-b"), &own).is_empty(),
                (
                    requests.count("/metrics/shared"),
                    requests.count("/metrics/own"),
                ),
            )
        },
    )
    .await
    .unwrap();
    // What is not allowed is counted, per reason.
    let undeliverable = "metricshard_input_undeliverable_samples_total";
    wait_for("samples counted as undeliverable", TIMEOUT, || async {
        let not_admitted = collector
            .metric(
                undeliverable,
                &[("input", &shared), ("reason", "namespace_not_admitted")],
            )
            .await;
        let not_found = collector
            .metric(
                undeliverable,
                &[("input", &foreign), ("reason", "output_not_found")],
            )
            .await;
        Outcome::ready_if(
            not_admitted.is_some_and(|n| n > 0.0) && not_found.is_some_and(|n| n > 0.0),
            (not_admitted, not_found),
        )
    })
    .await
    .unwrap();
    // Both are being scraped, so the absences below are not for lack of samples.
    assert!(requests.count("/metrics/foreign") > 0 && requests.count("/metrics/shared") > 0);
    // ...and is never delivered.
    let admits_b = std::fs::read_to_string(file("admits-b")).unwrap_or_default();
    assert!(
        admits_b.is_empty(),
        "the output admitting only b received:\n{admits_b}"
    );
    assert!(
        lines_of(&file("sink-b"), &foreign).is_empty(),
        "a's input was delivered to b's MetricOutput"
    );
    assert_eq!(
        collector.metric(undeliverable, &[("input", &own)]).await,
        None,
        "b's own input had undeliverable samples"
    );

    drop(collector);
    for namespace in [a.name(), b.name()] {
        cluster_outputs
            .delete(&admits(namespace), &DeleteParams::default())
            .await
            .unwrap();
    }
    chart.uninstall().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_lease_lives_with_the_process() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let chart = Installation::new(cluster, &admin, "lease").await;
    let pod0 = chart.collector_pod(0).await;
    let pod0_name = chart.collector_pod_name(0);
    let leases = chart.namespace.api::<Lease>();
    let mut collector = Collector::start(cluster, &admin, &pod0).await;

    let lease = wait_for("the collector's Lease", TIMEOUT, || async {
        collector.assert_running();
        leases.get_opt(&pod0_name).await
    })
    .await
    .unwrap();
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(pod0_name.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(LEASE_DURATION_SECONDS));
    assert_eq!(
        lease
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("metricshard.io/role")
            .map(String::as_str),
        Some("collector")
    );
    let first = renew_time(&lease).unwrap();
    wait_for("the Lease to be renewed", TIMEOUT, || async {
        collector.assert_running();
        let renewed = leases
            .get(&pod0_name)
            .await
            .map(|lease| renew_time(&lease))?;
        anyhow::Ok(Outcome::ready_if(renewed.is_some_and(|t| t > first), renewed).map_ready())
    })
    .await
    .unwrap();

    // SIGKILL: nobody renews the Lease any more, so it expires (what the operator watches for).
    collector.process().kill().unwrap();
    let at_kill = renew_time(&leases.get(&pod0_name).await.unwrap()).unwrap();
    let killed = Instant::now();
    wait_for("the Lease to expire unrenewed", TIMEOUT, || async {
        let renewed = renew_time(&leases.get(&pod0_name).await?);
        assert_eq!(
            renewed,
            Some(at_kill),
            "the Lease was renewed after SIGKILL"
        );
        let expires = at_kill + Duration::from_secs(LEASE_DURATION_SECONDS as u64);
        anyhow::Ok(k8s_openapi::jiff::Timestamp::now() > expires)
    })
    .await
    .unwrap();
    eprintln!("Lease expired {:?} after SIGKILL", killed.elapsed());

    // A restarted process renews it again; SIGTERM deletes it.
    collector.process().restart().unwrap();
    wait_for(
        "the restarted collector to renew the Lease",
        TIMEOUT,
        || async {
            let renewed = leases
                .get(&pod0_name)
                .await
                .map(|lease| renew_time(&lease))?;
            anyhow::Ok(Outcome::ready_if(renewed.is_some_and(|t| t > at_kill), renewed).map_ready())
        },
    )
    .await
    .unwrap();
    let status = collector
        .process()
        .terminate(Duration::from_secs(20))
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM: {status}\n{}",
        collector.process().log_tail(20)
    );
    assert!(
        leases.get_opt(&pod0_name).await.unwrap().is_none(),
        "the Lease outlived a SIGTERMed collector"
    );

    drop(collector);
    chart.uninstall().await;
}
