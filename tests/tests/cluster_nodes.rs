//! The controller's node watch and labels against the test API server:
//! nodes Ready in any order, a watch broken by compaction (410 Gone), the
//! deadline naming the missing nodes, unexpected nodes reported, labels
//! applied once (seen by the real kubectl), 5xx retried, 404 and 403 not,
//! and nodes joining later labelled by the agent's labeller.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use harness::fixtures::hyperpod::{Inventory, PROVISIONING_PARAMETERS};

use harness::kube_api::{FaultKind, NodeSpec, TestApiServer};
use lifecycle::agent::node_labels::label_joining_nodes;
use lifecycle::cluster::labels::{INSTANCE_GROUP, ROLE_WORKER};
use lifecycle::cluster::nodes::{
    self, CONTROL_PLANE_LABEL, ExpectedNode, NodesError, controller_labels, label_node,
    wait_until_ready,
};
use lifecycle::config::Config;
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};
use lifecycle::identity::{self, Overrides, Peer, Role};
use serde_json::{Value, json};

const KUBECTL: &str = "/usr/bin/kubectl";

async fn client_for(path: &Path) -> kube::Client {
    // One process-wide rustls provider, whatever else is linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    // Errors must reach hpk8s's own retries, not kube's 429/503 layer.
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

async fn start() -> (TestApiServer, kube::Client) {
    let api = TestApiServer::start().await.unwrap();
    let client = client_for(api.admin_kubeconfig_path()).await;
    (api, client)
}

fn ip(last: u8) -> IpAddr {
    format!("10.1.38.{last}").parse().unwrap()
}

/// The inventory: a controller (.1) and workers .2, .3, … in group `gpu`.
fn inventory(count: u8) -> Vec<ExpectedNode> {
    (1..=count)
        .map(|i| {
            let (group, role) = if i == 1 {
                ("controller-machine", Role::Controller)
            } else {
                ("gpu", Role::Worker)
            };
            ExpectedNode::from_peer(&Peer {
                address: ip(i),
                name: None,
                group: group.into(),
                role,
                instance_id: None,
            })
        })
        .collect()
}

/// Plays kubelet: registers `name` with InternalIP `address` (names differ
/// from the inventory's on purpose).
fn register(api: &TestApiServer, name: &str, address: IpAddr, labels: &[(&str, &str)]) {
    api.register_node(&NodeSpec {
        name: name.into(),
        addresses: vec![("InternalIP".into(), address.to_string())],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: vec![],
    })
    .unwrap();
}

fn labels_of(api: &TestApiServer, node: &str) -> BTreeMap<String, String> {
    let n = api.get_json("nodes", "", node).unwrap();
    serde_json::from_value(n["metadata"]["labels"].clone()).unwrap()
}

fn is_node_watch(r: &harness::kube_api::RequestRecord) -> bool {
    r.method == "GET" && r.path == "/api/v1/nodes" && r.query.contains("watch=true")
}

fn is_node_list(r: &harness::kube_api::RequestRecord) -> bool {
    r.method == "GET" && r.path == "/api/v1/nodes" && !r.query.contains("watch=true")
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ready_in_any_order_complete_the_wait_and_extras_are_reported() {
    let (api, client) = start().await;
    let expected = inventory(4);
    for i in 1..=4u8 {
        register(&api, &format!("node-{i}"), ip(i), &[]);
    }
    // Ready before the wait starts: seen in the initial list.
    api.set_ready("node-3", true).unwrap();
    let wait = {
        let client = client.clone();
        let expected = expected.clone();
        tokio::spawn(
            async move { wait_until_ready(&client, &expected, Duration::from_secs(30)).await },
        )
    };
    until("the wait watches", || {
        api.requests().iter().any(is_node_watch)
    })
    .await;
    // A scale-up node the inventory does not list, and a NotReady stranger.
    register(
        &api,
        "scale-up-1",
        "10.1.99.9".parse().unwrap(),
        &[(INSTANCE_GROUP, "cpu")],
    );
    api.set_ready("scale-up-1", true).unwrap();
    register(&api, "stranger", "10.1.99.8".parse().unwrap(), &[]);
    for name in ["node-4", "node-1"] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.set_ready(name, true).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!wait.is_finished(), "node-2 is not Ready yet");
    api.set_ready("node-2", true).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = report.ready.iter().map(|r| r.node_name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3", "node-4"]);
    assert_eq!(report.node_name(ip(2)), Some("node-2"));
    assert_eq!(report.ready[1].expected.name, "ip-10-1-38-2");
    assert_eq!(report.unexpected.len(), 1, "{report:?}");
    assert_eq!(report.unexpected[0].node_name, "scale-up-1");
    assert_eq!(
        report.unexpected[0].address,
        Some("10.1.99.9".parse().unwrap())
    );
    // Watching, not polling: one list, then a watch.
    let lists = api.requests().iter().filter(|r| is_node_list(r)).count();
    assert_eq!(lists, 1, "{:?}", api.requests());
}

#[tokio::test(flavor = "current_thread")]
async fn a_watch_broken_by_compaction_still_completes() {
    let (api, client) = start().await;
    let expected = inventory(2);
    register(&api, "a", ip(1), &[]);
    register(&api, "b", ip(2), &[]);
    let wait = {
        let client = client.clone();
        tokio::spawn(
            async move { wait_until_ready(&client, &expected, Duration::from_secs(60)).await },
        )
    };
    until("the wait watches", || {
        api.requests().iter().any(is_node_watch)
    })
    .await;
    api.set_ready("a", true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Without yielding (one runtime thread), flood the server with events
    // until the watch falls behind and is cut, then compact: the watcher's
    // resume from its last version gets 410 Gone and must re-list.
    for i in 0..5000 {
        api.apply_json(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "churn", "namespace": "default"}, "data": {"i": i.to_string()}}))
            .unwrap();
    }
    api.compact();
    api.set_ready("b", true).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| {
            let log: Vec<String> = api
                .requests()
                .iter()
                .filter(|r| r.path.contains("nodes"))
                .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
                .collect();
            panic!("the wait did not recover from 410 Gone: {log:#?}")
        })
        .unwrap()
        .unwrap();
    assert_eq!(report.node_name(ip(2)), Some("b"));
    let lists = api.requests().iter().filter(|r| is_node_list(r)).count();
    assert!(lists >= 2, "the watcher re-listed: {:?}", api.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_error_names_the_missing_nodes_and_what_to_do() {
    let (api, client) = start().await;
    let expected = inventory(8);
    for i in 1..=8u8 {
        register(&api, &format!("n{i}"), ip(i), &[]);
    }
    api.set_ready("n1", true).unwrap();
    api.set_ready("n5", true).unwrap();
    let start = std::time::Instant::now();
    let e = wait_until_ready(&client, &expected, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    let text = e.to_string();
    assert_eq!(e.kind(), "nodes_not_ready", "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(
        text.starts_with("6 of 8 expected nodes not Ready"),
        "{text}"
    );
    assert!(
        text.contains(
            "ip-10-1-38-2, ip-10-1-38-3, ip-10-1-38-4, ip-10-1-38-6, ip-10-1-38-7 and 1 more"
        ),
        "{text}"
    );
    assert!(text.contains("journalctl -u hpk8s-bootstrap"), "{text}");
    assert!(text.contains("cluster.nodes_ready_timeout_secs"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_applied_once_and_kubectl_sees_them() {
    if harness::require(Path::new(KUBECTL).exists(), "kubectl (/usr/bin/kubectl)") {
        return;
    }
    let (api, client) = start().await;
    let expected = inventory(3);
    for i in 1..=3u8 {
        register(&api, &format!("n{i}"), ip(i), &[(INSTANCE_GROUP, "x")]);
        api.set_ready(&format!("n{i}"), true).unwrap();
    }
    register(
        &api,
        "late",
        "10.1.99.9".parse().unwrap(),
        &[(INSTANCE_GROUP, "cpu")],
    );
    api.set_ready("late", true).unwrap();
    let report = wait_until_ready(&client, &expected, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        nodes::apply_controller_labels(&client, &report, &Default::default())
            .await
            .unwrap(),
        4
    );

    let kubeconfig = api.admin_kubeconfig_path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || kubectl(&kubeconfig, &["get", "nodes", "-o", "json"]))
            .await
            .unwrap();
    let list: Value = serde_json::from_str(&out).unwrap();
    let by_name: BTreeMap<String, Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n["metadata"]["labels"].clone(),
            )
        })
        .collect();
    assert_eq!(by_name["n1"][INSTANCE_GROUP], "controller-machine");
    assert!(
        by_name["n1"].get(ROLE_WORKER).is_none(),
        "{}",
        by_name["n1"]
    );
    for n in ["n2", "n3"] {
        assert_eq!(by_name[n][INSTANCE_GROUP], "gpu");
        assert_eq!(by_name[n][ROLE_WORKER], "");
    }
    assert_eq!(by_name["late"][INSTANCE_GROUP], "cpu");
    assert_eq!(by_name["late"][ROLE_WORKER], "");
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.is("PATCH", "/api/v1/nodes/n2"))
        .unwrap();
    assert!(patch.query.contains("fieldManager=hpk8s"), "{patch:?}");

    // A second run changes nothing and sends no PATCH.
    api.clear_requests();
    assert_eq!(
        nodes::apply_controller_labels(&client, &report, &Default::default())
            .await
            .unwrap(),
        0
    );
    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(patches.is_empty(), "{patches:?}");
}

#[allow(clippy::disallowed_methods)] // test harness launches real components
fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_while_labelling_are_retried_but_404_and_403_are_not() {
    let (api, client) = start().await;
    register(&api, "w1", ip(2), &[]);
    let wanted = BTreeMap::from([(ROLE_WORKER.to_string(), String::new())]);
    api.inject_fault("/api/v1/nodes/w1", FaultKind::Status(500), 3);
    assert!(label_node(&client, "w1", &wanted).await.unwrap());
    assert_eq!(labels_of(&api, "w1")[ROLE_WORKER], "");
    let attempts = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/nodes/w1")
        .count();
    assert!(
        attempts >= 5,
        "3 failures, then GET and PATCH: {:?}",
        api.requests()
    );

    // Already labelled: a GET and no PATCH.
    api.clear_requests();
    assert!(!label_node(&client, "w1", &wanted).await.unwrap());
    assert!(api.requests().iter().all(|r| r.method != "PATCH"));

    // Deleted meanwhile: reported at once, not retried.
    api.clear_requests();
    let start = std::time::Instant::now();
    let e = label_node(&client, "gone", &wanted).await.unwrap_err();
    assert!(matches!(e, NodesError::NodeGone { .. }), "{e}");
    assert_eq!(e.kind(), "node_gone");
    assert!(e.to_string().contains("gone"), "{e}");
    assert_eq!(api.requests().len(), 1);
    assert!(start.elapsed() < Duration::from_secs(2));

    // A node's own credential may not set node-role labels (NodeRestriction).
    let node_client = client_for(&api.node_kubeconfig("w1").unwrap()).await;
    let e = label_node(
        &node_client,
        "w1",
        &BTreeMap::from([("node-role.kubernetes.io/gpu".to_string(), String::new())]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), "node_label_refused", "{e}");
    let text = e.to_string();
    assert!(
        text.contains("PATCH /api/v1/nodes/w1") && !text.contains('\n'),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_later_are_labelled_by_the_agent() {
    let (api, client) = start().await;
    // Labelled already: left alone.
    register(
        &api,
        "old",
        ip(2),
        &[(INSTANCE_GROUP, "gpu"), (ROLE_WORKER, "")],
    );
    api.set_ready("old", true).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = {
        let client = client.clone();
        tokio::spawn(async move {
            label_joining_nodes(&client, Default::default(), async {
                let _ = stopped.await;
            })
            .await
        })
    };
    until("the labeller watches", || {
        api.requests().iter().any(is_node_watch)
    })
    .await;
    register(&api, "late-gpu", ip(7), &[(INSTANCE_GROUP, "gpu")]);
    register(
        &api,
        "late-cp",
        ip(8),
        &[(INSTANCE_GROUP, "ctrl"), (CONTROL_PLANE_LABEL, "")],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !labels_of(&api, "late-gpu").contains_key(ROLE_WORKER),
        "not labelled before it is Ready"
    );
    // A transient failure on the first try is retried by label_node.
    api.inject_fault("/api/v1/nodes/late-gpu", FaultKind::Status(503), 1);
    api.set_ready("late-gpu", true).unwrap();
    api.set_ready("late-cp", true).unwrap();
    until("late-gpu is labelled", || {
        labels_of(&api, "late-gpu")
            .get(ROLE_WORKER)
            .map(String::as_str)
            == Some("")
    })
    .await;
    assert_eq!(
        controller_labels(&labels_of(&api, "late-cp"), None, &Default::default()),
        BTreeMap::from([(INSTANCE_GROUP.to_string(), "ctrl".to_string())])
    );
    assert!(!labels_of(&api, "late-cp").contains_key(ROLE_WORKER));
    stop.send(()).unwrap();
    let labelled = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .unwrap()
        .unwrap();
    // late-cp needs nothing (it registered its group, and is a control plane).
    assert_eq!(labelled, 1);
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.method == "PATCH"
                && (r.path.ends_with("/old") || r.path.ends_with("/late-cp"))),
        "nodes already labelled get no PATCH"
    );
}

async fn identity_of(root: &Path, own: IpAddr, toml: &str) -> identity::NodeIdentity {
    let host = Host::new(
        root,
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces(vec![own])),
    );
    let config = Config::parse(toml, Path::new("/etc/hpk8s/config.toml")).unwrap();
    let overrides = Overrides {
        // Never the real link-local address.
        ec2_imds_endpoint: "http://127.0.0.1:9".into(),
        ..Overrides::default()
    };
    identity::resolve_with(&host, &config, &overrides)
        .await
        .unwrap()
}

#[tokio::test]
async fn expected_nodes_are_the_inventory_nodes_that_join() {
    let root = tempfile::tempdir().unwrap();
    let inv = Inventory::new("arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr")
        .group("controller-machine", "ml.m5.2xlarge", 1)
        .group("worker-group-1", "ml.p5.48xlarge", 2)
        .group("login-group", "ml.m5.xlarge", 1)
        .controller_group("controller-machine")
        .login_group("login-group");
    inv.write_to(root.path()).unwrap();
    let base = format!("[identity]\nprovisioning_parameters = \"{PROVISIONING_PARAMETERS}\"\n");
    let ctrl = inv.customer_ip("controller-machine", 0);
    let id = identity_of(root.path(), ctrl, &base).await;
    let expected = nodes::expected_nodes(&id);
    assert_eq!(expected.len(), id.expected_nodes as usize);
    let summary: Vec<(IpAddr, &str, Role)> = expected
        .iter()
        .map(|e| (e.address, e.group.as_str(), e.role))
        .collect();
    assert_eq!(
        summary,
        [
            (ctrl, "controller-machine", Role::Controller),
            (
                inv.customer_ip("worker-group-1", 0),
                "worker-group-1",
                Role::Worker
            ),
            (
                inv.customer_ip("worker-group-1", 1),
                "worker-group-1",
                Role::Worker
            ),
        ]
    );
    assert_eq!(expected[0].name, nodes::address_name(ctrl));
    // Login nodes are expected when they join.
    let id = identity_of(
        root.path(),
        ctrl,
        &format!("{base}login_nodes_join = true\n"),
    )
    .await;
    let expected = nodes::expected_nodes(&id);
    assert_eq!(expected.len(), 4);
    assert_eq!(expected[3].role, Role::Login);
    assert_eq!(
        controller_labels(&BTreeMap::new(), Some(&expected[3]), &Default::default())[ROLE_WORKER],
        ""
    );

    // A static topology names its nodes.
    let toml = r#"[identity]
cluster_name = "lab"
[[identity.nodes]]
name = "cp-1"
address = "192.168.10.1"
role = "controller"
[[identity.nodes]]
name = "gpu-1"
address = "192.168.10.2"
role = "worker"
group = "gpu"
"#;
    let id = identity_of(root.path(), "192.168.10.2".parse().unwrap(), toml).await;
    let names: Vec<String> = nodes::expected_nodes(&id)
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["cp-1", "gpu-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_logged_after_the_list_and_at_most_every_ten_seconds() {
    let logs = harness::logs::CapturedLogs::global();
    let (api, client) = start().await;
    let expected: Vec<ExpectedNode> = ["prog-a", "prog-b", "prog-c"]
        .iter()
        .zip(200u8..)
        .map(|(name, last)| {
            ExpectedNode::from_peer(&Peer {
                address: ip(last),
                name: Some((*name).to_string()),
                group: "gpu".into(),
                role: Role::Worker,
                instance_id: None,
            })
        })
        .collect();
    for e in &expected {
        register(&api, &format!("k8s-{}", e.name), e.address, &[]);
    }
    api.set_ready("k8s-prog-a", true).unwrap();
    let wait = {
        let client = client.clone();
        let expected = expected.clone();
        tokio::spawn(
            async move { wait_until_ready(&client, &expected, Duration::from_secs(30)).await },
        )
    };
    until("the wait watches", || {
        api.requests().iter().any(is_node_watch)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.set_ready("k8s-prog-b", true).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.set_ready("k8s-prog-c", true).unwrap();
    wait.await.unwrap().unwrap();
    let text = logs.text();
    assert!(
        text.contains("1/3 Ready; waiting for prog-b and prog-c"),
        "{text}"
    );
    assert!(
        !text.contains("0/3 Ready"),
        "logged before the list: {text}"
    );
    assert!(
        !text.contains("2/3 Ready; waiting for prog-c"),
        "a second line within 10 s: {text}"
    );
    // (No assertion on the final "3/3 Ready" line: another test of this
    // binary waits for three nodes too.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_nodes_in_shuffled_order_with_one_list() {
    let (api, client) = start().await;
    let address =
        |i: u16| -> IpAddr { format!("10.2.{}.{}", i / 250, i % 250 + 1).parse().unwrap() };
    let expected: Vec<ExpectedNode> = (0..500u16)
        .map(|i| {
            ExpectedNode::from_peer(&Peer {
                address: address(i),
                name: None,
                group: "gpu".into(),
                role: Role::Worker,
                instance_id: None,
            })
        })
        .collect();
    for i in 0..500u16 {
        register(&api, &format!("big-{i}"), address(i), &[]);
    }
    let wait = {
        let client = client.clone();
        tokio::spawn(
            async move { wait_until_ready(&client, &expected, Duration::from_secs(60)).await },
        )
    };
    until("the wait watches", || {
        api.requests().iter().any(is_node_watch)
    })
    .await;
    // A fixed permutation (7 is coprime with 500): far from inventory order.
    let order: Vec<u16> = (0..500u16).map(|i| (i * 7 + 3) % 500).collect();
    let start = std::time::Instant::now();
    for (n, i) in order.iter().enumerate() {
        api.set_ready(&format!("big-{i}"), true).unwrap();
        if n % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let report = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(report.ready.len(), 500);
    assert_eq!(report.node_name(address(499)), Some("big-499"));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let lists = api.requests().iter().filter(|r| is_node_list(r)).count();
    assert_eq!(lists, 1);
}
