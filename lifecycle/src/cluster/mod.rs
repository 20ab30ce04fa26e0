//! Phase `cluster`: form the Kubernetes cluster (controller) or join it
//! (workers), through a join ticket exchanged by a rendezvous.
//!
//! The phase itself: [`phase`] (its steps in [`steps`], what they share in
//! [`context`], its errors in [`error`]). The pieces, each in its own
//! module:
//! - [`labels`]: the label and taint names hpk8s puts on Nodes.
//! - [`ca_pin`]: the `sha256:` pin of the cluster CA that joining nodes check.
//! - [`bootstrap_token`]: short-lived join tokens from the OS RNG.
//! - [`pod_network`]: pod CIDR sizing and overlap checks.
//! - [`kubeadm_config`]: kubeadm `InitConfiguration`/`JoinConfiguration` documents.
//! - [`kubeadm`]: what kubeadm left on the host, and its command lines.
//! - [`record`]: what `kubeadm init` was given, for later runs.
//! - [`join_ticket`] and [`rendezvous`]: what a worker needs to join, and where it is found.
//! - [`token_rotation`]: renewing the join ticket's bootstrap token.
//! - [`addons`]: flannel and the NVIDIA/EFA device plugins as typed objects.
//! - [`nodes`]: the expected Nodes, their readiness and the controller's labels.

pub mod addons;
pub mod bootstrap_token;
pub mod ca_pin;
pub mod context;
pub mod error;
pub mod gpu_gate;
pub mod join_ticket;
pub mod kubeadm;
pub mod kubeadm_config;
pub mod labels;
pub mod nodes;
pub mod phase;
pub mod pod_network;
pub mod record;
pub mod rendezvous;
pub mod steps;
pub mod token_rotation;

pub use self::context::Context;
pub use self::error::ClusterError;
