//! Node identity: who am I, what is my cluster, what role do I play.
//!
//! The topology comes from one source (HyperPod's `resource_config.json`, a
//! static node list in the config, or a single-node local default); facts
//! about this instance can be enriched from EC2 IMDSv2, which is contacted
//! only when the machine identifies itself as EC2 or an endpoint is
//! configured. The node's own address is found by matching the host's
//! interface addresses against the inventory, never by NIC name.

use std::net::IpAddr;

use serde::Serialize;

use crate::config::Config;
use crate::host::Host;

/// Errors resolving the node identity. Each names the file and field.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No usable address on any interface.
    #[error("cannot list this host's network addresses: {0}")]
    Interfaces(#[source] std::io::Error),
    /// The host has no usable address at all.
    #[error("this host has no non-loopback address; set node.address in the config")]
    NoAddress,
}

impl IdentityError {
    /// Process exit code for this error (see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            IdentityError::Interfaces(_) => 20,
            IdentityError::NoAddress => 21,
        }
    }
}

/// The part a node plays in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs the control plane (`kubeadm init`).
    Controller,
    /// Joins and runs workloads.
    Worker,
    /// A login node: joins as a worker only when configured to.
    Login,
}

/// Where the topology came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologySource {
    /// SageMaker HyperPod's `resource_config.json`.
    Hyperpod,
    /// `[[identity.nodes]]` in the config.
    Static,
    /// A single-node cluster made of this machine (developer machines).
    Local,
}

/// The cluster this node belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterIdentity {
    /// Human name.
    pub name: String,
    /// Cluster id (last element of the HyperPod ARN), if any.
    pub id: Option<String>,
    /// Full ARN, if any.
    pub arn: Option<String>,
    /// AWS partition (`aws`, `aws-cn`, `aws-us-gov`).
    pub partition: Option<String>,
    /// AWS region.
    pub region: Option<String>,
    /// AWS account id.
    pub account: Option<String>,
}

/// Spot or on-demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// A spot instance (may be interrupted with 2 minutes' notice).
    Spot,
    /// An on-demand (or reserved) instance.
    OnDemand,
}

/// One instance group of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    /// Group name.
    pub name: String,
    /// Role of its nodes.
    pub role: Role,
    /// Instance type without `ml.`.
    pub instance_type: Option<String>,
    /// Number of instances listed.
    pub count: u32,
}

/// Everything the agent knows about this node and its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeIdentity {
    /// Where the topology came from.
    pub source: TopologySource,
    /// The cluster.
    pub cluster: ClusterIdentity,
    /// Kubernetes node name.
    pub node_name: String,
    /// This node's address on the cluster network.
    pub address: IpAddr,
    /// Role.
    pub role: Role,
    /// Whether this node joins the cluster (login nodes only when configured).
    pub joins: bool,
    /// Instance group name.
    pub group: String,
    /// EC2 instance id, if known.
    pub instance_id: Option<String>,
    /// Instance type without the `ml.` prefix, if known.
    pub instance_type: Option<String>,
    /// AWS region, if known.
    pub region: Option<String>,
    /// Availability zone, if known.
    pub availability_zone: Option<String>,
    /// Spot or on-demand, if known.
    pub lifecycle: Option<Lifecycle>,
    /// Number of nodes expected to join the cluster (all groups).
    pub expected_nodes: u32,
    /// The cluster's instance groups.
    pub groups: Vec<GroupSummary>,
}

/// Resolves this node's identity from the configured sources.
pub async fn resolve(host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
    local(host, config)
}

/// The documented fallback for a machine with no HyperPod file and no static
/// topology: a single-node cluster whose only node (this one) is the controller.
fn local(host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
    let address = match config.node.address {
        Some(a) => a,
        None => {
            let addrs = host
                .interface_addresses()
                .map_err(IdentityError::Interfaces)?;
            *addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .ok_or(IdentityError::NoAddress)?
        }
    };
    let node_name = config.node.name.clone().unwrap_or_else(|| host.hostname());
    let name = config
        .identity
        .cluster_name
        .clone()
        .unwrap_or_else(|| "local".into());
    Ok(NodeIdentity {
        source: TopologySource::Local,
        cluster: ClusterIdentity {
            name,
            id: None,
            arn: None,
            partition: None,
            region: None,
            account: None,
        },
        node_name,
        address,
        role: Role::Controller,
        joins: true,
        group: "local".into(),
        instance_id: None,
        instance_type: None,
        region: None,
        availability_zone: None,
        lifecycle: None,
        expected_nodes: 1,
        groups: vec![GroupSummary {
            name: "local".into(),
            role: Role::Controller,
            instance_type: None,
            count: 1,
        }],
    })
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
    s
}
