//! Gather sources. Each source turns one tick into samples.

pub mod prometheus;
pub mod push;

use std::sync::Arc;

use metricshard_crds::MetricInputSpec;

use crate::engine::{Gatherer, TaskKey};
use crate::sample::Labels;

/// Why an input's source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No source is set (the CRD's CEL rule normally prevents this).
    #[error("spec.source: exactly one source must be set")]
    NoSource,
    /// The Prometheus source is invalid.
    #[error(transparent)]
    Prometheus(#[from] prometheus::scrape::ScrapeConfigError),
    /// The push source is invalid.
    #[error(transparent)]
    Push(#[from] push::PushConfigError),
}

/// Builds the gatherer of an input's source.
pub fn build_gatherer(key: &TaskKey, spec: &MetricInputSpec, client: reqwest::Client) -> Result<Arc<dyn Gatherer>, BuildError> {
    let extra_labels = Labels::from_pairs(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(source) = &spec.source.push {
        return Ok(push::build(key, source, extra_labels)?);
    }
    match &spec.source.prometheus {
        Some(source) => Ok(prometheus::scrape::build(key, source, extra_labels, spec.effective_timeout(), client)?),
        None => Err(BuildError::NoSource),
    }
}
