//! The four patch flavours: JSON merge (RFC 7386), JSON patch (RFC 6902),
//! strategic merge (lists merged by key where Kubernetes' types say so) and
//! a simplified server-side apply.
//!
//! Strategic merge knows the merge keys of the lists hpk8s and kubectl touch
//! (conditions and addresses by `type`, containers/volumes/env by `name`,
//! ...). Lists Kubernetes declares atomic, such as `spec.taints` and
//! `spec.tolerations`, are replaced whole, as the real server does: kubectl
//! taint relies on that to remove a taint.

use serde_json::{Map, Value};

/// Patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// The kind for a `Content-Type` header (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// The merge key of a list field, by the field's name, when Kubernetes
/// merges that list by key in strategic merge patches.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "conditions" | "addresses" => "type",
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

/// Lists of scalars merged as sets.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers" | "podCIDRs")
}

/// Applies a JSON merge patch.
pub fn merge(doc: &mut Value, patch: &Value) {
    json_patch::merge(doc, patch);
}

/// Applies a JSON patch (a list of operations).
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops: json_patch::Patch =
        serde_json::from_value(ops.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(doc, &ops).map_err(|e| format!("JSON patch failed: {e}"))
}

/// Applies a strategic merge patch to `doc` (an object).
pub fn strategic(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let Some(patch) = patch.as_object() else {
        return Err("a strategic merge patch must be a JSON object".to_string());
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    merge_map(
        doc.as_object_mut().map(std::mem::take).unwrap_or_default(),
        patch,
    )
    .map(|m| *doc = Value::Object(m))
}

fn merge_map(
    mut doc: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = patch.clone();
        p.remove("$patch");
        return Ok(p);
    }
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        doc.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(drop)) = (doc.get_mut(field), pv.as_array()) {
                items.retain(|i| !drop.contains(i));
            }
            continue;
        }
        match pv {
            Value::Null => {
                doc.remove(key);
            }
            Value::Object(po) => {
                let current = match doc.remove(key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if po.get("$patch").and_then(Value::as_str) == Some("delete") {
                    continue;
                }
                doc.insert(key.clone(), Value::Object(merge_map(current, po)?));
            }
            Value::Array(items) => {
                let current = match doc.remove(key) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let merged = if let Some(mk) = merge_key(key) {
                    merge_list_by_key(current, items, mk)?
                } else if is_set_list(key) {
                    let mut out = current;
                    for i in items {
                        if !out.contains(i) {
                            out.push(i.clone());
                        }
                    }
                    out
                } else {
                    strip_directives(items)
                };
                doc.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                doc.insert(key.clone(), scalar.clone());
            }
        }
    }
    Ok(doc)
}

fn strip_directives(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i.get("$patch").is_none())
        .cloned()
        .collect()
}

fn merge_list_by_key(
    mut current: Vec<Value>,
    patch: &[Value],
    key: &str,
) -> Result<Vec<Value>, String> {
    for item in patch {
        let Some(obj) = item.as_object() else {
            return Err(format!("list merged by {key:?} holds a non-object {item}"));
        };
        if obj.get("$patch").and_then(Value::as_str) == Some("replace") {
            return Ok(strip_directives(patch));
        }
        let Some(k) = obj.get(key) else {
            return Err(format!("list item {item} lacks its merge key {key:?}"));
        };
        let pos = current.iter().position(|c| c.get(key) == Some(k));
        if obj.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                current.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => {
                let base = current[p].as_object().cloned().unwrap_or_default();
                current[p] = Value::Object(merge_map(base, obj)?);
            }
            None => current.push(Value::Object(merge_map(Map::new(), obj)?)),
        }
    }
    Ok(current)
}

/// Server-side apply, simplified: the applied configuration is merged into
/// the live object like a strategic merge patch (lists by key, atomic lists
/// replaced), and `managedFields` records the manager. Fields a manager
/// stops applying are not removed, and conflicts between managers are not
/// detected.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    now: &str,
) -> Result<Value, String> {
    let mut out = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut cfg = applied.clone();
    if let Some(meta) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
        // Identity and bookkeeping fields are the server's, not the applier's.
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(k);
        }
    }
    strategic(&mut out, &cfg)?;
    if let Some(live) = live {
        let owned = live
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|e| e["manager"] == manager));
        if owned && out == *live {
            // A no-op apply leaves the object (and its managedFields times)
            // alone, so it does not bump the resourceVersion.
            return Ok(out);
        }
    }
    let api_version = applied.get("apiVersion").cloned().unwrap_or(Value::Null);
    let entry = serde_json::json!({
        "manager": manager, "operation": "Apply", "apiVersion": api_version,
        "time": now, "fieldsType": "FieldsV1", "fieldsV1": {},
    });
    let meta = out
        .as_object_mut()
        .ok_or("applied object is not a JSON object")?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let fields = meta
        .as_object_mut()
        .ok_or("metadata is not an object")?
        .entry("managedFields")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = fields.as_array_mut() {
        list.retain(|e| e.get("manager").and_then(Value::as_str) != Some(manager));
        list.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_merge_by_type_and_taints_are_atomic() {
        let mut node = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}
        });
        let patch = json!({
            "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "GpuHealthy", "status": "True"}]}
        });
        strategic(&mut node, &patch).unwrap();
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "b", "effect": "NoSchedule"}])
        );
        assert_eq!(
            node["status"]["conditions"],
            json!([{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}, {"type": "GpuHealthy", "status": "True"}])
        );
    }

    #[test]
    fn directives_delete_replace_and_retain() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
            "metadata": {"labels": {"k": "v", "drop": "me"}}});
        let patch = json!({
            "$setElementOrder/containers": [{"name": "a"}],
            "spec": {"containers": [{"name": "b", "$patch": "delete"}, {"name": "a", "image": "z"}],
                     "strategy": {"$retainKeys": ["type"], "type": "Recreate"}},
            "metadata": {"labels": {"drop": null}}
        });
        strategic(&mut pod, &patch).unwrap();
        assert_eq!(
            pod["spec"]["containers"],
            json!([{"name": "a", "image": "z"}])
        );
        assert_eq!(pod["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(pod["metadata"]["labels"], json!({"k": "v"}));
    }

    #[test]
    fn apply_merges_and_records_the_manager() {
        let live = json!({"metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1"}});
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"b": "2"}}, "data": {"y": "2"}});
        let out = apply(Some(&live), &applied, "hpk8s", "t").unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["data"], json!({"x": "1", "y": "2"}));
        assert_eq!(out["metadata"]["managedFields"][0]["manager"], "hpk8s");
        assert_eq!(
            apply(Some(&out), &applied, "hpk8s", "later").unwrap(),
            out,
            "a no-op apply changes nothing"
        );
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let mut o = json!({"metadata": {"labels": {"a": "1"}}});
        json_patch(&mut o, &json!([{"op": "add", "path": "/metadata/labels/b", "value": "2"}, {"op": "remove", "path": "/metadata/labels/a"}])).unwrap();
        assert_eq!(o["metadata"]["labels"], json!({"b": "2"}));
        merge(
            &mut o,
            &json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
        );
        assert_eq!(o["metadata"]["labels"], json!({"c": "3"}));
        assert!(
            json_patch(
                &mut o,
                &json!([{"op": "test", "path": "/metadata/labels/c", "value": "9"}])
            )
            .is_err()
        );
    }
}
