//! The controller's labels for nodes that join after the bootstrap (a
//! scale-up, a replacement, an autoscaled worker): a reflector over Nodes
//! feeds kube's controller runtime, whose reconciler labels each Ready node
//! that lacks them (derived from the labels it registered with: no
//! inventory needed) and whose error policy retries a failed node later.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{FutureExt as _, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

use crate::cluster::nodes::NodesError;
use crate::cluster::nodes::inventory::{GroupLabels, NodeView, controller_labels};
use crate::cluster::nodes::labelling::{missing_labels, patch_labels};
use crate::cluster::nodes::watch::resilient_node_events;

/// How long a node whose labelling failed waits before it is tried again.
pub const RELABEL_EVERY: Duration = Duration::from_secs(30);

struct Shared {
    client: Client,
    groups: GroupLabels,
    labelled: AtomicUsize,
}

/// Watches Nodes and gives each Ready node the
/// [`controller_labels`] derived from its own labels, until `shutdown`
/// resolves. Failures are logged and retried after [`RELABEL_EVERY`];
/// nothing here ends the agent. Returns how many nodes it labelled.
pub async fn label_joining_nodes(
    client: &Client,
    groups: GroupLabels,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> usize {
    let shared = Arc::new(Shared {
        client: client.clone(),
        groups,
        labelled: AtomicUsize::new(0),
    });
    let (store, writer) = reflector::store::<Node>();
    let queue = reflector::reflector(writer, resilient_node_events(client.clone()))
        .applied_objects()
        .filter_map(|event: Result<Node, watcher::Error>| async move {
            match event {
                Ok(node) => Some(Ok::<_, Infallible>(ObjectRef::from_obj(&node))),
                Err(e) => {
                    tracing::warn!(error = %e, "watching Nodes failed; retrying");
                    None
                }
            }
        });
    let applier = controller::applier(
        |node: Arc<Node>, shared: Arc<Shared>| reconcile(node, shared).boxed(),
        |node: Arc<Node>, e: &NodesError, _| {
            tracing::warn!(
                node = node.metadata.name.as_deref().unwrap_or(""),
                error = %e,
                retry_secs = RELABEL_EVERY.as_secs(),
                "cannot label the joining node; will retry"
            );
            Action::requeue(RELABEL_EVERY)
        },
        shared.clone(),
        store,
        queue,
        controller::Config::default(),
    )
    .try_for_each(|_| async { Ok(()) });
    tokio::select! {
        () = shutdown => {}
        result = applier => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "the node labeller stopped");
            }
        }
    }
    shared.labelled.load(Ordering::Relaxed)
}

async fn reconcile(node: Arc<Node>, shared: Arc<Shared>) -> Result<Action, NodesError> {
    let view = NodeView::of(&node);
    if !view.ready {
        return Ok(Action::await_change());
    }
    let missing = missing_labels(
        &view.labels,
        &controller_labels(&view.labels, None, &shared.groups),
    );
    if missing.is_empty() {
        return Ok(Action::await_change());
    }
    match patch_labels(&shared.client, &view.name, &missing).await {
        Ok(()) => {
            shared.labelled.fetch_add(1, Ordering::Relaxed);
        }
        // Deleted meanwhile: nothing left to label.
        Err(NodesError::NodeGone { .. }) => {}
        Err(e) => return Err(e),
    }
    Ok(Action::await_change())
}
