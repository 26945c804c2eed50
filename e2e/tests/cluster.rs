//! The Kubernetes side of the test bed does what the end-to-end tests rely on: RBAC with
//! ServiceAccount tokens, controllers that create Pods and collect garbage, namespace teardown,
//! and processes that carry a ServiceAccount's identity.
//!
//! Runs against the local control plane, or against `$KUBECONFIG`'s cluster when set.

// Test code through and through, helpers included: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, Pod, PodSpec, PodTemplateSpec, Secret,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, ResourceExt as _};
use metricshard_e2e::{
    ManagedProcess, Outcome, PodIdentity, ProcessSpec, ServiceAccountIdentity, TestCluster,
    TestNamespace, wait_for,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn is_forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn rbac_applies_to_service_account_tokens() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&admin, "rbac").await.unwrap();
    let sa = ServiceAccountIdentity::create(cluster, &admin, ns.name(), "reader")
        .await
        .unwrap();
    let as_sa = sa.client().await.unwrap();

    let secrets: Api<Secret> = Api::namespaced(as_sa.clone(), ns.name());
    let denied = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(
        is_forbidden(&denied),
        "listing secrets without a Role: {denied}"
    );

    let role = Role {
        metadata: meta("read-configmaps"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".to_owned()]),
            verbs: vec!["get".to_owned(), "list".to_owned()],
            ..Default::default()
        }]),
    };
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: meta("read-configmaps"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: "read-configmaps".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: sa.name().to_owned(),
            namespace: Some(ns.name().to_owned()),
            ..Default::default()
        }]),
    };
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let config_maps: Api<ConfigMap> = Api::namespaced(as_sa.clone(), ns.name());
    // RBAC changes reach the authorizer through its informers: not instantly.
    wait_for(
        "the RoleBinding to grant listing ConfigMaps",
        TIMEOUT,
        || async { config_maps.list(&ListParams::default()).await.map(|_| true) },
    )
    .await
    .unwrap();
    let still_denied = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(is_forbidden(&still_denied), "{still_denied}");
    let create_denied = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("x"),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(is_forbidden(&create_denied), "{create_denied}");

    // The kubeconfig file gives a separate process the same identity.
    let whoami = cluster
        .kubectl_as(sa.kubeconfig_path())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .run_ok()
        .await
        .unwrap();
    assert_eq!(whoami.stdout, sa.username());
    let can_i = cluster
        .kubectl_as(sa.kubeconfig_path())
        .args(["auth", "can-i", "list", "configmaps"])
        .run()
        .await
        .unwrap();
    assert_eq!(can_i.stdout.trim(), "yes", "{can_i}");
    let cannot = cluster
        .kubectl_as(sa.kubeconfig_path())
        .args(["auth", "can-i", "list", "secrets"])
        .run()
        .await
        .unwrap();
    assert_eq!(cannot.stdout.trim(), "no", "{cannot}");
}

#[tokio::test]
async fn a_process_carries_the_pod_identity_and_token() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&admin, "identity").await.unwrap();
    let sa = ServiceAccountIdentity::create(cluster, &admin, ns.name(), "collector")
        .await
        .unwrap();
    let pod = PodIdentity {
        pod_name: "collector-0".to_owned(),
        namespace: ns.name().to_owned(),
        node_name: "node-a".to_owned(),
    };

    // A stand-in for a collector: a process that only knows its environment.
    let script = r#"echo "pod=$POD_NAME ns=$POD_NAMESPACE node=$NODE_NAME"; exec "$KUBECTL" auth whoami -o 'jsonpath={.status.userInfo.username}'"#;
    let mut process = ManagedProcess::start(
        ProcessSpec::new("identity", "/bin/sh")
            .args(["-c", script])
            .envs(sa.process_env(&pod))
            .env("KUBECTL", cluster.kubectl_binary()),
    )
    .unwrap();
    let status = process.wait_exit(TIMEOUT).unwrap();
    let log = process.log();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("pod=collector-0 ns={} node=node-a", ns.name())),
        "{log}"
    );
    assert!(log.contains(&sa.username()), "{log}");
}

#[tokio::test]
async fn a_token_bound_to_a_pod_dies_with_the_pod() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&admin, "bound").await.unwrap();
    let pods = ns.api::<Pod>();
    let pod = Pod {
        metadata: meta("collector-0"),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".to_owned(),
                image: Some("example.invalid/none".to_owned()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let sa = ServiceAccountIdentity::request(cluster, &admin, ns.name(), "default", Some(&pod))
        .await
        .unwrap();
    let as_sa = sa.client().await.unwrap();
    // Any authenticated call will do; SelfSubjectReview needs no RBAC.
    let whoami = || {
        cluster
            .kubectl_as(sa.kubeconfig_path())
            .args(["auth", "whoami"])
            .run()
    };
    assert!(whoami().await.unwrap().success());
    drop(as_sa);

    pods.delete(
        "collector-0",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_for(
        "the token of a deleted pod to be rejected",
        TIMEOUT,
        || async {
            let output = whoami().await?;
            anyhow::Ok(
                Outcome::ready_if(
                    !output.success() && output.stderr.contains("Unauthorized"),
                    output.stderr,
                )
                .map_ready(),
            )
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn controllers_create_pods_and_collect_garbage() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&admin, "controllers").await.unwrap();
    let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    let statefulset = StatefulSet {
        metadata: meta("web"),
        spec: Some(StatefulSetSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            service_name: Some("web".to_owned()),
            // Both at once: with no kubelet, an OrderedReady set would wait for web-0 forever.
            pod_management_policy: Some("Parallel".to_owned()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".to_owned(),
                        image: Some("example.invalid/none".to_owned()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let statefulset = ns
        .api::<StatefulSet>()
        .create(&PostParams::default(), &statefulset)
        .await
        .unwrap();
    let pods = ns.api::<Pod>();
    let names = wait_for(
        "the StatefulSet controller to create web-0 and web-1",
        TIMEOUT,
        || async {
            let mut names: Vec<String> = pods
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .map(|p| p.name_any())
                .collect();
            names.sort();
            anyhow::Ok(Outcome::ready_if(names.len() == 2, names))
        },
    )
    .await
    .unwrap();
    assert_eq!(names, ["web-0", "web-1"]);
    if cluster.is_local() {
        // No scheduler, no kubelet: the pods exist but never run.
        let pod = pods.get("web-0").await.unwrap();
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }

    // Garbage collection of owned objects.
    let owned = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned".to_owned()),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".to_owned(),
                kind: "StatefulSet".to_owned(),
                name: "web".to_owned(),
                uid: statefulset.uid().unwrap(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    let config_maps = ns.api::<ConfigMap>();
    config_maps
        .create(&PostParams::default(), &owned)
        .await
        .unwrap();
    ns.api::<StatefulSet>()
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_for(
        "the garbage collector to delete the owned ConfigMap and pods",
        TIMEOUT,
        || async {
            let config_map = config_maps.get_opt("owned").await?;
            let pods_left = pods.list(&ListParams::default()).await?.items.len();
            anyhow::Ok(
                Outcome::ready_if(
                    config_map.is_none() && pods_left == 0,
                    (config_map.is_some(), pods_left),
                )
                .map_ready(),
            )
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn namespaces_are_unique_and_torn_down() {
    let cluster = TestCluster::shared().await.unwrap();
    let admin = cluster.client().await.unwrap();
    let a = TestNamespace::new(&admin, "teardown").await.unwrap();
    let b = TestNamespace::new(&admin, "teardown").await.unwrap();
    assert_ne!(a.name(), b.name());
    let name = a.name().to_owned();
    // The root CA publisher works in every namespace (clients in pods trust the API with it).
    let config_maps = a.api::<ConfigMap>();
    wait_for("kube-root-ca.crt in the new namespace", TIMEOUT, || async {
        config_maps.get_opt("kube-root-ca.crt").await
    })
    .await
    .unwrap();
    a.delete().await.unwrap();
    drop(b); // deleted by Drop
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    wait_for(
        "the namespace controller to finish deleting the namespace",
        Duration::from_secs(120),
        || async { namespaces.get_opt(&name).await.map(|ns| ns.is_none()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn daemonset_pods_get_a_stand_in_process_per_node() {
    let cluster = TestCluster::shared().await.unwrap();
    if !cluster.is_local() {
        // Registering fake nodes in a real cluster would be rude; its nodes run real pods.
        eprintln!("skipped: the cluster has real nodes and kubelets");
        return;
    }
    let admin = cluster.client().await.unwrap();
    let ns = TestNamespace::new(&admin, "daemonset").await.unwrap();
    let node_name = format!("node-{}", ns.name());
    let _node = metricshard_e2e::create_node(&admin, &node_name)
        .await
        .unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());

    let labels = BTreeMap::from([("app".to_owned(), "agent".to_owned())]);
    let daemonset = k8s_openapi::api::apps::v1::DaemonSet {
        metadata: meta("agent"),
        spec: Some(k8s_openapi::api::apps::v1::DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".to_owned(),
                        image: Some("example.invalid/none".to_owned()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    ns.api::<k8s_openapi::api::apps::v1::DaemonSet>()
        .create(&PostParams::default(), &daemonset)
        .await
        .unwrap();
    let pods = ns.api::<Pod>();
    let pod = wait_for(
        "the DaemonSet controller to create a pod for the node",
        TIMEOUT,
        || async {
            let list = pods.list(&ListParams::default()).await?;
            anyhow::Ok(list.items.into_iter().next())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        metricshard_e2e::node_of(&pod).as_deref(),
        Some(node_name.as_str())
    );

    let script = format!(
        r#"echo "node=$NODE_NAME pod=$POD_NAME"; exec '{}' get pod "$POD_NAME" -o name"#,
        cluster.kubectl_binary().display()
    );
    let mut stand_in = metricshard_e2e::PodStandIn::start(
        cluster,
        &admin,
        &pod,
        "unused",
        Path::new("/bin/sh"),
        ["-c", &script],
    )
    .await
    .unwrap();
    // The default ServiceAccount may not read pods: the process really acts as the pod's SA.
    let status = stand_in.process().wait_exit(TIMEOUT).unwrap();
    let log = stand_in.process().log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("node={node_name} pod={}", pod.name_any())),
        "{log}"
    );
    assert!(log.contains("forbidden"), "{log}");

    stand_in.set_ready(&admin, true).await.unwrap();
    let running = pods.get(&pod.name_any()).await.unwrap();
    assert_eq!(
        running.status.and_then(|s| s.phase).as_deref(),
        Some("Running")
    );

    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
}
