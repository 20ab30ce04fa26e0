//! Elastic EC2 groups (`identity.source = "ec2"`): a node that nobody
//! lists learns itself from IMDSv2 (the IMDS double) and its role and group
//! from the config; its registration carries the group's labels and taints
//! and its provider id; bad elastic input fails naming what to set.

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use harness::imds::FakeImds;
use lifecycle::cluster::kubeadm_config::{self, JoinDiscovery, KubeadmVersion};
use lifecycle::cluster::labels;
use lifecycle::config::Config;
use lifecycle::hardware::Hardware;
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};
use lifecycle::identity::{
    self, IdentityError, Lifecycle, NodeIdentity, Overrides, RetryPolicy, Role, TopologySource,
};

fn host(root: &Path) -> Host {
    Host::new(
        root,
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces(vec!["10.1.0.1".parse().unwrap()])),
    )
}

fn overrides() -> Overrides {
    Overrides {
        imds_retry: RetryPolicy {
            retries: 1,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        // Never the real link-local address.
        ec2_imds_endpoint: "http://127.0.0.1:9".into(),
        ..Overrides::default()
    }
}

/// The config a GPU spot group ships in its user-data.
fn gpu_spot_config(imds: Option<&FakeImds>, extra: &str) -> String {
    let endpoint = imds
        .map(|i| format!("imds_endpoint = \"{}\"\n", i.url()))
        .unwrap_or_default();
    format!(
        r#"[identity]
source = "ec2"
cluster_name = "training"
controllers = ["10.0.1.10"]
{endpoint}
[node]
role = "worker"
group = "gpu-spot"
{extra}
[groups.gpu-spot]
labels = {{ "lifecycle" = "Ec2Spot", "nodegroup-role" = "gpu-worker", "node-role.kubernetes.io/gpu" = "" }}
taints = ["nvidia.com/gpu=true:NoSchedule"]
min_nodes = 0
max_nodes = 16

[groups.general]
min_nodes = 2
max_nodes = 20
"#
    )
}

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/hpk8s/config.toml")).unwrap()
}

async fn resolve(config: &Config) -> Result<NodeIdentity, IdentityError> {
    let root = tempfile::tempdir().unwrap();
    identity::resolve_with(&host(root.path()), config, &overrides()).await
}

fn p5() -> Hardware {
    Hardware {
        nvidia_gpus: 8,
        efa_devices: 32,
        gpu_device_id: Some(0x2330),
    }
}

#[tokio::test]
async fn a_spot_gpu_worker_learns_itself_from_imds_without_a_node_list() {
    let imds = FakeImds::start();
    imds.spot();
    let config = parse(&gpu_spot_config(Some(&imds), ""));
    let id = resolve(&config).await.unwrap();
    assert_eq!(id.source, TopologySource::Ec2);
    assert_eq!(id.role, Role::Worker);
    assert_eq!(id.group, "gpu-spot");
    assert_eq!(id.cluster.name, "training");
    assert_eq!(id.address, "10.1.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(id.node_name, "ip-10-1-0-1.us-west-2.compute.internal");
    assert_eq!(id.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(id.instance_type.as_deref(), Some("p5.48xlarge"));
    assert_eq!(id.lifecycle, Some(Lifecycle::Spot));
    assert_eq!(
        id.provider_id().as_deref(),
        Some("aws:///us-west-2a/i-0123456789abcdef0")
    );
    // Only the controllers and itself are known; the groups by size.
    let peers: Vec<(IpAddr, Role)> = id.peers.iter().map(|p| (p.address, p.role)).collect();
    assert_eq!(
        peers,
        [
            ("10.0.1.10".parse().unwrap(), Role::Controller),
            ("10.1.0.1".parse().unwrap(), Role::Worker)
        ]
    );
    // Sized for the controllers, itself and every group's maximum.
    assert_eq!(id.expected_nodes, 2 + 16 + 20);
    // No IMDS request beyond the instance's own facts.
    assert!(imds.request_count() > 0);
}

#[tokio::test]
async fn registration_carries_the_groups_labels_taints_and_provider_id() {
    let imds = FakeImds::start();
    imds.spot();
    let config = parse(&gpu_spot_config(Some(&imds), ""));
    let id = resolve(&config).await.unwrap();
    let labels = kubeadm_config::node_labels(&id, &p5(), &config).unwrap();
    assert_eq!(labels[labels::LIFECYCLE], "spot");
    assert_eq!(labels["lifecycle"], "Ec2Spot");
    assert_eq!(labels["nodegroup-role"], "gpu-worker");
    assert_eq!(labels[labels::ACCELERATOR], "nvidia-h100");
    assert_eq!(labels[labels::ZONE], "us-west-2a");
    // Every registration label is one the kubelet may set (the test API
    // server's NodeRestriction list, kept apart from the library's).
    for key in labels.keys() {
        assert!(harness::kube_api::authz::node_may_set_label(key), "{key}");
    }
    // The one it may not set goes to the controller, not away.
    assert!(!labels.contains_key("node-role.kubernetes.io/gpu"));
    assert_eq!(
        kubeadm_config::group_labels_for_the_controller(&config, "gpu-spot"),
        BTreeMap::from([("node-role.kubernetes.io/gpu".to_string(), String::new())])
    );
    let taints = kubeadm_config::node_taints(&id, &config, &p5());
    assert_eq!(
        taints.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["nvidia.com/gpu=true:NoSchedule"]
    );
}

#[tokio::test]
async fn golden_elastic_gpu_spot_worker_in_both_api_versions() {
    let imds = FakeImds::start();
    imds.spot();
    let config = parse(&gpu_spot_config(Some(&imds), ""));
    let id = resolve(&config).await.unwrap();
    let token =
        lifecycle::cluster::bootstrap_token::BootstrapToken::parse("abcdef.0123456789abcdef")
            .unwrap();
    for (api, kubeadm) in [("v1beta3", "v1.30.4"), ("v1beta4", "v1.34.1")] {
        let mut config = config.clone();
        config.kubernetes.version = kubeadm.trim_start_matches('v').into();
        let rendered = kubeadm_config::render_join(
            &id,
            &config,
            &p5(),
            &token,
            KubeadmVersion::parse(kubeadm).unwrap(),
            &JoinDiscovery {
                api_server_endpoint: "10.0.1.10:6443".into(),
                ca_cert_hashes: vec![format!("sha256:{}", "3f".repeat(32))],
            },
        )
        .unwrap();
        let text = String::from_utf8(rendered.as_bytes().to_vec())
            .unwrap()
            .replace("abcdef.0123456789abcdef", "<token>");
        assert!(!text.contains("abcdef.0123456789abcdef"));
        harness::golden::check(
            &format!("kubeadm/elastic-gpu-spot-worker-{api}.yaml"),
            &text,
        );
    }
}

#[tokio::test]
async fn bad_elastic_input_names_what_to_set() {
    let imds = FakeImds::start();
    let full = gpu_spot_config(Some(&imds), "");
    for (broken, kind, key) in [
        (
            full.replace("cluster_name = \"training\"\n", ""),
            "elastic_config_incomplete",
            "identity.cluster_name",
        ),
        (
            full.replace("role = \"worker\"\n", ""),
            "elastic_config_incomplete",
            "node.role",
        ),
        (
            full.replace("group = \"gpu-spot\"\n", ""),
            "elastic_config_incomplete",
            "node.group",
        ),
        (
            full.replace("controllers = [\"10.0.1.10\"]\n", ""),
            "elastic_config_incomplete",
            "identity.controllers",
        ),
    ] {
        let e = resolve(&parse(&broken)).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(key), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    // Not EC2 and no IMDS endpoint: only with address and name given.
    let no_imds = gpu_spot_config(None, "");
    let e = resolve(&parse(&no_imds)).await.unwrap_err();
    assert_eq!(e.kind(), "imds_required", "{e}");
    assert!(e.to_string().contains("node.address and node.name"), "{e}");
    let given = gpu_spot_config(None, "address = \"10.1.0.9\"\nname = \"gpu-9\"\n");
    let id = resolve(&parse(&given)).await.unwrap();
    assert_eq!(id.node_name, "gpu-9");
    assert!(
        id.provider_id().is_none(),
        "no instance facts, no provider id"
    );

    // IMDS configured but not answering.
    let dead = full.replace(&imds.url(), "http://127.0.0.1:9");
    let e = resolve(&parse(&dead)).await.unwrap_err();
    assert_eq!(e.kind(), "imds_required", "{e}");
    assert!(e.to_string().contains("did not answer"), "{e}");

    // A label key that is not one, a taint without an effect: refused when
    // the config loads, naming the group.
    for (bad, needle) in [
        (
            full.replace("\"nodegroup-role\"", "\"bad key\""),
            "groups.gpu-spot.labels",
        ),
        (
            full.replace("true:NoSchedule", "true"),
            "groups.gpu-spot.taints",
        ),
    ] {
        let e = Config::parse(&bad, Path::new("c.toml")).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = Config::parse(
        &full.replace("min_nodes = 2", "min_nodes = 30"),
        Path::new("c.toml"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("groups.general.max_nodes"), "{e}");
}

// ---------------------------------------------------------------- scale-in

use harness::kube_api::{NodeSpec, TestApiServer};
use lifecycle::agent::scale_in;
use lifecycle::host::CmdOutput;

async fn admin(api: &TestApiServer) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(api.admin_kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn member(name: &str, group: &str, last: u8) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        addresses: vec![("InternalIP".into(), format!("10.1.9.{last}"))],
        labels: vec![(labels::INSTANCE_GROUP.into(), group.into())],
        taints: Vec::new(),
    }
}

/// Marks `name` NotReady since `ago`.
fn not_ready_since(api: &TestApiServer, name: &str, ago: Duration) {
    api.set_ready(name, false).unwrap();
    let mut node = api.get_json("nodes", "", name).unwrap();
    let since = lifecycle::values::time::rfc3339(std::time::SystemTime::now() - ago);
    for c in node["status"]["conditions"].as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["lastTransitionTime"] = serde_json::json!(since);
        }
    }
    api.apply_json(node).unwrap();
}

#[tokio::test]
async fn nodes_gone_without_a_clean_shutdown_are_removed_a_share_at_a_time() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    let config = parse(
        "[groups.gpu-spot]\nremove_not_ready_after_secs = 600\n[groups.static]\nlabels = { \"a\" = \"b\" }\n",
    );
    for i in 0..20u8 {
        let name = format!("gpu-{i:02}");
        api.register_node(&member(&name, "gpu-spot", i)).unwrap();
        api.set_ready(&name, true).unwrap();
    }
    api.register_node(&member("static-0", "static", 100))
        .unwrap();
    // Five gone for an hour (gpu-00 longest), one for a minute, and a
    // NotReady node of a group without the setting.
    for (i, mins) in [(0u8, 90u64), (1, 80), (2, 70), (3, 65), (4, 61)] {
        not_ready_since(&api, &format!("gpu-{i:02}"), Duration::from_secs(mins * 60));
    }
    not_ready_since(&api, "gpu-05", Duration::from_secs(60));
    not_ready_since(&api, "static-0", Duration::from_secs(5 * 3600));

    // 10 % of 20 per pass, longest NotReady first.
    assert_eq!(scale_in::prune(&client, &config).await.unwrap(), 2);
    let left = api.names("nodes", None);
    assert!(
        !left.contains(&"gpu-00".to_string()) && !left.contains(&"gpu-01".to_string()),
        "{left:?}"
    );
    assert!(left.contains(&"gpu-02".to_string()));
    // The share is of the group's current Nodes: 18, 17, 16 → one each.
    for want in [1, 1, 1, 0] {
        assert_eq!(scale_in::prune(&client, &config).await.unwrap(), want);
    }
    let left = api.names("nodes", None);
    assert_eq!(left.len(), 21 - 5, "{left:?}");
    // Within the grace period, and outside a group with it: kept.
    assert!(left.contains(&"gpu-05".to_string()) && left.contains(&"static-0".to_string()));
}

#[tokio::test]
async fn a_worker_powering_off_deletes_its_own_node_and_a_reboot_does_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = TestApiServer::start().await.unwrap();
    for (jobs, deleted) in [
        (
            "1 poweroff.target start waiting\n2 kubelet.service stop running\n",
            true,
        ),
        (
            "1 reboot.target start waiting\n2 kubelet.service stop running\n",
            false,
        ),
        ("", false),
    ] {
        api.register_node(&member("gpu-9", "gpu-spot", 9)).unwrap();
        let root = tempfile::tempdir().unwrap();
        let kubelet_conf = root.path().join("etc/kubernetes/kubelet.conf");
        std::fs::create_dir_all(kubelet_conf.parent().unwrap()).unwrap();
        std::fs::copy(api.node_kubeconfig("gpu-9").unwrap(), &kubelet_conf).unwrap();
        let runner = ScriptedRunner::new();
        runner.on(&["systemctl", "list-jobs"], CmdOutput::ok(jobs));
        let host = Host::new(
            root.path(),
            Arc::new(runner),
            Arc::new(FixedInterfaces(vec!["10.1.9.9".parse().unwrap()])),
        );
        let config = parse(&gpu_spot_config(
            None,
            "address = \"10.1.9.9\"\nname = \"gpu-9\"\n",
        ));
        let id = identity::resolve_with(&host, &config, &overrides())
            .await
            .unwrap();
        let cx = lifecycle::cluster::context::Context::new(&host, &config, &id);
        scale_in::on_shutdown(&cx).await;
        let exists = api.get_json("nodes", "", "gpu-9").is_some();
        assert_eq!(!exists, deleted, "jobs {jobs:?}");
        // The kubelet's own credential did it (NodeRestriction lets a node
        // delete only itself).
        if deleted {
            assert!(
                api.requests()
                    .iter()
                    .any(|r| r.is("DELETE", "/api/v1/nodes/gpu-9") && r.user == "system:node:gpu-9"),
                "{:?}",
                api.requests()
            );
        }
    }
}
