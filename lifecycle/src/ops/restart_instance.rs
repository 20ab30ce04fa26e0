//! `hpk8s replace-instance NODE` and `hpk8s reboot-instance NODE`: one
//! instance, safely. NODE is a node name, an instance id or an address.
//!
//! Refuses the control-plane node and the controller group (on HyperPod
//! Slurm clusters the Slurm controller). Then: cordon → drain (the shared
//! drain; at its deadline it stops, names every blocking pod and budget and
//! leaves the node cordoned, unless `--force`) → a join ticket valid longer
//! than the wait (replace) → the request (`--via api|slurm|auto`, the same
//! routes as remediation) → the old Node deleted (replace) → wait, with a
//! deadline, for a **new** instance id in the same group launched after
//! the request whose Node is Ready (replace), or for the node to come back
//! Ready after the request (reboot; uncordoned only if hpk8s cordoned it).
//! Success is a Ready Node, never Slurm's `idle` (a node that takes a job
//! at once never shows idle).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde::Serialize;
use serde_json::json;

use super::OpsError;
use super::inventory::{self, Instance, Instances, NodeView, Row};
use crate::aws::sagemaker::Restart;
use crate::config::RecoveryRoute;
use crate::drain;
use crate::host::Host;
use crate::kube::client::timed;
use crate::remediation::restart::{self, Outcome, Route, Target};

/// Default drain deadline.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default wait for a replacement.
pub const DEFAULT_REPLACE_WAIT: Duration = Duration::from_secs(90 * 60);
/// Default wait for a reboot.
pub const DEFAULT_REBOOT_WAIT: Duration = Duration::from_secs(20 * 60);

/// Options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reboot or replace.
    pub kind: Restart,
    /// Route.
    pub via: RecoveryRoute,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// Go on when the drain stops at its deadline.
    pub force: bool,
    /// The wait's deadline.
    pub wait: Duration,
    /// How often the wait looks.
    pub poll_every: Duration,
    /// Groups never acted on (beside control-plane nodes and their groups).
    pub controller_groups: Vec<String>,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The node acted on.
    pub node: String,
    /// Its instance.
    pub instance_id: String,
    /// `reboot` or `replace`.
    pub action: &'static str,
    /// The route that took the request.
    pub via: &'static str,
    /// The drain.
    pub drain: drain::Report,
    /// The replacement's instance id and Node (replace).
    pub new_instance_id: Option<String>,
    /// The replacement's Node name (replace) or the node (reboot).
    pub ready_node: String,
    /// Whether hpk8s uncordoned it (reboot, when it had cordoned it).
    pub uncordoned: bool,
    /// Seconds from start to Ready.
    pub elapsed_secs: f64,
}

/// A progress line (shown on a terminal by the CLI).
pub type Progress<'a> = &'a (dyn Fn(&str) + Send + Sync);

fn verb(kind: Restart) -> &'static str {
    match kind {
        Restart::Reboot => "reboot",
        Restart::Replace => "replace",
    }
}

fn kube_err(what: &'static str) -> impl FnOnce(kube::Error) -> crate::Error {
    move |source| OpsError::Kubernetes { what, source }.into()
}

/// Finds the row `target` names: node name, instance id, or address.
pub fn find<'r>(rows: &'r [Row], target: &str) -> Option<&'r Row> {
    rows.iter().find(|r| {
        r.node.as_ref().is_some_and(|n| {
            n.name == target
                || n.host() == target
                || n.ip.as_deref() == Some(target)
                || n.instance_id.as_deref() == Some(target)
        }) || r
            .instance
            .as_ref()
            .is_some_and(|i| i.id.as_deref() == Some(target) || i.ip.as_deref() == Some(target))
    })
}

/// Why `row` is never restarted, if it is not.
pub fn protected(rows: &[Row], row: &Row, controller_groups: &[String]) -> Option<String> {
    let node = row.node.as_ref()?;
    if node.control_plane {
        return Some("it is a control-plane node".into());
    }
    let group = row
        .instance
        .as_ref()
        .map(|i| i.group.clone())
        .or_else(|| node.group.clone())?;
    if controller_groups.contains(&group) {
        return Some(format!("it belongs to the controller group {group}"));
    }
    // Without the config's roles: the group of a control-plane node is
    // the controller group.
    let cp_group = rows.iter().any(|r| {
        r.node.as_ref().is_some_and(|n| n.control_plane)
            && (r.instance.as_ref().map(|i| &i.group) == Some(&group)
                || r.node.as_ref().and_then(|n| n.group.as_ref()) == Some(&group))
    });
    cp_group.then(|| format!("it belongs to {group}, the control plane's group"))
}

async fn set_unschedulable(api: &Api<Node>, node: &str, on: bool) -> Result<(), crate::Error> {
    let patch =
        json!({"spec": {"unschedulable": if on { json!(true) } else { serde_json::Value::Null }}});
    timed(api.patch(node, &PatchParams::default(), &Patch::Merge(&patch)))
        .await
        .map(drop)
        .map_err(kube_err("cordon or uncordon the node"))
}

/// Runs the command.
#[allow(clippy::too_many_arguments)] // each is a separate seam of the command
pub async fn restart_instance(
    client: &Client,
    source: &Instances,
    host: &Host,
    target: &str,
    opts: &Options,
    ticket_check: Option<&crate::remediation::controller::TicketCheck<'_>>,
    progress: Progress<'_>,
) -> Result<Report, crate::Error> {
    let started = Instant::now();
    let action = verb(opts.kind);
    let (rows, _) = inventory::read(client, source).await?;
    let row = find(&rows, target).ok_or_else(|| OpsError::NodeNotFound {
        target: target.to_string(),
    })?;
    let node = row.node.clone().ok_or_else(|| OpsError::NodeNotFound {
        target: target.to_string(),
    })?;
    if let Some(why) = protected(&rows, row, &opts.controller_groups) {
        return Err(OpsError::Protected {
            action,
            node: node.name.clone(),
            why,
        }
        .into());
    }
    let instance: Instance = row.instance.clone().ok_or_else(|| OpsError::NoInstance {
        node: node.name.clone(),
        action,
    })?;
    let instance_id = instance
        .id
        .clone()
        .or_else(|| node.instance_id.clone())
        .ok_or_else(|| OpsError::NoInstance {
            node: node.name.clone(),
            action,
        })?;
    let api: Api<Node> = Api::all(client.clone());

    // Cordon, drain.
    let we_cordoned = node.schedulable;
    if we_cordoned {
        progress(&format!("cordoning {}", node.name));
        set_unschedulable(&api, &node.name, true).await?;
    }
    progress(&format!(
        "draining {} (deadline {} s)",
        node.name,
        opts.drain_timeout.as_secs()
    ));
    let drain_opts = drain::Options {
        deadline: opts.drain_timeout,
        ..drain::Options::default()
    };
    let drained = drain::drain(client, &node.name, &drain_opts).await?;
    if !drained.finished && !opts.force {
        return Err(OpsError::DrainBlocked {
            node: node.name.clone(),
            action,
            summary: drained.summary(),
        }
        .into());
    }

    // The ticket the replacement joins with.
    if opts.kind == Restart::Replace
        && let Some(check) = ticket_check
    {
        progress("making sure the published join ticket outlives the wait");
        check().await.map_err(|why| OpsError::Ticket {
            node: node.name.clone(),
            why,
        })?;
    }

    // The request.
    let before: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.instance.as_ref().and_then(|i| i.id.clone()))
        .collect();
    let route = match source {
        Instances::HyperPod(api) => Route::HyperPod {
            api: Some(api.clone()),
            route: opts.via,
        },
        _ => Route::SelfManaged,
    };
    let requested_at = SystemTime::now();
    progress(&format!("requesting the {action} of {instance_id}"));
    let t = Target {
        node: node.name.clone(),
        instance_id: Some(instance_id.clone()),
    };
    let outcome = restart::request(&route, host, opts.kind, std::slice::from_ref(&t))
        .await
        .into_iter()
        .next()
        .map(|(_, o)| o)
        .unwrap_or(Outcome::Failed {
            code: "not_answered".into(),
            message: "no outcome".into(),
        });
    let via = match outcome {
        Outcome::Requested { via } => via,
        Outcome::Reported => {
            return Err(OpsError::RequestFailed {
                action,
                node: node.name.clone(),
                instance: instance_id,
                code: "self_managed".into(),
                message: "this cluster's instances are not managed by HyperPod: terminate or reboot the instance through EC2".into(),
            }
            .into());
        }
        Outcome::Failed { code, message } => {
            return Err(OpsError::RequestFailed {
                action,
                node: node.name.clone(),
                instance: instance_id,
                code,
                message,
            }
            .into());
        }
        Outcome::Stopped { code, message } => {
            return Err(OpsError::InstanceBusy {
                action,
                node: node.name.clone(),
                instance: instance_id,
                code,
                message,
            }
            .into());
        }
    };
    if via == "node-agent" {
        // Self-managed reboot: the node's agent acts on the annotation.
        let patch = json!({"metadata": {"annotations": {
            crate::remediation::ownership::REBOOT_REQUESTED: crate::values::time::rfc3339(requested_at)
        }}});
        timed(api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)))
            .await
            .map_err(kube_err("request the reboot on the Node"))?;
    }

    // The old Node goes with its instance.
    if opts.kind == Restart::Replace {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match timed(api.delete(&node.name, &dp)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(source) => {
                return Err(OpsError::Kubernetes {
                    what: "delete the replaced instance's Node",
                    source,
                }
                .into());
            }
        }
    }

    // The wait.
    let deadline = Instant::now() + opts.wait;
    let mut last = format!(
        "{} {}",
        instance.status,
        instance.message.clone().unwrap_or_default()
    );
    let mut saw_down = false;
    loop {
        if Instant::now() >= deadline {
            return Err(OpsError::WaitDeadline {
                node: node.name.clone(),
                action,
                waited_secs: requested_at.elapsed().map(|d| d.as_secs()).unwrap_or(0),
                what: match opts.kind {
                    Restart::Replace => "a new instance joined and Ready".into(),
                    Restart::Reboot => "the node Ready again".into(),
                },
                last: last.trim().to_string(),
            }
            .into());
        }
        tokio::time::sleep(opts.poll_every).await;
        let (rows, _) = match inventory::read(client, source).await {
            Ok(r) => r,
            Err(e) => {
                progress(&format!("cannot read the inventory ({e}); retrying"));
                continue;
            }
        };
        match opts.kind {
            Restart::Replace => {
                let fresh = rows.iter().find(|r| {
                    r.instance.as_ref().is_some_and(|i| {
                        i.group == instance.group
                            && i.id
                                .as_ref()
                                .is_some_and(|id| !before.contains(id) && *id != instance_id)
                            && i.launch_time
                                .is_none_or(|t| t >= requested_at - Duration::from_secs(1))
                    })
                });
                if let Some(old) = rows
                    .iter()
                    .filter_map(|r| r.instance.as_ref())
                    .find(|i| i.id.as_deref() == Some(&instance_id))
                {
                    last = format!("{} {}", old.status, old.message.clone().unwrap_or_default());
                }
                match fresh {
                    Some(Row {
                        node: Some(n),
                        instance: Some(i),
                    }) if n.ready.status == "True" => {
                        return Ok(Report {
                            node: node.name.clone(),
                            instance_id,
                            action,
                            via,
                            drain: drained,
                            new_instance_id: i.id.clone(),
                            ready_node: n.name.clone(),
                            uncordoned: false,
                            elapsed_secs: started.elapsed().as_secs_f64(),
                        });
                    }
                    Some(r) => {
                        let i = r.instance.as_ref();
                        last = format!(
                            "new instance {} {} {}",
                            i.and_then(|i| i.id.clone()).unwrap_or_default(),
                            i.map(|i| i.status.clone()).unwrap_or_default(),
                            if r.node.is_some() {
                                "(Node not Ready)"
                            } else {
                                "(no Node yet)"
                            }
                        );
                        progress(&format!("waiting: {last}"));
                    }
                    None => progress(&format!(
                        "waiting for a new instance in {}: old one {last}",
                        instance.group
                    )),
                }
            }
            Restart::Reboot => {
                let row = rows.iter().find(|r| {
                    r.instance.as_ref().and_then(|i| i.id.as_deref()) == Some(instance_id.as_str())
                        || r.node.as_ref().is_some_and(|n| n.name == node.name)
                });
                let view: Option<&NodeView> = row.and_then(|r| r.node.as_ref());
                // Back: the instance Running again (when HyperPod lists it)
                // and the Node Ready after having been seen not Ready, or
                // with a Ready transition after the request.
                let mut running = true;
                if let Some(i) = row.and_then(|r| r.instance.as_ref()) {
                    last = format!("{} {}", i.status, i.message.clone().unwrap_or_default());
                    running = i.status == "Running";
                }
                if let Some(v) = view {
                    saw_down |= v.ready.status != "True";
                    let back = running
                        && v.ready.status == "True"
                        && (saw_down
                            || v.ready
                                .since
                                .is_some_and(|s| s >= requested_at - Duration::from_secs(1)));
                    if back {
                        if we_cordoned {
                            set_unschedulable(&api, &v.name, false).await?;
                        }
                        return Ok(Report {
                            node: node.name.clone(),
                            instance_id,
                            action,
                            via,
                            drain: drained,
                            new_instance_id: None,
                            ready_node: v.name.clone(),
                            uncordoned: we_cordoned,
                            elapsed_secs: started.elapsed().as_secs_f64(),
                        });
                    }
                }
                progress(&format!("waiting for {} to come back: {last}", node.name));
            }
        }
    }
}
