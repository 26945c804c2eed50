//! The lease keeper of a [`RedisBuffer`](super::RedisBuffer): a background task per buffer that
//! heartbeats this instance, renews its partition leases, gives up partitions beyond its share
//! and takes free ones up to it. It runs apart from the output's loop so that a slow backend
//! write never lets a lease lapse.

use std::time::Duration;

use ::redis::Value;
use ::redis::aio::ConnectionManager;

use super::{PartitionMeta, RedisBufferError, Shared, target_hash};

/// Keeps this instance's leases: heartbeat, renew, give up extras, take free partitions.
pub(super) async fn keep_leases(shared: std::sync::Arc<Shared>, mut connection: ConnectionManager) {
    let period = (shared.config.lease / 3).max(Duration::from_millis(100));
    loop {
        let result = keep_leases_once(&shared, &mut connection).await;
        {
            let mut state = shared.state();
            match result {
                Ok(()) if !state.healthy => {
                    tracing::info!(prefix = %shared.config.key_prefix, owned = state.owned.len(), "Redis buffer reached Redis again");
                    state.healthy = true;
                }
                Ok(()) => {}
                Err(error) if state.healthy => {
                    tracing::warn!(prefix = %shared.config.key_prefix, category = error.category(), "cannot keep partition leases: {error}");
                    state.healthy = false;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn keep_leases_once(shared: &Shared, connection: &mut ConnectionManager) -> Result<(), RedisBufferError> {
    let lease_ms = shared.config.lease_ms();
    let partitions = shared.config.partitions.max(1);
    let members: u64 =
        shared.scripts.heartbeat.key(&shared.members).arg(&shared.token).arg(lease_ms).invoke_async(connection).await?;
    let share = u64::from(partitions).div_ceil(members.max(1));

    // Renew what we hold; whatever did not renew is someone else's now.
    let owned: Vec<u16> = shared.state().owned.keys().copied().collect();
    if !owned.is_empty() {
        // Scripts are loaded at the head of each pipeline: after a Redis restart they are gone.
        let mut pipe = ::redis::pipe();
        pipe.load_script(&shared.scripts.renew).ignore();
        for partition in &owned {
            pipe.invoke_script(shared.scripts.renew.key(&shared.keys(*partition)?.lease).arg(&shared.token).arg(lease_ms));
        }
        let renewed: Vec<i64> = pipe.query_async(connection).await?;
        let mut state = shared.state();
        for (partition, renewed) in owned.iter().zip(renewed) {
            if renewed != 1 {
                tracing::warn!(prefix = %shared.config.key_prefix, partition, "partition lease lost to another collector");
                state.owned.remove(partition);
            }
        }
    }

    // More than our share: give up the extras (not the one in flight; the script also keeps any
    // partition with a batch in flight in Redis).
    let extras: Vec<u16> = {
        let state = shared.state();
        let excess = (state.owned.len() as u64).saturating_sub(share);
        state.owned.keys().rev().filter(|p| Some(**p) != state.in_flight).take(usize::try_from(excess).unwrap_or(0)).copied().collect()
    };
    if !extras.is_empty() {
        let mut pipe = ::redis::pipe();
        pipe.load_script(&shared.scripts.release).ignore();
        for partition in &extras {
            let keys = shared.keys(*partition)?;
            pipe.invoke_script(shared.scripts.release.key(&keys.meta).key(&keys.lease).arg(&shared.token).arg("0"));
        }
        let released: Vec<i64> = pipe.query_async(connection).await?;
        let mut state = shared.state();
        for (partition, released) in extras.iter().zip(released) {
            if released == 1 {
                state.owned.remove(partition);
            }
        }
    }

    // Fewer than our share: try every free partition at once, keep what we need, give back the rest.
    let (missing, candidates) = {
        let state = shared.state();
        let missing = share.saturating_sub(state.owned.len() as u64);
        // Start at a per-instance offset so that collectors do not all race for partition 0.
        let offset = u16::try_from(target_hash(&shared.token, "") % u64::from(partitions)).unwrap_or(0);
        let candidates: Vec<u16> =
            (0..partitions).map(|i| (i + offset) % partitions).filter(|p| !state.owned.contains_key(p)).collect();
        (missing, candidates)
    };
    if missing > 0 && !candidates.is_empty() {
        let mut pipe = ::redis::pipe();
        for partition in &candidates {
            pipe.cmd("SET").arg(&shared.keys(*partition)?.lease).arg(&shared.token).arg("NX").arg("PX").arg(lease_ms);
        }
        let taken: Vec<Value> = pipe.query_async(connection).await?;
        let won: Vec<u16> =
            candidates.iter().zip(&taken).filter(|(_, reply)| matches!(reply, Value::Okay)).map(|(p, _)| *p).collect();
        let keep = usize::try_from(missing).unwrap_or(usize::MAX).min(won.len());
        let (kept, surplus) = won.split_at(keep);
        if !surplus.is_empty() {
            let mut pipe = ::redis::pipe();
            for partition in surplus {
                pipe.cmd("DEL").arg(&shared.keys(*partition)?.lease);
            }
            let () = pipe.query_async(connection).await?;
        }
        if !kept.is_empty() {
            let mut pipe = ::redis::pipe();
            for partition in kept {
                pipe.cmd("HMGET").arg(&shared.keys(*partition)?.meta).arg(&["head", "flight", "gap", "tail", "dropped"]);
            }
            let metas: Vec<Vec<Option<u64>>> = pipe.query_async(connection).await?;
            let mut state = shared.state();
            for (partition, fields) in kept.iter().zip(&metas) {
                state.owned.insert(*partition, PartitionMeta::from_fields(fields).held());
            }
        }
    }
    shared.state().members = members;
    Ok(())
}

