//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`)
//! for nodes and pods, so `kubectl get nodes` shows STATUS, ROLES and
//! VERSION as against a real cluster. Other kinds answer with plain objects
//! and kubectl falls back to NAME and AGE.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::discovery::ResourceType;

/// Whether the client asked for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn column(name: &str, type_: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": priority})
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`...Z`).
fn epoch(ts: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| ts.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days-from-civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// kubectl's human durations (`45s`, `3m20s`, `5h`, `12d`).
fn age(created: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Some(then) = epoch(created) else {
        return "<unknown>".to_string();
    };
    let s = (i64::try_from(now).unwrap_or(0) - then).max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn node_row(n: &Value) -> Vec<Value> {
    let ready = n
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = n
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    roles.sort_unstable();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |t: &str| {
        n.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .and_then(|x| x["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    vec![
        json!(str_at(n, "/metadata/name")),
        json!(status),
        json!(roles),
        json!(age(str_at(n, "/metadata/creationTimestamp"))),
        json!(str_at(n, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(str_at(n, "/status/nodeInfo/osImage")),
        json!(str_at(n, "/status/nodeInfo/kernelVersion")),
        json!(str_at(n, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn pod_row(p: &Value) -> Vec<Value> {
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    let ready_containers = match statuses {
        Some(s) => s.iter().filter(|c| c["ready"] == true).count(),
        // Fixtures often give only the pod's Ready condition.
        None => {
            let ready = p
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
            if ready { total } else { 0 }
        }
    };
    let restarts: i64 = statuses
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let status = if p.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        p.pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending")
    };
    let or_none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        json!(str_at(p, "/metadata/name")),
        json!(format!("{ready_containers}/{total}")),
        json!(status),
        json!(restarts),
        json!(age(str_at(p, "/metadata/creationTimestamp"))),
        json!(or_none(str_at(p, "/status/podIP"))),
        json!(or_none(str_at(p, "/spec/nodeName"))),
        json!("<none>"),
        json!("<none>"),
    ]
}

/// Renders the cells of one row.
type RowFn = fn(&Value) -> Vec<Value>;

/// A Table of `items`, or `None` for kinds printed client-side.
pub fn render(
    rt: &ResourceType,
    items: &[Value],
    resource_version: u64,
    include_object: bool,
) -> Option<Value> {
    let (columns, row): (Vec<Value>, RowFn) = match rt.kind {
        "Node" => (
            vec![
                column("Name", "string", 0),
                column("Status", "string", 0),
                column("Roles", "string", 0),
                column("Age", "string", 0),
                column("Version", "string", 0),
                column("Internal-IP", "string", 1),
                column("External-IP", "string", 1),
                column("OS-Image", "string", 1),
                column("Kernel-Version", "string", 1),
                column("Container-Runtime", "string", 1),
            ],
            node_row,
        ),
        "Pod" => (
            vec![
                column("Name", "string", 0),
                column("Ready", "string", 0),
                column("Status", "string", 0),
                column("Restarts", "integer", 0),
                column("Age", "string", 0),
                column("IP", "string", 1),
                column("Node", "string", 1),
                column("Nominated Node", "string", 1),
                column("Readiness Gates", "string", 1),
            ],
            pod_row,
        ),
        _ => return None,
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let object = if include_object {
                o.clone()
            } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
            };
            json!({"cells": row(o), "object": object})
        })
        .collect();
    Some(json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns, "rows": rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_age() {
        assert_eq!(epoch("1970-01-02T00:00:01Z"), Some(86_401));
        assert_eq!(epoch("2024-03-01T00:00:00Z"), Some(1_709_251_200));
        assert_eq!(age(&super::super::objects::now()), "0s");
    }

    #[test]
    fn node_status_column() {
        let n = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/worker": ""}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let row = node_row(&n);
        assert_eq!(row[1], "Ready,SchedulingDisabled");
        assert_eq!(row[2], "worker");
    }
}
