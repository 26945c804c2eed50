//! Prometheus remote write 1.0: protobuf `WriteRequest`, snappy block compression, one POST per
//! batch with the headers the specification requires.
//!
//! - [`config`]: the receiver (URL, timeout, authentication, extra headers).
//! - [`proto`]: the wire messages, `prost` derive written out by hand.
//! - [`encoder`]: pure batch → body (series grouping, label order, stale markers kept bit-exact).
//! - [`sink`]: the HTTP [`Sink`](crate::outputs::Sink) and its failure classification.

pub mod config;
pub mod encoder;
mod error;
pub mod proto;
pub mod sink;

pub use config::{BasicAuth, RemoteWriteConfig};
pub use encoder::{build_write_request, decode_body, encode_batch, encode_protobuf};
pub use error::RemoteWriteError;
pub use sink::RemoteWriteSink;

// The HTTP status classification shared with the other HTTP outputs of this crate.
pub(crate) use error::{
    MAX_ERROR_BODY, error_chain, is_retryable_status, read_error_body, status_category, truncate_utf8,
};
