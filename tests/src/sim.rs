//! A simulated HyperPod cluster anyone can start: the test API server and
//! moto (with hpk8s's SageMaker extension), loaded from a scenario file.
//! Used by the operator tests, the operator benchmark and
//! `sim_cluster` (`cargo run -p hpk8s-tests --bin sim_cluster -- FILE`),
//! which prints the environment that points `hpk8s` at it.
//!
//! The scenario (YAML; `docs/operations.md` documents it):
//!
//! ```yaml
//! cluster: { name: sim, region: us-west-2 }
//! groups:
//!   - { name: controller, instance_type: ml.m5.4xlarge, count: 1, control_plane: true }
//!   - { name: workers, instance_type: ml.p5.48xlarge, count: 8 }
//! nodes:                       # per-instance changes, by group and index
//!   - { group: workers, index: 2, ready: "False", for_minutes: 30, instance: Failure }
//!   - { group: workers, index: 3, ready: "Unknown", for_minutes: 30, instance: absent }
//!   - { group: workers, index: 4, node: false }   # an instance without a Node
//! pods:
//!   - { namespace: default, name: web-0, group: workers, index: 0, owner: ReplicaSet/web, labels: { app: web } }
//! budgets:
//!   - { namespace: default, name: web, selector: { app: web }, min_available: 1 }
//! ```
//!
//! Node names are the instances' host names (`ip-10-1-0-11`), as on
//! HyperPod; every Node carries the group and instance-id labels hpk8s sets
//! at join; a control-plane group's Nodes the control-plane role label.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::kube_api::fixtures::{Pod, PodDisruptionBudget};
use crate::kube_api::{NodeSpec, TestApiServer};
use crate::moto::{Moto, SeededCluster, resource_config};

/// The scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Cluster name and region.
    pub cluster: ClusterSpec,
    /// Instance groups.
    pub groups: Vec<GroupSpec>,
    /// Changes to single instances and their Nodes.
    #[serde(default)]
    pub nodes: Vec<NodeChange>,
    /// Pods.
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// PodDisruptionBudgets.
    #[serde(default)]
    pub budgets: Vec<BudgetSpec>,
}

/// `cluster:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Name.
    pub name: String,
    /// Region (default us-west-2).
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    crate::moto::DEFAULT_REGION.to_string()
}

/// One group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Name.
    pub name: String,
    /// Instance type.
    #[serde(default = "default_type")]
    pub instance_type: String,
    /// Instances.
    pub count: usize,
    /// Whether its Nodes are control-plane nodes.
    #[serde(default)]
    pub control_plane: bool,
}

fn default_type() -> String {
    "ml.p5.48xlarge".into()
}

/// A change to one instance (and its Node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeChange {
    /// Group.
    pub group: String,
    /// Index in the group (0-based).
    pub index: usize,
    /// The Node's Ready status: `True`, `False`, `Unknown`.
    #[serde(default)]
    pub ready: Option<String>,
    /// Minutes since that status began (default 0).
    #[serde(default)]
    pub for_minutes: u64,
    /// The instance: a HyperPod status (`Failure`, `Pending`, ...), or
    /// `absent` (gone from the inventory).
    #[serde(default)]
    pub instance: Option<String>,
    /// The status message.
    #[serde(default)]
    pub message: Option<String>,
    /// `false`: no Node for this instance.
    #[serde(default = "yes")]
    pub node: bool,
}

fn yes() -> bool {
    true
}

/// A pod.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node's group.
    pub group: String,
    /// The node's index.
    pub index: usize,
    /// `Kind/name` of its controller (none: unmanaged).
    #[serde(default)]
    pub owner: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A budget.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `matchLabels`.
    pub selector: BTreeMap<String, String>,
    /// `minAvailable`.
    #[serde(default)]
    pub min_available: Option<u64>,
    /// `maxUnavailable`.
    #[serde(default)]
    pub max_unavailable: Option<u64>,
}

/// One simulated instance.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Node name (`ip-a-b-c-d`).
    pub name: String,
    /// Group.
    pub group: String,
    /// Index in the group.
    pub index: usize,
    /// Instance id.
    pub instance_id: String,
    /// Address.
    pub ip: String,
}

/// A running simulated cluster.
pub struct SimCluster {
    /// The Kubernetes side.
    pub api: TestApiServer,
    /// The SageMaker side.
    pub moto: Moto,
    /// The seeded cluster.
    pub seeded: SeededCluster,
    /// Every instance, in seed order.
    pub nodes: Vec<SimNode>,
    /// The region.
    pub region: String,
    dir: tempfile::TempDir,
}

impl Scenario {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses a scenario.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(serde_saphyr::from_str(text)?)
    }
}

fn label_node(spec: &mut NodeSpec, group: &GroupSpec, id: &str) {
    spec.labels
        .push(("hpk8s.io/instance-group".into(), group.name.clone()));
    spec.labels
        .push(("hpk8s.io/instance-id".into(), id.to_string()));
    spec.labels.push((
        "node.kubernetes.io/instance-type".into(),
        group.instance_type.trim_start_matches("ml.").to_string(),
    ));
    if group.control_plane {
        spec.labels.push((
            "node-role.kubernetes.io/control-plane".into(),
            String::new(),
        ));
    }
}

impl SimCluster {
    /// Starts both servers and loads the scenario.
    pub async fn start(s: &Scenario) -> Result<Self> {
        if !Moto::available() {
            bail!("moto is not available (python3 with moto[server], $HPK8S_MOTO_PYTHON)");
        }
        let moto = Moto::start()?;
        let api = TestApiServer::start().await?;
        let groups: Vec<(&str, &str, usize)> = s
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.instance_type.as_str(), g.count))
            .collect();
        let doc = resource_config(&s.cluster.name, &s.cluster.region, &groups);
        let seeded = moto.seed_cluster(&doc).await?;
        let mut nodes = Vec::new();
        let mut k = 0;
        for g in &s.groups {
            for index in 0..g.count {
                let ip = doc["InstanceGroups"]
                    .as_array()
                    .and_then(|gs| gs.iter().find(|x| x["Name"] == g.name.as_str()))
                    .and_then(|x| x["Instances"][index]["CustomerIpAddress"].as_str())
                    .context("seeded address")?
                    .to_string();
                nodes.push(SimNode {
                    name: format!("ip-{}", ip.replace('.', "-")),
                    group: g.name.clone(),
                    index,
                    instance_id: seeded.node_ids[k].clone(),
                    ip,
                });
                k += 1;
            }
        }
        let sim = SimCluster {
            api,
            moto,
            seeded,
            nodes,
            region: s.cluster.region.clone(),
            dir: tempfile::tempdir()?,
        };
        let mut status: Vec<(String, String, String)> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        for n in &sim.nodes {
            let change = s
                .nodes
                .iter()
                .find(|c| c.group == n.group && c.index == n.index);
            let group = s
                .groups
                .iter()
                .find(|g| g.name == n.group)
                .context("group")?;
            if change.is_none_or(|c| c.node) {
                let mut spec = NodeSpec {
                    name: n.name.clone(),
                    addresses: vec![
                        ("InternalIP".into(), n.ip.clone()),
                        ("Hostname".into(), n.name.clone()),
                    ],
                    labels: Vec::new(),
                    taints: Vec::new(),
                };
                label_node(&mut spec, group, &n.instance_id);
                let ready = change
                    .and_then(|c| c.ready.clone())
                    .unwrap_or_else(|| "True".into());
                let minutes = change.map_or(60, |c| c.for_minutes);
                let mut obj = crate::kube_api::fixtures::Node::from_spec(&spec).json();
                let since = lifecycle::values::time::rfc3339(
                    std::time::SystemTime::now() - std::time::Duration::from_secs(minutes * 60),
                );
                obj["status"]["conditions"] = json!([{
                    "type": "Ready", "status": ready,
                    "reason": if ready == "True" { "KubeletReady" } else { "NodeStatusUnknown" },
                    "message": "", "lastHeartbeatTime": since, "lastTransitionTime": since,
                }]);
                obj["spec"]["providerID"] =
                    json!(format!("aws:///{}a/{}", sim.region, n.instance_id));
                sim.api.apply_json(obj)?;
            }
            match change.and_then(|c| c.instance.as_deref()) {
                Some("absent") => removed.push(n.instance_id.clone()),
                Some(st) => status.push((
                    n.instance_id.clone(),
                    st.to_string(),
                    change.and_then(|c| c.message.clone()).unwrap_or_default(),
                )),
                None => {}
            }
        }
        if !status.is_empty() || !removed.is_empty() {
            let st: Vec<(&str, &str, &str)> = status
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                .collect();
            let rm: Vec<&str> = removed.iter().map(String::as_str).collect();
            sim.moto.set_instances(&st, &rm).await?;
        }
        let mut namespaces: Vec<&str> = s.pods.iter().map(|p| p.namespace.as_str()).collect();
        namespaces.extend(s.budgets.iter().map(|b| b.namespace.as_str()));
        namespaces.sort_unstable();
        namespaces.dedup();
        for ns in namespaces {
            sim.api.apply_json(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        for p in &s.pods {
            let node = sim.node(&p.group, p.index)?;
            let mut pod = Pod::test(&p.namespace, &p.name).on_node(&node.name);
            for (k, v) in &p.labels {
                pod = pod.with_label(k, v);
            }
            if let Some(owner) = &p.owner {
                let (kind, name) = owner.split_once('/').context("owner is Kind/name")?;
                let api_version = match kind {
                    "Job" => "batch/v1",
                    _ => "apps/v1",
                };
                pod = pod.owned_by(api_version, kind, name);
            }
            sim.api.apply_json(pod.running_ready().json())?;
        }
        for b in &s.budgets {
            let (k, v) = b
                .selector
                .iter()
                .next()
                .context("a budget needs a selector")?;
            let mut pdb = PodDisruptionBudget::test(&b.namespace, &b.name, k, v);
            if let Some(m) = b.min_available {
                pdb = pdb.min_available(m);
            }
            if let Some(m) = b.max_unavailable {
                pdb = pdb.max_unavailable(m);
            }
            let mut obj: Value = pdb.json();
            obj["spec"]["selector"]["matchLabels"] = json!(b.selector);
            sim.api.apply_json(obj)?;
        }
        Ok(sim)
    }

    /// The instance at `index` of `group`.
    pub fn node(&self, group: &str, index: usize) -> Result<&SimNode> {
        self.nodes
            .iter()
            .find(|n| n.group == group && n.index == index)
            .with_context(|| format!("no instance {group}[{index}]"))
    }

    /// The kubeconfig to use.
    pub fn kubeconfig(&self) -> &Path {
        self.api.admin_kubeconfig_path()
    }

    /// The environment that points `hpk8s` (and the AWS SDK) at this
    /// cluster, with static test credentials.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KUBECONFIG".into(), self.kubeconfig().display().to_string()),
            ("AWS_ENDPOINT_URL".into(), self.moto.endpoint()),
            ("AWS_REGION".into(), self.region.clone()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("HPK8S_CONFIG".into(), "/dev/null".into()),
            ("HPK8S_CLUSTER".into(), self.seeded.cluster_arn.clone()),
        ]
    }

    /// Writes [`Self::env`] as a shell file to source.
    pub fn write_env(&self) -> Result<PathBuf> {
        let path = self.dir.path().join("env.sh");
        let text: String = self
            .env()
            .iter()
            .map(|(k, v)| format!("export {k}='{v}'\n"))
            .collect();
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
