//! The NVIDIA device plugin: one pod per GPU node that registers with the
//! kubelet through `/var/lib/kubelet/device-plugins` and advertises
//! `nvidia.com/gpu`. It finds GPUs through the NVIDIA container runtime
//! (containerd's default runtime on GPU nodes, set up by `prepare`).

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::{
    DEVICE_PLUGIN_DIR, KUBE_SYSTEM, NODE_CRITICAL, host_path, labels, locked_down, mount,
    require_label_true, tolerate,
};
use crate::cluster::labels::{GPU_PRESENT, GPU_TAINT_KEY};

/// The addon's name in reports.
pub const NAME: &str = "nvidia-device-plugin";
/// The DaemonSet (in `kube-system`).
pub const DAEMON_SET: &str = "nvidia-device-plugin-daemonset";
/// The pods' `name` label, which the DaemonSet selects on.
const POD_LABEL: &str = "nvidia-device-plugin-ds";

/// The NVIDIA device plugin DaemonSet running `image`.
pub fn daemon_set(image: &str) -> DaemonSet {
    let selector = [("name".to_string(), POD_LABEL.to_string())];
    let container = Container {
        name: "nvidia-device-plugin-ctr".into(),
        image: Some(image.into()),
        // A GPU node whose driver is broken keeps its plugin pod running
        // (advertising no GPUs) instead of crash-looping; GPU health is
        // reported separately.
        env: Some(vec![EnvVar {
            name: "FAIL_ON_INIT_ERROR".into(),
            value: Some("false".into()),
            ..Default::default()
        }]),
        security_context: Some(locked_down()),
        volume_mounts: Some(vec![mount("device-plugin", DEVICE_PLUGIN_DIR, false)]),
        ..Default::default()
    };
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(DAEMON_SET.into()),
            namespace: Some(KUBE_SYSTEM.into()),
            labels: Some(labels(&[("app.kubernetes.io/name", NAME)])),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector.clone().into()),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&[
                        ("name", POD_LABEL),
                        ("app.kubernetes.io/name", NAME),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    priority_class_name: Some(NODE_CRITICAL.into()),
                    // Only where a GPU was found (the label hpk8s sets).
                    affinity: Some(require_label_true(GPU_PRESENT)),
                    tolerations: Some(vec![
                        tolerate("CriticalAddonsOnly", None),
                        // GPU node groups are often tainted to keep other
                        // workloads off; the plugin must run there.
                        tolerate(GPU_TAINT_KEY, Some("NoSchedule")),
                    ]),
                    containers: vec![container],
                    volumes: Some(vec![host_path("device-plugin", DEVICE_PLUGIN_DIR, None)]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
