//! Typed addon objects, their conversion for server-side apply, and the
//! pieces the built-in DaemonSets share.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, HostPathVolumeSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, SecurityContext, Toleration, Volume, VolumeMount,
};
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::error::{Error, Result};
use crate::cluster::labels::FIELD_MANAGER;

/// Label every built-in addon object carries, so an operator can list them
/// (`kubectl get ds -A -l app.kubernetes.io/managed-by=hpk8s`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Namespace of the device plugins.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The kubelet's device-plugin socket directory.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Priority class that keeps node agents scheduled under pressure.
pub const NODE_CRITICAL: &str = "system-node-critical";

/// One object ready for server-side apply, whatever its type.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from (`flannel`, `manifest /etc/…/10-x.yaml document 2`).
    pub origin: String,
    /// apiVersion and kind.
    pub gvk: GroupVersionKind,
    /// The resource it is served as; `None` until resolved by discovery.
    pub resource: Option<(ApiResource, bool)>,
    /// The object.
    pub object: DynamicObject,
}

impl Manifest {
    /// `namespace/name`, or `name` for cluster-scoped objects.
    pub fn display_name(&self) -> String {
        let name = self.object.metadata.name.as_deref().unwrap_or("");
        match &self.object.metadata.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        }
    }
}

/// A built-in object, typed, so that callers and tests can inspect it.
#[derive(Debug, Clone, PartialEq)]
pub enum AddonObject {
    /// A Namespace.
    Namespace(k8s_openapi::api::core::v1::Namespace),
    /// A ServiceAccount.
    ServiceAccount(k8s_openapi::api::core::v1::ServiceAccount),
    /// A ClusterRole.
    ClusterRole(k8s_openapi::api::rbac::v1::ClusterRole),
    /// A ClusterRoleBinding.
    ClusterRoleBinding(k8s_openapi::api::rbac::v1::ClusterRoleBinding),
    /// A ConfigMap.
    ConfigMap(k8s_openapi::api::core::v1::ConfigMap),
    /// A DaemonSet (boxed: it is by far the largest).
    DaemonSet(Box<DaemonSet>),
}

impl AddonObject {
    /// The object as a [`Manifest`], its resource known from its type.
    pub fn to_manifest(&self, origin: &str) -> Result<Manifest> {
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::rbac::v1 as rbac;
        match self {
            AddonObject::Namespace(o) => erase::<core::Namespace>(o, false, origin),
            AddonObject::ServiceAccount(o) => erase::<core::ServiceAccount>(o, true, origin),
            AddonObject::ClusterRole(o) => erase::<rbac::ClusterRole>(o, false, origin),
            AddonObject::ClusterRoleBinding(o) => {
                erase::<rbac::ClusterRoleBinding>(o, false, origin)
            }
            AddonObject::ConfigMap(o) => erase::<core::ConfigMap>(o, true, origin),
            AddonObject::DaemonSet(o) => erase::<DaemonSet>(o.as_ref(), true, origin),
        }
    }

    /// The DaemonSet, if this is one.
    pub fn as_daemon_set(&self) -> Option<&DaemonSet> {
        match self {
            AddonObject::DaemonSet(d) => Some(d.as_ref()),
            _ => None,
        }
    }
}

fn erase<K>(obj: &K, namespaced: bool, origin: &str) -> Result<Manifest>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    let ar = ApiResource::erase::<K>(&());
    let what = format!("{} {}", ar.kind, obj.meta().name.as_deref().unwrap_or(""));
    let mut value = serde_json::to_value(obj).map_err(|source| Error::Encode {
        object: what.clone(),
        source,
    })?;
    // k8s-openapi writes apiVersion/kind itself; set them anyway so the
    // dynamic object always carries its type.
    value["apiVersion"] = ar.api_version.clone().into();
    value["kind"] = ar.kind.clone().into();
    let object: DynamicObject = serde_json::from_value(value).map_err(|source| Error::Encode {
        object: what,
        source,
    })?;
    Ok(Manifest {
        origin: origin.to_string(),
        gvk: GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind),
        resource: Some((ar, namespaced)),
        object,
    })
}

/// A `kube-system` DaemonSet named `daemon_set` for addon `name`, whose
/// pods carry `name=<pod_label>` (what it selects on) and run `pod`; rolled
/// out one node at a time. The device plugins share this skeleton and
/// differ only in their pod.
pub(crate) fn kube_system_daemon_set(
    name: &str,
    daemon_set: &str,
    pod_label: &str,
    pod: k8s_openapi::api::core::v1::PodSpec,
) -> k8s_openapi::api::apps::v1::DaemonSet {
    use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    DaemonSet {
        metadata: ObjectMeta {
            name: Some(daemon_set.into()),
            namespace: Some(KUBE_SYSTEM.into()),
            labels: Some(labels(&[("app.kubernetes.io/name", name)])),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels(&[("name", pod_label)])),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[
                        ("name", pod_label),
                        ("app.kubernetes.io/name", name),
                    ])),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Labels of a built-in addon's objects.
pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    out
}

/// Node affinity requiring `label=true`.
pub(crate) fn require_label_true(label: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: label.into(),
                        operator: "In".into(),
                        values: Some(vec!["true".into()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A toleration `key` (any value) for `effect`, or for every effect when `None`.
pub(crate) fn tolerate(key: &str, effect: Option<&str>) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: effect.map(String::from),
        ..Default::default()
    }
}

/// Tolerations for `taints` (any value, their effect), those whose key is
/// not tolerated for that effect already.
pub(crate) fn tolerate_taints(
    mut tolerations: Vec<Toleration>,
    taints: &[crate::values::taint::Taint],
) -> Vec<Toleration> {
    for t in taints {
        let covered = tolerations.iter().any(|have| {
            have.key.as_deref() == Some(t.key.as_str())
                && have
                    .effect
                    .as_deref()
                    .is_none_or(|e| e == t.effect.as_str())
        });
        if !covered {
            tolerations.push(tolerate(&t.key, Some(t.effect.as_str())));
        }
    }
    tolerations
}

/// A hostPath volume.
pub(crate) fn host_path(name: &str, path: &str, type_: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: type_.map(String::from),
        }),
        ..Default::default()
    }
}

/// A volume mount.
pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Unprivileged, no privilege escalation, every capability dropped: what a
/// device plugin needs beyond root's uid on the socket directory is nothing.
pub(crate) fn locked_down() -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
