//! Influx line protocol over HTTP: InfluxDB 1.x `/write` and 2.x `/api/v2/write`.
//!
//! - [`config`]: the server, the API version with its database/bucket and credentials, precision.
//! - [`line`](mod@line): the pure encoder (exact escaping, precision) and the sample → point mapping.
//! - [`sink`]: the HTTP [`Sink`](crate::outputs::Sink) and its failure classification.
//! - [`error`]: errors, and parsing of InfluxDB's error bodies.

pub mod config;
pub mod error;
pub mod line;
pub mod sink;

pub use config::{InfluxApi, InfluxConfig, InfluxCredentials, InfluxToken};
pub use error::InfluxError;
pub use line::{DroppedSamples, FieldValue, LineBatch, Precision, Unrepresentable, encode_batch};
pub use sink::InfluxSink;
