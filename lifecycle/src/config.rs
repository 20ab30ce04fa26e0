//! `/etc/hpk8s/config.toml`: every key, its default and why it exists.
//!
//! Unknown keys are rejected with the file, line and key named, because a
//! misspelled key silently ignored is a node configured wrongly at 3 a.m.
//! `hpk8s config show` prints the effective configuration with secrets
//! (credentials in URLs) redacted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::class::classify;
use crate::values::cidr::Ipv4Cidr;
use crate::values::duration::TokenTtl;
use crate::values::url::redact_url;
use crate::values::version::KubeVersion;

/// kubeadm's default Service network.
pub const DEFAULT_SERVICE_SUBNET: Ipv4Cidr =
    Ipv4Cidr::canonical(std::net::Ipv4Addr::new(10, 96, 0, 0), 12);

/// The most read from a config file.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Default config file location (a host path, read under `--root`).
pub const DEFAULT_PATH: &str = "/etc/hpk8s/config.toml";

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly named config file does not exist or cannot be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("config {path} line {line}: {message}")]
    Syntax {
        /// File path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// Parser message.
        message: String,
    },
    /// A key hpk8s does not know (usually a typo).
    #[error(
        "config {path} line {line}: unknown key `{key}`{section} ({hint}); see `hpk8s config show` for every key"
    )]
    UnknownKey {
        /// File path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: String,
        /// ` in [section]` or empty.
        section: String,
        /// The keys allowed there.
        hint: String,
    },
    /// A key has a value of the wrong type or outside its range.
    #[error("config {path} line {line}: invalid value for `{key}`: {message}")]
    Invalid {
        /// File path.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// Dotted key.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

classify!(ConfigError {
    Read { source, .. } => Config "config_unreadable" refine Some(crate::error::class::ExitClass::of_io(source, crate::error::class::ExitClass::Config));
    Syntax { .. } => Config "config_syntax";
    UnknownKey { .. } => Config "config_unknown_key";
    Invalid { .. } => Config "config_invalid_value";
});

/// The whole configuration. Every field has a default, so an empty file
/// (or none) is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Who this node is and what cluster it belongs to.
    pub identity: IdentityConfig,
    /// Overrides for this node.
    pub node: NodeConfig,
    /// Kubernetes version and images.
    pub kubernetes: KubernetesConfig,
    /// How kubelet/kubeadm/kubectl are installed.
    pub packages: PackagesConfig,
    /// Kernel modules, sysctls and swap.
    pub networking: NetworkingConfig,
    /// Local NVMe instance store.
    pub instance_store: InstanceStoreConfig,
    /// containerd.
    pub containerd: ContainerdConfig,
    /// The cluster kubeadm forms: networks, join tokens, taints.
    pub cluster: ClusterConfig,
    /// Where the controller publishes the join ticket and workers find it.
    pub rendezvous: RendezvousConfig,
    /// Cluster addons: flannel, device plugins, extra manifests.
    pub addons: AddonsConfig,
    /// Per-group settings by group name (HyperPod instance groups, static
    /// groups, EC2 groups alike): labels, taints, elastic sizes.
    pub groups: BTreeMap<String, GroupConfig>,
    /// GPU health: the NVML probe, its classification and the node agent.
    pub gpu_health: GpuHealthConfig,
    /// What the controller does about bad GPUs and interruption notices.
    pub remediation: RemediationConfig,
}

/// What the controller does with a node in one fault class, each step
/// including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassAction {
    /// An Event on the Node, nothing else.
    Report,
    /// A `PreferNoSchedule` taint: new pods avoid the node when they can.
    PreferAvoid,
    /// A `NoSchedule` taint and a cordon.
    Cordon,
    /// Cordon, then evict every pod (budgets honoured).
    Drain,
    /// Drain, then reboot the instance.
    Reboot,
    /// Drain, then replace the instance.
    Replace,
}

impl ClassAction {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassAction::Report => "report",
            ClassAction::PreferAvoid => "prefer-avoid",
            ClassAction::Cordon => "cordon",
            ClassAction::Drain => "drain",
            ClassAction::Reboot => "reboot",
            ClassAction::Replace => "replace",
        }
    }
}

/// What the controller does on an interruption notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeAction {
    /// An Event only.
    Report,
    /// Taint and cordon.
    Cordon,
    /// Taint, cordon and drain before the notice's time.
    Drain,
}

/// How HyperPod nodes are rebooted or replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryRoute {
    /// The SageMaker API; Slurm only when the API is not available for
    /// the cluster (unsupported, nothing accepted).
    #[default]
    Auto,
    /// `BatchRebootClusterNodes` / `BatchReplaceClusterNodes`.
    Api,
    /// `scontrol update node=<name> state=fail reason=Action:Reboot|Action:Replace`.
    Slurm,
}

/// `[remediation]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemediationConfig {
    /// Whether the controller's agent acts on the GPU and interruption
    /// conditions at all (`false`: nodes only report). Default `true`.
    pub enabled: bool,
    /// Action for `GPUDegraded`. Default `prefer-avoid`.
    pub degraded: ClassAction,
    /// Action for `GPUNeedsReboot`. Default `drain`: the reboot itself
    /// only when a person sets `reboot`.
    pub needs_reboot: ClassAction,
    /// Action for `GPUNeedsReplacement`. Default `drain`: the replacement
    /// only when a person sets `replace`.
    pub needs_replacement: ClassAction,
    /// HyperPod: `auto`, `api` or `slurm`. Default `auto`.
    pub route: RecoveryRoute,
    /// At most this share of the cluster's nodes (at least one) held out of
    /// service by hpk8s at once, percent. Default 5.
    pub max_unavailable_percent: u32,
    /// At most this many nodes taken out of service (or rebooted or
    /// replaced) per hour. Default 10.
    pub max_actions_per_hour: u32,
    /// When more than this share of nodes report a fault within
    /// `breaker_window_secs`, all new actions stop until `hpk8s remediation
    /// resume`, percent. Default 10.
    pub breaker_percent: u32,
    /// The breaker's window, seconds. Default 600.
    pub breaker_window_secs: u64,
    /// How long a node's conditions must stay healthy (and the node Ready)
    /// before hpk8s removes what it set, seconds. Default 300.
    pub recovery_after_secs: u64,
    /// Drain deadline, seconds: at the deadline the drain stops, the node
    /// stays cordoned and every pod still there is named with its budget.
    /// Default 900.
    pub drain_timeout_secs: u64,
    /// Evictions in flight per drain. Default 8.
    pub drain_concurrency: u32,
    /// Evict pods with `emptyDir` volumes (their data is lost). Default `true`.
    pub evict_empty_dir: bool,
    /// Evict pods no controller owns (they are not recreated). Default `false`.
    pub evict_unmanaged: bool,
    /// Delete pods instead of evicting them, bypassing PodDisruptionBudgets.
    /// Default `false`.
    pub ignore_budgets: bool,
    /// Maintain HyperPod's `sagemaker.amazonaws.com/node-health-status`
    /// label (`Schedulable`, `Unschedulable`, `UnschedulablePendingReboot`,
    /// `UnschedulablePendingReplacement`). Default `false`.
    pub health_label: bool,
    /// Action on a spot interruption notice (the drain's deadline is the
    /// notice time less `interruption_margin_secs`). Default `drain`.
    pub spot_interruption: NoticeAction,
    /// Action on a rebalance recommendation. Default `cordon`.
    pub rebalance_recommendation: NoticeAction,
    /// Action on scheduled maintenance (drained before it starts). Default `drain`.
    pub scheduled_maintenance: NoticeAction,
    /// Seconds before a notice's time by which the drain gives up. Default 15.
    pub interruption_margin_secs: u64,
    /// Replacements requested by hpk8s are expected to be Ready within this
    /// many seconds; the published join ticket stays valid at least as
    /// long. Default 5400.
    pub replace_deadline_secs: u64,
    /// Where the controller serves its remediation metrics (loopback).
    /// Default `127.0.0.1:9403`.
    pub metrics_address: std::net::SocketAddr,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            degraded: ClassAction::PreferAvoid,
            needs_reboot: ClassAction::Drain,
            needs_replacement: ClassAction::Drain,
            route: RecoveryRoute::Auto,
            max_unavailable_percent: 5,
            max_actions_per_hour: 10,
            breaker_percent: 10,
            breaker_window_secs: 600,
            recovery_after_secs: 300,
            drain_timeout_secs: 900,
            drain_concurrency: 8,
            evict_empty_dir: true,
            evict_unmanaged: false,
            ignore_budgets: false,
            health_label: false,
            spot_interruption: NoticeAction::Drain,
            rebalance_recommendation: NoticeAction::Cordon,
            scheduled_maintenance: NoticeAction::Drain,
            interruption_margin_secs: 15,
            replace_deadline_secs: 5400,
            metrics_address: std::net::SocketAddr::from(([127, 0, 0, 1], 9403)),
        }
    }
}

/// What the pre-join gate does with a GPU that needs a reboot or a
/// replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    /// Register with a `NoSchedule` taint naming the fault.
    #[default]
    Gate,
    /// Log and plan a warning, register as usual.
    Warn,
    /// Do not probe before joining.
    Off,
}

/// GPUs and EFA adapters of an instance type (`[gpu_health.expected]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAccelerators {
    /// NVIDIA GPUs.
    pub gpus: u32,
    /// EFA adapters.
    #[serde(default)]
    pub efa: u32,
}

/// `[gpu_health]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuHealthConfig {
    /// The NVIDIA management library. Default: unset, meaning the dynamic
    /// loader's `libnvidia-ml.so.1` (`LD_LIBRARY_PATH` applies).
    pub library_path: Option<PathBuf>,
    /// Seconds between full probes in the node agent (and right after an
    /// XID or ECC event). Default 30.
    pub probe_interval_secs: u64,
    /// A probe taking longer than this many seconds is a `probe-failed`
    /// (a hung driver call). Default 10.
    pub probe_timeout_secs: u64,
    /// The pre-join gate: `gate`, `warn` or `off`. Default `gate`.
    pub gate: GateMode,
    /// XIDs that are application faults: recorded, escalated to `degraded`
    /// only by rate. Default NVIDIA's catalog (13, 31, 43, 45, 63, 68, 92,
    /// 94, 121, 137, 157, 160, 161).
    pub xid_informational: Vec<u64>,
    /// XIDs that need a GPU reset or reboot. Default 46, 48, 62, 64, 74,
    /// 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158.
    pub xid_reboot: Vec<u64>,
    /// XIDs that need the instance replaced. Default 54, 79, 151.
    pub xid_replace: Vec<u64>,
    /// XIDs that degrade the node (NVLink5 errors whose action needs a
    /// sub-code NVML does not give). Default 144–150.
    pub xid_degraded: Vec<u64>,
    /// Informational XIDs (and XIDs in no list) on one GPU within
    /// `xid_rate_window_secs` that make it `degraded`. Default 20.
    pub xid_rate_limit: u32,
    /// The window of `xid_rate_limit`, seconds. Default 600.
    pub xid_rate_window_secs: u64,
    /// Retired pages at which a GPU needs replacing (DCGM's limit). Default 63.
    pub retired_pages_limit: u64,
    /// PCIe replays per minute that make a GPU `degraded`. Default 8.
    pub pcie_replays_per_minute: u64,
    /// Seconds a hardware slowdown (thermal, power brake) must last to make
    /// a GPU `degraded`. Default 60.
    pub slowdown_sustained_secs: u64,
    /// Where the node agent serves Prometheus metrics (loopback). Default
    /// `127.0.0.1:9402`; unset with `metrics = false`.
    pub metrics_address: std::net::SocketAddr,
    /// Serve the metrics at all. Default `true`.
    pub metrics: bool,
    /// Seconds between polls of IMDS for spot interruptions, rebalance
    /// recommendations and scheduled maintenance (detected EC2 only; 0
    /// turns polling off). Default 2.
    pub interruption_poll_secs: u64,
    /// GPUs and EFA adapters by instance type, added to (or overriding)
    /// the built-in table. Default none.
    pub expected: BTreeMap<String, ExpectedAccelerators>,
}

impl Default for GpuHealthConfig {
    fn default() -> Self {
        Self {
            library_path: None,
            probe_interval_secs: 30,
            probe_timeout_secs: 10,
            gate: GateMode::Gate,
            xid_informational: vec![13, 31, 43, 45, 63, 68, 92, 94, 121, 137, 157, 160, 161],
            xid_reboot: vec![
                46, 48, 62, 64, 74, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158,
            ],
            xid_replace: vec![54, 79, 151],
            xid_degraded: vec![144, 145, 146, 147, 148, 149, 150],
            xid_rate_limit: 20,
            xid_rate_window_secs: 600,
            retired_pages_limit: 63,
            pcie_replays_per_minute: 8,
            slowdown_sustained_secs: 60,
            metrics_address: std::net::SocketAddr::from(([127, 0, 0, 1], 9402)),
            metrics: true,
            interruption_poll_secs: 2,
            expected: BTreeMap::new(),
        }
    }
}

/// `[groups.<name>]`: what every node of one group gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// Labels of the group's nodes. Those NodeRestriction lets a kubelet set
    /// are registration labels; the others (under `kubernetes.io`/`k8s.io`)
    /// are applied by the controller. Default none.
    pub labels: BTreeMap<String, String>,
    /// Taints at registration, `key[=value]:Effect` (Effect `NoSchedule`,
    /// `PreferNoSchedule` or `NoExecute`). The built-in device plugins
    /// tolerate them. Default none.
    pub taints: Vec<String>,
    /// Elastic groups (`identity.source = "ec2"`): Ready nodes of this
    /// group the controller's bootstrap waits for. Default 0.
    pub min_nodes: u32,
    /// Elastic groups: the most nodes it scales to, counted when the pod
    /// network is sized. Default: `min_nodes`.
    pub max_nodes: Option<u32>,
    /// Elastic groups: the controller's agent deletes a Node of this group
    /// NotReady for this long (an instance gone without a clean shutdown),
    /// a few at a time. Default: unset, never.
    pub remove_not_ready_after_secs: Option<u64>,
}

/// Where the cluster topology comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// Static node list if configured, else HyperPod's `resource_config.json`
    /// if present, else a single-node local cluster.
    #[default]
    Auto,
    /// SageMaker HyperPod files only (error when absent).
    Hyperpod,
    /// The `[[identity.nodes]]` list only.
    Static,
    /// A single-node cluster made of this machine.
    Local,
    /// Self-managed EC2 groups (autoscaling, spot): this node's facts from
    /// IMDSv2, its role and group from `[node]`, no list of other nodes.
    Ec2,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Topology source. Default `auto`.
    pub source: IdentitySource,
    /// HyperPod `resource_config.json`. Default `/opt/ml/config/resource_config.json`;
    /// the environment variable `SAGEMAKER_RESOURCE_CONFIG_PATH` wins over this.
    pub resource_config: PathBuf,
    /// HyperPod `provisioning_parameters.json` (used when present; relative
    /// paths are taken from the current directory, as HyperPod runs lifecycle
    /// scripts from their own folder). Default `provisioning_parameters.json`.
    pub provisioning_parameters: PathBuf,
    /// Instance groups whose nodes are controllers. Default: the
    /// `controller_group` of `provisioning_parameters.json`.
    pub controller_groups: Vec<String>,
    /// Instance groups whose nodes are login nodes. Default: its `login_group`.
    pub login_groups: Vec<String>,
    /// Whether login nodes join the cluster as workers. Default `false`.
    pub login_nodes_join: bool,
    /// IMDS base URL. Default: unset, meaning `http://169.254.169.254` and
    /// only when the machine identifies itself as EC2 (DMI/hypervisor UUID).
    pub imds_endpoint: Option<String>,
    /// Per-request IMDS time-out in milliseconds. Default 1000.
    pub imds_timeout_ms: u64,
    /// Cluster name for `static` and `local` topologies. Default: `local`.
    pub cluster_name: Option<String>,
    /// `source = "ec2"`: the controllers' addresses (workers accept join
    /// tickets naming them; the controller waits for them). Default none:
    /// `cluster.control_plane_endpoint` must then name the API server.
    pub controllers: Vec<IpAddr>,
    /// Static topology (self-managed EC2, Vagrant): one entry per node.
    pub nodes: Vec<StaticNode>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            source: IdentitySource::Auto,
            resource_config: PathBuf::from("/opt/ml/config/resource_config.json"),
            provisioning_parameters: PathBuf::from("provisioning_parameters.json"),
            controller_groups: Vec::new(),
            login_groups: Vec::new(),
            login_nodes_join: false,
            imds_endpoint: None,
            imds_timeout_ms: 1000,
            cluster_name: None,
            controllers: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

/// `[[identity.nodes]]`: one node of a static topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNode {
    /// Node name (host name).
    pub name: String,
    /// The node's address on the cluster network.
    pub address: IpAddr,
    /// `controller`, `worker` or `login`.
    pub role: String,
    /// Group name (used for labels). Default: the role.
    #[serde(default)]
    pub group: Option<String>,
    /// Instance type, if known (e.g. `p4d.24xlarge`).
    #[serde(default)]
    pub instance_type: Option<String>,
}

/// `[node]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Kubernetes node name. Default: the host name.
    pub name: Option<String>,
    /// This node's address, when automatic matching of interface addresses
    /// against the inventory is ambiguous (several inventory addresses here).
    pub address: Option<IpAddr>,
    /// `identity.source = "ec2"`: this node's role (`controller`, `worker`
    /// or `login`). Required there; other sources take it from the inventory.
    pub role: Option<String>,
    /// `identity.source = "ec2"`: this node's group (a key of `[groups]`).
    /// Required there.
    pub group: Option<String>,
}

/// `[kubernetes]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Kubernetes version `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
    /// Default `1.34.1`.
    pub version: String,
    /// Registry for Kubernetes images (sandbox/pause). Default `registry.k8s.io`.
    pub image_repository: String,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            version: "1.34.1".into(),
            image_repository: "registry.k8s.io".into(),
        }
    }
}

impl KubernetesConfig {
    /// `(major, minor, patch)` of the configured version.
    pub fn semver(&self) -> Option<(u32, u32, u32)> {
        self.kube_version().map(|v| (v.major, v.minor, v.patch))
    }

    /// The configured version.
    pub fn kube_version(&self) -> Option<KubeVersion> {
        KubeVersion::parse(&self.version)
    }
}

/// How Kubernetes packages are installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageSource {
    /// The upstream apt repository for the configured minor (Debian/Ubuntu).
    #[default]
    Apt,
    /// Binaries from `mirror_url`, laid out like `dl.k8s.io`, with `.sha256` files.
    Mirror,
    /// Leave packages alone (pre-baked images).
    None,
}

/// `[packages]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackagesConfig {
    /// `apt`, `mirror` or `none`. Default `apt`.
    pub source: PackageSource,
    /// apt repository; `{minor}` is replaced by e.g. `1.34`.
    /// Default `https://pkgs.k8s.io/core:/stable:/v{minor}/deb/`.
    pub apt_repository: String,
    /// Mirror base URL (`https://…`, `http://…` or `file://…`) serving
    /// `v{version}/bin/linux/{arch}/{binary}` and `{binary}.sha256`.
    pub mirror_url: Option<String>,
    /// Directory binaries from the mirror are installed into. Default `/usr/bin`.
    pub install_dir: PathBuf,
    /// Accept an `http://` mirror (its downloads can be tampered with on
    /// the way; only the checksum files it serves itself vouch for them).
    /// Default `false`: only `https://` and `file://`.
    pub allow_insecure_mirror: bool,
    /// Pinned SHA-256 digests by file name (`kubelet = "…"`,
    /// `"containerd-1.7.29-linux-amd64.tar.gz" = "…"`), checked instead of
    /// the mirror's own checksum files. Default none.
    pub sha256: BTreeMap<String, String>,
    /// Where release archives not on `dl.k8s.io` come from (containerd,
    /// runc, the CNI plugins, crictl), laid out like GitHub releases:
    /// `<url>/<owner>/<repo>/releases/download/<tag>/<asset>`. Used by the
    /// `mirror` source (and `containerd.source = "mirror"`). Default: with
    /// `source = "mirror"`, `mirror_url` (one tree holds both layouts);
    /// otherwise `https://github.com`.
    pub release_mirror_url: Option<String>,
    /// CNI reference plugins (`bridge`, `portmap`, … into `/opt/cni/bin`,
    /// where flannel's config delegates) for the `mirror` source; the `apt`
    /// source gets them with kubelet (`kubernetes-cni`). Default `1.8.0`.
    pub cni_plugins_version: String,
    /// crictl for the `mirror` source (`cri-tools` with the `apt` source).
    /// Default `1.34.0`.
    pub crictl_version: String,
}

/// The path of `ecr-credential-provider` under a mirror laid out like
/// `artifacts.k8s.io/binaries`.
pub const ECR_CREDENTIAL_PROVIDER_PATH: &str =
    "cloud-provider-aws/v1.34.0/linux/{arch}/ecr-credential-provider-linux-{arch}";

impl Config {
    /// `addons.ecr_credential_provider_url` or its default.
    pub fn ecr_credential_provider_url(&self) -> String {
        match (
            &self.addons.ecr_credential_provider_url,
            self.packages.source,
            &self.packages.mirror_url,
        ) {
            (Some(url), _, _) => url.clone(),
            (None, PackageSource::Mirror, Some(mirror)) => format!(
                "{}/{ECR_CREDENTIAL_PROVIDER_PATH}",
                mirror.trim_end_matches('/')
            ),
            _ => format!("https://artifacts.k8s.io/binaries/{ECR_CREDENTIAL_PROVIDER_PATH}"),
        }
    }
}

impl PackagesConfig {
    /// The base URL of release archives (see `release_mirror_url`).
    pub fn release_mirror(&self) -> &str {
        match (&self.release_mirror_url, self.source, &self.mirror_url) {
            (Some(url), _, _) => url,
            (None, PackageSource::Mirror, Some(url)) => url,
            _ => "https://github.com",
        }
    }
}

impl Default for PackagesConfig {
    fn default() -> Self {
        Self {
            source: PackageSource::Apt,
            apt_repository: "https://pkgs.k8s.io/core:/stable:/v{minor}/deb/".into(),
            mirror_url: None,
            install_dir: PathBuf::from("/usr/bin"),
            allow_insecure_mirror: false,
            sha256: BTreeMap::new(),
            release_mirror_url: None,
            cni_plugins_version: "1.8.0".into(),
            crictl_version: "1.34.0".into(),
        }
    }
}

/// `[networking]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkingConfig {
    /// Kernel modules to load now and at boot. Default `["overlay", "br_netfilter"]`.
    pub modules: Vec<String>,
    /// Sysctls to set now and at boot. Default: bridge-nf-call-iptables,
    /// bridge-nf-call-ip6tables and ip_forward = 1.
    pub sysctls: BTreeMap<String, String>,
    /// Turn swap off (and keep it off at boot). Default `true`.
    pub disable_swap: bool,
}

impl Default for NetworkingConfig {
    fn default() -> Self {
        Self {
            modules: vec!["overlay".into(), "br_netfilter".into()],
            sysctls: [
                ("net.bridge.bridge-nf-call-ip6tables", "1"),
                ("net.bridge.bridge-nf-call-iptables", "1"),
                ("net.ipv4.ip_forward", "1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            disable_swap: true,
        }
    }
}

/// `[instance_store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceStoreConfig {
    /// Use local NVMe at all. Default `true`.
    pub enabled: bool,
    /// Mount points that already hold the instance store (HyperPod DLAMI).
    /// Used when they are real mount points. Default `["/opt/dlami/nvme"]`.
    pub existing_mounts: Vec<PathBuf>,
    /// Where hpk8s mounts the disks it assembles itself. Default `/mnt/k8s-disks`.
    pub mount_point: PathBuf,
    /// RAID0 array name, fixed so a reboot reassembles the same array. Default `hpk8s-nvme`.
    pub raid_name: String,
    /// Move `/var/lib/kubelet` onto the instance store (pod ephemeral storage). Default `true`.
    pub move_kubelet: bool,
    /// Move `/var/log/pods` too. Default `false`.
    pub move_pod_logs: bool,
}

impl Default for InstanceStoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            existing_mounts: vec![PathBuf::from("/opt/dlami/nvme")],
            mount_point: PathBuf::from("/mnt/k8s-disks"),
            raid_name: "hpk8s-nvme".into(),
            move_kubelet: true,
            move_pod_logs: false,
        }
    }
}

/// `[containerd]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdConfig {
    /// containerd's config file. Default `/etc/containerd/config.toml`.
    pub config_path: PathBuf,
    /// containerd's gRPC socket. Default `/run/containerd/containerd.sock`.
    pub socket: PathBuf,
    /// NVIDIA container runtime binary; the runtime is configured (and made
    /// the default) only when it exists and NVIDIA PCI devices are present.
    /// Default `/usr/bin/nvidia-container-runtime`.
    pub nvidia_runtime: PathBuf,
    /// Put containerd's data root on the instance store when there is one. Default `true`.
    pub data_on_instance_store: bool,
    /// How long to wait for containerd to answer after a restart, seconds. Default 60.
    pub ready_timeout_secs: u64,
    /// Where containerd comes from when it is not installed: `auto` (the
    /// way `packages.source` says: distro packages `containerd` and `runc`
    /// for `apt`, the release archives for `mirror`, nothing for `none`),
    /// `apt`, `mirror` or `none`. An installed containerd is never
    /// replaced. Default `auto`.
    pub source: ContainerdSource,
    /// containerd release installed by the `mirror` source. Default `1.7.29`.
    pub version: String,
    /// runc release installed with it. Default `1.3.3`.
    pub runc_version: String,
}

/// Where containerd comes from when it is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerdSource {
    /// As `packages.source`.
    #[default]
    Auto,
    /// The distribution's `containerd` and `runc` packages.
    Apt,
    /// containerd's and runc's release archives from `packages.release_mirror_url`.
    Mirror,
    /// Never installed by hpk8s.
    None,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            config_path: PathBuf::from("/etc/containerd/config.toml"),
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            nvidia_runtime: PathBuf::from("/usr/bin/nvidia-container-runtime"),
            data_on_instance_store: true,
            ready_timeout_secs: 60,
            source: ContainerdSource::Auto,
            version: "1.7.29".into(),
            runc_version: "1.3.3".into(),
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Pod network (`podSubnet`, flannel's `Network`). Default: unset,
    /// meaning sized from the expected nodes plus headroom around
    /// 10.244.0.0 (/16 up to 256 nodes, wider beyond).
    pub pod_subnet: Option<Ipv4Cidr>,
    /// Service network. Default `10.96.0.0/12`.
    pub service_subnet: Ipv4Cidr,
    /// Prefix length of each node's slice of the pod network
    /// (kube-controller-manager `node-cidr-mask-size`). Default 24.
    pub node_cidr_mask_size: u8,
    /// Extra nodes the pod network must hold beyond the inventory's, in
    /// percent (at least 4 nodes), for scale-up and replacements. Default 25.
    pub node_headroom_percent: u32,
    /// Lifetime of bootstrap (join) tokens, e.g. `30m`, `4h`, `1h30m`. Default `4h`.
    pub token_ttl: TokenTtl,
    /// Taint GPU workers `nvidia.com/gpu=true:NoSchedule` at registration. Default `false`.
    pub gpu_taint: bool,
    /// API server endpoint `host[:port]` for every node (a load balancer or
    /// DNS name). Default: unset, meaning the controller's address, port 6443.
    pub control_plane_endpoint: Option<String>,
    /// How long the controller waits for every expected node to be Ready,
    /// seconds. Default: unset, meaning 10 minutes plus 1 second per
    /// expected node.
    pub nodes_ready_timeout_secs: Option<u64>,
    /// Longest time one Kubernetes API request may take, seconds (an API
    /// server that accepts connections and never answers becomes an error
    /// or a retry, never a hang). Default 30.
    pub api_timeout_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            pod_subnet: None,
            service_subnet: DEFAULT_SERVICE_SUBNET,
            node_cidr_mask_size: 24,
            node_headroom_percent: 25,
            token_ttl: TokenTtl::default(),
            gpu_taint: false,
            control_plane_endpoint: None,
            nodes_ready_timeout_secs: None,
            api_timeout_secs: 30,
        }
    }
}

/// Where the join ticket is exchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RendezvousKind {
    /// An AWS Secrets Manager secret.
    #[default]
    SecretsManager,
    /// A file in a directory every node shares (NFS/FSx, Vagrant synced folder).
    Directory,
}

/// `[rendezvous]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RendezvousConfig {
    /// `secrets-manager` or `directory`. Default `secrets-manager`.
    pub kind: RendezvousKind,
    /// Secret name. Default: `hyperpod-k8s-<cluster id>`.
    pub secret_name: Option<String>,
    /// Tags put on the secret when hpk8s creates it. Default none.
    pub tags: BTreeMap<String, String>,
    /// KMS key (id, ARN or alias) encrypting the secret. Default: the
    /// account's `aws/secretsmanager` key.
    pub kms_key_id: Option<String>,
    /// Shared directory holding `join-ticket.json` (`kind = "directory"`).
    pub directory: Option<PathBuf>,
    /// The uid that must own the shared directory and the ticket in it;
    /// anything owned by another user, writable by group or others, a
    /// symlink, FIFO or device is refused (another user of the file system
    /// could plant a ticket naming their own API server). Default 0 (root).
    pub directory_owner_uid: u32,
    /// Longest pause between two polls of a waiting worker, milliseconds.
    /// Default 5000.
    pub poll_cap_ms: u64,
    /// How long a worker waits for a usable ticket, seconds. Default 3600
    /// (a worker may boot an hour before the controller is up).
    pub deadline_secs: u64,
}

impl Default for RendezvousConfig {
    fn default() -> Self {
        Self {
            kind: RendezvousKind::SecretsManager,
            secret_name: None,
            tags: BTreeMap::new(),
            kms_key_id: None,
            directory: None,
            directory_owner_uid: 0,
            poll_cap_ms: 5000,
            deadline_secs: 3600,
        }
    }
}

/// `[addons]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddonsConfig {
    /// Registry (`host[:port][/path]`) that replaces the registry of every
    /// built-in addon image, e.g. `mirror.internal:5000` turns
    /// `ghcr.io/flannel-io/flannel:v0.26.7` into
    /// `mirror.internal:5000/flannel-io/flannel:v0.26.7`. Default: unset
    /// (images are pulled from their own registries).
    pub registry_mirror: Option<String>,
    /// flannel image. Default `ghcr.io/flannel-io/flannel:v0.26.7`.
    pub flannel_image: String,
    /// flannel's CNI plugin image (installs `/opt/cni/bin/flannel`).
    /// Default `ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1`.
    pub flannel_cni_plugin_image: String,
    /// NVIDIA device plugin image. Default `nvcr.io/nvidia/k8s-device-plugin:v0.17.1`.
    pub nvidia_device_plugin_image: String,
    /// EFA device plugin image. Default
    /// `602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-efa-k8s-device-plugin:v0.5.20`.
    pub efa_device_plugin_image: String,
    /// Directory of extra manifests (`*.yaml`, `*.yml`, `*.json`) applied
    /// after the built-in addons, in file-name order. Default `/etc/hpk8s/manifests.d`.
    pub manifest_dir: PathBuf,
    /// How long to wait for addon DaemonSets to become ready, seconds; at
    /// the deadline hpk8s reports which are not ready and goes on (0: read
    /// their status once). Default 300.
    pub rollout_timeout_secs: u64,
    /// How the NVIDIA device plugin hands GPUs to containers: `envvar`
    /// (upstream's default: `NVIDIA_VISIBLE_DEVICES` lists them) or
    /// `volume-mounts` (one mount per GPU; prepare also sets the NVIDIA
    /// container toolkit to ignore `NVIDIA_VISIBLE_DEVICES` in
    /// unprivileged containers). With `envvar`, any pod whose image sets
    /// `NVIDIA_VISIBLE_DEVICES=all` (CUDA base images do) sees every GPU of
    /// its node without requesting one. Default `envvar`.
    pub nvidia_device_list_strategy: DeviceListStrategy,
    /// Whether kubelet gets AWS's `ecr-credential-provider` to pull
    /// private ECR images: `auto` (when a built-in addon image, after
    /// `registry_mirror`, is in ECR: the EFA device plugin's default is in
    /// the EKS account's ECR, for which kubelet has no credentials outside
    /// EKS), `always` or `never`. The node's instance role must allow
    /// `ecr:GetAuthorizationToken` and pulls from that registry. Default `auto`.
    pub ecr_credential_provider: EcrCredentialProvider,
    /// Where the `ecr-credential-provider` binary comes from; `{arch}`
    /// becomes `amd64` or `arm64`. Verified against `<url>.sha256`, or
    /// `[packages.sha256] ecr-credential-provider` when pinned. Default:
    /// `<packages.mirror_url>/cloud-provider-aws/v1.34.0/linux/{arch}/ecr-credential-provider-linux-{arch}`
    /// with `packages.source = "mirror"`, else the same path under
    /// `https://artifacts.k8s.io/binaries`.
    pub ecr_credential_provider_url: Option<String>,
}

/// When kubelet's ECR credential provider is set up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EcrCredentialProvider {
    /// When an addon image is in ECR.
    #[default]
    Auto,
    /// On every joining node.
    Always,
    /// Never (images come from a registry kubelet can pull from).
    Never,
}

/// How the NVIDIA device plugin passes the GPUs it allocates to the
/// NVIDIA container runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceListStrategy {
    /// `NVIDIA_VISIBLE_DEVICES=<ids>`; the toolkit also honours the variable
    /// set by an image.
    #[default]
    Envvar,
    /// Mounts under `/var/run/nvidia-container-devices`; the toolkit ignores
    /// the variable in unprivileged containers.
    VolumeMounts,
}

impl DeviceListStrategy {
    /// The plugin's `DEVICE_LIST_STRATEGY` value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceListStrategy::Envvar => "envvar",
            DeviceListStrategy::VolumeMounts => "volume-mounts",
        }
    }
}

impl Default for AddonsConfig {
    fn default() -> Self {
        Self {
            registry_mirror: None,
            flannel_image: "ghcr.io/flannel-io/flannel:v0.26.7".into(),
            flannel_cni_plugin_image: "ghcr.io/flannel-io/flannel-cni-plugin:v1.6.2-flannel1"
                .into(),
            nvidia_device_plugin_image: "nvcr.io/nvidia/k8s-device-plugin:v0.17.1".into(),
            efa_device_plugin_image:
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-efa-k8s-device-plugin:v0.5.20"
                    .into(),
            manifest_dir: PathBuf::from("/etc/hpk8s/manifests.d"),
            rollout_timeout_secs: 300,
            nvidia_device_list_strategy: DeviceListStrategy::Envvar,
            ecr_credential_provider: EcrCredentialProvider::Auto,
            ecr_credential_provider_url: None,
        }
    }
}

/// A mirror URL: `https://` or `file://`, or `http://` only when allowed.
fn check_mirror_url(url: &str, allow_insecure: bool) -> Result<(), String> {
    if !["http://", "https://", "file://"]
        .iter()
        .any(|p| url.starts_with(p))
    {
        return Err("must start with http://, https:// or file://".into());
    }
    if url.starts_with("http://") && !allow_insecure {
        return Err(format!(
            "`{}` is plain http: anyone on the path could swap the binaries and their checksums; use https://, or set packages.allow_insecure_mirror = true (and pin digests in [packages.sha256])",
            redact_url(url)
        ));
    }
    Ok(())
}

impl Config {
    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let doc: toml_edit::Document<String> = toml_edit::Document::parse(text.to_string())
            .map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
                message: first_line(e.message()),
            })?;
        let cfg: Config = toml_edit::de::from_document(doc.clone()).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            let msg = e.message().to_string();
            match unknown_key(&msg) {
                Some((key, hint)) => ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    line,
                    section: section_at(text, line)
                        .map(|s| format!(" in [{s}]"))
                        .unwrap_or_default(),
                    key,
                    hint,
                },
                None => ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line,
                    key: section_at(text, line).unwrap_or_default(),
                    message: first_line(&msg),
                },
            }
        })?;
        cfg.validate(text, &doc, path)?;
        Ok(cfg)
    }

    /// Loads the config: an explicit `path` must exist; the default path may
    /// be absent (defaults apply).
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(e) => return Err(read_err(e)),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if u64::try_from(text.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "larger than {MAX_CONFIG_BYTES} bytes; is it the right file?"
            ))));
        }
        Config::parse(&text, path)
    }

    fn validate(
        &self,
        text: &str,
        doc: &toml_edit::Document<String>,
        path: &Path,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: key_line(text, doc, key),
            key: key.to_string(),
            message,
        };
        if self.kubernetes.semver().is_none() {
            return Err(invalid(
                "kubernetes.version",
                format!(
                    "`{}` is not MAJOR.MINOR.PATCH (e.g. \"1.34.1\")",
                    self.kubernetes.version
                ),
            ));
        }
        if self.packages.source == PackageSource::Mirror {
            match &self.packages.mirror_url {
                None => {
                    return Err(invalid(
                        "packages.source",
                        "`mirror` needs packages.mirror_url".into(),
                    ));
                }
                Some(u) => check_mirror_url(u, self.packages.allow_insecure_mirror)
                    .map_err(|m| invalid("packages.mirror_url", m))?,
            }
        }
        if let Some(u) = &self.addons.ecr_credential_provider_url {
            check_mirror_url(u, self.packages.allow_insecure_mirror)
                .map_err(|m| invalid("addons.ecr_credential_provider_url", m))?;
        }
        if let Some(u) = &self.packages.release_mirror_url {
            check_mirror_url(u, self.packages.allow_insecure_mirror)
                .map_err(|m| invalid("packages.release_mirror_url", m))?;
        }
        for (key, version) in [
            (
                "packages.cni_plugins_version",
                &self.packages.cni_plugins_version,
            ),
            ("packages.crictl_version", &self.packages.crictl_version),
            ("containerd.version", &self.containerd.version),
            ("containerd.runc_version", &self.containerd.runc_version),
        ] {
            let parts: Vec<&str> = version.split('.').collect();
            if parts.len() < 2
                || parts
                    .iter()
                    .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(invalid(
                    key,
                    format!("`{version}` is not a release number such as 1.7.29 (no leading v)"),
                ));
            }
        }
        for (name, group) in &self.groups {
            let at = |what: &str| format!("groups.{name}.{what}");
            for (key, value) in &group.labels {
                if !crate::values::label::valid_key(key) {
                    return Err(invalid(
                        "groups",
                        format!(
                            "{}: `{key}` is not a label key ([prefix/]name, e.g. `nodegroup-role` or `k8s.amazonaws.com/accelerator`)",
                            at("labels")
                        ),
                    ));
                }
                if !crate::values::label::valid_value(value) {
                    return Err(invalid(
                        "groups",
                        format!(
                            "{}: the value `{value}` of `{key}` is not a label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending alphanumeric)",
                            at("labels")
                        ),
                    ));
                }
            }
            for taint in &group.taints {
                crate::values::taint::Taint::parse(taint)
                    .map_err(|m| invalid("groups", format!("{}: {m}", at("taints"))))?;
            }
            if let Some(max) = group.max_nodes
                && max < group.min_nodes
            {
                return Err(invalid(
                    "groups",
                    format!(
                        "{}: {max} is less than min_nodes = {}",
                        at("max_nodes"),
                        group.min_nodes
                    ),
                ));
            }
            if let Some(secs) = group.remove_not_ready_after_secs
                && !(60..=7 * 24 * 3600).contains(&secs)
            {
                return Err(invalid(
                    "groups",
                    format!(
                        "{}: {secs} is outside 60..=604800 seconds (a minute to a week)",
                        at("remove_not_ready_after_secs")
                    ),
                ));
            }
        }
        if let Some(role) = &self.node.role
            && !["controller", "worker", "login"].contains(&role.as_str())
        {
            return Err(invalid(
                "node.role",
                format!("unknown role `{role}`; use controller, worker or login"),
            ));
        }
        for (name, digest) in &self.packages.sha256 {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "packages.sha256",
                    format!("`{name}` must be 64 hex digits (a SHA-256 digest)"),
                ));
            }
        }
        for (i, n) in self.identity.nodes.iter().enumerate() {
            if !["controller", "worker", "login"].contains(&n.role.as_str()) {
                return Err(invalid(
                    "identity.nodes.role",
                    format!(
                        "node {} (`{}`): unknown role `{}`; use controller, worker or login",
                        i + 1,
                        n.name,
                        n.role
                    ),
                ));
            }
        }
        // Every duration is bounded here, so no deadline computed from one
        // can overflow (`Instant + Duration` panics) and a typo of a few
        // zeros is caught before it means "wait for a year".
        const DAY: u64 = 24 * 3600;
        for (key, value, min, max, unit) in [
            (
                "identity.imds_timeout_ms",
                self.identity.imds_timeout_ms,
                1,
                60_000,
                "ms",
            ),
            (
                "containerd.ready_timeout_secs",
                self.containerd.ready_timeout_secs,
                1,
                DAY,
                "s",
            ),
            (
                "cluster.nodes_ready_timeout_secs",
                self.cluster.nodes_ready_timeout_secs.unwrap_or(1),
                1,
                7 * DAY,
                "s",
            ),
            (
                "cluster.api_timeout_secs",
                self.cluster.api_timeout_secs,
                1,
                600,
                "s",
            ),
            (
                "rendezvous.poll_cap_ms",
                self.rendezvous.poll_cap_ms,
                1,
                3_600_000,
                "ms",
            ),
            (
                "rendezvous.deadline_secs",
                self.rendezvous.deadline_secs,
                1,
                7 * DAY,
                "s",
            ),
            (
                "addons.rollout_timeout_secs",
                self.addons.rollout_timeout_secs,
                0,
                DAY,
                "s",
            ),
            (
                "remediation.max_unavailable_percent",
                u64::from(self.remediation.max_unavailable_percent),
                1,
                100,
                "%",
            ),
            (
                "remediation.max_actions_per_hour",
                u64::from(self.remediation.max_actions_per_hour),
                1,
                100_000,
                "actions",
            ),
            (
                "remediation.breaker_percent",
                u64::from(self.remediation.breaker_percent),
                1,
                100,
                "%",
            ),
            (
                "remediation.breaker_window_secs",
                self.remediation.breaker_window_secs,
                1,
                DAY,
                "s",
            ),
            (
                "remediation.recovery_after_secs",
                self.remediation.recovery_after_secs,
                0,
                DAY,
                "s",
            ),
            (
                "remediation.drain_timeout_secs",
                self.remediation.drain_timeout_secs,
                1,
                DAY,
                "s",
            ),
            (
                "remediation.drain_concurrency",
                u64::from(self.remediation.drain_concurrency),
                1,
                256,
                "evictions",
            ),
            (
                "remediation.interruption_margin_secs",
                self.remediation.interruption_margin_secs,
                0,
                3600,
                "s",
            ),
            (
                "remediation.replace_deadline_secs",
                self.remediation.replace_deadline_secs,
                60,
                7 * DAY,
                "s",
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    key,
                    if value < min {
                        format!("must be at least {min}")
                    } else {
                        format!("{value} {unit} is more than the {max} {unit} hpk8s accepts")
                    },
                ));
            }
        }
        let rv = &self.rendezvous;
        if rv.kind == RendezvousKind::Directory
            && !rv.directory.as_ref().is_some_and(|d| d.is_absolute())
        {
            return Err(invalid(
                "rendezvous.kind",
                "`directory` needs rendezvous.directory set to an absolute path".into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted: every key
    /// that may carry credentials (a URL's `user:password@`).
    pub fn show(&self) -> String {
        let mut shown = self.clone();
        if let Some(u) = &shown.packages.mirror_url {
            shown.packages.mirror_url = Some(redact_url(u));
        }
        shown.packages.apt_repository = redact_url(&shown.packages.apt_repository);
        if let Some(u) = &shown.packages.release_mirror_url {
            shown.packages.release_mirror_url = Some(redact_url(u));
        }
        if let Some(u) = &shown.addons.ecr_credential_provider_url {
            shown.addons.ecr_credential_provider_url = Some(redact_url(u));
        }
        if let Some(u) = &shown.identity.imds_endpoint {
            shown.identity.imds_endpoint = Some(redact_url(u));
        }
        toml_edit::ser::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// The `[section]` header in force at `line`.
fn section_at(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
                .map(|s| s.trim().to_string())
        })
        .last()
}

/// Line of a dotted key (`kubernetes.version`), 0 when not in the file.
fn key_line(text: &str, doc: &toml_edit::Document<String>, dotted: &str) -> usize {
    let mut item: Option<&toml_edit::Item> = None;
    for part in dotted.split('.') {
        item = match item {
            None => doc.get(part),
            Some(i) => i.get(part).or_else(|| {
                i.as_array_of_tables()
                    .and_then(|a| a.iter().find_map(|t| t.get(part)))
            }),
        };
        if item.is_none() {
            return 0;
        }
    }
    item.and_then(|i| i.span())
        .map(|s| line_of(text, s.start))
        .unwrap_or(0)
}

/// serde's "unknown field `x`, expected one of `a`, `b`" → (x, allowed keys).
fn unknown_key(msg: &str) -> Option<(String, String)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let hint = rest
        .trim_start_matches(',')
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    Some((key.to_string(), hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("/etc/hpk8s/config.toml"))
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_line_and_section() {
        let e = parse("[kubernetes]\nversion = \"1.34.1\"\n\n[containerd]\nsocket = \"/x\"\nsystemd_cgroups = true\n").unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, ConfigError::UnknownKey { line: 6, .. }), "{s}");
        assert!(
            s.contains("unknown key `systemd_cgroups` in [containerd]"),
            "{s}"
        );
        assert!(s.contains("/etc/hpk8s/config.toml line 6"), "{s}");
    }

    #[test]
    fn invalid_version_names_line() {
        let e = parse("[kubernetes]\nversion = \"1.34\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("kubernetes.version"), "{e}");
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("[kubernetes]\nversion = \n").unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
    }

    #[test]
    fn durations_are_bounded_when_parsed() {
        for (text, key) in [
            (
                "[rendezvous]\ndeadline_secs = 99999999999\n",
                "rendezvous.deadline_secs",
            ),
            ("[rendezvous]\npoll_cap_ms = 0\n", "rendezvous.poll_cap_ms"),
            (
                "[cluster]\nnodes_ready_timeout_secs = 99999999999\n",
                "cluster.nodes_ready_timeout_secs",
            ),
            (
                "[identity]\nimds_timeout_ms = 600000\n",
                "identity.imds_timeout_ms",
            ),
            (
                "[addons]\nrollout_timeout_secs = 172800\n",
                "addons.rollout_timeout_secs",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { key: k, line: 2, .. } if k == key),
                "{text}: {e}"
            );
        }
        parse("[rendezvous]\ndeadline_secs = 604800\n[addons]\nrollout_timeout_secs = 0\n")
            .unwrap();
    }

    #[test]
    fn a_plain_http_mirror_needs_consent_and_pins_are_digests() {
        let base = "[packages]\nsource = \"mirror\"\nmirror_url = \"http://mirror.internal/k8s\"\n";
        let e = parse(base).unwrap_err();
        assert_eq!(e.kind(), "config_invalid_value", "{e}");
        assert!(e.to_string().contains("allow_insecure_mirror"), "{e}");
        parse(&format!("{base}allow_insecure_mirror = true\n")).unwrap();
        let pinned = parse(&format!(
            "{base}allow_insecure_mirror = true\n[packages.sha256]\nkubelet = \"{}\"\n",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(pinned.packages.sha256["kubelet"], "ab".repeat(32));
        let e = parse(&format!(
            "{base}allow_insecure_mirror = true\n[packages.sha256]\nkubelet = \"abc\"\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("`kubelet` must be 64 hex digits"),
            "{e}"
        );
    }

    #[test]
    fn show_redacts_every_credential_bearing_url() {
        let c = parse("[packages]\napt_repository = \"https://u:s3cr3t@apt.internal/v{minor}/deb/\"\n[identity]\nimds_endpoint = \"http://a:b0nk@127.0.0.1:9\"\n").unwrap();
        let shown = c.show();
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("b0nk"),
            "{shown}"
        );
        assert!(
            shown.contains("https://<redacted>@apt.internal/v{minor}/deb/"),
            "{shown}"
        );
    }

    #[test]
    fn show_redacts_mirror_credentials() {
        let c = parse("[packages]\nsource = \"mirror\"\nmirror_url = \"https://user:hunter2@mirror.internal/k8s\"\n").unwrap();
        let shown = c.show();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>@mirror.internal"), "{shown}");
        // The shown config parses back.
        parse(&shown).unwrap();
    }
}
