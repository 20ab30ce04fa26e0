//! flannel, the pod network: one `flanneld` per node (host network) that
//! leases the node's pod CIDR from the Node object (`--kube-subnet-mgr`),
//! programs a vxlan overlay and masquerades traffic leaving the pod network;
//! two init containers install the `flannel` CNI plugin binary and the CNI
//! config that makes the kubelet's pods use it.

use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, Namespace,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext,
    ServiceAccount, Toleration, Volume,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::error::{Error, Result};
use super::images::AddonImages;
use super::objects::{AddonObject, NODE_CRITICAL, host_path, labels, mount};

/// The addon's name in reports.
pub const NAME: &str = "flannel";
/// flannel's namespace.
pub const NAMESPACE: &str = "kube-flannel";
/// Name of the ServiceAccount, ClusterRole and ClusterRoleBinding.
pub const ACCOUNT: &str = "flannel";
/// The ConfigMap holding `cni-conf.json` and `net-conf.json`.
pub const CONFIG_MAP: &str = "kube-flannel-cfg";
/// The DaemonSet.
pub const DAEMON_SET: &str = "kube-flannel-ds";
/// Where flanneld writes `subnet.env` for the CNI plugin.
const RUN_DIR: &str = "/run/flannel";
/// The kubelet's CNI config directory.
const CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// The kubelet's CNI plugin directory.
const CNI_BIN_DIR: &str = "/opt/cni/bin";
/// iptables' lock, shared with kube-proxy so their rule updates do not race.
const XTABLES_LOCK: &str = "/run/xtables.lock";
/// Where the ConfigMap is mounted in the containers.
const CONFIG_MOUNT: &str = "/etc/kube-flannel/";
/// The CNI config file written on every node (sorted first by the kubelet).
const CNI_CONFLIST: &str = "/etc/cni/net.d/10-flannel.conflist";

/// The pod-security level flannel needs (host network and paths).
const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Checks that `pod_subnet` is `address/prefix`.
pub fn check_pod_subnet(pod_subnet: &str) -> Result<IpAddr> {
    let bad = || Error::InvalidPodSubnet {
        value: pod_subnet.to_string(),
    };
    let (addr, prefix) = pod_subnet.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(addr)
}

/// `net-conf.json`: the pod network flannel carves node subnets from.
pub fn net_conf(pod_subnet: &str) -> Result<String> {
    let conf = if check_pod_subnet(pod_subnet)?.is_ipv4() {
        json!({"Network": pod_subnet, "EnableNFTables": false, "Backend": {"Type": "vxlan"}})
    } else {
        json!({"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": pod_subnet,
               "EnableNFTables": false, "Backend": {"Type": "vxlan"}})
    };
    Ok(pretty(&conf))
}

/// `cni-conf.json`: flannel (delegating to the bridge plugin) chained with
/// portmap so `hostPort` works.
pub fn cni_conf() -> String {
    pretty(&json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    }))
}

fn pretty(v: &serde_json::Value) -> String {
    // Serializing a `Value` cannot fail; fall back to the compact form anyway.
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()) + "\n"
}

fn meta(name: &str, namespaced: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespaced.then(|| NAMESPACE.to_string()),
        labels: Some(labels(&[("app", "flannel"), ("k8s-app", "flannel")])),
        ..Default::default()
    }
}

/// flannel's objects in apply order.
pub fn objects(images: &AddonImages, pod_subnet: &str) -> Result<Vec<AddonObject>> {
    let mut ns_meta = meta(NAMESPACE, false);
    ns_meta
        .labels
        .get_or_insert_default()
        .insert(POD_SECURITY_ENFORCE.into(), "privileged".into());
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Ok(vec![
        AddonObject::Namespace(Namespace {
            metadata: ns_meta,
            ..Default::default()
        }),
        AddonObject::ServiceAccount(ServiceAccount {
            metadata: meta(ACCOUNT, true),
            ..Default::default()
        }),
        AddonObject::ClusterRole(ClusterRole {
            metadata: meta(ACCOUNT, false),
            rules: Some(vec![
                // Its own pod, to read the node it runs on.
                rule(&[""], &["pods"], &["get"]),
                // Node podCIDRs (the subnet manager) and peers' vxlan addresses.
                rule(&[""], &["nodes"], &["get", "list", "watch"]),
                // The NetworkUnavailable condition.
                rule(&[""], &["nodes/status"], &["patch"]),
            ]),
            ..Default::default()
        }),
        AddonObject::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(ACCOUNT, false),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: ACCOUNT.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: ACCOUNT.into(),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            }]),
        }),
        AddonObject::ConfigMap(ConfigMap {
            metadata: meta(CONFIG_MAP, true),
            data: Some(
                [
                    ("cni-conf.json".to_string(), cni_conf()),
                    ("net-conf.json".to_string(), net_conf(pod_subnet)?),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        AddonObject::DaemonSet(Box::new(daemon_set(images))),
    ])
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn copy(name: &str, image: &str, from: &str, to: &str, mounts: &[(&str, &str)]) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        command: Some(vec!["cp".into()]),
        args: Some(vec!["-f".into(), from.into(), to.into()]),
        volume_mounts: Some(mounts.iter().map(|(n, p)| mount(n, p, false)).collect()),
        ..Default::default()
    }
}

/// The flannel DaemonSet.
pub fn daemon_set(images: &AddonImages) -> DaemonSet {
    let pod_labels = labels(&[("app", "flannel"), ("k8s-app", "flannel"), ("tier", "node")]);
    let flanneld = Container {
        name: "kube-flannel".into(),
        image: Some(images.flannel.clone()),
        command: Some(vec!["/opt/bin/flanneld".into()]),
        // `--iface` pins the node's own address: without it flanneld takes
        // the default route's interface, which on multi-homed nodes
        // (HyperPod's management interface besides the VPC one) is not
        // the one the other nodes reach. A host-network pod's IP is the
        // node's; kubelet expands `$(POD_IP)` from the env below.
        args: Some(vec![
            "--ip-masq".into(),
            "--kube-subnet-mgr".into(),
            "--iface=$(POD_IP)".into(),
        ]),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("POD_IP", "status.podIP"),
            EnvVar {
                name: "EVENT_QUEUE_DEPTH".into(),
                value: Some("5000".into()),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_string(), Quantity("100m".into())),
                    ("memory".to_string(), Quantity("50Mi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        // Routes, vxlan devices and iptables rules, nothing more.
        security_context: Some(SecurityContext {
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("run", RUN_DIR, false),
            mount("flannel-cfg", CONFIG_MOUNT, false),
            mount("xtables-lock", XTABLES_LOCK, false),
        ]),
        ..Default::default()
    };
    let config_volume = Volume {
        name: "flannel-cfg".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: CONFIG_MAP.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    DaemonSet {
        metadata: meta(DAEMON_SET, true),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "flannel".to_string())].into()),
                ..Default::default()
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    host_network: Some(true),
                    priority_class_name: Some(NODE_CRITICAL.into()),
                    service_account_name: Some(ACCOUNT.into()),
                    node_selector: Some(
                        [("kubernetes.io/os".to_string(), "linux".to_string())].into(),
                    ),
                    // The pod network must come up on every node, whatever
                    // its taints (GPU, not-ready, control plane).
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    init_containers: Some(vec![
                        copy(
                            "install-cni-plugin",
                            &images.flannel_cni_plugin,
                            "/flannel",
                            "/opt/cni/bin/flannel",
                            &[("cni-plugin", CNI_BIN_DIR)],
                        ),
                        copy(
                            "install-cni",
                            &images.flannel,
                            "/etc/kube-flannel/cni-conf.json",
                            CNI_CONFLIST,
                            &[("cni", CNI_CONF_DIR), ("flannel-cfg", CONFIG_MOUNT)],
                        ),
                    ]),
                    containers: vec![flanneld],
                    volumes: Some(vec![
                        host_path("run", RUN_DIR, None),
                        host_path("cni-plugin", CNI_BIN_DIR, None),
                        host_path("cni", CNI_CONF_DIR, None),
                        config_volume,
                        host_path("xtables-lock", XTABLES_LOCK, Some("FileOrCreate")),
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_conf_carries_the_pod_subnet() {
        let v: serde_json::Value =
            serde_json::from_str(&net_conf("10.100.0.0/14").unwrap()).unwrap();
        assert_eq!(v["Network"], "10.100.0.0/14");
        assert_eq!(v["Backend"]["Type"], "vxlan");
        let v6: serde_json::Value =
            serde_json::from_str(&net_conf("fd00:10::/56").unwrap()).unwrap();
        assert_eq!(v6["IPv6Network"], "fd00:10::/56");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/"] {
            assert_eq!(
                net_conf(bad).unwrap_err().kind(),
                "flannel_pod_subnet_invalid",
                "{bad}"
            );
        }
    }

    #[test]
    fn cni_conf_chains_flannel_and_portmap() {
        let v: serde_json::Value = serde_json::from_str(&cni_conf()).unwrap();
        let types: Vec<&str> = v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["flannel", "portmap"]);
    }
}
