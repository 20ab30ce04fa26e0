//! A stand-in for `kubeadm` (the binary `kubeadm` of this crate, never
//! shipped): `init`, `join`, `token`, `reset` and `version` against the
//! [`TestApiServer`], with the real tool's config documents, preflight
//! refusals, bootstrap-token Secrets, `cluster-info` JWS discovery and
//! CA-pin check, and its error wording. It writes what kubeadm writes under
//! a node root (`/` inside an nspawn node, a temp dir in tests).
//!
//! It finds the API server through a JSON [`StandInConfig`] named by env
//! [`ENV_VAR`], written by [`TestApiServer::kubeadm_env`]. Node and admin
//! credentials are client certificates it signs with the test CA's key, as
//! a real control plane's `/etc/kubernetes/pki/ca.key` would.
//!
//! Simplified on purpose: every request goes to the server's URL from the
//! JSON whatever `apiServerEndpoint` says (the address is still recorded);
//! the kubelet's TLS bootstrap is a certificate signed directly (no CSR
//! object); static pods are written but nothing runs them; Ready comes
//! after `node_ready_delay_ms` from a detached helper process.

pub mod api;
pub mod commands;
pub mod config;
pub mod jws;
pub mod pki;
pub mod runner;
pub mod tokens;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::kube_api::TestApiServer;

/// Env naming the stand-in's JSON file.
pub const ENV_VAR: &str = "HPK8S_FAKE_KUBEADM";
/// The version `kubeadm version -o short` reports unless configured.
pub const DEFAULT_VERSION: &str = "1.34.1";

/// What the stand-in needs to reach the test API server (the JSON file).
#[derive(Clone, Serialize, Deserialize)]
pub struct StandInConfig {
    /// `https://127.0.0.1:<port>`.
    pub api_url: String,
    /// The cluster CA certificate (PEM).
    pub ca_cert_pem: String,
    /// The cluster CA key (PEM), for signing admin and node credentials.
    pub ca_key_pem: String,
    /// The node's root directory (`/` inside an nspawn node).
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The Kubernetes version reported and checked against config versions.
    #[serde(default = "default_version")]
    pub version: String,
    /// How long after `init`/`join` the node turns Ready (0: at once).
    #[serde(default)]
    pub node_ready_delay_ms: u64,
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}

fn default_version() -> String {
    DEFAULT_VERSION.to_string()
}

// Hand-written so the CA key never reaches a log or a panic message.
impl std::fmt::Debug for StandInConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandInConfig")
            .field("api_url", &self.api_url)
            .field("ca_key_pem", &"<redacted>")
            .field("root", &self.root)
            .field("version", &self.version)
            .field("node_ready_delay_ms", &self.node_ready_delay_ms)
            .finish_non_exhaustive()
    }
}

impl StandInConfig {
    /// Reads the file named by [`ENV_VAR`].
    pub fn from_env() -> anyhow::Result<Self> {
        let path = std::env::var_os(ENV_VAR).with_context(|| {
            format!("{ENV_VAR} is not set: this kubeadm is a test stand-in and needs the JSON file written by TestApiServer::kubeadm_env")
        })?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", Path::new(&path).display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", Path::new(&path).display()))
    }

    /// Writes the JSON file (0600: it holds the CA key).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_private(path, &serde_json::to_vec_pretty(self)?)
    }

    /// `root` joined with an absolute node path.
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }
}

impl TestApiServer {
    /// The stand-in's configuration for a node rooted at `node_root`.
    pub fn kubeadm_stand_in(&self, node_root: &Path) -> StandInConfig {
        StandInConfig {
            api_url: self.url().to_string(),
            ca_cert_pem: self.ca_pem().to_string(),
            ca_key_pem: self.ca_key_pem().to_string(),
            root: node_root.to_path_buf(),
            version: DEFAULT_VERSION.to_string(),
            node_ready_delay_ms: 0,
        }
    }

    /// Writes the stand-in's JSON for `node_root` beside the server's
    /// kubeconfigs and returns the environment to run `kubeadm` with.
    pub fn kubeadm_env(&self, node_root: &Path) -> anyhow::Result<Vec<(String, String)>> {
        self.kubeadm_env_with(&self.kubeadm_stand_in(node_root))
    }

    /// As [`Self::kubeadm_env`] with an adjusted configuration (version,
    /// readiness delay).
    pub fn kubeadm_env_with(
        &self,
        config: &StandInConfig,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let dir = self
            .admin_kubeconfig_path()
            .parent()
            .context("the admin kubeconfig has no directory")?;
        let id = hex::encode(&sha2_digest(config.root.as_os_str().as_encoded_bytes())[..8]);
        let path = dir.join(format!("kubeadm-stand-in-{id}.json"));
        config.write(&path)?;
        Ok(vec![(ENV_VAR.to_string(), path.display().to_string())])
    }
}

fn sha2_digest(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

/// Writes a file readable by its owner only, creating parent directories.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_mode(path, contents, 0o600)
}

/// Writes a file with `mode`, creating parent directories; an existing
/// file gets the mode too.
pub fn write_mode(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}
