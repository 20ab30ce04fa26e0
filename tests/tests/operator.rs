//! The operator commands against the simulated cluster (test API server
//! and moto with hpk8s's SageMaker extension): `delete-orphan-nodes` over
//! 250 nodes with 7 orphans and decoys, inventory failures, the share
//! limit, the last-moment re-check, prompting; `status --output json`
//! against its documented schema; `replace-instance` and `reboot-instance`
//! end to end (a budget-blocked drain, API failures, a replacement joining
//! with a new instance id, Slurm, the controller refused).

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harness::sim::{Scenario, SimCluster};
use lifecycle::aws::sagemaker::{Restart, SageMaker};
use lifecycle::host::{CmdOutput, FixedInterfaces, Host, ScriptedRunner};
use lifecycle::ops::inventory::Instances;
use lifecycle::ops::orphans::{self, Answer};
use lifecycle::ops::restart_instance;
use serde_json::{Value, json};

fn moto_or_skip() -> bool {
    harness::moto::skip_without_moto()
}

/// Runs the real binary against `sim` (stdin: `stdin`, not a terminal).
async fn hpk8s(sim: &SimCluster, args: &[&str]) -> (i32, String, String) {
    let env = sim.env();
    let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
    tokio::task::spawn_blocking(move || {
        #[allow(clippy::disallowed_methods)] // the test launches the real binary
        let out = std::process::Command::new(harness::hpk8s_bin())
            .args(&args)
            .envs(env)
            .env("HPK8S_ROOT", "/nonexistent-root")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// An admin client without kube's own retries (as the commands use).
async fn admin_client(kubeconfig: &std::path::Path) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    lifecycle::kube::client::from_kubeconfig_with(
        kubeconfig,
        kubeconfig,
        lifecycle::kube::client::Retries::Caller,
    )
    .await
    .unwrap()
}

/// What the library calls need: the admin client and the HyperPod
/// inventory of `sim`.
async fn library_side(sim: &SimCluster) -> (kube::Client, Instances) {
    let client = admin_client(sim.kubeconfig()).await;
    let sdk = sim.moto.sdk_config(&sim.region).await;
    (
        client,
        Instances::HyperPod(SageMaker::new(&sdk, &sim.seeded.cluster_arn)),
    )
}

const ORPHANS_250: &str = r#"
cluster: { name: ops-250 }
groups:
  - { name: controller, instance_type: ml.m5.4xlarge, count: 1, control_plane: true }
  - { name: workers, count: 249 }
nodes:
  # orphans
  - { group: workers, index: 1, ready: "Unknown", for_minutes: 30, instance: absent }
  - { group: workers, index: 2, ready: "False", for_minutes: 30, instance: Failure, message: "node health check failed" }
  - { group: workers, index: 3, ready: "False", for_minutes: 20, instance: NotFound }
  - { group: workers, index: 4, ready: "False", for_minutes: 11, instance: absent }
  - { group: workers, index: 5, ready: "Unknown", for_minutes: 60, instance: Failure }
  - { group: workers, index: 6, ready: "Unknown", for_minutes: 15, instance: absent }
  - { group: workers, index: 7, ready: "Unknown", for_minutes: 12, instance: NotFound }
  # decoys
  - { group: workers, index: 8, ready: "False", for_minutes: 5, instance: absent }
  - { group: controller, index: 0, ready: "Unknown", for_minutes: 30, instance: absent }
  - { group: workers, index: 9, ready: "False", for_minutes: 30, instance: Pending }
  - { group: workers, index: 10, ready: "False", for_minutes: 30, instance: ShuttingDown }
  - { group: workers, index: 11, ready: "Unknown", for_minutes: 30, instance: SystemUpdating }
  - { group: workers, index: 12, ready: "False", for_minutes: 30, instance: DeepHealthCheckInProgress }
  - { group: workers, index: 13, ready: "False", for_minutes: 30, instance: SomeFutureStatus }
  - { group: workers, index: 14, ready: "True", instance: absent }
  - { group: workers, index: 15, node: false }
"#;

fn orphan_names(sim: &SimCluster) -> Vec<String> {
    let mut v: Vec<String> = (1..=7)
        .map(|i| sim.node("workers", i).unwrap().name.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn delete_orphan_nodes_deletes_exactly_the_seven_orphans() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(ORPHANS_250).unwrap())
        .await
        .unwrap();
    let before = sim.api.names("nodes", None).len();
    assert_eq!(before, 249);
    let want = orphan_names(&sim);

    // Dry run: named, nothing deleted.
    let (code, out, err) = hpk8s(
        &sim,
        &["delete-orphan-nodes", "--dry-run", "--output", "json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let mut found: Vec<String> = doc["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["node"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    assert_eq!(found, want, "{out}");
    assert_eq!(doc["dry_run"], true);
    assert!(doc["deleted"].as_array().unwrap().is_empty());
    assert_eq!(sim.api.names("nodes", None).len(), before);
    let failure = doc["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["node"] == sim.node("workers", 2).unwrap().name.as_str())
        .unwrap();
    assert_eq!(failure["instance_status"], "Failure");
    assert!(
        failure["reason"].as_str().unwrap().contains("is Failure"),
        "{failure}"
    );

    // Without a terminal and without --yes: refused, nothing deleted.
    let (code, _, err) = hpk8s(&sim, &["delete-orphan-nodes"]).await;
    assert_eq!(code, 9, "{err}");
    assert!(
        err.contains("error[confirmation_required]") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(sim.api.names("nodes", None).len(), before);

    // --yes: exactly the seven.
    let (code, out, err) = hpk8s(&sim, &["delete-orphan-nodes", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 7 Node(s)"), "{out}");
    let left = sim.api.names("nodes", None);
    assert_eq!(left.len(), before - 7);
    for o in &want {
        assert!(!left.contains(o), "{o} still there");
    }
    for (g, i) in [
        ("workers", 8),
        ("controller", 0),
        ("workers", 9),
        ("workers", 10),
        ("workers", 11),
        ("workers", 12),
        ("workers", 13),
        ("workers", 14),
    ] {
        let n = &sim.node(g, i).unwrap().name;
        assert!(left.contains(n), "decoy {g}[{i}] ({n}) deleted");
    }
    // No instance was touched without --delete-instances.
    assert!(
        !sim.moto
            .calls()
            .await
            .unwrap()
            .contains_key("BatchDeleteClusterNodes")
    );
}

#[tokio::test]
async fn an_inventory_that_cannot_be_read_deletes_nothing() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(ORPHANS_250).unwrap())
        .await
        .unwrap();
    let before = sim.api.names("nodes", None).len();
    // AccessDenied on page 2 of ListClusterNodes.
    sim.moto.deny("ListClusterNodes", 1, 1).await.unwrap();
    let (code, _, err) = hpk8s(&sim, &["delete-orphan-nodes", "--yes"]).await;
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("error[sagemaker_access_denied]") && err.contains("ListClusterNodes"),
        "{err}"
    );
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("error["))
            .count(),
        1,
        "{err}"
    );
    assert_eq!(sim.api.names("nodes", None).len(), before);
    // Throttled beyond the retries.
    sim.moto
        .throttle_next(1000, &["ListClusterNodes"])
        .await
        .unwrap();
    let (code, _, err) = hpk8s(&sim, &["delete-orphan-nodes", "--yes"]).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("error[sagemaker_throttled]"), "{err}");
    assert_eq!(sim.api.names("nodes", None).len(), before);
    sim.moto.throttle_next(0, &[]).await.unwrap();
    // moto down.
    sim.moto.pause().unwrap();
    let (code, _, err) = hpk8s(&sim, &["delete-orphan-nodes", "--yes"]).await;
    sim.moto.resume().unwrap();
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("ListClusterNodes"), "{err}");
    assert_eq!(sim.api.names("nodes", None).len(), before);
}

#[tokio::test]
async fn the_share_limit_stops_a_mass_deletion_and_the_last_check_keeps_a_recovered_node() {
    if moto_or_skip() {
        return;
    }
    let scenario = r#"
cluster: { name: ops-10 }
groups:
  - { name: workers, count: 10 }
nodes:
  - { group: workers, index: 0, ready: "Unknown", for_minutes: 30, instance: absent }
  - { group: workers, index: 1, ready: "Unknown", for_minutes: 30, instance: absent }
  - { group: workers, index: 2, ready: "Unknown", for_minutes: 30, instance: Failure }
  - { group: workers, index: 3, ready: "False", for_minutes: 30, instance: NotFound }
"#;
    let sim = SimCluster::start(&Scenario::parse(scenario).unwrap())
        .await
        .unwrap();
    let (code, _, err) = hpk8s(&sim, &["delete-orphan-nodes", "--yes"]).await;
    assert_eq!(code, 9, "{err}");
    assert!(
        err.contains("error[orphan_share_exceeded]") && err.contains("4 of 10"),
        "{err}"
    );
    assert_eq!(sim.api.names("nodes", None).len(), 10);

    // Through the library: the operator's confirmation is the moment
    // between listing and deleting; worker 1 comes back meanwhile.
    let (client, source) = library_side(&sim).await;
    let back = sim.node("workers", 1).unwrap().name.clone();
    let opts = orphans::Options {
        force: true,
        ..orphans::Options::default()
    };
    let api = &sim.api;
    let report = orphans::delete_orphans(
        &client,
        &source,
        &opts,
        SystemTime::now(),
        async |found: &[orphans::Orphan]| {
            assert_eq!(found.len(), 4);
            api.set_ready(&back, true).unwrap();
            Ok(Answer::Yes)
        },
    )
    .await
    .unwrap();
    assert_eq!(report.deleted.len(), 3, "{report:?}");
    assert_eq!(report.kept.len(), 1);
    assert_eq!(report.kept[0].node, back);
    assert!(report.kept[0].why.contains("Ready"), "{:?}", report.kept);
    assert!(sim.api.names("nodes", None).contains(&back));

    // "n" at the prompt: nothing changed.
    let opts = orphans::Options::default();
    let e = orphans::delete_orphans(
        &client,
        &source,
        &opts,
        SystemTime::now(),
        async |_: &[orphans::Orphan]| Ok(Answer::No),
    )
    .await;
    // One orphan left? No: all deleted but the recovered one, so none.
    assert!(e.is_ok());
}

#[tokio::test]
async fn answering_n_at_the_prompt_changes_nothing() {
    if moto_or_skip() {
        return;
    }
    let scenario = r#"
cluster: { name: ops-prompt }
groups:
  - { name: workers, count: 30 }
nodes:
  - { group: workers, index: 0, ready: "Unknown", for_minutes: 30, instance: absent }
"#;
    let sim = SimCluster::start(&Scenario::parse(scenario).unwrap())
        .await
        .unwrap();
    // A real terminal: `script` gives the command a pty and types "n".
    let env = sim.env();
    let bin = harness::hpk8s_bin();
    let (code, out) = tokio::task::spawn_blocking(move || {
        #[allow(clippy::disallowed_methods)] // the test launches the real binary under a pty
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{} delete-orphan-nodes", bin.display()),
                "/dev/null",
            ])
            .envs(env)
            .env("HPK8S_ROOT", "/nonexistent-root")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                std::thread::sleep(Duration::from_secs(3));
                c.stdin.take().unwrap().write_all(b"n\n")?;
                c.wait_with_output()
            })
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap();
    assert!(out.contains("[y/N]"), "{out}");
    assert!(out.contains("error[declined]"), "{out}");
    assert_eq!(code, 9, "{out}");
    assert_eq!(sim.api.names("nodes", None).len(), 30);
}

// ------------------------------------------------------------------ status

#[tokio::test]
async fn status_json_matches_the_documented_schema() {
    if moto_or_skip() {
        return;
    }
    let scenario = r#"
cluster: { name: ops-status }
groups:
  - { name: controller, instance_type: ml.m5.4xlarge, count: 1, control_plane: true }
  - { name: workers, count: 6 }
nodes:
  - { group: workers, index: 1, ready: "False", for_minutes: 30, instance: Failure, message: "GPU lost" }
  - { group: workers, index: 2, ready: "Unknown", for_minutes: 30, instance: absent }
  - { group: workers, index: 3, node: false }
"#;
    let sim = SimCluster::start(&Scenario::parse(scenario).unwrap())
        .await
        .unwrap();
    let (code, out, err) = hpk8s(&sim, &["status", "--output", "json"]).await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let documented =
        std::fs::read_to_string(harness::workspace_root().join("docs/operations.md")).unwrap();
    let example = documented
        .split("```json\n")
        .nth(1)
        .and_then(|s| s.split("\n```").next())
        .unwrap();
    let example: Value = serde_json::from_str(example).unwrap();
    same_shape(&example, &doc, "$");
    let s = &doc["summary"];
    assert_eq!(
        (s["nodes"].as_u64(), s["instances"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(s["node_without_instance"], 1);
    assert_eq!(s["instance_without_node"], 1);
    let rows = doc["rows"].as_array().unwrap();
    let failed = rows
        .iter()
        .find(|r| r["node"] == sim.node("workers", 1).unwrap().name.as_str())
        .unwrap();
    assert_eq!(failed["instance_status"], "Failure");
    assert_eq!(failed["instance_message"], "GPU lost");
    assert_eq!(failed["ready"], "False");
    assert!(doc["calls"]["sagemaker"].as_u64().unwrap() >= 1);
    let (code, text, _) = hpk8s(&sim, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("instance-without-node") && text.contains("6 nodes:"),
        "{text}"
    );
}

/// Every key of the documented example is in the output with the same
/// JSON type (null allowed where the example shows a value, and the
/// reverse), and the output has no key the example lacks.
fn same_shape(example: &Value, actual: &Value, at: &str) {
    match (example, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys() {
                assert!(a.contains_key(k), "{at}.{k} documented but missing");
            }
            for (k, v) in a {
                let ev = e
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} not documented"));
                same_shape(ev, v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let Some(first) = e.first() {
                for v in a {
                    same_shape(first, v, &format!("{at}[]"));
                }
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (e, a) => assert_eq!(
            std::mem::discriminant(e),
            std::mem::discriminant(a),
            "{at}: documented {e}, got {a}"
        ),
    }
}

// ------------------------------------------------------- replace and reboot

const REPLACE: &str = r#"
cluster: { name: ops-replace }
groups:
  - { name: controller, instance_type: ml.m5.4xlarge, count: 1, control_plane: true }
  - { name: workers, count: 4 }
pods:
  - { namespace: ml, name: trainer-0, group: workers, index: 1, owner: Job/trainer, labels: { app: trainer } }
  - { namespace: ml, name: trainer-1, group: workers, index: 2, owner: Job/trainer, labels: { app: trainer } }
budgets:
  - { namespace: ml, name: trainer, selector: { app: trainer }, min_available: 2 }
"#;

#[tokio::test]
async fn replace_instance_end_to_end() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(REPLACE).unwrap())
        .await
        .unwrap();
    sim.moto.replace_with_new_instances().await.unwrap();
    sim.moto.set_replace_timing(1500, 1).await.unwrap();
    let target = sim.node("workers", 1).unwrap().clone();

    // The controller is refused, whatever the flags.
    let cp = sim.node("controller", 0).unwrap().name.clone();
    let (code, _, err) = hpk8s(&sim, &["replace-instance", &cp, "--force"]).await;
    assert_eq!(code, 9, "{err}");
    assert!(
        err.contains("error[node_protected]") && err.contains("control-plane"),
        "{err}"
    );

    // A budget blocks the drain: stops at the deadline naming pod and
    // budget, node cordoned, nothing requested.
    let (code, _, err) = hpk8s(
        &sim,
        &["replace-instance", &target.name, "--drain-timeout", "3s"],
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("error[drain_blocked]")
            && err.contains("ml/trainer-0")
            && err.contains("trainer"),
        "{err}"
    );
    let node = sim.api.get_json("nodes", "", &target.name).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(sim.moto.batch_calls().await.unwrap().is_empty());

    // API refusals surface with their code (by instance id this time).
    sim.moto
        .force_node_error(
            "InstanceIdNotFound",
            std::slice::from_ref(&target.instance_id),
        )
        .await
        .unwrap();
    sim.api
        .apply_json(
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "trainer", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "trainer"}}, "minAvailable": 1}}),
        )
        .unwrap();
    let (code, _, err) = hpk8s(
        &sim,
        &[
            "replace-instance",
            &target.instance_id,
            "--via",
            "api",
            "--drain-timeout",
            "20s",
        ],
    )
    .await;
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("error[restart_request_failed]") && err.contains("InstanceIdNotFound"),
        "{err}"
    );
    sim.moto
        .force_node_error("InstanceIdNotFound", &[])
        .await
        .unwrap();

    // The budget freed: drains, requests, and the harness plays the new
    // instance joining.
    let started = std::time::Instant::now();
    let joiner = {
        let sdk = sim.moto.sdk_config(&sim.region).await;
        let sm = SageMaker::new(&sdk, &sim.seeded.cluster_arn);
        let known: Vec<String> = sim.nodes.iter().map(|n| n.instance_id.clone()).collect();
        let api_nodes = sim.api.admin_kubeconfig_path().to_path_buf();
        let _ = api_nodes;
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let Ok(list) = sm.list_nodes().await else {
                    continue;
                };
                if let Some(new) = list
                    .iter()
                    .find(|n| !known.contains(&n.instance_id) && n.status == "Running")
                {
                    return new.clone();
                }
            }
        }
    };
    let args = [
        "replace-instance",
        &target.name,
        "--drain-timeout",
        "20s",
        "--wait",
        "2m",
        "--output",
        "json",
    ];
    let run = hpk8s(&sim, &args);
    let joined = async {
        let new = joiner.await;
        let host = new.host_label().unwrap().to_string();
        let mut spec = harness::kube_api::NodeSpec {
            name: host.clone(),
            addresses: vec![(
                "InternalIP".into(),
                host.trim_start_matches("ip-").replace('-', "."),
            )],
            labels: vec![
                ("hpk8s.io/instance-group".into(), "workers".into()),
                ("hpk8s.io/instance-id".into(), new.instance_id.clone()),
            ],
            taints: Vec::new(),
        };
        spec.labels.sort();
        sim.api.register_node(&spec).unwrap();
        sim.api.set_ready(&host, true).unwrap();
        new.instance_id
    };
    let ((code, out, err), new_id) = tokio::join!(run, joined);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["new_instance_id"], new_id.as_str());
    assert_ne!(new_id, target.instance_id);
    assert_eq!(report["via"], "sagemaker");
    assert!(report["elapsed_secs"].as_f64().unwrap() > 0.0);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        sim.api.get_json("pods", "ml", "trainer-0").is_none(),
        "drained"
    );
    assert!(
        sim.api.get_json("nodes", "", &target.name).is_none(),
        "old Node deleted"
    );
    let calls = sim.moto.batch_calls().await.unwrap();
    assert_eq!(
        calls.last().unwrap(),
        &(
            "BatchReplaceClusterNodes".to_string(),
            vec![target.instance_id.clone()]
        )
    );
}

#[tokio::test]
async fn reboot_instance_through_slurm_uncordons_what_it_cordoned() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(REPLACE).unwrap())
        .await
        .unwrap();
    let (client, source) = library_side(&sim).await;
    let runner = Arc::new(ScriptedRunner::new());
    runner.on(&["scontrol"], CmdOutput::ok(""));
    let host = Host::new(
        std::path::Path::new("/"),
        runner.clone(),
        Arc::new(FixedInterfaces::default()),
    );
    let target = sim.node("workers", 3).unwrap().clone();
    let opts = restart_instance::Options {
        kind: Restart::Reboot,
        via: lifecycle::config::RecoveryRoute::Slurm,
        drain_timeout: Duration::from_secs(10),
        force: false,
        wait: Duration::from_secs(30),
        poll_every: Duration::from_millis(200),
        controller_groups: Vec::new(),
    };
    let api = &sim.api;
    let name = target.name.clone();
    let kubelet = async {
        // Plays the reboot: NotReady once Slurm was asked, Ready again.
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if runner.calls().iter().any(|c| c.starts_with("scontrol")) {
                api.set_ready(&name, false).unwrap();
                tokio::time::sleep(Duration::from_millis(700)).await;
                api.set_ready(&name, true).unwrap();
                break;
            }
        }
    };
    let noop = |_: &str| {};
    let (report, ()) = tokio::join!(
        restart_instance::restart_instance(&client, &source, &host, &target.ip, &opts, None, &noop),
        kubelet
    );
    let report = report.unwrap();
    assert_eq!(report.via, "slurm");
    assert!(report.uncordoned);
    assert_eq!(
        runner
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("scontrol"))
            .collect::<Vec<_>>(),
        vec![format!(
            "scontrol update node={} state=fail reason=Action:Reboot",
            target.name
        )]
    );
    let node = sim.api.get_json("nodes", "", &target.name).unwrap();
    assert!(
        node["spec"]["unschedulable"].is_null() || node["spec"]["unschedulable"] == false,
        "{node}"
    );
    assert!(sim.moto.batch_calls().await.unwrap().is_empty());
}

#[tokio::test]
async fn delete_instances_asks_hyperpod_only_for_failed_instances() {
    if moto_or_skip() {
        return;
    }
    let scenario = r#"
cluster: { name: ops-delete-instances }
groups:
  - { name: workers, count: 40 }
nodes:
  - { group: workers, index: 0, ready: "Unknown", for_minutes: 30, instance: Failure }
  - { group: workers, index: 1, ready: "False", for_minutes: 30, instance: absent }
"#;
    let sim = SimCluster::start(&Scenario::parse(scenario).unwrap())
        .await
        .unwrap();
    let failed = sim.node("workers", 0).unwrap().instance_id.clone();
    let (code, out, err) = hpk8s(
        &sim,
        &[
            "delete-orphan-nodes",
            "--yes",
            "--delete-instances",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["deleted"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(doc["instances_deleted"], json!([failed]), "{doc}");
    assert_eq!(
        sim.moto
            .calls()
            .await
            .unwrap()
            .get("BatchDeleteClusterNodes"),
        Some(&1)
    );
}

#[tokio::test]
async fn a_reboot_that_never_comes_back_ends_at_its_deadline_with_the_last_status() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(REPLACE).unwrap())
        .await
        .unwrap();
    sim.moto.set_replace_timing(3_600_000, 1).await.unwrap();
    let (client, source) = library_side(&sim).await;
    let host = Host::new(
        std::path::Path::new("/"),
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces::default()),
    );
    let target = sim.node("workers", 3).unwrap().clone();
    let opts = restart_instance::Options {
        kind: Restart::Reboot,
        via: lifecycle::config::RecoveryRoute::Api,
        drain_timeout: Duration::from_secs(10),
        force: false,
        wait: Duration::from_secs(2),
        poll_every: Duration::from_millis(200),
        controller_groups: Vec::new(),
    };
    let noop = |_: &str| {};
    let e = restart_instance::restart_instance(
        &client,
        &source,
        &host,
        &target.instance_id,
        &opts,
        None,
        &noop,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "restart_wait_deadline");
    assert_eq!(e.exit_code(), 8);
    let msg = e.to_string();
    assert!(
        msg.contains("Pending") && msg.contains("Rebooting"),
        "{msg}"
    );
    // Still cordoned: hpk8s does not uncordon a node that did not come back.
    let node = sim.api.get_json("nodes", "", &target.name).unwrap();
    assert_eq!(node["spec"]["unschedulable"], true);
}

#[tokio::test]
async fn a_static_topology_is_the_inventory_elsewhere() {
    use harness::kube_api::{NodeSpec, TestApiServer};
    use lifecycle::ops::inventory::Instance;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = TestApiServer::start().await.unwrap();
    for (i, name) in (1u8..).zip(["gpu-1", "gpu-2", "gone-1"]) {
        api.register_node(&NodeSpec {
            name: name.into(),
            addresses: vec![("InternalIP".into(), format!("10.2.0.{i}"))],
            labels: Vec::new(),
            taints: Vec::new(),
        })
        .unwrap();
        api.set_ready(name, name != "gone-1").unwrap();
    }
    // gone-1 NotReady for an hour and not in the config's node list.
    let mut n = api.get_json("nodes", "", "gone-1").unwrap();
    let hour_ago = lifecycle::values::time::rfc3339(SystemTime::now() - Duration::from_secs(3600));
    for c in n["status"]["conditions"].as_array_mut().unwrap() {
        c["lastTransitionTime"] = json!(hour_ago);
    }
    api.apply_json(n).unwrap();
    let listed = |ip: &str| Instance {
        id: None,
        group: "gpu".into(),
        instance_type: String::new(),
        status: "Listed".into(),
        message: None,
        launch_time: None,
        host: None,
        ip: Some(ip.into()),
    };
    let source = Instances::Static(vec![listed("10.2.0.1"), listed("10.2.0.2")]);
    let client = admin_client(api.admin_kubeconfig_path()).await;
    let opts = orphans::Options {
        dry_run: true,
        ..orphans::Options::default()
    };
    let report = orphans::delete_orphans(
        &client,
        &source,
        &opts,
        SystemTime::now(),
        async |_: &[orphans::Orphan]| Ok(Answer::Yes),
    )
    .await
    .unwrap();
    let names: Vec<&str> = report.orphans.iter().map(|o| o.node.as_str()).collect();
    assert_eq!(names, vec!["gone-1"]);
    // Without any inventory the command refuses instead of guessing.
    let e = orphans::delete_orphans(
        &client,
        &Instances::None,
        &opts,
        SystemTime::now(),
        async |_: &[orphans::Orphan]| Ok(Answer::Yes),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "instance_inventory_missing");
}

#[tokio::test]
async fn status_watch_refreshes_on_a_node_change_and_bad_names_are_one_line_errors() {
    if moto_or_skip() {
        return;
    }
    let sim = SimCluster::start(&Scenario::parse(REPLACE).unwrap())
        .await
        .unwrap();
    // Unknown node, unknown cluster: one line each, the right class.
    let (code, _, err) = hpk8s(&sim, &["replace-instance", "ip-10-9-9-9"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("error[node_not_found]") && err.contains("ip-10-9-9-9"),
        "{err}"
    );
    let (code, _, err) = hpk8s(
        &sim,
        &[
            "status",
            "--cluster",
            "arn:aws:sagemaker:us-west-2:111122223333:cluster/nosuch0000",
        ],
    )
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("error[sagemaker_cluster_not_found]") && err.contains("nosuch0000"),
        "{err}"
    );

    // --watch: a document now, another after a Node changes.
    let env = sim.env();
    #[allow(clippy::disallowed_methods)] // the test launches the real binary
    let mut child = std::process::Command::new(harness::hpk8s_bin())
        .args(["status", "--watch", "--output", "json"])
        .envs(env)
        .env("HPK8S_ROOT", "/nonexistent-root")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first: Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["summary"]["not_ready"], 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.api
        .set_ready(&sim.node("workers", 0).unwrap().name, false)
        .unwrap();
    let second: Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(second["summary"]["not_ready"], 1, "{}", second["summary"]);
}
