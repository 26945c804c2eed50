//! `MetricInput`: one gather task and where its samples go.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::common::OutputRef;
use crate::duration::Duration;

/// A gather task: what to collect, how often, and which outputs receive the samples.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "metricshard.io",
    version = "v1alpha1",
    kind = "MetricInput",
    namespaced,
    doc = "A gather task: what to collect, how often, and which outputs receive the samples.",
    status = "MetricInputStatus",
    cel,
    shortname = "mi",
    category = "metricshard",
    printcolumn = r#"{"name":"Interval","type":"string","jsonPath":".spec.interval"}"#,
    printcolumn = r#"{"name":"Placement","type":"string","jsonPath":".spec.placement.mode"}"#,
    printcolumn = r#"{"name":"Collector","type":"string","jsonPath":".status.collector"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Last Gather","type":"date","jsonPath":".status.lastGatherTime","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.interval) > duration('0s')").message("spec.interval must be greater than zero").field_path(".interval"))]
#[x_kube(validation = Rule::new("!has(self.timeout) || duration(self.timeout) > duration('0s')").message("spec.timeout must be greater than zero").field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.timeout) || duration(self.timeout) <= duration(self.interval)").message("spec.timeout must not exceed spec.interval").field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.jitter) || duration(self.jitter) < duration(self.interval)").message("spec.jitter must be shorter than spec.interval").field_path(".jitter"))]
pub struct MetricInputSpec {
    /// How often the task gathers, in Go duration syntax (`15s`, `1m`). Ticks sit at a stable
    /// offset within the interval derived from the input's namespace/name, so every collector
    /// that runs this input gathers at the same instants.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How long one gather may take before it is abandoned; at most `interval`.
    /// Defaults to the smaller of 10s and `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Largest extra delay added to each tick, shorter than `interval`. The delay of every tick
    /// is derived from the input's key and the tick number, so it is the same on every collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// What to gather. Exactly one source must be set.
    pub source: InputSource,
    /// Labels added to every sample this input produces. A label of the same name already on
    /// the sample is overwritten.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[a-zA-Z_][a-zA-Z0-9_]*$') && !k.startsWith('__'))").message("label names must match [a-zA-Z_][a-zA-Z0-9_]* and must not start with __"))]
    pub labels: BTreeMap<String, String>,
    /// The outputs that receive this input's samples. A `MetricOutput` must be in the input's
    /// namespace; a `ClusterMetricOutput` must admit the namespace through its `namespaceSelector`.
    #[schemars(length(min = 1, max = 16))]
    pub outputs: Vec<OutputRef>,
    /// Where the task runs.
    #[serde(default)]
    pub placement: Placement,
}

fn default_interval() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(30))
}

impl MetricInputSpec {
    /// The effective gather timeout: `timeout` if set, else the smaller of 10s and `interval`.
    pub fn effective_timeout(&self) -> std::time::Duration {
        self.timeout
            .as_ref()
            .map(Duration::get)
            .unwrap_or_else(|| self.interval.get().min(std::time::Duration::from_secs(10)))
    }

    /// The effective largest jitter (zero when unset).
    pub fn effective_jitter(&self) -> std::time::Duration {
        self.jitter.as_ref().map(Duration::get).unwrap_or_default()
    }
}

/// What an input gathers. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.prometheus), has(self.host), has(self.push)].filter(x, x).size() == 1").message("exactly one source must be set"))]
pub struct InputSource {
    /// Scrape Prometheus exposition-format endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSource>,
    /// Metrics of the node the collector runs on, as node_exporter names them (use with
    /// `placement.mode: EveryNode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<crate::host::HostSource>,
    /// Receive samples pushed over HTTP (remote write, Influx, OpenTSDB, Open-Falcon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::push::PushSource>,
}

/// A Prometheus scrape of targets listed statically and/or discovered from files or an HTTP
/// endpoint in Prometheus' `file_sd_configs` / `http_sd_configs` formats.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.staticTargets) && size(self.staticTargets) > 0) || has(self.fileSD) || has(self.httpSD) || (has(self.kubernetesSD) && size(self.kubernetesSD) > 0)").message("at least one of staticTargets, fileSD, httpSD and kubernetesSD must be set"))]
#[x_kube(validation = Rule::new("!(has(self.basicAuth) && has(self.authorization))").message("at most one of basicAuth and authorization may be set"))]
pub struct PrometheusSource {
    /// Targets as `host:port`, scraped at `scheme://host:port{metricsPath}`. Each target's samples
    /// carry `instance="host:port"` and `job="<namespace>/<name>"` unless they already have them.
    /// Optional when `fileSD`, `httpSD` or `kubernetesSD` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 261)))]
    #[x_kube(validation = Rule::new("self.all(t, t.matches('^(\\\\[[0-9a-fA-F:.]+\\\\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?):[0-9]{1,5}$'))").message("every static target must be host:port"))]
    pub static_targets: Vec<String>,
    /// Targets discovered from files in Prometheus' `file_sd_configs` format. Each discovered
    /// target also carries `__meta_filepath` (the file it came from) during relabeling.
    #[serde(default, rename = "fileSD", skip_serializing_if = "Option::is_none")]
    pub file_sd: Option<FileSd>,
    /// Targets discovered from an HTTP endpoint in Prometheus' `http_sd_configs` format. Each
    /// discovered target also carries `__meta_url` (the endpoint) during relabeling.
    #[serde(default, rename = "httpSD", skip_serializing_if = "Option::is_none")]
    pub http_sd: Option<HttpSd>,
    /// Targets discovered from the Kubernetes API, as Prometheus' `kubernetes_sd_configs`; each
    /// discovered target carries that role's `__meta_kubernetes_*` labels during relabeling.
    #[serde(default, rename = "kubernetesSD", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub kubernetes_sd: Vec<crate::kubernetes_sd::KubernetesSd>,
    /// URL scheme used to scrape the targets.
    #[serde(default)]
    pub scheme: Scheme,
    /// HTTP path of the metrics endpoint on every target.
    #[serde(default = "default_metrics_path")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("metricsPath must start with /"))]
    pub metrics_path: String,
    /// Relabeling of each target before it is scraped, as Prometheus' `relabel_configs`. A target
    /// starts with `__address__` (the static or discovered target), `__scheme__`,
    /// `__metrics_path__`, `job`, and for discovered targets its group's labels and
    /// `__meta_filepath` or `__meta_url`;
    /// `keep`/`drop` decide whether it is scraped; afterwards `instance` defaults to `__address__`
    /// and labels starting with `__` are removed. What remains labels every sample of the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub relabel_configs: Vec<RelabelRule>,
    /// Relabeling of each scraped sample, as Prometheus' `metric_relabel_configs`, applied after
    /// the target's labels and `spec.labels`; the metric name is the label `__name__`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub metric_relabel_configs: Vec<RelabelRule>,
    /// As Prometheus' `honor_labels`. `false` (the default): when a scraped label has the name
    /// of a target label (`job`, `instance`, relabeling results, `spec.labels`), the target's
    /// value wins and the scraped one is kept as `exported_<name>`. `true`: the scraped value
    /// wins and the target label is left out (for federation and Pushgateway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub honor_labels: bool,
    /// As Prometheus' `honor_timestamps` (default `true`): keep the timestamps targets expose.
    /// `false` stamps every sample with the tick time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_timestamps: Option<bool>,
    /// Most samples one target's scrape may yield after metric relabeling; more fail the whole
    /// scrape of that target (`up` 0, nothing else written), as Prometheus' `sample_limit`.
    /// 0 or unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u64>,
    /// Most labels (the metric name included) a sample may have after relabeling; a sample with
    /// more fails the whole scrape of its target, as Prometheus' `label_limit`. 0 or unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u64>,
    /// Longest label name in bytes, as Prometheus' `label_name_length_limit`; a longer one fails
    /// the whole scrape of its target. 0 or unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u64>,
    /// Longest label value (the metric name included) in bytes, as Prometheus'
    /// `label_value_length_limit`; a longer one fails the whole scrape of its target. 0 or unset:
    /// no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u64>,
    /// Largest uncompressed response body, as Prometheus' `body_size_limit`, in the Prometheus
    /// Operator's syntax (`512KiB`, `10MB`, base 2 either way); a larger body fails the scrape of
    /// its target. `0` means no limit; unset means 64MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^(0|([0-9]*[.])?[0-9]+((K|M|G|T|E|P)i?)?B)$"))]
    pub body_size_limit: Option<String>,
    /// TLS settings of `https` scrapes; Secrets are read from the input's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<crate::secret_ref::TlsConfig>,
    /// HTTP basic authentication of every scrape, from Secrets of the input's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<crate::secret_ref::BasicAuth>,
    /// An `Authorization` header on every scrape (`Bearer <token>` by default), the credentials
    /// from a Secret of the input's namespace. At most one of `basicAuth` and `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<crate::secret_ref::Authorization>,
}

/// File-based discovery, as Prometheus' `file_sd_configs`: every file holds a list of target
/// groups `[{"targets": ["host:port", ...], "labels": {"name": "value"}}]`, as JSON (`.json`)
/// or YAML (`.yaml`, `.yml`). Files are watched and re-read every `refreshInterval`; a file that
/// cannot be read or parsed keeps the targets it last yielded and is reported as a gather
/// problem with reason `discovery`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.refreshInterval) > duration('0s')").message("fileSD.refreshInterval must be greater than zero").field_path(".refreshInterval"))]
pub struct FileSd {
    /// Absolute paths of the files to read; the last path element may be a glob with `*` and
    /// `?` (`/etc/targets/*.json`). In local mode these are paths on the collector's machine; in
    /// a cluster they are paths inside the collector pod (mount a ConfigMap or volume there).
    #[schemars(length(min = 1, max = 32), inner(length(max = 4096)))]
    #[x_kube(validation = Rule::new("self.all(f, f.startsWith('/'))").message("fileSD.files must be absolute paths"))]
    pub files: Vec<String>,
    /// How often every file is re-read in addition to watching it, in Go duration syntax.
    #[serde(default = "default_file_sd_refresh")]
    pub refresh_interval: Duration,
}

/// HTTP-based discovery, as Prometheus' `http_sd_configs`: a GET of `url` must answer 200 with
/// `Content-Type: application/json` and a JSON list of target groups; anything else is reported
/// as a gather problem with reason `discovery` and the targets last discovered are kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.refreshInterval) > duration('0s')").message("httpSD.refreshInterval must be greater than zero").field_path(".refreshInterval"))]
pub struct HttpSd {
    /// The endpoint, an absolute `http://` or `https://` URL.
    #[schemars(length(max = 4096))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("httpSD.url must be an absolute http or https URL"))]
    pub url: String,
    /// How often the endpoint is queried, in Go duration syntax.
    #[serde(default = "default_http_sd_refresh")]
    pub refresh_interval: Duration,
}

fn default_file_sd_refresh() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(300))
}

fn default_http_sd_refresh() -> Duration {
    Duration::from_std(std::time::Duration::from_secs(60))
}

/// One relabeling step with the semantics of Prometheus' `relabel_config` (and the field names of
/// the Prometheus Operator). Regular expressions are fully anchored, as in Prometheus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.action != 'hashmod' || has(self.modulus)").message("action hashmod needs modulus"))]
#[x_kube(validation = Rule::new("!(self.action in ['replace', 'hashmod', 'lowercase', 'uppercase', 'keepequal', 'dropequal']) || has(self.targetLabel)").message("this action needs targetLabel"))]
pub struct RelabelRule {
    /// Labels whose values are joined with `separator` to form the step's input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub source_labels: Vec<String>,
    /// Placed between the joined source values; `;` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub separator: Option<String>,
    /// The label the step writes (`replace`, `hashmod`, `lowercase`, `uppercase`, `keepequal`,
    /// `dropequal`); may use `$1`-style references for `replace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub target_label: Option<String>,
    /// RE2-style regular expression, fully anchored; `(.*)` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub regex: Option<String>,
    /// Divisor of `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub modulus: Option<u64>,
    /// What `replace` writes and `labelmap` names; `$1` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub replacement: Option<String>,
    /// What the step does.
    #[serde(default)]
    pub action: RelabelAction,
}

/// The relabeling actions of Prometheus.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RelabelAction {
    /// Write `replacement` (expanded with the regex groups) to `targetLabel` when the regex matches.
    #[default]
    Replace,
    /// Keep only what the regex matches.
    Keep,
    /// Drop what the regex matches.
    Drop,
    /// Keep when the joined source values equal `targetLabel`'s value.
    KeepEqual,
    /// Drop when the joined source values equal `targetLabel`'s value.
    DropEqual,
    /// Write the md5-based hash of the source values modulo `modulus` to `targetLabel`.
    HashMod,
    /// Copy labels whose names match the regex to the name given by `replacement`.
    LabelMap,
    /// Remove labels whose names match the regex.
    LabelDrop,
    /// Remove labels whose names do not match the regex.
    LabelKeep,
    /// Write the lower-cased source values to `targetLabel`.
    Lowercase,
    /// Write the upper-cased source values to `targetLabel`.
    Uppercase,
}

fn default_metrics_path() -> String {
    "/metrics".to_owned()
}

/// URL scheme of a scrape.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTP over TLS, verified against the system roots.
    Https,
}

impl Scheme {
    /// The scheme as it appears in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Where an input's task runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodeSelector) || self.mode == 'EveryNode'").message("placement.nodeSelector needs placement.mode EveryNode").field_path(".nodeSelector"))]
pub struct Placement {
    /// `Sharded`: exactly one collector of the StatefulSet runs the task. `EveryNode`: every
    /// node-local collector runs its own copy (for node-local sources). In local mode the one
    /// collector runs every input either way.
    #[serde(default)]
    pub mode: PlacementMode,
    /// `EveryNode` only: the node labels (name → exact value) a collector's node must carry to
    /// run the task, as a pod's `nodeSelector`. Unset: every node. Collectors re-read their
    /// node's labels periodically, so relabelling a node starts or stops the task there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// How an input is placed on collectors.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum PlacementMode {
    /// One collector of the sharded StatefulSet runs the task.
    #[default]
    Sharded,
    /// Every node-local collector runs the task.
    EveryNode,
}

/// What the operator and the collectors report about an input.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricInputStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The collector pod the operator assigned this input to (`Sharded` placement), or
    /// `EveryNode` for inputs every node-local collector runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
    /// When the collector running the input last finished a gather without error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gather_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Samples produced by the last gather.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gather_samples: Option<i64>,
    /// The last problem the collector saw (a failed gather, a target down, an output it may not
    /// use), cleared once everything works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Conditions following the Kubernetes API conventions. `Assigned` (written by the operator)
    /// says whether a live collector owns the input; `Ready` (written by that collector) whether
    /// its gathers succeed and its samples can be delivered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// `EveryNode` inputs: one entry per node whose collector runs the input, each written by
    /// that collector (its own server-side-apply field manager) and removed when it stops
    /// running the input there. `Ready` and `lastError` above are not written for such inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["node"]))]
    pub nodes: Vec<NodeGatherStatus>,
}

/// How an `EveryNode` input fares on one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeGatherStatus {
    /// The node.
    pub node: String,
    /// Whether the input's gathers succeed and its samples are delivered there: `True`,
    /// `False` or `Unknown`, as the `Ready` condition of a sharded input.
    pub ready: String,
    /// CamelCase reason, as the `Ready` condition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The problem there, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation the node's collector runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the node's collector last finished a gather without error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gather_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Samples produced by its last gather.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gather_samples: Option<i64>,
}
