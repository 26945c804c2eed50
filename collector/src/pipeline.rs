//! One delivery loop: the queue of one address of one node of an output. Samples arrive on a
//! channel, wait in the buffer, leave in batches (when `maxSamples` are waiting or the flush
//! interval plus jitter has passed), and are acknowledged only once the sink accepted them.
//! Retryable failures retry the same batch with capped exponential backoff and jitter, forever;
//! permanent ones drop the batch and count it.
//!
//! The channel is read while a write is in flight: samples go into the buffer (which drops the
//! oldest beyond its limit, counted) instead of waiting in the channel. So a slow or dead backend
//! never pushes back on whoever feeds the loop, in particular on the fan-out router, which would
//! otherwise hold up every other address of the output.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::output_status::NodeHandle;
use crate::outputs::{Sink, WriteError, Written};
use crate::sample::Sample;
use crate::telemetry::OutputReasonLabels;

/// Batching and retry settings of one output.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Largest batch.
    pub max_samples: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval: Duration,
    /// Largest random extra wait per flush.
    pub flush_jitter: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// How long shutdown keeps trying to write what is buffered.
    pub shutdown_grace: Duration,
}

impl PipelineSettings {
    /// Settings from a batch spec, with the fixed retry policy (500ms doubling to 30s, ±20%).
    pub fn from_batch(batch: &metricshard_crds::BatchSpec) -> Self {
        Self {
            max_samples: usize::try_from(batch.max_samples).unwrap_or(usize::MAX).max(1),
            flush_interval: batch.flush_interval.get().max(Duration::from_millis(1)),
            flush_jitter: batch.flush_jitter.as_ref().map(metricshard_crds::Duration::get).unwrap_or_default(),
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A write in flight: the batch id, its size, and the sink's answer once it comes.
type WriteInFlight<'a> = Pin<Box<dyn Future<Output = (u64, u64, Result<Written, WriteError>)> + Send + 'a>>;

fn start_write<'a>(sink: &'a dyn Sink, id: u64, samples: Vec<Sample>) -> WriteInFlight<'a> {
    Box::pin(async move {
        let result = sink.write(&samples).await;
        (id, samples.len() as u64, result)
    })
}

/// Waits for the write in flight; never completes when there is none.
async fn write_done(in_flight: &mut Option<WriteInFlight<'_>>) -> (u64, u64, Result<Written, WriteError>) {
    match in_flight {
        Some(write) => write.await,
        None => std::future::pending().await,
    }
}

/// Runs the delivery loop until `cancel` fires or `incoming` is closed, then drains and flushes
/// within the grace period.
pub async fn run(
    node: NodeHandle,
    settings: PipelineSettings,
    sink: Box<dyn Sink>,
    mut buffer: Box<dyn Buffer>,
    mut incoming: mpsc::Receiver<Vec<Sample>>,
    cancel: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut next_attempt = Instant::now() + flush_delay(&settings);
    let mut in_flight: Option<WriteInFlight<'_>> = None;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            (id, count, result) = write_done(&mut in_flight) => {
                in_flight = None;
                next_attempt = match settle(&node, &settings, &mut *buffer, id, count, result).await {
                    Attempt::Idle => Instant::now() + flush_delay(&settings),
                    Attempt::Written { more } | Attempt::Dropped { more } => {
                        failures = 0;
                        if more { Instant::now() } else { Instant::now() + flush_delay(&settings) }
                    }
                    Attempt::Failed => {
                        failures = failures.saturating_add(1);
                        Instant::now() + retry_delay(&settings, failures)
                    }
                };
            }
            received = incoming.recv() => match received {
                Some(samples) => {
                    push(&node, &mut *buffer, samples).await;
                    if failures == 0 && buffer.len() >= settings.max_samples as u64 {
                        next_attempt = next_attempt.min(Instant::now());
                    }
                }
                None => break,
            },
            () = tokio::time::sleep_until(next_attempt), if in_flight.is_none() => {
                match buffer.batch(settings.max_samples).await {
                    Ok(Some(batch)) => in_flight = Some(start_write(&*sink, batch.id, batch.samples)),
                    Ok(None) => next_attempt = Instant::now() + flush_delay(&settings),
                    Err(error) => {
                        tracing::error!(output = %node.output(), node = %node.node(), "buffer read failed: {error}");
                        failures = failures.saturating_add(1);
                        next_attempt = Instant::now() + retry_delay(&settings, failures);
                    }
                }
            }
        }
        node.set_depth(buffer.len());
    }
    let deadline = Instant::now() + settings.shutdown_grace;
    // Shutdown: finish the write in flight, take what is still queued, then write until empty or
    // out of time.
    if let Some(write) = in_flight.take()
        && let Ok((id, count, result)) = tokio::time::timeout_at(deadline, write).await
    {
        settle(&node, &settings, &mut *buffer, id, count, result).await;
    }
    incoming.close();
    while let Some(samples) = incoming.recv().await {
        push(&node, &mut *buffer, samples).await;
    }
    let mut failures = 0;
    while !buffer.is_empty() && Instant::now() < deadline {
        match write_one(&node, &settings, &*sink, &mut *buffer).await {
            Attempt::Failed => {
                failures += 1;
                tokio::time::sleep(retry_delay(&settings, failures).min(deadline.saturating_duration_since(Instant::now()))).await;
            }
            Attempt::Idle => break,
            Attempt::Written { .. } | Attempt::Dropped { .. } => {}
        }
    }
    if !buffer.is_empty() {
        tracing::warn!(output = %node.output(), node = %node.node(), address = %node.address(), samples = buffer.len(), "shutdown grace ran out with samples still buffered");
    }
    if let Err(error) = sink.flush().await {
        tracing::warn!(output = %node.output(), node = %node.node(), "final flush failed: {error}");
    }
    node.set_depth(buffer.len());
}

enum Attempt {
    Idle,
    Written { more: bool },
    Dropped { more: bool },
    Failed,
}

async fn push(node: &NodeHandle, buffer: &mut dyn Buffer, samples: Vec<Sample>) {
    let reason_labels = |reason| OutputReasonLabels { output: node.output().to_owned(), reason };
    let count = samples.len() as u64;
    match buffer.push(samples).await {
        Ok(outcome) if outcome.dropped_oldest > 0 => {
            node.telemetry().output_dropped.get_or_create(&reason_labels("buffer_full")).inc_by(outcome.dropped_oldest);
            node.dropped(outcome.dropped_oldest);
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(output = %node.output(), node = %node.node(), "buffer refused samples: {error}");
            node.telemetry().output_dropped.get_or_create(&reason_labels(error.category())).inc_by(count);
            node.dropped(count);
        }
    }
}

/// Takes a batch and writes it, waiting for the answer (the shutdown path).
async fn write_one(node: &NodeHandle, settings: &PipelineSettings, sink: &dyn Sink, buffer: &mut dyn Buffer) -> Attempt {
    let batch = match buffer.batch(settings.max_samples).await {
        Ok(Some(batch)) => batch,
        Ok(None) => return Attempt::Idle,
        Err(error) => {
            tracing::error!(output = %node.output(), node = %node.node(), "buffer read failed: {error}");
            return Attempt::Failed;
        }
    };
    let count = batch.samples.len() as u64;
    let result = sink.write(&batch.samples).await;
    settle(node, settings, buffer, batch.id, count, result).await
}

/// Acts on the sink's answer for batch `id` of `count` samples: ack and count it, or leave it
/// for a retry, or drop it.
async fn settle(
    node: &NodeHandle,
    settings: &PipelineSettings,
    buffer: &mut dyn Buffer,
    id: u64,
    count: u64,
    result: Result<Written, WriteError>,
) -> Attempt {
    let telemetry = node.telemetry();
    let reason_labels = |reason| OutputReasonLabels { output: node.output().to_owned(), reason };
    match result {
        Ok(written) => {
            if let Err(error) = buffer.ack(id).await {
                tracing::error!(output = %node.output(), node = %node.node(), "acknowledging a written batch failed: {error}");
            }
            let left_out = written.unrepresentable.min(count);
            if left_out > 0 {
                telemetry.output_dropped.get_or_create(&reason_labels("unrepresentable")).inc_by(left_out);
                node.dropped(left_out);
            }
            node.wrote(count - left_out);
            Attempt::Written { more: buffer.len() >= settings.max_samples as u64 }
        }
        Err(error) if error.is_retryable() => {
            telemetry.output_write_errors.get_or_create(&reason_labels(error.category())).inc();
            tracing::warn!(output = %node.output(), node = %node.node(), address = %node.address(), samples = count, "write failed, will retry: {error}");
            node.will_retry(&error.to_string());
            Attempt::Failed
        }
        Err(error) => {
            telemetry.output_write_errors.get_or_create(&reason_labels(error.category())).inc();
            telemetry.output_dropped.get_or_create(&reason_labels(error.category())).inc_by(count);
            tracing::error!(output = %node.output(), node = %node.node(), address = %node.address(), samples = count, "write rejected, batch dropped: {error}");
            node.rejected(&error.to_string());
            node.dropped(count);
            if let Err(error) = buffer.ack(id).await {
                tracing::error!(output = %node.output(), node = %node.node(), "dropping a rejected batch failed: {error}");
            }
            Attempt::Dropped { more: buffer.len() >= settings.max_samples as u64 }
        }
    }
}

fn flush_delay(settings: &PipelineSettings) -> Duration {
    settings.flush_interval + random_up_to(settings.flush_jitter)
}

fn retry_delay(settings: &PipelineSettings, failures: u32) -> Duration {
    let delay = crate::engine::backoff(failures, settings.retry_base, settings.retry_cap);
    // ±20% so that many collectors retrying one backend spread out.
    delay.mul_f64(rand::rng().random_range(0.8..1.2))
}

fn random_up_to(limit: Duration) -> Duration {
    if limit.is_zero() { Duration::ZERO } else { limit.mul_f64(rand::rng().random_range(0.0..1.0)) }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::future::{BoxFuture, FutureExt};

    use super::*;
    use crate::buffer::memory::MemoryBuffer;
    use crate::sample::Labels;
    use crate::telemetry::{OutputLabels, Telemetry};

    /// Records written batches; fails the first `fail_first` writes with the given kind.
    #[derive(Clone, Default)]
    struct RecordingSink {
        written: Arc<Mutex<Vec<Vec<i64>>>>,
        attempts: Arc<Mutex<u32>>,
        fail_first: u32,
        permanent: bool,
    }

    impl Sink for RecordingSink {
        fn write<'a>(&'a self, batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
            async move {
                let attempt = {
                    let mut attempts = self.attempts.lock().unwrap();
                    *attempts += 1;
                    *attempts
                };
                if attempt <= self.fail_first {
                    let message = "induced".to_owned();
                    return Err(if self.permanent {
                        WriteError::Permanent { category: "http_4xx", message }
                    } else {
                        WriteError::Retryable { category: "http_5xx", message }
                    });
                }
                self.written.lock().unwrap().push(batch.iter().map(|s| s.timestamp_ms).collect());
                // Stands in for a protocol that cannot carry NaN.
                Ok(Written { unrepresentable: batch.iter().filter(|s| s.value.is_nan()).count() as u64 })
            }
            .boxed()
        }
        fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
            async { Ok(()) }.boxed()
        }
    }

    fn settings(max_samples: usize, flush_interval: Duration) -> PipelineSettings {
        PipelineSettings {
            max_samples,
            flush_interval,
            flush_jitter: Duration::ZERO,
            retry_base: Duration::from_millis(5),
            retry_cap: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(5),
        }
    }

    fn samples(range: std::ops::Range<i64>) -> Vec<Sample> {
        range.map(|i| Sample::new("seq", Labels::default(), i as f64, i)).collect()
    }

    async fn start(sink: RecordingSink, settings: PipelineSettings, telemetry: Telemetry) -> (mpsc::Sender<Vec<Sample>>, CancellationToken, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(8);
        let cancel = CancellationToken::new();
        let node = NodeHandle::new("test", "default", "memory", telemetry);
        let handle = tokio::spawn(run(node, settings, Box::new(sink), Box::new(MemoryBuffer::new(1000)), receiver, cancel.clone()));
        (sender, cancel, handle)
    }

    #[tokio::test]
    async fn a_full_batch_goes_at_once_and_shutdown_flushes_the_rest() {
        let sink = RecordingSink::default();
        // An hour-long flush interval: only batch size and shutdown can trigger writes.
        let (sender, cancel, handle) = start(sink.clone(), settings(4, Duration::from_secs(3600)), Telemetry::new()).await;
        sender.send(samples(0..6)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.written.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "a full batch was not sent");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sink.written.lock().unwrap().clone(), vec![vec![0, 1, 2, 3]]);
        sender.send(samples(6..7)).await.unwrap();
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(sink.written.lock().unwrap().concat(), (0..7).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn retryable_failures_retry_the_same_batch_in_order() {
        let sink = RecordingSink { fail_first: 3, ..Default::default() };
        let telemetry = Telemetry::new();
        let (sender, cancel, handle) = start(sink.clone(), settings(100, Duration::from_millis(10)), telemetry.clone()).await;
        sender.send(samples(0..3)).await.unwrap();
        sender.send(samples(3..5)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.written.lock().unwrap().concat().len() < 5 {
            assert!(Instant::now() < deadline, "retries did not deliver");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(sink.written.lock().unwrap().concat(), (0..5).collect::<Vec<_>>());
        let errors = telemetry.output_write_errors.get_or_create(&OutputReasonLabels { output: "test".into(), reason: "http_5xx" }).get();
        assert_eq!(errors, 3);
    }

    #[tokio::test]
    async fn permanent_failures_drop_the_batch_and_count_it() {
        let sink = RecordingSink { fail_first: 1, permanent: true, ..Default::default() };
        let telemetry = Telemetry::new();
        let (sender, cancel, handle) = start(sink.clone(), settings(3, Duration::from_millis(10)), telemetry.clone()).await;
        sender.send(samples(0..3)).await.unwrap();
        sender.send(samples(3..5)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.written.lock().unwrap().concat().len() < 2 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(sink.written.lock().unwrap().concat(), vec![3, 4]);
        let dropped = telemetry.output_dropped.get_or_create(&OutputReasonLabels { output: "test".into(), reason: "http_4xx" }).get();
        assert_eq!(dropped, 3);
    }

    #[tokio::test]
    async fn samples_a_protocol_cannot_carry_are_counted_as_dropped_not_written() {
        let sink = RecordingSink::default();
        let telemetry = Telemetry::new();
        let (sender, cancel, handle) = start(sink.clone(), settings(100, Duration::from_millis(10)), telemetry.clone()).await;
        let mut batch = samples(0..4);
        batch[2].value = f64::NAN;
        sender.send(batch).await.unwrap();
        cancel.cancel();
        handle.await.unwrap();
        let labels = |reason| OutputReasonLabels { output: "test".into(), reason };
        assert_eq!(telemetry.output_dropped.get_or_create(&labels("unrepresentable")).get(), 1);
        assert_eq!(telemetry.output_written.get_or_create(&OutputLabels { output: "test".into() }).get(), 3);
    }

    /// A backend that never answers.
    struct StalledSink;

    impl Sink for StalledSink {
        fn write<'a>(&'a self, _batch: &'a [Sample]) -> BoxFuture<'a, Result<Written, WriteError>> {
            std::future::pending().boxed()
        }
        fn flush(&self) -> BoxFuture<'_, Result<(), WriteError>> {
            async { Ok(()) }.boxed()
        }
    }

    #[tokio::test]
    async fn a_hung_write_does_not_stop_the_loop_reading_its_channel() {
        let (sender, receiver) = mpsc::channel(2);
        let node = NodeHandle::new("test", "default", "stalled", Telemetry::new());
        let mut settings = settings(10, Duration::from_millis(1));
        settings.shutdown_grace = Duration::from_millis(100);
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(run(node.clone(), settings, Box::new(StalledSink), Box::new(MemoryBuffer::new(1000)), receiver, cancel.clone()));
        for round in 0..50 {
            tokio::time::timeout(Duration::from_secs(5), sender.send(samples(round * 10..round * 10 + 10)))
                .await
                .expect("the loop stopped reading its channel while a write hung")
                .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while node.figures().buffer_depth < 500 {
            assert!(Instant::now() < deadline, "buffered {}", node.figures().buffer_depth);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        handle.await.unwrap();
        assert_eq!(node.figures().written, 0);
    }
}
