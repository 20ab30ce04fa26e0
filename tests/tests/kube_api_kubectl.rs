//! The test API server checked against the real kubectl v1.32: if kubectl
//! can read, label, cordon, taint, drain, delete, apply and watch through
//! it, the server speaks enough of the real protocol for hpk8s's tests.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use harness::kube_api::fixtures::{Node, Pod, PodDisruptionBudget, daemon_set};
use harness::kube_api::{Taint, TestApiServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const KUBECTL: &str = "/usr/bin/kubectl";

/// Skips outside CI when kubectl is missing; fails under CI.
fn no_kubectl() -> bool {
    harness::require(Path::new(KUBECTL).exists(), "kubectl (/usr/bin/kubectl)")
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .env("HOME", self.cache.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Outcome {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
            .unwrap();
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and asserts success, returning stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert!(
            o.ok,
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        o.stdout
    }
}

async fn cluster() -> (TestApiServer, Kubectl) {
    let api = TestApiServer::start().await.unwrap();
    api.apply_json(Node::test("n1").ready().with_label("pool", "gpu").json())
        .unwrap();
    api.apply_json(Node::test("n2").ready().json()).unwrap();
    let kubectl = Kubectl::new(api.admin_kubeconfig_path());
    (api, kubectl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_nodes_and_pods() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    api.apply_json(
        Pod::test("kube-system", "coredns-1")
            .on_node("n1")
            .running_ready()
            .json(),
    )
    .unwrap();
    api.apply_json(Pod::test("default", "web-1").on_node("n2").json())
        .unwrap();

    let nodes: Value =
        serde_json::from_str(&kubectl.ok(&["get", "nodes", "-o", "json"]).await).unwrap();
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2"]);
    assert_eq!(nodes["items"][0]["metadata"]["labels"]["pool"], "gpu");

    // Server-side printing: the columns of a real cluster.
    let table = kubectl.ok(&["get", "nodes"]).await;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{table}"
    );
    assert_eq!((lines[1][0], lines[1][1]), ("n1", "Ready"), "{table}");
    let wide = kubectl.ok(&["get", "pods", "-A", "-o", "wide"]).await;
    assert!(
        wide.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..4]
                == ["kube-system", "coredns-1", "1/1", "Running"]),
        "{wide}"
    );
    assert!(wide.contains("NODE") && wide.contains("n1"), "{wide}");
    let pods = kubectl.ok(&["get", "pods", "-A"]).await;
    assert!(
        pods.contains("kube-system") && pods.contains("coredns-1"),
        "{pods}"
    );
    assert!(pods.contains("default") && pods.contains("web-1"), "{pods}");

    let one = kubectl
        .ok(&["get", "node", "n1", "-o", "jsonpath={.metadata.name}"])
        .await;
    assert_eq!(one, "n1");
    let selected = kubectl
        .ok(&["get", "nodes", "-l", "pool in (gpu,cpu)", "-o", "name"])
        .await;
    assert_eq!(selected.trim(), "node/n1");
    let on_n1 = kubectl
        .ok(&[
            "get",
            "pods",
            "-A",
            "--field-selector",
            "spec.nodeName=n1",
            "-o",
            "name",
        ])
        .await;
    assert_eq!(on_n1.trim(), "pod/coredns-1");
    let missing = kubectl.run(&["get", "node", "nope"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("nodes \"nope\" not found"),
        "{}",
        missing.stderr
    );
    // Discovery and the calls themselves were made as the admin identity.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.is("GET", "/api/v1/nodes") && r.user == "kubernetes-admin")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_labels_annotates_cordons_and_taints() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    kubectl.ok(&["label", "node", "n1", "color=blue"]).await;
    kubectl
        .ok(&["annotate", "node", "n1", "hpk8s.io/note=hello"])
        .await;
    let n1 = api.get_json("nodes", "", "n1").unwrap();
    assert_eq!(n1["metadata"]["labels"]["color"], "blue");
    assert_eq!(n1["metadata"]["labels"]["pool"], "gpu");
    assert_eq!(n1["metadata"]["annotations"]["hpk8s.io/note"], "hello");

    kubectl.ok(&["label", "node", "n1", "color-"]).await;
    let ops = r#"[{"op": "add", "path": "/metadata/labels/size", "value": "xl"}, {"op": "test", "path": "/metadata/labels/pool", "value": "gpu"}]"#;
    kubectl
        .ok(&["patch", "node", "n1", "--type=json", "-p", ops])
        .await;
    assert_eq!(
        api.get_json("nodes", "", "n1").unwrap()["metadata"]["labels"]["size"],
        "xl"
    );
    let failed = kubectl
        .run(&[
            "patch",
            "node",
            "n1",
            "--type=json",
            "-p",
            r#"[{"op": "test", "path": "/metadata/labels/pool", "value": "cpu"}]"#,
        ])
        .await;
    assert!(
        !failed.ok,
        "a failing JSON patch test op must fail the patch"
    );
    assert!(
        api.get_json("nodes", "", "n1").unwrap()["metadata"]["labels"]
            .get("color")
            .is_none()
    );

    kubectl.ok(&["cordon", "n1"]).await;
    assert_eq!(
        api.get_json("nodes", "", "n1").unwrap()["spec"]["unschedulable"],
        true
    );
    kubectl.ok(&["uncordon", "n1"]).await;
    assert_ne!(
        api.get_json("nodes", "", "n1").unwrap()["spec"]["unschedulable"],
        true
    );

    kubectl
        .ok(&["taint", "node", "n1", "nvidia.com/gpu=true:NoSchedule"])
        .await;
    kubectl
        .ok(&["taint", "node", "n1", "hpk8s.io/maintenance=now:NoExecute"])
        .await;
    let taints = api.get_json("nodes", "", "n1").unwrap()["spec"]["taints"].clone();
    assert_eq!(taints.as_array().unwrap().len(), 2, "{taints}");
    kubectl
        .ok(&["taint", "node", "n1", "nvidia.com/gpu-"])
        .await;
    let taints = api.get_json("nodes", "", "n1").unwrap()["spec"]["taints"].clone();
    assert_eq!(
        taints,
        json!([{"key": "hpk8s.io/maintenance", "value": "now", "effect": "NoExecute"}])
    );

    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.is("PATCH", "/api/v1/nodes/n1"))
        .map(|r| r.content_type)
        .collect();
    assert!(
        patches
            .iter()
            .any(|c| c.starts_with("application/merge-patch+json")),
        "{patches:?}"
    );
    assert!(
        patches
            .iter()
            .any(|c| c.starts_with("application/strategic-merge-patch+json")),
        "{patches:?}"
    );
}

/// n1 runs a DaemonSet pod, an emptyDir pod and `web-1`; `web-2` (on n2)
/// shares web-1's budget.
async fn drain_cluster(min_available: i64) -> (TestApiServer, Kubectl) {
    let (api, kubectl) = cluster().await;
    api.apply_json(daemon_set("kube-system", "node-agent"))
        .unwrap();
    api.apply_json(
        Pod::test("kube-system", "node-agent-x1")
            .on_node("n1")
            .running_ready()
            .with_label("app", "node-agent")
            .owned_by("apps/v1", "DaemonSet", "node-agent")
            .json(),
    )
    .unwrap();
    for (name, node) in [("web-1", "n1"), ("web-2", "n2")] {
        api.apply_json(
            Pod::test("default", name)
                .on_node(node)
                .with_label("app", "web")
                .running_ready()
                .owned_by("apps/v1", "ReplicaSet", "web-5d4f")
                .json(),
        )
        .unwrap();
    }
    api.apply_json(
        Pod::test("default", "scratch")
            .on_node("n1")
            .running_ready()
            .with_empty_dir("tmp")
            .owned_by("apps/v1", "ReplicaSet", "scratch-7c9")
            .json(),
    )
    .unwrap();
    api.apply_json(
        PodDisruptionBudget::test("default", "web-pdb", "app", "web")
            .min_available(min_available)
            .json(),
    )
    .unwrap();
    (api, kubectl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_blocked_by_a_budget_times_out_naming_the_pod() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = drain_cluster(2).await;
    let o = kubectl
        .run(&[
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=5s",
        ])
        .await;
    assert!(!o.ok, "drain should fail: {}\n{}", o.stdout, o.stderr);
    let all = format!("{}\n{}", o.stdout, o.stderr);
    assert!(
        all.contains("web-1"),
        "the blocked pod is not named:\n{all}"
    );
    assert!(
        all.contains("disruption budget"),
        "the budget is not mentioned:\n{all}"
    );
    assert_eq!(
        api.get_json("nodes", "", "n1").unwrap()["spec"]["unschedulable"],
        true
    );
    assert!(api.get_json("pods", "default", "web-1").is_some());
    assert!(
        api.get_json("pods", "default", "scratch").is_none(),
        "the unprotected pod is evicted"
    );
    let evictions = api
        .requests()
        .iter()
        .filter(|r| r.is("POST", "/api/v1/namespaces/default/pods/web-1/eviction"))
        .count();
    assert!(evictions >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_evicts_everything_but_daemonset_pods() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = drain_cluster(1).await;
    let out = kubectl
        .ok(&[
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("drained"), "{out}");
    assert_eq!(api.names("pods", Some("default")), ["web-2"]);
    assert_eq!(api.names("pods", Some("kube-system")), ["node-agent-x1"]);
    assert_eq!(
        api.get_json("nodes", "", "n1").unwrap()["spec"]["unschedulable"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_deletes_a_node() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    let out = kubectl.ok(&["delete", "node", "n2"]).await;
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(api.names("nodes", None), ["n1"]);
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
data:
  net-conf.json: |
    {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
spec:
  selector:
    matchLabels: {app: flannel}
  template:
    metadata:
      labels: {app: flannel}
    spec:
      containers:
      - name: kube-flannel
        image: registry.example/flannel:v0.26
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_is_idempotent() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    let file = kubectl.cache.path().join("flannel.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    let path = file.to_str().unwrap();
    let out = kubectl
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=hpk8s",
            "-f",
            path,
        ])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let cm = api
        .get_json("configmaps", "kube-flannel", "kube-flannel-cfg")
        .unwrap();
    assert!(
        cm["data"]["net-conf.json"]
            .as_str()
            .unwrap()
            .contains("10.244.0.0/16")
    );
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "hpk8s");
    let ds = api
        .get_json("daemonsets", "kube-flannel", "kube-flannel-ds")
        .unwrap();
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["name"],
        "kube-flannel"
    );
    let applies = api
        .requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.content_type.starts_with("application/apply-patch+yaml")
        })
        .count();
    assert_eq!(applies, 3);

    let rv = api.resource_version();
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=hpk8s",
            "-f",
            path,
        ])
        .await;
    assert_eq!(
        api.resource_version(),
        rv,
        "re-applying the same manifest changed objects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_updates() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    let mut child = kubectl
        .command(&[
            "get",
            "nodes",
            "--watch",
            "-o",
            r#"jsonpath={.metadata.name} {.metadata.labels.color}{"\n"}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl watch printed nothing in 30 s")
            .unwrap()
            .unwrap()
    };
    let first = [next().await, next().await];
    assert_eq!(first.map(|l| l.trim().to_string()), ["n1", "n2"]);
    let mut n2 = api.get_json("nodes", "", "n2").unwrap();
    n2["metadata"]["labels"]["color"] = json!("green");
    api.apply_json(n2).unwrap();
    assert_eq!(next().await.trim(), "n2 green");
    child.kill().await.unwrap();
    assert!(
        api.requests()
            .iter()
            .any(|r| r.is("GET", "/api/v1/nodes") && r.query.contains("watch=true"))
    );

    // The default (table) output also follows changes.
    let mut child = kubectl
        .command(&["get", "nodes", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("kubectl watch printed nothing in 30 s")
            .unwrap()
            .unwrap()
    };
    let header = next().await;
    assert!(
        header.starts_with("NAME") && header.contains("STATUS"),
        "{header}"
    );
    assert!(next().await.starts_with("n1 "));
    assert!(next().await.starts_with("n2 "));
    api.set_ready("n1", false).unwrap();
    let update = next().await;
    assert!(
        update.starts_with("n1 ") && update.contains("NotReady"),
        "{update}"
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_identity_is_restricted() {
    if no_kubectl() {
        return;
    }
    let (api, _) = cluster().await;
    api.apply_json(
        Node::test("n3")
            .ready()
            .with_taint(Taint::new("hpk8s.io/new", "", "NoSchedule"))
            .json(),
    )
    .unwrap();
    let node = Kubectl::new(&api.node_kubeconfig("n1").unwrap());
    let condition = r#"{"status":{"conditions":[{"type":"GpuHealthy","status":"True","reason":"AllGpusHealthy","message":"8/8 GPUs healthy"}]}}"#;
    node.ok(&[
        "patch",
        "node",
        "n1",
        "--subresource=status",
        "--type=strategic",
        "-p",
        condition,
    ])
    .await;
    let conds = api.get_json("nodes", "", "n1").unwrap()["status"]["conditions"].clone();
    let types: Vec<&str> = conds
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "GpuHealthy"], "conditions merge by type");
    node.ok(&["label", "node", "n1", "nvidia.com/gpu.present=true"])
        .await;
    node.ok(&["get", "nodes"]).await;

    for (args, why) in [
        (vec!["label", "node", "n2", "x=y"], "another node"),
        (
            vec![
                "patch",
                "node",
                "n2",
                "--subresource=status",
                "--type=strategic",
                "-p",
                condition,
            ],
            "another node's status",
        ),
        (vec!["taint", "node", "n1", "a=b:NoSchedule"], "own taints"),
        (
            vec!["taint", "node", "n3", "hpk8s.io/new-"],
            "another node's taints",
        ),
        (
            vec!["label", "node", "n1", "node-role.kubernetes.io/worker="],
            "a restricted label",
        ),
        (vec!["delete", "node", "n2"], "deleting another node"),
    ] {
        let o = node.run(&args).await;
        assert!(
            !o.ok && o.stderr.contains("forbidden"),
            "{why}: {}\n{}",
            o.stdout,
            o.stderr
        );
    }
    assert!(
        api.get_json("nodes", "", "n1").unwrap()["spec"]
            .get("taints")
            .is_none()
    );
    assert!(api.requests().iter().any(|r| r.user == "system:node:n1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_waits_for_terminating_pods() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = drain_cluster(1).await;
    api.hold_pod_termination(true);
    let drain = tokio::spawn({
        let args = [
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=30s",
        ];
        let cmd = kubectl.command(&args).output();
        async move { cmd.await.unwrap() }
    });
    // Both pods are evicted but stay Terminating until "the kubelet" is done.
    let terminating = |name: &str| {
        api.get_json("pods", "default", name)
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
    };
    for _ in 0..100 {
        if terminating("web-1") && terminating("scratch") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(terminating("web-1") && terminating("scratch"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !drain.is_finished(),
        "kubectl drain must wait for terminating pods"
    );
    api.finish_pod_termination("default", "web-1").unwrap();
    api.finish_pod_termination("default", "scratch").unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(api.names("pods", Some("default")), ["web-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_create_and_wait() {
    if no_kubectl() {
        return;
    }
    let (api, kubectl) = cluster().await;
    let file = kubectl.cache.path().join("cm.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: \"1\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    kubectl.ok(&["apply", "-f", path]).await;
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  b: \"2\"\n",
    )
    .unwrap();
    kubectl.ok(&["apply", "-f", path]).await;
    let cm = api.get_json("configmaps", "default", "cfg").unwrap();
    assert_eq!(
        cm["data"],
        json!({"b": "2"}),
        "client-side apply removes what the last apply set"
    );
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gpu-operator\n",
    )
    .unwrap();
    kubectl.ok(&["create", "-f", path]).await;
    assert!(api.get_json("namespaces", "", "gpu-operator").is_some());
    // Generator commands go through typed clientsets that send protobuf:
    // refused clearly rather than misread.
    let o = kubectl
        .run(&[
            "create",
            "configmap",
            "x",
            "-n",
            "gpu-operator",
            "--from-literal=k=v",
        ])
        .await;
    assert!(
        !o.ok && o.stderr.contains("vnd.kubernetes.protobuf"),
        "{}",
        o.stderr
    );

    api.set_ready("n2", false).unwrap();
    let wait = tokio::spawn({
        let cmd = kubectl
            .command(&["wait", "--for=condition=Ready", "node/n2", "--timeout=20s"])
            .output();
        async move { cmd.await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.set_ready("n2", true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));
}
