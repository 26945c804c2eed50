//! A bounded in-memory buffer: drop-oldest when full, counted. Lost when the process dies.

use std::collections::VecDeque;

use futures::future::{BoxFuture, FutureExt};

use super::{Batch, Buffer, BufferError, PushOutcome};
use crate::sample::Sample;

/// A bounded FIFO of samples in memory.
#[derive(Debug)]
pub struct MemoryBuffer {
    limit: u64,
    queued: VecDeque<Sample>,
    in_flight: Option<Batch>,
    next_batch_id: u64,
}

impl MemoryBuffer {
    /// A buffer holding at most `limit` samples (at least one).
    pub fn new(limit: u64) -> Self {
        Self { limit: limit.max(1), queued: VecDeque::new(), in_flight: None, next_batch_id: 1 }
    }

    fn in_flight_len(&self) -> u64 {
        self.in_flight.as_ref().map_or(0, |batch| batch.samples.len() as u64)
    }

    fn push_now(&mut self, samples: Vec<Sample>) -> PushOutcome {
        let mut outcome = PushOutcome { accepted: samples.len() as u64, dropped_oldest: 0 };
        self.queued.extend(samples);
        // The batch in flight is being written and stays; room is made among the queued samples.
        let room = self.limit.saturating_sub(self.in_flight_len());
        while self.queued.len() as u64 > room {
            self.queued.pop_front();
            outcome.dropped_oldest += 1;
        }
        outcome
    }

    fn batch_now(&mut self, max: usize) -> Option<Batch> {
        if self.in_flight.is_none() && !self.queued.is_empty() {
            let take = max.max(1).min(self.queued.len());
            let samples: Vec<Sample> = self.queued.drain(..take).collect();
            self.in_flight = Some(Batch { id: self.next_batch_id, samples });
            self.next_batch_id += 1;
        }
        self.in_flight.clone()
    }

    fn ack_now(&mut self, id: u64) -> Result<(), BufferError> {
        match &self.in_flight {
            Some(batch) if batch.id == id => {
                self.in_flight = None;
                Ok(())
            }
            _ => Err(BufferError::UnknownBatch(id)),
        }
    }
}

impl Buffer for MemoryBuffer {
    fn push(&mut self, samples: Vec<Sample>) -> BoxFuture<'_, Result<PushOutcome, BufferError>> {
        let outcome = self.push_now(samples);
        async move { Ok(outcome) }.boxed()
    }

    fn batch(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, BufferError>> {
        let batch = self.batch_now(max);
        async move { Ok(batch) }.boxed()
    }

    fn ack(&mut self, id: u64) -> BoxFuture<'_, Result<(), BufferError>> {
        let result = self.ack_now(id);
        async move { result }.boxed()
    }

    fn len(&self) -> u64 {
        self.queued.len() as u64 + self.in_flight_len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Labels;
    use proptest::prelude::*;

    fn sample(seq: i64) -> Sample {
        Sample::new("seq", Labels::default(), seq as f64, seq)
    }

    #[test]
    fn unacknowledged_batch_is_handed_out_again() {
        let mut buffer = MemoryBuffer::new(10);
        buffer.push_now((0..5).map(sample).collect());
        let first = buffer.batch_now(3).unwrap();
        assert_eq!(buffer.batch_now(3).unwrap(), first);
        buffer.ack_now(first.id).unwrap();
        let second = buffer.batch_now(3).unwrap();
        assert_eq!(second.samples.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(), vec![3, 4]);
        assert!(matches!(buffer.ack_now(first.id), Err(BufferError::UnknownBatch(_))));
    }

    #[test]
    fn full_buffer_drops_oldest_queued_but_never_the_batch_in_flight() {
        let mut buffer = MemoryBuffer::new(4);
        buffer.push_now((0..2).map(sample).collect());
        let in_flight = buffer.batch_now(2).unwrap();
        let outcome = buffer.push_now((2..6).map(sample).collect());
        assert_eq!(outcome, PushOutcome { accepted: 4, dropped_oldest: 2 });
        assert_eq!(buffer.len(), 4);
        buffer.ack_now(in_flight.id).unwrap();
        let rest = buffer.batch_now(10).unwrap();
        assert_eq!(rest.samples.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>(), vec![4, 5]);
    }

    proptest! {
        /// Model test: the buffer behaves like a bounded queue that drops its oldest entries,
        /// delivers in order, and accounts for every sample as delivered, dropped or held.
        #[test]
        fn behaves_like_a_bounded_drop_oldest_queue(
            limit in 1u64..20,
            ops in proptest::collection::vec((0usize..8, 1usize..6, any::<bool>()), 1..60),
        ) {
            let mut buffer = MemoryBuffer::new(limit);
            let mut next = 0i64;
            let (mut delivered, mut dropped) = (Vec::new(), 0u64);
            for (push, take, ack) in ops {
                let batch: Vec<Sample> = (next..next + push as i64).map(sample).collect();
                next += push as i64;
                dropped += buffer.push_now(batch).dropped_oldest;
                prop_assert!(buffer.len() <= limit.max(take as u64));
                if let Some(batch) = buffer.batch_now(take)
                    && ack
                {
                    delivered.extend(batch.samples.iter().map(|s| s.timestamp_ms));
                    buffer.ack_now(batch.id).unwrap();
                }
            }
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "order kept");
            prop_assert_eq!(delivered.len() as u64 + dropped + buffer.len(), next as u64);
        }
    }
}
