//! Remediation against the test API server (and moto for HyperPod): the
//! drain (budgets named at the deadline, overlapping budgets, NotReady
//! nodes, DaemonSet and mirror pods, the eviction body's grace period), the
//! controller loop (budget, circuit breaker, resume, recovery that keeps a
//! person's cordon and taint, protected nodes, interruption notices) and
//! the restart routes (SageMaker batches with per-node failures, Slurm).

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use harness::kube_api::fixtures::{Pod, PodDisruptionBudget};
use harness::kube_api::{NodeSpec, TestApiServer};
use k8s_openapi::api::core::v1::Node;
use lifecycle::agent::node_status::{NodeStatus, Published};
use lifecycle::cluster::labels;
use lifecycle::config::{Config, RemediationConfig};
use lifecycle::drain::{self, Blocker};
use lifecycle::host::{CmdOutput, FixedInterfaces, Host, ScriptedRunner};
use lifecycle::remediation::controller::{self, Setup};
use lifecycle::remediation::metrics::Metrics;
use lifecycle::remediation::ownership;
use lifecycle::remediation::restart::Route;
use serde_json::{Value, json};

/// An admin client that sees every answer at once (as the controller's
/// remediation client does: a 429 names the budget).
async fn admin(api: &TestApiServer) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = api.admin_kubeconfig_path();
    lifecycle::kube::client::from_kubeconfig_with(
        path,
        path,
        lifecycle::kube::client::Retries::Caller,
    )
    .await
    .unwrap()
}

fn remediation(extra: &str) -> RemediationConfig {
    Config::parse(
        &format!("[remediation]\n{extra}\n"),
        Path::new("/etc/hpk8s/config.toml"),
    )
    .unwrap()
    .remediation
}

fn worker(name: &str, group: &str, last: u32) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        addresses: vec![(
            "InternalIP".into(),
            format!("10.1.{}.{}", last / 250, 10 + last % 250),
        )],
        labels: vec![
            (labels::INSTANCE_GROUP.into(), group.into()),
            (labels::INSTANCE_ID.into(), format!("i-{last:017x}")),
        ],
        taints: Vec::new(),
    }
}

fn scripted_host() -> (Host, Arc<ScriptedRunner>) {
    let runner = Arc::new(ScriptedRunner::new());
    let host = Host::new(
        Path::new("/"),
        runner.clone(),
        Arc::new(FixedInterfaces(vec!["10.1.0.1".parse().unwrap()])),
    );
    (host, runner)
}

async fn gpu(client: &kube::Client, node: &str, status: &str, reason: &str) {
    let mut s = NodeStatus::new(client.clone(), node);
    s.publish(&Published {
        type_: "GPUHealthy".into(),
        status: status.into(),
        reason: reason.into(),
        message: format!("GPU 0 (GPU-test): {reason}"),
    })
    .await
    .unwrap();
}

fn node(api: &TestApiServer, name: &str) -> Value {
    api.get_json("nodes", "", name).unwrap()
}

fn cordoned(n: &Value) -> bool {
    n["spec"]["unschedulable"] == json!(true)
}

fn taint_keys(n: &Value) -> Vec<String> {
    n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

fn held(n: &Value) -> bool {
    n["metadata"]["annotations"][ownership::RECORD].is_string()
}

fn events(api: &TestApiServer, node: &str, reason: &str) -> Vec<Value> {
    api.names("events", Some("default"))
        .into_iter()
        .filter_map(|e| api.get_json("events", "default", &e))
        .filter(|e| e["involvedObject"]["name"] == node && e["reason"] == reason)
        .collect()
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Mutex<Metrics>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap();
    }
    fn metrics(&self) -> String {
        self.metrics.lock().unwrap().render()
    }
}

fn start(
    client: kube::Client,
    config: RemediationConfig,
    route: Route,
    host: Host,
    controller_groups: &[&str],
) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = Arc::new(Mutex::new(Metrics::default()));
    let setup = Setup {
        client,
        config,
        host,
        route,
        controller_groups: controller_groups.iter().map(|g| g.to_string()).collect(),
        ticket_check: None,
        metrics: metrics.clone(),
        pass_every: Duration::from_millis(200),
    };
    let task = tokio::spawn(async move {
        controller::run(setup, async {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        stop: Some(tx),
        task,
        metrics,
    }
}

// ------------------------------------------------------------------ drain

/// web-0 on `first`, web-1 on `second`, and a budget (web-budget) that
/// wants both: web-0 cannot be evicted.
fn blocked_web(api: &TestApiServer, first: &str, second: &str) {
    for (pod, on) in [("web-0", first), ("web-1", second)] {
        api.apply_json(
            Pod::test("default", pod)
                .on_node(on)
                .with_label("app", "web")
                .owned_by("apps/v1", "ReplicaSet", "web")
                .running_ready()
                .json(),
        )
        .unwrap();
    }
    api.apply_json(
        PodDisruptionBudget::test("default", "web-budget", "app", "web")
            .min_available(2)
            .json(),
    )
    .unwrap();
}

fn seed_drain_node(api: &TestApiServer, name: &str) {
    api.register_node(&worker(name, "workers", 1)).unwrap();
    api.set_ready(name, true).unwrap();
}

#[tokio::test]
async fn a_budget_blocked_drain_stops_at_its_deadline_naming_pod_and_budget() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    seed_drain_node(&api, "n1");
    api.register_node(&worker("n2", "workers", 2)).unwrap();
    // web-0 on n1 and web-1 on n2; the budget wants both.
    blocked_web(&api, "n1", "n2");
    // Evicted: a ReplicaSet pod with scratch space. Untouched: a DaemonSet
    // pod and a mirror pod. Named, not evicted: a pod nobody owns.
    api.apply_json(
        Pod::test("default", "scratch")
            .on_node("n1")
            .owned_by("apps/v1", "ReplicaSet", "batch")
            .with_empty_dir("tmp")
            .running_ready()
            .json(),
    )
    .unwrap();
    api.apply_json(
        Pod::test("kube-system", "nvidia-device-plugin-x")
            .on_node("n1")
            .owned_by("apps/v1", "DaemonSet", "nvidia-device-plugin")
            .running_ready()
            .json(),
    )
    .unwrap();
    let mut mirror = Pod::test("kube-system", "etcd-n1")
        .on_node("n1")
        .running_ready()
        .json();
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    api.apply_json(mirror).unwrap();
    api.apply_json(
        Pod::test("default", "lonely")
            .on_node("n1")
            .running_ready()
            .json(),
    )
    .unwrap();

    let opts = drain::Options {
        deadline: Duration::from_secs(3),
        grace_period_secs: Some(7),
        retry_every: Duration::from_millis(200),
        poll_every: Duration::from_millis(100),
        ..drain::Options::from_config(&RemediationConfig::default())
    };
    let started = Instant::now();
    let report = drain::drain(&client, "n1", &opts).await.unwrap();
    let took = started.elapsed();
    assert!(!report.finished, "{report:?}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let web = report
        .remaining
        .iter()
        .find(|r| r.pod == "default/web-0")
        .unwrap();
    assert!(
        matches!(&web.blocker, Blocker::Budget { budget, .. } if budget == "web-budget"),
        "{web:?}"
    );
    let lonely = report
        .remaining
        .iter()
        .find(|r| r.pod == "default/lonely")
        .unwrap();
    assert_eq!(lonely.blocker, Blocker::Unmanaged);
    let summary = report.summary();
    assert!(
        summary.contains("default/web-0") && summary.contains("web-budget"),
        "{summary}"
    );
    assert_eq!(report.evicted, vec!["default/scratch".to_string()]);
    assert!(api.get_json("pods", "default", "scratch").is_none());
    assert!(
        api.get_json("pods", "kube-system", "nvidia-device-plugin-x")
            .is_some()
    );
    assert!(api.get_json("pods", "kube-system", "etcd-n1").is_some());
    assert!(api.get_json("pods", "default", "web-0").is_some());
    assert!(api.get_json("pods", "default", "lonely").is_some());
    // The grace period travelled in the Eviction's deleteOptions.
    let evictions: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/eviction"))
        .collect();
    assert!(!evictions.is_empty());
    for e in &evictions {
        let body: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(body["apiVersion"], "policy/v1", "{body}");
        assert_eq!(body["deleteOptions"]["gracePeriodSeconds"], 7, "{body}");
    }
    // Retried while blocked, not hammered.
    let web_tries = evictions
        .iter()
        .filter(|r| r.path.contains("/web-0/"))
        .count();
    assert!((2..=40).contains(&web_tries), "{web_tries}");
    // JSON output names the pod and budget.
    let doc = serde_json::to_value(&report).unwrap();
    let web = doc["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pod"] == "default/web-0")
        .unwrap();
    assert_eq!(web["blocker"]["kind"], "budget", "{doc}");
    assert_eq!(web["budgets"], json!(["web-budget"]), "{doc}");
}

#[tokio::test]
async fn overlapping_budgets_are_both_named() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    seed_drain_node(&api, "n1");
    api.apply_json(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}))
        .unwrap();
    api.apply_json(
        Pod::test("ml", "trainer-0")
            .on_node("n1")
            .with_label("app", "trainer")
            .with_label("tier", "gpu")
            .owned_by("batch/v1", "Job", "trainer")
            .running_ready()
            .json(),
    )
    .unwrap();
    api.apply_json(
        PodDisruptionBudget::test("ml", "by-app", "app", "trainer")
            .max_unavailable(1)
            .json(),
    )
    .unwrap();
    api.apply_json(
        PodDisruptionBudget::test("ml", "by-tier", "tier", "gpu")
            .max_unavailable(1)
            .json(),
    )
    .unwrap();
    let opts = drain::Options {
        deadline: Duration::from_secs(2),
        retry_every: Duration::from_millis(200),
        poll_every: Duration::from_millis(100),
        ..drain::Options::default()
    };
    let report = drain::drain(&client, "n1", &opts).await.unwrap();
    assert!(!report.finished);
    let r = &report.remaining[0];
    assert_eq!(r.pod, "ml/trainer-0");
    match &r.blocker {
        Blocker::OverlappingBudgets { budgets } => {
            assert_eq!(budgets, &vec!["by-app".to_string(), "by-tier".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert!(report.summary().contains("by-app") && report.summary().contains("by-tier"));
}

#[tokio::test]
async fn pods_on_a_not_ready_node_do_not_block_past_their_grace_period() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    seed_drain_node(&api, "n1");
    let mut pod = Pod::test("default", "stuck")
        .on_node("n1")
        .owned_by("apps/v1", "ReplicaSet", "stuck")
        .running_ready()
        .json();
    pod["spec"]["terminationGracePeriodSeconds"] = json!(1);
    api.apply_json(pod).unwrap();
    // The kubelet is gone: evicted pods stay Terminating forever.
    api.hold_pod_termination(true);
    api.set_ready("n1", false).unwrap();
    let opts = drain::Options {
        deadline: Duration::from_secs(30),
        retry_every: Duration::from_millis(200),
        poll_every: Duration::from_millis(100),
        ..drain::Options::default()
    };
    let started = Instant::now();
    let report = drain::drain(&client, "n1", &opts).await.unwrap();
    assert!(report.finished, "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.left_terminating, vec!["default/stuck".to_string()]);
}

// --------------------------------------------------------------- controller

#[tokio::test]
async fn a_fleet_wide_fault_trips_the_breaker_and_resume_works_through_the_budget() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    for i in 0..40u32 {
        let name = format!("gpu-{i:02}");
        api.register_node(&worker(&name, "workers", i)).unwrap();
        api.set_ready(&name, true).unwrap();
    }
    let cfg = remediation("recovery_after_secs = 1\nmax_actions_per_hour = 100");
    let (host, _) = scripted_host();
    let running = start(client.clone(), cfg, Route::SelfManaged, host, &[]);
    let faulty: Vec<String> = (0..12).map(|i| format!("gpu-{i:02}")).collect();
    // Two faults first: within the budget (5 % of 40 = 2).
    for n in &faulty[..2] {
        gpu(&client, n, "False", "GPUNeedsReboot").await;
    }
    wait_for("the first two held", Duration::from_secs(10), || {
        faulty[..2]
            .iter()
            .all(|n| held(&node(&api, n)) && cordoned(&node(&api, n)))
    })
    .await;
    // Then ten more at once: 12 of 40 within the window, more than 10 %.
    for n in &faulty[2..] {
        gpu(&client, n, "False", "GPUNeedsReboot").await;
    }
    wait_for("the breaker to open", Duration::from_secs(10), || {
        api.get_json("configmaps", "kube-system", "hpk8s-remediation")
            .is_some_and(|cm| cm["data"]["state"] == "open")
    })
    .await;
    wait_for(
        "breaker Events on the deferred nodes",
        Duration::from_secs(10),
        || {
            faulty[2..]
                .iter()
                .all(|n| !events(&api, n, "RemediationBreakerOpen").is_empty())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held_now = (0..40)
        .filter(|i| held(&node(&api, &format!("gpu-{i:02}"))))
        .count();
    assert_eq!(held_now, 2, "only the budget was acted on");
    for n in &faulty[2..] {
        let v = node(&api, n);
        assert!(!cordoned(&v) && taint_keys(&v).is_empty(), "{n}: {v}");
    }
    let m = running.metrics();
    assert!(m.contains("hpk8s_remediation_breaker_open 1"), "{m}");
    assert!(
        m.contains("hpk8s_remediation_nodes_deferred{reason=\"breaker\"} 10"),
        "{m}"
    );
    assert!(m.contains("hpk8s_remediation_nodes_held 2"), "{m}");
    let event = &events(&api, &faulty[5], "RemediationBreakerOpen")[0];
    assert_eq!(event["type"], "Warning");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("hpk8s remediation resume")
    );

    // A person resumes (the CLI), then the held nodes recover one after
    // another: never more than 2 held, all 12 handled in turn.
    let kubeconfig = api.admin_kubeconfig_path().to_path_buf();
    #[allow(clippy::disallowed_methods)] // the test launches the real binary
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::hpk8s_bin())
            .args(["remediation", "resume", "--kubeconfig"])
            .arg(kubeconfig)
            .env("HPK8S_CONFIG", "/dev/null")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("it was open"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut handled = std::collections::BTreeSet::new();
    let mut max_held = 0;
    let start_at = Instant::now();
    while handled.len() < 12 {
        assert!(
            start_at.elapsed() < Duration::from_secs(60),
            "handled only {handled:?}"
        );
        let now_held: Vec<String> = faulty
            .iter()
            .filter(|n| held(&node(&api, n)))
            .cloned()
            .collect();
        max_held = max_held.max(now_held.len());
        if now_held.len() > 2 {
            for n in &now_held {
                let v = node(&api, n);
                eprintln!(
                    "{n}: {} {}",
                    v["metadata"]["annotations"], v["status"]["conditions"]
                );
            }
            panic!(
                "{} held: {now_held:?} (handled {handled:?})",
                now_held.len()
            );
        }
        for n in &now_held {
            if handled.insert(n.clone()) {
                // Rebooted by someone: healthy again.
                gpu(&client, n, "True", "GPUsHealthy").await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(max_held <= 2, "{max_held}");
    wait_for("every node released", Duration::from_secs(20), || {
        faulty.iter().all(|n| {
            let v = node(&api, n);
            !held(&v) && !cordoned(&v) && taint_keys(&v).is_empty()
        })
    })
    .await;
    let m = running.metrics();
    assert!(m.contains("hpk8s_remediation_breaker_open 0"), "{m}");
    assert!(
        m.contains("hpk8s_remediation_actions_total{action=\"release\",result=\"ok\"} 12"),
        "{m}"
    );
    running.stop().await;
}

#[tokio::test]
async fn recovery_removes_only_what_hpk8s_set() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    for (i, name) in (0u32..).zip(["mine", "persons"]) {
        api.register_node(&worker(name, "workers", i)).unwrap();
        api.set_ready(name, true).unwrap();
    }
    // A person cordoned "persons" and tainted it before the fault.
    let mut p = node(&api, "persons");
    p["spec"]["unschedulable"] = json!(true);
    p["spec"]["taints"] =
        json!([{"key": "team.example/maintenance", "value": "disk", "effect": "NoSchedule"}]);
    api.apply_json(p).unwrap();
    let cfg = remediation(
        "recovery_after_secs = 1\nhealth_label = true\nmax_unavailable_percent = 100\nbreaker_percent = 100",
    );
    let (host, _) = scripted_host();
    let running = start(client.clone(), cfg, Route::SelfManaged, host, &[]);
    for n in ["mine", "persons"] {
        gpu(&client, n, "False", "GPUNeedsReboot").await;
    }
    wait_for("both held", Duration::from_secs(10), || {
        ["mine", "persons"].iter().all(|n| held(&node(&api, n)))
    })
    .await;
    let v = node(&api, "mine");
    assert!(cordoned(&v));
    assert_eq!(
        taint_keys(&v),
        vec!["hpk8s.io/gpu-unhealthy:NoSchedule".to_string()]
    );
    assert_eq!(
        v["metadata"]["labels"][ownership::HEALTH_LABEL],
        "Unschedulable"
    );
    let record: Value = serde_json::from_str(
        v["metadata"]["annotations"][ownership::RECORD]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["cordoned"], true);
    assert_eq!(record["reason"], "GPUNeedsReboot");
    let p = node(&api, "persons");
    let record: Value = serde_json::from_str(
        p["metadata"]["annotations"][ownership::RECORD]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["cordoned"], false, "the cordon was the person's");
    assert!(!events(&api, "mine", "RemediationHold").is_empty());
    // Drained (nothing to evict) and, by default, no reboot requested.
    wait_for("drained", Duration::from_secs(10), || {
        !events(&api, "mine", "Drained").is_empty()
    })
    .await;
    assert!(events(&api, "mine", "RebootRequested").is_empty());

    // Rebooted by someone; healthy again.
    for n in ["mine", "persons"] {
        gpu(&client, n, "True", "GPUsHealthy").await;
    }
    wait_for("both released", Duration::from_secs(10), || {
        ["mine", "persons"].iter().all(|n| !held(&node(&api, n)))
    })
    .await;
    let v = node(&api, "mine");
    assert!(!cordoned(&v) && taint_keys(&v).is_empty(), "{v}");
    assert_eq!(
        v["metadata"]["labels"][ownership::HEALTH_LABEL],
        "Schedulable"
    );
    let p = node(&api, "persons");
    assert!(cordoned(&p), "a person's cordon stays: {p}");
    assert_eq!(
        taint_keys(&p),
        vec!["team.example/maintenance:NoSchedule".to_string()]
    );
    let released = &events(&api, "persons", "RemediationReleased")[0];
    assert!(
        released["message"].as_str().unwrap().contains("stays"),
        "{released}"
    );
    running.stop().await;
}

#[tokio::test]
async fn control_plane_and_controller_group_nodes_are_refused() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    let mut cp = worker("cp", "controller", 1);
    cp.labels.push((
        "node-role.kubernetes.io/control-plane".into(),
        String::new(),
    ));
    api.register_node(&cp).unwrap();
    api.register_node(&worker("login-ctl", "controller", 2))
        .unwrap();
    api.register_node(&worker("w", "workers", 3)).unwrap();
    let cfg = remediation("needs_reboot = \"reboot\"");
    let (host, runner) = scripted_host();
    let running = start(
        client.clone(),
        cfg,
        Route::HyperPod {
            api: None,
            route: lifecycle::config::RecoveryRoute::Slurm,
        },
        host,
        &["controller"],
    );
    for n in ["cp", "login-ctl"] {
        gpu(&client, n, "False", "GPUNeedsReboot").await;
    }
    wait_for("refusals", Duration::from_secs(10), || {
        ["cp", "login-ctl"]
            .iter()
            .all(|n| !events(&api, n, "RemediationRefused").is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    for n in ["cp", "login-ctl"] {
        let v = node(&api, n);
        assert!(
            !held(&v) && !cordoned(&v) && taint_keys(&v).is_empty(),
            "{v}"
        );
    }
    assert!(
        runner.calls().iter().all(|c| !c.starts_with("scontrol")),
        "{:?}",
        runner.calls()
    );
    // Exactly one Event each, not one per pass.
    assert_eq!(events(&api, "cp", "RemediationRefused").len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn reboots_go_through_slurm_as_argv_after_the_drain() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    api.register_node(&worker("ip-10-1-0-11", "workers", 1))
        .unwrap();
    api.set_ready("ip-10-1-0-11", true).unwrap();
    api.apply_json(
        Pod::test("default", "job-0")
            .on_node("ip-10-1-0-11")
            .owned_by("batch/v1", "Job", "job")
            .running_ready()
            .json(),
    )
    .unwrap();
    let cfg = remediation("needs_reboot = \"reboot\"\nneeds_replacement = \"replace\"");
    let (host, runner) = scripted_host();
    runner.on(&["scontrol"], CmdOutput::ok(""));
    let running = start(
        client.clone(),
        cfg,
        Route::HyperPod {
            api: None,
            route: lifecycle::config::RecoveryRoute::Auto,
        },
        host,
        &[],
    );
    gpu(&client, "ip-10-1-0-11", "False", "GPUNeedsReboot").await;
    wait_for("the Slurm request", Duration::from_secs(10), || {
        runner.calls().iter().any(|c| c.starts_with("scontrol"))
    })
    .await;
    assert!(
        api.get_json("pods", "default", "job-0").is_none(),
        "drained first"
    );
    let calls: Vec<String> = runner
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("scontrol"))
        .collect();
    assert_eq!(
        calls,
        vec!["scontrol update node=ip-10-1-0-11 state=fail reason=Action:Reboot".to_string()]
    );
    wait_for("the request recorded", Duration::from_secs(5), || {
        !events(&api, "ip-10-1-0-11", "RebootRequested").is_empty()
    })
    .await;
    let v = node(&api, "ip-10-1-0-11");
    let record: Value = serde_json::from_str(
        v["metadata"]["annotations"][ownership::RECORD]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["stage"], "requested");
    assert_eq!(record["restart"], "reboot");
    // Not asked twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        runner
            .calls()
            .iter()
            .filter(|c| c.starts_with("scontrol"))
            .count(),
        1
    );
    running.stop().await;
}

#[tokio::test]
async fn self_managed_reboots_are_requested_on_the_node_and_replacements_reported() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    for (i, n) in (0u32..).zip(["r1", "r2"]) {
        api.register_node(&worker(n, "workers", i)).unwrap();
        api.set_ready(n, true).unwrap();
    }
    let cfg = remediation(
        "needs_reboot = \"reboot\"\nneeds_replacement = \"replace\"\nmax_unavailable_percent = 100\nbreaker_percent = 100",
    );
    let (host, _) = scripted_host();
    let running = start(client.clone(), cfg, Route::SelfManaged, host, &[]);
    gpu(&client, "r1", "False", "GPUNeedsReboot").await;
    gpu(&client, "r2", "False", "GPUNeedsReplacement").await;
    wait_for("requests", Duration::from_secs(10), || {
        node(&api, "r1")["metadata"]["annotations"][ownership::REBOOT_REQUESTED].is_string()
            && !events(&api, "r2", "ReplaceInstance").is_empty()
    })
    .await;
    let v: Node = serde_json::from_value(node(&api, "r1")).unwrap();
    let booted_before = SystemTime::now() - Duration::from_secs(3600);
    assert!(lifecycle::agent::reboot_request::requested(
        &v,
        booted_before
    ));
    let msg = events(&api, "r2", "ReplaceInstance")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("i-00000000000000001") && msg.contains("autoscaling group"),
        "{msg}"
    );
    running.stop().await;
}

// -------------------------------------------------------------- interruption

#[tokio::test]
async fn a_spot_notice_taints_and_cordons_within_two_seconds_and_drains_before_the_notice() {
    use harness::imds::FakeImds;
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    api.register_node(&worker("spot-1", "gpu-spot", 1)).unwrap();
    api.set_ready("spot-1", true).unwrap();
    api.apply_json(
        Pod::test("default", "trainer")
            .on_node("spot-1")
            .owned_by("apps/v1", "ReplicaSet", "trainer")
            .running_ready()
            .json(),
    )
    .unwrap();
    // The node agent with its own credential under a host root.
    let root = tempfile::tempdir().unwrap();
    let kubelet = api.node_kubeconfig("spot-1").unwrap();
    std::fs::create_dir_all(root.path().join("etc/kubernetes")).unwrap();
    std::fs::copy(&kubelet, root.path().join("etc/kubernetes/kubelet.conf")).unwrap();
    let node_host = Host::new(
        root.path(),
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces(vec!["10.1.0.11".parse().unwrap()])),
    );
    let imds = FakeImds::start();
    let client_imds =
        lifecycle::identity::ImdsClient::new(imds.url(), Duration::from_secs(1)).unwrap();
    let (agent_stop, agent_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(lifecycle::agent::interruption::run(
        client_imds,
        Duration::from_millis(200),
        node_host,
        "spot-1".into(),
        async {
            let _ = agent_rx.await;
        },
    ));
    let (host, _) = scripted_host();
    let running = start(
        client.clone(),
        remediation(""),
        Route::SelfManaged,
        host,
        &[],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let notice_at = SystemTime::now() + Duration::from_secs(20);
    imds.set_spot_interruption("terminate", &lifecycle::values::time::rfc3339(notice_at));
    let answered = Instant::now();
    wait_for("taint and cordon", Duration::from_secs(2), || {
        let v = node(&api, "spot-1");
        cordoned(&v) && taint_keys(&v).contains(&"hpk8s.io/interruption:NoSchedule".to_string())
    })
    .await;
    let took = answered.elapsed();
    let v = node(&api, "spot-1");
    let t = v["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "hpk8s.io/interruption")
        .unwrap()
        .clone();
    assert_eq!(t["value"], "terminate");
    wait_for("the drain", Duration::from_secs(10), || {
        api.get_json("pods", "default", "trainer").is_none()
    })
    .await;
    assert!(
        SystemTime::now() < notice_at - Duration::from_secs(15),
        "drained before the notice's margin"
    );
    eprintln!("spot notice to taint+cordon: {took:?}");
    let _ = agent_stop.send(());
    agent.await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn a_drain_blocked_by_a_budget_leaves_the_node_cordoned_and_requests_nothing() {
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    for (i, n) in (0u32..).zip(["ip-10-1-0-21", "ip-10-1-0-22"]) {
        api.register_node(&worker(n, "workers", 21 + i)).unwrap();
        api.set_ready(n, true).unwrap();
    }
    blocked_web(&api, "ip-10-1-0-21", "ip-10-1-0-22");
    let cfg = remediation(
        "needs_reboot = \"reboot\"\ndrain_timeout_secs = 2\nmax_unavailable_percent = 100\nbreaker_percent = 100",
    );
    let (host, runner) = scripted_host();
    runner.on(&["scontrol"], CmdOutput::ok(""));
    let running = start(
        client.clone(),
        cfg,
        Route::HyperPod {
            api: None,
            route: lifecycle::config::RecoveryRoute::Slurm,
        },
        host,
        &[],
    );
    gpu(&client, "ip-10-1-0-21", "False", "GPUNeedsReboot").await;
    wait_for("the drain to give up", Duration::from_secs(10), || {
        !events(&api, "ip-10-1-0-21", "DrainBlocked").is_empty()
    })
    .await;
    let e = &events(&api, "ip-10-1-0-21", "DrainBlocked")[0];
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("default/web-0") && msg.contains("web-budget"),
        "{msg}"
    );
    assert_eq!(e["type"], "Warning");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = node(&api, "ip-10-1-0-21");
    assert!(cordoned(&v), "{v}");
    let record: Value = serde_json::from_str(
        v["metadata"]["annotations"][ownership::RECORD]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["stage"], "drain-blocked");
    assert!(api.get_json("pods", "default", "web-0").is_some());
    assert!(
        runner.calls().iter().all(|c| !c.starts_with("scontrol")),
        "no reboot after a blocked drain: {:?}",
        runner.calls()
    );
    assert!(
        running
            .metrics()
            .contains("hpk8s_remediation_drains_total{result=\"deadline\"} 1")
    );
    running.stop().await;
}

// ---------------------------------------------------------------- HyperPod

use harness::moto::{DEFAULT_REGION, Moto, resource_config};
use lifecycle::aws::sagemaker::{Restart, SageMaker};
use lifecycle::remediation::restart::{self, Outcome, Target};

fn moto() -> Option<Moto> {
    if harness::moto::skip_without_moto() {
        return None;
    }
    Some(Moto::start().expect("start moto"))
}

#[tokio::test]
async fn hyperpod_restarts_are_batched_with_per_node_codes_and_slurm_when_unsupported() {
    let Some(moto) = moto() else { return };
    let doc = resource_config("hp", DEFAULT_REGION, &[("workers", "ml.p5.48xlarge", 30)]);
    let seeded = moto.seed_cluster(&doc).await.unwrap();
    let sdk = moto.sdk_config(DEFAULT_REGION).await;
    let api = SageMaker::new(&sdk, &seeded.cluster_arn);
    let mut targets: Vec<Target> = seeded
        .node_ids
        .iter()
        .enumerate()
        .map(|(i, id)| Target {
            node: format!("ip-10-1-0-{}.us-west-2.compute.internal", 11 + i),
            instance_id: Some(id.clone()),
        })
        .collect();
    targets.push(Target {
        node: "ip-10-1-9-9".into(),
        instance_id: Some("i-0000000000000dead".into()),
    });
    moto.force_node_error("InstanceIdInUse", &[seeded.node_ids[3].clone()])
        .await
        .unwrap();
    let (host, runner) = scripted_host();
    let route = Route::HyperPod {
        api: Some(api.clone()),
        route: lifecycle::config::RecoveryRoute::Api,
    };
    let outcomes = restart::request(&route, &host, Restart::Reboot, &targets).await;
    let calls = moto.batch_calls().await.unwrap();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, "BatchRebootClusterNodes");
    assert_eq!((calls[0].1.len(), calls[1].1.len()), (25, 6));
    let of = |id: &str| {
        outcomes
            .iter()
            .find(|(t, _)| t.instance_id.as_deref() == Some(id))
            .unwrap()
            .1
            .clone()
    };
    assert!(matches!(
        of(&seeded.node_ids[0]),
        Outcome::Requested { via: "sagemaker" }
    ));
    assert!(
        matches!(of(&seeded.node_ids[3]), Outcome::Stopped { code, .. } if code == "InstanceIdInUse")
    );
    assert!(
        matches!(of("i-0000000000000dead"), Outcome::Failed { code, .. } if code == "InstanceIdNotFound")
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Requested { .. }))
            .count(),
        29
    );
    assert!(runner.calls().is_empty());

    // A cluster without the batch call: `auto` goes to Slurm, `api` says so.
    moto.set_unsupported(&["BatchReplaceClusterNodes"])
        .await
        .unwrap();
    runner.on(&["scontrol"], CmdOutput::ok(""));
    let auto = Route::HyperPod {
        api: Some(api.clone()),
        route: lifecycle::config::RecoveryRoute::Auto,
    };
    let outcomes = restart::request(&auto, &host, Restart::Replace, &targets[..2]).await;
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Requested { via: "slurm" })),
        "{outcomes:?}"
    );
    assert_eq!(
        runner.calls(),
        vec![
            "scontrol update node=ip-10-1-0-11 state=fail reason=Action:Replace".to_string(),
            "scontrol update node=ip-10-1-0-12 state=fail reason=Action:Replace".to_string(),
        ]
    );
    let outcomes = restart::request(&route, &host, Restart::Replace, &targets[..1]).await;
    assert!(
        matches!(&outcomes[0].1, Outcome::Failed { code, .. } if code == "sagemaker_action_unsupported"),
        "{outcomes:?}"
    );
}

#[tokio::test]
async fn the_controller_replaces_through_the_api_after_making_sure_of_the_ticket() {
    let Some(moto) = moto() else { return };
    let doc = resource_config("hp", DEFAULT_REGION, &[("workers", "ml.p5.48xlarge", 3)]);
    let seeded = moto.seed_cluster(&doc).await.unwrap();
    let sdk = moto.sdk_config(DEFAULT_REGION).await;
    let api = TestApiServer::start().await.unwrap();
    let client = admin(&api).await;
    for (i, id) in (0u32..).zip(&seeded.node_ids) {
        let mut spec = worker(&format!("hp-{i}"), "workers", i);
        spec.labels[1].1.clone_from(id);
        api.register_node(&spec).unwrap();
        api.set_ready(&spec.name, true).unwrap();
    }
    let checks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticket_ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let setup = Setup {
        client: client.clone(),
        config: remediation(
            "needs_replacement = \"replace\"\nmax_unavailable_percent = 100\nbreaker_percent = 100",
        ),
        host: scripted_host().0,
        route: Route::HyperPod {
            api: Some(SageMaker::new(&sdk, &seeded.cluster_arn)),
            route: lifecycle::config::RecoveryRoute::Api,
        },
        controller_groups: Vec::new(),
        ticket_check: Some(Box::new({
            let checks = checks.clone();
            let ticket_ok = ticket_ok.clone();
            move || {
                checks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let ok = ticket_ok.load(std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("the rendezvous is unreachable".to_string())
                    }
                })
            }
        })),
        metrics: Arc::default(),
        pass_every: Duration::from_millis(200),
    };
    let task = tokio::spawn(controller::run(setup, async {
        let _ = rx.await;
    }));
    gpu(&client, "hp-1", "False", "GPUNeedsReplacement").await;
    // No ticket: no replacement, and the node says why.
    wait_for("the ticket refusal", Duration::from_secs(10), || {
        !events(&api, "hp-1", "ReplaceWaitsForTicket").is_empty()
    })
    .await;
    assert!(moto.batch_calls().await.unwrap().is_empty());
    ticket_ok.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_for("the replacement request", Duration::from_secs(10), || {
        !events(&api, "hp-1", "ReplaceRequested").is_empty()
    })
    .await;
    let calls = moto.batch_calls().await.unwrap();
    assert_eq!(
        calls,
        vec![(
            "BatchReplaceClusterNodes".to_string(),
            vec![seeded.node_ids[1].clone()]
        )]
    );
    assert!(checks.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let v = node(&api, "hp-1");
    let record: Value = serde_json::from_str(
        v["metadata"]["annotations"][ownership::RECORD]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["stage"], "requested");
    assert_eq!(record["restart"], "replace");
    let _ = tx.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn a_self_managed_node_reboots_itself_once_when_asked() {
    let api = TestApiServer::start().await.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    api.register_node(&worker("r1", "workers", 1)).unwrap();
    api.set_ready("r1", true).unwrap();
    // The node's host: booted at 1000 s after the epoch, its kubelet
    // credential, systemctl recorded.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::write(root.path().join("proc/stat"), "cpu 1 2 3\nbtime 1000\n").unwrap();
    std::fs::create_dir_all(root.path().join("etc/kubernetes")).unwrap();
    std::fs::copy(
        api.node_kubeconfig("r1").unwrap(),
        root.path().join("etc/kubernetes/kubelet.conf"),
    )
    .unwrap();
    let runner = Arc::new(ScriptedRunner::new());
    runner.on(&["systemctl"], CmdOutput::ok(""));
    let host = Host::new(
        root.path(),
        runner.clone(),
        Arc::new(FixedInterfaces(vec!["10.1.0.11".parse().unwrap()])),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(lifecycle::agent::reboot_request::run(
        host,
        "r1".into(),
        Duration::from_millis(100),
        async {
            let _ = stopped.await;
        },
    ));
    // A request predating this boot, or on an uncordoned node: ignored.
    let annotate = |at: &str, cordon: bool| {
        let mut n = node(&api, "r1");
        n["metadata"]["annotations"][ownership::REBOOT_REQUESTED] = json!(at);
        n["spec"]["unschedulable"] = json!(cordon);
        api.apply_json(n).unwrap();
    };
    annotate("1970-01-01T00:10:00Z", true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    annotate("2026-01-01T00:00:00Z", false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    // The controller's request on the drained, cordoned node: one reboot.
    annotate("2026-01-01T00:00:00Z", true);
    wait_for("the reboot", Duration::from_secs(5), || {
        !runner.calls().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        runner.calls(),
        vec!["systemctl reboot --no-block".to_string()]
    );
    assert!(
        agent.is_finished(),
        "it stops watching once it asked systemd"
    );
    let _ = stop.send(());
}
