//! Output protocols: where an output writes and how.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::fanout::{EffectiveNodes, FanOutSpec};
use crate::secret_ref::{Authorization, BasicAuth};

/// Protocol and destination of an output. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.stdout), has(self.file), has(self.remoteWrite), has(self.influx), has(self.openTSDB)].filter(x, x).size() == 1").message("exactly one protocol must be set"))]
pub struct OutputProtocol {
    /// Write samples to the collector's standard output, one per line (see `file` for the format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutOutput>,
    /// Append samples to a file, one per line, in the Prometheus text exposition syntax with a
    /// millisecond timestamp: `name{label="value",...} value timestamp_ms`. Labels are sorted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileOutput>,
    /// Send to a Prometheus remote-write 1.0 endpoint (Prometheus with its receiver enabled,
    /// VictoriaMetrics, Mimir, Thanos receive, ...): protobuf, snappy-compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<RemoteWriteOutput>,
    /// Send to InfluxDB 1.x's `/write` endpoint (or anything speaking it, such as VictoriaMetrics)
    /// in line protocol. Each sample becomes a point: measurement = metric name, tags = labels,
    /// one float field `value`. NaN and infinities cannot be written and are dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influx: Option<InfluxOutput>,
    /// Send to OpenTSDB's `/api/put` (or anything speaking it, such as VictoriaMetrics) as JSON.
    /// OpenTSDB needs at least one tag and restricts tag characters; see the collector docs.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "openTSDB")]
    pub open_tsdb: Option<OpenTsdbOutput>,
}

/// Standard output of the collector process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct StdoutOutput {}

/// A file on the collector's filesystem.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FileOutput {
    /// Absolute path of the file; created if missing, appended to otherwise.
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("file.path must be absolute"))]
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// A Prometheus remote-write endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.fanOut)").message("exactly one of url and fanOut must be set"))]
#[x_kube(validation = Rule::new("!(has(self.basicAuth) && has(self.authorization))").message("at most one of basicAuth and authorization may be set"))]
pub struct RemoteWriteOutput {
    /// Full URL of the endpoint (one backend; see `fanOut` for several), e.g. `http://victoria-metrics:8428/api/v1/write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an absolute http or https URL"))]
    pub url: Option<String>,
    /// Several backend nodes instead of one `url`: series sharded over them by a consistent
    /// hash ring, or broadcast to all; every address of a node gets a copy. Exactly one of `url`
    /// and `fanOut` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutSpec>,
    /// How long one write may take before it is abandoned and retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// HTTP basic authentication, from Secrets (see [`crate::secret_ref`] for their namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// An `Authorization` header (`Bearer <token>` by default), the credentials from a Secret.
    /// At most one of `basicAuth` and `authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// An InfluxDB 1.x `/write` endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.fanOut)").message("exactly one of url and fanOut must be set"))]
pub struct InfluxOutput {
    /// Base URL of the server (one backend; see `fanOut` for several), e.g.
    /// `http://influxdb:8086`; `/write` is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an absolute http or https URL"))]
    pub url: Option<String>,
    /// Several backend nodes instead of one `url`: series sharded over them by a consistent
    /// hash ring, or broadcast to all; every address of a node gets a copy. Exactly one of `url`
    /// and `fanOut` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutSpec>,
    /// Database to write to.
    #[schemars(length(min = 1, max = 253))]
    pub database: String,
    /// Retention policy; the database's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub retention_policy: Option<String>,
    /// Timestamp precision of the written points.
    #[serde(default)]
    pub precision: InfluxPrecision,
    /// How long one write may take before it is abandoned and retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// InfluxDB 1.x user name and password, from Secrets, sent as HTTP basic authentication
    /// (which 1.x accepts like its `u`/`p` parameters, keeping the password out of URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

/// Timestamp precision of Influx line protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InfluxPrecision {
    /// Nanoseconds.
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds, the resolution of every sample metricshard gathers.
    #[default]
    Ms,
    /// Seconds.
    S,
}

/// An OpenTSDB `/api/put` endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.fanOut)").message("exactly one of url and fanOut must be set"))]
pub struct OpenTsdbOutput {
    /// Base URL of the server (one backend; see `fanOut` for several), e.g.
    /// `http://opentsdb:4242`; `/api/put?details` is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']").message("url must be an absolute http or https URL"))]
    pub url: Option<String>,
    /// Several backend nodes instead of one `url`: series sharded over them by a consistent
    /// hash ring, or broadcast to all; every address of a node gets a copy. Exactly one of `url`
    /// and `fanOut` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutSpec>,
    /// How long one write may take before it is abandoned and retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl OutputProtocol {
    /// The backend nodes of an HTTP protocol (`remoteWrite`, `influx`, `openTSDB`): its `fanOut`,
    /// or its `url` as a single node. `None` for `stdout` and `file`, which have no nodes.
    pub fn nodes(&self) -> Option<EffectiveNodes> {
        if let Some(output) = &self.remote_write {
            return EffectiveNodes::of(output.url.as_ref(), output.fan_out.as_ref());
        }
        if let Some(output) = &self.influx {
            return EffectiveNodes::of(output.url.as_ref(), output.fan_out.as_ref());
        }
        if let Some(output) = &self.open_tsdb {
            return EffectiveNodes::of(output.url.as_ref(), output.fan_out.as_ref());
        }
        None
    }

    /// This protocol writing to one `address` instead of its `url` or `fanOut`: what one
    /// address of a fanned-out output runs. `stdout` and `file` are returned unchanged.
    pub fn for_address(&self, address: &str) -> Self {
        let mut single = self.clone();
        if let Some(output) = &mut single.remote_write {
            output.url = Some(address.to_owned());
            output.fan_out = None;
        }
        if let Some(output) = &mut single.influx {
            output.url = Some(address.to_owned());
            output.fan_out = None;
        }
        if let Some(output) = &mut single.open_tsdb {
            output.url = Some(address.to_owned());
            output.fan_out = None;
        }
        single
    }
}
