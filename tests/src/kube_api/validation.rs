//! The object validation a real API server does that hpk8s could trip
//! over: object names, label keys and values, annotation keys, and node
//! taints. A GPU product name with spaces as a label value is rejected
//! here with 422 Invalid, exactly as a real cluster would reject it.

use serde_json::{Value, json};

use super::discovery::ResourceType;
use super::status::ApiError;

const LABEL_VALUE_HELP: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const NAME_HELP: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const SUBDOMAIN_HELP: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS_LABEL_HELP: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain (lowercase, at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_dns_label_loose)
}

fn is_dns_label_loose(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A DNS-1123 label (lowercase, no dots, at most 63 characters).
pub fn is_dns_label(s: &str) -> bool {
    is_dns_label_loose(s)
}

/// A label or annotation key: `[prefix/]name`.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(key),
    }
}

/// A label value: empty or a qualified name part.
pub fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_qualified_name_part(v)
}

fn cause(field: String, value: &str, help: &str) -> Value {
    json!({"reason": "FieldValueInvalid", "message": format!("Invalid value: {value:?}: {help}"), "field": field})
}

/// Checks an object about to be stored; 422 Invalid listing every problem.
pub fn validate(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name_ok = if rt.kind == "Namespace" {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        let help = if rt.kind == "Namespace" {
            DNS_LABEL_HELP
        } else {
            SUBDOMAIN_HELP
        };
        causes.push(cause("metadata.name".into(), name, help));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(cause("metadata.labels".into(), k, NAME_HELP));
            }
            match v.as_str() {
                Some(s) if is_label_value(s) => {}
                _ => causes.push(cause(
                    format!("metadata.labels[{k}]"),
                    &v.to_string(),
                    LABEL_VALUE_HELP,
                )),
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in annotations {
            if !is_qualified_name(&k.to_lowercase()) {
                causes.push(cause("metadata.annotations".into(), k, NAME_HELP));
            }
            if !v.is_string() {
                causes.push(cause(
                    format!("metadata.annotations[{k}]"),
                    &v.to_string(),
                    "must be a string",
                ));
            }
        }
    }
    if rt.kind == "Node" {
        for (i, t) in obj
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let key = t["key"].as_str().unwrap_or_default();
            if !is_qualified_name(key) {
                causes.push(cause(format!("spec.taints[{i}].key"), key, NAME_HELP));
            }
            let value = t.get("value").and_then(Value::as_str).unwrap_or_default();
            if !is_label_value(value) {
                causes.push(cause(
                    format!("spec.taints[{i}].value"),
                    value,
                    LABEL_VALUE_HELP,
                ));
            }
            let effect = t["effect"].as_str().unwrap_or_default();
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                causes.push(json!({"reason": "FieldValueNotSupported", "field": format!("spec.taints[{i}].effect"),
                    "message": format!("Unsupported value: {effect:?}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"")}));
            }
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    let summary: Vec<String> = causes
        .iter()
        .map(|c| {
            format!(
                "{}: {}",
                c["field"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let mut err = ApiError::invalid(rt, name, &format!("[{}]", summary.join(", ")));
    if let Some(d) = err.details.as_mut() {
        d["causes"] = Value::Array(causes);
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_api::discovery::find;

    #[test]
    fn names_and_labels() {
        assert!(is_qualified_name("nvidia.com/gpu.product"));
        assert!(is_qualified_name("node-role.kubernetes.io/worker"));
        assert!(!is_qualified_name("Bad_Prefix/x"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(is_label_value("NVIDIA-H100-80GB-HBM3"));
        assert!(is_label_value(""));
        assert!(!is_label_value("NVIDIA H100 80GB HBM3"));
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(is_dns_subdomain("ip-10-0-0-1.ec2.internal"));
        assert!(!is_dns_subdomain("Node_1"));
        assert!(!is_dns_label("a.b"));
    }

    #[test]
    fn invalid_node_lists_every_cause() {
        let nodes = find("", "v1", "nodes").unwrap();
        let node = json!({"metadata": {"name": "n1", "labels": {"nvidia.com/gpu.product": "NVIDIA H100"}},
                          "spec": {"taints": [{"key": "k", "effect": "Sometimes"}]}});
        let err = validate(nodes, &node).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert_eq!(err.details.unwrap()["causes"].as_array().unwrap().len(), 2);
        assert!(
            err.message.starts_with("Node \"n1\" is invalid: "),
            "{}",
            err.message
        );
    }
}
