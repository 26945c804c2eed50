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

/// Writes batches to one destination.
pub trait Sink: Send + Sync {
    /// Writes one batch. Must not return `Ok` unless the destination accepted all of it.
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<(), WriteError>>;
    /// Makes everything written so far durable (fsync, flush); called before shutdown.
    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>>;
}

/// Builds the sink for an output's protocol.
pub fn build_sink(protocol: &metricshard_crds::OutputProtocol, _http: reqwest::Client) -> Box<dyn Sink> {
    match (&protocol.stdout, &protocol.file) {
        (_, Some(file)) => Box::new(file::FileSink::new(&file.path)),
        _ => Box::new(stdout::StdoutSink),
    }
}
