//! What `kubeadm init` was given that later runs need (non-secret), kept
//! on the controller in [`CLUSTER_RECORD`].

use serde::{Deserialize, Serialize};

use super::context::Context;
use super::pod_network;
use crate::Error;

/// The record's host path.
pub const CLUSTER_RECORD: &str = "/etc/kubernetes/hpk8s/cluster.json";

/// The pod network the cluster was formed with. Recorded at `init`,
/// because re-computing it from a grown inventory could give another size
/// than the one the control plane runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// `podSubnet`.
    pub pod_subnet: String,
    /// `serviceSubnet`.
    pub service_subnet: String,
    /// `node-cidr-mask-size`.
    pub node_cidr_mask_size: u8,
}

impl ClusterRecord {
    /// The record as the file holds it.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The pod subnet of a formed cluster: recorded at `init`, else (a cluster
/// formed by an older hpk8s) what the inventory gives now.
pub fn recorded_pod_subnet(cx: &Context<'_>) -> Result<String, Error> {
    if let Some(text) = cx.host.read_string_opt(CLUSTER_RECORD)? {
        if let Ok(record) = serde_json::from_str::<ClusterRecord>(&text) {
            return Ok(record.pod_subnet);
        }
        tracing::warn!(
            path = CLUSTER_RECORD,
            "unreadable cluster record; re-computing the pod network"
        );
    }
    let network = pod_network::plan(
        &cx.config.cluster,
        cx.identity.expected_nodes,
        &cx.identity.node_addresses,
    )
    .map_err(|e| Error::ClusterConfig(e.into()))?;
    Ok(network.pod_subnet.to_string())
}
