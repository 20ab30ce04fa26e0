//! Remediation, run by the controller's `hpk8s agent`: acting on the GPU
//! and interruption conditions the node agents publish.
//!
//! - [`policy`]: the pure decision per node (class × setting, budget,
//!   breaker, history).
//! - [`node_report`]: what a Node says (conditions, group, instance id).
//! - [`ownership`]: what hpk8s set, recorded on the Node; recovery removes
//!   only that.
//! - [`breaker`]: the circuit breaker's state and thresholds.
//! - [`restart`]: reboot and replace by the cluster's route (SageMaker
//!   API, Slurm, the node itself).
//! - [`controller`]: the watch-driven loop; [`metrics`]: its numbers.
//!
//! The drain itself is [`crate::drain`], shared with the operator commands.

pub mod breaker;
pub mod controller;
pub mod metrics;
pub mod node_report;
pub mod ownership;
pub mod policy;
pub mod restart;

/// Why a remediation command failed.
#[derive(Debug, thiserror::Error)]
pub enum RemediationError {
    /// The breaker's ConfigMap could not be read or written.
    #[error(
        "cannot read or write the remediation state ConfigMap {}/{}: {source}; check that the API server is reachable with the admin kubeconfig",
        breaker::NAMESPACE,
        breaker::NAME
    )]
    State {
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

crate::error::class::classify!(RemediationError {
    State { .. } => Unavailable "remediation_state_unavailable";
});
