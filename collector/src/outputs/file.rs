//! Appends batches to a file in the [line format](super::line).

use std::path::PathBuf;

use futures::future::{BoxFuture, FutureExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Sink, WriteError, Written, line};
use crate::sample::Sample;

/// A file opened for appending. The file is opened on first write, so a missing directory is a
/// retryable error on this output's status rather than a failure to start.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileSink {
    /// A sink appending to `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), file: Mutex::new(None) }
    }

    fn io_error(&self, error: std::io::Error) -> WriteError {
        WriteError::Retryable { category: "io", message: format!("{}: {error}", self.path.display()) }
    }
}

impl Sink for FileSink {
    fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
        async move {
            let text = line::render_batch(batch);
            let mut guard = self.file.lock().await;
            if guard.is_none() {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .await
                    .map_err(|e| self.io_error(e))?;
                *guard = Some(file);
            }
            let Some(file) = guard.as_mut() else { return Ok(Written::default()) };
            if let Err(error) = file.write_all(text.as_bytes()).await {
                // Reopen next time: the file may have been rotated or its disk replaced.
                *guard = None;
                return Err(self.io_error(error));
            }
            file.flush().await.map_err(|e| self.io_error(e))?;
            Ok(Written::default())
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
        async move {
            let mut guard = self.file.lock().await;
            match guard.as_mut() {
                Some(file) => file.sync_data().await.map_err(|e| self.io_error(e)),
                None => Ok(()),
            }
        }
        .boxed()
    }
}
