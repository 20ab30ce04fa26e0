//! What identity resolution produces: this node, its cluster and the
//! inventory's other nodes, whatever the topology source.

use std::net::IpAddr;

use serde::Serialize;

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
    /// Self-managed EC2 groups: this node from IMDS and `[node]`, no list.
    Ec2,
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
    /// Addresses of every node in the inventory (for the pod network's
    /// overlap checks); left out of `hpk8s identity` output.
    #[serde(skip)]
    pub node_addresses: Vec<IpAddr>,
    /// Every node of the inventory that joins the cluster (the same rule as
    /// `expected_nodes`), this one included: what the controller waits for
    /// and labels. Left out of `hpk8s identity` output.
    #[serde(skip)]
    pub peers: Vec<Peer>,
    /// Elastic groups (EC2 autoscaling, spot) with the Ready nodes the
    /// controller's bootstrap waits for; their members are not listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elastic_groups: Vec<ElasticGroup>,
}

/// A group whose members come and go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ElasticGroup {
    /// Group name.
    pub name: String,
    /// Ready nodes the controller's bootstrap waits for.
    pub min_nodes: u32,
    /// The most it scales to (for sizing the pod network).
    pub max_nodes: u32,
}

impl NodeIdentity {
    /// `aws:///<zone>/<instance id>`, the provider id the AWS cloud provider
    /// gives EC2 nodes (and the cluster autoscaler maps Nodes to instances
    /// by), when both are known.
    pub fn provider_id(&self) -> Option<String> {
        match (&self.availability_zone, &self.instance_id) {
            (Some(zone), Some(id)) if id.starts_with("i-") => Some(format!("aws:///{zone}/{id}")),
            _ => None,
        }
    }
}

/// A node of the inventory that joins the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its address on the cluster network (its Node's `InternalIP`).
    pub address: IpAddr,
    /// Its node name when the inventory says (static topologies).
    pub name: Option<String>,
    /// Its instance group.
    pub group: String,
    /// Its role.
    pub role: Role,
    /// Its EC2 instance id when the inventory says.
    pub instance_id: Option<String>,
}

/// `ml.p5.48xlarge` → `p5.48xlarge`: Kubernetes labels use EC2 names.
pub fn strip_ml(instance_type: &str) -> String {
    instance_type
        .strip_prefix("ml.")
        .unwrap_or(instance_type)
        .to_string()
}
