//! The documented fallback for a machine with no HyperPod file and no static
//! topology: a single-node cluster whose only node (this one) is the
//! controller.

use super::error::IdentityError;
use super::node::{ClusterIdentity, GroupSummary, NodeIdentity, Peer, Role, TopologySource};
use crate::config::Config;
use crate::host::Host;

/// Group name of the single node.
const GROUP: &str = "local";

/// This machine as a one-node cluster: `node.address`, else the first IPv4
/// address of the host (any address when it has no IPv4).
pub fn identity(host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
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
    let peer = Peer {
        address,
        name: Some(node_name.clone()),
        group: GROUP.into(),
        role: Role::Controller,
        instance_id: None,
    };
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
        group: GROUP.into(),
        instance_id: None,
        instance_type: None,
        region: None,
        availability_zone: None,
        lifecycle: None,
        expected_nodes: 1,
        groups: vec![GroupSummary {
            name: GROUP.into(),
            role: Role::Controller,
            instance_type: None,
            count: 1,
        }],
        node_addresses: vec![address],
        peers: vec![peer],
        elastic_groups: Vec::new(),
    })
}
