//! `hpk8s delete-orphan-nodes`: Nodes whose instance is gone.
//!
//! An orphan is a Node that is not a control-plane node, whose instance is
//! absent from the inventory or in `Failure`/`NotFound`, and that has been
//! NotReady (`False` or `Unknown`) for at least the grace period. Every
//! other instance status (`Running`, `Pending`, `ShuttingDown`,
//! `SystemUpdating`, `DeepHealthCheckInProgress`, statuses this version
//! does not know) means alive. Each candidate is read again right before
//! it is deleted (the Node, and its instance when it has an id) and
//! deleted with a UID precondition: a node that became Ready, or was
//! replaced by a Node of the same name, stays.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions};
use serde::Serialize;

use super::OpsError;
use super::inventory::{self, Calls, DEAD_STATUSES, Instances, NodeView, Row};
use crate::aws::sagemaker::NodeFailure;
use crate::kube::client::timed;

/// Default grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);
/// Default share of the cluster deleted at once without `--force`.
pub const DEFAULT_MAX_PERCENT: usize = 5;

/// One orphan.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    /// Node name.
    pub node: String,
    /// UID, for the precondition.
    #[serde(skip)]
    pub uid: String,
    /// Its instance id, when known.
    pub instance_id: Option<String>,
    /// The instance's status (`null`: absent from the inventory).
    pub instance_status: Option<String>,
    /// Why, in words.
    pub reason: String,
}

/// Options.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a Node must have been NotReady.
    pub grace: Duration,
    /// Look only.
    pub dry_run: bool,
    /// Past the share limit.
    pub force: bool,
    /// Also `BatchDeleteClusterNodes` for orphans whose instance still
    /// exists (in `Failure`).
    pub delete_instances: bool,
    /// Share limit, percent of the Nodes (at least one).
    pub max_percent: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace: DEFAULT_GRACE,
            dry_run: false,
            force: false,
            delete_instances: false,
            max_percent: DEFAULT_MAX_PERCENT,
        }
    }
}

/// What the operator said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Go on.
    Yes,
    /// Stop, nothing changed.
    No,
}

/// A node left alone at the last check.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// Node.
    pub node: String,
    /// Why.
    pub why: String,
}

/// What the command did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every orphan found.
    pub orphans: Vec<Orphan>,
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
    /// Nodes deleted.
    pub deleted: Vec<String>,
    /// Orphans kept at the last check.
    pub kept: Vec<Kept>,
    /// Instances deleted (`--delete-instances`).
    pub instances_deleted: Vec<String>,
    /// Instances HyperPod refused to delete, with `Failed[].Code`.
    pub instance_failures: Vec<NodeFailure>,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// API calls.
    pub calls: Calls,
}

fn not_ready_for(n: &NodeView, now: SystemTime) -> Option<Duration> {
    if n.ready.status == "True" {
        return None;
    }
    n.ready
        .since
        .map(|s| now.duration_since(s).unwrap_or(Duration::ZERO))
}

/// The orphans among `rows`.
pub fn find(rows: &[Row], grace: Duration, now: SystemTime) -> Vec<Orphan> {
    let mut out: Vec<Orphan> = rows
        .iter()
        .filter_map(|r| {
            let n = r.node.as_ref()?;
            if n.control_plane {
                return None;
            }
            let status = r.instance.as_ref().map(|i| i.status.clone());
            let gone = match &status {
                None => true,
                Some(s) => DEAD_STATUSES.contains(&s.as_str()),
            };
            let down = not_ready_for(n, now)?;
            if !gone || down < grace {
                return None;
            }
            let instance_id = r
                .instance
                .as_ref()
                .and_then(|i| i.id.clone())
                .or_else(|| n.instance_id.clone());
            let what = match &status {
                None => match &instance_id {
                    Some(id) => format!("instance {id} is not in the inventory"),
                    None => "no instance matches it".to_string(),
                },
                Some(s) => format!("instance {} is {s}", instance_id.as_deref().unwrap_or("?")),
            };
            Some(Orphan {
                node: n.name.clone(),
                uid: n.uid.clone(),
                instance_id,
                instance_status: status,
                reason: format!(
                    "{what}; Ready={} for {} min",
                    n.ready.status,
                    down.as_secs() / 60
                ),
            })
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// Finds the orphans, asks (`confirm`, not called for a dry run or when
/// there are none), re-checks each and deletes it. `confirm` runs between
/// the listing and the deleting.
pub async fn delete_orphans(
    client: &Client,
    source: &Instances,
    opts: &Options,
    now: SystemTime,
    confirm: impl AsyncFnOnce(&[Orphan]) -> Result<Answer, OpsError>,
) -> Result<Report, crate::Error> {
    if matches!(source, Instances::None) {
        return Err(OpsError::NoInventory {
            why: "without one, a NotReady Node cannot be told from a node whose instance is gone"
                .into(),
        }
        .into());
    }
    let (rows, mut calls) = inventory::read(client, source).await?;
    let nodes = rows.iter().filter(|r| r.node.is_some()).count();
    let orphans = find(&rows, opts.grace, now);
    let mut report = Report {
        orphans: orphans.clone(),
        dry_run: opts.dry_run,
        deleted: Vec::new(),
        kept: Vec::new(),
        instances_deleted: Vec::new(),
        instance_failures: Vec::new(),
        nodes,
        calls,
    };
    if orphans.is_empty() || opts.dry_run {
        return Ok(report);
    }
    let limit = (nodes * opts.max_percent / 100).max(1);
    if orphans.len() > limit && !opts.force {
        return Err(OpsError::ShareExceeded {
            count: orphans.len(),
            total: nodes,
            percent: opts.max_percent,
        }
        .into());
    }
    if confirm(&orphans).await? == Answer::No {
        return Err(OpsError::Declined.into());
    }
    let api: Api<Node> = Api::all(client.clone());
    let mut instance_ids = Vec::new();
    for o in &orphans {
        if let Some(why) = recheck(&api, source, o, opts.grace, &mut calls).await? {
            tracing::warn!(node = %o.node, "{why}: not deleted");
            report.kept.push(Kept {
                node: o.node.clone(),
                why,
            });
            continue;
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(o.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match timed(api.delete(&o.node, &dp)).await {
            Ok(_) => {
                tracing::info!(node = %o.node, reason = %o.reason, "deleted orphan Node");
                report.deleted.push(o.node.clone());
                if o.instance_status.as_deref() == Some("Failure")
                    && let Some(id) = &o.instance_id
                {
                    instance_ids.push(id.clone());
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => report.kept.push(Kept {
                node: o.node.clone(),
                why: "the Node was deleted or replaced meanwhile".into(),
            }),
            Err(source) => {
                return Err(OpsError::Kubernetes {
                    what: "delete an orphan Node",
                    source,
                }
                .into());
            }
        }
    }
    if opts.delete_instances
        && !instance_ids.is_empty()
        && let Instances::HyperPod(sm) = source
    {
        let (outcome, error) = sm.delete_nodes(&instance_ids).await;
        report.instances_deleted = outcome.successful;
        report.instance_failures = outcome.failed;
        for f in &report.instance_failures {
            tracing::warn!(instance = %f.node_id, code = %f.code, "{}", f.message);
        }
        if let Some(e) = error {
            return Err(e.into());
        }
    }
    report.calls = calls;
    Ok(report)
}

/// `Some(why)` when the orphan is an orphan no longer.
async fn recheck(
    api: &Api<Node>,
    source: &Instances,
    o: &Orphan,
    grace: Duration,
    calls: &mut Calls,
) -> Result<Option<String>, crate::Error> {
    let node = match timed(api.get_opt(&o.node)).await {
        Ok(Some(n)) => n,
        Ok(None) => return Ok(Some("the Node is gone already".into())),
        Err(source) => {
            return Err(OpsError::Kubernetes {
                what: "read a Node again before deleting it",
                source,
            }
            .into());
        }
    };
    calls.kubernetes += 1;
    let view = NodeView::of(&node);
    if view.uid != o.uid {
        return Ok(Some("a new Node of that name registered".into()));
    }
    match not_ready_for(&view, SystemTime::now()) {
        None => return Ok(Some("it became Ready".into())),
        Some(d) if d < grace => {
            return Ok(Some("it was Ready again within the grace period".into()));
        }
        Some(_) => {}
    }
    if let (Instances::HyperPod(sm), Some(id)) = (source, &o.instance_id) {
        calls.sagemaker += 1;
        if let Some(inst) = sm.describe_node(id).await?
            && !DEAD_STATUSES.contains(&inst.status.as_str())
        {
            return Ok(Some(format!("its instance {id} is {} now", inst.status)));
        }
    }
    Ok(None)
}
