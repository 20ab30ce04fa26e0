//! Who is calling and what they may do: `system:masters` may do anything;
//! `system:node:<name>` in `system:nodes` gets the NodeRestriction rules
//! (kubernetes.md); anyone else may only read discovery and the public
//! `cluster-info` ConfigMap.

use serde_json::Value;

use super::discovery::ResourceType;
use super::rbac;
use super::status::ApiError;
use super::store::Store;

/// The cluster-admin group.
pub const MASTERS: &str = "system:masters";
/// The group of kubelet identities.
pub const NODES: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (certificate CN).
    pub user: String,
    /// Groups (certificate O).
    pub groups: Vec<String>,
}

impl Identity {
    /// kubeadm's admin identity.
    pub fn admin() -> Self {
        Self {
            user: "kubernetes-admin".to_string(),
            groups: vec![MASTERS.to_string()],
        }
    }

    /// A kubelet's identity.
    pub fn node(name: &str) -> Self {
        Self {
            user: format!("{NODE_PREFIX}{name}"),
            groups: vec![NODES.to_string()],
        }
    }

    /// A service account's token identity.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }

    /// A caller with no credentials.
    pub fn anonymous() -> Self {
        Self {
            user: "system:anonymous".to_string(),
            groups: vec!["system:unauthenticated".to_string()],
        }
    }

    /// Whether this identity is a cluster admin.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }

    /// The node name, for kubelet identities.
    pub fn node_name(&self) -> Option<&str> {
        if self.groups.iter().any(|g| g == NODES) {
            self.user.strip_prefix(NODE_PREFIX)
        } else {
            None
        }
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: &'a str,
    /// The resource type.
    pub rt: &'static ResourceType,
    /// Namespace ("" when cluster-scoped or across namespaces).
    pub namespace: &'a str,
    /// Object name ("" for collections and creates).
    pub name: &'a str,
    /// Subresource ("" for the main resource).
    pub sub: &'a str,
}

fn deny(id: &Identity, a: &Attributes<'_>, why: &str) -> ApiError {
    let verb = if a.sub.is_empty() {
        a.verb.to_string()
    } else {
        format!("{} {}", a.verb, a.sub)
    };
    ApiError::forbidden(a.rt, a.name, &id.user, &verb, why)
}

/// Whether the request may proceed at all (before the object is known).
pub fn authorize(
    id: &Identity,
    a: &Attributes<'_>,
    node_restriction: bool,
    store: &Store,
) -> Result<(), ApiError> {
    if id.is_admin() {
        return Ok(());
    }
    let read = matches!(a.verb, "get" | "list" | "watch");
    if let Some(node) = id.node_name() {
        if !node_restriction {
            return Ok(());
        }
        let allowed = match (a.rt.plural, a.sub) {
            ("secrets", _) => false,
            _ if read => true,
            ("nodes", _) => a.verb != "deletecollection" && (a.name.is_empty() || a.name == node),
            ("pods", "status" | "eviction") => true,
            ("pods", "") => matches!(a.verb, "create" | "delete"),
            ("events", _) => matches!(a.verb, "create" | "update" | "patch"),
            ("leases", _) => {
                a.namespace == "kube-node-lease" && (a.name.is_empty() || a.name == node)
            }
            _ => false,
        };
        return if allowed {
            Ok(())
        } else {
            Err(deny(id, a, &format!("node {node:?} may not do this")))
        };
    }
    if a.verb == "get"
        && a.rt.plural == "configmaps"
        && a.namespace == "kube-public"
        && a.name == "cluster-info"
    {
        return Ok(());
    }
    if rbac::allows(store, id, a) {
        return Ok(());
    }
    Err(deny(id, a, "no RBAC policy matched"))
}

fn labels(obj: Option<&Value>) -> serde_json::Map<String, Value> {
    obj.and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn taints(obj: Option<&Value>) -> Vec<Value> {
    obj.and_then(|o| o.pointer("/spec/taints"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether a node may set this label on itself (kubernetes.md).
pub fn node_may_set_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = |domain: &str| prefix == domain || prefix.ends_with(&format!(".{domain}"));
    if !restricted("kubernetes.io") && !restricted("k8s.io") {
        return true;
    }
    if prefix == "node-restriction.kubernetes.io"
        || prefix.ends_with(".node-restriction.kubernetes.io")
    {
        return false;
    }
    const ALLOWED: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
    ];
    ALLOWED.contains(&key)
        || ["kubelet.kubernetes.io", "node.kubernetes.io"]
            .iter()
            .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

/// Object-level admission (NodeRestriction) once the stored (`old`) and
/// resulting (`new`) objects are known.
pub fn admit(
    id: &Identity,
    a: &Attributes<'_>,
    old: Option<&Value>,
    new: Option<&Value>,
    node_restriction: bool,
) -> Result<(), ApiError> {
    let Some(node) = id.node_name().filter(|_| node_restriction) else {
        return Ok(());
    };
    match a.rt.plural {
        "nodes" => {
            let name = new
                .or(old)
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .unwrap_or(a.name);
            if name != node {
                return Err(deny(
                    id,
                    a,
                    &format!("node {node:?} is not allowed to modify node {name:?}"),
                ));
            }
            if old.is_some() && new.is_some() && taints(old) != taints(new) {
                return Err(deny(
                    id,
                    a,
                    &format!("node {node:?} is not allowed to modify taints"),
                ));
            }
            let (before, after) = (labels(old), labels(new));
            let mut forbidden: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k) && !node_may_set_label(k))
                .collect();
            forbidden.sort();
            forbidden.dedup();
            if !forbidden.is_empty() && new.is_some() {
                let keys: Vec<&str> = forbidden.iter().map(|k| k.as_str()).collect();
                return Err(deny(
                    id,
                    a,
                    &format!("is not allowed to modify labels: {}", keys.join(", ")),
                ));
            }
            Ok(())
        }
        "pods" => {
            let pod = old.or(new);
            let bound = pod
                .and_then(|p| p.pointer("/spec/nodeName"))
                .and_then(Value::as_str);
            if bound != Some(node) {
                return Err(deny(
                    id,
                    a,
                    &format!("node {node:?} can only access pods bound to it"),
                ));
            }
            let mirror = new
                .and_then(|p| p.pointer("/metadata/annotations/kubernetes.io~1config.mirror"))
                .is_some();
            if a.verb == "create" && a.sub.is_empty() && !mirror {
                return Err(deny(
                    id,
                    a,
                    &format!("node {node:?} can only create mirror pods"),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_allow_list() {
        for (k, ok) in [
            ("nvidia.com/gpu.present", true),
            ("plain", true),
            ("kubernetes.io/hostname", true),
            ("node.kubernetes.io/instance-type", true),
            ("node.kubernetes.io/anything", true),
            ("kubelet.kubernetes.io/x", true),
            ("topology.kubernetes.io/zone", true),
            ("node-role.kubernetes.io/worker", false),
            ("node-restriction.kubernetes.io/x", false),
            ("kubernetes.io/custom", false),
            ("example.k8s.io/x", false),
        ] {
            assert_eq!(node_may_set_label(k), ok, "{k}");
        }
    }
}
