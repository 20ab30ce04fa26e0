//! The nodes the controller expects (from the inventory), what it sees of
//! each Node, how the two are matched (by `InternalIP`, never by name: a
//! node's name comes from its hostname or `node.name` and need not be the
//! inventory's), and the labels the controller gives each node.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use crate::cluster::labels;
use crate::config::{ClusterConfig, Config};
use crate::identity::{ElasticGroup, NodeIdentity, Peer, Role};

/// Per group, the labels the controller applies (those a kubelet may not
/// set on itself at registration).
pub type GroupLabels = BTreeMap<String, BTreeMap<String, String>>;

/// What the controller waits for and how it labels: the nodes it knows,
/// the elastic groups' minimum counts, the groups' controller-only labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// Nodes the inventory lists.
    pub nodes: Vec<ExpectedNode>,
    /// Groups whose members are not listed: at least `min_nodes` Ready
    /// Nodes carrying the group's label.
    pub elastic: Vec<ElasticGroup>,
    /// Controller-only labels by group.
    pub group_labels: GroupLabels,
}

impl Expectations {
    /// The controller's expectations for `identity`'s cluster.
    pub fn of(identity: &NodeIdentity, config: &Config) -> Expectations {
        Expectations {
            nodes: expected_nodes(identity),
            elastic: identity
                .elastic_groups
                .iter()
                .filter(|g| g.min_nodes > 0)
                .cloned()
                .collect(),
            group_labels: group_labels(config),
        }
    }

    /// Only `nodes` (no elastic groups, no group labels).
    pub fn of_nodes(nodes: &[ExpectedNode]) -> Expectations {
        Expectations {
            nodes: nodes.to_vec(),
            ..Expectations::default()
        }
    }

    /// Ready nodes waited for in all.
    pub fn total(&self) -> usize {
        self.nodes.len()
            + self
                .elastic
                .iter()
                .map(|g| usize::try_from(g.min_nodes).unwrap_or(usize::MAX))
                .sum::<usize>()
    }
}

/// Every configured group's controller-only labels.
pub fn group_labels(config: &Config) -> GroupLabels {
    config
        .groups
        .keys()
        .map(|g| {
            (
                g.clone(),
                crate::cluster::kubeadm_config::group_labels_for_the_controller(config, g),
            )
        })
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

/// The wait for Ready nodes when `cluster.nodes_ready_timeout_secs` is
/// unset: this long…
pub const BASE_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// …plus this much per expected node (image pulls and joins queue up on
/// the control plane as clusters grow).
pub const READY_TIMEOUT_PER_NODE: Duration = Duration::from_secs(1);
/// Label kubeadm puts on control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// Node names shown in a progress line.
pub(crate) const NAMES_IN_PROGRESS: usize = 2;
/// Node names shown in the deadline error.
pub(crate) const NAMES_IN_ERROR: usize = 5;

/// A node the controller expects to join, from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    /// Its address: the `InternalIP` its Node reports.
    pub address: IpAddr,
    /// Its name in messages: the inventory's name, else `ip-10-1-38-128`.
    pub name: String,
    /// Its instance group.
    pub group: String,
    /// Its role.
    pub role: Role,
}

impl ExpectedNode {
    /// The expected node for an inventory peer.
    pub fn from_peer(peer: &Peer) -> ExpectedNode {
        ExpectedNode {
            address: peer.address,
            name: peer
                .name
                .clone()
                .unwrap_or_else(|| address_name(peer.address)),
            group: peer.group.clone(),
            role: peer.role,
        }
    }
}

/// `10.1.38.128` → `ip-10-1-38-128` (EC2's private DNS style; IPv6 colons
/// become dashes too).
pub fn address_name(address: IpAddr) -> String {
    format!("ip-{}", address.to_string().replace(['.', ':'], "-"))
}

/// Every node of `identity`'s inventory that joins, the controller included.
pub fn expected_nodes(identity: &NodeIdentity) -> Vec<ExpectedNode> {
    identity.peers.iter().map(ExpectedNode::from_peer).collect()
}

/// How long to wait for `expected` nodes: `cluster.nodes_ready_timeout_secs`
/// when set, else [`BASE_READY_TIMEOUT`] + [`READY_TIMEOUT_PER_NODE`] per node.
pub fn ready_deadline(expected: usize, config: &ClusterConfig) -> Duration {
    match config.nodes_ready_timeout_secs {
        Some(secs) => Duration::from_secs(secs),
        None => {
            BASE_READY_TIMEOUT
                + READY_TIMEOUT_PER_NODE.saturating_mul(u32::try_from(expected).unwrap_or(u32::MAX))
        }
    }
}

/// An expected node found Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNode {
    /// The inventory's node.
    pub expected: ExpectedNode,
    /// The name of its Node object.
    pub node_name: String,
}

/// A Ready node the inventory does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedNode {
    /// The name of its Node object.
    pub node_name: String,
    /// Its `InternalIP`, if it reports one.
    pub address: Option<IpAddr>,
    /// The labels it carries (to derive the controller's labels from).
    pub labels: BTreeMap<String, String>,
}

impl From<&NodeView> for UnexpectedNode {
    fn from(n: &NodeView) -> Self {
        UnexpectedNode {
            node_name: n.name.clone(),
            address: n.internal_ips.first().copied(),
            labels: n.labels.clone(),
        }
    }
}

/// The outcome of waiting for the expected nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyReport {
    /// Every expected node, in the order given, with its Node's name.
    pub ready: Vec<ReadyNode>,
    /// Ready nodes that were not expected (scale-up, replacements).
    pub unexpected: Vec<UnexpectedNode>,
    /// How long the wait took.
    pub waited: Duration,
    /// Nodes the wait labelled as they turned Ready (0 when it only waited).
    pub labelled: usize,
}

impl ReadyReport {
    /// The Node name of the expected node at `address`.
    pub fn node_name(&self, address: IpAddr) -> Option<&str> {
        self.ready
            .iter()
            .find(|r| r.expected.address == address)
            .map(|r| r.node_name.as_str())
    }

    /// The controller's labels for every Ready node: from the inventory for
    /// expected nodes, from their own labels for the others.
    pub fn labels_to_apply(&self, groups: &GroupLabels) -> Vec<(String, BTreeMap<String, String>)> {
        let expected = self.ready.iter().map(|r| {
            (
                r.node_name.clone(),
                controller_labels(&BTreeMap::new(), Some(&r.expected), groups),
            )
        });
        let others = self.unexpected.iter().map(|u| {
            (
                u.node_name.clone(),
                controller_labels(&u.labels, None, groups),
            )
        });
        expected.chain(others).collect()
    }
}

/// The labels the controller puts on a node (NodeRestriction forbids the
/// node to set them itself): [`labels::ROLE_WORKER`] `""` on every node
/// that is not a controller, and [`labels::INSTANCE_GROUP`] when the group
/// is known. With `expected`, role and group come from the inventory;
/// without (a node that joined later), from the labels it registered with:
/// hpk8s nodes set their instance group themselves, and kubeadm marks
/// control-plane nodes with [`CONTROL_PLANE_LABEL`]. The group's
/// controller-only labels (`groups`) come with them.
pub fn controller_labels(
    node_labels: &BTreeMap<String, String>,
    expected: Option<&ExpectedNode>,
    groups: &GroupLabels,
) -> BTreeMap<String, String> {
    let (controller, group) = match expected {
        Some(e) => (e.role == Role::Controller, Some(e.group.clone())),
        None => (
            node_labels.contains_key(CONTROL_PLANE_LABEL),
            node_labels.get(labels::INSTANCE_GROUP).cloned(),
        ),
    };
    let mut out = BTreeMap::new();
    if !controller {
        out.insert(labels::ROLE_WORKER.to_string(), String::new());
    }
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        if let Some(extra) = groups.get(&g) {
            out.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.insert(labels::INSTANCE_GROUP.to_string(), g);
    }
    out
}

/// What the wait needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub(crate) name: String,
    pub(crate) internal_ips: Vec<IpAddr>,
    pub(crate) ready: bool,
    pub(crate) labels: BTreeMap<String, String>,
}

impl NodeView {
    pub(crate) fn of(node: &Node) -> NodeView {
        let status = node.status.as_ref();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ips: status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
            ready: is_ready(node),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// Condition `Ready` is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// `a`, `a and b`, `a, b and c`, `a, b and 3 more` (at most `shown` names).
pub(crate) fn name_list(names: &[&str], shown: usize) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        _ if names.len() <= shown => {
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            format!("{} and {last}", rest.join(", "))
        }
        _ => format!(
            "{} and {} more",
            names[..shown].join(", "),
            names.len() - shown
        ),
    }
}

/// `37/64 Ready; waiting for ip-10-1-38-128, ip-10-1-29-16 and 35 more`.
pub(crate) fn progress_line(ready: usize, total: usize, missing: &[&str]) -> String {
    if missing.is_empty() {
        format!("{ready}/{total} Ready")
    } else {
        format!(
            "{ready}/{total} Ready; waiting for {}",
            name_list(missing, NAMES_IN_PROGRESS)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn expected(last: u8, role: Role, name: Option<&str>) -> ExpectedNode {
        ExpectedNode::from_peer(&Peer {
            address: IpAddr::V4(Ipv4Addr::new(10, 1, 38, last)),
            name: name.map(String::from),
            group: "gpu".into(),
            role,
            instance_id: None,
        })
    }

    #[test]
    fn display_names_fall_back_to_the_address() {
        assert_eq!(expected(128, Role::Worker, None).name, "ip-10-1-38-128");
        assert_eq!(expected(128, Role::Worker, Some("gpu-1")).name, "gpu-1");
        assert_eq!(
            address_name(
                "fd00::1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            ),
            "ip-fd00--1"
        );
    }

    #[test]
    fn name_lists_and_progress_lines() {
        assert_eq!(name_list(&[], 2), "");
        assert_eq!(name_list(&["a"], 2), "a");
        assert_eq!(name_list(&["a", "b"], 2), "a and b");
        assert_eq!(name_list(&["a", "b", "c"], 3), "a, b and c");
        assert_eq!(name_list(&["a", "b", "c", "d"], 2), "a, b and 2 more");
        let missing: Vec<String> = (0..37).map(|i| format!("n{i}")).collect();
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        assert_eq!(
            progress_line(27, 64, &missing),
            "27/64 Ready; waiting for n0, n1 and 35 more"
        );
        assert_eq!(progress_line(3, 3, &[]), "3/3 Ready");
    }

    #[test]
    fn deadline_grows_with_the_cluster_unless_configured() {
        let mut c = ClusterConfig::default();
        assert_eq!(ready_deadline(0, &c), Duration::from_secs(600));
        assert_eq!(ready_deadline(1000, &c), Duration::from_secs(1600));
        c.nodes_ready_timeout_secs = Some(42);
        assert_eq!(ready_deadline(1000, &c), Duration::from_secs(42));
    }

    #[test]
    fn controller_labels_from_inventory_or_from_the_node() {
        let w = controller_labels(
            &BTreeMap::new(),
            Some(&expected(2, Role::Worker, None)),
            &GroupLabels::new(),
        );
        assert_eq!(
            w,
            BTreeMap::from([
                (labels::INSTANCE_GROUP.to_string(), "gpu".to_string()),
                (labels::ROLE_WORKER.to_string(), String::new()),
            ])
        );
        let c = controller_labels(
            &BTreeMap::new(),
            Some(&expected(1, Role::Controller, None)),
            &GroupLabels::new(),
        );
        assert_eq!(
            c,
            BTreeMap::from([(labels::INSTANCE_GROUP.to_string(), "gpu".to_string())])
        );
        let late = BTreeMap::from([(labels::INSTANCE_GROUP.to_string(), "cpu".to_string())]);
        assert_eq!(
            controller_labels(&late, None, &GroupLabels::new()),
            BTreeMap::from([
                (labels::INSTANCE_GROUP.to_string(), "cpu".to_string()),
                (labels::ROLE_WORKER.to_string(), String::new()),
            ])
        );
        let cp = BTreeMap::from([(CONTROL_PLANE_LABEL.to_string(), String::new())]);
        assert!(controller_labels(&cp, None, &GroupLabels::new()).is_empty());
        // A group's controller-only labels come with the group.
        let groups = GroupLabels::from([(
            "cpu".to_string(),
            BTreeMap::from([("node-role.kubernetes.io/batch".to_string(), String::new())]),
        )]);
        assert!(
            controller_labels(&late, None, &groups).contains_key("node-role.kubernetes.io/batch")
        );
    }
}
