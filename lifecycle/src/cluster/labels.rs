//! Names of the labels and taints hpk8s puts on Nodes.
//!
//! Labels a node may set on itself at registration (NodeRestriction allows
//! anything outside `kubernetes.io`/`k8s.io` plus a short allow-list) are set
//! through kubelet's `--node-labels`; the rest are applied by the controller
//! with a cluster credential once the node is Ready.

/// Instance type without `ml.` (allowed to the node itself).
pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
/// Spot or on-demand (`spot` / `on-demand`), as peers use it.
pub const LIFECYCLE: &str = "node.kubernetes.io/lifecycle";
/// The HyperPod instance group (or static group) of the node.
pub const INSTANCE_GROUP: &str = "hpk8s.io/instance-group";
/// The EC2 instance id, for mapping Nodes back to instances.
pub const INSTANCE_ID: &str = "hpk8s.io/instance-id";
/// Region (allowed to the node itself).
pub const REGION: &str = "topology.kubernetes.io/region";
/// Availability zone (allowed to the node itself).
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// GPU model as NVIDIA's GPU feature discovery names it.
pub const GPU_PRODUCT: &str = "nvidia.com/gpu.product";
/// GPU model label the cluster autoscaler's AWS provider reads (it scales
/// GPU groups from zero by it).
pub const ACCELERATOR: &str = "k8s.amazonaws.com/accelerator";
/// `true` on nodes with NVIDIA GPUs (the NVIDIA device plugin selects on it).
pub const GPU_PRESENT: &str = "nvidia.com/gpu.present";
/// Number of NVIDIA GPUs the node has.
pub const GPU_COUNT: &str = "nvidia.com/gpu.count";
/// `true` on nodes with EFA adapters (the EFA device plugin selects on it).
pub const EFA_PRESENT: &str = "vpc.amazonaws.com/efa.present";
/// Role label only the controller may set (NodeRestriction forbids it to nodes).
pub const ROLE_WORKER: &str = "node-role.kubernetes.io/worker";
/// Optional taint key on GPU nodes (`nvidia.com/gpu=true:NoSchedule`); the
/// NVIDIA device plugin tolerates it.
pub const GPU_TAINT_KEY: &str = "nvidia.com/gpu";
/// Field manager for server-side apply and the owner of hpk8s's labels.
pub const FIELD_MANAGER: &str = "hpk8s";
