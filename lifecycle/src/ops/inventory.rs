//! The cluster as the operator commands see it: every Node (paged list)
//! beside every instance (every page of `ListClusterNodes` on HyperPod, the
//! static topology elsewhere), matched by the instance-id label (or the
//! provider id), then the private DNS name's first label (`ip-a-b-c-d`),
//! then the InternalIP. An inventory that cannot be read completely is an
//! error, never a partial list.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::aws::sagemaker::{ClusterNode, SageMaker, SageMakerError};
use crate::cluster::labels;
use crate::kube::client::timed;
use crate::remediation::node_report::CONTROL_PLANE;
use crate::remediation::ownership;
use crate::values::time::parse_rfc3339;

/// Nodes per list page.
const PAGE: u32 = 500;

/// Instance statuses that mean the instance is gone or broken for good.
pub const DEAD_STATUSES: [&str; 2] = ["Failure", "NotFound"];

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Instance id, when known (static topologies may lack it).
    pub id: Option<String>,
    /// Instance group (exact name).
    pub group: String,
    /// Instance type.
    pub instance_type: String,
    /// HyperPod status (`Running`, `Failure`, `Pending`, ...); `Listed` for
    /// a static topology.
    pub status: String,
    /// Status message.
    pub message: Option<String>,
    /// Launch time.
    #[serde(skip)]
    pub launch_time: Option<SystemTime>,
    /// `ip-a-b-c-d`.
    pub host: Option<String>,
    /// Private address.
    pub ip: Option<String>,
}

impl From<ClusterNode> for Instance {
    fn from(c: ClusterNode) -> Self {
        let host = c.host_label().map(str::to_string);
        let ip = c
            .private_ip
            .clone()
            .or_else(|| host.as_deref().and_then(ip_of_host));
        Instance {
            id: Some(c.instance_id),
            group: c.group,
            instance_type: c.instance_type,
            status: c.status,
            message: c.message,
            launch_time: c.launch_time,
            host,
            ip,
        }
    }
}

/// `ip-10-1-2-3` → `10.1.2.3`.
fn ip_of_host(host: &str) -> Option<String> {
    let rest = host.strip_prefix("ip-")?;
    let parts: Vec<&str> = rest.split('-').collect();
    (parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok())).then(|| parts.join("."))
}

/// Readiness as the Node's `Ready` condition says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `True`, `False` or `Unknown` (no condition: `Unknown`).
    pub status: String,
    /// Since when (the condition's transition).
    #[serde(skip)]
    pub since: Option<SystemTime>,
}

/// A condition's status and reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionView {
    /// Status.
    pub status: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// One Node, read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// UID (for delete preconditions).
    #[serde(skip)]
    pub uid: String,
    /// Group label.
    pub group: Option<String>,
    /// Instance id (label, else provider id).
    pub instance_id: Option<String>,
    /// InternalIP.
    pub ip: Option<String>,
    /// `spot` or `on-demand` (the `node.kubernetes.io/lifecycle` label
    /// hpk8s sets at join, when known).
    pub capacity_type: Option<String>,
    /// Ready condition.
    pub ready: Readiness,
    /// Not cordoned.
    pub schedulable: bool,
    /// Control-plane role label.
    pub control_plane: bool,
    /// `GPUHealthy`.
    pub gpu: Option<ConditionView>,
    /// `InstanceInterruption`.
    pub interruption: Option<ConditionView>,
    /// hpk8s's remediation record.
    pub remediation: Option<ownership::Record>,
}

fn condition(node: &Node, type_: &str) -> Option<ConditionView> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| ConditionView {
            status: c.status.clone(),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
}

impl NodeView {
    /// Reads `node`.
    pub fn of(node: &Node) -> Self {
        let report = crate::remediation::node_report::NodeReport::of(node);
        let labels_ = node.metadata.labels.clone().unwrap_or_default();
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map_or(
                Readiness {
                    status: "Unknown".into(),
                    since: None,
                },
                |c| Readiness {
                    status: c.status.clone(),
                    since: c
                        .last_transition_time
                        .as_ref()
                        .and_then(|t| parse_rfc3339(&t.0.to_string())),
                },
            );
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        NodeView {
            name: report.name.clone(),
            uid: node.metadata.uid.clone().unwrap_or_default(),
            group: labels_.get(labels::INSTANCE_GROUP).cloned(),
            instance_id: report.instance_id.clone(),
            ip,
            capacity_type: labels_.get(labels::LIFECYCLE).cloned(),
            ready,
            schedulable: !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            control_plane: labels_.contains_key(CONTROL_PLANE),
            gpu: condition(node, crate::gpu::condition::GPU_HEALTHY),
            interruption: condition(node, crate::agent::interruption::INSTANCE_INTERRUPTION),
            remediation: ownership::record(node),
        }
    }

    /// The node name's first label.
    pub fn host(&self) -> &str {
        self.name.split('.').next().unwrap_or(&self.name)
    }
}

/// Where instances come from.
#[derive(Debug, Clone)]
pub enum Instances {
    /// HyperPod's API.
    HyperPod(SageMaker),
    /// A static topology (the config's node list).
    Static(Vec<Instance>),
    /// None known (a single local node): Nodes only.
    None,
}

/// A Node and its instance (either may be missing).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The Node.
    pub node: Option<NodeView>,
    /// The instance.
    pub instance: Option<Instance>,
}

/// Calls made, for the benchmark and `--output json`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Calls {
    /// Kubernetes list pages.
    pub kubernetes: usize,
    /// SageMaker calls (pages and describes).
    pub sagemaker: usize,
}

/// Every Node, all pages.
pub async fn list_nodes(client: &Client, calls: &mut Calls) -> Result<Vec<Node>, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut lp = ListParams::default().limit(PAGE);
    let mut out = Vec::new();
    loop {
        let page = timed(api.list(&lp)).await?;
        calls.kubernetes += 1;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(out)
}

/// Every instance.
pub async fn list_instances(
    source: &Instances,
    calls: &mut Calls,
) -> Result<Vec<Instance>, SageMakerError> {
    match source {
        Instances::HyperPod(api) => {
            let (nodes, made) = api.list_nodes_counted().await?;
            calls.sagemaker += made;
            Ok(nodes.into_iter().map(Instance::from).collect())
        }
        Instances::Static(list) => Ok(list.clone()),
        Instances::None => Ok(Vec::new()),
    }
}

/// Matches Nodes and instances: instance id, then host label, then
/// InternalIP. Rows keep the Nodes' order, then unmatched instances.
pub fn match_up(nodes: Vec<NodeView>, instances: Vec<Instance>) -> Vec<Row> {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut by_host: HashMap<String, usize> = HashMap::new();
    let mut by_ip: HashMap<String, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        if let Some(id) = &inst.id {
            by_id.insert(id.clone(), i);
        }
        if let Some(h) = &inst.host {
            by_host.insert(h.clone(), i);
        }
        if let Some(ip) = &inst.ip {
            by_ip.insert(ip.clone(), i);
        }
    }
    let mut used = vec![false; instances.len()];
    let mut rows = Vec::with_capacity(nodes.len());
    for node in nodes {
        let found = node
            .instance_id
            .as_ref()
            .and_then(|id| by_id.get(id))
            .or_else(|| by_host.get(node.host()))
            .or_else(|| node.ip.as_ref().and_then(|ip| by_ip.get(ip)))
            .copied()
            .filter(|i| !used[*i]);
        let instance = found.map(|i| {
            used[i] = true;
            instances[i].clone()
        });
        rows.push(Row {
            node: Some(node),
            instance,
        });
    }
    for (i, inst) in instances.into_iter().enumerate() {
        if !used[i] {
            rows.push(Row {
                node: None,
                instance: Some(inst),
            });
        }
    }
    rows
}

/// Reads and matches everything.
pub async fn read(client: &Client, source: &Instances) -> Result<(Vec<Row>, Calls), crate::Error> {
    let mut calls = Calls::default();
    let nodes = list_nodes(client, &mut calls).await.map_err(|source| {
        crate::ops::OpsError::Kubernetes {
            what: "list the Nodes",
            source,
        }
    })?;
    let instances = list_instances(source, &mut calls).await?;
    let views: Vec<NodeView> = nodes.iter().map(NodeView::of).collect();
    Ok((match_up(views, instances), calls))
}

/// A static topology's instances (from the resolved peers).
pub fn static_instances(peers: &[crate::identity::Peer]) -> Vec<Instance> {
    peers
        .iter()
        .map(|p| Instance {
            id: p.instance_id.clone(),
            group: p.group.clone(),
            instance_type: String::new(),
            status: "Listed".into(),
            message: None,
            launch_time: None,
            host: p
                .name
                .as_deref()
                .map(|n| n.split('.').next().unwrap_or(n).to_string()),
            ip: Some(p.address.to_string()),
        })
        .collect()
}

/// Instances by group, exact names.
pub fn by_group(rows: &[Row]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in rows {
        if let Some(i) = &r.instance {
            *m.entry(i.group.clone()).or_default() += 1;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, id: Option<&str>, ip: Option<&str>) -> NodeView {
        NodeView {
            name: name.into(),
            uid: String::new(),
            group: None,
            instance_id: id.map(str::to_string),
            ip: ip.map(str::to_string),
            capacity_type: None,
            ready: Readiness {
                status: "True".into(),
                since: None,
            },
            schedulable: true,
            control_plane: false,
            gpu: None,
            interruption: None,
            remediation: None,
        }
    }
    fn inst(id: &str, host: &str) -> Instance {
        Instance {
            id: Some(id.into()),
            group: "g".into(),
            instance_type: String::new(),
            status: "Running".into(),
            message: None,
            launch_time: None,
            host: Some(host.into()),
            ip: ip_of_host(host),
        }
    }

    #[test]
    fn matching_order_id_then_host_then_ip() {
        let rows = match_up(
            vec![
                view("by-id", Some("i-1"), None),
                view("ip-10-0-0-2.ec2.internal", None, None),
                view("by-ip", None, Some("10.0.0.3")),
                view("lonely", None, Some("10.9.9.9")),
            ],
            vec![
                inst("i-1", "ip-10-0-0-1"),
                inst("i-2", "ip-10-0-0-2"),
                inst("i-3", "ip-10-0-0-3"),
                inst("i-4", "ip-10-0-0-4"),
            ],
        );
        let pairs: Vec<(Option<String>, Option<String>)> = rows
            .iter()
            .map(|r| {
                (
                    r.node.as_ref().map(|n| n.name.clone()),
                    r.instance.as_ref().and_then(|i| i.id.clone()),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![
                (Some("by-id".into()), Some("i-1".into())),
                (Some("ip-10-0-0-2.ec2.internal".into()), Some("i-2".into())),
                (Some("by-ip".into()), Some("i-3".into())),
                (Some("lonely".into()), None),
                (None, Some("i-4".into())),
            ]
        );
    }

    #[test]
    fn host_names_give_addresses() {
        assert_eq!(ip_of_host("ip-10-1-38-128").as_deref(), Some("10.1.38.128"));
        assert_eq!(ip_of_host("ip-10-1-38"), None);
        assert_eq!(ip_of_host("node-1"), None);
    }
}
