//! The kubeadm configuration documents: `InitConfiguration` +
//! `ClusterConfiguration` + `KubeletConfiguration` for the controller's
//! `kubeadm init --config`, `JoinConfiguration` for a worker's
//! `kubeadm join --config`.
//!
//! kubeadm is driven by a config file, never by flags or by parsing its
//! output. The API version follows the installed kubeadm (`v1beta3` up to
//! 1.30, `v1beta4` from 1.31, where `extraArgs` became a list of
//! `{name, value}`). Everything a node may say about itself is set here, at
//! registration: its name and address, the labels NodeRestriction lets a
//! node set on itself, and the optional GPU taint (a node can never taint
//! itself later). The documents carry the bootstrap token, so the rendered
//! bytes are the only place it appears: callers write them with mode 0600,
//! and [`Rendered`]'s `Debug` shows neither token nor bytes.

use crate::prepare::packages::credential_provider;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::Serialize;
use serde::ser::SerializeSeq;

use super::bootstrap_token::{self, BootstrapToken, NODE_BOOTSTRAP_GROUP};
use super::labels;
use super::pod_network::{self, PodNetwork};
use crate::config::Config;
use crate::error::class::classify;
use crate::hardware::Hardware;
use crate::identity::{Lifecycle, NodeIdentity, Role, strip_ml};
use crate::values::version::KubeVersion;

/// The API server's port.
pub const API_SERVER_PORT: u16 = 6443;
/// containerd's CRI endpoint scheme (the socket path comes from `containerd.socket`).
pub const CRI_SCHEME: &str = "unix://";
/// kubelet's cgroup driver; must match containerd's runc `SystemdCgroup = true`.
pub const CGROUP_DRIVER: &str = "systemd";
/// API version of `KubeletConfiguration`.
pub const KUBELET_API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// Oldest kubeadm hpk8s drives (the oldest Kubernetes it installs).
pub const MIN_KUBEADM: (u32, u32) = (1, 24);
/// First kubeadm that speaks `kubeadm.k8s.io/v1beta4`.
pub const FIRST_V1BETA4: (u32, u32) = (1, 31);

/// Every error of the cluster configuration: pod network sizing, bootstrap tokens and the kubeadm documents.
#[derive(Debug, thiserror::Error)]
pub enum ClusterConfigError {
    /// Pod network sizing or overlap.
    #[error(transparent)]
    Network(#[from] pod_network::Error),
    /// A bootstrap token.
    #[error(transparent)]
    Token(#[from] bootstrap_token::Error),
    /// `kubeadm version -o short` printed something that is not a version.
    #[error(
        "cannot read the kubeadm version from `kubeadm version -o short` output `{output}`; expected e.g. v1.34.1 (is kubeadm installed and on PATH?)"
    )]
    KubeadmVersion {
        /// What kubeadm printed (first line, trimmed).
        output: String,
    },
    /// The installed kubeadm is too old for hpk8s.
    #[error(
        "kubeadm {found} is too old; hpk8s drives kubeadm 1.24 and later (set kubernetes.version and re-run `hpk8s bootstrap --phase prepare`)"
    )]
    UnsupportedKubeadm {
        /// The installed version.
        found: String,
    },
    /// The installed kubeadm cannot deploy the configured Kubernetes version.
    #[error(
        "kubeadm {kubeadm} cannot deploy kubernetes.version {kubernetes}: kubeadm must be the same minor version or one newer; install the matching kubeadm (`hpk8s bootstrap --phase prepare`) or fix kubernetes.version"
    )]
    VersionSkew {
        /// The installed kubeadm.
        kubeadm: String,
        /// `kubernetes.version`.
        kubernetes: String,
    },
    /// A label value derived from the inventory is not a valid label value.
    #[error(
        "node label {label}={value:?} (from {source_field}) is not a valid label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit); fix it in the inventory"
    )]
    InvalidLabelValue {
        /// The label name.
        label: String,
        /// The offending value.
        value: String,
        /// Where it came from (`instance group`, `instance type`, …).
        source_field: &'static str,
    },
    /// The node name is not a valid Kubernetes node name.
    #[error(
        "node name {name:?} is not a valid Kubernetes node name (lowercase letters, digits, `-` and `.`, at most 253, starting and ending with a letter or digit); set node.name"
    )]
    InvalidNodeName {
        /// The name.
        name: String,
    },
    /// An API server endpoint is not `host[:port]`.
    #[error(
        "{source_field} {endpoint:?} is not host[:port] (an IP address, [IPv6] or DNS name, port 1-65535); fix it"
    )]
    InvalidEndpoint {
        /// `cluster.control_plane_endpoint` or the join ticket's endpoint.
        source_field: &'static str,
        /// The value.
        endpoint: String,
    },
    /// The CA pins for discovery are missing or malformed.
    #[error(
        "join discovery needs at least one CA pin `sha256:<64 hex digits>` (got {count}, {malformed} malformed); hpk8s never joins without verifying the cluster CA"
    )]
    InvalidCaCertHash {
        /// How many pins were given.
        count: usize,
        /// How many of them are malformed.
        malformed: usize,
    },
    /// Serializing the documents failed (a bug).
    #[error(
        "cannot render the kubeadm {kind}: {message}; this is a bug in hpk8s, please report it"
    )]
    Render {
        /// The document.
        kind: &'static str,
        /// The serializer's message.
        message: String,
    },
    /// Asked for the wrong document for this node's role.
    #[error(
        "cannot render a kubeadm {wanted} for node {node}, whose role is {role:?} (joins: {joins})"
    )]
    RoleMismatch {
        /// The document asked for.
        wanted: &'static str,
        /// The node name.
        node: String,
        /// Its role.
        role: Role,
        /// Whether it joins the cluster.
        joins: bool,
    },
    /// `kubernetes.version` is not `MAJOR.MINOR.PATCH` (the config loader
    /// refuses that already; this guards configs built in code).
    #[error("kubernetes.version {0:?} is not MAJOR.MINOR.PATCH (e.g. \"1.34.1\")")]
    KubernetesVersion(String),
}

classify!(ClusterConfigError {
    Network { 0: e } => via e;
    Token { 0: e } => via e;
    KubeadmVersion { .. } => Precondition "kubeadm_version_unreadable";
    UnsupportedKubeadm { .. } => Precondition "kubeadm_too_old";
    VersionSkew { .. } => Config "kubeadm_version_skew";
    InvalidLabelValue { .. } => Input "label_value_invalid";
    InvalidNodeName { .. } => Config "node_name_invalid";
    InvalidEndpoint { .. } => Config "endpoint_invalid";
    InvalidCaCertHash { .. } => Input "ca_pin_malformed";
    Render { .. } => Internal "kubeadm_render_bug";
    RoleMismatch { .. } => Internal "kubeadm_role_mismatch_bug";
    KubernetesVersion { .. } => Config "kubernetes_version_invalid";
});

type Result<T, E = ClusterConfigError> = std::result::Result<T, E>;

/// The kubeadm config API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `kubeadm.k8s.io/v1beta3` (kubeadm 1.22–1.30): `extraArgs` are maps.
    V1beta3,
    /// `kubeadm.k8s.io/v1beta4` (kubeadm 1.31 and later): `extraArgs` are
    /// lists of `{name, value}`.
    V1beta4,
}

impl ApiVersion {
    /// The `apiVersion` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            ApiVersion::V1beta3 => "kubeadm.k8s.io/v1beta3",
            ApiVersion::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }
}

/// The installed kubeadm's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeadmVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl KubeadmVersion {
    /// Parses `kubeadm version -o short` output (`v1.31.4`, possibly with a
    /// build suffix like `-eks-1a2b3c` and a trailing newline).
    pub fn parse(output: &str) -> Result<KubeadmVersion> {
        let v = KubeVersion::parse_output(output).ok_or_else(|| {
            ClusterConfigError::KubeadmVersion {
                output: output
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(80)
                    .collect(),
            }
        })?;
        Ok(KubeadmVersion {
            major: v.major,
            minor: v.minor,
            patch: v.patch,
        })
    }

    /// The config API version this kubeadm speaks; refuses kubeadm older
    /// than [`MIN_KUBEADM`].
    pub fn api_version(&self) -> Result<ApiVersion> {
        let mm = (self.major, self.minor);
        if mm < MIN_KUBEADM {
            return Err(ClusterConfigError::UnsupportedKubeadm {
                found: self.to_string(),
            });
        }
        Ok(if mm >= FIRST_V1BETA4 {
            ApiVersion::V1beta4
        } else {
            ApiVersion::V1beta3
        })
    }

    /// Refuses a Kubernetes version this kubeadm cannot deploy (kubeadm
    /// handles its own minor and the one before).
    pub fn check_deploys(&self, kubernetes: &str) -> Result<()> {
        let wanted = KubeVersion::parse(kubernetes)
            .ok_or_else(|| ClusterConfigError::KubernetesVersion(kubernetes.to_string()))?;
        if !self.kube().deploys(&wanted) {
            return Err(ClusterConfigError::VersionSkew {
                kubeadm: self.to_string(),
                kubernetes: kubernetes.to_string(),
            });
        }
        Ok(())
    }
}

impl KubeadmVersion {
    /// The version as a plain Kubernetes version.
    pub fn kube(&self) -> KubeVersion {
        KubeVersion {
            major: self.major,
            minor: self.minor,
            patch: self.patch,
        }
    }
}

impl fmt::Display for KubeadmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a worker needs to find and trust the cluster (from the join ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinDiscovery {
    /// The API server, `host[:port]` (port 6443 when left out).
    pub api_server_endpoint: String,
    /// `sha256:<hex>` pins of the cluster CA's public key.
    pub ca_cert_hashes: Vec<String>,
}

/// Rendered kubeadm documents. Holds the bootstrap token: write the bytes
/// to a 0600 file and nowhere else; `Debug` shows only what is inside.
pub struct Rendered {
    api_version: ApiVersion,
    kinds: Vec<&'static str>,
    pod_network: Option<PodNetwork>,
    yaml: String,
}

impl Rendered {
    /// The kubeadm API version used.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
    }

    /// The documents' kinds, in order.
    pub fn kinds(&self) -> &[&'static str] {
        &self.kinds
    }

    /// The pod network the cluster is formed with (controller only).
    pub fn pod_network(&self) -> Option<&PodNetwork> {
        self.pod_network.as_ref()
    }

    /// The YAML documents (contain the token: write them 0600).
    pub fn as_bytes(&self) -> &[u8] {
        self.yaml.as_bytes()
    }

    /// The YAML documents, owned (contain the token: write them 0600).
    pub fn into_bytes(self) -> Vec<u8> {
        self.yaml.into_bytes()
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("api_version", &self.api_version)
            .field("kinds", &self.kinds)
            .field("pod_network", &self.pod_network)
            .field(
                "bytes",
                &format_args!("<{} bytes, redacted>", self.yaml.len()),
            )
            .finish()
    }
}

/// The labels this node sets on itself at registration (kubelet
/// `--node-labels`): only names NodeRestriction allows a node to set. Its
/// group's other labels are the controller's to apply
/// ([`group_labels_for_the_controller`]).
pub fn node_labels(
    identity: &NodeIdentity,
    hardware: &Hardware,
    config: &Config,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut put = |label: &str, value: String, source_field: &'static str| {
        if !valid_label_value(&value) {
            return Err(ClusterConfigError::InvalidLabelValue {
                label: label.to_string(),
                value,
                source_field,
            });
        }
        out.insert(label.to_string(), value);
        Ok(())
    };
    if let Some(t) = &identity.instance_type {
        put(labels::INSTANCE_TYPE, strip_ml(t), "instance type")?;
    }
    put(
        labels::INSTANCE_GROUP,
        identity.group.clone(),
        "instance group",
    )?;
    if let Some(id) = &identity.instance_id {
        put(labels::INSTANCE_ID, id.clone(), "instance id")?;
    }
    if let Some(region) = &identity.region {
        put(labels::REGION, region.clone(), "instance metadata")?;
    }
    if let Some(zone) = &identity.availability_zone {
        put(labels::ZONE, zone.clone(), "instance metadata")?;
    }
    if hardware.nvidia_gpus > 0 {
        put(labels::GPU_PRESENT, "true".into(), "PCI devices")?;
        put(
            labels::GPU_COUNT,
            hardware.nvidia_gpus.to_string(),
            "PCI devices",
        )?;
        if let Some(model) =
            crate::hardware::gpu_model(hardware.gpu_device_id, identity.instance_type.as_deref())
        {
            put(labels::GPU_PRODUCT, model.product.into(), "PCI devices")?;
            put(labels::ACCELERATOR, model.accelerator.into(), "PCI devices")?;
        }
    }
    if hardware.efa_devices > 0 {
        put(labels::EFA_PRESENT, "true".into(), "PCI devices")?;
    }
    if let Some(lifecycle) = identity.lifecycle {
        let v = match lifecycle {
            Lifecycle::Spot => "spot",
            Lifecycle::OnDemand => "on-demand",
        };
        put(labels::LIFECYCLE, v.into(), "instance metadata")?;
    }
    // The group's own labels win over the defaults above.
    if let Some(group) = config.groups.get(&identity.group) {
        for (key, value) in &group.labels {
            if crate::values::label::kubelet_may_set(key) {
                put(key, value.clone(), "groups.<name>.labels")?;
            }
        }
    }
    Ok(out)
}

/// The labels of `group` a kubelet may not set on itself (under
/// `kubernetes.io`/`k8s.io`, e.g. `node-role.kubernetes.io/gpu`): the
/// controller applies them when the node is Ready.
pub fn group_labels_for_the_controller(config: &Config, group: &str) -> BTreeMap<String, String> {
    config
        .groups
        .get(group)
        .map(|g| {
            g.labels
                .iter()
                .filter(|(k, _)| !crate::values::label::kubelet_may_set(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Taints this node registers with: its group's (`[groups.<name>] taints`)
/// and, on GPU workers with `cluster.gpu_taint`, `nvidia.com/gpu=true:NoSchedule`.
pub fn node_taints(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
) -> Vec<crate::values::taint::Taint> {
    use crate::values::taint::{Effect, Taint};
    let mut out: Vec<Taint> = config
        .groups
        .get(&identity.group)
        .map(|g| {
            g.taints
                .iter()
                .filter_map(|t| Taint::parse(t).ok())
                .collect()
        })
        .unwrap_or_default();
    let gpu_worker = identity.role != Role::Controller && hardware.nvidia_gpus > 0;
    if config.cluster.gpu_taint && gpu_worker && !out.iter().any(|t| t.key == labels::GPU_TAINT_KEY)
    {
        out.push(Taint {
            key: labels::GPU_TAINT_KEY.into(),
            value: "true".into(),
            effect: Effect::NoSchedule,
        });
    }
    out
}

/// Renders `kubeadm init --config` documents for the controller:
/// `InitConfiguration` (with `token` as the first bootstrap token),
/// `ClusterConfiguration` and `KubeletConfiguration`.
pub fn render_init(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
    token: &BootstrapToken,
    kubeadm: KubeadmVersion,
) -> Result<Rendered> {
    render_init_tainted(identity, config, hardware, token, kubeadm, &[])
}

/// [`render_init`] with `extra_taints` at registration (the GPU gate's).
pub fn render_init_tainted(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
    token: &BootstrapToken,
    kubeadm: KubeadmVersion,
    extra_taints: &[crate::values::taint::Taint],
) -> Result<Rendered> {
    if identity.role != Role::Controller {
        return Err(role_mismatch("InitConfiguration", identity));
    }
    let api = checked_api_version(kubeadm, config)?;
    let network = pod_network::plan(
        &config.cluster,
        identity.expected_nodes,
        &identity.node_addresses,
    )?;
    let registration = node_registration(identity, config, hardware, api, extra_taints)?;
    let control_plane_endpoint = api_endpoint(identity, config)?;
    let init = InitConfiguration {
        api_version: api.as_str(),
        kind: "InitConfiguration",
        bootstrap_tokens: vec![BootstrapTokenDoc {
            token: TokenValue(token),
            description: super::token_rotation::token_description(&identity.cluster.name),
            ttl: config.cluster.token_ttl.go_duration(),
            usages: ["signing", "authentication"],
            groups: [NODE_BOOTSTRAP_GROUP],
        }],
        local_api_endpoint: ApiEndpoint {
            advertise_address: identity.address.to_string(),
            bind_port: API_SERVER_PORT,
        },
        node_registration: registration,
    };
    let cluster = ClusterConfiguration {
        api_version: api.as_str(),
        kind: "ClusterConfiguration",
        kubernetes_version: format!(
            "v{}",
            config
                .kubernetes
                .version
                .strip_prefix('v')
                .unwrap_or(&config.kubernetes.version)
        ),
        control_plane_endpoint,
        image_repository: config.kubernetes.image_repository.clone(),
        networking: Networking {
            pod_subnet: network.pod_subnet.to_string(),
            service_subnet: network.service_subnet.to_string(),
        },
        controller_manager: ControlPlaneComponent {
            extra_args: ExtraArgs::new(
                api,
                [(
                    "node-cidr-mask-size",
                    network.node_cidr_mask_size.to_string(),
                )],
            ),
        },
    };
    let kubelet = KubeletConfiguration {
        api_version: KUBELET_API_VERSION,
        kind: "KubeletConfiguration",
        cgroup_driver: CGROUP_DRIVER,
        max_pods: network.max_pods_override(),
    };
    let yaml = [
        to_yaml("InitConfiguration", &init)?,
        to_yaml("ClusterConfiguration", &cluster)?,
        to_yaml("KubeletConfiguration", &kubelet)?,
    ]
    .join("---\n");
    Ok(Rendered {
        api_version: api,
        kinds: vec![
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
        ],
        pod_network: Some(network),
        yaml,
    })
}

/// Renders the `kubeadm join --config` document for a worker (or a login
/// node that joins), discovering the cluster through `discovery` with the
/// bootstrap `token`.
pub fn render_join(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
    token: &BootstrapToken,
    kubeadm: KubeadmVersion,
    discovery: &JoinDiscovery,
) -> Result<Rendered> {
    render_join_tainted(identity, config, hardware, token, kubeadm, discovery, &[])
}

/// [`render_join`] with `extra_taints` at registration (the GPU gate's).
pub fn render_join_tainted(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
    token: &BootstrapToken,
    kubeadm: KubeadmVersion,
    discovery: &JoinDiscovery,
    extra_taints: &[crate::values::taint::Taint],
) -> Result<Rendered> {
    if identity.role == Role::Controller || !identity.joins {
        return Err(role_mismatch("JoinConfiguration", identity));
    }
    let api = checked_api_version(kubeadm, config)?;
    let endpoint = normalize_endpoint(&discovery.api_server_endpoint, "join ticket endpoint")?;
    let malformed = discovery
        .ca_cert_hashes
        .iter()
        .filter(|h| !valid_ca_pin(h))
        .count();
    if discovery.ca_cert_hashes.is_empty() || malformed > 0 {
        return Err(ClusterConfigError::InvalidCaCertHash {
            count: discovery.ca_cert_hashes.len(),
            malformed,
        });
    }
    let join = JoinConfiguration {
        api_version: api.as_str(),
        kind: "JoinConfiguration",
        discovery: Discovery {
            bootstrap_token: BootstrapTokenDiscovery {
                api_server_endpoint: endpoint,
                token: TokenValue(token),
                ca_cert_hashes: discovery.ca_cert_hashes.clone(),
            },
        },
        node_registration: node_registration(identity, config, hardware, api, extra_taints)?,
    };
    Ok(Rendered {
        api_version: api,
        kinds: vec!["JoinConfiguration"],
        pod_network: None,
        yaml: to_yaml("JoinConfiguration", &join)?,
    })
}

/// The API server endpoint every node uses, `host:port`:
/// `cluster.control_plane_endpoint` when set, else the controller's own
/// address and port 6443.
pub fn api_endpoint(identity: &NodeIdentity, config: &Config) -> Result<String> {
    match &config.cluster.control_plane_endpoint {
        Some(e) => normalize_endpoint(e, "cluster.control_plane_endpoint"),
        None => Ok(host_port(identity.address, API_SERVER_PORT)),
    }
}

/// The API endpoints a joining node may be sent to: the configured
/// `cluster.control_plane_endpoint`, else every controller of the
/// inventory at port 6443. Empty when the inventory names no controller
/// (the ticket's endpoint is then trusted, with its CA pin).
pub fn join_endpoints(identity: &NodeIdentity, config: &Config) -> Result<Vec<String>> {
    if let Some(e) = &config.cluster.control_plane_endpoint {
        return Ok(vec![normalize_endpoint(
            e,
            "cluster.control_plane_endpoint",
        )?]);
    }
    Ok(identity
        .peers
        .iter()
        .filter(|p| p.role == Role::Controller)
        .map(|p| host_port(p.address, API_SERVER_PORT))
        .collect())
}

fn role_mismatch(wanted: &'static str, identity: &NodeIdentity) -> ClusterConfigError {
    ClusterConfigError::RoleMismatch {
        wanted,
        node: identity.node_name.clone(),
        role: identity.role,
        joins: identity.joins,
    }
}

fn checked_api_version(kubeadm: KubeadmVersion, config: &Config) -> Result<ApiVersion> {
    let api = kubeadm.api_version()?;
    kubeadm.check_deploys(&config.kubernetes.version)?;
    Ok(api)
}

fn node_registration(
    identity: &NodeIdentity,
    config: &Config,
    hardware: &Hardware,
    api: ApiVersion,
    extra_taints: &[crate::values::taint::Taint],
) -> Result<NodeRegistration> {
    if !valid_node_name(&identity.node_name) {
        return Err(ClusterConfigError::InvalidNodeName {
            name: identity.node_name.clone(),
        });
    }
    let labels = node_labels(identity, hardware, config)?
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    // Registration is the only moment a node may taint itself. The
    // controller keeps kubeadm's default control-plane taint when its group
    // sets none (taints unset).
    let mut all = node_taints(identity, config, hardware);
    all.extend(extra_taints.iter().cloned());
    // A controller keeps kubeadm's control-plane taint: setting any taint
    // replaces kubeadm's default, so it is added back explicitly.
    const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";
    if identity.role == Role::Controller
        && !all.is_empty()
        && !all.iter().any(|t| t.key == CONTROL_PLANE)
    {
        all.insert(
            0,
            crate::values::taint::Taint {
                key: CONTROL_PLANE.into(),
                value: String::new(),
                effect: crate::values::taint::Effect::NoSchedule,
            },
        );
    }
    let taints: Vec<Taint> = all
        .into_iter()
        .map(|t| Taint {
            key: t.key,
            value: t.value,
            effect: t.effect.as_str(),
        })
        .collect();
    let taints = (!taints.is_empty()).then_some(taints);
    Ok(NodeRegistration {
        name: identity.node_name.clone(),
        cri_socket: format!("{CRI_SCHEME}{}", config.containerd.socket.display()),
        taints,
        kubelet_extra_args: {
            let mut args = ExtraArgs::new(
                api,
                [
                    ("node-ip", identity.address.to_string()),
                    ("node-labels", labels),
                ],
            );
            // The AWS cloud provider's id: the cluster autoscaler and
            // hpk8s's operator commands map Nodes to instances by it.
            if let Some(id) = identity.provider_id() {
                args.args.insert("provider-id", id);
            }
            // Prepare installed the provider and its config (ECR images).
            if credential_provider::enabled(config, hardware) {
                args.args.extend([
                    (
                        "image-credential-provider-config",
                        credential_provider::CONFIG.to_string(),
                    ),
                    (
                        "image-credential-provider-bin-dir",
                        credential_provider::BIN_DIR.to_string(),
                    ),
                ]);
            }
            args
        },
    })
}

fn to_yaml(kind: &'static str, doc: &impl Serialize) -> Result<String> {
    // Long strings (node-labels) stay plain scalars rather than folded.
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    serde_saphyr::to_string_with_options(doc, options).map_err(|e| ClusterConfigError::Render {
        kind,
        message: e.to_string(),
    })
}

/// `host:port`, with IPv6 addresses in brackets.
fn host_port(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// Checks `host[:port]` and adds the API server port when it is left out.
fn normalize_endpoint(endpoint: &str, source_field: &'static str) -> Result<String> {
    let invalid = || ClusterConfigError::InvalidEndpoint {
        source_field,
        endpoint: endpoint.to_string(),
    };
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(invalid)?;
        let address: std::net::Ipv6Addr = v6.parse().map_err(|_| invalid())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(invalid)?),
        };
        (IpAddr::V6(address).to_string(), port)
    } else {
        match endpoint.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (endpoint.to_string(), None),
        }
    };
    let port = match port {
        None => API_SERVER_PORT,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok().filter(|p| *p > 0).ok_or_else(invalid)?
        }
        Some(_) => return Err(invalid()),
    };
    match host.parse::<IpAddr>() {
        Ok(a) => Ok(host_port(a, port)),
        Err(_) if valid_dns_name(&host) => Ok(format!("{host}:{port}")),
        Err(_) => Err(invalid()),
    }
}

/// A DNS name (letters, digits, `-`, dots between labels), any case.
fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Kubernetes node name: a lowercase DNS-1123 subdomain.
fn valid_node_name(s: &str) -> bool {
    valid_dns_name(s) && !s.bytes().any(|b| b.is_ascii_uppercase())
}

/// A label value (see [`crate::values::label::valid_value`]).
fn valid_label_value(s: &str) -> bool {
    crate::values::label::valid_value(s)
}

/// `sha256:` and 64 hex digits.
fn valid_ca_pin(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

// ---------------------------------------------------------------------------
// The documents. Only the fields hpk8s sets; kubeadm defaults the rest.

/// The token as it must appear in the documents. Serializes the whole
/// token; has no `Debug`, so no document struct can be printed.
struct TokenValue<'a>(&'a BootstrapToken);

impl Serialize for TokenValue<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.expose_token())
    }
}

/// `extraArgs`/`kubeletExtraArgs`: a map in v1beta3, a list of
/// `{name, value}` in v1beta4.
struct ExtraArgs {
    api: ApiVersion,
    args: BTreeMap<&'static str, String>,
}

impl ExtraArgs {
    fn new<const N: usize>(api: ApiVersion, args: [(&'static str, String); N]) -> Self {
        ExtraArgs {
            api,
            args: args.into_iter().collect(),
        }
    }
}

impl Serialize for ExtraArgs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Arg<'a> {
            name: &'a str,
            value: &'a str,
        }
        match self.api {
            ApiVersion::V1beta3 => self.args.serialize(serializer),
            ApiVersion::V1beta4 => {
                let mut seq = serializer.serialize_seq(Some(self.args.len()))?;
                for (name, value) in &self.args {
                    seq.serialize_element(&Arg { name, value })?;
                }
                seq.end()
            }
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InitConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    bootstrap_tokens: Vec<BootstrapTokenDoc<'a>>,
    #[serde(rename = "localAPIEndpoint")]
    local_api_endpoint: ApiEndpoint,
    node_registration: NodeRegistration,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDoc<'a> {
    token: TokenValue<'a>,
    description: String,
    ttl: String,
    usages: [&'static str; 2],
    groups: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiEndpoint {
    advertise_address: String,
    bind_port: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRegistration {
    name: String,
    cri_socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    taints: Option<Vec<Taint>>,
    kubelet_extra_args: ExtraArgs,
}

#[derive(Serialize)]
struct Taint {
    key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    value: String,
    effect: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterConfiguration {
    api_version: &'static str,
    kind: &'static str,
    kubernetes_version: String,
    control_plane_endpoint: String,
    image_repository: String,
    networking: Networking,
    controller_manager: ControlPlaneComponent,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Networking {
    pod_subnet: String,
    service_subnet: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPlaneComponent {
    extra_args: ExtraArgs,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: &'static str,
    kind: &'static str,
    cgroup_driver: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_pods: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinConfiguration<'a> {
    api_version: &'static str,
    kind: &'static str,
    discovery: Discovery<'a>,
    node_registration: NodeRegistration,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Discovery<'a> {
    bootstrap_token: BootstrapTokenDiscovery<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BootstrapTokenDiscovery<'a> {
    api_server_endpoint: String,
    token: TokenValue<'a>,
    ca_cert_hashes: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_versions_and_api() {
        let v = |s| KubeadmVersion::parse(s).unwrap();
        assert_eq!(v("v1.30.2\n").api_version().unwrap(), ApiVersion::V1beta3);
        assert_eq!(v("v1.31.0").api_version().unwrap(), ApiVersion::V1beta4);
        assert_eq!(v("v1.33.1-eks-abc").minor, 33);
        assert_eq!(
            v("v1.23.9").api_version().unwrap_err().kind(),
            "kubeadm_too_old"
        );
        assert_eq!(
            KubeadmVersion::parse("command not found")
                .unwrap_err()
                .kind(),
            "kubeadm_version_unreadable"
        );
        assert!(v("v1.34.0").check_deploys("1.34.1").is_ok());
        assert!(v("v1.34.0").check_deploys("1.33.5").is_ok());
        assert_eq!(
            v("v1.34.0").check_deploys("1.32.0").unwrap_err().kind(),
            "kubeadm_version_skew"
        );
        assert_eq!(
            v("v1.33.0").check_deploys("1.34.0").unwrap_err().kind(),
            "kubeadm_version_skew"
        );
    }

    #[test]
    fn endpoints() {
        let n = |s| normalize_endpoint(s, "cluster.control_plane_endpoint");
        assert_eq!(n("10.0.0.1").unwrap(), "10.0.0.1:6443");
        assert_eq!(n("api.example.com:443").unwrap(), "api.example.com:443");
        assert_eq!(n("[fd00::1]").unwrap(), "[fd00::1]:6443");
        assert_eq!(n("[fd00::1]:8443").unwrap(), "[fd00::1]:8443");
        for bad in [
            "",
            "host:",
            "host:0",
            "host:70000",
            "a b:1",
            "fd00::1",
            "[fd00::1",
            "-x.com",
        ] {
            assert!(n(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_labels_pins() {
        assert!(valid_node_name("ip-10-1-2-3.ec2.internal"));
        assert!(!valid_node_name("GPU-1"));
        assert!(valid_label_value("p5.48xlarge"));
        assert!(valid_label_value(""));
        assert!(!valid_label_value("has space"));
        assert!(!valid_label_value("-x"));
        assert!(!valid_label_value(&"a".repeat(64)));
        assert!(valid_ca_pin(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!valid_ca_pin(&format!("sha1:{}", "ab".repeat(32))));
        assert!(!valid_ca_pin("sha256:abc"));
    }
}
