//! The library's error type, and what every error tells a caller.
//!
//! Every error renders as one line that names the file, field, command or
//! endpoint involved and what to do. Each belongs to an exit class (the
//! process exit code a script branches on) and names a stable kind (for
//! `--output json` and the journal); see [`class`] and
//! `docs/exit-codes.md`.

pub mod class;

use crate::aws::AwsSetupError;
use crate::aws::sagemaker::SageMakerError;
use crate::cluster::addons::Error as AddonsError;
use crate::cluster::ca_pin::CaPinError;
use crate::cluster::error::ClusterError;
use crate::cluster::kubeadm_config::ClusterConfigError;
use crate::cluster::nodes::NodesError;
use crate::cluster::rendezvous::error::RendezvousError;
use crate::cluster::token_rotation::TokenError;
use crate::config::ConfigError;
use crate::drain::DrainError;
use crate::gpu::check::Verdict as GpuVerdict;
use crate::host::command::CommandError;
use crate::host::fs::FsError;
use crate::identity::IdentityError;
use crate::kube::client::ClientError;
use crate::ops::OpsError;
use crate::plan::ApplyError;
use crate::prepare::containerd::Error as ContainerdError;
use crate::prepare::containerd::config_file::EditError;
use crate::prepare::containerd::imports::ImportError;
use crate::prepare::containerd::nvidia_toolkit::ToolkitError;
use crate::prepare::instance_store::Error as InstanceStoreError;
use crate::prepare::networking::Error as NetworkingError;
use crate::prepare::packages::Error as PackagesError;
use crate::remediation::RemediationError;
use crate::state::StateError;
use class::{Classify, ExitClass, KindRow, classify};

/// Everything that can go wrong in hpk8s's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading or validating the configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Resolving the node identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A file operation outside a step.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A command outside a step.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Planning step `networking`.
    #[error("networking: {0}")]
    Networking(#[from] NetworkingError),
    /// Planning step `instance-store`.
    #[error("instance-store: {0}")]
    InstanceStore(#[from] InstanceStoreError),
    /// Planning step `containerd`.
    #[error("containerd: {0}")]
    Containerd(#[from] ContainerdError),
    /// Planning step `packages`.
    #[error("packages: {0}")]
    Packages(#[from] PackagesError),
    /// The cluster's configuration (pod network, bootstrap token, kubeadm
    /// config), refused before anything changes.
    #[error(transparent)]
    ClusterConfig(#[from] ClusterConfigError),
    /// Publishing or waiting for the join ticket.
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    /// The AWS SDK configuration.
    #[error(transparent)]
    Aws(#[from] AwsSetupError),
    /// Applying the cluster addons.
    #[error("addons: {0}")]
    Addons(#[from] AddonsError),
    /// Forming or joining the cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster CA certificate.
    #[error(transparent)]
    CaPin(#[from] CaPinError),
    /// Waiting for the cluster's nodes, or labelling them.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// Rotating the bootstrap token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Building a Kubernetes client.
    #[error(transparent)]
    Kube(#[from] ClientError),
    /// A GPU check's verdict (the report was printed).
    #[error(transparent)]
    GpuCheck(#[from] GpuVerdict),
    /// Draining a node.
    #[error(transparent)]
    Drain(#[from] DrainError),
    /// A SageMaker HyperPod call.
    #[error(transparent)]
    SageMaker(#[from] SageMakerError),
    /// Remediation's own state.
    #[error(transparent)]
    Remediation(#[from] RemediationError),
    /// An operator command.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// Applying a planned change.
    #[error("{step}: {source}")]
    Apply {
        /// The step whose change failed.
        step: String,
        /// What failed.
        #[source]
        source: ApplyError,
    },
}

classify!(Error {
    Config { 0: e } => via e;
    Identity { 0: e } => via e;
    State { 0: e } => via e;
    Fs { 0: e } => via e;
    Command { 0: e } => via e;
    Networking { 0: e } => via e;
    InstanceStore { 0: e } => via e;
    Containerd { 0: e } => via e;
    Packages { 0: e } => via e;
    ClusterConfig { 0: e } => via e;
    Rendezvous { 0: e } => via e;
    Aws { 0: e } => via e;
    Addons { 0: e } => via e;
    Cluster { 0: e } => via e;
    CaPin { 0: e } => via e;
    Nodes { 0: e } => via e;
    Token { 0: e } => via e;
    Kube { 0: e } => via e;
    GpuCheck { 0: e } => via e;
    Drain { 0: e } => via e;
    SageMaker { 0: e } => via e;
    Remediation { 0: e } => via e;
    Ops { 0: e } => via e;
    Apply { source, .. } => via source;
});

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every kind the library's errors can name, with its error type and
/// class: what `docs/exit-codes.md` must list.
pub fn all_kinds() -> Vec<KindRow> {
    [
        ConfigError::KINDS,
        IdentityError::KINDS,
        StateError::KINDS,
        FsError::KINDS,
        CommandError::KINDS,
        NetworkingError::KINDS,
        InstanceStoreError::KINDS,
        ContainerdError::KINDS,
        EditError::KINDS,
        ImportError::KINDS,
        GpuVerdict::KINDS,
        ToolkitError::KINDS,
        PackagesError::KINDS,
        ClusterConfigError::KINDS,
        crate::cluster::pod_network::Error::KINDS,
        crate::cluster::bootstrap_token::Error::KINDS,
        RendezvousError::KINDS,
        AwsSetupError::KINDS,
        AddonsError::KINDS,
        ClusterError::KINDS,
        CaPinError::KINDS,
        NodesError::KINDS,
        TokenError::KINDS,
        ClientError::KINDS,
        ApplyError::KINDS,
        DrainError::KINDS,
        SageMakerError::KINDS,
        RemediationError::KINDS,
        OpsError::KINDS,
    ]
    .concat()
}

/// The class and kind of any error the binary may end with: the library's
/// own, else [`ExitClass::Internal`] with kind `internal`.
pub fn classify_any(e: &(dyn std::error::Error + 'static)) -> (ExitClass, &'static str) {
    match e.downcast_ref::<Error>() {
        Some(le) => (le.class(), Classify::kind(le)),
        None => (ExitClass::Internal, "internal"),
    }
}
