//! The shipped `hpk8s-agent.service` under real systemd in an nspawn node:
//! eight fake H100s on the node's PCI bus (a directory bound over
//! `/sys/bus/pci/devices`), the NVML stub as the driver library, the node's
//! kubelet credential for the test API server listening in the node's own
//! network namespace (NodeRestriction on).
//!
//! Checked, in order: the unit is `activating` until the agent has probed
//! and tried to publish (`READY=1`), then `active` with the condition
//! already on the Node; a fault that appears during a 30 s API outage is
//! published once the server is back; SIGKILL gets the agent restarted;
//! an NVML call that hangs stops the watchdog pings and systemd restarts
//! the agent.
//!
//! The unit is the shipped file; a drop-in only points the stub at its
//! fixture and shortens the watchdog and restart delays (60 s and 5 s
//! shipped) so the test takes seconds.

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use harness::kube_api::{FaultKind, NodeSpec, TestApiServer};
use harness::netns::Netns;
use harness::node::{self, NspawnNode};
use harness::nvml::{FakeGpu, NvmlFixture, stub_path};
use serde_json::Value;

/// This node's `CustomerIpAddress` in the fixture.
const NODE_ADDRESS: &str = "10.1.38.128";
const UNIT: &str = "hpk8s-agent.service";
/// The stub library and its fixture inside the node.
const NODE_LIBRARY: &str = "/usr/lib/hpk8s-test/libnvidia-ml.so.1";
const NODE_FIXTURE_DIR: &str = "/run/hpk8s-test-nvml";
/// The fake PCI bus inside the node, mounted over `/sys/bus/pci/devices`
/// after boot (nspawn mounts its own sysfs over binds made at start).
const NODE_PCI: &str = "/run/hpk8s-test-pci";
/// The drop-in's watchdog interval.
const WATCHDOG_SECS: u64 = 6;

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
                               "InstanceId": "i-0cbbe3075137ffa1d", "InstanceName": "worker-group-1-1" } ] }
        ]
    })
    .to_string()
}

const CONFIG: &str = r#"[identity]
controller_groups = ["controller-machine"]

[gpu_health]
library_path = "/usr/lib/hpk8s-test/libnvidia-ml.so.1"
probe_interval_secs = 1
probe_timeout_secs = 2
# Not EC2: nothing to poll (and nothing may reach a real IMDS).
interruption_poll_secs = 0
"#;

fn drop_in() -> String {
    format!(
        "[Service]\nEnvironment=HPK8S_NVML_FIXTURE={NODE_FIXTURE_DIR}/nvml.json\nWatchdogSec={WATCHDOG_SECS}\nRestartSec=1\n"
    )
}

/// A p5.48xlarge's bus as sysfs shows it (vendor, device, class): eight
/// H100s and 32 EFA adapters.
fn fake_pci(dir: &Path) {
    for i in 0..32u32 {
        let d = dir.join(format!("0000:{:02x}:01.0", 0x10 + i));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x1d0f\n").unwrap();
        std::fs::write(d.join("device"), "0xefa1\n").unwrap();
        std::fs::write(d.join("class"), "0x020000\n").unwrap();
    }
    for i in 0..8u32 {
        let d = dir.join(format!("0000:{:02x}:00.0", 0x53 + i * 0x10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
        std::fs::write(d.join("device"), "0x2330\n").unwrap();
        std::fs::write(d.join("class"), "0x030200\n").unwrap();
    }
}

fn healthy() -> NvmlFixture {
    NvmlFixture::new().gpus((0..8).map(FakeGpu::h100))
}

fn show(node: &NspawnNode, property: &str) -> String {
    node.exec_ok(&["systemctl", "show", "-p", property, "--value", UNIT])
        .unwrap_or_else(|e| format!("{e:#}"))
}

fn is_active(node: &NspawnNode) -> String {
    node.exec(&["systemctl", "is-active", UNIT])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("{e:#}"))
}

fn condition(api: &TestApiServer, name: &str) -> Option<Value> {
    api.get_json("nodes", "", name)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "GPUHealthy")
        .cloned()
}

fn wait_until(
    what: &str,
    within: Duration,
    diagnostics: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}\n{}",
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_unit_under_systemd_signals_ready_rides_out_outages_and_is_restarted() {
    if node::require() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();

    let gpu = tempfile::tempdir().unwrap();
    let pci = gpu.path().join("pci");
    fake_pci(&pci);
    let fixture_dir = gpu.path().join("nvml");
    std::fs::create_dir_all(&fixture_dir).unwrap();
    let fixture = fixture_dir.join("nvml.json");
    healthy().write(&fixture).unwrap();

    let netns = Netns::new().unwrap();
    netns
        .add_address(&format!("{NODE_ADDRESS}/32"), "lo")
        .unwrap();
    let listener = netns
        .listen_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .unwrap();
    let api = runtime
        .block_on(TestApiServer::start_on(listener, &[]))
        .unwrap();

    let unit =
        std::fs::read_to_string(harness::workspace_root().join("systemd").join(UNIT)).unwrap();
    let node = NspawnNode::builder()
        .netns(netns)
        .overlay_root(true)
        .bind_ro(harness::hpk8s_bin(), "/usr/local/bin/hpk8s")
        .bind_ro(stub_path(), NODE_LIBRARY)
        .bind_ro(&pci, NODE_PCI)
        .bind_ro(&fixture_dir, NODE_FIXTURE_DIR)
        .file(
            "/opt/ml/config/resource_config.json",
            resource_config(),
            0o600,
        )
        .file("/etc/hpk8s/config.toml", CONFIG, 0o644)
        .file(&format!("/etc/systemd/system/{UNIT}"), unit, 0o644)
        .file(
            &format!("/etc/systemd/system/{UNIT}.d/test.conf"),
            drop_in(),
            0o644,
        )
        .boot()
        .unwrap();
    let diagnostics = || {
        format!(
            "--- systemctl status ---\n{}\n--- journal ---\n{}",
            node.exec(&["systemctl", "status", "--no-pager", UNIT])
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default(),
            node.journal("hpk8s-agent")
        )
    };

    // The fixture: the bus the agent will see.
    node.exec_ok(&["mount", "--bind", NODE_PCI, "/sys/bus/pci/devices"])
        .unwrap();
    let listed = node.exec_ok(&["ls", "/sys/bus/pci/devices"]).unwrap();
    assert_eq!(listed.lines().count(), 40, "{listed}");

    // The node as kubeadm join would leave it: registered, with its
    // kubelet credential (and no admin credential anywhere).
    let identity: Value = serde_json::from_str(
        &node
            .exec_ok(&["hpk8s", "identity", "--output", "json"])
            .unwrap(),
    )
    .unwrap();
    let name = identity["node_name"].as_str().unwrap().to_string();
    api.register_node(&NodeSpec {
        name: name.clone(),
        addresses: vec![("InternalIP".into(), NODE_ADDRESS.into())],
        labels: Vec::new(),
        taints: Vec::new(),
    })
    .unwrap();
    let kubelet_conf = node.root().join("etc/kubernetes/kubelet.conf");
    std::fs::create_dir_all(kubelet_conf.parent().unwrap()).unwrap();
    std::fs::copy(api.node_kubeconfig(&name).unwrap(), &kubelet_conf).unwrap();
    assert!(!node.root().join("etc/kubernetes/admin.conf").exists());

    // 1. READY=1 only after the first probe and publish attempt: the first
    // status write stalls for 4 s, and the unit stays `activating` as long.
    let status_path = format!("/api/v1/nodes/{name}/status");
    api.inject_fault_on(
        "PATCH",
        &status_path,
        FaultKind::Delay(Duration::from_secs(4)),
        1,
    );
    node.exec_ok(&["systemctl", "daemon-reload"]).unwrap();
    node.exec_ok(&["systemctl", "start", "--no-block", UNIT])
        .unwrap();
    let mut states = Vec::new();
    wait_until(
        "the unit turning active",
        Duration::from_secs(30),
        diagnostics,
        || {
            let state = is_active(&node);
            if states.last() != Some(&state) {
                states.push(state.clone());
            }
            if state == "active" {
                // READY=1 follows the publish: the condition is already there.
                assert!(
                    condition(&api, &name).is_some_and(|c| c["status"] == "True"),
                    "active before the condition was published; states {states:?}\n{}",
                    diagnostics()
                );
                return true;
            }
            assert!(
                state == "activating" || state == "inactive",
                "{state}\n{}",
                diagnostics()
            );
            false
        },
    );
    assert!(
        states.iter().any(|s| s == "activating"),
        "never seen activating: {states:?}"
    );
    assert_eq!(show(&node, "Type"), "notify");

    // 2. A fault during a 30 s outage of the API server is published once
    // it is back.
    api.inject_fault_on("PATCH", &status_path, FaultKind::Status(503), 10_000);
    NvmlFixture::new()
        .gpus((0..8).map(|i| {
            let gpu = FakeGpu::h100(i);
            if i == 2 { gpu.ecc_volatile(0, 3) } else { gpu }
        }))
        .write(&fixture)
        .unwrap();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        assert_eq!(
            condition(&api, &name).unwrap()["status"],
            "True",
            "written during the outage"
        );
        assert_eq!(is_active(&node), "active", "{}", diagnostics());
        std::thread::sleep(Duration::from_millis(500));
    }
    api.clear_faults();
    wait_until(
        "the fault published after the outage",
        Duration::from_secs(15),
        diagnostics,
        || condition(&api, &name).is_some_and(|c| c["status"] == "False"),
    );
    let published = condition(&api, &name).unwrap();
    assert_eq!(published["reason"], "GPUNeedsReboot", "{published}");
    healthy().write(&fixture).unwrap();

    // Every write the agent made used the node's own identity.
    let users: std::collections::BTreeSet<String> =
        api.requests().iter().map(|r| r.user.clone()).collect();
    assert_eq!(
        users,
        std::iter::once(format!("system:node:{name}")).collect(),
        "requests by other identities"
    );

    // 3. SIGKILL: restarted by systemd.
    let pid = show(&node, "MainPID");
    let restarts = |node: &NspawnNode| show(node, "NRestarts").parse::<u32>().unwrap_or(0);
    let before = restarts(&node);
    node.exec_ok(&["systemctl", "kill", "--signal=SIGKILL", UNIT])
        .unwrap();
    wait_until(
        "a restart after SIGKILL",
        Duration::from_secs(30),
        diagnostics,
        || {
            restarts(&node) > before
                && is_active(&node) == "active"
                && show(&node, "MainPID") != pid
        },
    );

    // 4. An NVML call that hangs: the probe times out, the watchdog pings
    // stop, systemd aborts and restarts the agent.
    let before = restarts(&node);
    let pid = show(&node, "MainPID");
    healthy().call_delay_ms(600_000).write(&fixture).unwrap();
    wait_until(
        "a watchdog restart",
        Duration::from_secs(WATCHDOG_SECS * 2 + 20),
        diagnostics,
        || restarts(&node) > before,
    );
    assert_ne!(show(&node, "MainPID"), pid);
    let journal = node
        .exec_ok(&["journalctl", "--no-pager", "-o", "cat", "-u", UNIT])
        .unwrap_or_default();
    assert!(
        journal.to_lowercase().contains("watchdog timeout"),
        "systemd did not report a watchdog timeout:\n{journal}"
    );
    assert!(
        journal.contains("did not return"),
        "the agent did not say why it stopped pinging:\n{journal}"
    );
    // Healthy again: the restarted agent settles.
    healthy().write(&fixture).unwrap();
    wait_until(
        "active after the hang",
        Duration::from_secs(30),
        diagnostics,
        || is_active(&node) == "active",
    );
    drop(node);
    drop(api);
}
