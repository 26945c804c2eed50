//! Output protocols. Each protocol is a [`Sink`]: it writes one batch and says whether a failure
//! is worth retrying. Batching, buffering and retries live in [`crate::pipeline`], the same for all.

pub mod file;
pub mod influx;
pub mod line;
pub mod opentsdb;
pub mod remote_write;
pub mod stdout;

use futures::future::BoxFuture;

use crate::sample::Sample;

/// Why a write failed, and whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Network errors, 5xx, 429: retried with backoff until they succeed.
    #[error("retryable write failure ({category}): {message}")]
    Retryable {
        /// Short static category for metric labels (`network`, `http_5xx`, `http_429`, `io`).
        category: &'static str,
        /// Details for logs and status.
        message: String,
    },
    /// Other 4xx and malformed data: the batch is dropped and counted.
    #[error("permanent write failure ({category}): {message}")]
    Permanent {
        /// Short static category for metric labels (`http_4xx`, `encode`).
        category: &'static str,
        /// Details for logs and status.
        message: String,
    },
}

impl WriteError {
    /// The short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Retryable { category, .. } | Self::Permanent { category, .. } => category,
        }
    }

    /// True when the same batch may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// What a successful write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Samples of the batch the protocol cannot carry (NaN or infinities in line protocol and
    /// OpenTSDB, say), left out of the request; the pipeline counts them as dropped.
    pub unrepresentable: u64,
}

/// Writes batches to one destination.
pub trait Sink: Send + Sync {
    /// Writes one batch. Must not return `Ok` unless the destination accepted every sample it
    /// was sent.
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>>;
    /// Makes everything written so far durable (fsync, flush); called before shutdown.
    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>>;
}

/// Builds the sink for an output's protocol, or says why it cannot be built. Credentials are
/// read through `secrets` (in the output's namespace, or the collectors' for a
/// `ClusterMetricOutput`), which remembers what was read for the rebuild fingerprint.
pub fn build_sink(
    protocol: &metricshard_crds::OutputProtocol,
    http: reqwest::Client,
    secrets: &mut crate::secrets::SecretResolver<'_>,
) -> Result<Box<dyn Sink>, String> {
    let timeout_of = |timeout: &Option<metricshard_crds::Duration>, default| {
        timeout.as_ref().map_or(default, metricshard_crds::Duration::get)
    };
    // A fanned-out protocol is built once per address (`OutputProtocol::for_address`).
    let single_url = |url: &Option<String>| url.clone().ok_or_else(|| "fanOut outputs are built per address".to_owned());
    if let Some(file) = &protocol.file {
        return Ok(Box::new(file::FileSink::new(&file.path)));
    }
    if let Some(output) = &protocol.remote_write {
        let mut config = remote_write::RemoteWriteConfig::new(single_url(&output.url)?);
        config.timeout = timeout_of(&output.timeout, config.timeout);
        if let Some(basic) = &output.basic_auth {
            config.basic_auth = Some(remote_write::BasicAuth {
                username: secrets.text("spec.protocol.remoteWrite.basicAuth.username", &basic.username).map_err(|e| e.to_string())?,
                password: secrets.text("spec.protocol.remoteWrite.basicAuth.password", &basic.password).map_err(|e| e.to_string())?,
            });
        }
        if let Some(authorization) = &output.authorization {
            let credentials = secrets
                .text("spec.protocol.remoteWrite.authorization.credentials", &authorization.credentials)
                .map_err(|e| e.to_string())?;
            // Extra headers are marked sensitive by the sink.
            config.headers.push(("Authorization".to_owned(), format!("{} {}", authorization.scheme(), credentials.trim_end_matches('\n'))));
        }
        return remote_write::RemoteWriteSink::new(config, http).map(|s| Box::new(s) as Box<dyn Sink>).map_err(|e| e.to_string());
    }
    if let Some(output) = &protocol.influx {
        let api = influx::InfluxApi::V1 {
            database: output.database.clone(),
            retention_policy: output.retention_policy.clone(),
            credentials: match &output.basic_auth {
                Some(basic) => Some(influx::InfluxCredentials {
                    username: secrets.text("spec.protocol.influx.basicAuth.username", &basic.username).map_err(|e| e.to_string())?,
                    password: secrets.text("spec.protocol.influx.basicAuth.password", &basic.password).map_err(|e| e.to_string())?,
                }),
                None => None,
            },
        };
        let mut config = influx::InfluxConfig::new(single_url(&output.url)?, api);
        config.precision = match output.precision {
            metricshard_crds::InfluxPrecision::Ns => influx::Precision::Nanoseconds,
            metricshard_crds::InfluxPrecision::Us => influx::Precision::Microseconds,
            metricshard_crds::InfluxPrecision::Ms => influx::Precision::Milliseconds,
            metricshard_crds::InfluxPrecision::S => influx::Precision::Seconds,
        };
        config.timeout = timeout_of(&output.timeout, config.timeout);
        return influx::InfluxSink::new(config, http).map(|s| Box::new(s) as Box<dyn Sink>).map_err(|e| e.to_string());
    }
    if let Some(output) = &protocol.open_tsdb {
        let mut config = opentsdb::OpenTsdbConfig::new(single_url(&output.url)?);
        config.timeout = timeout_of(&output.timeout, config.timeout);
        return opentsdb::OpenTsdbSink::new(config, http).map(|s| Box::new(s) as Box<dyn Sink>).map_err(|e| e.to_string());
    }
    Ok(Box::new(stdout::StdoutSink))
}
