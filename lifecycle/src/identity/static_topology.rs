//! A static topology: `[[identity.nodes]]` in the config, for self-managed
//! EC2 or lab machines without HyperPod's files. Each node carries its role.

use super::error::IdentityError;
use super::node::{ClusterIdentity, Role, TopologySource, strip_ml};
use super::topology::{Group, Member, Topology};
use crate::config::{IdentityConfig, StaticNode};

/// Where the inventory lives, for messages.
pub const INVENTORY: &str = "config [[identity.nodes]]";

fn role(node: &StaticNode) -> Role {
    // The config loader has already rejected any other value.
    match node.role.as_str() {
        "controller" => Role::Controller,
        "login" => Role::Login,
        _ => Role::Worker,
    }
}

/// Builds the topology from the configured nodes; groups (default: the
/// role's name) keep their first appearance's order.
pub fn topology(config: &IdentityConfig) -> Result<Topology, IdentityError> {
    if config.nodes.is_empty() {
        return Err(IdentityError::NoStaticNodes);
    }
    let mut groups: Vec<Group> = Vec::new();
    for (i, node) in config.nodes.iter().enumerate() {
        let role = role(node);
        let name = node.group.clone().unwrap_or_else(|| node.role.clone());
        let member = Member {
            address: node.address,
            name: Some(node.name.clone()),
            instance_id: None,
            location: format!("identity.nodes[{i}] ({})", node.name),
        };
        let instance_type = node.instance_type.as_deref().map(strip_ml);
        match groups.iter_mut().find(|g| g.name == name && g.role == role) {
            Some(g) => {
                g.members.push(member);
                if g.instance_type.is_none() {
                    g.instance_type = instance_type;
                }
            }
            None => groups.push(Group {
                name,
                role,
                instance_type,
                members: vec![member],
            }),
        }
    }
    if !groups.iter().any(|g| g.role == Role::Controller) {
        return Err(IdentityError::NoStaticController);
    }
    Ok(Topology {
        source: TopologySource::Static,
        cluster: ClusterIdentity {
            name: config
                .cluster_name
                .clone()
                .unwrap_or_else(|| "local".into()),
            id: None,
            arn: None,
            partition: None,
            region: None,
            account: None,
        },
        inventory: INVENTORY.into(),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addr: &str, role: &str, group: Option<&str>) -> StaticNode {
        StaticNode {
            name: name.into(),
            address: addr.parse().unwrap(),
            role: role.into(),
            group: group.map(String::from),
            instance_type: Some("ml.g5.xlarge".into()),
        }
    }

    #[test]
    fn groups_by_name_and_role() {
        let cfg = IdentityConfig {
            nodes: vec![
                node("cp", "10.0.0.1", "controller", None),
                node("w1", "10.0.0.2", "worker", Some("gpu")),
                node("w2", "10.0.0.3", "worker", Some("gpu")),
                node("l1", "10.0.0.4", "login", None),
            ],
            ..IdentityConfig::default()
        };
        let t = topology(&cfg).unwrap();
        let names: Vec<_> = t
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.members.len()))
            .collect();
        assert_eq!(names, [("controller", 1), ("gpu", 2), ("login", 1)]);
        assert_eq!(t.groups[1].instance_type.as_deref(), Some("g5.xlarge"));
        assert_eq!(t.groups[2].role, Role::Login);
    }

    #[test]
    fn needs_nodes_and_a_controller() {
        let e = topology(&IdentityConfig::default()).unwrap_err();
        assert!(matches!(e, IdentityError::NoStaticNodes), "{e}");
        let cfg = IdentityConfig {
            nodes: vec![node("w1", "10.0.0.2", "worker", None)],
            ..IdentityConfig::default()
        };
        assert!(matches!(
            topology(&cfg).unwrap_err(),
            IdentityError::NoStaticController
        ));
    }
}
