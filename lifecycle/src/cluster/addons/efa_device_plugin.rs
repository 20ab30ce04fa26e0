//! The AWS EFA device plugin: one pod per EFA-capable node that advertises
//! `vpc.amazonaws.com/efa` (the EFA adapters found under `/sys`) to the
//! kubelet. It runs in the host network namespace, where the adapters are.
//!
//! Its image lives in the EKS account's private ECR (602401143452), for
//! which kubelet has no credentials outside EKS: phase `prepare` sets up
//! kubelet's `ecr-credential-provider` when an addon image is in ECR (see
//! `docs/configuration.md`, `[image_credentials]`).

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::objects::{
    DEVICE_PLUGIN_DIR, NODE_CRITICAL, host_path, kube_system_daemon_set, mount, require_label_true,
    tolerate, tolerate_taints,
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
/// Where rdma-core opens the uverbs devices of the EFA adapters.
const INFINIBAND_DEV: &str = "/dev/infiniband/";
/// Neuron tools, which the plugin uses on Trainium/Inferentia nodes (the
/// chart creates the directory when missing).
const NEURON_TOOLS: &str = "/opt/aws/neuron/";

/// The EFA device plugin DaemonSet running `image`, as the upstream chart
/// (aws/eks-charts `aws-efa-k8s-device-plugin` 0.5.x, image 0.5.9 and
/// later) runs it: privileged as root in the host network namespace with
/// the device-plugin directory, `/dev/infiniband` and the Neuron tools
/// mounted, no service-account token. Scheduling differs on purpose: the
/// chart selects a list of instance types by `node.kubernetes.io/instance-type`
/// (set by the AWS cloud provider, absent here); hpk8s selects the nodes
/// where it found EFA adapters.
pub fn daemon_set(image: &str, group_taints: &[crate::values::taint::Taint]) -> DaemonSet {
    let container = Container {
        name: "aws-efa-k8s-device-plugin".into(),
        image: Some(image.into()),
        // From 0.5.9 the plugin opens the uverbs devices and reads the
        // adapters' PCI config; upstream runs it privileged as root.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(true),
            privileged: Some(true),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("10m".into())),
                    ("memory".to_string(), Quantity("20Mi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("device-plugin", DEVICE_PLUGIN_DIR, false),
            mount("infiniband-volume", INFINIBAND_DEV, false),
            mount("neuron-tools", NEURON_TOOLS, false),
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        host_network: Some(true),
        automount_service_account_token: Some(false),
        priority_class_name: Some(NODE_CRITICAL.into()),
        // Only where EFA adapters were found (the label hpk8s sets).
        affinity: Some(require_label_true(EFA_PRESENT)),
        tolerations: Some(tolerate_taints(
            vec![
                tolerate("CriticalAddonsOnly", None),
                tolerate(EFA_TAINT_KEY, Some("NoSchedule")),
                // EFA nodes are usually GPU nodes, tainted as such.
                tolerate(GPU_TAINT_KEY, Some("NoSchedule")),
            ],
            group_taints,
        )),
        containers: vec![container],
        volumes: Some(vec![
            host_path("device-plugin", DEVICE_PLUGIN_DIR, None),
            host_path("infiniband-volume", INFINIBAND_DEV, None),
            host_path("neuron-tools", NEURON_TOOLS, Some("DirectoryOrCreate")),
        ]),
        ..Default::default()
    };
    kube_system_daemon_set(NAME, DAEMON_SET, POD_LABEL, pod)
}
