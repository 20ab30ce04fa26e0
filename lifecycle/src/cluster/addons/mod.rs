//! Cluster addons: flannel (the pod network) and the NVIDIA and EFA device
//! plugins, built as typed Kubernetes objects, plus the operator's own
//! manifests from `addons.manifest_dir`, all applied with server-side apply.
//!
//! - [`images`]: the addon images and the registry-mirror rule.
//! - [`flannel`], [`nvidia_device_plugin`], [`efa_device_plugin`]: the objects.
//! - [`manifest_dir`]: extra manifests read from the host.
//! - [`apply`]: server-side apply (field manager `hpk8s`, forced), idempotent.
//! - [`rollout`]: DaemonSet readiness with a deadline, reported, never awaited forever.
//!
//! The device plugins are applied on every cluster: their node affinity
//! keeps them off nodes without the hardware label, so a cluster without
//! GPUs simply runs zero of their pods.

pub mod apply;
pub mod efa_device_plugin;
pub mod flannel;
pub mod images;
pub mod manifest_dir;
pub mod nvidia_device_plugin;
pub mod rollout;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, HostPathVolumeSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, SecurityContext, Toleration, Volume, VolumeMount,
};
use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use crate::cluster::labels::FIELD_MANAGER;
use crate::config::AddonsConfig;
use crate::host::FsError;

pub use self::apply::{ApplyOutcome, ApplyReport, apply_all, apply_objects};
pub use self::images::AddonImages;
pub use self::rollout::{RolloutEntry, RolloutReport, rollout_status};

/// Label every built-in addon object carries, so an operator can list them
/// (`kubectl get ds -A -l app.kubernetes.io/managed-by=hpk8s`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Namespace of the device plugins.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The kubelet's device-plugin socket directory.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Priority class that keeps node agents scheduled under pressure.
pub const NODE_CRITICAL: &str = "system-node-critical";

/// Errors of the addons step (exit codes 140–159).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `addons.registry_mirror` is not `host[:port][/path]`.
    #[error(
        "config key addons.registry_mirror = {value:?} is not a registry (`host[:port][/path]`, no scheme): {why}"
    )]
    InvalidMirror {
        /// The configured value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// An addon image setting is not an image reference.
    #[error("config key addons.{key} = {value:?} is not an image reference: {why}")]
    InvalidImage {
        /// The config key.
        key: &'static str,
        /// The configured value.
        value: String,
        /// What is wrong.
        why: String,
    },
    /// The pod subnet handed to flannel is not a CIDR.
    #[error("pod subnet {value:?} is not a CIDR (like 10.244.0.0/16); fix the pod network setting")]
    InvalidPodSubnet {
        /// The value.
        value: String,
    },
    /// `addons.manifest_dir` or a file in it cannot be read.
    #[error("reading addon manifests: {0}")]
    ManifestRead(#[source] FsError),
    /// A manifest file is not valid YAML/JSON.
    #[error("manifest {file} document {document}: {message}; fix the file or remove it")]
    ManifestSyntax {
        /// The file (host path).
        file: PathBuf,
        /// 1-based document index within the file.
        document: usize,
        /// Parser message.
        message: String,
    },
    /// A manifest document lacks `apiVersion`, `kind` or `metadata.name`.
    #[error(
        "manifest {file} document {document}: {what}; every object needs apiVersion, kind and metadata.name"
    )]
    ManifestInvalid {
        /// The file (host path).
        file: PathBuf,
        /// 1-based document index within the file.
        document: usize,
        /// What is missing or wrong.
        what: String,
    },
    /// The API server serves no resource of this kind.
    #[error(
        "{origin}: kind {kind} (apiVersion {api_version}) is not served by the API server; install its CRD first or fix apiVersion/kind"
    )]
    UnknownKind {
        /// Where the object came from (`manifest FILE document N` or the addon).
        origin: String,
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// Discovery failed for another reason than the kind being unknown.
    #[error(
        "{origin}: looking up {kind} (apiVersion {api_version}) on the API server failed: {source}"
    )]
    Discovery {
        /// Where the object came from.
        origin: String,
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused or failed a server-side apply.
    #[error("{origin}: server-side apply of {kind} {object} failed: {source}")]
    Apply {
        /// Where the object came from.
        origin: String,
        /// kind.
        kind: String,
        /// `namespace/name` or `name`.
        object: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// Reading a DaemonSet's rollout status failed.
    #[error("reading the status of DaemonSet {namespace}/{name} failed: {source}")]
    RolloutRead {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The client error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// A built-in object could not be converted for applying (a bug).
    #[error("encoding addon object {object} failed: {source}; this is a bug in hpk8s")]
    Encode {
        /// The object.
        object: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Process exit code (140–159; see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidMirror { .. } => 140,
            Error::InvalidImage { .. } => 141,
            Error::InvalidPodSubnet { .. } => 142,
            Error::ManifestRead(_) => 143,
            Error::ManifestSyntax { .. } => 144,
            Error::ManifestInvalid { .. } => 145,
            Error::UnknownKind { .. } => 146,
            Error::Discovery { .. } => 147,
            Error::Apply { .. } => 148,
            Error::RolloutRead { .. } => 149,
            Error::Encode { .. } => 150,
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the addons step needs, resolved from `[addons]` and the pod
/// network.
#[derive(Debug, Clone, PartialEq)]
pub struct AddonSettings {
    /// Images, the registry mirror already applied.
    pub images: AddonImages,
    /// flannel's `Network` (must equal kubeadm's `podSubnet`).
    pub pod_subnet: String,
    /// Host directory of extra manifests.
    pub manifest_dir: PathBuf,
    /// Rollout deadline.
    pub rollout_timeout: Duration,
}

impl AddonSettings {
    /// Resolves `[addons]` for a cluster whose pod subnet is `pod_subnet`.
    pub fn from_config(cfg: &AddonsConfig, pod_subnet: &str) -> Result<Self> {
        flannel::check_pod_subnet(pod_subnet)?;
        Ok(Self {
            images: AddonImages::from_config(cfg)?,
            pod_subnet: pod_subnet.to_string(),
            manifest_dir: cfg.manifest_dir.clone(),
            rollout_timeout: Duration::from_secs(cfg.rollout_timeout_secs),
        })
    }
}

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

/// One addon: its name in reports and its objects in apply order
/// (namespace and RBAC before the workloads that need them).
#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    /// Short name (`flannel`).
    pub name: &'static str,
    /// The objects.
    pub objects: Vec<AddonObject>,
}

impl Addon {
    /// The addon's DaemonSets.
    pub fn daemon_sets(&self) -> impl Iterator<Item = &DaemonSet> {
        self.objects.iter().filter_map(AddonObject::as_daemon_set)
    }
}

/// The built-in addons, in apply order.
pub fn built_in(settings: &AddonSettings) -> Result<Vec<Addon>> {
    Ok(vec![
        Addon {
            name: flannel::NAME,
            objects: flannel::objects(&settings.images, &settings.pod_subnet)?,
        },
        Addon {
            name: nvidia_device_plugin::NAME,
            objects: vec![AddonObject::DaemonSet(Box::new(
                nvidia_device_plugin::daemon_set(&settings.images.nvidia_device_plugin),
            ))],
        },
        Addon {
            name: efa_device_plugin::NAME,
            objects: vec![AddonObject::DaemonSet(Box::new(
                efa_device_plugin::daemon_set(&settings.images.efa_device_plugin),
            ))],
        },
    ])
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
