//! The kubeadm stand-in against the test API server: what `init` and `join`
//! write and register, the discovery refusals (CA pin, unknown and expired
//! tokens), preflight refusals, tokens, versions and config shapes.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use harness::kube_api::TestApiServer;
use harness::kubeadm_stand_in::{StandInConfig, jws};
use lifecycle::cluster::ca_pin::ca_pin;
use serde_json::Value;

const TOKEN: &str = "abcdef.0123456789abcdef";

/// A node: its root directory and the stand-in's environment for it.
struct Node {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Node {
    fn new(api: &TestApiServer) -> Self {
        Self::with(api, |_| {})
    }

    fn with(api: &TestApiServer, adjust: impl FnOnce(&mut StandInConfig)) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut cfg = api.kubeadm_stand_in(root.path());
        adjust(&mut cfg);
        let env = api.kubeadm_env_with(&cfg).unwrap();
        Self { root, env }
    }

    fn path(&self, node_path: &str) -> PathBuf {
        self.root.path().join(node_path.trim_start_matches('/'))
    }

    #[allow(clippy::disallowed_methods)] // test runs the stand-in binary
    async fn kubeadm(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(harness::kubeadm_bin())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .await
            .unwrap()
    }

    /// Writes `config` and runs `kubeadm <cmd> --config <file>`.
    async fn with_config(&self, cmd: &str, config: &str) -> Output {
        let file = self.root.path().join(format!("{cmd}.yaml"));
        std::fs::write(&file, config).unwrap();
        self.kubeadm(&[cmd, "--config", file.to_str().unwrap()])
            .await
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kubeadm failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "kubeadm succeeded unexpectedly: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init_config(version: &str, token: &str) -> String {
    let args = |indent: &str, name: &str, value: &str| match version {
        "v1beta3" => format!("{indent}{name}: \"{value}\"\n"),
        _ => format!("{indent}- name: {name}\n{indent}  value: \"{value}\"\n"),
    };
    format!(
        "apiVersion: kubeadm.k8s.io/{version}\nkind: InitConfiguration\nbootstrapTokens:\n- token: {token}\n  ttl: 2h0m0s\n  usages: [signing, authentication]\n  groups: [system:bootstrappers:kubeadm:default-node-token]\nlocalAPIEndpoint:\n  advertiseAddress: 10.0.0.10\n  bindPort: 6443\nnodeRegistration:\n  name: ctl\n  criSocket: unix:///run/containerd/containerd.sock\n  kubeletExtraArgs:\n{}---\napiVersion: kubeadm.k8s.io/{version}\nkind: ClusterConfiguration\nnetworking:\n  podSubnet: 10.244.0.0/16\n  serviceSubnet: 10.96.0.0/12\ncontrollerManager:\n  extraArgs:\n{}---\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n",
        args("    ", "node-labels", "hpk8s.io/role=controller"),
        args("    ", "node-cidr-mask-size", "24"),
    )
}

fn join_config(token: &str, pins: &[String], name: &str) -> String {
    let pins: String = pins.iter().map(|p| format!("    - {p}\n")).collect();
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: JoinConfiguration\ndiscovery:\n  bootstrapToken:\n    apiServerEndpoint: 10.0.0.10:6443\n    token: {token}\n    caCertHashes:\n{pins}nodeRegistration:\n  name: {name}\n  taints:\n  - key: nvidia.com/gpu\n    value: \"true\"\n    effect: NoSchedule\n  kubeletExtraArgs:\n  - name: node-ip\n    value: 10.0.0.11\n  - name: node-labels\n    value: nvidia.com/gpu.present=true,hpk8s.io/role=worker\n"
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn ready(node: &Value) -> Option<String> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str().map(String::from))
}

async fn initialised() -> (TestApiServer, Node) {
    let api = TestApiServer::start().await.unwrap();
    let ctl = Node::new(&api);
    ok(&ctl
        .with_config("init", &init_config("v1beta4", TOKEN))
        .await);
    (api, ctl)
}

fn pin(api: &TestApiServer) -> String {
    ca_pin(api.ca_pem().as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_files_and_creates_token_cluster_info_and_node() {
    let (api, ctl) = initialised().await;

    for f in ["/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf"] {
        assert_eq!(mode(&ctl.path(f)), 0o600, "{f}");
    }
    let ca = std::fs::read_to_string(ctl.path("/etc/kubernetes/pki/ca.crt")).unwrap();
    assert_eq!(ca, api.ca_pem());
    let manifest =
        std::fs::read_to_string(ctl.path("/etc/kubernetes/manifests/kube-apiserver.yaml")).unwrap();
    assert!(
        manifest.contains("--advertise-address=10.0.0.10"),
        "{manifest}"
    );
    let cm =
        std::fs::read_to_string(ctl.path("/etc/kubernetes/manifests/kube-controller-manager.yaml"))
            .unwrap();
    assert!(cm.contains("--node-cidr-mask-size=24"), "{cm}");
    assert!(cm.contains("--cluster-cidr=10.244.0.0/16"), "{cm}");

    let secret = api
        .get_json("secrets", "kube-system", "bootstrap-token-abcdef")
        .unwrap();
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
    for key in [
        "token-id",
        "token-secret",
        "expiration",
        "usage-bootstrap-signing",
        "usage-bootstrap-authentication",
        "auth-extra-groups",
    ] {
        assert!(secret["data"][key].is_string(), "{key} missing: {secret}");
    }

    let info = api
        .get_json("configmaps", "kube-public", "cluster-info")
        .unwrap();
    let kubeconfig = info["data"]["kubeconfig"].as_str().unwrap();
    let sig = info["data"]["jws-kubeconfig-abcdef"].as_str().unwrap();
    assert!(jws::verify_detached(
        sig,
        kubeconfig,
        "abcdef",
        "0123456789abcdef"
    ));
    assert!(!jws::verify_detached(
        sig,
        kubeconfig,
        "abcdef",
        "0123456789abcdee"
    ));

    let node = api.get_json("nodes", "", "ctl").unwrap();
    assert_eq!(node["metadata"]["labels"]["hpk8s.io/role"], "controller");
    assert_eq!(
        node["metadata"]["labels"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    assert_eq!(
        node["spec"]["taints"][0]["key"],
        "node-role.kubernetes.io/control-plane"
    );
    assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.10");
    assert_eq!(ready(&node).as_deref(), Some("True"));

    // An independent client, with the admin.conf kubeadm wrote.
    if !harness::require(which("kubectl"), "kubectl") {
        #[allow(clippy::disallowed_methods)] // test runs the real kubectl
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(ctl.path("/etc/kubernetes/admin.conf"))
            .args(["get", "node", "ctl", "-o", "json"])
            .output()
            .unwrap();
        let node: Value = serde_json::from_slice(&ok(&out).into_bytes()).unwrap();
        assert_eq!(node["spec"]["taints"][0]["effect"], "NoSchedule");
        #[allow(clippy::disallowed_methods)]
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(ctl.path("/etc/kubernetes/admin.conf"))
            .args([
                "-n",
                "kube-system",
                "get",
                "secret",
                "bootstrap-token-abcdef",
                "-o",
                "jsonpath={.type}",
            ])
            .output()
            .unwrap();
        assert_eq!(ok(&out), "bootstrap.kubernetes.io/token");
    }

    let again = failed(
        &ctl.with_config("init", &init_config("v1beta4", TOKEN))
            .await,
    );
    assert!(
        again.contains("[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists"),
        "{again}"
    );
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_with_a_valid_ticket_registers_the_node_as_its_kubelet() {
    let (api, _ctl) = initialised().await;
    let w = Node::new(&api);
    let out = ok(&w
        .with_config("join", &join_config(TOKEN, &[pin(&api)], "w1"))
        .await);
    assert!(out.contains("This node has joined the cluster"), "{out}");
    assert!(!out.contains("0123456789abcdef"), "token printed: {out}");

    let node = api.get_json("nodes", "", "w1").unwrap();
    assert_eq!(node["metadata"]["labels"]["nvidia.com/gpu.present"], "true");
    assert_eq!(node["metadata"]["labels"]["hpk8s.io/role"], "worker");
    assert_eq!(node["spec"]["taints"][0]["key"], "nvidia.com/gpu");
    assert_eq!(node["spec"]["taints"][0]["effect"], "NoSchedule");
    assert_eq!(node["status"]["addresses"][0]["type"], "InternalIP");
    assert_eq!(node["status"]["addresses"][0]["address"], "10.0.0.11");
    assert_eq!(ready(&node).as_deref(), Some("True"));

    let kubelet_conf = w.path("/etc/kubernetes/kubelet.conf");
    assert_eq!(mode(&kubelet_conf), 0o600);
    assert_eq!(
        std::fs::read_to_string(w.path("/etc/kubernetes/pki/ca.crt")).unwrap(),
        api.ca_pem()
    );
    // The credential is the node's own: NodeRestriction applies to it.
    if !harness::require(which("kubectl"), "kubectl") {
        #[allow(clippy::disallowed_methods)] // test runs the real kubectl
        let run = |args: &[&str]| {
            std::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubelet_conf)
                .args(args)
                .output()
                .unwrap()
        };
        assert_eq!(
            ok(&run(&[
                "get",
                "node",
                "w1",
                "-o",
                "jsonpath={.metadata.name}"
            ])),
            "w1"
        );
        let denied = failed(&run(&[
            "label",
            "node",
            "w1",
            "node-role.kubernetes.io/worker=",
        ]));
        assert!(
            denied.contains("forbidden") || denied.contains("Forbidden"),
            "{denied}"
        );
    }

    let again = failed(
        &w.with_config("join", &join_config(TOKEN, &[pin(&api)], "w1"))
            .await,
    );
    assert!(
        again.contains("[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists"),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_refuses_a_wrong_pin_an_unknown_token_and_an_expired_token() {
    let (api, ctl) = initialised().await;
    let w = Node::new(&api);
    let foreign = format!("sha256:{}", "ab".repeat(32));

    let err = failed(
        &w.with_config("join", &join_config(TOKEN, &[foreign], "w1"))
            .await,
    );
    assert!(
        err.contains(&format!(
            "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{}\" are pinned",
            pin(&api)
        )),
        "{err}"
    );

    let err = failed(
        &w.with_config(
            "join",
            &join_config("zzzzzz.0123456789abcdef", &[pin(&api)], "w1"),
        )
        .await,
    );
    assert!(
        err.contains("couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"zzzzzz\""),
        "{err}"
    );

    // Right id, wrong secret: the signature does not verify.
    let err = failed(
        &w.with_config(
            "join",
            &join_config("abcdef.0000000000000000", &[pin(&api)], "w1"),
        )
        .await,
    );
    assert!(err.contains("failed to verify JWS signature"), "{err}");
    assert!(!err.contains("0000000000000000"), "token in error: {err}");

    let short = ok(&ctl
        .kubeadm(&["token", "create", "--ttl", "1s", "qqqqqq.0123456789abcdef"])
        .await);
    assert_eq!(short.trim(), "qqqqqq.0123456789abcdef");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = failed(
        &w.with_config(
            "join",
            &join_config("qqqqqq.0123456789abcdef", &[pin(&api)], "w1"),
        )
        .await,
    );
    // Depending on whether cluster-info was re-signed after the expiry (as
    // the bootstrap signer does), the expired token is refused for its
    // expiry or for its signature having been withdrawn, as kubeadm does.
    assert!(
        err.contains("token ID \"qqqqqq\"")
            && (err.contains("expired") || err.contains("could not find a JWS signature")),
        "{err}"
    );

    assert!(!w.path("/etc/kubernetes/kubelet.conf").exists());
    assert!(api.get_json("nodes", "", "w1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_round_trip_and_cluster_info_follows() {
    let (api, ctl) = initialised().await;
    let created = ok(&ctl
        .kubeadm(&["token", "create", "--ttl", "1h", "--description", "for w2"])
        .await);
    let token = created.trim().to_string();
    let id = token.split('.').next().unwrap().to_string();
    assert_eq!(token.len(), 23, "{created}");

    let listed = ok(&ctl.kubeadm(&["token", "list"]).await);
    assert!(listed.starts_with("TOKEN"), "{listed}");
    let row = listed.lines().find(|l| l.starts_with(&token)).unwrap();
    assert!(
        row.contains("for w2") && row.contains("authentication,signing"),
        "{row}"
    );
    assert!(listed.contains(TOKEN), "{listed}");
    let info = api
        .get_json("configmaps", "kube-public", "cluster-info")
        .unwrap();
    assert!(info["data"][format!("jws-kubeconfig-{id}")].is_string());

    // A token made here lets a worker join.
    let w = Node::new(&api);
    ok(&w
        .with_config("join", &join_config(&token, &[pin(&api)], "w2"))
        .await);

    let deleted = ok(&ctl.kubeadm(&["token", "delete", &id]).await);
    assert!(
        deleted.contains(&format!("bootstrap token \"{id}\" deleted")),
        "{deleted}"
    );
    assert!(
        api.get_json("secrets", "kube-system", &format!("bootstrap-token-{id}"))
            .is_none()
    );
    let info = api
        .get_json("configmaps", "kube-public", "cluster-info")
        .unwrap();
    assert!(
        info["data"].get(format!("jws-kubeconfig-{id}")).is_none(),
        "{info}"
    );
    assert!(info["data"]["jws-kubeconfig-abcdef"].is_string());
    let listed = ok(&ctl.kubeadm(&["token", "list"]).await);
    assert!(!listed.contains(&token), "{listed}");
    let err = failed(&ctl.kubeadm(&["token", "delete", &id]).await);
    assert!(err.contains("not found"), "{err}");

    // Without admin.conf (a worker) the token commands fail like kubeadm's.
    let err = failed(&w.kubeadm(&["token", "list"]).await);
    assert!(err.contains("failed to load admin kubeconfig"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_config_versions() {
    let api = TestApiServer::start().await.unwrap();
    let n = Node::new(&api);
    assert_eq!(
        ok(&n.kubeadm(&["version", "-o", "short"]).await),
        "v1.34.1\n"
    );
    let old = Node::with(&api, |c| c.version = "1.30.4".into());
    assert_eq!(
        ok(&old.kubeadm(&["version", "-o", "short"]).await),
        "v1.30.4\n"
    );

    let err = failed(
        &old.with_config("init", &init_config("v1beta4", TOKEN))
            .await,
    );
    assert!(
        err.contains(
            "no kind \"InitConfiguration\" is registered for version \"kubeadm.k8s.io/v1beta4\""
        ),
        "{err}"
    );

    // extraArgs shapes: v1beta4 wants lists, v1beta3 maps.
    let v3_shape_as_v4 =
        init_config("v1beta3", TOKEN).replace("kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4");
    let err = failed(&n.with_config("init", &v3_shape_as_v4).await);
    assert!(
        err.contains("cannot unmarshal object") && err.contains("extraArgs"),
        "{err}"
    );
    let v4_shape_as_v3 =
        init_config("v1beta4", TOKEN).replace("kubeadm.k8s.io/v1beta4", "kubeadm.k8s.io/v1beta3");
    let err = failed(&n.with_config("init", &v4_shape_as_v3).await);
    assert!(
        err.contains("cannot unmarshal array") && err.contains("extraArgs"),
        "{err}"
    );
    let unknown =
        init_config("v1beta4", TOKEN).replace("kind: ClusterConfiguration", "kind: ClusterConfig");
    let err = failed(&n.with_config("init", &unknown).await);
    assert!(err.contains("no kind \"ClusterConfig\""), "{err}");
    assert!(
        !n.path("/etc/kubernetes/admin.conf").exists(),
        "a refused init wrote files"
    );

    // v1beta3 with maps works on the older kubeadm.
    ok(&old
        .with_config("init", &init_config("v1beta3", TOKEN))
        .await);
    assert!(api.get_json("nodes", "", "ctl").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removes_what_init_wrote_and_readiness_can_be_slow() {
    let (api, ctl) = initialised().await;
    ok(&ctl.kubeadm(&["reset", "-f"]).await);
    for f in [
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/kubelet.conf",
        "/etc/kubernetes/pki/ca.crt",
        "/etc/kubernetes/manifests/kube-apiserver.yaml",
    ] {
        assert!(!ctl.path(f).exists(), "{f} survived reset");
    }
    let err = failed(&ctl.kubeadm(&["reset"]).await);
    assert!(err.contains("aborted reset operation"), "{err}");

    let slow = Node::with(&api, |c| c.node_ready_delay_ms = 1500);
    ok(&slow
        .with_config("join", &join_config(TOKEN, &[pin(&api)], "slow"))
        .await);
    let node = api.get_json("nodes", "", "slow").unwrap();
    assert_eq!(ready(&node).as_deref(), Some("False"));
    let mut became_ready = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if ready(&api.get_json("nodes", "", "slow").unwrap()).as_deref() == Some("True") {
            became_ready = true;
            break;
        }
    }
    assert!(became_ready, "the slow node never turned Ready");
}

/// The pin of the test API server's CA is what kubeadm's documented
/// openssl pipeline prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)] // test runs the reference tool
async fn ca_pin_of_the_test_server_matches_openssl() {
    let api = TestApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crt = dir.path().join("ca.crt");
    std::fs::write(&crt, api.ca_pem()).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | sha256sum",
            crt.display()
        ))
        .output()
        .unwrap();
    let stdout = ok(&out);
    let hex = stdout.split_whitespace().next().unwrap();
    assert_eq!(pin(&api), format!("sha256:{hex}"));
}
