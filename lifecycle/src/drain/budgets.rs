//! Which PodDisruptionBudgets select a pod. The eviction API names the
//! budget in a 429, but not in the 500 it answers when several budgets
//! select one pod, and not for pods a drain never got to: those are found
//! here by matching each budget's selector against the pod's labels.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `selector` selects an object with `labels`. In `policy/v1` an
/// empty selector selects every pod of the namespace; a missing one none.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
        match e.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => !value.is_some_and(listed),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator this code does not know selects nothing rather
            // than everything.
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The names of the budgets in `budgets` (one namespace's) that select a
/// pod with `labels`, sorted.
pub fn selecting(
    budgets: &[PodDisruptionBudget],
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut names: Vec<String> = budgets
        .iter()
        .filter(|b| selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), labels))
        .filter_map(|b| b.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// The budget a 429 names: `The disruption budget <name> needs …` in the
/// `DisruptionBudget` cause of the Status.
pub fn named_in(status: &kube::core::Status) -> Option<String> {
    let causes = status.details.as_ref()?.causes.iter();
    causes
        .filter(|c| c.reason == "DisruptionBudget")
        .find_map(|c| {
            c.message
                .strip_prefix("The disruption budget ")?
                .split_whitespace()
                .next()
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn selectors_follow_policy_v1() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!selects(None, &pod), "no selector selects nothing");
        assert!(
            selects(Some(&LabelSelector::default()), &pod),
            "an empty selector selects every pod"
        );
        let by_label = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            ..LabelSelector::default()
        };
        assert!(selects(Some(&by_label), &pod));
        assert!(!selects(Some(&by_label), &labels(&[("app", "db")])));
        let exprs = |r: Vec<LabelSelectorRequirement>| LabelSelector {
            match_expressions: Some(r),
            ..LabelSelector::default()
        };
        assert!(selects(
            Some(&exprs(vec![requirement("tier", "In", &["front", "back"])])),
            &pod
        ));
        assert!(!selects(
            Some(&exprs(vec![requirement("tier", "NotIn", &["front"])])),
            &pod
        ));
        assert!(selects(
            Some(&exprs(vec![requirement("zone", "DoesNotExist", &[])])),
            &pod
        ));
        assert!(!selects(
            Some(&exprs(vec![requirement("zone", "Exists", &[])])),
            &pod
        ));
        assert!(!selects(
            Some(&exprs(vec![requirement("app", "Matches", &["web"])])),
            &pod
        ));
    }

    #[test]
    fn the_budget_of_a_429_is_read_from_its_cause() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(named_in(&status).as_deref(), Some("web-pdb"));
        let bare: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 429, "reason": "TooManyRequests", "message": "slow down"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(named_in(&bare), None);
    }
}
