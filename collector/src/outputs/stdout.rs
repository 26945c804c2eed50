//! Writes batches to the collector's standard output in the [line format](super::line).

use std::io::Write;

use futures::future::{BoxFuture, FutureExt};

use super::{Sink, WriteError, Written, line};
use crate::sample::Sample;

/// The standard output of this process. Lines of one batch are written in one call, so batches
/// from different outputs never interleave within a line.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
        let text = line::render_batch(batch);
        async move {
            tokio::task::spawn_blocking(move || {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()
            })
            .await
            .map_err(|e| WriteError::Retryable { category: "io", message: e.to_string() })?
            .map_err(|e| WriteError::Retryable { category: "io", message: format!("stdout: {e}") })?;
            Ok(Written::default())
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
        async { Ok(()) }.boxed()
    }
}
