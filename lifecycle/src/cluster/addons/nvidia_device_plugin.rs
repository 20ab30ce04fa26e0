//! The NVIDIA device plugin: one pod per GPU node that registers with the
//! kubelet through `/var/lib/kubelet/device-plugins` and advertises
//! `nvidia.com/gpu`. It finds GPUs through the NVIDIA container runtime
//! (containerd's default runtime on GPU nodes, set up by `prepare`).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Capabilities, Container, EnvVar, PodSpec, SecurityContext};

use super::objects::{
    DEVICE_PLUGIN_DIR, NODE_CRITICAL, host_path, kube_system_daemon_set, locked_down, mount,
    require_label_true, tolerate, tolerate_taints,
};
use crate::cluster::labels::{GPU_PRESENT, GPU_TAINT_KEY};
use crate::config::DeviceListStrategy;

/// The addon's name in reports.
pub const NAME: &str = "nvidia-device-plugin";
/// The DaemonSet (in `kube-system`).
pub const DAEMON_SET: &str = "nvidia-device-plugin-daemonset";
/// The pods' `name` label, which the DaemonSet selects on.
const POD_LABEL: &str = "nvidia-device-plugin-ds";

/// The NVIDIA device plugin DaemonSet running `image`, handing out GPUs
/// by `strategy`.
pub fn daemon_set(
    image: &str,
    strategy: DeviceListStrategy,
    group_taints: &[crate::values::taint::Taint],
) -> DaemonSet {
    let env = |name: &str, value: &str| EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    };
    let security_context = match strategy {
        DeviceListStrategy::Envvar => locked_down(),
        // The plugin finds the GPUs through its own image's
        // `NVIDIA_VISIBLE_DEVICES=all`, which a toolkit that ignores the
        // variable in unprivileged containers honours only for a container
        // holding CAP_SYS_ADMIN (upstream's Helm chart adds it likewise).
        DeviceListStrategy::VolumeMounts => SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["SYS_ADMIN".into()]),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let container = Container {
        name: "nvidia-device-plugin-ctr".into(),
        image: Some(image.into()),
        env: Some(vec![
            // A GPU node whose driver is broken keeps its plugin pod
            // running (advertising no GPUs) instead of crash-looping; GPU
            // health is reported separately.
            env("FAIL_ON_INIT_ERROR", "false"),
            env("DEVICE_LIST_STRATEGY", strategy.as_str()),
        ]),
        security_context: Some(security_context),
        volume_mounts: Some(vec![mount("device-plugin", DEVICE_PLUGIN_DIR, false)]),
        ..Default::default()
    };
    let pod = PodSpec {
        priority_class_name: Some(NODE_CRITICAL.into()),
        // Only where a GPU was found (the label hpk8s sets).
        affinity: Some(require_label_true(GPU_PRESENT)),
        tolerations: Some(tolerate_taints(
            vec![
                tolerate("CriticalAddonsOnly", None),
                // GPU node groups are often tainted to keep other
                // workloads off; the plugin must run there.
                tolerate(GPU_TAINT_KEY, Some("NoSchedule")),
            ],
            group_taints,
        )),
        containers: vec![container],
        volumes: Some(vec![host_path("device-plugin", DEVICE_PLUGIN_DIR, None)]),
        ..Default::default()
    };
    kube_system_daemon_set(NAME, DAEMON_SET, POD_LABEL, pod)
}
