//! Cluster formation across real hosts: one controller and three workers,
//! each a systemd node with its own address on one LAN, each running the
//! real `hpk8s bootstrap` (phase prepare, then phase cluster) against moto's
//! Secrets Manager, the test API server on the controller's address:6443
//! and the kubeadm stand-in that phase prepare installs from the mirror.
//!
//! `workers_first`: workers start before the controller, wait for the join
//! ticket and join; every Node ends Ready and labelled; flannel's network is
//! the pod subnet; the device plugins select only the nodes with the
//! hardware; the token is in no log, argument list or state file.
//!
//! `late_controller_and_a_moto_outage`: the controller starts 60 s after
//! the workers, moto stops answering for 20 s while they poll, and the API
//! server fails the first label updates with 500: the cluster still forms.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use harness::cluster_bed::{self, ArgvRecorder, ClusterBed, Running};
use harness::kube_api::FaultKind;
use serde_json::Value;

/// A whole bootstrap (prepare downloads and hashes the binaries; the
/// controller then waits for every node).
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(300);

fn bed() -> ClusterBed {
    ClusterBed::builder()
        .workers(3)
        .gpu_worker(0, 8)
        .efa_worker(0, 4)
        .node_ready_delay_ms(300)
        .poll_cap_ms(500)
        // The test API server runs no pods: report the rollout once.
        .config("addons.rollout_timeout_secs", 0)
        .build()
        .expect("the bed builds")
}

/// `hpk8s bootstrap` on every worker, in the background.
fn start_workers(bed: &ClusterBed) -> Vec<Running> {
    bed.workers()
        .iter()
        .map(|w| w.spawn(&["hpk8s", "bootstrap"]).expect("start a worker"))
        .collect()
}

/// No worker gave up while there is no controller yet.
fn assert_still_waiting(runs: &mut [Running]) {
    for r in runs {
        assert!(
            r.try_wait().expect("worker state").is_none(),
            "{} ended before the controller started: {}",
            r.label(),
            r.stderr_text()
        );
    }
}

fn wait_all(bed: &ClusterBed, runs: &mut [Running]) {
    for run in runs {
        let out = run.wait(BOOTSTRAP_TIMEOUT).expect("hpk8s bootstrap ends");
        assert!(
            out.status.success(),
            "{} failed: {}\nstderr: {}\n{}",
            run.label(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            bed.all_logs()
        );
    }
}

fn labels(node: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(node["metadata"]["labels"].clone()).unwrap_or_default()
}

/// Whether `node` matches every `matchExpressions` term of the DaemonSet's
/// required node affinity (operators `In` and `Exists`, which hpk8s uses).
fn selects(ds: &Value, node: &Value) -> bool {
    let labels = labels(node);
    let terms = &ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    let Some(terms) = terms.as_array() else {
        return true;
    };
    terms.iter().any(|term| {
        term["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                match e["operator"].as_str() {
                    Some("Exists") => labels.contains_key(key),
                    Some("In") => e["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| labels.get(key).map(String::as_str) == v.as_str()),
                    _ => false,
                }
            })
    })
}

/// The checks every formed bed must pass.
fn assert_formed(bed: &ClusterBed) {
    let api = bed.api();
    let controller = bed.controller();
    for n in bed.nodes() {
        let node = api
            .get_json("nodes", "", &n.hostname())
            .unwrap_or_else(|| panic!("{} is not registered\n{}", n.hostname(), bed.all_logs()));
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{} is not Ready: {node}", n.hostname());
        let l = labels(&node);
        assert_eq!(l["hpk8s.io/instance-group"], n.group(), "{node}");
        assert_eq!(l["hpk8s.io/instance-id"], n.instance_id(), "{node}");
        if n.hostname() == controller.hostname() {
            assert!(!l.contains_key("node-role.kubernetes.io/worker"), "{node}");
        } else {
            assert_eq!(l["node-role.kubernetes.io/worker"], "", "{node}");
        }
    }

    // flannel's network is the pod subnet kubeadm was given.
    let record: Value = serde_json::from_slice(
        &controller
            .read("/etc/kubernetes/hpk8s/cluster.json")
            .expect("the controller's cluster record"),
    )
    .expect("cluster record JSON");
    let cm = api
        .get_json("configmaps", "kube-flannel", "kube-flannel-cfg")
        .expect("flannel's ConfigMap");
    let net_conf: Value =
        serde_json::from_str(cm["data"]["net-conf.json"].as_str().unwrap_or("{}"))
            .expect("net-conf.json is JSON");
    assert_eq!(net_conf["Network"], record["pod_subnet"]);

    // The device plugins select exactly the nodes with the hardware.
    let nodes: Vec<Value> = bed
        .nodes()
        .iter()
        .filter_map(|n| api.get_json("nodes", "", &n.hostname()))
        .collect();
    for (ds_name, present) in [
        ("nvidia-device-plugin-daemonset", "nvidia.com/gpu.present"),
        (
            "aws-efa-k8s-device-plugin-daemonset",
            "vpc.amazonaws.com/efa.present",
        ),
    ] {
        let ds = api
            .get_json("daemonsets", "kube-system", ds_name)
            .unwrap_or_else(|| panic!("DaemonSet {ds_name} missing"));
        let selected: Vec<String> = nodes
            .iter()
            .filter(|n| selects(&ds, n))
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let with_hardware: Vec<String> = nodes
            .iter()
            .filter(|n| labels(n).get(present).map(String::as_str) == Some("true"))
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert_eq!(with_hardware, [bed.workers()[0].hostname()], "{present}");
        assert_eq!(selected, with_hardware, "{ds_name} selects other nodes");
    }
}

/// The token is nowhere but the secret and the API: no log, argument list,
/// state file or non-0600 file of any node.
fn assert_no_leak(bed: &ClusterBed, argv: &ArgvRecorder) {
    let ticket = bed
        .read_secret()
        .expect("read the secret")
        .expect("a ticket is published");
    let token = ticket["token"].as_str().expect("the ticket's token");
    assert!(argv.samples() > 10, "the argument lists were not sampled");
    let leaks = bed.leaks(token, Some(argv));
    assert!(leaks.is_empty(), "the bootstrap token leaked: {leaks:#?}");
    for n in bed.nodes() {
        let state = n.read("/var/lib/hpk8s/state.json").unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&state).contains(token),
            "{}: the state file holds the token",
            n.instance()
        );
        assert!(
            n.read("/etc/kubernetes/hpk8s/kubeadm-join.yaml").is_none()
                && n.read("/etc/kubernetes/hpk8s/kubeadm-init.yaml").is_none(),
            "{}: a kubeadm config holding the token was left behind",
            n.instance()
        );
    }
}

#[test]
fn workers_first() {
    if cluster_bed::require() {
        return;
    }
    let argv = ArgvRecorder::start();
    let bed = bed();
    let started = Instant::now();
    let mut runs = start_workers(&bed);
    std::thread::sleep(Duration::from_secs(3));
    assert_still_waiting(&mut runs);
    runs.push(
        bed.controller()
            .spawn(&["hpk8s", "bootstrap"])
            .expect("start the controller"),
    );
    wait_all(&bed, &mut runs);
    eprintln!("formed in {:?}", started.elapsed());
    assert_formed(&bed);
    assert_no_leak(&bed, &argv);

    // A second run anywhere changes nothing.
    for n in bed.nodes() {
        let out = n
            .exec_timeout(&["hpk8s", "bootstrap"], BOOTSTRAP_TIMEOUT)
            .expect("second run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {stdout}", n.instance());
        assert!(
            stdout.contains("phase prepare: applied 0 change(s)")
                && stdout.contains("phase cluster: applied 0 change(s)"),
            "{}: {stdout}",
            n.instance()
        );
    }

    // The operator's new token: published, its expiry printed, the token
    // itself only when asked for.
    let controller = bed.controller();
    let before = bed.read_secret().unwrap().unwrap();
    let out = controller
        .exec_ok(&["hpk8s", "generate-new-token"])
        .expect("generate-new-token");
    let after = bed.read_secret().unwrap().unwrap();
    let token = after["token"].as_str().unwrap();
    assert_ne!(before["token"], after["token"]);
    assert!(out.contains("expires at"), "{out}");
    assert!(
        !out.contains(token),
        "the token was printed without --show-token"
    );
    let shown = controller
        .exec_ok(&[
            "hpk8s",
            "generate-new-token",
            "--show-token",
            "--output",
            "json",
        ])
        .expect("generate-new-token --show-token");
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["token"], bed.read_secret().unwrap().unwrap()["token"]);

    // A worker reports a GPU that needs a reboot (as its node agent
    // would): the controller's agent remediates it (taint and cordon).
    let sick = bed.workers()[0].hostname();
    let mut node = bed.api().get_json("nodes", "", &sick).expect("worker Node");
    harness::kube_api::fixtures::set_condition(
        &mut node,
        "GPUHealthy",
        false,
        "GPUNeedsReboot",
        "GPU 0 (GPU-e2e): xid-79: XID 79",
    );
    bed.api().apply_json(node).expect("set the GPU condition");

    // The agent starts on the controller with the published ticket.
    let mut agent = controller.spawn(&["hpk8s", "agent"]).expect("agent");
    let started = std::time::Instant::now();
    let tainted = loop {
        let n = bed.api().get_json("nodes", "", &sick).expect("worker Node");
        let has_taint = n["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "hpk8s.io/gpu-unhealthy");
        if (has_taint && n["spec"]["unschedulable"] == true)
            || started.elapsed() > Duration::from_secs(30)
        {
            break has_taint;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        agent.try_wait().expect("agent state").is_none(),
        "the agent stopped: {}",
        agent.stderr_text()
    );
    agent.kill();
    let journal = controller.journal_tag("hpk8s");
    assert!(
        tainted,
        "the controller's agent did not remediate {sick}:\n{journal}"
    );
    assert!(
        journal.contains("bootstrap token rotation started"),
        "{journal}"
    );
    assert!(journal.contains("remediation watching Nodes"), "{journal}");
}

#[test]
fn late_controller_and_a_moto_outage() {
    if cluster_bed::require() {
        return;
    }
    let argv = ArgvRecorder::start();
    let bed = bed();
    let mut runs = start_workers(&bed);
    // Mid-poll, the rendezvous stops answering for 20 s.
    std::thread::sleep(Duration::from_secs(20));
    bed.moto().pause().expect("pause moto");
    std::thread::sleep(Duration::from_secs(20));
    bed.moto().resume().expect("resume moto");
    std::thread::sleep(Duration::from_secs(20));
    assert_still_waiting(&mut runs);
    // The controller's first label updates fail with 500 (only its PATCHes
    // of the Node objects, not the kubelets' status updates): retried.
    for w in bed.workers() {
        bed.api().inject_fault_on(
            "PATCH",
            &format!("/api/v1/nodes/{}", w.hostname()),
            FaultKind::Status(500),
            2,
        );
    }
    runs.push(
        bed.controller()
            .spawn(&["hpk8s", "bootstrap"])
            .expect("start the controller"),
    );
    wait_all(&bed, &mut runs);
    assert_formed(&bed);
    assert_no_leak(&bed, &argv);
    // The outage was seen (and waited out) by the polling workers.
    let logs = bed.all_logs();
    assert!(
        logs.contains("did not answer within") || logs.contains("is not reachable right now"),
        "no worker noticed the rendezvous outage:\n{logs}"
    );
    assert_eq!(
        bed.api().armed_faults(),
        0,
        "the injected 500s were not all served: the fault did not bite"
    );
}
