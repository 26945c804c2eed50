//! Prometheus scrape: exposition-format parsing and the HTTP scrape of targets.

pub mod client;
pub mod discovery;
pub mod honor;
pub mod limits;
pub mod parser;
pub mod scrape;
pub mod staleness;
pub mod tls;
