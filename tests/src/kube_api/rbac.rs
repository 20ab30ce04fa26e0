//! RBAC for identities that are neither admins nor kubelets (service
//! accounts, bootstrap tokens, plain users): the stored ClusterRoles,
//! ClusterRoleBindings, Roles and RoleBindings are evaluated as the real
//! RBAC authorizer does, so a test can prove that a narrow ClusterRole
//! shipped with hpk8s is enough (and no more than enough) for what it does.

use serde_json::Value;

use super::authz::{Attributes, Identity};
use super::discovery::find;
use super::store::Store;

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn subject_matches(subject: &Value, id: &Identity, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => id.user == name,
        Some("Group") => id.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"].as_str().unwrap_or(binding_ns);
            id.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    let any = |list: &[&str], want: &str| list.iter().any(|x| *x == "*" || *x == want);
    let resource = if a.sub.is_empty() {
        a.rt.plural.to_string()
    } else {
        format!("{}/{}", a.rt.plural, a.sub)
    };
    let names = strs(&rule["resourceNames"]);
    any(&strs(&rule["verbs"]), a.verb)
        && any(&strs(&rule["apiGroups"]), a.rt.group)
        && (any(&strs(&rule["resources"]), &resource)
            || (!a.sub.is_empty()
                && strs(&rule["resources"]).contains(&format!("*/{}", a.sub).as_str())))
        && (names.is_empty() || (!a.name.is_empty() && names.contains(&a.name)))
}

/// The rules of the role a binding references.
fn role_rules<'a>(store: &'a Store, binding: &Value, binding_ns: &str) -> Vec<&'a Value> {
    let role_name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let role = match binding.pointer("/roleRef/kind").and_then(Value::as_str) {
        Some("ClusterRole") => find("rbac.authorization.k8s.io", "v1", "clusterroles")
            .and_then(|rt| store.get(rt, "", role_name)),
        Some("Role") => find("rbac.authorization.k8s.io", "v1", "roles")
            .and_then(|rt| store.get(rt, binding_ns, role_name)),
        _ => None,
    };
    role.and_then(|r| r.get("rules"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect()
}

/// Whether some binding grants `id` the request.
pub fn allows(store: &Store, id: &Identity, a: &Attributes<'_>) -> bool {
    let (Some(crbs), Some(rbs)) = (
        find("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        find("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ) else {
        return false;
    };
    let granted_by = |binding: &Value, binding_ns: &str| {
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, id, binding_ns))
            && role_rules(store, binding, binding_ns)
                .into_iter()
                .any(|r| rule_allows(r, a))
    };
    if store
        .list(crbs, None)
        .into_iter()
        .any(|(_, b)| granted_by(b, ""))
    {
        return true;
    }
    // RoleBindings grant only inside their namespace (so never
    // cluster-scoped requests or lists across namespaces).
    !a.namespace.is_empty()
        && store
            .list(rbs, Some(a.namespace))
            .into_iter()
            .any(|(_, b)| granted_by(b, a.namespace))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::store::EventType;

    fn store() -> Store {
        let mut s = Store::default();
        let cr = find("rbac.authorization.k8s.io", "v1", "clusterroles").unwrap();
        let crb = find("rbac.authorization.k8s.io", "v1", "clusterrolebindings").unwrap();
        let rb = find("rbac.authorization.k8s.io", "v1", "rolebindings").unwrap();
        s.put(cr, "", "drainer", json!({"rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["hpk8s"]}]}), EventType::Added);
        s.put(crb, "", "drainer", json!({"roleRef": {"kind": "ClusterRole", "name": "drainer"},
            "subjects": [{"kind": "ServiceAccount", "name": "drainer", "namespace": "kube-system"}]}), EventType::Added);
        s.put(
            rb,
            "team",
            "reader",
            json!({"roleRef": {"kind": "ClusterRole", "name": "drainer"},
            "subjects": [{"kind": "Group", "name": "team"}]}),
            EventType::Added,
        );
        s
    }

    fn attrs<'a>(
        verb: &'a str,
        plural: &str,
        ns: &'a str,
        name: &'a str,
        sub: &'a str,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            rt: crate::kube_api::discovery::find_plural(plural).unwrap(),
            namespace: ns,
            name,
            sub,
        }
    }

    #[test]
    fn bindings_grant_exactly_their_rules() {
        let s = store();
        let sa = Identity {
            user: "system:serviceaccount:kube-system:drainer".into(),
            groups: vec![],
        };
        assert!(allows(&s, &sa, &attrs("patch", "nodes", "", "n1", "")));
        assert!(allows(
            &s,
            &sa,
            &attrs("create", "pods", "default", "p", "eviction")
        ));
        assert!(!allows(
            &s,
            &sa,
            &attrs("delete", "pods", "default", "p", "")
        ));
        assert!(!allows(&s, &sa, &attrs("delete", "nodes", "", "n1", "")));
        assert!(allows(
            &s,
            &sa,
            &attrs("get", "configmaps", "x", "hpk8s", "")
        ));
        assert!(!allows(
            &s,
            &sa,
            &attrs("get", "configmaps", "x", "other", "")
        ));
        let member = Identity {
            user: "alice".into(),
            groups: vec!["team".into()],
        };
        assert!(allows(
            &s,
            &member,
            &attrs("create", "pods", "team", "p", "eviction")
        ));
        assert!(!allows(
            &s,
            &member,
            &attrs("create", "pods", "default", "p", "eviction")
        ));
        assert!(!allows(&s, &member, &attrs("list", "nodes", "", "", "")));
    }
}
