//! The generated CRDs (`crds/yaml/*.yaml`) against a real API server: they install and become
//! Established, every example manifest (`examples/**/*.yaml`) is accepted by server- and
//! client-side dry runs, every manifest under `e2e/testdata/invalid/` is rejected with the
//! expected schema or CEL message, every CEL rule of the CRDs has such an invalid manifest, and
//! `kubectl get` shows the printer columns.
//!
//! The tests read the CRDs and examples from the repository at run time, so they follow the
//! CRD types as they change. Against `$KUBECONFIG` they install (server-side apply) the CRDs
//! into that cluster.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use kube::Api;
use metricshard_e2e::{Outcome, TestCluster, TestNamespace, wait_for, workspace_root};
use serde::Deserialize as _;
use serde_json::Value;
use tokio::sync::OnceCell;

/// Manifests that must be rejected: file under `e2e/testdata/invalid/`, the field path the
/// API server names, and the message (the CEL rule's `message`, or the schema's wording).
/// Every CEL rule of the CRDs must appear here for each kind that has it (see
/// `every_cel_rule_has_an_invalid_manifest`).
const INVALID: &[(&str, &str, &str)] = &[
    // Buffers, CEL
    (
        "metricoutput-buffer-memory-and-redis.yaml",
        "spec.buffer",
        "at most one of buffer.memory and buffer.redis may be set",
    ),
    (
        "metricoutput-redis-lease-too-short.yaml",
        "spec.buffer.redis.leaseDuration",
        "redis.leaseDuration must be between 1s and 10m",
    ),
    (
        "metricoutput-redis-url-not-redis.yaml",
        "spec.buffer.redis.url",
        "redis.url must be an absolute redis:// URL",
    ),
    (
        "clustermetricoutput-buffer-memory-and-redis.yaml",
        "spec.buffer",
        "at most one of buffer.memory and buffer.redis may be set",
    ),
    (
        "clustermetricoutput-redis-lease-too-short.yaml",
        "spec.buffer.redis.leaseDuration",
        "redis.leaseDuration must be between 1s and 10m",
    ),
    (
        "clustermetricoutput-redis-url-not-redis.yaml",
        "spec.buffer.redis.url",
        "redis.url must be an absolute redis:// URL",
    ),
    // Relabeling, CEL
    (
        "metricinput-relabel-hashmod-without-modulus.yaml",
        "spec.source.prometheus.relabelConfigs[0]",
        "action hashmod needs modulus",
    ),
    (
        "metricinput-relabel-replace-without-target.yaml",
        "spec.source.prometheus.metricRelabelConfigs[0]",
        "this action needs targetLabel",
    ),
    // Output protocols, CEL
    (
        "metricoutput-remote-write-url-not-http.yaml",
        "spec.protocol.remoteWrite.url",
        "url must be an absolute http or https URL",
    ),
    (
        "metricoutput-opentsdb-url-relative.yaml",
        "spec.protocol.openTSDB.url",
        "url must be an absolute http or https URL",
    ),
    (
        "clustermetricoutput-influx-url-relative.yaml",
        "spec.protocol.influx.url",
        "url must be an absolute http or https URL",
    ),
    // Fan-out, CEL
    (
        "metricoutput-remote-write-url-and-fan-out.yaml",
        "spec.protocol.remoteWrite",
        "exactly one of url and fanOut must be set",
    ),
    (
        "clustermetricoutput-influx-neither-url-nor-fan-out.yaml",
        "spec.protocol.influx",
        "exactly one of url and fanOut must be set",
    ),
    (
        "metricoutput-fan-out-address-not-http.yaml",
        "spec.protocol.remoteWrite.fanOut.nodes[0].addresses",
        "every address must be an absolute http or https URL",
    ),
    (
        "clustermetricoutput-fan-out-address-relative.yaml",
        "spec.protocol.openTSDB.fanOut.nodes[0].addresses",
        "every address must be an absolute http or https URL",
    ),
    // MetricInput, CEL
    (
        "metricinput-interval-zero.yaml",
        "spec.interval",
        "spec.interval must be greater than zero",
    ),
    (
        "metricinput-timeout-zero.yaml",
        "spec.timeout",
        "spec.timeout must be greater than zero",
    ),
    (
        "metricinput-timeout-exceeds-interval.yaml",
        "spec.timeout",
        "spec.timeout must not exceed spec.interval",
    ),
    (
        "metricinput-jitter-not-shorter-than-interval.yaml",
        "spec.jitter",
        "spec.jitter must be shorter than spec.interval",
    ),
    (
        "metricinput-label-name-reserved.yaml",
        "spec.labels",
        "label names must match [a-zA-Z_][a-zA-Z0-9_]* and must not start with __",
    ),
    (
        "metricinput-label-name-invalid.yaml",
        "spec.labels",
        "label names must match [a-zA-Z_][a-zA-Z0-9_]* and must not start with __",
    ),
    (
        "metricinput-metrics-path-relative.yaml",
        "spec.source.prometheus.metricsPath",
        "metricsPath must start with /",
    ),
    (
        "metricinput-static-target-url.yaml",
        "spec.source.prometheus.staticTargets",
        "every static target must be host:port",
    ),
    (
        "metricinput-prometheus-no-targets.yaml",
        "spec.source.prometheus",
        "at least one of staticTargets, fileSD, httpSD and kubernetesSD must be set",
    ),
    (
        "metricinput-file-sd-relative-path.yaml",
        "spec.source.prometheus.fileSD.files",
        "fileSD.files must be absolute paths",
    ),
    (
        "metricinput-file-sd-refresh-zero.yaml",
        "spec.source.prometheus.fileSD.refreshInterval",
        "fileSD.refreshInterval must be greater than zero",
    ),
    (
        "metricinput-http-sd-url-not-http.yaml",
        "spec.source.prometheus.httpSD.url",
        "httpSD.url must be an absolute http or https URL",
    ),
    (
        "metricinput-http-sd-refresh-zero.yaml",
        "spec.source.prometheus.httpSD.refreshInterval",
        "httpSD.refreshInterval must be greater than zero",
    ),
    (
        "metricinput-kubernetes-sd-namespace-invalid.yaml",
        "spec.source.prometheus.kubernetesSD[0].namespaces",
        "kubernetesSD.namespaces must be namespace names",
    ),
    (
        "metricinput-kubernetes-sd-node-with-namespaces.yaml",
        "spec.source.prometheus.kubernetesSD[0].namespaces",
        "kubernetesSD.namespaces does not apply to role node (nodes are cluster-scoped)",
    ),
    (
        "metricinput-no-source.yaml",
        "spec.source",
        "exactly one source must be set",
    ),
    // MetricInput push source, CEL
    (
        "metricinput-two-sources.yaml",
        "spec.source",
        "exactly one source must be set",
    ),
    (
        "metricinput-host-path-relative.yaml",
        "spec.source.host",
        "host.procPath, host.sysPath and host.rootfsPath must be absolute paths",
    ),
    (
        "metricinput-host-device-include-and-exclude.yaml",
        "spec.source.host.netdev",
        "at most one of deviceInclude and deviceExclude may be set",
    ),
    (
        "metricinput-node-selector-sharded.yaml",
        "spec.placement.nodeSelector",
        "placement.nodeSelector needs placement.mode EveryNode",
    ),
    (
        "metricinput-push-listen-not-host-port.yaml",
        "spec.source.push.listen",
        "push.listen must be host:port",
    ),
    (
        "metricinput-push-auth-both.yaml",
        "spec.source.push.auth",
        "exactly one of auth.bearerToken and auth.basicAuth must be set",
    ),
    (
        "metricinput-push-bearer-without-file.yaml",
        "spec.source.push.auth.bearerToken",
        "bearerToken needs tokenFile",
    ),
    (
        "metricinput-push-token-file-relative.yaml",
        "spec.source.push.auth.bearerToken.tokenFile",
        "tokenFile must be an absolute path",
    ),
    (
        "metricinput-push-basic-auth-without-password-file.yaml",
        "spec.source.push.auth.basicAuth",
        "basicAuth needs passwordFile",
    ),
    (
        "metricinput-push-password-file-relative.yaml",
        "spec.source.push.auth.basicAuth.passwordFile",
        "passwordFile must be an absolute path",
    ),
    // MetricInput, OpenAPI schema
    (
        "metricinput-interval-not-a-duration.yaml",
        "spec.interval",
        "should match",
    ),
    (
        "metricinput-placement-unknown.yaml",
        "spec.placement.mode",
        "Unsupported value: \"Everywhere\"",
    ),
    (
        "metricinput-no-outputs.yaml",
        "spec.outputs",
        "should have at least 1 items",
    ),
    (
        "metricinput-unknown-field.yaml",
        "spec.intervall",
        "unknown field",
    ),
    // Scrape options and Secret references
    (
        "metricinput-basic-auth-and-authorization.yaml",
        "spec.source.prometheus",
        "at most one of basicAuth and authorization may be set",
    ),
    (
        "metricinput-authorization-type-basic.yaml",
        "spec.source.prometheus.authorization.type",
        "authorization.type cannot be Basic; use basicAuth",
    ),
    (
        "metricinput-tls-cert-without-key.yaml",
        "spec.source.prometheus.tlsConfig",
        "tlsConfig.cert and tlsConfig.keySecret must be set together",
    ),
    (
        "metricinput-body-size-limit-invalid.yaml",
        "spec.source.prometheus.bodySizeLimit",
        "should match",
    ),
    (
        "metricinput-secret-ref-with-namespace.yaml",
        "spec.source.prometheus.authorization.credentials.namespace",
        "unknown field",
    ),
    (
        "metricoutput-remote-write-basic-auth-and-authorization.yaml",
        "spec.protocol.remoteWrite",
        "at most one of basicAuth and authorization may be set",
    ),
    (
        "metricoutput-remote-write-authorization-type-basic.yaml",
        "spec.protocol.remoteWrite.authorization.type",
        "authorization.type cannot be Basic; use basicAuth",
    ),
    (
        "clustermetricoutput-remote-write-basic-auth-and-authorization.yaml",
        "spec.protocol.remoteWrite",
        "at most one of basicAuth and authorization may be set",
    ),
    (
        "clustermetricoutput-remote-write-authorization-type-basic.yaml",
        "spec.protocol.remoteWrite.authorization.type",
        "authorization.type cannot be Basic; use basicAuth",
    ),
    // MetricOutput
    (
        "metricoutput-flush-interval-zero.yaml",
        "spec.batch.flushInterval",
        "batch.flushInterval must be greater than zero",
    ),
    (
        "metricoutput-file-path-relative.yaml",
        "spec.protocol.file.path",
        "file.path must be absolute",
    ),
    (
        "metricoutput-two-protocols.yaml",
        "spec.protocol",
        "exactly one protocol must be set",
    ),
    (
        "metricoutput-no-protocol.yaml",
        "spec.protocol",
        "exactly one protocol must be set",
    ),
    (
        "metricoutput-batch-max-samples-zero.yaml",
        "spec.batch.maxSamples",
        "should be greater than or equal to 1",
    ),
    // ClusterMetricOutput
    (
        "clustermetricoutput-flush-interval-zero.yaml",
        "spec.batch.flushInterval",
        "batch.flushInterval must be greater than zero",
    ),
    (
        "clustermetricoutput-file-path-relative.yaml",
        "spec.protocol.file.path",
        "file.path must be absolute",
    ),
    (
        "clustermetricoutput-two-protocols.yaml",
        "spec.protocol",
        "exactly one protocol must be set",
    ),
    (
        "clustermetricoutput-no-protocol.yaml",
        "spec.protocol",
        "exactly one protocol must be set",
    ),
    (
        "clustermetricoutput-batch-max-samples-zero.yaml",
        "spec.batch.maxSamples",
        "should be greater than or equal to 1",
    ),
];

const TIMEOUT: Duration = Duration::from_secs(60);

/// `crds/yaml`, or `$METRICSHARD_E2E_CRD_DIR` (to try the suite on other CRDs, e.g. one with
/// a rule removed, which must fail it).
fn crd_dir() -> PathBuf {
    std::env::var_os("METRICSHARD_E2E_CRD_DIR")
        .map_or_else(|| workspace_root().join("crds/yaml"), PathBuf::from)
}

fn invalid_dir() -> PathBuf {
    workspace_root().join("e2e/testdata/invalid")
}

/// Every `*.yaml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The documents of a (multi-document) YAML file; empty documents are skipped.
fn documents(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|doc| serde_yaml::to_string(doc).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The CRDs of the repository, parsed.
fn repository_crds() -> Vec<CustomResourceDefinition> {
    let files = yaml_files(&crd_dir());
    assert!(!files.is_empty(), "no CRDs in {}", crd_dir().display());
    files
        .iter()
        .flat_map(|file| documents(file))
        .map(|doc| serde_json::from_value(doc).expect("a CustomResourceDefinition"))
        .collect()
}

/// Installs the repository's CRDs once per test binary and waits until each is Established.
async fn install_crds(cluster: &TestCluster) -> &'static [CustomResourceDefinition] {
    static INSTALLED: OnceCell<Vec<CustomResourceDefinition>> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let crds = repository_crds();
            cluster
                .kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=metricshard-e2e",
                    "-f",
                ])
                .arg(crd_dir())
                .run_ok()
                .await
                .unwrap();
            let api: Api<CustomResourceDefinition> = Api::all(cluster.client().await.unwrap());
            for crd in &crds {
                let name = crd.metadata.name.clone().unwrap();
                wait_for(
                    &format!("CRD {name} to be Established with names accepted"),
                    TIMEOUT,
                    || async {
                        let crd = api.get(&name).await?;
                        let conditions: BTreeMap<String, String> = crd
                            .status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|c| (c.type_, c.status))
                            .collect();
                        let ready = ["Established", "NamesAccepted"]
                            .iter()
                            .all(|t| conditions.get(*t).map(String::as_str) == Some("True"));
                        anyhow::Ok(Outcome::ready_if(ready, conditions).map_ready())
                    },
                )
                .await
                .unwrap();
            }
            crds
        })
        .await
}

/// kind -> whether it is cluster-scoped, for the repository's kinds and the built-in ones
/// examples may contain.
fn cluster_scoped_kinds(crds: &[CustomResourceDefinition]) -> BTreeMap<String, bool> {
    let mut kinds: BTreeMap<String, bool> = crds
        .iter()
        .map(|crd| (crd.spec.names.kind.clone(), crd.spec.scope == "Cluster"))
        .collect();
    for kind in [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
    ] {
        kinds.insert(kind.to_owned(), true);
    }
    kinds
}

/// Puts namespaced documents into `namespace` (examples name their own namespaces, which do
/// not exist here) and drops Namespace documents.
fn retarget(docs: Vec<Value>, namespace: &str, scopes: &BTreeMap<String, bool>) -> Vec<Value> {
    docs.into_iter()
        .filter(|doc| kind_of(doc) != "Namespace")
        .map(|mut doc| {
            let cluster_scoped = scopes.get(kind_of(&doc)).copied().unwrap_or(false);
            if let Some(metadata) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                if cluster_scoped {
                    metadata.remove("namespace");
                } else {
                    metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
                }
            }
            doc
        })
        .collect()
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let cluster = TestCluster::shared().await.unwrap();
    let crds = install_crds(cluster).await;
    let names: BTreeSet<&str> = crds
        .iter()
        .map(|crd| crd.spec.names.kind.as_str())
        .collect();
    for kind in ["MetricInput", "MetricOutput", "ClusterMetricOutput"] {
        assert!(
            names.contains(kind),
            "no CRD for {kind} in {}",
            crd_dir().display()
        );
    }
    for crd in crds {
        assert_eq!(crd.spec.group, "metricshard.io");
        // Served through discovery, so kubectl finds it by plural name.
        let output = cluster
            .kubectl()
            .args([
                "get",
                &format!("{}.{}", crd.spec.names.plural, crd.spec.group),
                "-A",
            ])
            .run_ok()
            .await
            .unwrap();
        assert!(
            output.stderr.contains("No resources found") || output.stdout.contains("NAME"),
            "{output}"
        );
    }
}

#[tokio::test]
async fn examples_pass_server_and_client_dry_runs() {
    let cluster = TestCluster::shared().await.unwrap();
    let crds = install_crds(cluster).await;
    let scopes = cluster_scoped_kinds(crds);
    let ns = TestNamespace::new(&cluster.client().await.unwrap(), "examples")
        .await
        .unwrap();
    let examples = yaml_files(&workspace_root().join("examples"));
    assert!(!examples.is_empty(), "no example manifests under examples/");
    let mut checked_kinds = BTreeSet::new();
    for example in &examples {
        let docs = retarget(documents(example), ns.name(), &scopes);
        checked_kinds.extend(docs.iter().map(|doc| kind_of(doc).to_owned()));
        let stream = to_yaml_stream(&docs);
        for dry_run in ["server", "client"] {
            let output = cluster
                .kubectl()
                .args([
                    "apply",
                    &format!("--dry-run={dry_run}"),
                    "--validate=strict",
                    "-f",
                    "-",
                ])
                .stdin(stream.clone())
                .run()
                .await
                .unwrap();
            assert!(
                output.success(),
                "{} rejected by the {dry_run}-side dry run:\n{output}",
                example.display()
            );
            let marker = if dry_run == "server" {
                "(server dry run)"
            } else {
                "(dry run)"
            };
            let applied = output.stdout.matches(marker).count();
            assert_eq!(
                applied,
                docs.len(),
                "{}: {dry_run} dry run did not apply every document:\n{output}",
                example.display()
            );
        }
    }
    for kind in ["MetricInput", "MetricOutput", "ClusterMetricOutput"] {
        assert!(
            checked_kinds.contains(kind),
            "no example of {kind} under examples/"
        );
    }
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_the_expected_message() {
    let cluster = TestCluster::shared().await.unwrap();
    let crds = install_crds(cluster).await;
    let scopes = cluster_scoped_kinds(crds);
    let ns = TestNamespace::new(&cluster.client().await.unwrap(), "invalid")
        .await
        .unwrap();

    let on_disk: BTreeSet<String> = yaml_files(&invalid_dir())
        .iter()
        .map(|p| p.strip_prefix(invalid_dir()).unwrap().display().to_string())
        .collect();
    let in_table: BTreeSet<String> = INVALID
        .iter()
        .map(|(file, _, _)| (*file).to_owned())
        .collect();
    assert_eq!(
        on_disk, in_table,
        "e2e/testdata/invalid/ and the INVALID table disagree"
    );

    let mut failures = Vec::new();
    for (file, field, message) in INVALID {
        let docs = retarget(documents(&invalid_dir().join(file)), ns.name(), &scopes);
        assert_eq!(
            docs.len(),
            1,
            "{file}: one manifest per file, so the rejection is attributable"
        );
        let output = cluster
            .kubectl()
            .args(["apply", "--dry-run=server", "--validate=strict", "-f", "-"])
            .stdin(to_yaml_stream(&docs))
            .run()
            .await
            .unwrap();
        if output.success() {
            failures.push(format!(
                "{file}: accepted, expected rejection with {field}: {message}\n{}",
                output.stdout
            ));
        } else if !output.stderr.contains(field) || !output.stderr.contains(message) {
            failures.push(format!(
                "{file}: rejected, but not with {field:?} and {message:?}:\n{}",
                output.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} invalid manifests misjudged:\n\n{}",
        failures.len(),
        INVALID.len(),
        failures.join("\n\n")
    );
}

/// Every `x-kubernetes-validations` message found under `schema`.
fn cel_messages(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    let message = rule["message"]
                        .as_str()
                        .or_else(|| rule["rule"].as_str())
                        .unwrap_or_default();
                    out.insert(message.to_owned());
                }
            }
            for value in map.values() {
                cel_messages(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| cel_messages(item, out)),
        _ => {}
    }
}

/// Needs no cluster: a CEL rule nobody tries to break is a rule nobody knows works.
#[test]
fn every_cel_rule_has_an_invalid_manifest() {
    let mut covered: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, _, message) in INVALID {
        let docs = documents(&invalid_dir().join(file));
        let kind = kind_of(&docs[0]).to_owned();
        covered
            .entry(kind)
            .or_default()
            .insert((*message).to_owned());
    }
    let mut missing = Vec::new();
    for crd in repository_crds() {
        let kind = &crd.spec.names.kind;
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema).unwrap();
            let mut messages = BTreeSet::new();
            cel_messages(&schema, &mut messages);
            for message in messages {
                if !covered.get(kind).is_some_and(|m| m.contains(&message)) {
                    missing.push(format!("{kind} {}: {message:?}", version.name));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "CEL rules without a manifest in e2e/testdata/invalid/ (add one and a row to INVALID in e2e/tests/crds.rs):\n{}",
        missing.join("\n")
    );
}

/// Evaluates a printer column's JSONPath when it is a plain field path (`.spec.interval`);
/// `None` for filters and other JSONPath features.
fn simple_json_path<'a>(object: &'a Value, path: &str) -> Option<Option<&'a Value>> {
    let fields = path.strip_prefix('.')?;
    if fields.contains(['[', '*', '@', '?']) {
        return None;
    }
    Some(
        fields
            .split('.')
            .try_fold(object, |value, field| value.get(field)),
    )
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let cluster = TestCluster::shared().await.unwrap();
    let crds = install_crds(cluster).await;
    let scopes = cluster_scoped_kinds(crds);
    let client = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&client, "columns").await.unwrap();
    let examples: Vec<Value> = yaml_files(&workspace_root().join("examples"))
        .iter()
        .flat_map(|f| documents(f))
        .collect();

    let mut checked = Vec::new();
    for crd in crds {
        let kind = &crd.spec.names.kind;
        let Some(version) = crd.spec.versions.iter().find(|v| v.storage) else {
            continue;
        };
        let columns: &[CustomResourceColumnDefinition] = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        if columns.is_empty() {
            continue;
        }
        let example = examples
            .iter()
            .find(|doc| kind_of(doc) == kind)
            .unwrap_or_else(|| panic!("no example of {kind} to show its printer columns"));
        let mut object = retarget(vec![example.clone()], ns.name(), &scopes).remove(0);
        let cluster_scoped = crd.spec.scope == "Cluster";
        let name = if cluster_scoped {
            format!("e2e-{}", ns.name())
        } else {
            object["metadata"]["name"].as_str().unwrap().to_owned()
        };
        object["metadata"]["name"] = Value::String(name.clone());
        let _cleanup = cluster_scoped.then(|| ClusterObject {
            resource: format!("{}.{}", crd.spec.names.plural, crd.spec.group),
            name: name.clone(),
        });
        cluster
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(to_yaml_stream(std::slice::from_ref(&object)))
            .run_ok()
            .await
            .unwrap();

        let resource = format!("{}.{}", crd.spec.names.plural, crd.spec.group);
        let get = |wide: bool| {
            let mut kubectl = cluster.kubectl().args(["get", &resource, &name]);
            if !cluster_scoped {
                kubectl = kubectl.args(["-n", ns.name()]);
            }
            if wide {
                kubectl = kubectl.args(["-o", "wide"]);
            }
            kubectl.run_ok()
        };
        let narrow = get(false).await.unwrap().stdout;
        let wide = get(true).await.unwrap().stdout;
        let header = |table: &str| table.lines().next().unwrap_or_default().to_owned();
        for column in columns {
            let title = column.name.to_uppercase();
            let priority = column.priority.unwrap_or(0);
            assert!(
                header(&wide).contains(&title),
                "{kind}: column {title} missing from `kubectl get -o wide`:\n{wide}"
            );
            assert_eq!(
                header(&narrow).contains(&title),
                priority == 0,
                "{kind}: column {title} (priority {priority}) wrongly shown/hidden by `kubectl get`:\n{narrow}"
            );
        }

        // The server's Table rendering, cell by cell, for plain field paths.
        let path = if cluster_scoped {
            format!(
                "/apis/{}/{}/{}/{name}",
                crd.spec.group, version.name, crd.spec.names.plural
            )
        } else {
            format!(
                "/apis/{}/{}/namespaces/{}/{}/{name}",
                crd.spec.group,
                version.name,
                ns.name(),
                crd.spec.names.plural
            )
        };
        let request = http::Request::get(&path)
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap();
        let table: Value = client.request(request).await.unwrap();
        let stored: Value = client
            .request(http::Request::get(&path).body(Vec::new()).unwrap())
            .await
            .unwrap();
        let titles: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let expected_titles: Vec<&str> = std::iter::once("Name")
            .chain(columns.iter().map(|c| c.name.as_str()))
            .collect();
        assert_eq!(titles, expected_titles, "{kind}: Table columns");
        let cells = table["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[0], Value::String(name.clone()));
        for (column, cell) in columns.iter().zip(&cells[1..]) {
            let absent =
                simple_json_path(&stored, &column.json_path).is_some_and(|value| value.is_none());
            if column.type_ == "date" && absent {
                // A date the object does not have yet (no status) renders as nothing.
                assert!(cell.is_null(), "{kind}: column {}: {cell}", column.name);
            } else if column.type_ == "date" {
                // Rendered relative to now by the server ("5s", "3m2s").
                assert!(
                    cell.as_str().is_some_and(|age| !age.is_empty()),
                    "{kind}: column {}: {cell}",
                    column.name
                );
            } else if let Some(expected) = simple_json_path(&stored, &column.json_path) {
                let expected = expected.cloned().unwrap_or(Value::Null);
                assert_eq!(
                    cell, &expected,
                    "{kind}: column {} ({})",
                    column.name, column.json_path
                );
            }
        }
        checked.push(kind.clone());
    }
    assert!(
        checked.iter().any(|k| k == "MetricInput"),
        "MetricInput has no printer columns? checked {checked:?}"
    );
}

/// Deletes a cluster-scoped object when the test ends, however it ends.
struct ClusterObject {
    resource: String,
    name: String,
}

impl Drop for ClusterObject {
    fn drop(&mut self) {
        // No async in Drop: kubectl, synchronously, against the already running cluster.
        if let Some(cluster) = TestCluster::try_shared() {
            let _ = std::process::Command::new(cluster.kubectl_binary())
                .args([
                    "delete",
                    &self.resource,
                    &self.name,
                    "--ignore-not-found",
                    "--wait=false",
                ])
                .env("KUBECONFIG", cluster.kubeconfig_env())
                .output();
        }
    }
}
