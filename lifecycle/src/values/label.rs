//! Kubernetes label keys and values, and which labels a kubelet may set on
//! its own Node at registration.
//!
//! NodeRestriction rejects a registration whose `--node-labels` hold a key
//! in the `kubernetes.io` or `k8s.io` namespaces (the prefix is one of them
//! or a subdomain) unless it is on an allow-list; such labels must be set by
//! a cluster credential (hpk8s's controller) instead.

/// Labels in the restricted namespaces a kubelet may still set on itself.
const KUBELET_ALLOWED: [&str; 9] = [
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
];
/// Prefixes in the restricted namespaces a kubelet may set anything under.
const KUBELET_ALLOWED_PREFIXES: [&str; 2] = ["kubelet.kubernetes.io", "node.kubernetes.io"];

/// Whether a kubelet may set label `key` on its own Node.
pub fn kubelet_may_set(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return true;
    };
    let restricted = ["kubernetes.io", "k8s.io"]
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")));
    !restricted || KUBELET_ALLOWED.contains(&key) || KUBELET_ALLOWED_PREFIXES.contains(&prefix)
}

/// A label (or annotation, taint) value: empty, or up to 63 of
/// `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub fn valid_value(s: &str) -> bool {
    let edge = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge(s.bytes().next())
        && edge(s.bytes().last())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (≤ 253), the
/// name 1–63 of `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub fn valid_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_allow_list() {
        for ok in [
            "nodegroup-role",
            "lifecycle",
            "k8s.amazonaws.com/accelerator",
            "nvidia.com/gpu.product",
            "hpk8s.io/instance-group",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/lifecycle",
            "topology.kubernetes.io/zone",
            "kubelet.kubernetes.io/anything",
        ] {
            assert!(kubelet_may_set(ok), "{ok}");
        }
        for no in [
            "node-role.kubernetes.io/worker",
            "node-restriction.kubernetes.io/team",
            "kubernetes.io/team",
            "example.k8s.io/x",
            "k8s.io/x",
            "topology.kubernetes.io/rack",
        ] {
            assert!(!kubelet_may_set(no), "{no}");
        }
    }

    #[test]
    fn keys_and_values() {
        assert!(valid_key("nvidia.com/gpu.product"));
        assert!(valid_key("lifecycle"));
        assert!(!valid_key("Bad_Prefix.com/x"));
        assert!(!valid_key("a/"));
        assert!(!valid_key("/x"));
        assert!(!valid_key("x y"));
        assert!(valid_value(""));
        assert!(valid_value("Ec2Spot"));
        assert!(!valid_value("-x"));
        assert!(!valid_value(&"a".repeat(64)));
    }
}
