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

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use harness::netns::Netns;
use harness::node::{self, LoopXfs, NspawnNode};
use sha2::{Digest, Sha256};

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
"#
    )
}

/// A stand-in for a Kubernetes binary: answers the usual version queries.
fn stand_in(binary: &str) -> String {
    format!(
        r#"#!/bin/sh
# hpk8s test stand-in for {binary} v{K8S_VERSION}
case "$*" in
  *json*) echo '{{"clientVersion":{{"gitVersion":"v{K8S_VERSION}"}}}}' ;;
  *short*) echo "v{K8S_VERSION}" ;;
  *version*) echo "Kubernetes v{K8S_VERSION}" ;;
  *) sleep infinity ;;
esac
"#
    )
}

/// Lays out `v{version}/bin/linux/amd64/{binary}` and `{binary}.sha256`
/// like `dl.k8s.io`; returns the stand-in contents by binary name.
fn write_mirror(dir: &Path) -> Vec<(&'static str, String)> {
    let bin = dir.join(format!("v{K8S_VERSION}/bin/linux/amd64"));
    std::fs::create_dir_all(&bin).expect("mirror dir");
    BINARIES
        .iter()
        .map(|b| {
            let contents = stand_in(b);
            std::fs::write(bin.join(b), &contents).expect("write binary");
            let digest = hex::encode(Sha256::digest(contents.as_bytes()));
            std::fs::write(bin.join(format!("{b}.sha256")), digest).expect("write digest");
            (*b, contents)
        })
        .collect()
}

/// Serves files under `root` over HTTP/1.1 (GET and HEAD, one request per
/// connection) until the process exits.
fn serve_dir(listener: TcpListener, root: PathBuf) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let _ = answer(conn, &root);
            });
        }
    });
}

fn answer(mut conn: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    let file = (!path.split('/').any(|c| c == ".."))
        .then(|| root.join(path.trim_start_matches('/')))
        .filter(|f| f.is_file());
    match (method, file) {
        ("GET" | "HEAD", Some(f)) => {
            let body = std::fs::read(f)?;
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method == "GET" {
                conn.write_all(&body)?;
            }
        }
        _ => write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
    }
    conn.flush()
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
    let binaries = write_mirror(mirror.path());
    let listener = netns
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("mirror listener in the node's namespace");
    let port = listener.local_addr().expect("port").port();
    serve_dir(listener, mirror.path().to_path_buf());

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
    let kubeadm = &binaries[1].1;
    assert!(
        fetched.starts_with("HTTP/1.1 200")
            && fetched.ends_with(&hex::encode(Sha256::digest(kubeadm.as_bytes()))),
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
    for (name, contents) in &binaries {
        let installed = node.root().join("usr/bin").join(name);
        assert_eq!(
            std::fs::read_to_string(&installed).ok().as_deref(),
            Some(contents.as_str()),
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
