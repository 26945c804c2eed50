//! Push receivers (the role of Open-Falcon's transfer): an HTTP listener per push input that
//! accepts Prometheus remote write, Influx line protocol, OpenTSDB `/api/put` and Open-Falcon
//! JSON, validates every request, and hands its samples to the input's outputs like gathered
//! ones.
//!
//! - [`remote_write`], [`influx`], [`opentsdb`], [`falcon`]: pure parsers of untrusted bytes
//!   (`&[u8]` → samples or an error naming the reason); they never panic (property tests).
//! - [`body`]: reading a body within the size limit and undoing its content encoding.
//! - [`auth`]: the credentials a request must present.
//! - [`server`]: the HTTP routes and the [`Listener`] the input's task runs.
//!
//! The design, limits and answers are in `docs/push.md`.

pub mod auth;
pub mod body;
pub mod falcon;
pub mod influx;
pub mod opentsdb;
pub mod remote_write;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use metricshard_crds::{PushProtocol, PushSource};

use crate::engine::{GatherError, Gathered, Gatherer, Listener, TaskKey};
use crate::sample::Labels;
use crate::schedule::Tick;

/// Default largest body, as sent and decompressed: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 << 20;
/// Default largest number of samples per request.
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 100_000;
/// Default number of requests handled at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 16;
/// How long a request may wait for the outputs to take its samples before it is answered 503.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `protocol` label values of the push metrics.
pub const PROTOCOL_NAMES: [&str; 4] = ["remote_write", "influx", "opentsdb", "falcon"];

/// The `outcome` label values of the push metrics.
pub const OUTCOMES: [&str; 8] =
    ["accepted", "bad_request", "too_large", "too_many_samples", "unauthorized", "unsupported_encoding", "overloaded", "internal"];

/// The `protocol` label value of a protocol.
pub fn protocol_name(protocol: PushProtocol) -> &'static str {
    match protocol {
        PushProtocol::RemoteWrite => PROTOCOL_NAMES[0],
        PushProtocol::Influx => PROTOCOL_NAMES[1],
        PushProtocol::OpenTsdb => PROTOCOL_NAMES[2],
        PushProtocol::OpenFalcon => PROTOCOL_NAMES[3],
    }
}

/// Why a push source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    /// `listen` is not `host:port`.
    #[error("spec.source.push.listen: {0:?} is not host:port")]
    Listen(String),
    /// A limit is zero or negative.
    #[error("spec.source.push.{field}: must be at least 1, got {value}")]
    Limit {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The auth settings name no credential source.
    #[error("spec.source.push.auth: {0}")]
    Auth(&'static str),
    /// A metric relabel rule is invalid.
    #[error("spec.source.push.metricRelabelConfigs[{index}]: {message}")]
    Relabel {
        /// Index of the rule.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Everything a push listener needs, checked.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// `host:port` to bind.
    pub listen: String,
    /// Enabled protocols.
    pub protocols: Vec<PushProtocol>,
    /// Largest body, as sent and decompressed.
    pub max_body_bytes: usize,
    /// Largest number of samples per request.
    pub max_samples: usize,
    /// Requests handled at once.
    pub max_concurrent: usize,
    /// Where the expected credentials come from.
    pub auth: Option<auth::CredentialSource>,
    /// The input's `spec.labels`, set on every sample (overwriting).
    pub extra_labels: Labels,
    /// Relabeling of every pushed sample, after `extra_labels`.
    pub metric_relabel: Arc<[crate::relabel::RelabelConfig]>,
}

impl PushSettings {
    /// Checks a push source; the CRD's schema and CEL rules normally did already, but local
    /// mode reads manifests without an apiserver.
    pub fn from_source(source: &PushSource, extra_labels: Labels) -> Result<Self, PushConfigError> {
        let port_ok = source.listen.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(PushConfigError::Listen(source.listen.clone()));
        }
        let limit = |field, value: Option<i64>, default: usize| match value {
            None => Ok(default),
            Some(value) if value >= 1 => Ok(usize::try_from(value).unwrap_or(usize::MAX)),
            Some(value) => Err(PushConfigError::Limit { field, value }),
        };
        let mut protocols = source.protocols.clone();
        protocols.sort_unstable();
        protocols.dedup();
        Ok(Self {
            listen: source.listen.clone(),
            protocols,
            max_body_bytes: limit("maxBodyBytes", source.max_body_bytes, DEFAULT_MAX_BODY_BYTES)?,
            max_samples: limit("maxSamplesPerRequest", source.max_samples_per_request, DEFAULT_MAX_SAMPLES_PER_REQUEST)?,
            max_concurrent: limit("maxConcurrentRequests", source.max_concurrent_requests, DEFAULT_MAX_CONCURRENT_REQUESTS)?,
            auth: source.auth.as_ref().map(auth::CredentialSource::from_spec).transpose().map_err(PushConfigError::Auth)?,
            extra_labels,
            metric_relabel: crate::relabel::configs_from_rules(&source.metric_relabel_configs)
                .map_err(|(index, message)| PushConfigError::Relabel { index, message })?
                .into(),
        })
    }
}

/// The task source of a push input: no ticks, one listener.
struct PushGatherer {
    listener: Arc<server::PushListener>,
}

impl Gatherer for PushGatherer {
    fn gather(&self, _tick: Tick) -> BoxFuture<'_, Result<Gathered, GatherError>> {
        // Never called: the task runs the listener instead of ticks.
        async { Ok(Gathered::default()) }.boxed()
    }

    fn listener(&self) -> Option<Arc<dyn Listener>> {
        Some(self.listener.clone())
    }
}

/// Builds the task source of a push input.
pub fn build(key: &TaskKey, source: &PushSource, extra_labels: Labels) -> Result<Arc<dyn Gatherer>, PushConfigError> {
    let settings = PushSettings::from_source(source, extra_labels)?;
    Ok(Arc::new(PushGatherer { listener: Arc::new(server::PushListener::new(key.clone(), settings)) }))
}
