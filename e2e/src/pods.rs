//! Standing in for pods: there is no kubelet, so a Pod created by a StatefulSet or DaemonSet
//! runs no container. A [`PodStandIn`] runs the pod's program as a local process with the
//! pod's identity and a token of the pod's ServiceAccount bound to the Pod object.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};

use crate::cluster::TestCluster;
use crate::namespace::E2E_LABEL;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::service_account::{PodIdentity, ServiceAccountIdentity};

/// Field manager of the status the harness writes in the kubelet's place.
const FIELD_MANAGER: &str = "metricshard-e2e-kubelet";

/// A local process standing in for one Pod.
///
/// The process gets `KUBECONFIG` (a token of the pod's ServiceAccount, bound to the Pod, so it
/// stops working when the Pod is deleted, as a projected token does), `POD_NAME`,
/// `POD_NAMESPACE` and `NODE_NAME`. The Pod object itself stays Pending unless the test calls
/// [`set_ready`](Self::set_ready), which writes status as a kubelet would.
#[derive(Debug)]
pub struct PodStandIn {
    pod: Pod,
    identity: ServiceAccountIdentity,
    pod_identity: PodIdentity,
    process: ManagedProcess,
}

impl PodStandIn {
    /// Starts `program args...` for `pod` (already created, e.g. by the StatefulSet
    /// controller). `NODE_NAME` is the pod's node: `spec.nodeName`, else the node a DaemonSet
    /// pod is pinned to by affinity, else `default_node`.
    pub async fn start<I, S>(
        cluster: &TestCluster,
        client: &Client,
        pod: &Pod,
        default_node: &str,
        program: &Path,
        args: I,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let namespace = pod.namespace().context("pod has no namespace")?;
        let service_account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_owned());
        let identity = ServiceAccountIdentity::request(
            cluster,
            client,
            &namespace,
            &service_account,
            Some(pod),
        )
        .await?;
        let pod_identity = PodIdentity {
            pod_name: pod.name_any(),
            namespace,
            node_name: node_of(pod).unwrap_or_else(|| default_node.to_owned()),
        };
        let process = ManagedProcess::start(
            ProcessSpec::new(format!("pod-{}", pod.name_any()), program)
                .args(args)
                .envs(identity.process_env(&pod_identity)),
        )?;
        Ok(Self {
            pod: pod.clone(),
            identity,
            pod_identity,
            process,
        })
    }

    /// The Pod as it was when the stand-in started.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// The identity the process carries.
    pub fn pod_identity(&self) -> &PodIdentity {
        &self.pod_identity
    }

    /// The ServiceAccount credentials the process uses.
    pub fn service_account(&self) -> &ServiceAccountIdentity {
        &self.identity
    }

    /// The process (kill it to make the pod die, restart it for a container restart).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// Writes the pod's status as a kubelet would: phase `Running` with `Ready` (and
    /// `ContainersReady`) `True` or `False`.
    /// For tests whose subject watches pod readiness; the production path for liveness is the
    /// collector's own Lease, which needs no help.
    pub async fn set_ready(&self, client: &Client, ready: bool) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.pod_identity.namespace);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = if ready { "True" } else { "False" };
        let condition = |type_: &str| PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            last_transition_time: Some(now.clone()),
            ..Default::default()
        };
        let patch = Pod {
            metadata: ObjectMeta {
                name: Some(self.pod_identity.pod_name.clone()),
                ..Default::default()
            },
            status: Some(PodStatus {
                // Running either way: a terminal phase could never be left again.
                phase: Some("Running".to_owned()),
                conditions: Some(vec![condition("Ready"), condition("ContainersReady")]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut patch = serde_json::to_value(patch)?;
        patch["apiVersion"] = "v1".into();
        patch["kind"] = "Pod".into();
        pods.patch_status(
            &self.pod_identity.pod_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .with_context(|| format!("writing status of pod {}", self.pod_identity.pod_name))?;
        Ok(())
    }
}

/// The node a pod runs on or is pinned to: `spec.nodeName`, else the `metadata.name` match
/// field the DaemonSet controller puts in the pod's node affinity.
pub fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = &spec.node_name {
        return Some(node.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|term| term.match_fields.iter().flatten())
        .find_map(|requirement| {
            (requirement.key == "metadata.name" && requirement.operator == "In")
                .then(|| requirement.values.as_ref()?.first().cloned())
                .flatten()
        })
}

/// Registers a Node object (no kubelet behind it) so that DaemonSets create pods for it: its
/// status says Ready and it has no taints. The caller deletes it (it is cluster-scoped).
pub async fn create_node(client: &Client, name: &str) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (E2E_LABEL.to_owned(), "true".to_owned()),
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    nodes
        .create(&PostParams::default(), &node)
        .await
        .with_context(|| format!("creating node {name}"))?;
    let status = Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                reason: Some("MetricshardE2e".to_owned()),
                message: Some("node object registered by the e2e harness; no kubelet".to_owned()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut patch = serde_json::to_value(status)?;
    patch["apiVersion"] = "v1".into();
    patch["kind"] = "Node".into();
    nodes
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .with_context(|| format!("writing status of node {name}"))?;
    // Admission taints a new node `node.kubernetes.io/not-ready:NoSchedule`; the node
    // lifecycle controller (not run here: it would mark the kubelet-less node unreachable)
    // lifts the taint once the node is Ready. Do its part.
    let node = nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "taints": null } })),
        )
        .await
        .with_context(|| format!("removing the not-ready taint of node {name}"))?;
    Ok(node)
}
