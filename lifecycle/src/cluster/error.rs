//! Errors of phase `cluster` itself (its building blocks have their own).

use super::kubeadm;
use crate::error::class::classify;
use crate::identity::Role;

/// Errors of the cluster phase itself.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// kubeadm is not installed.
    #[error(
        "kubeadm is not installed on this node; run `hpk8s bootstrap` (phase prepare installs it) before phase cluster"
    )]
    KubeadmMissing,
    /// `kubeadm init` stopped half-way earlier.
    #[error(
        "this node holds a half-initialised control plane ({present} present, {missing} missing); start over with `{reset}`",
        present = .present.join(", "),
        missing = .missing.join(", "),
        reset = kubeadm::RESET_COMMAND
    )]
    PartialControlPlane {
        /// Control-plane files present.
        present: Vec<&'static str>,
        /// Control-plane files missing.
        missing: Vec<&'static str>,
    },
    /// The node already belongs to a cluster in another role.
    #[error(
        "this node is a {role:?} in the inventory but kubeadm already set it up as a {found} ({evidence} exists); if the role changed on purpose, run `{reset}`",
        reset = kubeadm::RESET_COMMAND
    )]
    RoleConflict {
        /// Role in the inventory.
        role: Role,
        /// What kubeadm set up.
        found: &'static str,
        /// The file proving it.
        evidence: &'static str,
    },
    /// `kubeadm init` failed.
    #[error(
        "`kubeadm init` failed: {stderr}; fix the cause, then run `{reset}` if it left files behind",
        reset = kubeadm::RESET_COMMAND
    )]
    InitFailed {
        /// The last lines kubeadm printed on stderr.
        stderr: String,
    },
    /// `kubeadm join` failed.
    #[error("`kubeadm join` to {endpoint} failed: {stderr}")]
    JoinFailed {
        /// The API endpoint of the ticket.
        endpoint: String,
        /// The last lines kubeadm printed on stderr.
        stderr: String,
    },
    /// The API server's CA is not the one the join ticket pins.
    #[error(
        "refusing to join {endpoint}: its cluster CA does not match the join ticket's CA pin ({location}); the ticket is stale or the endpoint is not this cluster's API server. Re-run `hpk8s bootstrap` on the controller to publish a fresh ticket"
    )]
    CaPinMismatch {
        /// The API endpoint of the ticket.
        endpoint: String,
        /// Where the ticket came from.
        location: String,
    },
    /// The ticket is for a different cluster.
    #[error(
        "the join ticket at {location} is for cluster `{found}`, but this node belongs to `{expected}`; check rendezvous.secret_name / rendezvous.directory"
    )]
    OtherCluster {
        /// Where the ticket came from.
        location: String,
        /// The ticket's cluster id.
        found: String,
        /// This node's cluster id.
        expected: String,
    },
    /// The worker's Kubernetes is newer than the control plane's, or too old.
    #[error(
        "this node's kubeadm {node} cannot join a control plane running Kubernetes {control_plane} (a node may be up to 3 minor versions older, never newer); set kubernetes.version to match the controller"
    )]
    VersionSkew {
        /// This node's kubeadm.
        node: String,
        /// The ticket's Kubernetes version.
        control_plane: String,
    },
    /// A controller command ran before the cluster was formed here.
    #[error(
        "this node has no formed control plane ({manifest} or {admin} missing); run `hpk8s bootstrap` on the controller first",
        manifest = kubeadm::APISERVER_MANIFEST,
        admin = kubeadm::ADMIN_CONF
    )]
    NotFormed,
    /// The rendezvous is needed but none was given (programming error in a
    /// caller; the binary always builds one for a real run).
    #[error("phase cluster needs the join-ticket rendezvous; only a dry run can do without")]
    NoRendezvous,
}

classify!(ClusterError {
    KubeadmMissing {} => Precondition "kubeadm_missing";
    PartialControlPlane { .. } => Refused "partial_control_plane";
    RoleConflict { .. } => Refused "role_conflict";
    InitFailed { .. } => Host "kubeadm_init_failed";
    JoinFailed { .. } => Host "kubeadm_join_failed";
    CaPinMismatch { .. } => Verification "ticket_ca_pin_mismatch";
    OtherCluster { .. } => Input "ticket_other_cluster";
    VersionSkew { .. } => Config "control_plane_version_skew";
    NotFormed {} => Precondition "control_plane_not_formed";
    NoRendezvous {} => Internal "rendezvous_missing_bug";
});
