//! `identity.source = "ec2"`: a node of a self-managed EC2 group that
//! scales (an autoscaling group, spot capacity, from zero). Nobody can list
//! the group's members in advance, so a node knows only itself (from
//! IMDSv2: instance id and type, private address and DNS name, region and
//! zone, spot or on-demand), its role and group (from the config shipped in
//! user-data, `[node] role` and `group`), the controllers' addresses
//! (`identity.controllers`) and the groups' sizes (`[groups.<name>]`).
//!
//! The controller waits for the controllers and each group's `min_nodes`;
//! workers that join later are labelled as they appear.

use std::net::IpAddr;
use std::time::Duration;

use super::error::IdentityError;
use super::imds::{ImdsClient, InstanceFacts, RetryPolicy};
use super::node::{
    ClusterIdentity, ElasticGroup, GroupSummary, NodeIdentity, Peer, Role, TopologySource,
};
use crate::config::Config;
use crate::host::Host;

/// The group name given to the controllers in `identity.controllers` when
/// this node is not one of them (their own group is unknown here).
pub const CONTROLLER_GROUP: &str = "controller";

/// This node's identity from the config and the IMDS at `imds` (`None`:
/// no IMDS to ask, this is not EC2).
pub async fn identity(
    host: &Host,
    config: &Config,
    imds: Option<String>,
    retry: RetryPolicy,
) -> Result<NodeIdentity, IdentityError> {
    let incomplete = |key: &'static str, message: &str| IdentityError::ElasticConfig {
        key,
        message: message.to_string(),
    };
    let cluster_name = config.identity.cluster_name.clone().ok_or_else(|| {
        incomplete(
            "identity.cluster_name",
            "identity.source = \"ec2\" needs the cluster's name (every node of the cluster sets the same one)",
        )
    })?;
    let role = match config.node.role.as_deref() {
        Some("controller") => Role::Controller,
        Some("worker") => Role::Worker,
        Some("login") => Role::Login,
        Some(other) => {
            return Err(IdentityError::ElasticConfig {
                key: "node.role",
                message: format!("unknown role `{other}`; use controller, worker or login"),
            });
        }
        None => {
            return Err(incomplete(
                "node.role",
                "identity.source = \"ec2\" needs this node's role (controller, worker or login) in the config its group ships",
            ));
        }
    };
    let group = config.node.group.clone().ok_or_else(|| {
        incomplete(
            "node.group",
            "identity.source = \"ec2\" needs this node's group (a [groups.<name>] entry) in the config its group ships",
        )
    })?;
    if role != Role::Controller
        && config.identity.controllers.is_empty()
        && config.cluster.control_plane_endpoint.is_none()
    {
        return Err(incomplete(
            "identity.controllers",
            "a worker of an EC2 group needs the controllers' addresses (identity.controllers) or cluster.control_plane_endpoint, to know which API server a join ticket may name",
        ));
    }

    let facts = instance_facts(config, imds, retry).await?;
    let address = match (config.node.address, &facts) {
        (Some(a), _) => a,
        (None, Some(f)) => f
            .local_ipv4
            .as_deref()
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| IdentityError::ElasticNeedsImds {
                missing: "private address".into(),
                reason: "IMDS has no usable local-ipv4".into(),
                keys: "node.address".into(),
            })?,
        (None, None) => unreachable_facts("address", "node.address")?,
    };
    let node_name = match (&config.node.name, &facts) {
        (Some(n), _) => n.clone(),
        // EC2's private DNS name, as the AWS cloud provider names Nodes
        // (IMDS may list several, space-separated: the first is the primary).
        (None, Some(f)) => match f
            .local_hostname
            .as_deref()
            .and_then(|h| h.split_whitespace().next())
        {
            Some(h) => h.to_ascii_lowercase(),
            None => host.hostname(),
        },
        (None, None) => unreachable_facts("node name", "node.name")?,
    };

    let login_joins = config.identity.login_nodes_join;
    let joins = role != Role::Login || login_joins;
    let mut peers: Vec<Peer> = config
        .identity
        .controllers
        .iter()
        .filter(|a| **a != address)
        .map(|a| Peer {
            address: *a,
            name: None,
            group: CONTROLLER_GROUP.into(),
            role: Role::Controller,
            instance_id: None,
        })
        .collect();
    if joins {
        peers.push(Peer {
            address,
            name: Some(node_name.clone()),
            group: group.clone(),
            role,
            instance_id: facts.as_ref().and_then(|f| f.instance_id.clone()),
        });
    }
    let elastic_groups: Vec<ElasticGroup> = config
        .groups
        .iter()
        .filter(|(name, _)| role != Role::Controller || **name != group)
        .map(|(name, g)| ElasticGroup {
            name: name.clone(),
            min_nodes: g.min_nodes,
            max_nodes: g.max_nodes.unwrap_or(g.min_nodes).max(g.min_nodes),
        })
        .collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let expected_nodes = count(peers.len()).saturating_add(
        elastic_groups
            .iter()
            .map(|g| g.max_nodes)
            .fold(0, u32::saturating_add),
    );
    let mut groups: Vec<GroupSummary> = elastic_groups
        .iter()
        .map(|g| GroupSummary {
            name: g.name.clone(),
            role: Role::Worker,
            instance_type: None,
            count: g.min_nodes,
        })
        .collect();
    if !groups.iter().any(|g| g.name == group) {
        groups.push(GroupSummary {
            name: group.clone(),
            role,
            instance_type: None,
            count: 1,
        });
    }
    let mut id = NodeIdentity {
        source: TopologySource::Ec2,
        cluster: ClusterIdentity {
            name: cluster_name,
            id: None,
            arn: None,
            partition: None,
            region: None,
            account: None,
        },
        node_name,
        address,
        role,
        joins,
        group,
        instance_id: None,
        instance_type: None,
        region: None,
        availability_zone: None,
        lifecycle: None,
        expected_nodes,
        groups,
        node_addresses: peers.iter().map(|p| p.address).collect(),
        peers,
        elastic_groups,
    };
    if let Some(f) = facts {
        id.apply_instance_facts(f);
        id.cluster.region = id.region.clone();
    }
    Ok(id)
}

/// What IMDS says, `None` when there is no IMDS to ask (not EC2, no
/// endpoint) or it did not answer and the config gives address and name.
async fn instance_facts(
    config: &Config,
    imds: Option<String>,
    retry: RetryPolicy,
) -> Result<Option<InstanceFacts>, IdentityError> {
    let given = config.node.address.is_some() && config.node.name.is_some();
    let Some(endpoint) = imds else {
        if given {
            tracing::info!("not EC2 and no identity.imds_endpoint: instance facts unknown");
            return Ok(None);
        }
        return Err(IdentityError::ElasticNeedsImds {
            missing: missing(config),
            reason:
                "this machine does not identify itself as EC2 and identity.imds_endpoint is unset"
                    .into(),
            keys: "node.address and node.name".into(),
        });
    };
    let timeout = Duration::from_millis(config.identity.imds_timeout_ms.max(1));
    let client = ImdsClient::new(endpoint, timeout)?.with_retry(retry);
    match client.instance_facts().await {
        Ok(f) => Ok(Some(f)),
        Err(IdentityError::ImdsUnreachable { endpoint, reason }) if given => {
            tracing::warn!(%endpoint, %reason, "IMDS did not answer: continuing with node.address and node.name, instance facts unknown");
            Ok(None)
        }
        Err(IdentityError::ImdsUnreachable { endpoint, reason }) => {
            Err(IdentityError::ElasticNeedsImds {
                missing: missing(config),
                reason: format!("IMDS at {endpoint} did not answer ({reason})"),
                keys: "node.address and node.name".into(),
            })
        }
        Err(e) => Err(e),
    }
}

fn missing(config: &Config) -> String {
    match (config.node.address.is_some(), config.node.name.is_some()) {
        (false, false) => "private address and DNS name".into(),
        (false, true) => "private address".into(),
        _ => "DNS name".into(),
    }
}

fn unreachable_facts<T>(what: &str, key: &str) -> Result<T, IdentityError> {
    Err(IdentityError::ElasticNeedsImds {
        missing: what.into(),
        reason: "IMDS gave no answer".into(),
        keys: key.into(),
    })
}
