//! OpenTSDB over HTTP: batched JSON to `/api/put?details`, per-point errors surfaced.
//!
//! - [`config`]: the server, timeout and the fallback tag for label-less samples.
//! - [`encoder`]: the pure sample → data point mapping, with OpenTSDB's character rules.
//! - [`sink`]: the HTTP [`Sink`](crate::outputs::Sink) and its failure classification.
//! - [`error`]: errors, and parsing of the `details` answer.

pub mod config;
pub mod encoder;
pub mod error;
pub mod sink;

pub use config::OpenTsdbConfig;
pub use encoder::{PutBatch, encode_batch, sanitize};
pub use error::{OpenTsdbError, PutDetails};
pub use sink::OpenTsdbSink;
