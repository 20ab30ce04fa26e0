//! Building Kubernetes clients from the credentials kubeadm leaves on a
//! node, with time-outs, so that an API server that accepts connections
//! and never answers cannot hang hpk8s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::kube::Client;
use ::kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::class::classify;
use crate::host::Host;

pub use crate::cluster::kubeadm::{ADMIN_CONF, KUBELET_CONF};

/// Longest time to set up a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time one request (not a watch) may take, retries included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig cannot be read or used.
    #[error("cannot use the kubeconfig {path}: {message}")]
    Kubeconfig {
        /// Host path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

classify!(ClientError {
    Kubeconfig { .. } => Precondition "kubeconfig_unusable";
});

/// Which credential a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The controller's cluster-admin kubeconfig ([`ADMIN_CONF`]).
    Admin,
    /// The node's kubelet kubeconfig ([`KUBELET_CONF`]): NodeRestriction
    /// lets it report on its own Node only.
    Node,
}

impl Credential {
    /// The kubeconfig's host path.
    pub fn path(self) -> &'static str {
        match self {
            Credential::Admin => ADMIN_CONF,
            Credential::Node => KUBELET_CONF,
        }
    }
}

/// A client with `credential`, read from under `host`'s root.
pub async fn client(host: &Host, credential: Credential) -> Result<Client, ClientError> {
    from_kubeconfig(&host.path(credential.path()), Path::new(credential.path())).await
}

/// A client from the kubeconfig at `path` (`shown` in messages), with
/// hpk8s's connect time-out. kube's own retries of 429/503/504 stay on:
/// callers that must see those answers (evictions) build their own.
pub async fn from_kubeconfig(path: &Path, shown: &Path) -> Result<Client, ClientError> {
    let bad = |message: String| ClientError::Kubeconfig {
        path: shown.to_path_buf(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let mut config =
        ::kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// Runs one API call with [`CALL_DEADLINE`]; `None` when it ran out (the
/// caller names the endpoint in its error).
pub async fn within_deadline<T>(call: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(CALL_DEADLINE, call).await.ok()
}
