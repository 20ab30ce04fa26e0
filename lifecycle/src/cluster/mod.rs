//! Phase `cluster`: form the Kubernetes cluster (controller) or join it
//! (workers), through a join ticket exchanged by a rendezvous.
//!
//! The pieces, each in its own module:
//! - [`labels`]: the label and taint names hpk8s puts on Nodes.
//! - [`ca_pin`]: the `sha256:` pin of the cluster CA that joining nodes check.
//! - [`bootstrap_token`]: short-lived join tokens from the OS RNG.
//! - [`pod_network`]: pod CIDR sizing and overlap checks.
//! - [`kubeadm_config`]: kubeadm `InitConfiguration`/`JoinConfiguration` documents.
//! - [`join_ticket`] and [`rendezvous`]: what a worker needs to join, and where it is found.
//! - [`addons`]: flannel and the NVIDIA/EFA device plugins as typed objects.
//! - [`kubeadm`]: what kubeadm left on the host, and its command lines.
//! - [`phase`], [`controller`], [`worker`]: the phase itself.
//! - [`nodes`]: waiting for the inventory's nodes to be Ready, and the
//!   labels only the controller may set.
//! - [`token_rotation`]: renewing the join ticket's bootstrap token.

pub mod addons;
pub mod bootstrap_token;
pub mod ca_pin;
pub mod controller;
pub mod join_ticket;
pub mod kubeadm;
pub mod kubeadm_config;
pub mod labels;
pub mod nodes;
pub mod phase;
pub mod pod_network;
pub mod rendezvous;
pub mod token_rotation;
pub mod worker;
