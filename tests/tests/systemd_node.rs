//! `hpk8s bootstrap --phase prepare` on a real systemd node shaped like a
//! HyperPod instance: instance store mounted at `/opt/dlami/nvme` (a
//! loop-mounted xfs), `resource_config.json` listing this node's address in
//! a worker group, Kubernetes binaries from a mirror laid out like
//! `dl.k8s.io` and served on the node's own loopback.
//!
//! After the run containerd must be active with systemd cgroups and its data
//! on the instance store, the node's own `ip_forward` on (the host's
//! untouched), kubelet installed and enabled, and a second (dry) run must
//! plan nothing.

use std::net::{Ipv4Addr, SocketAddr};

use harness::mirror::{MirrorBuilder, MirrorServer};
use harness::netns::Netns;
use harness::node::{self, LoopXfs, NspawnNode};

/// This node's `CustomerIpAddress` in the fixture.
const NODE_ADDRESS: &str = "10.1.38.128";
const K8S_VERSION: &str = "1.34.1";
const BINARIES: [&str; 3] = ["kubelet", "kubeadm", "kubectl"];
const HOST_IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn resource_config() -> String {
    serde_json::json!({
        "ClusterConfig": {
            "ClusterArn": "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr",
            "ClusterName": "ml-cluster"
        },
        "InstanceGroups": [
            { "Name": "controller-machine", "InstanceType": "ml.m5.2xlarge",
              "Instances": [ { "AgentIpAddress": "172.16.102.203", "CustomerIpAddress": "10.1.113.28",
                               "InstanceId": "i-07259dd159a1c7130", "InstanceName": "controller-machine-1" } ] },
            { "Name": "worker-group-1", "InstanceType": "ml.p5.48xlarge",
              "Instances": [ { "AgentIpAddress": "172.16.100.157", "CustomerIpAddress": NODE_ADDRESS,
                               "InstanceId": "i-0cbbe3075137ffa1d", "InstanceName": "worker-group-1-1" },
                             { "AgentIpAddress": "172.16.98.182", "CustomerIpAddress": "10.1.29.16",
                               "InstanceId": "i-0cc2532921ec06344", "InstanceName": "worker-group-1-2" } ] }
        ]
    })
    .to_string()
}

fn config_toml(port: u16) -> String {
    format!(
        r#"[identity]
controller_groups = ["controller-machine"]

[kubernetes]
version = "{K8S_VERSION}"

[packages]
source = "mirror"
mirror_url = "http://127.0.0.1:{port}"
allow_insecure_mirror = true
"#
    )
}

fn host_ip_forward() -> String {
    std::fs::read_to_string(HOST_IP_FORWARD)
        .expect("read host ip_forward")
        .trim()
        .to_string()
}

#[test]
fn prepare_on_a_hyperpod_like_node() {
    if node::require() || harness::require(node::loop_xfs_available(), "losetup and mkfs.xfs") {
        return;
    }
    let host_forward = host_ip_forward();
    let xfs = LoopXfs::new(512 << 20).expect("loop xfs");

    let netns = Netns::new().expect("netns");
    netns
        .add_address(&format!("{NODE_ADDRESS}/32"), "lo")
        .expect("node address");
    // prepare must turn forwarding on, whatever a new namespace inherits.
    netns
        .set_sysctl("net.ipv4.ip_forward", "0")
        .expect("ip_forward off");
    let mirror = tempfile::tempdir().expect("mirror dir");
    let layout = MirrorBuilder::new(K8S_VERSION)
        .arch("amd64")
        .write(mirror.path())
        .expect("mirror layout");
    let listener = netns
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("mirror listener in the node's namespace");
    let port = listener.local_addr().expect("port").port();
    let _server = MirrorServer::serve_on(listener, mirror.path()).expect("mirror server");

    let node = NspawnNode::builder()
        .netns(netns)
        .bind_ro(harness::hpk8s_bin(), "/usr/local/bin/hpk8s")
        .bind(xfs.mount_point(), "/opt/dlami/nvme")
        .file(
            "/opt/ml/config/resource_config.json",
            resource_config(),
            0o600,
        )
        .file("/etc/hpk8s/config.toml", config_toml(port), 0o644)
        .boot()
        .expect("node boots");
    let diagnostics = |what: &str| {
        format!(
            "{what}\n--- journal containerd ---\n{}\n--- journal kubelet ---\n{}",
            node.journal("containerd"),
            node.journal("kubelet")
        )
    };

    // The fixture itself: the mirror answers on the node's loopback.
    let digest_path = format!("/v{K8S_VERSION}/bin/linux/amd64/kubeadm.sha256");
    let fetched = node
        .exec_ok(&[
            "bash",
            "-c",
            &format!(
                "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'GET {digest_path} HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
            ),
        ])
        .expect("fetch from the mirror inside the node");
    let kubeadm_digest = layout.sha256("kubeadm").expect("kubeadm digest");
    assert!(
        fetched.starts_with("HTTP/1.1 200") && fetched.contains(&kubeadm_digest),
        "{fetched}"
    );

    let out = node
        .exec(&["hpk8s", "bootstrap", "--phase", "prepare"])
        .expect("run hpk8s");
    assert!(
        out.status.success(),
        "{}",
        diagnostics(&format!(
            "hpk8s bootstrap --phase prepare failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    );

    // On a systemd host hpk8s logs to the journal.
    let journal = node
        .exec_ok(&["journalctl", "--no-pager", "-o", "cat", "-t", "hpk8s"])
        .unwrap_or_default();
    assert!(
        journal.contains("applying"),
        "hpk8s's progress is not in the journal:\n{journal}"
    );

    // containerd runs with systemd cgroups and its data on the instance store.
    let active = node.exec_ok(&["systemctl", "is-active", "containerd"]);
    assert_eq!(
        active.as_deref().ok(),
        Some("active"),
        "{}",
        diagnostics(&format!("{active:?}"))
    );
    let dump = node
        .exec_ok(&["containerd", "config", "dump"])
        .expect("containerd config dump");
    assert!(dump.contains("SystemdCgroup = true"), "{dump}");
    assert!(
        dump.contains(r#"root = "/opt/dlami/nvme/containerd""#),
        "{dump}"
    );
    let data = xfs.mount_point().join("containerd");
    let entries = std::fs::read_dir(&data)
        .unwrap_or_else(|e| panic!("{}: {e}", data.display()))
        .count();
    assert!(entries > 0, "{} is empty", data.display());

    // The node's own forwarding is on; the host's is untouched.
    assert_eq!(
        node.exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"])
            .unwrap(),
        "1"
    );
    assert_eq!(
        host_ip_forward(),
        host_forward,
        "the host's ip_forward changed"
    );

    // The binaries came from the mirror, and kubelet is enabled.
    for name in BINARIES {
        let installed = node.root().join("usr/bin").join(name);
        assert_eq!(
            std::fs::read(&installed).ok(),
            std::fs::read(layout.binary(name)).ok(),
            "{} is not the mirror's {name}",
            installed.display()
        );
    }
    assert_eq!(
        node.exec_ok(&["systemctl", "is-enabled", "kubelet"])
            .unwrap_or_else(|e| format!("{e:#}")),
        "enabled"
    );

    // A second run has nothing left to do.
    let plan = node
        .exec_ok(&[
            "hpk8s",
            "bootstrap",
            "--phase",
            "prepare",
            "--dry-run",
            "--output",
            "json",
        ])
        .expect("dry run");
    let parsed: serde_json::Value = serde_json::from_str(&plan).expect("plan is JSON");
    let changes: usize = parsed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["changes"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(changes, 0, "second run still plans changes:\n{plan}");
}
