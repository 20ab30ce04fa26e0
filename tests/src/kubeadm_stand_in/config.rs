//! kubeadm's configuration documents: which kinds and versions exist, the
//! `extraArgs` shape of each version, and the fields the stand-in uses.

use anyhow::{Context as _, bail};
use serde_json::Value;

const KUBEADM_GROUP: &str = "kubeadm.k8s.io";
const KUBELET_CONFIG: &str = "kubelet.config.k8s.io/v1beta1";
const KUBE_PROXY_CONFIG: &str = "kubeproxy.config.k8s.io/v1alpha1";
const SCHEME: &str = "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31";

/// A kubeadm config API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `kubeadm.k8s.io/v1beta3`: `extraArgs` are maps.
    V1beta3,
    /// `kubeadm.k8s.io/v1beta4` (kubeadm ≥ 1.31): lists of `{name, value}`.
    V1beta4,
}

impl ApiVersion {
    fn parse(api_version: &str, kind: &str, kubeadm_minor: u32) -> anyhow::Result<Self> {
        match api_version {
            "kubeadm.k8s.io/v1beta3" => Ok(Self::V1beta3),
            "kubeadm.k8s.io/v1beta4" if kubeadm_minor >= 31 => Ok(Self::V1beta4),
            _ => bail!(no_kind(kind, api_version)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::V1beta3 => "v1beta3",
            Self::V1beta4 => "v1beta4",
        }
    }
}

fn no_kind(kind: &str, api_version: &str) -> String {
    format!("no kind {kind:?} is registered for version {api_version:?} in scheme {SCHEME:?}")
}

/// A command-line flag-like argument (`extraArgs`, `kubeletExtraArgs`).
pub type Arg = (String, String);

/// `nodeRegistration`.
#[derive(Debug, Clone, Default)]
pub struct NodeRegistration {
    /// Node name (`None`: the host name).
    pub name: Option<String>,
    /// CRI socket.
    pub cri_socket: Option<String>,
    /// Registration taints (`None`: kubeadm's default for the command).
    pub taints: Option<Vec<Value>>,
    /// Kubelet flags.
    pub kubelet_extra_args: Vec<Arg>,
}

impl NodeRegistration {
    /// The value of a kubelet flag.
    pub fn kubelet_arg(&self, name: &str) -> Option<&str> {
        self.kubelet_extra_args
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `--node-labels` as pairs.
    pub fn node_labels(&self) -> Vec<(String, String)> {
        self.kubelet_arg("node-labels")
            .into_iter()
            .flat_map(|l| l.split(','))
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect()
    }
}

/// One `bootstrapTokens` entry.
#[derive(Clone)]
pub struct BootstrapTokenSpec {
    /// `id.secret` (not in `Debug`).
    pub token: String,
    /// `ttl` (Go duration).
    pub ttl: Option<String>,
    /// `usages`.
    pub usages: Vec<String>,
    /// `groups`.
    pub groups: Vec<String>,
    /// `description`.
    pub description: Option<String>,
}

impl std::fmt::Debug for BootstrapTokenSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapTokenSpec")
            .field("token", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The documents of `kubeadm init --config`.
#[derive(Debug, Clone)]
pub struct InitConfig {
    /// The kubeadm API version of the InitConfiguration (or
    /// ClusterConfiguration when alone).
    pub version: ApiVersion,
    /// `localAPIEndpoint.advertiseAddress`.
    pub advertise_address: Option<String>,
    /// `localAPIEndpoint.bindPort`.
    pub bind_port: u64,
    /// `bootstrapTokens`.
    pub bootstrap_tokens: Vec<BootstrapTokenSpec>,
    /// `nodeRegistration`.
    pub node_registration: NodeRegistration,
    /// `ClusterConfiguration.controlPlaneEndpoint`.
    pub control_plane_endpoint: Option<String>,
    /// `ClusterConfiguration.kubernetesVersion`.
    pub kubernetes_version: Option<String>,
    /// `networking.podSubnet`.
    pub pod_subnet: Option<String>,
    /// `networking.serviceSubnet`.
    pub service_subnet: Option<String>,
    /// `apiServer.extraArgs`.
    pub api_server_args: Vec<Arg>,
    /// `controllerManager.extraArgs`.
    pub controller_manager_args: Vec<Arg>,
    /// `KubeletConfiguration.cgroupDriver`.
    pub cgroup_driver: Option<String>,
}

/// `discovery.bootstrapToken` of a JoinConfiguration.
#[derive(Clone)]
pub struct Discovery {
    /// `apiServerEndpoint`.
    pub api_server_endpoint: String,
    /// `token` (not in `Debug`).
    pub token: String,
    /// `caCertHashes`.
    pub ca_cert_hashes: Vec<String>,
    /// `unsafeSkipCAVerification`.
    pub unsafe_skip_ca_verification: bool,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("api_server_endpoint", &self.api_server_endpoint)
            .field("token", &"<redacted>")
            .field("ca_cert_hashes", &self.ca_cert_hashes)
            .finish_non_exhaustive()
    }
}

/// The document of `kubeadm join --config`.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// The kubeadm API version.
    pub version: ApiVersion,
    /// Token discovery.
    pub discovery: Discovery,
    /// `nodeRegistration`.
    pub node_registration: NodeRegistration,
}

/// The minor version of `v1.34.1` / `1.34.1`.
pub fn minor_of(version: &str) -> u32 {
    version
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The documents of a file, with kind and apiVersion checked.
fn documents(
    text: &str,
    allowed: &[&str],
    kubeadm_minor: u32,
) -> anyhow::Result<Vec<(String, Option<ApiVersion>, Value)>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).context("the config file is not valid YAML")?;
    let mut out = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
        if kind.is_empty() || api_version.is_empty() {
            bail!(
                "invalid configuration for GroupVersionKind {api_version}, Kind={kind}: kind and apiVersion is mandatory information that must be specified"
            );
        }
        let version = if api_version.starts_with(&format!("{KUBEADM_GROUP}/")) {
            let v = ApiVersion::parse(&api_version, &kind, kubeadm_minor)?;
            if ![
                "InitConfiguration",
                "ClusterConfiguration",
                "JoinConfiguration",
                "ResetConfiguration",
                "UpgradeConfiguration",
            ]
            .contains(&kind.as_str())
            {
                bail!(no_kind(&kind, &api_version));
            }
            Some(v)
        } else if (api_version == KUBELET_CONFIG && kind == "KubeletConfiguration")
            || (api_version == KUBE_PROXY_CONFIG && kind == "KubeProxyConfiguration")
        {
            None
        } else {
            bail!(no_kind(&kind, &api_version));
        };
        if !allowed.contains(&kind.as_str()) {
            bail!(
                "kind {kind:?} is not valid in this configuration file: expected one of {}",
                allowed.join(", ")
            );
        }
        if out.iter().any(|(k, _, _)| *k == kind) {
            bail!("found multiple documents of kind {kind:?} in the config file");
        }
        out.push((kind, version, doc));
    }
    Ok(out)
}

/// `extraArgs`-like field at `pointer` of `doc`, in its version's shape.
fn args(doc: &Value, pointer: &str, field: &str, version: ApiVersion) -> anyhow::Result<Vec<Arg>> {
    let Some(v) = doc.pointer(pointer).filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let go_type = match version {
        ApiVersion::V1beta3 => "map[string]string",
        ApiVersion::V1beta4 => "[]v1beta4.Arg",
    };
    let wrong = |found: &str| {
        anyhow::anyhow!(
            "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {found} into Go struct field {field} of type {go_type} (kubeadm.k8s.io/{})",
            version.name()
        )
    };
    match (version, v) {
        (ApiVersion::V1beta3, Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(wrong("non-string value")),
            })
            .collect(),
        (ApiVersion::V1beta4, Value::Array(items)) => items
            .iter()
            .map(
                |item| match (item["name"].as_str(), item["value"].as_str()) {
                    (Some(n), Some(v)) => Ok((n.to_string(), v.to_string())),
                    (Some(n), None) if item["value"].is_null() => {
                        Ok((n.to_string(), String::new()))
                    }
                    _ => Err(wrong("object without string name and value")),
                },
            )
            .collect(),
        (_, Value::Object(_)) => Err(wrong("object")),
        (_, Value::Array(_)) => Err(wrong("array")),
        _ => Err(wrong("scalar")),
    }
}

fn opt_str(doc: &Value, pointer: &str) -> Option<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .map(String::from)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

fn node_registration(
    doc: &Value,
    kind: &str,
    version: ApiVersion,
) -> anyhow::Result<NodeRegistration> {
    let taints = match doc.pointer("/nodeRegistration/taints") {
        None => None,
        Some(Value::Null) => None,
        Some(Value::Array(t)) => Some(t.clone()),
        Some(_) => bail!("{kind}.nodeRegistration.taints must be a list"),
    };
    Ok(NodeRegistration {
        name: opt_str(doc, "/nodeRegistration/name"),
        cri_socket: opt_str(doc, "/nodeRegistration/criSocket"),
        taints,
        kubelet_extra_args: args(
            doc,
            "/nodeRegistration/kubeletExtraArgs",
            "NodeRegistrationOptions.nodeRegistration.kubeletExtraArgs",
            version,
        )?,
    })
}

/// Parses `kubeadm init --config` documents.
pub fn parse_init(text: &str, kubeadm_version: &str) -> anyhow::Result<InitConfig> {
    let docs = documents(
        text,
        &[
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration",
        ],
        minor_of(kubeadm_version),
    )?;
    let find = |k: &str| docs.iter().find(|(kind, _, _)| kind == k);
    let (init, cluster) = (find("InitConfiguration"), find("ClusterConfiguration"));
    let version = init
        .or(cluster)
        .and_then(|(_, v, _)| *v)
        .context("the config file has neither an InitConfiguration nor a ClusterConfiguration")?;
    let null = Value::Null;
    let (init_v, init_doc) = init
        .map(|(_, v, d)| (v.unwrap_or(version), d))
        .unwrap_or((version, &null));
    let (cluster_v, cluster_doc) = cluster
        .map(|(_, v, d)| (v.unwrap_or(version), d))
        .unwrap_or((version, &null));
    let mut bootstrap_tokens = Vec::new();
    for t in init_doc["bootstrapTokens"].as_array().into_iter().flatten() {
        bootstrap_tokens.push(BootstrapTokenSpec {
            token: t["token"]
                .as_str()
                .context("InitConfiguration.bootstrapTokens[].token is missing")?
                .to_string(),
            ttl: t["ttl"].as_str().map(String::from),
            usages: strings(t.get("usages")),
            groups: strings(t.get("groups")),
            description: t["description"].as_str().map(String::from),
        });
    }
    for component in ["apiServer", "controllerManager", "scheduler"] {
        args(
            cluster_doc,
            &format!("/{component}/extraArgs"),
            &format!("ControlPlaneComponent.{component}.extraArgs"),
            cluster_v,
        )?;
    }
    args(
        cluster_doc,
        "/etcd/local/extraArgs",
        "LocalEtcd.etcd.local.extraArgs",
        cluster_v,
    )?;
    Ok(InitConfig {
        version,
        advertise_address: opt_str(init_doc, "/localAPIEndpoint/advertiseAddress"),
        bind_port: init_doc
            .pointer("/localAPIEndpoint/bindPort")
            .and_then(Value::as_u64)
            .unwrap_or(6443),
        bootstrap_tokens,
        node_registration: node_registration(init_doc, "InitConfiguration", init_v)?,
        control_plane_endpoint: opt_str(cluster_doc, "/controlPlaneEndpoint"),
        kubernetes_version: opt_str(cluster_doc, "/kubernetesVersion"),
        pod_subnet: opt_str(cluster_doc, "/networking/podSubnet"),
        service_subnet: opt_str(cluster_doc, "/networking/serviceSubnet"),
        api_server_args: args(
            cluster_doc,
            "/apiServer/extraArgs",
            "ControlPlaneComponent.apiServer.extraArgs",
            cluster_v,
        )?,
        controller_manager_args: args(
            cluster_doc,
            "/controllerManager/extraArgs",
            "ControlPlaneComponent.controllerManager.extraArgs",
            cluster_v,
        )?,
        cgroup_driver: find("KubeletConfiguration")
            .and_then(|(_, _, d)| opt_str(d, "/cgroupDriver")),
    })
}

/// Parses `kubeadm join --config` documents.
pub fn parse_join(text: &str, kubeadm_version: &str) -> anyhow::Result<JoinConfig> {
    let docs = documents(
        text,
        &[
            "JoinConfiguration",
            "KubeletConfiguration",
            "KubeProxyConfiguration",
        ],
        minor_of(kubeadm_version),
    )?;
    let (_, version, doc) = docs
        .iter()
        .find(|(k, _, _)| k == "JoinConfiguration")
        .context("the config file has no JoinConfiguration")?;
    let version = version.context("JoinConfiguration without a kubeadm version")?;
    if doc.get("controlPlane").is_some_and(|c| !c.is_null()) {
        bail!(
            "JoinConfiguration.controlPlane: joining control-plane nodes is not supported by this kubeadm stand-in"
        );
    }
    let bt = doc
        .pointer("/discovery/bootstrapToken")
        .filter(|v| !v.is_null())
        .context("JoinConfiguration.discovery.bootstrapToken is missing: the stand-in supports token discovery only")?;
    let discovery = Discovery {
        api_server_endpoint: bt["apiServerEndpoint"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        token: bt["token"].as_str().unwrap_or_default().to_string(),
        ca_cert_hashes: strings(bt.get("caCertHashes")),
        unsafe_skip_ca_verification: bt["unsafeSkipCAVerification"].as_bool().unwrap_or(false),
    };
    if discovery.api_server_endpoint.is_empty() {
        bail!(
            "discovery.bootstrapToken.apiServerEndpoint: Invalid value: \"\": the API server endpoint must be set"
        );
    }
    if discovery.ca_cert_hashes.is_empty() && !discovery.unsafe_skip_ca_verification {
        bail!(
            "discovery.bootstrapToken: Invalid value: \"\": using token-based discovery without caCertHashes can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass --discovery-token-unsafe-skip-ca-verification flag to continue"
        );
    }
    Ok(JoinConfig {
        version,
        discovery,
        node_registration: node_registration(doc, "JoinConfiguration", version)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extra_args_shapes_follow_the_version() {
        let v4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncontrollerManager:\n  extraArgs:\n  - name: node-cidr-mask-size\n    value: \"24\"\n";
        let c = parse_init(v4, "1.34.1").unwrap();
        assert_eq!(
            c.controller_manager_args,
            vec![("node-cidr-mask-size".to_string(), "24".to_string())]
        );
        let err = parse_init(&v4.replace("v1beta4", "v1beta3"), "1.34.1").unwrap_err();
        assert!(err.to_string().contains("cannot unmarshal array"), "{err}");
        let v3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\ncontrollerManager:\n  extraArgs:\n    node-cidr-mask-size: \"24\"\n";
        assert_eq!(
            parse_init(v3, "1.30.0")
                .unwrap()
                .controller_manager_args
                .len(),
            1
        );
        let err = parse_init(&v3.replace("v1beta3", "v1beta4"), "1.34.1").unwrap_err();
        assert!(err.to_string().contains("cannot unmarshal object"), "{err}");
        let err = parse_init(v4, "1.30.2").unwrap_err();
        assert!(err.to_string().contains("no kind \"ClusterConfiguration\" is registered for version \"kubeadm.k8s.io/v1beta4\""), "{err}");
    }
}
