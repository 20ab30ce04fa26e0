//! The Node watch every controller loop shares: a list, then a watch,
//! resumed after errors with kube's watcher backoff.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

pub(crate) type NodeEvents =
    futures::stream::BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>>;

/// A watch of every Node: a list, then a watch, resumed after errors with
/// kube's watcher backoff.
pub(crate) fn node_events(client: &Client) -> NodeEvents {
    watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Whether the watch must start over from a fresh list. kube's watcher
/// re-lists by itself after a `410 Gone` event inside the stream, but not
/// when the server refuses to start the watch with 410 (as some servers do
/// once the version it resumes from is compacted): it would retry the same
/// version forever.
pub(crate) fn expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// A failed watch: started over from a fresh list when the version it
/// resumes from is gone, otherwise left to the watcher's own backoff; a
/// repeated error is logged once.
pub(crate) fn on_watch_error(
    client: &Client,
    e: &watcher::Error,
    events: &mut NodeEvents,
    last_error: &mut Option<String>,
) {
    if expired(e) {
        tracing::info!("the Node watch expired (410 Gone); listing Nodes again");
        *events = node_events(client);
        return;
    }
    let text = e.to_string();
    if last_error.as_ref() != Some(&text) {
        tracing::warn!(error = %text, "watching Nodes failed; retrying");
    }
    *last_error = Some(text);
}

/// [`node_events`] that starts over from a fresh list whenever the version
/// it would resume from is gone (see [`expired`]), for loops that run for
/// days. Errors are still yielded, for the caller to log.
pub fn resilient_node_events(
    client: Client,
) -> impl futures::Stream<Item = Result<watcher::Event<Node>, watcher::Error>> + Send + 'static {
    let events = node_events(&client);
    futures::stream::unfold((client, events), |(client, mut events)| async move {
        let item = events.next().await?;
        if let Err(e) = &item
            && expired(e)
        {
            tracing::info!("the Node watch expired (410 Gone); listing Nodes again");
            events = node_events(&client);
        }
        Some((item, (client, events)))
    })
}
