//! Leader election on a `coordination.k8s.io` Lease, the way client-go does it: a candidate takes
//! the Lease when its record has not changed for a whole lease duration *as observed on the
//! candidate's own clock*, so clock skew between machines cannot make two leaders. Writes use the
//! Lease's resourceVersion, so two candidates racing for it cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// How long a leader's Lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews (and candidates retry).
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// A candidate for leadership.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    observed: Option<(String, Instant)>,
}

impl LeaderElector {
    /// A candidate `identity` for the Lease `name` of `api`'s namespace.
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self { api, name: name.into(), identity: identity.into(), observed: None }
    }

    /// Takes or renews the Lease; true while this candidate leads.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now.clone(), now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder}/{:?}", spec.renew_time);
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let duration = spec.lease_duration_seconds.and_then(|s| u64::try_from(s).ok()).map_or(LEASE_DURATION, Duration::from_secs);
        let expired = self.observed.as_ref().is_some_and(|(_, since)| since.elapsed() >= duration);
        let ours = holder == self.identity;
        if !(ours || holder.is_empty() || expired) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours { spec.acquire_time.clone().unwrap_or_else(|| now.clone()) } else { now.clone() };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up so another candidate takes over at once (on shutdown).
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
        {
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
            }
            if let Err(error) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!("releasing leadership failed: {error}");
            }
        }
    }

    fn spec(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}
