//! `hpk8s status`: a row per Node and per instance (node name, group,
//! instance id, Ready and since when, schedulable, GPU health and
//! interruption, what hpk8s holds, HyperPod status), mismatches flagged,
//! a summary; JSON with a documented schema (`docs/operations.md`).

use std::time::SystemTime;

use serde::Serialize;

use super::inventory::{Calls, ConditionView, Row};
use crate::values::time::rfc3339;

/// Version of the JSON document (bumped on incompatible changes).
pub const SCHEMA_VERSION: u32 = 1;

/// One row of `hpk8s status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusRow {
    /// Node name (`null`: an instance without a Node).
    pub node: Option<String>,
    /// Instance group (the instance's, else the Node's label).
    pub group: Option<String>,
    /// Instance id.
    pub instance_id: Option<String>,
    /// Instance type.
    pub instance_type: Option<String>,
    /// `spot` or `on-demand`, when the Node says.
    pub capacity_type: Option<String>,
    /// `True`, `False`, `Unknown` (`null` without a Node).
    pub ready: Option<String>,
    /// When `ready` last changed (RFC 3339).
    pub ready_since: Option<String>,
    /// Not cordoned.
    pub schedulable: Option<bool>,
    /// The `GPUHealthy` condition.
    pub gpu: Option<ConditionView>,
    /// The `InstanceInterruption` condition, when it reports a notice.
    pub interruption: Option<ConditionView>,
    /// What hpk8s's remediation holds on the node.
    pub remediation: Option<Held>,
    /// HyperPod instance status (`Running`, `Failure`, ...).
    pub instance_status: Option<String>,
    /// Its message.
    pub instance_message: Option<String>,
    /// `node-without-instance`, `instance-without-node` or `null`.
    pub mismatch: Option<&'static str>,
}

/// hpk8s's hold, shown.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// Why.
    pub reason: String,
    /// Action.
    pub action: &'static str,
    /// Stage.
    pub stage: crate::remediation::policy::Stage,
    /// Since (RFC 3339).
    pub since: String,
}

/// Counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Nodes.
    pub nodes: usize,
    /// Ready nodes.
    pub ready: usize,
    /// Not Ready (False or Unknown).
    pub not_ready: usize,
    /// Cordoned nodes.
    pub cordoned: usize,
    /// Instances in the inventory.
    pub instances: usize,
    /// Nodes whose GPU condition is not True.
    pub gpu_faults: usize,
    /// Nodes hpk8s holds.
    pub held: usize,
    /// Nodes without an instance (only with an inventory).
    pub node_without_instance: usize,
    /// Instances without a Node.
    pub instance_without_node: usize,
}

/// The document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When it was read (RFC 3339).
    pub read_at: String,
    /// Whether instances were compared (an inventory exists).
    pub inventory: bool,
    /// Rows: Nodes first (by name), then instances without a Node.
    pub rows: Vec<StatusRow>,
    /// Counts.
    pub summary: Summary,
    /// API calls made.
    pub calls: Calls,
}

/// Builds the document from matched rows.
pub fn build(rows: Vec<Row>, inventory: bool, calls: Calls, now: SystemTime) -> Status {
    let mut summary = Summary::default();
    let mut out: Vec<StatusRow> = rows
        .into_iter()
        .map(|r| {
            let mismatch = match (&r.node, &r.instance) {
                (Some(_), None) if inventory => Some("node-without-instance"),
                (None, Some(_)) => Some("instance-without-node"),
                _ => None,
            };
            if r.instance.is_some() {
                summary.instances += 1;
            }
            match mismatch {
                Some("node-without-instance") => summary.node_without_instance += 1,
                Some(_) => summary.instance_without_node += 1,
                None => {}
            }
            let inst = r.instance.as_ref();
            match &r.node {
                Some(n) => {
                    summary.nodes += 1;
                    if n.ready.status == "True" {
                        summary.ready += 1;
                    } else {
                        summary.not_ready += 1;
                    }
                    if !n.schedulable {
                        summary.cordoned += 1;
                    }
                    if n.gpu.as_ref().is_some_and(|g| g.status != "True") {
                        summary.gpu_faults += 1;
                    }
                    if n.remediation.is_some() {
                        summary.held += 1;
                    }
                    StatusRow {
                        node: Some(n.name.clone()),
                        group: inst.map(|i| i.group.clone()).or_else(|| n.group.clone()),
                        instance_id: inst
                            .and_then(|i| i.id.clone())
                            .or_else(|| n.instance_id.clone()),
                        instance_type: inst
                            .map(|i| i.instance_type.clone())
                            .filter(|t| !t.is_empty()),
                        capacity_type: n.capacity_type.clone(),
                        ready: Some(n.ready.status.clone()),
                        ready_since: n.ready.since.map(rfc3339),
                        schedulable: Some(n.schedulable),
                        gpu: n.gpu.clone(),
                        interruption: n.interruption.clone().filter(|c| c.status == "True"),
                        remediation: n.remediation.as_ref().map(|r| Held {
                            reason: r.reason.clone(),
                            action: r.action.as_str(),
                            stage: r.stage,
                            since: r.since.clone(),
                        }),
                        instance_status: inst.map(|i| i.status.clone()),
                        instance_message: inst.and_then(|i| i.message.clone()),
                        mismatch,
                    }
                }
                None => StatusRow {
                    node: None,
                    group: inst.map(|i| i.group.clone()),
                    instance_id: inst.and_then(|i| i.id.clone()),
                    instance_type: inst
                        .map(|i| i.instance_type.clone())
                        .filter(|t| !t.is_empty()),
                    capacity_type: None,
                    ready: None,
                    ready_since: None,
                    schedulable: None,
                    gpu: None,
                    interruption: None,
                    remediation: None,
                    instance_status: inst.map(|i| i.status.clone()),
                    instance_message: inst.and_then(|i| i.message.clone()),
                    mismatch,
                },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.node.is_none(), &a.node, &a.instance_id).cmp(&(
            b.node.is_none(),
            &b.node,
            &b.instance_id,
        ))
    });
    Status {
        schema_version: SCHEMA_VERSION,
        read_at: rfc3339(now),
        inventory,
        rows: out,
        summary,
        calls,
    }
}

/// The text table and summary line.
pub fn render(s: &Status) -> String {
    let header = [
        "NODE",
        "GROUP",
        "INSTANCE",
        "READY",
        "SINCE",
        "SCHED",
        "GPU",
        "HPK8S",
        "INSTANCE-STATUS",
        "!",
    ];
    let mut table: Vec<[String; 10]> = vec![header.map(str::to_string)];
    for r in &s.rows {
        let dash = || "-".to_string();
        table.push([
            r.node.clone().unwrap_or_else(dash),
            r.group.clone().unwrap_or_else(dash),
            r.instance_id.clone().unwrap_or_else(dash),
            r.ready.clone().unwrap_or_else(dash),
            r.ready_since.clone().unwrap_or_else(dash),
            match r.schedulable {
                Some(true) => "yes".into(),
                Some(false) => "cordoned".into(),
                None => dash(),
            },
            match (&r.gpu, &r.interruption) {
                (_, Some(i)) => i.reason.clone(),
                (Some(g), None) => g.reason.clone(),
                (None, None) => dash(),
            },
            r.remediation.as_ref().map_or_else(dash, |h| {
                format!(
                    "{}/{}",
                    h.action,
                    serde_json::to_value(h.stage)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                )
            }),
            r.instance_status.clone().unwrap_or_else(dash),
            r.mismatch.unwrap_or("").to_string(),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    let m = &s.summary;
    text.push_str(&format!(
        "{} nodes: {} Ready, {} not Ready, {} cordoned, {} with GPU faults, {} held by hpk8s; {} instances",
        m.nodes, m.ready, m.not_ready, m.cordoned, m.gpu_faults, m.held, m.instances
    ));
    if s.inventory {
        text.push_str(&format!(
            "; {} nodes without an instance, {} instances without a node",
            m.node_without_instance, m.instance_without_node
        ));
    } else {
        text.push_str(" (no instance inventory: pass --cluster to compare)");
    }
    text.push('\n');
    text
}
