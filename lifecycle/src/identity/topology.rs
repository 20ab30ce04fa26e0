//! The inventory every topology source boils down to: instance groups with a
//! role each, and the addresses of their nodes. Turning it into this node's
//! [`NodeIdentity`] is the same whatever the source.

use std::net::IpAddr;

use super::address;
use super::error::IdentityError;
use super::node::{ClusterIdentity, GroupSummary, NodeIdentity, Peer, Role, TopologySource};
use super::roles::RoleRules;
use crate::config::Config;
use crate::host::Host;

/// One node listed in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its address on the cluster network (HyperPod `CustomerIpAddress`).
    pub address: IpAddr,
    /// Its node name when the inventory says (static topologies).
    pub name: Option<String>,
    /// Its EC2 instance id when the inventory says.
    pub instance_id: Option<String>,
    /// Where it is listed, for messages (`InstanceGroups[1].Instances[0]`).
    pub location: String,
}

/// An instance group and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Role of every node of the group.
    pub role: Role,
    /// Instance type without `ml.`.
    pub instance_type: Option<String>,
    /// Nodes listed (possibly none: a group scaled to 0).
    pub members: Vec<Member>,
}

/// A whole cluster inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Where it came from.
    pub source: TopologySource,
    /// The cluster.
    pub cluster: ClusterIdentity,
    /// The file or config key it was read from, for messages.
    pub inventory: String,
    /// Its instance groups, in inventory order.
    pub groups: Vec<Group>,
}

impl Topology {
    /// Names of the instance groups, in inventory order.
    pub fn group_names(&self) -> Vec<&str> {
        self.groups.iter().map(|g| g.name.as_str()).collect()
    }

    /// Sets every group's role from `rules`.
    pub fn assign_roles(&mut self, rules: &RoleRules) {
        for g in &mut self.groups {
            g.role = rules.role_of(&g.name);
        }
    }

    /// Finds this node in the inventory and describes it.
    pub fn identify(self, host: &Host, config: &Config) -> Result<NodeIdentity, IdentityError> {
        let listed: Vec<(IpAddr, &str)> = self
            .groups
            .iter()
            .flat_map(|g| g.members.iter())
            .map(|m| (m.address, m.location.as_str()))
            .collect();
        address::check_unique(&listed, &self.inventory)?;
        let addresses: Vec<IpAddr> = listed.iter().map(|(a, _)| *a).collect();
        let own = address::own_address(&addresses, host, config.node.address, &self.inventory)?;
        let (group, member) = self
            .groups
            .iter()
            .find_map(|g| g.members.iter().find(|m| m.address == own).map(|m| (g, m)))
            .ok_or_else(|| IdentityError::PinnedAddressNotInInventory {
                address: own,
                inventory: self.inventory.clone(),
            })?;
        let login_joins = config.identity.login_nodes_join;
        let joins = |role: Role| role != Role::Login || login_joins;
        let expected_nodes = self
            .groups
            .iter()
            .filter(|g| joins(g.role))
            .map(|g| count(g.members.len()))
            .sum();
        let peers = self
            .groups
            .iter()
            .filter(|g| joins(g.role))
            .flat_map(|g| {
                g.members.iter().map(|m| Peer {
                    address: m.address,
                    name: m.name.clone(),
                    group: g.name.clone(),
                    role: g.role,
                    instance_id: m.instance_id.clone(),
                })
            })
            .collect();
        let groups = self
            .groups
            .iter()
            .map(|g| GroupSummary {
                name: g.name.clone(),
                role: g.role,
                instance_type: g.instance_type.clone(),
                count: count(g.members.len()),
            })
            .collect();
        let node_name = config
            .node
            .name
            .clone()
            .or_else(|| member.name.clone())
            .unwrap_or_else(|| host.hostname());
        Ok(NodeIdentity {
            source: self.source,
            cluster: self.cluster.clone(),
            node_name,
            address: own,
            role: group.role,
            joins: joins(group.role),
            group: group.name.clone(),
            instance_id: member.instance_id.clone(),
            instance_type: group.instance_type.clone(),
            region: self.cluster.region.clone(),
            availability_zone: None,
            lifecycle: None,
            expected_nodes,
            groups,
            node_addresses: addresses,
            peers,
            elastic_groups: Vec::new(),
        })
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
