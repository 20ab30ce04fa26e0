//! Node identity: who am I, what is my cluster, what role do I play.
//!
//! The topology comes from one source (HyperPod's `resource_config.json`, a
//! static node list in the config, or a single-node local default); facts
//! about this instance can be enriched from EC2 IMDSv2, which is contacted
//! only when the machine identifies itself as EC2 or an endpoint is
//! configured. The node's own address is found by matching the host's
//! interface addresses against the inventory, never by NIC name.

pub mod address;
pub mod arn;
pub mod ec2;
pub mod elastic;
mod error;
pub mod hyperpod;
pub mod imds;
pub mod local;
pub mod node;
pub mod roles;
pub mod static_topology;
pub mod topology;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::IdentityError;
pub use imds::{ImdsClient, InstanceFacts, RetryPolicy};
pub use node::{
    ClusterIdentity, ElasticGroup, GroupSummary, Lifecycle, NodeIdentity, Peer, Role,
    TopologySource, strip_ml,
};

use crate::config::{Config, IdentitySource};
use crate::host::{FsError, Host};

/// What the process environment (or a test) overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `SAGEMAKER_RESOURCE_CONFIG_PATH`: wins over `identity.resource_config`.
    pub resource_config: Option<PathBuf>,
    /// The IMDS contacted when the machine identifies itself as EC2 and no
    /// `identity.imds_endpoint` is set. [`imds::DEFAULT_ENDPOINT`] except in
    /// tests, which prove that detection gates the traffic.
    pub ec2_imds_endpoint: String,
    /// How IMDS requests are retried.
    pub imds_retry: RetryPolicy,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            resource_config: None,
            ec2_imds_endpoint: imds::DEFAULT_ENDPOINT.to_string(),
            imds_retry: RetryPolicy::default(),
        }
    }
}

impl Overrides {
    /// Overrides from the process environment.
    pub fn from_env() -> Self {
        Self {
            resource_config: std::env::var_os(hyperpod::RESOURCE_CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ..Self::default()
        }
    }
}

/// Resolves this node's identity from the configured sources, with
/// overrides from the process environment.
pub async fn resolve(host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
    resolve_with(host, config, &Overrides::from_env()).await
}

/// Resolves this node's identity: the topology first (so that bad input
/// fails before any network traffic), then facts from IMDS when this is EC2
/// or an endpoint is configured.
pub async fn resolve_with(
    host: &Host,
    config: &Config,
    overrides: &Overrides,
) -> Result<NodeIdentity, IdentityError> {
    if config.identity.source == IdentitySource::Ec2 {
        let imds = imds_endpoint(host, config, &overrides.ec2_imds_endpoint);
        return elastic::identity(host, config, imds, overrides.imds_retry).await;
    }
    let mut id = topology_identity(host, config, overrides)?;
    if let Some(endpoint) = imds_endpoint(host, config, &overrides.ec2_imds_endpoint) {
        let timeout = Duration::from_millis(config.identity.imds_timeout_ms.max(1));
        let client = ImdsClient::new(endpoint, timeout)?.with_retry(overrides.imds_retry);
        match client.instance_facts().await {
            Ok(facts) => id.apply_instance_facts(facts),
            // The inventory already says who this node is; IMDS only adds
            // instance facts (type, zone, spot), which are left unknown.
            Err(e @ IdentityError::ImdsUnreachable { .. }) => tracing::warn!(
                error = %e,
                "continuing without this instance's facts from IMDS (the inventory names the node)"
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(id)
}

/// The IMDS base URL to use, if any: `identity.imds_endpoint` when set, else
/// `ec2_endpoint` only when the machine identifies itself as EC2.
pub fn imds_endpoint(host: &Host, config: &Config, ec2_endpoint: &str) -> Option<String> {
    if let Some(e) = &config.identity.imds_endpoint {
        return Some(e.clone());
    }
    ec2::is_ec2(host).then(|| ec2_endpoint.to_string())
}

fn unreadable(e: FsError) -> IdentityError {
    match e {
        FsError::Read { path, source } | FsError::Write { path, source } => {
            IdentityError::Unreadable { path, source }
        }
        FsError::TooLarge { path, limit } => IdentityError::TooLarge { path, limit },
    }
}

/// The most read from `resource_config.json` (thousands of instances are a
/// few MiB).
pub const RESOURCE_CONFIG_LIMIT: u64 = 64 * 1024 * 1024;
/// The most read from `provisioning_parameters.json`.
pub const PROVISIONING_LIMIT: u64 = 1024 * 1024;

fn topology_identity(
    host: &Host,
    config: &Config,
    overrides: &Overrides,
) -> Result<NodeIdentity, IdentityError> {
    let rc_path = overrides
        .resource_config
        .clone()
        .unwrap_or_else(|| config.identity.resource_config.clone());
    let hyperpod_file = || {
        host.read_opt_limited(&rc_path, RESOURCE_CONFIG_LIMIT)
            .map_err(unreadable)
    };
    let static_identity = || static_topology::topology(&config.identity)?.identify(host, config);
    match config.identity.source {
        IdentitySource::Static => static_identity(),
        // Resolved before the topology (it needs IMDS first).
        IdentitySource::Ec2 => Err(IdentityError::ElasticConfig {
            key: "identity.source",
            message: "`ec2` is resolved with IMDS (a bug in hpk8s if seen)".into(),
        }),
        IdentitySource::Local => local::identity(host, config),
        IdentitySource::Hyperpod => match hyperpod_file()? {
            Some(bytes) => hyperpod_identity(host, config, &bytes, &rc_path),
            None => Err(IdentityError::ResourceConfigMissing { path: rc_path }),
        },
        IdentitySource::Auto if !config.identity.nodes.is_empty() => static_identity(),
        IdentitySource::Auto => match hyperpod_file()? {
            Some(bytes) => hyperpod_identity(host, config, &bytes, &rc_path),
            None => local::identity(host, config),
        },
    }
}

fn hyperpod_identity(
    host: &Host,
    config: &Config,
    bytes: &[u8],
    rc_path: &Path,
) -> Result<NodeIdentity, IdentityError> {
    let mut topology = hyperpod::parse_resource_config(bytes, rc_path)?.topology(rc_path)?;
    let (pp_path, pp) = provisioning_parameters(host, &config.identity.provisioning_parameters)?;
    let rules = roles::decide(
        &config.identity,
        pp.as_ref(),
        &pp_path,
        &topology.group_names(),
        rc_path,
    )?;
    topology.assign_roles(&rules);
    topology.identify(host, config)
}

/// Reads `provisioning_parameters.json` when present: absolute paths under
/// the host root, relative ones from the current directory (HyperPod runs
/// lifecycle scripts from their own folder, next to the file). A file in
/// the current directory decides which group runs the control plane, so it
/// is used only when root owns it and nobody else may write it.
fn provisioning_parameters(
    host: &Host,
    path: &Path,
) -> Result<(PathBuf, Option<roles::ProvisioningParameters>), IdentityError> {
    let (shown, bytes) = if path.is_absolute() {
        (
            path.to_path_buf(),
            host.read_opt_limited(path, PROVISIONING_LIMIT)
                .map_err(unreadable)?,
        )
    } else {
        let full = std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf());
        let bytes = if trusted_local_file(&full) {
            crate::host::fs::read_limited(&full, &full, PROVISIONING_LIMIT).map_err(unreadable)?
        } else {
            None
        };
        (full, bytes)
    };
    let parsed = bytes
        .map(|b| hyperpod::parse_provisioning(&b, &shown))
        .transpose()?;
    Ok((shown, parsed))
}

/// Whether a file in the current directory may be believed: a regular
/// file (not a symlink) owned by root and not writable by group or others.
/// Absent is not trusted (there is nothing to read); anything else is
/// warned about and ignored.
fn trusted_local_file(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return false,
    };
    let why = if !meta.file_type().is_file() {
        Some("it is not a regular file (a symlink?)".to_string())
    } else if meta.uid() != 0 {
        Some(format!("it is owned by uid {}, not root", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "group or others may write it (mode {:04o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            tracing::warn!(path = %path.display(), "ignoring {}: {why}", path.display());
            false
        }
    }
}

impl NodeIdentity {
    /// Fills what IMDS knows about this instance; the inventory stays the
    /// topology, so only instance facts change.
    pub fn apply_instance_facts(&mut self, facts: InstanceFacts) {
        if let (Some(listed), Some(actual)) = (&self.instance_id, &facts.instance_id)
            && listed != actual
        {
            tracing::warn!(
                listed,
                actual,
                "the inventory lists another instance id for this address; it may be stale"
            );
        }
        if facts.instance_id.is_some() {
            self.instance_id = facts.instance_id;
        }
        if let Some(t) = facts.instance_type {
            self.instance_type = Some(strip_ml(&t));
        }
        if facts.region.is_some() {
            self.region = facts.region;
        }
        if facts.availability_zone.is_some() {
            self.availability_zone = facts.availability_zone;
        }
        if facts.lifecycle.is_some() {
            self.lifecycle = facts.lifecycle;
        }
    }
}

/// The identity as a few lines of text for `hpk8s identity`.
pub fn render_text(id: &NodeIdentity) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "node:          {} ({:?}, group {})",
        id.node_name, id.role, id.group
    );
    let _ = writeln!(s, "address:       {}", id.address);
    let _ = writeln!(s, "joins cluster: {}", if id.joins { "yes" } else { "no" });
    let _ = writeln!(
        s,
        "instance:      {} {}",
        opt(&id.instance_id),
        opt(&id.instance_type)
    );
    let _ = writeln!(
        s,
        "placement:     {} {}",
        opt(&id.region),
        opt(&id.availability_zone)
    );
    let lifecycle = match id.lifecycle {
        Some(Lifecycle::Spot) => "spot",
        Some(Lifecycle::OnDemand) => "on-demand",
        None => "-",
    };
    let _ = writeln!(s, "lifecycle:     {lifecycle}");
    let _ = writeln!(
        s,
        "cluster:       {} (id {}, source {:?})",
        id.cluster.name,
        opt(&id.cluster.id),
        id.source
    );
    let _ = writeln!(
        s,
        "expected:      {} node(s) in {} group(s)",
        id.expected_nodes,
        id.groups.len()
    );
    for g in &id.groups {
        let _ = writeln!(
            s,
            "  group {}: {:?}, {} x {}",
            g.name,
            g.role,
            g.count,
            opt(&g.instance_type)
        );
    }
    s
}
