//! Prometheus scrape: exposition-format parsing and the HTTP scrape of targets.

pub mod discovery;
pub mod parser;
pub mod scrape;
pub mod staleness;
