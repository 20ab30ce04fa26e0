//! `hpk8s bootstrap` on a plain Debian image without containerd (a real
//! systemd node whose containerd and runc were purged): `--dry-run` exits 0
//! and plans the install and the config; `--phase prepare` installs
//! containerd and configures it, once from the distribution's packages (a
//! local apt repository of real `.deb` files) and once from the release
//! archives (this machine's containerd and runc packed like upstream's);
//! the installed containerd answers on its socket with systemd cgroups, and
//! a second run changes nothing.

use std::net::{Ipv4Addr, SocketAddr};

use harness::mirror::{MirrorBuilder, MirrorServer};
use harness::netns::Netns;
use harness::node::{self, NspawnNode};

const NODE_ADDRESS: &str = "10.1.38.128";
const K8S_VERSION: &str = "1.34.1";
/// Where the node sees the local apt repository.
const REPO: &str = "/srv/hpk8s-repo";

fn config_toml(port: u16, containerd_source: &str) -> String {
    format!(
        r#"[identity]
source = "static"
cluster_name = "bare"

[[identity.nodes]]
name = "bare-1"
address = "{NODE_ADDRESS}"
role = "worker"

[[identity.nodes]]
name = "cp-1"
address = "10.1.0.10"
role = "controller"

[kubernetes]
version = "{K8S_VERSION}"

[packages]
source = "mirror"
mirror_url = "http://127.0.0.1:{port}"
allow_insecure_mirror = true

[containerd]
source = "{containerd_source}"

[instance_store]
enabled = false
"#
    )
}

/// Total changes of a JSON plan.
fn changes(plan: &str) -> usize {
    let parsed: serde_json::Value = serde_json::from_str(plan).expect("plan is JSON");
    parsed["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["changes"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Boots a node without containerd, runs dry-run, prepare and a second
/// dry-run; `check` looks at the result.
fn bare_node_gets_containerd(
    containerd_source: &str,
    mirror: MirrorBuilder,
    apt_repo: Option<&std::path::Path>,
    wanted_in_plan: &str,
    binary: &str,
) {
    let netns = Netns::new().expect("netns");
    netns
        .add_address(&format!("{NODE_ADDRESS}/32"), "lo")
        .expect("node address");
    let mirror_dir = tempfile::tempdir().expect("mirror dir");
    mirror.write(mirror_dir.path()).expect("mirror layout");
    let listener = netns
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("mirror listener in the node's namespace");
    let port = listener.local_addr().expect("port").port();
    let _server = MirrorServer::serve_on(listener, mirror_dir.path()).expect("mirror server");

    let mut builder = NspawnNode::builder()
        .netns(netns)
        .bind_ro(harness::hpk8s_bin(), "/usr/local/bin/hpk8s")
        .file(
            "/etc/hpk8s/config.toml",
            config_toml(port, containerd_source),
            0o600,
        )
        // The node has no network: only the local repository is a source.
        .file("/etc/apt/sources.list", "", 0o644);
    if let Some(repo) = apt_repo {
        let line = harness::local_apt::build(repo, &["containerd", "runc"], REPO)
            .expect("local apt repository");
        builder = builder.bind_ro(repo, REPO).file(
            "/etc/apt/sources.list.d/hpk8s-local.list",
            line,
            0o644,
        );
    }
    let node = builder.boot().expect("node boots");
    node.exec_ok(&["dpkg", "--purge", "containerd", "runc"])
        .expect("purge containerd");
    assert!(
        node.exec_ok(&["sh", "-c", "command -v containerd"])
            .is_err(),
        "containerd is still installed"
    );
    let diagnostics = |what: &str| {
        format!(
            "{what}\n--- journal containerd ---\n{}",
            node.journal("containerd")
        )
    };

    // A dry run on the bare image exits 0 and shows what it will do.
    let dry = node
        .exec(&["hpk8s", "bootstrap", "--phase", "prepare", "--dry-run"])
        .expect("dry run");
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        dry.status.success(),
        "dry run failed ({}): {text}\n{}",
        dry.status,
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(text.contains(wanted_in_plan), "{text}");
    assert!(text.contains("built-in default"), "{text}");
    assert!(text.contains("SystemdCgroup = true"), "{text}");

    let out = node
        .exec(&["hpk8s", "bootstrap", "--phase", "prepare"])
        .expect("run hpk8s");
    assert!(
        out.status.success(),
        "{}",
        diagnostics(&format!(
            "prepare failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    );
    let which = node
        .exec_ok(&["sh", "-c", "command -v containerd"])
        .expect("containerd installed");
    assert_eq!(which, binary);
    assert_eq!(
        node.exec_ok(&["systemctl", "is-active", "containerd"])
            .unwrap_or_else(|e| diagnostics(&format!("{e:#}"))),
        "active"
    );
    node.exec_ok(&[
        "ctr",
        "--address",
        "/run/containerd/containerd.sock",
        "version",
    ])
    .unwrap_or_else(|e| panic!("{}", diagnostics(&format!("ctr version: {e:#}"))));
    let dump = node
        .exec_ok(&["containerd", "config", "dump"])
        .expect("containerd config dump");
    assert!(dump.contains("SystemdCgroup = true"), "{dump}");
    assert!(dump.contains("bin_dir = \"/opt/cni/bin\""), "{dump}");
    // The CNI plugins flannel's config delegates to, and crictl.
    for installed in [
        "/opt/cni/bin/bridge",
        "/opt/cni/bin/portmap",
        "/usr/local/bin/crictl",
    ] {
        node.exec_ok(&["test", "-x", installed])
            .unwrap_or_else(|e| panic!("{installed}: {e:#}"));
    }

    let again = node
        .exec_ok(&[
            "hpk8s",
            "bootstrap",
            "--phase",
            "prepare",
            "--dry-run",
            "--output",
            "json",
        ])
        .expect("second dry run");
    assert_eq!(
        changes(&again),
        0,
        "second run still plans changes:\n{again}"
    );
}

#[test]
fn bare_debian_gets_containerd_from_the_distribution() {
    if node::require() || harness::require(harness::local_apt::available(), "apt-get and dpkg-deb")
    {
        return;
    }
    let repo = tempfile::tempdir().expect("repo dir");
    bare_node_gets_containerd(
        "apt",
        MirrorBuilder::new(K8S_VERSION).arch("amd64"),
        Some(repo.path()),
        "apt-get install -y --no-install-recommends containerd runc",
        "/usr/bin/containerd",
    );
}

#[test]
fn bare_debian_gets_containerd_from_the_release_archives() {
    if node::require()
        || harness::require(
            std::path::Path::new("/usr/bin/containerd").exists()
                && std::path::Path::new("/usr/sbin/runc").exists(),
            "this machine's containerd and runc (to pack as release archives)",
        )
    {
        return;
    }
    bare_node_gets_containerd(
        "mirror",
        MirrorBuilder::new(K8S_VERSION)
            .arch("amd64")
            .real_containerd(),
        None,
        "unpack containerd 1.7.29",
        "/usr/local/bin/containerd",
    );
}
