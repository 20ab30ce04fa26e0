//! Nodes of elastic groups that go away (autoscaling scale-in, spot
//! reclaim) must not linger as NotReady Nodes.
//!
//! On the node itself, when the machine powers off cleanly (not a reboot),
//! the agent deletes its own Node with the kubelet's credential: the
//! `system:node` role may delete nodes and NodeRestriction limits that to
//! the node's own object (kubernetes/kubernetes#62818 forbade it and was
//! reverted in #63712). It cannot cordon other nodes, evict pods or taint
//! itself; kubelet's graceful node shutdown (`shutdownGracePeriod`) has
//! already stopped the pods when systemd stops the agent.
//!
//! On the controller, instances that vanished without a clean shutdown
//! leave NotReady Nodes behind: the controller's agent deletes those of a
//! group with `remove_not_ready_after_secs` once they have been NotReady
//! that long, a few at a time ([`MAX_SHARE_PERCENT`] of the group per pass,
//! at least one). A group whose instances hpk8s cannot check trusts the
//! grace period alone: an instance that comes back re-registers its Node.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};

use crate::cluster::context::Context;
use crate::cluster::labels;
use crate::config::Config;
use crate::host::{Cmd, Host};
use crate::identity::{Role, TopologySource};
use crate::kube::client::{self as kube_client, Credential, timed};

/// The most of a group's Nodes deleted in one pass, in percent (at least
/// one Node): a mass disappearance is worked off over several passes and
/// stays visible meanwhile. The operator's orphan cleanup uses the same limit.
pub const MAX_SHARE_PERCENT: usize = 10;
/// How often the controller's agent looks for Nodes to remove.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Whether systemd is powering the machine off (or halting it), as opposed
/// to rebooting: only then is the instance going away for good.
pub fn powering_off(host: &Host) -> bool {
    let cmd = Cmd::new("systemctl").args(["list-jobs", "--no-legend", "--no-pager"]);
    match host.runner().run(&cmd) {
        Ok(out) if out.status == 0 => {
            let jobs = out.stdout_str();
            let going = |unit: &str| {
                jobs.lines()
                    .any(|l| l.split_whitespace().nth(1) == Some(unit))
            };
            (going("poweroff.target") || going("halt.target"))
                && !going("reboot.target")
                && !going("kexec.target")
        }
        _ => false,
    }
}

/// On a worker of an elastic group stopped because the machine powers off:
/// deletes its own Node. Never fails the agent's stop; says what it did.
pub async fn on_shutdown(cx: &Context<'_>) {
    let id = cx.identity;
    if id.source != TopologySource::Ec2 || id.role == Role::Controller || !id.joins {
        return;
    }
    if !powering_off(cx.host) {
        tracing::info!(
            "stopping without a power-off (a reboot, or the agent alone): the Node stays"
        );
        return;
    }
    let client = match kube_client::client(cx.host, Credential::Node).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot delete this node's Node on power-off");
            return;
        }
    };
    let nodes: Api<Node> = Api::all(client);
    match timed(nodes.delete(&id.node_name, &DeleteParams::default())).await {
        Ok(_) => {
            tracing::info!(node = %id.node_name, "the machine powers off: its Node was deleted")
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            tracing::warn!(node = %id.node_name, error = %e, "cannot delete this node's Node on power-off; the controller removes it after the group's grace period")
        }
    }
}

/// A Node to remove: its name, group and how long it has been NotReady.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// Node name.
    pub node: String,
    /// Its group.
    pub group: String,
    /// NotReady (or unknown) for this long.
    pub not_ready_for: Duration,
}

/// The Nodes of groups with `remove_not_ready_after_secs` that have been
/// NotReady at least that long at `now`, at most [`MAX_SHARE_PERCENT`] of
/// each group (at least one), longest NotReady first.
pub fn stale_nodes(nodes: &[Node], config: &Config, now: SystemTime) -> Vec<Stale> {
    let mut by_group: BTreeMap<String, (usize, Vec<Stale>)> = BTreeMap::new();
    for node in nodes {
        let meta = &node.metadata;
        let Some(group) = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::INSTANCE_GROUP))
        else {
            continue;
        };
        let Some(grace) = config
            .groups
            .get(group)
            .and_then(|g| g.remove_not_ready_after_secs)
        else {
            continue;
        };
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        let entry = by_group.entry(group.clone()).or_default();
        entry.0 += 1;
        if let Some(for_) = not_ready_for(node, now)
            && for_ >= Duration::from_secs(grace)
        {
            entry.1.push(Stale {
                node: meta.name.clone().unwrap_or_default(),
                group: group.clone(),
                not_ready_for: for_,
            });
        }
    }
    let mut out = Vec::new();
    for (_, (members, mut stale)) in by_group {
        stale.sort_by(|a, b| {
            b.not_ready_for
                .cmp(&a.not_ready_for)
                .then(a.node.cmp(&b.node))
        });
        let limit = (members * MAX_SHARE_PERCENT / 100).max(1);
        stale.truncate(limit);
        out.extend(stale);
    }
    out
}

/// How long `node` has been not Ready at `now` (`None` when Ready): since
/// its Ready condition last changed, or since it was created when it never
/// reported one.
fn not_ready_for(node: &Node, now: SystemTime) -> Option<Duration> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let since = match ready {
        Some(c) if c.status == "True" => return None,
        Some(c) => c.last_transition_time.as_ref().map(|t| t.0),
        None => None,
    }
    .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    let since: SystemTime = since.into();
    Some(now.duration_since(since).unwrap_or_default())
}

/// One pass: deletes the [`stale_nodes`]; returns how many went.
pub async fn prune(client: &Client, config: &Config) -> Result<usize, kube::Error> {
    if !config
        .groups
        .values()
        .any(|g| g.remove_not_ready_after_secs.is_some())
    {
        return Ok(0);
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let list = timed(nodes.list(&ListParams::default())).await?;
    let mut removed = 0;
    for s in stale_nodes(&list.items, config, SystemTime::now()) {
        match timed(nodes.delete(&s.node, &DeleteParams::default())).await {
            Ok(_) => {
                removed += 1;
                tracing::info!(node = %s.node, group = %s.group, not_ready_secs = s.not_ready_for.as_secs(), "removed a Node NotReady beyond its group's grace period (instance gone)");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Prunes every [`PRUNE_EVERY`] until `shutdown`; failures are logged and
/// retried on the next pass. Returns how many Nodes went.
pub async fn run_pruning(
    client: &Client,
    config: &Config,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> usize {
    let mut removed = 0;
    let mut tick = tokio::time::interval(every);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return removed,
            _ = tick.tick() => match prune(client, config).await {
                Ok(n) => removed += n,
                Err(e) => tracing::warn!(error = %e, "cannot look for Nodes to remove; will retry"),
            },
        }
    }
}
