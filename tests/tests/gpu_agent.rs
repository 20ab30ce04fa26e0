//! The node agent's GPU health loop against the test API server in
//! NodeRestriction mode, with the NVML stub: the condition and Events are
//! written with the node's own credential only; an XID from the event
//! thread shows up in the condition within a second; the transition time
//! moves only with the status; an API outage is ridden out; the metrics
//! parse with an independent Prometheus parser. Interruption notices come
//! from the IMDS double.

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::imds::FakeImds;
use harness::kube_api::{FaultKind, NodeSpec, TestApiServer};
use harness::nvml::{FakeGpu, NvmlFixture, run_with_fixture, stub_path};
use lifecycle::agent::gpu_health::{HealthState, Liveness, Loop};
use lifecycle::agent::{interruption, metrics};
use lifecycle::config::GpuHealthConfig;
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};
use serde_json::Value;

const NODE: &str = "gpu-node-1";

/// A fake root with 8 PCI GPUs, 32 EFA adapters and the node's kubelet
/// credential.
fn node_root(api: &TestApiServer) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..8u32 {
        let d = dir.path().join(format!(
            "sys/bus/pci/devices/0000:{:02x}:00.0",
            0x53 + i * 0x10
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
        std::fs::write(d.join("device"), "0x2330\n").unwrap();
        std::fs::write(d.join("class"), "0x030200\n").unwrap();
    }
    // p5.48xlarge's 32 EFA adapters.
    for i in 0..32u32 {
        let d = dir
            .path()
            .join(format!("sys/bus/pci/devices/0000:{:02x}:01.0", 0x10 + i));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x1d0f\n").unwrap();
        std::fs::write(d.join("device"), "0xefa1\n").unwrap();
        std::fs::write(d.join("class"), "0x020000\n").unwrap();
    }
    let conf = dir.path().join("etc/kubernetes/kubelet.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::copy(api.node_kubeconfig(NODE).unwrap(), &conf).unwrap();
    let boot = dir.path().join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(boot.parent().unwrap()).unwrap();
    std::fs::write(boot, "agent-test-boot\n").unwrap();
    let host = Host::new(
        dir.path(),
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces::default()),
    );
    (dir, host)
}

fn config() -> GpuHealthConfig {
    GpuHealthConfig {
        library_path: Some(stub_path()),
        probe_interval_secs: 1,
        probe_timeout_secs: 5,
        ..GpuHealthConfig::default()
    }
}

fn condition(api: &TestApiServer, type_: &str) -> Option<Value> {
    api.get_json("nodes", "", NODE)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_gpu_health_with_the_node_credential_and_rides_out_outages() {
    let fixture = NvmlFixture::new()
        .gpus((0..8).map(FakeGpu::h100))
        .xid(1, 48, 2500)
        .xid(3, 79, 4000);
    if run_with_fixture(
        "the_agent_reports_gpu_health_with_the_node_credential_and_rides_out_outages",
        &fixture,
    )
    .is_none()
    {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = TestApiServer::start().await.unwrap();
    api.register_node(&NodeSpec {
        name: NODE.into(),
        addresses: vec![("InternalIP".into(), "10.1.0.5".into())],
        labels: Vec::new(),
        taints: Vec::new(),
    })
    .unwrap();
    let (_root, host) = node_root(&api);
    let state = Arc::new(Mutex::new(HealthState::default()));
    let liveness = Arc::new(Liveness::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(
        Loop {
            host,
            config: config(),
            instance_type: Some("p5.48xlarge".into()),
            node_name: NODE.into(),
            status: None,
            state: state.clone(),
            liveness: liveness.clone(),
        }
        .run(async {
            let _ = stopped.await;
        }),
    );

    // Healthy first.
    wait_for("the healthy condition", Duration::from_secs(10), || {
        condition(&api, "GPUHealthy").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let healthy = condition(&api, "GPUHealthy").unwrap();
    assert_eq!(healthy["reason"], "GPUsHealthy");
    assert!(state.lock().unwrap().ready);
    assert!(liveness.alive(Duration::from_secs(5)));

    // XID 48 at 2.5 s: reboot class, within a second of the event.
    let to_reboot = wait_for("XID 48 in the condition", Duration::from_secs(6), || {
        condition(&api, "GPUHealthy").is_some_and(|c| c["reason"] == "GPUNeedsReboot")
    })
    .await;
    eprintln!("XID 48 reported after {to_reboot:?} (scheduled at 2.5 s)");
    let rebooting = condition(&api, "GPUHealthy").unwrap();
    assert_eq!(rebooting["status"], "False");
    assert!(
        rebooting["message"].as_str().unwrap().contains("xid-48"),
        "{rebooting}"
    );

    // The API server fails the next status writes; XID 79 arrives meanwhile.
    api.inject_fault(
        &format!("/api/v1/nodes/{NODE}/status"),
        FaultKind::Status(503),
        4,
    );
    wait_for(
        "XID 79 published after the outage",
        Duration::from_secs(20),
        || condition(&api, "GPUHealthy").is_some_and(|c| c["reason"] == "GPUNeedsReplacement"),
    )
    .await;
    assert_eq!(api.armed_faults(), 0, "the outage did not bite");
    let replacing = condition(&api, "GPUHealthy").unwrap();
    // Still False: the transition time is the reboot-class one's.
    assert_eq!(
        replacing["lastTransitionTime"], rebooting["lastTransitionTime"],
        "{replacing}"
    );
    assert_ne!(
        rebooting["lastTransitionTime"], healthy["lastTransitionTime"],
        "True → False is a transition"
    );

    // Events for the new faults, from the node.
    let events = api.names("events", Some("default"));
    assert!(events.len() >= 2, "{events:?}");
    let reasons: Vec<String> = events
        .iter()
        .filter_map(|n| api.get_json("events", "default", n))
        .map(|e| e["reason"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        reasons.contains(&"GPUNeedsReboot".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"GPUNeedsReplacement".to_string()),
        "{reasons:?}"
    );

    // Every write was the node's own, and none was refused.
    let writes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(!writes.is_empty());
    for r in &writes {
        assert_eq!(r.user, format!("system:node:{NODE}"), "{r:?}");
    }

    // Metrics, through an independent parser.
    let text = metrics::render(&state.lock().unwrap());
    let parsed = parse_prometheus(&text);
    assert!(
        parsed.contains("hpk8s_gpu_xid_total{xid=79} 1"),
        "{parsed}\n{text}"
    );
    assert!(
        parsed.contains("hpk8s_gpu_health{class=replace,gpu=3"),
        "{parsed}"
    );
    assert!(parsed.contains("hpk8s_gpus{source=nvml} 8"), "{parsed}");

    let _ = stop.send(());
    agent.await.unwrap();
}

/// Parses the Prometheus text format with `prometheus_client` (Python), one
/// `name{label=value,…} value` per sample, labels sorted.
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn parse_prometheus(text: &str) -> String {
    let python = std::env::var("HPK8S_MOTO_PYTHON").unwrap_or_else(|_| {
        harness::workspace_root()
            .join(".venv/bin/python")
            .display()
            .to_string()
    });
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\nfor fam in text_string_to_metric_families(sys.stdin.read()):\n    for s in fam.samples:\n        labels=','.join(f'{k}={v}' for k,v in sorted(s.labels.items()))\n        v=s.value\n        v=int(v) if float(v).is_integer() else v\n        print(f'{s.name}{{{labels}}} {v}')\n";
    let mut child = std::process::Command::new(&python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{python}: {e} (prometheus_client is installed by scripts/test.sh)")
        });
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_interruption_notice_becomes_a_condition_within_one_poll() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = TestApiServer::start().await.unwrap();
    api.register_node(&NodeSpec {
        name: NODE.into(),
        addresses: vec![("InternalIP".into(), "10.1.0.5".into())],
        labels: Vec::new(),
        taints: Vec::new(),
    })
    .unwrap();
    let (_root, host) = node_root(&api);
    let imds = FakeImds::start();
    let client = lifecycle::identity::ImdsClient::new(imds.url(), Duration::from_secs(1)).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn(interruption::run(
        client,
        Duration::from_millis(200),
        host,
        NODE.into(),
        async {
            let _ = stopped.await;
        },
    ));
    wait_for("no interruption", Duration::from_secs(5), || {
        condition(&api, "InstanceInterruption").is_some_and(|c| c["status"] == "False")
    })
    .await;
    imds.set_spot_interruption("terminate", "2026-12-05T22:00:00Z");
    let took = wait_for("the spot notice", Duration::from_secs(5), || {
        condition(&api, "InstanceInterruption").is_some_and(|c| c["reason"] == "SpotInterruption")
    })
    .await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    let c = condition(&api, "InstanceInterruption").unwrap();
    assert_eq!(c["status"], "True");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("terminate at 2026-12-05T22:00:00Z"),
        "{c}"
    );
    let _ = stop.send(());
    poller.await.unwrap();
}
