//! The cluster's configuration before anything changes: pod network sizing
//! and overlap checks, bootstrap tokens (format, entropy, redaction, the
//! Secret object), token lifetimes, and the kubeadm documents for both API
//! versions, compared with `tests/golden/kubeadm/*.yaml` and parsed back to
//! check the key paths kubeadm reads.
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended
//! change, then review the diff like code.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lifecycle::cluster::bootstrap_token::{self, BootstrapToken, TokenTtl, parse_duration};
use lifecycle::cluster::kubeadm_config::{
    self, ApiVersion, ClusterConfigError, JoinDiscovery, KubeadmVersion, Rendered,
};
use lifecycle::cluster::labels;
use lifecycle::cluster::pod_network::{self, Ipv4Cidr, auto_pod_subnet};
use lifecycle::config::{ClusterConfig, Config, ConfigError};
use lifecycle::hardware::Hardware;
use lifecycle::identity::{
    ClusterIdentity, GroupSummary, Lifecycle, NodeIdentity, Peer, Role, TopologySource,
};
use serde_json::Value;

/// The fixed test token (never a real one).
const TOKEN: &str = "abcdef.0123456789abcdef";
/// Its secret part, which must appear nowhere but the rendered bytes.
const SECRET: &str = "0123456789abcdef";
const CONTROLLER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const WORKER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 1, 7, 21);

fn token() -> BootstrapToken {
    BootstrapToken::parse(TOKEN).unwrap()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

/// `count` node addresses in 10.1.0.0/16, starting with the controller's.
fn inventory_addresses(count: u32) -> Vec<IpAddr> {
    (0..count)
        .map(|i| {
            let n = u32::from(CONTROLLER_ADDRESS) + i;
            IpAddr::V4(Ipv4Addr::from(n))
        })
        .collect()
}

/// A node of a HyperPod cluster of 300 nodes (1 controller, 299 p5 workers).
fn identity(role: Role) -> NodeIdentity {
    let (name, address, group, instance_type, instance_id, lifecycle) = match role {
        Role::Controller => (
            "ip-10-1-0-10",
            CONTROLLER_ADDRESS,
            "controller-machine",
            "m5.2xlarge",
            "i-0c0ffee0c0ffee001",
            Some(Lifecycle::OnDemand),
        ),
        _ => (
            "ip-10-1-7-21",
            WORKER_ADDRESS,
            "gpu-p5",
            "ml.p5.48xlarge",
            "i-0f00dfeed0000beef",
            Some(Lifecycle::Spot),
        ),
    };
    NodeIdentity {
        source: TopologySource::Hyperpod,
        cluster: ClusterIdentity {
            name: "ml-cluster".into(),
            id: Some("kb8v11zrrpvr".into()),
            arn: Some("arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr".into()),
            partition: Some("aws".into()),
            region: Some("us-west-2".into()),
            account: Some("111122223333".into()),
        },
        node_name: name.into(),
        address: IpAddr::V4(address),
        role,
        joins: true,
        group: group.into(),
        instance_id: Some(instance_id.into()),
        instance_type: Some(instance_type.into()),
        region: Some("us-west-2".into()),
        availability_zone: Some("us-west-2b".into()),
        lifecycle,
        expected_nodes: 300,
        groups: vec![
            GroupSummary {
                name: "controller-machine".into(),
                role: Role::Controller,
                instance_type: Some("m5.2xlarge".into()),
                count: 1,
            },
            GroupSummary {
                name: "gpu-p5".into(),
                role: Role::Worker,
                instance_type: Some("p5.48xlarge".into()),
                count: 299,
            },
        ],
        node_addresses: inventory_addresses(300),
        peers: inventory_addresses(300)
            .into_iter()
            .enumerate()
            .map(|(i, address)| {
                let (group, role) = if i == 0 {
                    ("controller-machine", Role::Controller)
                } else {
                    ("gpu-p5", Role::Worker)
                };
                Peer {
                    address,
                    name: None,
                    group: group.into(),
                    role,
                    instance_id: None,
                }
            })
            .collect(),
        elastic_groups: Vec::new(),
    }
}

fn p5() -> Hardware {
    Hardware {
        nvidia_gpus: 8,
        efa_devices: 32,
        gpu_device_id: Some(0x2330),
    }
}

fn discovery() -> JoinDiscovery {
    JoinDiscovery {
        api_server_endpoint: "10.1.0.10:6443".into(),
        ca_cert_hashes: vec![format!("sha256:{}", "3f".repeat(32))],
    }
}

/// kubeadm 1.30 (v1beta3) with Kubernetes 1.30, or 1.34 (v1beta4) with 1.34.
fn setup(api: ApiVersion) -> (Config, KubeadmVersion) {
    let mut config = Config::default();
    config.cluster.gpu_taint = true;
    let kubeadm = match api {
        ApiVersion::V1beta3 => {
            config.kubernetes.version = "1.30.5".into();
            "v1.30.5\n"
        }
        ApiVersion::V1beta4 => "v1.34.1\n",
    };
    (config, KubeadmVersion::parse(kubeadm).unwrap())
}

fn render_controller(api: ApiVersion) -> Rendered {
    let (config, kubeadm) = setup(api);
    kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &Hardware::default(),
        &token(),
        kubeadm,
    )
    .unwrap()
}

fn render_worker(api: ApiVersion) -> Rendered {
    let (config, kubeadm) = setup(api);
    kubeadm_config::render_join(
        &identity(Role::Worker),
        &config,
        &p5(),
        &token(),
        kubeadm,
        &discovery(),
    )
    .unwrap()
}

fn text(r: &Rendered) -> String {
    String::from_utf8(r.as_bytes().to_vec()).unwrap()
}

/// The rendered YAML documents, parsed back.
fn docs(r: &Rendered) -> Vec<Value> {
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text(r)).unwrap()
}

fn doc<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {docs:#?}"))
}

/// `extraArgs` as a map, whichever API version shaped it.
fn args(v: &Value, api: ApiVersion) -> BTreeMap<String, String> {
    match api {
        ApiVersion::V1beta3 => {
            let map = v.as_object().unwrap_or_else(|| panic!("not a map: {v}"));
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        }
        ApiVersion::V1beta4 => {
            let list = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
            list.iter()
                .map(|a| {
                    assert_eq!(a.as_object().unwrap().len(), 2, "{a}");
                    (
                        a["name"].as_str().unwrap().to_string(),
                        a["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        }
    }
}

fn labels_of(kubelet_args: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    kubelet_args["node-labels"]
        .split(',')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Golden files.

fn golden_path(name: &str) -> PathBuf {
    harness::workspace_root()
        .join("tests/golden/kubeadm")
        .join(format!("{name}.yaml"))
}

fn check_golden(name: &str, rendered: &Rendered) {
    let got = text(rendered);
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if got != want {
        let diff: String = want
            .lines()
            .map(Some)
            .chain(std::iter::repeat(None))
            .zip(got.lines().map(Some).chain(std::iter::repeat(None)))
            .take(want.lines().count().max(got.lines().count()))
            .enumerate()
            .filter(|(_, (w, g))| w != g)
            .map(|(i, (w, g))| {
                format!(
                    "line {}:\n  want: {}\n  got:  {}\n",
                    i + 1,
                    w.unwrap_or("<none>"),
                    g.unwrap_or("<none>")
                )
            })
            .collect();
        panic!(
            "{name} differs from {} (UPDATE_GOLDEN=1 to accept):\n{diff}",
            path.display()
        );
    }
}

#[test]
fn golden_v1beta3_controller() {
    check_golden(
        "v1beta3-controller",
        &render_controller(ApiVersion::V1beta3),
    );
}

#[test]
fn golden_v1beta4_controller() {
    check_golden(
        "v1beta4-controller",
        &render_controller(ApiVersion::V1beta4),
    );
}

#[test]
fn golden_v1beta3_worker() {
    check_golden("v1beta3-worker", &render_worker(ApiVersion::V1beta3));
}

#[test]
fn golden_v1beta4_worker() {
    check_golden("v1beta4-worker", &render_worker(ApiVersion::V1beta4));
}

// ---------------------------------------------------------------------------
// The documents' structure, parsed back.

#[test]
fn controller_documents_have_what_kubeadm_init_reads() {
    for api in [ApiVersion::V1beta3, ApiVersion::V1beta4] {
        let r = render_controller(api);
        assert_eq!(r.api_version(), api);
        assert_eq!(
            r.kinds(),
            [
                "InitConfiguration",
                "ClusterConfiguration",
                "KubeletConfiguration"
            ]
        );
        let docs = self::docs(&r);
        assert_eq!(docs.len(), 3, "{api:?}");
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, r.kinds());

        let init = doc(&docs, "InitConfiguration");
        assert_eq!(init["apiVersion"], api.as_str());
        let bt = &init["bootstrapTokens"][0];
        assert_eq!(bt["token"], TOKEN);
        assert_eq!(bt["ttl"], "4h0m0s");
        assert_eq!(
            bt["usages"],
            serde_json::json!(["signing", "authentication"])
        );
        assert_eq!(
            bt["groups"],
            serde_json::json!(["system:bootstrappers:kubeadm:default-node-token"])
        );
        assert_eq!(init["bootstrapTokens"].as_array().unwrap().len(), 1);
        assert_eq!(init["localAPIEndpoint"]["advertiseAddress"], "10.1.0.10");
        assert_eq!(init["localAPIEndpoint"]["bindPort"], 6443);
        let reg = &init["nodeRegistration"];
        assert_eq!(reg["name"], "ip-10-1-0-10");
        assert_eq!(reg["criSocket"], "unix:///run/containerd/containerd.sock");
        // The controller keeps kubeadm's control-plane taint: taints unset.
        assert!(reg.get("taints").is_none(), "{reg}");
        let kubelet_args = args(&reg["kubeletExtraArgs"], api);
        assert_eq!(kubelet_args["node-ip"], "10.1.0.10");
        let labels = labels_of(&kubelet_args);
        assert_eq!(labels[labels::INSTANCE_TYPE], "m5.2xlarge");
        assert_eq!(labels[labels::INSTANCE_GROUP], "controller-machine");
        assert_eq!(labels[labels::INSTANCE_ID], "i-0c0ffee0c0ffee001");
        assert_eq!(labels[labels::LIFECYCLE], "on-demand");
        assert!(!labels.contains_key(labels::GPU_PRESENT), "{labels:?}");
        assert!(!labels.contains_key(labels::EFA_PRESENT), "{labels:?}");

        let cluster = doc(&docs, "ClusterConfiguration");
        assert_eq!(cluster["apiVersion"], api.as_str());
        let version = match api {
            ApiVersion::V1beta3 => "v1.30.5",
            ApiVersion::V1beta4 => "v1.34.1",
        };
        assert_eq!(cluster["kubernetesVersion"], version);
        assert_eq!(cluster["controlPlaneEndpoint"], "10.1.0.10:6443");
        assert_eq!(cluster["imageRepository"], "registry.k8s.io");
        // 300 nodes + 25% headroom = 375 nodes: a /15 with /24 per node.
        assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/15");
        assert_eq!(cluster["networking"]["serviceSubnet"], "10.96.0.0/12");
        let cm = args(&cluster["controllerManager"]["extraArgs"], api);
        assert_eq!(
            cm,
            BTreeMap::from([("node-cidr-mask-size".into(), "24".into())])
        );

        let kubelet = doc(&docs, "KubeletConfiguration");
        assert_eq!(kubelet["apiVersion"], "kubelet.config.k8s.io/v1beta1");
        assert_eq!(kubelet["cgroupDriver"], "systemd");
        assert!(kubelet.get("maxPods").is_none(), "{kubelet}");

        let net = r.pod_network().unwrap();
        assert_eq!(net.pod_subnet, cidr("10.244.0.0/15"));
        assert_eq!((net.nodes_needed, net.capacity), (375, 512));
        assert!(net.sized_automatically);
    }
}

#[test]
fn worker_document_has_what_kubeadm_join_reads() {
    for api in [ApiVersion::V1beta3, ApiVersion::V1beta4] {
        let r = render_worker(api);
        assert_eq!(r.kinds(), ["JoinConfiguration"]);
        assert!(r.pod_network().is_none());
        let docs = self::docs(&r);
        assert_eq!(docs.len(), 1);
        let join = doc(&docs, "JoinConfiguration");
        assert_eq!(join["apiVersion"], api.as_str());
        let bt = &join["discovery"]["bootstrapToken"];
        assert_eq!(bt["apiServerEndpoint"], "10.1.0.10:6443");
        assert_eq!(bt["token"], TOKEN);
        assert_eq!(
            bt["caCertHashes"],
            serde_json::json!([format!("sha256:{}", "3f".repeat(32))])
        );
        assert!(bt.get("unsafeSkipCAVerification").is_none());
        let reg = &join["nodeRegistration"];
        assert_eq!(reg["name"], "ip-10-1-7-21");
        assert_eq!(reg["criSocket"], "unix:///run/containerd/containerd.sock");
        assert_eq!(
            reg["taints"],
            serde_json::json!([{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}])
        );
        let kubelet_args = args(&reg["kubeletExtraArgs"], api);
        assert_eq!(kubelet_args["node-ip"], "10.1.7.21");
        let labels = labels_of(&kubelet_args);
        let want: BTreeMap<String, String> = [
            (labels::INSTANCE_TYPE, "p5.48xlarge"),
            (labels::INSTANCE_GROUP, "gpu-p5"),
            (labels::INSTANCE_ID, "i-0f00dfeed0000beef"),
            (labels::GPU_PRESENT, "true"),
            (labels::GPU_COUNT, "8"),
            (labels::EFA_PRESENT, "true"),
            (labels::LIFECYCLE, "spot"),
            (labels::REGION, "us-west-2"),
            (labels::ZONE, "us-west-2b"),
            (labels::GPU_PRODUCT, "NVIDIA-H100-80GB-HBM3"),
            (labels::ACCELERATOR, "nvidia-h100"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(labels, want);
        // The AWS cloud provider's id, which the cluster autoscaler maps by.
        assert_eq!(
            kubelet_args["provider-id"],
            "aws:///us-west-2b/i-0f00dfeed0000beef"
        );
    }
}

/// Labels a node may set on itself: outside `kubernetes.io`/`k8s.io`, or
/// in NodeRestriction's allow-list.
fn node_may_set(label: &str) -> bool {
    let (prefix, _) = label.split_once('/').unwrap_or(("", label));
    let restricted = |p: &str| {
        p == "kubernetes.io"
            || p.ends_with(".kubernetes.io")
            || p == "k8s.io"
            || p.ends_with(".k8s.io")
    };
    !restricted(prefix)
        || prefix == "kubelet.kubernetes.io"
        || prefix == "node.kubernetes.io"
        || [
            "kubernetes.io/hostname",
            "kubernetes.io/arch",
            "kubernetes.io/os",
            "topology.kubernetes.io/region",
            "topology.kubernetes.io/zone",
        ]
        .contains(&label)
}

#[test]
fn registration_labels_are_only_ones_a_node_may_set_on_itself() {
    let labels =
        kubeadm_config::node_labels(&identity(Role::Worker), &p5(), &Config::default()).unwrap();
    // type, group, id, region, zone, gpu present/count/product, accelerator,
    // EFA, lifecycle.
    assert_eq!(labels.len(), 11, "{labels:?}");
    assert_eq!(labels[labels::GPU_PRODUCT], "NVIDIA-H100-80GB-HBM3");
    assert_eq!(labels[labels::ACCELERATOR], "nvidia-h100");
    assert_eq!(labels[labels::ZONE], "us-west-2b");
    for name in labels.keys() {
        assert!(node_may_set(name), "{name} is forbidden to the node itself");
    }
    assert!(!node_may_set(labels::ROLE_WORKER));
    assert!(!labels.contains_key(labels::ROLE_WORKER));
}

#[test]
fn gpu_taint_only_when_configured_and_only_on_gpu_workers() {
    let (mut config, kubeadm) = setup(ApiVersion::V1beta4);
    let taints = |config: &Config, hw: &Hardware| {
        let r = kubeadm_config::render_join(
            &identity(Role::Worker),
            config,
            hw,
            &token(),
            kubeadm,
            &discovery(),
        )
        .unwrap();
        docs(&r)[0]["nodeRegistration"].get("taints").cloned()
    };
    assert!(taints(&config, &p5()).is_some());
    assert!(taints(&config, &Hardware::default()).is_none());
    config.cluster.gpu_taint = false;
    assert!(taints(&config, &p5()).is_none());
    // A controller with GPUs keeps kubeadm's default taints only.
    config.cluster.gpu_taint = true;
    let r = kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &p5(),
        &token(),
        kubeadm,
    )
    .unwrap();
    assert!(
        doc(&docs(&r), "InitConfiguration")["nodeRegistration"]
            .get("taints")
            .is_none()
    );
}

#[test]
fn endpoint_overrides_ipv6_and_small_node_ranges() {
    let (mut config, kubeadm) = setup(ApiVersion::V1beta4);
    config.cluster.control_plane_endpoint = Some("k8s-api.internal".into());
    config.cluster.node_cidr_mask_size = 26;
    config.kubernetes.image_repository = "mirror.internal:5000/k8s".into();
    let r = kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &Hardware::default(),
        &token(),
        kubeadm,
    )
    .unwrap();
    let docs = self::docs(&r);
    let cluster = doc(&docs, "ClusterConfiguration");
    assert_eq!(cluster["controlPlaneEndpoint"], "k8s-api.internal:6443");
    assert_eq!(cluster["imageRepository"], "mirror.internal:5000/k8s");
    // 375 nodes of /26: a /17 would do, but never narrower than /16.
    assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/16");
    assert_eq!(
        args(
            &cluster["controllerManager"]["extraArgs"],
            ApiVersion::V1beta4
        )["node-cidr-mask-size"],
        "26"
    );
    // A /26 leaves 62 pod addresses: kubelet's default of 110 pods cannot fit.
    assert_eq!(doc(&docs, "KubeletConfiguration")["maxPods"], 62);

    config.cluster.control_plane_endpoint = None;
    let mut v6 = identity(Role::Controller);
    v6.address = "fd00:10::a".parse().unwrap();
    let r =
        kubeadm_config::render_init(&v6, &config, &Hardware::default(), &token(), kubeadm).unwrap();
    let docs = self::docs(&r);
    assert_eq!(
        doc(&docs, "ClusterConfiguration")["controlPlaneEndpoint"],
        "[fd00:10::a]:6443"
    );
    assert_eq!(
        doc(&docs, "InitConfiguration")["localAPIEndpoint"]["advertiseAddress"],
        "fd00:10::a"
    );

    config.cluster.control_plane_endpoint = Some("bad endpoint:x".into());
    let e = kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &Hardware::default(),
        &token(),
        kubeadm,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "endpoint_invalid", "{e}");
    assert!(
        e.to_string().contains("cluster.control_plane_endpoint"),
        "{e}"
    );
}

#[test]
fn token_appears_only_in_the_rendered_bytes() {
    for api in [ApiVersion::V1beta3, ApiVersion::V1beta4] {
        for r in [render_controller(api), render_worker(api)] {
            assert!(text(&r).contains(TOKEN));
            let debug = format!("{r:?}");
            assert!(!debug.contains(SECRET), "{debug}");
            assert!(debug.contains("redacted"), "{debug}");
        }
    }
    // Errors raised while rendering do not carry it either.
    let (config, kubeadm) = setup(ApiVersion::V1beta4);
    let mut no_pin = discovery();
    no_pin.ca_cert_hashes.clear();
    let e = kubeadm_config::render_join(
        &identity(Role::Worker),
        &config,
        &p5(),
        &token(),
        kubeadm,
        &no_pin,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "ca_pin_malformed");
    assert!(!format!("{e} {e:?}").contains(SECRET));
}

#[test]
fn wrong_inputs_are_refused_with_their_codes() {
    let (config, kubeadm) = setup(ApiVersion::V1beta4);
    let hw = Hardware::default();
    let code = |r: Result<Rendered, ClusterConfigError>| {
        let e = r.unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
        (e.kind(), e.to_string())
    };
    let (c, m) = code(kubeadm_config::render_init(
        &identity(Role::Worker),
        &config,
        &hw,
        &token(),
        kubeadm,
    ));
    assert_eq!(c, "kubeadm_role_mismatch_bug", "{m}");
    let (c, m) = code(kubeadm_config::render_join(
        &identity(Role::Controller),
        &config,
        &hw,
        &token(),
        kubeadm,
        &discovery(),
    ));
    assert_eq!(c, "kubeadm_role_mismatch_bug", "{m}");

    let mut bad_group = identity(Role::Worker);
    bad_group.group = "gpu workers".into();
    let (c, m) = code(kubeadm_config::render_join(
        &bad_group,
        &config,
        &hw,
        &token(),
        kubeadm,
        &discovery(),
    ));
    assert_eq!(c, "label_value_invalid", "{m}");
    assert!(
        m.contains(labels::INSTANCE_GROUP) && m.contains("gpu workers"),
        "{m}"
    );

    let mut bad_name = identity(Role::Worker);
    bad_name.node_name = "GPU_1".into();
    let (c, m) = code(kubeadm_config::render_join(
        &bad_name,
        &config,
        &hw,
        &token(),
        kubeadm,
        &discovery(),
    ));
    assert_eq!(c, "node_name_invalid", "{m}");
    assert!(m.contains("node.name"), "{m}");

    let mut bad_pin = discovery();
    bad_pin.ca_cert_hashes.push("sha256:1234".into());
    let (c, m) = code(kubeadm_config::render_join(
        &identity(Role::Worker),
        &config,
        &hw,
        &token(),
        kubeadm,
        &bad_pin,
    ));
    assert_eq!(c, "ca_pin_malformed", "{m}");
    assert!(m.contains("1 malformed"), "{m}");

    let old = KubeadmVersion::parse("v1.32.3").unwrap();
    let (c, m) = code(kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &hw,
        &token(),
        old,
    ));
    assert_eq!(c, "kubeadm_version_skew", "{m}");
    assert!(m.contains("v1.32.3") && m.contains("1.34.1"), "{m}");
}

#[test]
fn api_version_follows_kubeadm() {
    let api = |s: &str| KubeadmVersion::parse(s).unwrap().api_version().unwrap();
    assert_eq!(api("v1.24.0"), ApiVersion::V1beta3);
    assert_eq!(api("v1.30.14"), ApiVersion::V1beta3);
    assert_eq!(api("v1.31.0"), ApiVersion::V1beta4);
    assert_eq!(api("v1.34.1\n"), ApiVersion::V1beta4);
    assert_eq!(api("v1.31.2-eks-7f9249a"), ApiVersion::V1beta4);
    let e = KubeadmVersion::parse("").unwrap_err();
    assert_eq!(e.kind(), "kubeadm_version_unreadable");
    let e = KubeadmVersion::parse("1.31").unwrap_err();
    assert!(e.to_string().contains("`1.31`"), "{e}");
    let e = KubeadmVersion::parse("v1.23.17")
        .unwrap()
        .api_version()
        .unwrap_err();
    assert_eq!(e.kind(), "kubeadm_too_old");
}

// ---------------------------------------------------------------------------
// Pod network sizing.

#[test]
fn pod_subnet_sizing_table() {
    // Nodes needed → the automatically chosen pod network (/24 per node).
    let table = [
        (1, "10.244.0.0/16"),
        (256, "10.244.0.0/16"),
        (257, "10.244.0.0/15"),
        (1024, "10.244.0.0/14"),
        (4096, "10.240.0.0/12"),
        (5000, "10.224.0.0/11"),
        (65536, "10.0.0.0/8"),
    ];
    for (nodes, want) in table {
        let got = auto_pod_subnet(nodes, 24).unwrap();
        assert_eq!(got, cidr(want), "{nodes} nodes");
        assert!(got.slices(24) >= nodes);
    }
    assert_eq!(auto_pod_subnet(65537, 24), None);
    // With a /26 per node, 1024 nodes fit in a /16.
    assert_eq!(auto_pod_subnet(1024, 26), Some(cidr("10.244.0.0/16")));
}

fn plan(
    cluster: &ClusterConfig,
    expected: u32,
) -> Result<pod_network::PodNetwork, pod_network::Error> {
    pod_network::plan(cluster, expected, &inventory_addresses(expected))
}

#[test]
fn headroom_is_added_before_sizing() {
    let c = ClusterConfig::default();
    let cases = [
        (1, "10.244.0.0/16", 5),
        (200, "10.244.0.0/16", 250),
        (256, "10.244.0.0/15", 320),
        (800, "10.244.0.0/14", 1000),
        (3000, "10.240.0.0/12", 3750),
        (4000, "10.224.0.0/11", 5000),
    ];
    for (expected, subnet, needed) in cases {
        let net = plan(&c, expected).unwrap();
        assert_eq!(net.pod_subnet, cidr(subnet), "{expected} expected");
        assert_eq!(net.nodes_needed, needed, "{expected} expected");
        assert!(net.capacity >= net.nodes_needed);
    }
    let none = ClusterConfig {
        node_headroom_percent: 0,
        ..ClusterConfig::default()
    };
    assert_eq!(
        plan(&none, 256).unwrap().nodes_needed,
        260,
        "at least 4 extra nodes"
    );
}

#[test]
fn user_pod_subnet_too_small_is_refused_naming_key_capacity_and_need() {
    let mut c = ClusterConfig {
        pod_subnet: Some(cidr("10.244.0.0/16")),
        ..ClusterConfig::default()
    };
    let e = plan(&c, 300).unwrap_err();
    assert_eq!(e.kind(), "pod_subnet_too_small");
    let m = e.to_string();
    for part in [
        "cluster.pod_subnet 10.244.0.0/16",
        "fits 256 nodes",
        "375 are needed",
        "300 expected",
        "/15",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }
    // A big enough one is kept as given.
    c.pod_subnet = Some(cidr("100.64.0.0/14"));
    let net = plan(&c, 300).unwrap();
    assert_eq!(net.pod_subnet, cidr("100.64.0.0/14"));
    assert!(!net.sized_automatically);
    assert_eq!(net.capacity, 1024);
}

#[test]
fn overlap_with_service_subnet_is_refused_naming_both() {
    let c = ClusterConfig {
        pod_subnet: Some(cidr("10.0.0.0/8")),
        node_cidr_mask_size: 24,
        ..ClusterConfig::default()
    };
    let e = pod_network::plan(&c, 10, &[]).unwrap_err();
    assert_eq!(e.kind(), "subnets_overlap");
    let m = e.to_string();
    assert!(
        m.contains("10.0.0.0/8") && m.contains("10.96.0.0/12"),
        "{m}"
    );
    assert!(m.contains("cluster.pod_subnet"), "{m}");

    // The automatic choice is checked the same way.
    let c = ClusterConfig {
        service_subnet: cidr("10.250.0.0/16"),
        ..ClusterConfig::default()
    };
    let e = pod_network::plan(&c, 4000, &[]).unwrap_err();
    assert_eq!(e.kind(), "subnets_overlap");
    let m = e.to_string();
    assert!(
        m.contains("10.224.0.0/11") && m.contains("10.250.0.0/16"),
        "{m}"
    );
    assert!(m.contains("sized automatically"), "{m}");
}

#[test]
fn overlap_with_node_addresses_is_refused_naming_both_ranges() {
    let c = ClusterConfig {
        pod_subnet: Some(cidr("10.1.0.0/16")),
        ..ClusterConfig::default()
    };
    let e = plan(&c, 100).unwrap_err();
    assert_eq!(e.kind(), "node_address_in_subnet");
    let m = e.to_string();
    for part in [
        "cluster.pod_subnet 10.1.0.0/16",
        "100 node address(es)",
        "10.1.0.10",
        "10.1.0.10–10.1.0.109",
    ] {
        assert!(m.contains(part), "{part:?} missing: {m}");
    }

    let c = ClusterConfig {
        service_subnet: cidr("10.1.0.0/24"),
        ..ClusterConfig::default()
    };
    let addresses = [
        IpAddr::V4(Ipv4Addr::new(10, 2, 0, 5)),
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 200)),
        "fd00::1".parse().unwrap(),
    ];
    let e = pod_network::plan(&c, 3, &addresses).unwrap_err();
    assert_eq!(e.kind(), "node_address_in_subnet");
    let m = e.to_string();
    assert!(m.contains("cluster.service_subnet 10.1.0.0/24"), "{m}");
    assert!(
        m.contains("10.1.0.200") && m.contains("10.1.0.200–10.2.0.5"),
        "{m}"
    );

    // Through the renderer, before anything is written.
    let (mut config, kubeadm) = setup(ApiVersion::V1beta4);
    config.cluster.pod_subnet = Some(cidr("10.0.0.0/14"));
    let e = kubeadm_config::render_init(
        &identity(Role::Controller),
        &config,
        &Hardware::default(),
        &token(),
        kubeadm,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "node_address_in_subnet", "{e}");
}

#[test]
fn other_network_refusals() {
    let code = |c: &ClusterConfig, n: u32| plan(c, n).unwrap_err().kind();
    let mut c = ClusterConfig {
        node_cidr_mask_size: 16,
        ..ClusterConfig::default()
    };
    assert_eq!(
        code(&c, 300),
        "pod_network_no_room",
        "300 /16 ranges do not fit in 10.0.0.0/8"
    );
    for mask in [15, 29] {
        c.node_cidr_mask_size = mask;
        assert_eq!(code(&c, 3), "node_cidr_mask_out_of_range");
    }
    let c = ClusterConfig {
        pod_subnet: Some(cidr("100.0.0.0/7")),
        ..ClusterConfig::default()
    };
    assert_eq!(
        code(&c, 3),
        "pod_subnet_too_wide",
        "more than 16 bits wider than /24"
    );
    let mut c = ClusterConfig {
        service_subnet: cidr("10.96.0.0/11"),
        ..ClusterConfig::default()
    };
    assert_eq!(code(&c, 3), "service_subnet_size");
    c.service_subnet = cidr("10.96.0.0/29");
    assert_eq!(code(&c, 3), "service_subnet_size");
}

// ---------------------------------------------------------------------------
// Bootstrap tokens.

fn well_formed(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    t.split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

#[test]
fn generated_tokens_have_the_format_and_look_uniform() {
    let tokens: Vec<BootstrapToken> = (0..2000)
        .map(|_| BootstrapToken::generate().unwrap())
        .collect();
    let mut counts: BTreeMap<u8, u32> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for t in &tokens {
        let whole = t.expose_token();
        assert!(well_formed(&whole), "{t}");
        assert_eq!(BootstrapToken::parse(&whole).unwrap(), *t);
        assert!(seen.insert(whole), "a token repeated");
        for b in t.expose_secret().bytes().chain(t.id().bytes()) {
            *counts.entry(b).or_default() += 1;
        }
    }
    // 44 000 characters over 36 symbols: about 1222 each (σ ≈ 35); a
    // modulo bias or a broken generator lands far outside 1000..1450.
    assert_eq!(counts.len(), 36, "{counts:?}");
    for (c, n) in &counts {
        assert!(
            (1000..1450).contains(n),
            "{} appears {n} times",
            char::from(*c)
        );
    }
}

#[test]
fn token_parse_and_redaction() {
    let t = token();
    assert_eq!(t.id(), "abcdef");
    assert_eq!(t.expose_secret(), SECRET);
    assert_eq!(t.expose_token(), TOKEN);
    assert_eq!(t.to_string(), "abcdef.<redacted>");
    let debug = format!("{t:?} {t:#?}");
    assert!(
        !debug.contains(SECRET) && debug.contains("abcdef"),
        "{debug}"
    );
    assert_eq!(t.secret_name(), "bootstrap-token-abcdef");

    for bad in [
        "abcdef0123456789abcdef",
        "abcde.0123456789abcdef",
        "abcdef.0123456789abcde",
        "ABCDEF.0123456789abcdef",
        "abcdef.0123456789abcdeF",
        "abcdef.0123456789abcde!",
        "abcdef.0123456789abcdef\n",
        "",
    ] {
        let e = BootstrapToken::parse(bad).unwrap_err();
        assert_eq!(e.kind(), "bootstrap_token_malformed");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("0123456789abcde"), "{shown}");
    }
}

#[test]
fn bootstrap_token_secret_object() {
    let now = UNIX_EPOCH + Duration::from_secs(1_795_366_800); // 2026-11-22T17:00:00Z
    let ttl: TokenTtl = "1h30m".parse().unwrap();
    let s = token().secret_object(ttl, now, "hpk8s: join token for ml-cluster");
    assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
    assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()[bootstrap_token::MANAGED_BY_LABEL],
        "hpk8s"
    );
    let data: BTreeMap<String, String> = s
        .data
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect();
    let want: BTreeMap<String, String> = [
        ("token-id", "abcdef"),
        ("token-secret", SECRET),
        ("expiration", "2026-11-22T18:30:00Z"),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        (
            "auth-extra-groups",
            "system:bootstrappers:kubeadm:default-node-token",
        ),
        ("description", "hpk8s: join token for ml-cluster"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(data, want);
    // As sent to the API server: base64 data, with apiVersion and kind.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["apiVersion"], "v1");
    assert_eq!(json["kind"], "Secret");
    assert_eq!(json["data"]["token-id"], "YWJjZGVm");
    // Expiration follows the clock it is given.
    let later = token().secret_object(ttl, SystemTime::UNIX_EPOCH + Duration::from_secs(3600), "");
    assert_eq!(
        later.data.unwrap()["expiration"].0,
        b"1970-01-01T02:30:00Z".to_vec()
    );
}

// ---------------------------------------------------------------------------
// Token lifetimes and the [cluster] config section.

#[test]
fn durations() {
    let ok = [
        ("30m", 1800),
        ("4h", 14_400),
        ("1h30m", 5400),
        ("90s", 90),
        ("1h30m15s", 5415),
        ("0h45m", 2700),
        ("168h", 604_800),
    ];
    for (s, secs) in ok {
        assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs), "{s}");
    }
    for bad in [
        "",
        "4",
        "h",
        "4d",
        "30m1h",
        "1h1h",
        "1.5h",
        "-1h",
        " 4h",
        "4h ",
        "4H",
        "1h 30m",
        "9999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    let ttl = |s: &str| s.parse::<TokenTtl>();
    assert_eq!(ttl("90m").unwrap().to_string(), "1h30m");
    assert_eq!(ttl("90m").unwrap().go_duration(), "1h30m0s");
    assert_eq!(ttl("4h").unwrap().go_duration(), "4h0m0s");
    assert_eq!(ttl("30m").unwrap().go_duration(), "30m0s");
    assert_eq!(ttl("75s").unwrap().go_duration(), "1m15s");
    assert_eq!(TokenTtl::default().to_string(), "4h");
    assert!(ttl("59s").is_err());
    assert!(ttl("0m").is_err());
    assert!(ttl("169h").is_err());
    assert!(ttl("1m").is_ok() && ttl("168h").is_ok());
}

fn parse_config(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/hpk8s/config.toml"))
}

#[test]
fn cluster_section_parses_validates_and_shows() {
    let c = parse_config(
        "[cluster]\npod_subnet = \"100.64.0.0/12\"\nservice_subnet = \"172.20.0.0/16\"\nnode_cidr_mask_size = 25\nnode_headroom_percent = 50\ntoken_ttl = \"1h30m\"\ngpu_taint = true\ncontrol_plane_endpoint = \"api.internal\"\n",
    )
    .unwrap();
    assert_eq!(c.cluster.pod_subnet, Some(cidr("100.64.0.0/12")));
    assert_eq!(c.cluster.service_subnet, cidr("172.20.0.0/16"));
    assert_eq!(c.cluster.token_ttl.duration(), Duration::from_secs(5400));
    // `config show` writes it back in a form that parses to the same.
    let shown = c.show();
    assert!(shown.contains("token_ttl = \"1h30m\""), "{shown}");
    assert_eq!(parse_config(&shown).unwrap(), c);

    let invalid = [
        (
            "[cluster]\n\npod_subnet = \"10.244.1.0/16\"\n",
            3,
            "did you mean `10.244.0.0/16`",
        ),
        (
            "[cluster]\nservice_subnet = \"10.96.0.0\"\n",
            2,
            "not an IPv4 CIDR",
        ),
        ("[cluster]\ntoken_ttl = \"4 hours\"\n", 2, "not a duration"),
        ("[cluster]\ntoken_ttl = \"0s\"\n", 2, "out of range"),
    ];
    for (text, line, part) in invalid {
        let e = parse_config(text).unwrap_err();
        assert_eq!(e.kind(), "config_invalid_value", "{e}");
        assert!(
            matches!(&e, ConfigError::Invalid { line: l, .. } if *l == line),
            "{e}"
        );
        assert!(e.to_string().contains(part), "{part:?} missing: {e}");
    }
    let e = parse_config("[cluster]\npod_cidr = \"10.0.0.0/8\"\n").unwrap_err();
    assert_eq!(e.kind(), "config_unknown_key", "{e}");
}
