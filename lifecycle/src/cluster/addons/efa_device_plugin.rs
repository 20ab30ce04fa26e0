//! The AWS EFA device plugin: one pod per EFA-capable node that advertises
//! `vpc.amazonaws.com/efa` (the EFA adapters found under `/sys`) to the
//! kubelet. It runs in the host network namespace, where the adapters are.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::objects::{
    DEVICE_PLUGIN_DIR, NODE_CRITICAL, host_path, kube_system_daemon_set, locked_down, mount,
    require_label_true, tolerate,
};
use crate::cluster::labels::{EFA_PRESENT, GPU_TAINT_KEY};

/// The addon's name in reports.
pub const NAME: &str = "efa-device-plugin";
/// The DaemonSet (in `kube-system`).
pub const DAEMON_SET: &str = "aws-efa-k8s-device-plugin-daemonset";
/// The pods' `name` label, which the DaemonSet selects on.
const POD_LABEL: &str = "aws-efa-k8s-device-plugin";
/// Taint key some EFA node groups carry.
const EFA_TAINT_KEY: &str = "aws.amazon.com/efa";
/// sysfs, where the plugin finds the EFA adapters (read-only).
const SYS: &str = "/sys";

/// The EFA device plugin DaemonSet running `image`.
pub fn daemon_set(image: &str) -> DaemonSet {
    let container = Container {
        name: "aws-efa-k8s-device-plugin".into(),
        image: Some(image.into()),
        // It reads sysfs and writes its socket as root in a root-owned
        // directory: no capability and no privileged mode needed.
        security_context: Some(locked_down()),
        volume_mounts: Some(vec![
            mount("device-plugin", DEVICE_PLUGIN_DIR, false),
            mount("sys", SYS, true),
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        host_network: Some(true),
        priority_class_name: Some(NODE_CRITICAL.into()),
        // Only where EFA adapters were found (the label hpk8s sets).
        affinity: Some(require_label_true(EFA_PRESENT)),
        tolerations: Some(vec![
            tolerate("CriticalAddonsOnly", None),
            tolerate(EFA_TAINT_KEY, Some("NoSchedule")),
            // EFA nodes are usually GPU nodes, tainted as such.
            tolerate(GPU_TAINT_KEY, Some("NoSchedule")),
        ]),
        containers: vec![container],
        volumes: Some(vec![
            host_path("device-plugin", DEVICE_PLUGIN_DIR, None),
            host_path("sys", SYS, None),
        ]),
        ..Default::default()
    };
    kube_system_daemon_set(NAME, DAEMON_SET, POD_LABEL, pod)
}
