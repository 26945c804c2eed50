//! The Helm chart `charts/metricshard` with a real helm: it lints and its schema refuses bad
//! values; it renders least-privilege RBAC (no wildcards, exactly the documented grants) and
//! PodSecurity "restricted" pods; its CRDs are byte-identical copies of the generated ones.
//! Installed into a namespace that enforces "restricted", the controllers create its pods; the
//! collector's token may write MetricInput status and its Lease but no spec; the operator's may
//! label inputs; upgrades upgrade the CRDs and uninstalling keeps them.
//!
//! Runs against the local control plane, or against `$KUBECONFIG`'s cluster when set.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, ResourceExt as _};
use metricshard_e2e::release;
use metricshard_e2e::{
    Outcome, ServiceAccountIdentity, TestCluster, TestNamespace, wait_for, workspace_root,
};
use serde::Deserialize as _;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// How to bring the chart's CRD copies back in line with the generated ones.
const SYNC_CRDS: &str = "the chart ships a copy of the generated CRDs (see docs/helm.md); regenerate both with\n  \
     cargo run -p metricshard-crds --bin crdgen";

fn chart_dir() -> PathBuf {
    workspace_root().join("charts/metricshard")
}

fn chart_crd_dir() -> PathBuf {
    chart_dir().join("files/crds")
}

fn generated_crd_dir() -> PathBuf {
    workspace_root().join("crds/yaml")
}

/// The documents of a multi-document YAML stream; empty documents are skipped.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `*.yaml` file names in `dir`, sorted.
fn yaml_file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

/// `helm template` of the chart in `chart`, parsed.
async fn render(cluster: &TestCluster, chart: &Path, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let mut command = release::helm(cluster)
        .unwrap()
        .args(["template", "metricshard"])
        .arg(chart)
        .args(["--namespace", namespace]);
    for set in sets {
        command = command.args(["--set", set]);
    }
    documents(&command.run_ok().await.unwrap().stdout)
}

fn is_forbidden<T: std::fmt::Debug>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    assert!(
        is_forbidden(&result),
        "{what}: expected 403 Forbidden, got {result:?}"
    );
}

fn metricshard_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("metricshard.io", "v1alpha1", kind),
        plural,
    )
}

fn metric_inputs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &metricshard_resource("MetricInput", "metricinputs"),
    )
}

/// A test namespace whose PodSecurity admission enforces "restricted": a pod of the chart that
/// breaks the profile is refused, so the controllers create no pod at all.
async fn restricted_namespace(admin: &Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(admin, prefix).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .patch(
            ns.name(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap();
    ns
}

/// Base name of the chart's objects for a release named like its namespace.
fn fullname(release: &str) -> String {
    format!("{release}-metricshard")
}

#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let generated = yaml_file_names(&generated_crd_dir());
    let shipped = yaml_file_names(&chart_crd_dir());
    assert!(!generated.is_empty(), "no CRDs in crds/yaml");
    assert_eq!(
        shipped, generated,
        "charts/metricshard/files/crds and crds/yaml hold different files; {SYNC_CRDS}"
    );
    for name in &generated {
        let generated_bytes = std::fs::read(generated_crd_dir().join(name)).unwrap();
        let shipped_bytes = std::fs::read(chart_crd_dir().join(name)).unwrap();
        assert!(
            shipped_bytes == generated_bytes,
            "charts/metricshard/files/crds/{name} differs from crds/yaml/{name}; {SYNC_CRDS}"
        );
    }
}

#[tokio::test]
async fn chart_lints_and_its_schema_refuses_bad_values() {
    let cluster = TestCluster::shared().await.unwrap();
    for sets in [
        &[][..],
        &[
            "daemonset.enabled=true",
            "crds.install=false",
            "operator.replicas=2",
        ][..],
    ] {
        let mut lint = release::helm(cluster)
            .unwrap()
            .args(["lint", "--strict"])
            .arg(chart_dir());
        for set in sets {
            lint = lint.args(["--set", set]);
        }
        let output = lint.run_ok().await.unwrap();
        assert!(output.stdout.contains("0 chart(s) failed"), "{output}");
    }

    // A typo or a wrong type fails the install, naming the value, instead of being ignored.
    let refused = [
        ("collector.replicas=-1", "/collector/replicas"),
        ("colector.replicas=1", "'colector' not allowed"),
        ("logFormat=xml", "/logFormat"),
        (
            "operator.image.pullPolicy=Sometimes",
            "/operator/image/pullPolicy",
        ),
        (
            "collector.resources.requests.cpu=lots",
            "/collector/resources/requests/cpu",
        ),
        ("metricsPort=70000", "/metricsPort"),
        ("crds.install=maybe", "/crds/install"),
        (
            "daemonset.updateStrategy.type=Sometimes",
            "/daemonset/updateStrategy/type",
        ),
        (
            "collector.serviceAccount.create=1",
            "/collector/serviceAccount/create",
        ),
    ];
    for (set, path) in refused {
        let output = release::helm(cluster)
            .unwrap()
            .args(["template", "metricshard"])
            .arg(chart_dir())
            .args(["--set", set])
            .run()
            .await
            .unwrap();
        assert!(
            !output.success()
                && output
                    .stderr
                    .contains("don't meet the specifications of the schema")
                && output.stderr.contains(path),
            "--set {set} was not refused at {path}:\n{output}"
        );
    }
}

/// Every `group/resource verb` a ServiceAccount of the release gets through the rendered
/// bindings, with the scope: `cluster` (ClusterRoleBinding) or the namespace (RoleBinding).
fn grants(docs: &[Value], service_account: &str) -> BTreeSet<String> {
    let roles: BTreeMap<(&str, &str), &Value> = docs
        .iter()
        .filter(|doc| matches!(kind_of(doc), "ClusterRole" | "Role"))
        .map(|doc| ((kind_of(doc), name_of(doc)), doc))
        .collect();
    let mut grants = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|doc| matches!(kind_of(doc), "ClusterRoleBinding" | "RoleBinding"))
    {
        let bound = binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|subject| {
                subject["kind"] == "ServiceAccount" && subject["name"] == service_account
            });
        if !bound {
            continue;
        }
        let role_ref = &binding["roleRef"];
        let key = (
            role_ref["kind"].as_str().unwrap(),
            role_ref["name"].as_str().unwrap(),
        );
        let role = roles
            .get(&key)
            .unwrap_or_else(|| panic!("{} binds a missing {key:?}", name_of(binding)));
        let scope = if kind_of(binding) == "ClusterRoleBinding" {
            "cluster".to_owned()
        } else {
            binding["metadata"]["namespace"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        for rule in role["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        let group = if group.is_empty() { "core" } else { group };
                        grants.insert(format!("{scope}: {group}/{resource} {verb}"));
                    }
                }
            }
        }
    }
    grants
}

fn expected(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|line| (*line).to_owned()).collect()
}

#[tokio::test]
async fn rendered_chart_is_least_privilege_and_restricted() {
    let cluster = TestCluster::shared().await.unwrap();
    let namespace = "metricshard-system";
    let docs = render(
        cluster,
        &chart_dir(),
        namespace,
        &["daemonset.enabled=true"],
    )
    .await;

    // No wildcard in any rule, and no non-resource URLs.
    let mut rules = 0;
    for role in docs
        .iter()
        .filter(|doc| matches!(kind_of(doc), "ClusterRole" | "Role"))
    {
        for rule in role["rules"].as_array().unwrap() {
            rules += 1;
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{}: {rule}",
                name_of(role)
            );
            for field in ["apiGroups", "resources", "verbs"] {
                let values = strings(&rule[field]);
                assert!(
                    !values.is_empty(),
                    "{}: rule without {field}: {rule}",
                    name_of(role)
                );
                for value in values {
                    assert!(
                        !value.contains('*'),
                        "{} {}: wildcard {value:?} in {field}",
                        kind_of(role),
                        name_of(role)
                    );
                }
            }
        }
    }
    assert!(rules >= 8, "only {rules} RBAC rules rendered");

    // Exactly the grants of docs/helm.md's table: a new permission is a decision, not an accident.
    let collector = grants(&docs, "metricshard-collector");
    assert_eq!(
        collector,
        expected(&[
            "cluster: core/events create",
            "cluster: core/events patch",
            "cluster: core/namespaces get",
            "cluster: core/namespaces list",
            "cluster: core/namespaces watch",
            "cluster: core/nodes get",
            "cluster: core/nodes list",
            "cluster: core/nodes watch",
            "cluster: core/pods list",
            "cluster: core/pods watch",
            "cluster: core/secrets get",
            "cluster: core/secrets list",
            "cluster: core/secrets watch",
            "cluster: core/services list",
            "cluster: core/services watch",
            "cluster: discovery.k8s.io/endpointslices list",
            "cluster: discovery.k8s.io/endpointslices watch",
            "cluster: events.k8s.io/events create",
            "cluster: events.k8s.io/events patch",
            "cluster: metricshard.io/clustermetricoutputs get",
            "cluster: metricshard.io/clustermetricoutputs list",
            "cluster: metricshard.io/clustermetricoutputs watch",
            "cluster: metricshard.io/clustermetricoutputs/status patch",
            "cluster: metricshard.io/metricinputs get",
            "cluster: metricshard.io/metricinputs list",
            "cluster: metricshard.io/metricinputs watch",
            "cluster: metricshard.io/metricinputs/status patch",
            "cluster: metricshard.io/metricoutputs get",
            "cluster: metricshard.io/metricoutputs list",
            "cluster: metricshard.io/metricoutputs watch",
            "cluster: metricshard.io/metricoutputs/status patch",
            "metricshard-system: coordination.k8s.io/leases create",
            "metricshard-system: coordination.k8s.io/leases delete",
            "metricshard-system: coordination.k8s.io/leases get",
            "metricshard-system: coordination.k8s.io/leases patch",
        ])
    );
    // The point of the table above, said directly: a collector writes no spec.
    for grant in &collector {
        let writes = ["create", "update", "patch", "delete", "deletecollection"]
            .iter()
            .any(|verb| grant.ends_with(&format!(" {verb}")));
        if grant.contains("metricshard.io/") && writes {
            assert!(grant.ends_with("/status patch"), "{grant}: a collector writes status subresources only");
        }
    }
    let operator = grants(&docs, "metricshard-operator");
    assert_eq!(
        operator,
        expected(&[
            "cluster: core/events create",
            "cluster: core/events patch",
            "cluster: events.k8s.io/events create",
            "cluster: events.k8s.io/events patch",
            "cluster: metricshard.io/metricinputs get",
            "cluster: metricshard.io/metricinputs list",
            "cluster: metricshard.io/metricinputs patch",
            "cluster: metricshard.io/metricinputs watch",
            "cluster: metricshard.io/metricinputs/status patch",
            "cluster: metricshard.io/clustermetricoutputs get",
            "cluster: metricshard.io/clustermetricoutputs list",
            "cluster: metricshard.io/clustermetricoutputs watch",
            "cluster: metricshard.io/clustermetricoutputs/status patch",
            "cluster: metricshard.io/metricoutputs get",
            "cluster: metricshard.io/metricoutputs list",
            "cluster: metricshard.io/metricoutputs watch",
            "cluster: metricshard.io/metricoutputs/status patch",
            "metricshard-system: core/pods get",
            "metricshard-system: core/pods list",
            "metricshard-system: core/pods watch",
            "metricshard-system: coordination.k8s.io/leases create",
            "metricshard-system: coordination.k8s.io/leases get",
            "metricshard-system: coordination.k8s.io/leases list",
            "metricshard-system: coordination.k8s.io/leases patch",
            "metricshard-system: coordination.k8s.io/leases update",
            "metricshard-system: coordination.k8s.io/leases watch",
        ])
    );

    // Workloads: PodSecurity "restricted", resources, probes, the downward-API identity.
    let workloads: BTreeMap<&str, &Value> = docs
        .iter()
        .filter(|doc| matches!(kind_of(doc), "Deployment" | "StatefulSet" | "DaemonSet"))
        .map(|doc| (kind_of(doc), doc))
        .collect();
    assert_eq!(
        workloads.keys().copied().collect::<Vec<_>>(),
        ["DaemonSet", "Deployment", "StatefulSet"]
    );
    for (kind, workload) in &workloads {
        let pod = &workload["spec"]["template"]["spec"];
        let what = format!("{kind} {}", name_of(workload));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{what}"
        );
        assert_eq!(pod["automountServiceAccountToken"], true, "{what}");
        let expected_account = if *kind == "Deployment" {
            "metricshard-operator"
        } else {
            "metricshard-collector"
        };
        assert_eq!(pod["serviceAccountName"], expected_account, "{what}");
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{what}");
        let container = &containers[0];
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(
            strings(&security["capabilities"]["drop"]),
            ["ALL"],
            "{what}"
        );
        assert!(security["capabilities"].get("add").is_none(), "{what}");
        for field in ["requests", "limits"] {
            assert!(
                container["resources"][field]["memory"].is_string(),
                "{what}: no memory {field}"
            );
        }
        assert_eq!(container["ports"][0]["containerPort"], 9750, "{what}");
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{what}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{what}"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["port"], "http-metrics",
                "{what}"
            );
        }
        let env: BTreeMap<&str, &str> = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|var| {
                Some((
                    var["name"].as_str()?,
                    var["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
                ))
            })
            .collect();
        assert_eq!(
            env,
            BTreeMap::from([
                ("NODE_NAME", "spec.nodeName"),
                ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace"),
            ]),
            "{what}"
        );
    }
    let args =
        |kind: &str| strings(&workloads[kind]["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(args("StatefulSet").contains(&"--cluster"));
    assert!(args("StatefulSet").contains(&"--placement=sharded"));
    assert!(args("DaemonSet").contains(&"--cluster"));
    assert!(args("DaemonSet").contains(&"--placement=every-node"));
    assert!(args("Deployment").contains(&"--namespace=metricshard-system"));
    assert!(args("Deployment").contains(&"--collector-statefulset=metricshard-collector"));

    let statefulset = &workloads["StatefulSet"]["spec"];
    assert_eq!(statefulset["replicas"], 3);
    assert_eq!(statefulset["podManagementPolicy"], "Parallel");
    assert_eq!(workloads["Deployment"]["spec"]["replicas"], 1);
    let headless = docs
        .iter()
        .find(|doc| {
            kind_of(doc) == "Service" && statefulset["serviceName"] == doc["metadata"]["name"]
        })
        .expect("the StatefulSet's serviceName names a rendered Service");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(
        docs.iter()
            .any(|doc| kind_of(doc) == "Service" && name_of(doc) == "metricshard-metrics"),
        "no metrics Service"
    );
    // The StatefulSet's selector must not catch the DaemonSet's pods (or the reverse).
    let selects = |selector: &Value, pod_labels: &Value| {
        selector["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(key, value)| &pod_labels[key] == value)
    };
    for (a, b) in [
        ("StatefulSet", "DaemonSet"),
        ("DaemonSet", "StatefulSet"),
        ("Deployment", "StatefulSet"),
    ] {
        assert!(
            !selects(
                &workloads[a]["spec"]["selector"],
                &workloads[b]["spec"]["template"]["metadata"]["labels"]
            ),
            "the {a}'s selector matches the {b}'s pods"
        );
    }

    // CRDs: the generated ones, plus labels and the keep policy, nothing else changed.
    let generated: BTreeMap<String, Value> = yaml_file_names(&generated_crd_dir())
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(generated_crd_dir().join(file)).unwrap();
            let doc = documents(&text).remove(0);
            (name_of(&doc).to_owned(), doc)
        })
        .collect();
    let mut rendered_crds = BTreeMap::new();
    for crd in docs
        .iter()
        .filter(|doc| kind_of(doc) == "CustomResourceDefinition")
    {
        let mut crd = crd.clone();
        let metadata = crd["metadata"].as_object_mut().unwrap();
        let annotations = metadata.remove("annotations").unwrap_or_default();
        assert_eq!(
            annotations["helm.sh/resource-policy"],
            "keep",
            "{}",
            name_of(&crd)
        );
        assert_eq!(
            metadata.remove("labels").unwrap()["app.kubernetes.io/part-of"],
            "metricshard"
        );
        rendered_crds.insert(name_of(&crd).to_owned(), crd);
    }
    assert_eq!(
        rendered_crds.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "rendered CRDs"
    );
    for (name, rendered) in &rendered_crds {
        assert!(
            *rendered == generated[name],
            "the rendered CRD {name} is not the generated one apart from labels and \
             annotations (see templates/crds.yaml); {SYNC_CRDS}"
        );
    }
    for (sets, expected_crds) in [
        (&["crds.install=false"][..], 0),
        (&["crds.keep=false"][..], 3),
    ] {
        let docs = render(cluster, &chart_dir(), namespace, sets).await;
        let crds: Vec<&Value> = docs
            .iter()
            .filter(|doc| kind_of(doc) == "CustomResourceDefinition")
            .collect();
        assert_eq!(crds.len(), expected_crds, "--set {sets:?}");
        assert!(
            crds.iter()
                .all(|crd| crd["metadata"].get("annotations").is_none()),
            "crds.keep=false still annotates"
        );
    }
}

#[tokio::test]
async fn installed_chart_creates_pods_and_its_rbac_keeps_collectors_off_specs() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    release::ensure_crds(cluster).await.unwrap();
    let ns = restricted_namespace(&admin, "chart").await;
    let tenant = TestNamespace::new(&admin, "chart-tenant").await.unwrap();
    let release = ns.name().to_owned();
    let base = fullname(&release);

    // A node (local control plane only) so the DaemonSet has somewhere to put a pod.
    let node_name = format!("node-{release}");
    let with_node = cluster.is_local();
    if with_node {
        metricshard_e2e::create_node(&admin, &node_name)
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let install = release::helm(cluster)
        .unwrap()
        .args(["install", &release])
        .arg(chart_dir())
        .args(["--namespace", ns.name()])
        .args(["--set", "crds.install=false"])
        .args(["--set", &format!("daemonset.enabled={with_node}")])
        .run_ok()
        .await
        .unwrap();
    eprintln!("helm install took {:?}", started.elapsed());
    assert!(install.stdout.contains("STATUS: deployed"), "{install}");

    // The controllers create every pod: PodSecurity "restricted" admitted them all.
    let pods = ns.api::<Pod>();
    let expected_pods = if with_node { 5 } else { 4 };
    let names = wait_for("the chart's pods", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await?;
        let names: BTreeSet<String> = list.items.iter().map(|pod| pod.name_any()).collect();
        anyhow::Ok(Outcome::ready_if(names.len() == expected_pods, names))
    })
    .await
    .unwrap();
    for ordinal in 0..3 {
        assert!(
            names.contains(&format!("{base}-collector-{ordinal}")),
            "{names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|name| name.starts_with(&format!("{base}-operator-"))),
        "{names:?}"
    );
    if with_node {
        let node_collectors: Vec<Pod> = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=node-collector"))
            .await
            .unwrap()
            .items;
        assert_eq!(node_collectors.len(), 1);
        assert_eq!(
            metricshard_e2e::node_of(&node_collectors[0]).as_deref(),
            Some(node_name.as_str())
        );
    }
    if cluster.is_local() {
        // No kubelet: the pods exist but never run; processes stand in for them.
        let pod = pods.get(&format!("{base}-collector-0")).await.unwrap();
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }

    // Objects of a tenant, created by an admin.
    let web = serde_json::from_value::<DynamicObject>(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": "web", "namespace": tenant.name() },
        "spec": {
            "interval": "30s",
            "source": { "prometheus": { "staticTargets": ["web.example.internal:9100"] } },
            "outputs": [{ "name": "sink" }],
        },
    }))
    .unwrap();
    metric_inputs(&admin, tenant.name())
        .create(&PostParams::default(), &web)
        .await
        .unwrap();

    // The collector, with a token bound to its pod as the kubelet would give it.
    let pod0 = pods.get(&format!("{base}-collector-0")).await.unwrap();
    let collector = ServiceAccountIdentity::request(
        cluster,
        &admin,
        ns.name(),
        &format!("{base}-collector"),
        Some(&pod0),
    )
    .await
    .unwrap();
    let as_collector = collector.client().await.unwrap();
    let inputs = metric_inputs(&as_collector, tenant.name());
    // The bindings reach the authorizer through its informers, shortly after helm made them.
    wait_for(
        "the collector to be allowed to list inputs",
        TIMEOUT,
        || async {
            Api::<DynamicObject>::all_with(
                as_collector.clone(),
                &metricshard_resource("MetricInput", "metricinputs"),
            )
            .list(&ListParams::default())
            .await
            .map(|list| list.items.iter().any(|input| input.name_any() == "web"))
        },
    )
    .await
    .unwrap();

    // No spec, no label (labels are the assignment), no create, no delete...
    assert_forbidden(
        inputs
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "interval": "1s" } })),
            )
            .await,
        "collector merge-patches a MetricInput's spec",
    );
    assert_forbidden(
        inputs
            .patch(
                "web",
                &PatchParams::apply("metricshard-collector").force(),
                &Patch::Apply(json!({
                    "apiVersion": "metricshard.io/v1alpha1",
                    "kind": "MetricInput",
                    "metadata": { "name": "web" },
                    "spec": { "interval": "1s" },
                })),
            )
            .await,
        "collector server-side-applies a MetricInput's spec",
    );
    assert_forbidden(
        inputs
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "metricshard.io/collector": pod0.name_any() } } })),
            )
            .await,
        "collector labels a MetricInput",
    );
    let mut replaced = inputs.get("web").await.unwrap();
    replaced.data["spec"]["interval"] = json!("1s");
    assert_forbidden(
        inputs
            .replace("web", &PostParams::default(), &replaced)
            .await,
        "collector updates a MetricInput",
    );
    assert_forbidden(
        inputs.delete("web", &DeleteParams::default()).await,
        "collector deletes a MetricInput",
    );
    let mut other = web.clone();
    other.metadata = kube::api::ObjectMeta {
        name: Some("other".to_owned()),
        namespace: Some(tenant.name().to_owned()),
        ..Default::default()
    };
    assert_forbidden(
        inputs.create(&PostParams::default(), &other).await,
        "collector creates a MetricInput",
    );
    let outputs: Api<DynamicObject> = Api::namespaced_with(
        as_collector.clone(),
        tenant.name(),
        &metricshard_resource("MetricOutput", "metricoutputs"),
    );
    assert_forbidden(
        outputs
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "metricshard.io/v1alpha1",
                    "kind": "MetricOutput",
                    "metadata": { "name": "sink" },
                    "spec": { "protocol": { "stdout": {} } },
                }))
                .unwrap(),
            )
            .await,
        "collector creates a MetricOutput",
    );
    let cluster_outputs: Api<DynamicObject> = Api::all_with(
        as_collector.clone(),
        &metricshard_resource("ClusterMetricOutput", "clustermetricoutputs"),
    );
    assert_forbidden(
        cluster_outputs
            .patch(
                "anything",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": {} })),
            )
            .await,
        "collector patches a ClusterMetricOutput",
    );
    // Secrets: read (the ones its inputs and outputs name, watched one by one), never written.
    let secrets = Api::<Secret>::namespaced(as_collector.clone(), tenant.name());
    secrets
        .list(&ListParams::default().fields("metadata.name=scrape-auth"))
        .await
        .expect("collector reads a referenced Secret");
    assert_forbidden(
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": { "name": "planted" },
                    "stringData": { "k": "v" },
                }))
                .unwrap(),
            )
            .await,
        "collector creates a Secret",
    );

    // ...but status, yes; and the status subresource ignores a spec sent along with it.
    inputs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": { "interval": "1s" },
                "status": { "collector": pod0.name_any() },
            })),
        )
        .await
        .unwrap();
    let after = metric_inputs(&admin, tenant.name())
        .get("web")
        .await
        .unwrap();
    assert_eq!(after.data["status"]["collector"], pod0.name_any());
    assert_eq!(after.data["spec"]["interval"], "30s");

    // Its Lease in the release namespace: create (by apply), renew, delete; nowhere else.
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": pod0.name_any(), "labels": { "metricshard.io/role": "collector" } },
        "spec": { "holderIdentity": pod0.name_any(), "leaseDurationSeconds": 15 },
    });
    let leases: Api<Lease> = Api::namespaced(as_collector.clone(), ns.name());
    let apply = PatchParams::apply("metricshard-collector").force();
    for _renewal in 0..2 {
        leases
            .patch(&pod0.name_any(), &apply, &Patch::Apply(&lease))
            .await
            .unwrap();
    }
    leases
        .delete(&pod0.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    assert_forbidden(
        Api::<Lease>::namespaced(as_collector.clone(), tenant.name())
            .patch(&pod0.name_any(), &apply, &Patch::Apply(&lease))
            .await,
        "collector writes a Lease outside the release namespace",
    );

    // The operator may label an input (its own field manager) and write status, not delete.
    let operator_pod = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .unwrap()
        .items
        .remove(0);
    let operator = ServiceAccountIdentity::request(
        cluster,
        &admin,
        ns.name(),
        &format!("{base}-operator"),
        Some(&operator_pod),
    )
    .await
    .unwrap();
    let as_operator = operator.client().await.unwrap();
    let operator_inputs = metric_inputs(&as_operator, tenant.name());
    let assignment = Patch::Apply(json!({
        "apiVersion": "metricshard.io/v1alpha1",
        "kind": "MetricInput",
        "metadata": { "name": "web", "labels": { "metricshard.io/collector": pod0.name_any() } },
    }));
    wait_for(
        "the operator to be allowed to label inputs",
        TIMEOUT,
        || async {
            operator_inputs
                .patch(
                    "web",
                    &PatchParams::apply("metricshard-operator"),
                    &assignment,
                )
                .await
                .map(|_| true)
        },
    )
    .await
    .unwrap();
    let labelled = metric_inputs(&admin, tenant.name())
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        labelled.labels()["metricshard.io/collector"],
        pod0.name_any()
    );
    assert_eq!(labelled.data["spec"]["interval"], "30s");
    operator_inputs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "observedGeneration": 1 } })),
        )
        .await
        .unwrap();
    assert_forbidden(
        operator_inputs
            .delete("web", &DeleteParams::default())
            .await,
        "operator deletes a MetricInput",
    );
    Api::<Pod>::namespaced(as_operator.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_forbidden(
        Api::<Pod>::namespaced(as_operator.clone(), tenant.name())
            .list(&ListParams::default())
            .await,
        "operator lists pods outside the release namespace",
    );
    let operator_leases: Api<Lease> = Api::namespaced(as_operator.clone(), ns.name());
    let leader = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("metricshard-operator-leader".to_owned()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some(operator_pod.name_any()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let leader = operator_leases
        .create(&PostParams::default(), &leader)
        .await
        .unwrap();
    operator_leases
        .replace(&leader.name_any(), &PostParams::default(), &leader)
        .await
        .unwrap();
    let members = operator_leases.list(&ListParams::default()).await.unwrap();
    assert_eq!(members.items.len(), 1);
    assert_forbidden(
        Api::<Secret>::namespaced(as_operator.clone(), ns.name())
            .list(&ListParams::default())
            .await,
        "operator lists Secrets",
    );

    release::helm(cluster)
        .unwrap()
        .args(["uninstall", &release, "--namespace", ns.name()])
        .run_ok()
        .await
        .unwrap();
    if with_node {
        Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
            .delete(&node_name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Copies the chart to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn schema_description(crd: &CustomResourceDefinition) -> String {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|schema| schema.open_api_v3_schema.as_ref())
        .and_then(|schema| schema.description.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn crds_upgrade_with_the_chart_and_outlive_uninstall() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    // Other tests of this binary apply the CRDs too: let that happen first, so nothing reverts
    // the upgrade below behind this test's back.
    release::ensure_crds(cluster).await.unwrap();
    let ns = restricted_namespace(&admin, "crd-upgrade").await;
    let release = ns.name().to_owned();
    let install = |chart: PathBuf, command: &'static str| {
        release::helm(cluster)
            .unwrap()
            .args([command, &release])
            .arg(chart)
            .args(["--namespace", ns.name()])
            .args(["--set", "crds.install=true"])
    };

    // The CRDs exist already (as they would after `kubectl apply` or another release):
    // --take-ownership adopts them.
    let output = install(chart_dir(), "install")
        .arg("--take-ownership")
        .run_ok()
        .await
        .unwrap();
    assert!(output.stdout.contains("STATUS: deployed"), "{output}");
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let crd_name = "metricinputs.metricshard.io";
    let crd = crds.get(crd_name).await.unwrap();
    let annotations = crd.annotations();
    assert_eq!(annotations["meta.helm.sh/release-name"], release);
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    let original_description = schema_description(&crd);

    // User data, which must survive everything below.
    let inputs = metric_inputs(&admin, ns.name());
    inputs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "metricshard.io/v1alpha1",
                "kind": "MetricInput",
                "metadata": { "name": "kept" },
                "spec": {
                    "source": { "prometheus": { "staticTargets": ["kept.example.internal:9100"] } },
                    "outputs": [{ "name": "sink" }],
                },
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    // A new chart version whose CRD changed (here: a description): `helm upgrade` applies it.
    let work = tempfile::tempdir().unwrap();
    let changed_chart = work.path().join("metricshard");
    copy_dir(&chart_dir(), &changed_chart);
    let marker = format!("[upgraded by {release}]");
    let crd_file = changed_chart
        .join("files/crds")
        .join(format!("{crd_name}.yaml"));
    let mut changed = documents(&std::fs::read_to_string(&crd_file).unwrap()).remove(0);
    changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] =
        json!(format!("{marker} {original_description}"));
    std::fs::write(&crd_file, serde_yaml::to_string(&changed).unwrap()).unwrap();
    let started = std::time::Instant::now();
    install(changed_chart, "upgrade").run_ok().await.unwrap();
    eprintln!(
        "helm upgrade with a changed CRD took {:?}",
        started.elapsed()
    );
    let upgraded = crds.get(crd_name).await.unwrap();
    assert!(
        schema_description(&upgraded).starts_with(&marker),
        "helm upgrade did not upgrade the CRD: {}",
        schema_description(&upgraded)
    );
    assert!(inputs.get_opt("kept").await.unwrap().is_some());

    // And back to this chart (other tests share the cluster's CRDs).
    install(chart_dir(), "upgrade").run_ok().await.unwrap();
    assert_eq!(
        schema_description(&crds.get(crd_name).await.unwrap()),
        original_description
    );

    // Uninstall removes the release's objects but keeps the CRDs, and with them user data.
    let output = release::helm(cluster)
        .unwrap()
        .args(["uninstall", &release, "--namespace", ns.name()])
        .run_ok()
        .await
        .unwrap();
    assert!(
        output.stdout.contains("kept due to the resource policy"),
        "{output}"
    );
    for name in ["metricinputs", "metricoutputs", "clustermetricoutputs"] {
        let crd = crds.get(&format!("{name}.metricshard.io")).await.unwrap();
        assert!(
            crd.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted"
        );
    }
    assert!(
        inputs.get_opt("kept").await.unwrap().is_some(),
        "user data lost on uninstall"
    );
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    assert!(
        cluster_roles
            .get_opt(&format!("{}-collector", fullname(&release)))
            .await
            .unwrap()
            .is_none(),
        "uninstall left the collector's ClusterRole"
    );
}
