//! `hpk8s agent`: the long-running loops, on every node, supervised by
//! systemd.
//!
//! On the controller: the join ticket kept fresh ([`token_rotation`]) and
//! the controller's labels on nodes that join later ([`node_labels`]).
//! Other nodes have nothing to do yet; the agent says so and keeps running
//! until stopped, so that systemd supervises it the same way everywhere.

pub mod node_labels;
pub mod scale_in;
pub mod token_rotation;

use std::future::Future;
use std::time::SystemTime;

use futures::FutureExt as _;

use crate::Error;
use crate::cluster::context::Context;
use crate::cluster::token_rotation::{DEFAULT_GRACE, ensure_ticket};
use crate::identity::Role;

/// Runs the agent's loops for this node's role until `shutdown` resolves.
pub async fn run(
    cx: &Context<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if cx.identity.role == Role::Controller && cx.identity.joins {
        return run_controller(cx, shutdown).await;
    }
    tracing::info!(
        role = ?cx.identity.role,
        node = %cx.identity.node_name,
        "nothing for the agent to do on this node yet; waiting until stopped"
    );
    shutdown.await;
    scale_in::on_shutdown(cx).await;
    tracing::info!("agent stopped");
    Ok(())
}

async fn run_controller(
    cx: &Context<'_>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let client = cx.formed_controller().await?;
    let rendezvous = cx.rendezvous().await?;
    let ttl = cx.config.cluster.token_ttl;
    let (ticket, _) = ensure_ticket(
        client,
        rendezvous,
        &cx.ticket_fields()?,
        ttl,
        DEFAULT_GRACE,
        SystemTime::now(),
    )
    .await?;
    let shutdown = shutdown.shared();
    let rotation = token_rotation::run_rotation(
        client,
        rendezvous,
        ticket,
        ttl,
        DEFAULT_GRACE,
        shutdown.clone(),
    );
    let labelling = node_labels::label_joining_nodes(
        client,
        crate::cluster::nodes::group_labels(cx.config),
        shutdown.clone(),
    );
    let pruning = scale_in::run_pruning(client, cx.config, scale_in::PRUNE_EVERY, shutdown);
    let (rotated, labelled, removed) = tokio::join!(rotation, labelling, pruning);
    tracing::info!(labelled, removed, "agent stopped");
    Ok(rotated?)
}
