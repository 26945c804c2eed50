//! Fan-out of an HTTP output over several backend nodes (`fanOut` of `remoteWrite`, `influx`,
//! `openTSDB`): a consistent hash ring keyed by series identity, or a copy to every node.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Ring points per node unless `virtualNodes` says otherwise. Must equal the collector's
/// `fanout::DEFAULT_VIRTUAL_NODES` (a collector test pins it).
pub const DEFAULT_VIRTUAL_NODES: u32 = 128;

/// Several backend nodes behind one output, as an Open-Falcon transfer's cluster: each node has
/// a name (its place on the hash ring) and one or more addresses, every one of which receives a
/// copy of what the node receives. Each address has its own buffer and delivery loop, so a slow
/// or dead address only backs up its own queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FanOutSpec {
    /// The backend nodes. A node's name places it on the ring: renaming a node moves its
    /// series, reordering the list moves nothing.
    #[schemars(length(min = 1, max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<BackendNode>,
    /// `Hash` (the default): each series (metric name and labels) goes to one node, chosen by a
    /// consistent hash ring, so adding a node moves only about 1/(N+1) of the series.
    /// `Broadcast`: every sample goes to every node.
    #[serde(default)]
    pub mode: FanOutMode,
    /// Points each node owns on the hash ring (`Hash` mode). More points spread series more
    /// evenly (with 128, the largest of 100 nodes gets about 1.18 × the mean) at 16 bytes of
    /// collector memory per point.
    #[serde(default = "default_virtual_nodes")]
    #[schemars(range(min = 1, max = 4096))]
    pub virtual_nodes: u32,
}

fn default_virtual_nodes() -> u32 {
    DEFAULT_VIRTUAL_NODES
}

/// One backend node: a name on the ring and the addresses that each receive a copy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendNode {
    /// Name of the node, unique within the output; it places the node on the ring and labels its
    /// metrics and status.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$"))]
    pub name: String,
    /// URLs of the node's replicas, in the form of the protocol's `url` (for `remoteWrite` the
    /// full endpoint, for `influx` and `openTSDB` the base URL). Each one gets every sample
    /// routed to the node.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 2048)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(a, isURL(a) && url(a).getScheme() in ['http', 'https'])").message("every address must be an absolute http or https URL"))]
    pub addresses: Vec<String>,
}

/// How a fanned-out output spreads samples over its nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum FanOutMode {
    /// Each series goes to one node, chosen by the consistent hash ring.
    #[default]
    Hash,
    /// Every sample goes to every node.
    Broadcast,
}

/// The nodes of an HTTP protocol: its `fanOut`, or its single `url` as one node named
/// [`SINGLE_NODE_NAME`] with that one address.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectiveNodes {
    /// Nodes in spec order.
    pub nodes: Vec<BackendNode>,
    /// Spreading mode.
    pub mode: FanOutMode,
    /// Ring points per node.
    pub virtual_nodes: u32,
    /// True when the output named a single `url` (no `fanOut`).
    pub single_url: bool,
}

/// The node name of an output that sets `url` instead of `fanOut`, and of `stdout` and `file`.
pub const SINGLE_NODE_NAME: &str = "default";

impl EffectiveNodes {
    /// `fan_out` when set, else one node with `url`. `None` when neither is set (the schema
    /// refuses that).
    pub fn of(url: Option<&String>, fan_out: Option<&FanOutSpec>) -> Option<Self> {
        match (fan_out, url) {
            (Some(fan_out), _) => Some(Self {
                nodes: fan_out.nodes.clone(),
                mode: fan_out.mode,
                virtual_nodes: fan_out.virtual_nodes,
                single_url: false,
            }),
            (None, Some(url)) => Some(Self::single(url.clone())),
            (None, None) => None,
        }
    }

    /// One node with one address.
    pub fn single(address: String) -> Self {
        Self {
            nodes: vec![BackendNode { name: SINGLE_NODE_NAME.to_owned(), addresses: vec![address] }],
            mode: FanOutMode::Hash,
            virtual_nodes: DEFAULT_VIRTUAL_NODES,
            single_url: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::{ManifestObject, parse_documents};

    fn output(remote_write: &str) -> String {
        format!(
            "apiVersion: metricshard.io/v1alpha1\nkind: MetricOutput\nmetadata: {{name: out, namespace: demo}}\nspec:\n  protocol:\n    remoteWrite: {remote_write}\n"
        )
    }

    fn problems(yaml: &str) -> Vec<String> {
        parse_documents(yaml).into_iter().filter_map(Result::err).flat_map(|e| e.problems).map(|p| p.to_string()).collect()
    }

    #[test]
    fn fan_out_parses_with_defaults() {
        let yaml = output("{fanOut: {nodes: [{name: a, addresses: ['http://a1:8428/api/v1/write', 'http://a2:8428/api/v1/write']}, {name: b, addresses: ['http://b:8428/api/v1/write']}]}}");
        let Ok(ManifestObject::Output(parsed)) = parse_documents(&yaml).remove(0) else { panic!("{yaml}") };
        let remote_write = parsed.spec.protocol.remote_write.unwrap();
        let nodes = super::EffectiveNodes::of(remote_write.url.as_ref(), remote_write.fan_out.as_ref()).unwrap();
        assert_eq!(nodes.mode, super::FanOutMode::Hash);
        assert_eq!(nodes.virtual_nodes, super::DEFAULT_VIRTUAL_NODES);
        assert_eq!(nodes.nodes[0].addresses.len(), 2);
        assert!(!nodes.single_url);
    }

    #[test]
    fn url_and_fan_out_exclude_each_other_and_addresses_are_checked() {
        let both = problems(&output("{url: 'http://a/api/v1/write', fanOut: {nodes: [{name: a, addresses: ['http://a']}]}}"));
        assert!(both.iter().any(|p| p.contains("exactly one of url and fanOut")), "{both:?}");
        let neither = problems(&output("{timeout: 5s}"));
        assert!(neither.iter().any(|p| p.contains("exactly one of url and fanOut")), "{neither:?}");
        let address = problems(&output("{fanOut: {nodes: [{name: a, addresses: ['a:8428']}]}}"));
        assert!(address.iter().any(|p| p.contains("every address must be an absolute http or https URL")), "{address:?}");
        let single = output("{url: 'http://a/api/v1/write'}");
        assert!(problems(&single).is_empty());
    }
}
