//! The library's error type. Every variant renders as one line that names
//! the file, field, command or endpoint involved, and maps to a distinct
//! process exit code (the table is `docs/exit-codes.md`).

use crate::cluster::kubeadm_config::ClusterConfigError;
use crate::cluster::nodes::NodesError;
use crate::cluster::rendezvous::RendezvousError;
use crate::cluster::token_rotation::TokenError;
use crate::config::ConfigError;
use crate::host::{CommandError, FsError};
use crate::identity::IdentityError;
use crate::plan::ApplyError;
use crate::prepare;
use crate::state::StateError;

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
    Networking(#[from] prepare::networking::Error),
    /// Planning step `instance-store`.
    #[error("instance-store: {0}")]
    InstanceStore(#[from] prepare::instance_store::Error),
    /// Planning step `containerd`.
    #[error("containerd: {0}")]
    Containerd(#[from] prepare::containerd::Error),
    /// Planning step `packages`.
    #[error("packages: {0}")]
    Packages(#[from] prepare::packages::Error),
    /// The cluster's configuration (pod network, bootstrap token, kubeadm
    /// config), refused before anything changes.
    #[error(transparent)]
    ClusterConfig(#[from] ClusterConfigError),
    /// Publishing or waiting for the join ticket.
    #[error(transparent)]
    Rendezvous(#[from] RendezvousError),
    /// The AWS SDK configuration.
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsSetupError),
    /// Applying the cluster addons.
    #[error("addons: {0}")]
    Addons(#[from] crate::cluster::addons::Error),
    /// Forming or joining the cluster.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::phase::ClusterError),
    /// The cluster CA certificate.
    #[error(transparent)]
    CaPin(#[from] crate::cluster::ca_pin::CaPinError),
    /// Waiting for the cluster's nodes, or labelling them.
    #[error(transparent)]
    Nodes(#[from] NodesError),
    /// Rotating the bootstrap token.
    #[error(transparent)]
    Token(#[from] TokenError),
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

/// `Result` with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Process exit code: 10–19 config, 20–39 identity, 40–49 host, 50–54
    /// networking, 55–64 instance store, 65–74 containerd, 75–84 packages,
    /// 85–89 state, 90–99 applying changes, 100–119 cluster configuration
    /// (without 101, Rust's panic code), 120–139 join-ticket rendezvous,
    /// 140–159 cluster addons, 160–169 CA pin, 170–179 nodes, 180–189
    /// bootstrap tokens, 190–200 the cluster phase.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(e) => e.exit_code(),
            Error::Identity(e) => e.exit_code(),
            Error::State(e) => e.exit_code(),
            Error::Fs(_) => 40,
            Error::Command(_) => 42,
            Error::Networking(e) => e.exit_code(),
            Error::InstanceStore(e) => e.exit_code(),
            Error::Containerd(e) => e.exit_code(),
            Error::Packages(e) => e.exit_code(),
            Error::ClusterConfig(e) => e.exit_code(),
            Error::Rendezvous(e) => e.exit_code(),
            Error::Addons(e) => e.exit_code(),
            Error::Cluster(e) => e.exit_code(),
            Error::Aws(_) => 129,
            Error::CaPin(e) => e.exit_code(),
            Error::Nodes(e) => e.exit_code(),
            Error::Token(e) => e.exit_code(),
            Error::Apply { source, .. } => match source {
                ApplyError::Fs(_) => 90,
                ApplyError::Command(_) => 91,
                ApplyError::Sysctl { .. } => 92,
                ApplyError::Download { .. } => 93,
                ApplyError::ChecksumMismatch { .. } => 94,
                ApplyError::Timeout { .. } => 95,
            },
        }
    }
}
