//! The protobuf messages of Prometheus remote write 1.0 (`prometheus/prompb/types.proto` and
//! `remote.proto`), written out with `prost`'s derive so the build needs no `protoc` and no
//! build script.
//!
//! Only the fields remote write 1.0 requires are declared. Fields a receiver may send back in a
//! decoded request (exemplars, histograms, metadata) are unknown here and skipped by prost, which
//! only matters to tests that decode what we encode.

/// The body of one remote-write request (`prometheus.WriteRequest`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// One entry per series; a series appears once per request.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// One series and its samples (`prometheus.TimeSeries`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels sorted by name, `__name__` among them, names unique, values non-empty.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in timestamp order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// One label (`prometheus.Label`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// One sample (`prometheus.Sample`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value; stale markers travel as their exact NaN bit pattern.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}
