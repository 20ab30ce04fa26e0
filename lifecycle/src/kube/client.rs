//! Building Kubernetes clients from the credentials kubeadm leaves on a
//! node, with time-outs, so that an API server that accepts connections
//! and never answers cannot hang hpk8s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ::kube::Client;
use ::kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::class::classify;
use crate::host::Host;

/// The cluster-admin kubeconfig `kubeadm init` writes (mode 0600).
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The kubelet's kubeconfig (`system:node:<name>`), written by both
/// `kubeadm init` and `kubeadm join`.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";

/// Longest time to set up a connection to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time one request (not a watch) may take, retries included,
/// unless `cluster.api_timeout_secs` says otherwise ([`set_call_deadline`]).
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// The deadline in force, in milliseconds (one per process: an hpk8s
/// process talks to one cluster).
static CALL_DEADLINE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(30_000);
/// The API server the last client was built for, for messages.
static ENDPOINT: std::sync::RwLock<String> = std::sync::RwLock::new(String::new());

/// Sets the per-request deadline (`cluster.api_timeout_secs`).
pub fn set_call_deadline(deadline: Duration) {
    let ms = u64::try_from(deadline.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    CALL_DEADLINE_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// The per-request deadline in force.
pub fn call_deadline() -> Duration {
    Duration::from_millis(CALL_DEADLINE_MS.load(std::sync::atomic::Ordering::Relaxed))
}

fn endpoint() -> String {
    ENDPOINT
        .read()
        .map(|e| e.clone())
        .unwrap_or_else(|e| e.into_inner().clone())
}

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

/// Whether kube's own retries of 429/503/504 (up to 15, with backoff) are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// kube retries: one-shot callers that want an answer.
    Kube,
    /// Every answer reaches the caller at once: loops that retry on their
    /// own schedule (a status publisher must not sit in kube's backoff
    /// while its watchdog waits) and evictions, whose 429 names a budget.
    Caller,
}

/// [`client`] with kube's retries chosen.
pub async fn client_with(
    host: &Host,
    credential: Credential,
    retries: Retries,
) -> Result<Client, ClientError> {
    build(
        &host.path(credential.path()),
        Path::new(credential.path()),
        retries,
    )
    .await
}

/// A client from the kubeconfig at `path` (`shown` in messages), with
/// hpk8s's connect time-out. kube's own retries of 429/503/504 stay on:
/// callers that must see those answers use [`client_with`].
pub async fn from_kubeconfig(path: &Path, shown: &Path) -> Result<Client, ClientError> {
    build(path, shown, Retries::Kube).await
}

/// [`from_kubeconfig`] with kube's retries chosen.
pub async fn from_kubeconfig_with(
    path: &Path,
    shown: &Path,
    retries: Retries,
) -> Result<Client, ClientError> {
    build(path, shown, retries).await
}

async fn build(path: &Path, shown: &Path, retries: Retries) -> Result<Client, ClientError> {
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
    config.default_retry = retries == Retries::Kube;
    let url = crate::values::url::redact_url(&config.cluster_url.to_string());
    match ENDPOINT.write() {
        Ok(mut e) => *e = url,
        Err(e) => *e.into_inner() = url,
    }
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// Runs one API request (not a watch) with [`call_deadline`]: an API
/// server that accepts the connection and never answers becomes an error
/// the caller retries or reports (a transient one: see
/// [`super::errors::is_transient`]), never a hang.
pub async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, ::kube::Error> {
    let deadline = call_deadline();
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_) => Err(::kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the API server {} did not answer within {} (cluster.api_timeout_secs)",
                endpoint(),
                crate::values::time::human(deadline)
            ),
        )))),
    }
}
