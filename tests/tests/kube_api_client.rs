//! The test API server checked through the kube crate (the client hpk8s
//! itself uses): typed reads and writes, the four patch flavours, errors
//! as `Status`, pagination, evictions, watches, faults and NodeRestriction.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use harness::kube_api::fixtures::{Node as NodeFixture, Pod as PodFixture, PodDisruptionBudget};
use harness::kube_api::{FaultKind, TestApiServer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{
    Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;

async fn config_for(path: &std::path::Path) -> Config {
    // One process-wide rustls provider, whatever else is linked.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap()
}

/// A client without kube 5's default retry layer, which silently retries
/// 429/503/504 up to 15 times (an eviction blocked by a budget would take
/// minutes to surface).
async fn client_for(path: &std::path::Path) -> Client {
    let mut config = config_for(path).await;
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

async fn cluster() -> (TestApiServer, Client) {
    let api = TestApiServer::start().await.unwrap();
    api.apply_json(NodeFixture::test("n1").ready().json())
        .unwrap();
    api.apply_json(NodeFixture::test("n2").not_ready().json())
        .unwrap();
    let client = client_for(api.admin_kubeconfig_path()).await;
    (api, client)
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_reads_and_errors() {
    let (_api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.metadata.resource_version.is_some());
    let n1 = nodes.get("n1").await.unwrap();
    let ready = n1
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(
        api_error(nodes.get("nope").await.unwrap_err()),
        (404, "NotFound".into(), "nodes \"nope\" not found".into())
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"k": "v"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err()).1,
        "AlreadyExists"
    );

    // A stale resourceVersion conflicts; the current one succeeds.
    let mut stale = created.clone();
    cms.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    assert_eq!(
        api_error(
            cms.replace("c", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        )
        .1,
        "Conflict"
    );
    let mut fresh = cms.get("c").await.unwrap();
    fresh.data = Some([("k".to_string(), "v3".to_string())].into());
    cms.replace("c", &PostParams::default(), &fresh)
        .await
        .unwrap();

    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));

    // Validation as on a real server: a label value with spaces is 422.
    let nodes: Api<Node> = Api::all(client.clone());
    let bad = json!({"metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA H100 80GB HBM3"}}});
    let (code, reason, message) = api_error(
        nodes
            .patch("n1", &PatchParams::default(), &Patch::Merge(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("metadata.labels[nvidia.com/gpu.product]"),
        "{message}"
    );

    let in_missing_ns: Api<ConfigMap> = Api::namespaced(client, "nowhere");
    assert_eq!(
        api_error(
            in_missing_ns
                .create(&PostParams::default(), &cm)
                .await
                .unwrap_err()
        )
        .0,
        404
    );

    cms.delete("c", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(cms.get("c").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn selectors_and_pagination() {
    let (api, client) = cluster().await;
    for i in 0..5 {
        let pod = PodFixture::test("default", &format!("p{i}"))
            .on_node(if i < 3 { "n1" } else { "n2" })
            .with_label("tier", if i % 2 == 0 { "gpu" } else { "cpu" });
        api.apply_json(pod.json()).unwrap();
    }
    let pods: Api<Pod> = Api::all(client);
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("tier=gpu"))
                .await
                .unwrap()
        ),
        ["p0", "p2", "p4"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("tier notin (gpu)"))
                .await
                .unwrap()
        ),
        ["p1", "p3"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=n2"))
                .await
                .unwrap()
        ),
        ["p3", "p4"]
    );

    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    let snapshot_rv = first.metadata.resource_version.clone();
    assert_eq!(names(first), ["p0", "p1"]);
    // A change between pages: later pages still show the first page's
    // snapshot and version (a consistent list, as the real server gives),
    // so a watch from that version replays the change instead of losing it.
    api.apply_json(
        PodFixture::test("default", "p3")
            .on_node("n2")
            .with_label("tier", "changed")
            .json(),
    )
    .unwrap();
    let second = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(second.metadata.resource_version, snapshot_rv);
    let token = second.metadata.continue_.clone().unwrap();
    let p3_tier = second.items[1].metadata.labels.as_ref().unwrap()["tier"].clone();
    assert_eq!(
        p3_tier, "cpu",
        "page 2 is not from the first page's snapshot"
    );
    assert_eq!(names(second), ["p2", "p3"]);
    let last = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert!(
        last.metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(names(last), ["p4"]);
    // A token outlives its page until compaction; then it is 410 Expired.
    let again = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(again), ["p4"]);
    api.compact();
    let e = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_error(e).0, 410);
}

#[tokio::test]
async fn patch_flavours_and_server_side_apply() {
    let (api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "1"}}})),
        )
        .await
        .unwrap();
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"b": "2"}}})),
        )
        .await
        .unwrap();
    let status = json!({"status": {"conditions": [{"type": "GpuHealthy", "status": "False", "reason": "XidError", "message": "Xid 79"}]}});
    let patched = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(status))
        .await
        .unwrap();
    let types: Vec<String> = patched
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Ready", "GpuHealthy"]);
    let labels = patched.metadata.labels.unwrap();
    assert_eq!((labels["a"].as_str(), labels["b"].as_str()), ("1", "2"));
    // Status writes through the main resource are ignored, as on a real server.
    let ignored = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Strategic(ignored))
        .await
        .unwrap();
    let n1 = api.get_json("nodes", "", "n1").unwrap();
    assert_eq!(n1["status"]["conditions"][0]["status"], "True");

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let ssa = PatchParams::apply("hpk8s").force();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
    leases
        .patch("n1", &ssa, &Patch::Apply(&lease))
        .await
        .unwrap();
    let before = api.resource_version();
    let again = leases
        .patch("n1", &ssa, &Patch::Apply(&lease))
        .await
        .unwrap();
    assert_eq!(api.resource_version(), before, "re-applying is a no-op");
    assert_eq!(again.spec.unwrap().holder_identity.as_deref(), Some("n1"));
    let fm = again.metadata.managed_fields.unwrap();
    assert_eq!(fm[0].manager.as_deref(), Some("hpk8s"));
    // YAML apply bodies are accepted too (kube and kubectl send JSON).
    let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let req =
        hyper::Request::patch("/api/v1/namespaces/default/configmaps/from-yaml?fieldManager=hpk8s")
            .header("Content-Type", "application/apply-patch+yaml")
            .body(yaml.to_vec())
            .unwrap();
    client.request_text(req).await.unwrap();
    assert_eq!(
        api.get_json("configmaps", "default", "from-yaml").unwrap()["data"]["k"],
        "v"
    );
    let applies: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH"
                && r.path.ends_with("/leases/n1")
                && r.body.contains("holderIdentity")
        })
        .collect();
    assert!(
        applies
            .iter()
            .all(|r| r.content_type == "application/apply-patch+yaml"
                && r.query.contains("fieldManager=hpk8s")),
        "{applies:?}"
    );
}

#[tokio::test]
async fn eviction_honours_disruption_budgets() {
    let (api, client) = cluster().await;
    for name in ["web-1", "web-2"] {
        api.apply_json(
            PodFixture::test("default", name)
                .on_node("n1")
                .with_label("app", "web")
                .running_ready()
                .json(),
        )
        .unwrap();
    }
    api.apply_json(
        PodDisruptionBudget::test("default", "web-pdb", "app", "web")
            .min_available(2)
            .json(),
    )
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let err = pods
        .evict("web-1", &EvictParams::default())
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected a Status")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(
        status.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let budget = api
        .get_json("poddisruptionbudgets", "default", "web-pdb")
        .unwrap();
    let mut relaxed = budget.clone();
    relaxed["spec"]["minAvailable"] = json!(1);
    api.apply_json(relaxed).unwrap();
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(api.names("pods", Some("default")), ["web-2"]);
    assert_eq!(
        api_error(
            pods.evict("web-1", &EvictParams::default())
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn watches_stream_changes_and_expire() {
    let (api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut stream = watcher(nodes.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let node = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(node.metadata.name.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["n1", "n2"]);
    api.set_ready("n2", true).unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(changed.metadata.name.as_deref(), Some("n2"));
    let ready = changed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");

    // A raw watch from a known version sees MODIFIED then DELETED.
    let rv = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut raw = nodes
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    nodes.delete("n1", &DeleteParams::default()).await.unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), raw.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(n) => kinds.push(format!("MODIFIED {}", n.metadata.name.unwrap())),
            WatchEvent::Deleted(n) => kinds.push(format!("DELETED {}", n.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(kinds, ["MODIFIED n1", "DELETED n1"]);

    // After compaction, watching from the old version is 410 Gone.
    api.compact();
    let mut expired = nodes
        .watch(&WatchParams::default(), &rv)
        .await
        .map(|s| s.boxed());
    let code = match &mut expired {
        Err(kube::Error::Api(s)) => s.code,
        Ok(s) => match s.next().await {
            Some(Ok(WatchEvent::Error(e))) => e.code,
            Some(Err(kube::Error::Api(s))) => s.code,
            other => panic!("expected 410, got {other:?}"),
        },
        Err(other) => panic!("expected 410, got {other:?}"),
    };
    assert_eq!(code, 410);
}

#[tokio::test]
async fn injected_faults_and_the_request_log() {
    let (api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client);
    api.inject_fault("/api/v1/nodes", FaultKind::Status(503), 1);
    assert_eq!(api_error(nodes.get("n1").await.unwrap_err()).0, 503);
    api.inject_fault("/api/v1/nodes/n1", FaultKind::Status(429), 1);
    assert_eq!(
        api_error(nodes.get("n1").await.unwrap_err()).1,
        "TooManyRequests"
    );
    api.inject_fault("/api/v1/nodes", FaultKind::Drop, 1);
    assert!(nodes.get("n1").await.is_err());
    api.inject_fault(
        "/api/v1/nodes",
        FaultKind::Delay(Duration::from_millis(300)),
        1,
    );
    let t = std::time::Instant::now();
    nodes.get("n1").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    nodes.get("n1").await.unwrap();
    let gets = api
        .requests()
        .into_iter()
        .filter(|r| r.is("GET", "/api/v1/nodes/n1"))
        .count();
    assert_eq!(gets, 5);
    assert!(api.requests().iter().all(|r| r.user == "kubernetes-admin"));
}

#[tokio::test]
async fn node_restriction_through_kube() {
    let (api, _) = cluster().await;
    let node_client = client_for(&api.node_kubeconfig("n1").unwrap()).await;
    let nodes: Api<Node> = Api::all(node_client.clone());
    let cond = json!({"status": {"conditions": [{"type": "GpuHealthy", "status": "True", "reason": "Ok", "message": "ok"}]}});
    nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(cond.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        api_error(
            nodes
                .patch_status("n2", &PatchParams::default(), &Patch::Strategic(cond))
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    let taint = json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
    let (code, reason, message) = api_error(
        nodes
            .patch("n1", &PatchParams::default(), &Patch::Strategic(taint))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert!(message.contains("taints"), "{message}");
    let leases: Api<Lease> = Api::namespaced(node_client.clone(), "kube-node-lease");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
    leases
        .patch("n1", &PatchParams::apply("kubelet"), &Patch::Apply(&lease))
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(node_client.clone(), "kube-system");
    assert_eq!(
        api_error(secrets.list(&ListParams::default()).await.unwrap_err()).0,
        403
    );

    // Nodes report through Events; other writes are forbidden.
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(node_client.clone(), "default");
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"generateName": "n1."},
        "involvedObject": {"kind": "Node", "name": "n1"},
        "reason": "GpuXid", "message": "Xid 79 on GPU 3", "type": "Warning"
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(node_client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    assert_eq!(
        api_error(cms.create(&PostParams::default(), &cm).await.unwrap_err()).0,
        403
    );

    // Bearer tokens map to identities too; unknown tokens are 401.
    let path = api
        .token_kubeconfig(
            "abcdef.0123456789abcdef",
            harness::kube_api::Identity::admin(),
            "token.kubeconfig",
        )
        .unwrap();
    let token_nodes: Api<Node> = Api::all(client_for(&path).await);
    assert_eq!(
        token_nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn kube_default_retry_hides_transient_errors() {
    let (api, _) = cluster().await;
    let retrying = Client::try_from(config_for(api.admin_kubeconfig_path()).await).unwrap();
    let nodes: Api<Node> = Api::all(retrying);
    api.inject_fault("/api/v1/nodes/n1", FaultKind::Status(503), 2);
    nodes.get("n1").await.unwrap();
    let gets = api
        .requests()
        .into_iter()
        .filter(|r| r.is("GET", "/api/v1/nodes/n1"))
        .count();
    assert_eq!(gets, 3, "kube's default retry layer retried the 503s");
}

#[tokio::test]
async fn held_pod_termination() {
    let (api, client) = cluster().await;
    api.apply_json(
        PodFixture::test("default", "p")
            .on_node("n1")
            .running_ready()
            .json(),
    )
    .unwrap();
    api.hold_pod_termination(true);
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let uid = pods.get("p").await.unwrap().metadata.uid;
    pods.evict("p", &EvictParams::default()).await.unwrap();
    let terminating = pods.get("p").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(terminating.metadata.uid, uid);
    api.finish_pod_termination("default", "p").unwrap();
    assert_eq!(api_error(pods.get("p").await.unwrap_err()).0, 404);

    // A force delete (grace period 0) does not wait.
    api.apply_json(PodFixture::test("default", "q").on_node("n1").json())
        .unwrap();
    pods.delete("q", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_eq!(api_error(pods.get("q").await.unwrap_err()).0, 404);
}

#[tokio::test]
async fn dropping_the_server_ends_watches() {
    let (api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client);
    let rv = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = nodes
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    drop(api);
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the watch outlived the server");
    assert!(
        !matches!(
            end,
            Some(Ok(WatchEvent::Added(_) | WatchEvent::Modified(_)))
        ),
        "{end:?}"
    );
    assert!(nodes.get("n1").await.is_err());
}

#[tokio::test]
async fn streaming_list_watcher() {
    let (api, client) = cluster().await;
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default()
        .streaming_lists()
        .labels("kubernetes.io/os=linux");
    let mut stream = watcher(nodes, config).applied_objects().boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let node = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(node.metadata.name.unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["n1", "n2"]);
    api.set_ready("n2", true).unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(changed.metadata.name.as_deref(), Some("n2"));
    assert!(
        api.requests()
            .iter()
            .any(|r| r.query.contains("sendInitialEvents=true"))
    );
}

#[tokio::test]
async fn rbac_for_service_accounts() {
    let (api, _) = cluster().await;
    api.apply_json(
        PodFixture::test("default", "p")
            .on_node("n1")
            .running_ready()
            .json(),
    )
    .unwrap();
    api.apply_json(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "hpk8s-drain"},
        "rules": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}]}),
    )
    .unwrap();
    api.apply_json(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "hpk8s-drain"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hpk8s-drain"},
        "subjects": [{"kind": "ServiceAccount", "name": "hpk8s", "namespace": "kube-system"}]}))
    .unwrap();
    let sa = harness::kube_api::Identity::service_account("kube-system", "hpk8s");
    let path = api
        .token_kubeconfig("sa-token-for-tests", sa, "sa.kubeconfig")
        .unwrap();
    let client = client_for(&path).await;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.evict("p", &EvictParams::default()).await.unwrap();
    let (code, _, message) = api_error(
        nodes
            .delete("n1", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("system:serviceaccount:kube-system:hpk8s"),
        "{message}"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client, "kube-system");
    assert_eq!(
        api_error(secrets.list(&ListParams::default()).await.unwrap_err()).0,
        403
    );
}
