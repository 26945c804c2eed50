//! Polling a condition until it holds or a timeout passes.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};
use tokio::time::Instant;

/// One observation of a condition: done with a value, or not yet (and what was seen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The condition holds; the wait returns this value.
    Ready(T),
    /// Not yet; the text describes what was observed and is reported if the wait times out.
    NotYet(String),
}

/// What a [`wait_for`] check may return.
///
/// * `bool`: `true` is done.
/// * `Option<T>`: `Some` is done.
/// * `Outcome<T>`: explicit, with a description of the last observation.
/// * `Result<_, E>` of any of these: an error is an observation too (an API server that is
///   still starting refuses connections), reported if the wait times out.
pub trait Poll {
    /// The value the wait returns.
    type Output;
    /// Converts the check's result into an [`Outcome`].
    fn into_outcome(self) -> Outcome<Self::Output>;
}

impl Poll for bool {
    type Output = ();
    fn into_outcome(self) -> Outcome<()> {
        if self {
            Outcome::Ready(())
        } else {
            Outcome::NotYet("false".to_owned())
        }
    }
}

impl<T> Poll for Option<T> {
    type Output = T;
    fn into_outcome(self) -> Outcome<T> {
        match self {
            Some(value) => Outcome::Ready(value),
            None => Outcome::NotYet("None".to_owned()),
        }
    }
}

impl<T> Poll for Outcome<T> {
    type Output = T;
    fn into_outcome(self) -> Outcome<T> {
        self
    }
}

impl<P: Poll, E: Display> Poll for Result<P, E> {
    type Output = P::Output;
    fn into_outcome(self) -> Outcome<P::Output> {
        match self {
            Ok(inner) => inner.into_outcome(),
            Err(e) => Outcome::NotYet(format!("error: {e:#}")),
        }
    }
}

impl<T> Outcome<T> {
    /// `Ready(value)` when `ready`, else `NotYet` with the value's debug form as observation.
    pub fn ready_if(ready: bool, value: T) -> Self
    where
        T: Debug,
    {
        if ready {
            Self::Ready(value)
        } else {
            Self::NotYet(format!("{value:?}"))
        }
    }
}

/// Polls `check` until it reports ready, for at most `timeout`.
///
/// Fails with `description` and the last observation when the time is up. Polls quickly at
/// first (20 ms), backing off to every 500 ms.
///
/// ```no_run
/// # async fn demo(pods: kube::Api<k8s_openapi::api::core::v1::Pod>) -> anyhow::Result<()> {
/// use std::time::Duration;
/// let pod = metricshard_e2e::wait_for("pod web-0 to exist", Duration::from_secs(30), || async {
///     pods.get_opt("web-0").await
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_for<P, F, Fut>(
    description: &str,
    timeout: Duration,
    mut check: F,
) -> Result<P::Output>
where
    P: Poll,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let start = Instant::now();
    let deadline = start + timeout;
    let mut interval = Duration::from_millis(20);
    let mut attempts = 0u32;
    let mut last = String::from("none: no check finished");
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(result) => match result.into_outcome() {
                Outcome::Ready(value) => return Ok(value),
                Outcome::NotYet(observation) => last = observation,
            },
            Err(_) => last.push_str(" (then a check was cut short by the deadline)"),
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "timed out after {:.1?} ({attempts} checks) waiting for {description}; last observation: {last}",
                now - start
            );
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

impl<T> Outcome<T> {
    /// Discards the ready value.
    pub fn map_ready(self) -> Outcome<()> {
        match self {
            Outcome::Ready(_) => Outcome::Ready(()),
            Outcome::NotYet(observation) => Outcome::NotYet(observation),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_the_ready_value() {
        let calls = AtomicU32::new(0);
        let value = wait_for("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n >= 3).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn timeout_names_the_condition_and_last_observation() {
        let err = wait_for("the impossible", Duration::from_millis(100), || async {
            Outcome::<()>::NotYet("phase=Pending".to_owned())
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("the impossible"), "{err}");
        assert!(err.contains("phase=Pending"), "{err}");
    }

    #[tokio::test]
    async fn errors_are_observations() {
        let err = wait_for("an error to go away", Duration::from_millis(50), || async {
            Err::<bool, _>(anyhow::anyhow!("connection refused"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("connection refused"), "{err}");
    }
}
