//! The eviction subresource's PodDisruptionBudget check: may this pod go
//! now, or would that take a budget below what it promises?
//!
//! Simplified from the real disruption controller: the expected pod count
//! is the number of pods the budget selects (not the owning controller's
//! scale), and a pod counts as healthy when it is Running with condition
//! Ready=True.

use serde_json::Value;

use super::discovery::find;
use super::selectors::LabelSelector;
use super::status::ApiError;
use super::store::Store;

fn is_healthy(pod: &Value) -> bool {
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    // A Terminating pod is already going: it no longer counts as healthy.
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
    running && ready && !terminating
}

/// An int-or-percent budget value, resolved against `total` (percentages
/// round up, as the disruption controller does).
fn resolve(v: &Value, total: usize) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    let pct: usize = v.as_str()?.strip_suffix('%')?.parse().ok()?;
    Some((pct * total).div_ceil(100))
}

/// Whether evicting `pod` is allowed by every budget selecting it. Errors:
/// 429 naming the budget when it is not; 500 when several budgets select
/// the pod (the real API refuses that too).
pub fn check(store: &Store, pod: &Value) -> Result<(), ApiError> {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) || !is_healthy(pod) {
        // Evicting a pod that is not counted as healthy cannot reduce the
        // healthy count.
        return Ok(());
    }
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (Some(pdbs), Some(pods)) = (
        find("policy", "v1", "poddisruptionbudgets"),
        find("", "v1", "pods"),
    ) else {
        return Err(ApiError::internal("pod disruption budgets are not served"));
    };
    let mut budgets = Vec::new();
    for (_, pdb) in store.list(pdbs, Some(ns)) {
        let selector = LabelSelector::from_object(pdb.pointer("/spec/selector"))
            .map_err(ApiError::bad_request)?;
        if selector.matches(pod) {
            budgets.push((pdb, selector));
        }
    }
    if budgets.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some((pdb, selector)) = budgets.pop() else {
        return Ok(());
    };
    let name = pdb
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let selected: Vec<&Value> = store
        .list(pods, Some(ns))
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| selector.matches(p))
        .collect();
    let total = selected.len();
    let healthy = selected.iter().filter(|p| is_healthy(p)).count();
    let desired = if let Some(min) = pdb.pointer("/spec/minAvailable") {
        resolve(min, total).unwrap_or(total)
    } else if let Some(max) = pdb.pointer("/spec/maxUnavailable") {
        total.saturating_sub(resolve(max, total).unwrap_or(0))
    } else {
        0
    };
    if healthy > desired {
        Ok(())
    } else {
        Err(ApiError::disruption_budget(
            name,
            format!("needs {desired} healthy pods and has {healthy} currently"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::store::EventType;

    fn pod(name: &str, healthy: bool) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if healthy {"True"} else {"False"}}]}})
    }

    fn store_with(pdb_spec: Value, pods_: &[Value]) -> Store {
        let mut s = Store::default();
        let pdbs = find("policy", "v1", "poddisruptionbudgets").unwrap();
        let pods = find("", "v1", "pods").unwrap();
        s.put(
            pdbs,
            "default",
            "web",
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": pdb_spec}),
            EventType::Added,
        );
        for p in pods_ {
            s.put(
                pods,
                "default",
                p["metadata"]["name"].as_str().unwrap(),
                p.clone(),
                EventType::Added,
            );
        }
        s
    }

    #[test]
    fn min_available_blocks_the_last_healthy_pods() {
        let sel = json!({"matchLabels": {"app": "web"}});
        let s = store_with(
            json!({"selector": sel, "minAvailable": 2}),
            &[pod("a", true), pod("b", true)],
        );
        let err = check(&s, &pod("a", true)).unwrap_err();
        assert_eq!(err.code, 429);
        assert!(
            err.details
                .unwrap()
                .to_string()
                .contains("disruption budget web")
        );
        let s = store_with(
            json!({"selector": sel, "minAvailable": 1}),
            &[pod("a", true), pod("b", true)],
        );
        assert!(check(&s, &pod("a", true)).is_ok());
        // A terminating pod is not healthy: the other one is the last.
        let mut going = pod("b", true);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let s = store_with(
            json!({"selector": sel, "minAvailable": 1}),
            &[pod("a", true), going],
        );
        assert_eq!(check(&s, &pod("a", true)).unwrap_err().code, 429);
        // An unhealthy pod never reduces the healthy count.
        let s = store_with(
            json!({"selector": sel, "minAvailable": 2}),
            &[pod("a", true), pod("b", false)],
        );
        assert!(check(&s, &pod("b", false)).is_ok());
    }

    #[test]
    fn max_unavailable_counts_unhealthy_pods() {
        let sel = json!({"matchLabels": {"app": "web"}});
        let s = store_with(
            json!({"selector": sel, "maxUnavailable": 1}),
            &[pod("a", true), pod("b", false), pod("c", true)],
        );
        assert_eq!(check(&s, &pod("a", true)).unwrap_err().code, 429);
        let s = store_with(
            json!({"selector": sel, "maxUnavailable": "50%"}),
            &[pod("a", true), pod("b", true), pod("c", true)],
        );
        assert!(check(&s, &pod("a", true)).is_ok());
    }
}
