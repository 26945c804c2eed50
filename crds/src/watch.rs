//! A watched, cached view of one kind, shared by the operator and the collectors.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Starts a reflector for `api` filtered by `config` and returns its store. `changed` is poked
/// on every event, so a caller can coalesce bursts (a relist delivers every object) into one
/// pass over the store. Watch errors are logged and retried with kube's default backoff; the
/// task ends when `shutdown` fires.
pub fn reflect<K>(api: Api<K>, config: watcher::Config, changed: Arc<Notify>, shutdown: CancellationToken) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff().touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(_)) => changed.notify_one(),
                    Some(Err(error)) => tracing::warn!(%kind, "watch failed, retrying: {error}"),
                    None => return,
                },
            }
        }
    });
    reader
}
