//! Where samples wait between gathering and a successful write.
//!
//! Every buffer has the same small interface: `push` appends (dropping the oldest samples when
//! full, and saying how many), `batch` hands out the oldest unacknowledged samples, and `ack`
//! removes a batch once the backend answered 2xx. Until acknowledged, `batch` returns the same
//! samples again, which is what makes delivery at-least-once.

pub mod codec;
pub mod memory;
pub mod redis;
pub mod spec;

use futures::future::BoxFuture;

use crate::sample::Sample;

/// A batch handed out by a buffer; acknowledge it by its id once written.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Identifies the batch for [`Buffer::ack`].
    pub id: u64,
    /// The samples, oldest first.
    pub samples: Vec<Sample>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Samples accepted.
    pub accepted: u64,
    /// Older samples dropped to make room (`whenFull: DropOldest`).
    pub dropped_oldest: u64,
}

/// Why a buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// `ack` named a batch that is not the one in flight.
    #[error("batch {0} is not in flight")]
    UnknownBatch(u64),
    /// The buffer's backing store failed.
    #[error("buffer store failed: {0}")]
    Store(String),
}

impl BufferError {
    /// A short static category for metric labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::UnknownBatch(_) => "unknown_batch",
            Self::Store(_) => "store",
        }
    }
}

/// The interface every buffer implements.
pub trait Buffer: Send {
    /// Appends samples; when full, drops the oldest unacknowledged samples not in flight.
    fn push(&mut self, samples: Vec<Sample>) -> BoxFuture<'_, Result<PushOutcome, BufferError>>;
    /// Returns the oldest samples, at most `max`, or `None` when empty. While a batch is in flight
    /// (handed out, not acknowledged) the same batch is returned again.
    fn batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, BufferError>>;
    /// Removes the batch `id` for good: it was written.
    fn ack(&mut self, id: u64) -> BoxFuture<'_, Result<(), BufferError>>;
    /// Samples held, including an unacknowledged batch.
    fn len(&self) -> u64;
    /// True when nothing is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
