//! The `push` source of a `MetricInput`: an HTTP listener that receives samples other programs
//! push (Prometheus remote write, Influx line protocol, OpenTSDB `/api/put`, Open-Falcon JSON),
//! the role of Open-Falcon's transfer.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Receive pushed samples on an HTTP listener owned by the input's task: adding the input binds
/// the address, a new generation rebinds it, deleting the input closes it. Every accepted sample
/// gets the input's `labels` and goes to the input's `outputs` like a gathered one. `interval`,
/// `timeout` and `jitter` of the input do not apply.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PushSource {
    /// Address to listen on, `host:port` (`0.0.0.0:9091`, `127.0.0.1:9091`, `[::]:9091`). In a
    /// cluster this is an address inside the collector pod that owns the input; two push inputs
    /// on one collector need different ports (a conflict is reported on the input's status).
    #[schemars(length(min = 3, max = 261))]
    #[x_kube(validation = Rule::new("self.matches('^(\\\\[[0-9a-fA-F:.]+\\\\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?):[0-9]{1,5}$')").message("push.listen must be host:port"))]
    pub listen: String,
    /// Which protocols the listener accepts; all of them when unset. `RemoteWrite`:
    /// `POST /api/v1/write` (Prometheus remote write 1.0). `Influx`: `POST /write` (InfluxDB 1.x)
    /// and `POST /api/v2/write` (InfluxDB 2.x). `OpenTSDB`: `POST /api/put`. `OpenFalcon`:
    /// `POST /api/push` (Open-Falcon agent JSON, as its transfer's HTTP API).
    #[serde(default = "all_push_protocols")]
    #[schemars(length(min = 1, max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub protocols: Vec<PushProtocol>,
    /// Largest request body accepted, in bytes, both as sent and after decompression; larger
    /// requests are answered 413. Defaults to 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 268435456))]
    pub max_body_bytes: Option<i64>,
    /// Largest number of samples one request may carry; more is answered 413. Defaults to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_samples_per_request: Option<i64>,
    /// Requests handled at the same time; a request beyond this, or one whose samples cannot be
    /// handed to the outputs within 5s, is answered 503 with `Retry-After` so that the client
    /// retries later instead of the collector buffering without bound. Defaults to 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_concurrent_requests: Option<i64>,
    /// Credentials every request must present; without it the listener accepts anyone who can
    /// reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PushAuth>,
    /// Relabeling of each pushed sample, as Prometheus' `metric_relabel_configs` (and vmagent's
    /// relabeling of what it receives), applied after `spec.labels`; the metric name is the
    /// label `__name__`. A sample that is dropped, or whose name becomes empty, is not
    /// delivered; the request is still answered as accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub metric_relabel_configs: Vec<crate::input::RelabelRule>,
}

/// The protocols a push listener can accept.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema)]
pub enum PushProtocol {
    /// Prometheus remote write 1.0 at `POST /api/v1/write`.
    RemoteWrite,
    /// Influx line protocol at `POST /write` (1.x) and `POST /api/v2/write` (2.x).
    Influx,
    /// OpenTSDB JSON at `POST /api/put`.
    #[serde(rename = "OpenTSDB")]
    OpenTsdb,
    /// Open-Falcon JSON at `POST /api/push`.
    OpenFalcon,
}

impl PushProtocol {
    /// Every protocol, in declaration order.
    pub const ALL: [Self; 4] = [Self::RemoteWrite, Self::Influx, Self::OpenTsdb, Self::OpenFalcon];
}

fn all_push_protocols() -> Vec<PushProtocol> {
    PushProtocol::ALL.to_vec()
}

/// Credentials a push request must carry. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.bearerToken), has(self.basicAuth)].filter(x, x).size() == 1").message("exactly one of auth.bearerToken and auth.basicAuth must be set"))]
pub struct PushAuth {
    /// `Authorization: Bearer <token>` (or `Token <token>`, as InfluxDB 2.x clients send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<PushBearerToken>,
    /// `Authorization: Basic ...` with this username and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<PushBasicAuth>,
}

/// Where the expected bearer token comes from. Exactly one field is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.tokenFile)].filter(x, x).size() == 1").message("bearerToken needs tokenFile"))]
pub struct PushBearerToken {
    /// Absolute path of a file holding the token (surrounding whitespace is ignored), read when
    /// the listener starts. In a cluster, a path inside the collector pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("tokenFile must be an absolute path"))]
    pub token_file: Option<String>,
}

/// The expected username and where the password comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.passwordFile)].filter(x, x).size() == 1").message("basicAuth needs passwordFile"))]
pub struct PushBasicAuth {
    /// The username.
    #[schemars(length(min = 1, max = 256))]
    pub username: String,
    /// Absolute path of a file holding the password (surrounding whitespace is ignored), read
    /// when the listener starts. In a cluster, a path inside the collector pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("passwordFile must be an absolute path"))]
    pub password_file: Option<String>,
}
