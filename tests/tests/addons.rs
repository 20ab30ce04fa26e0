//! Cluster addons against the test API server: server-side apply with
//! hpk8s's field manager, idempotence, flannel's pod subnet, the device
//! plugins' node selection (computed against registered nodes), the
//! registry mirror, the manifest directory, the rollout report with its
//! deadline, and the real kubectl seeing the result.
#![allow(clippy::unwrap_used)] // test set-up helpers fail loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::kube_api::{NodeSpec, Taint, TestApiServer};
use lifecycle::cluster::addons::apply::Change;
use lifecycle::cluster::addons::rollout::RolloutTarget;
use lifecycle::cluster::addons::{
    self, AddonSettings, Error, efa_device_plugin, flannel, nvidia_device_plugin,
};
use lifecycle::cluster::labels::{EFA_PRESENT, FIELD_MANAGER, GPU_PRESENT, GPU_TAINT_KEY};
use lifecycle::config::{AddonsConfig, DeviceListStrategy};
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};
use serde_json::{Value, json};

const POD_SUBNET: &str = "10.100.0.0/14";
const MANIFEST_DIR: &str = "/etc/hpk8s/manifests.d";
const KUBECTL: &str = "/usr/bin/kubectl";
const POLL: Duration = Duration::from_millis(50);

/// The built-in DaemonSets: (namespace, name).
const DAEMON_SETS: [(&str, &str); 3] = [
    (flannel::NAMESPACE, flannel::DAEMON_SET),
    ("kube-system", nvidia_device_plugin::DAEMON_SET),
    ("kube-system", efa_device_plugin::DAEMON_SET),
];

struct Cluster {
    api: TestApiServer,
    client: kube::Client,
    _root: tempfile::TempDir,
    host: Host,
}

impl Cluster {
    async fn start() -> Self {
        // One process-wide rustls provider, whatever else is linked.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = TestApiServer::start().await.unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(api.admin_kubeconfig_path()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        // Errors must surface at once, not after kube's 429/503 retries.
        config.default_retry = false;
        let client = kube::Client::try_from(config).unwrap();
        for spec in nodes() {
            api.register_node(&spec).unwrap();
        }
        let root = tempfile::tempdir().unwrap();
        let host = Host::new(
            root.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        Self {
            api,
            client,
            _root: root,
            host,
        }
    }

    fn settings(&self, cfg: AddonsConfig) -> AddonSettings {
        AddonSettings::from_config(&cfg, POD_SUBNET).unwrap()
    }

    async fn apply(&self, settings: &AddonSettings) -> addons::Result<addons::ApplyReport> {
        addons::apply_all(&self.client, &self.host, settings).await
    }

    fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.host.path(MANIFEST_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
        Path::new(MANIFEST_DIR).join(name)
    }

    fn daemon_set(&self, namespace: &str, name: &str) -> Value {
        self.api
            .get_json("daemonsets", namespace, name)
            .unwrap_or_else(|| panic!("DaemonSet {namespace}/{name} was not applied"))
    }
}

fn spec(name: &str, labels: &[(&str, &str)], taints: &[Taint]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        addresses: vec![("InternalIP".into(), "10.0.0.1".into())],
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: taints.to_vec(),
    }
}

/// A CPU node, a node whose GPU label says false, a tainted GPU node, a
/// tainted GPU node with EFA, and a CPU node with EFA.
fn nodes() -> Vec<NodeSpec> {
    let gpu_taint = Taint::new(GPU_TAINT_KEY, "true", "NoSchedule");
    vec![
        spec("cpu-1", &[], &[]),
        spec("cpu-2", &[(GPU_PRESENT, "false")], &[]),
        spec(
            "gpu-1",
            &[(GPU_PRESENT, "true")],
            std::slice::from_ref(&gpu_taint),
        ),
        spec(
            "gpu-efa-1",
            &[(GPU_PRESENT, "true"), (EFA_PRESENT, "true")],
            &[gpu_taint],
        ),
        spec("efa-1", &[(EFA_PRESENT, "true")], &[]),
    ]
}

// ---------------------------------------------------------------------------
// The scheduler's view: node affinity, nodeSelector and taints.

fn expression_matches(expr: &Value, labels: &Value) -> bool {
    let key = expr["key"].as_str().unwrap();
    let value = labels.get(key).and_then(Value::as_str);
    let values: Vec<&str> = expr["values"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match expr["operator"].as_str().unwrap() {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value.and_then(number) > values.first().and_then(|v| number(v)),
        "Lt" => value
            .and_then(number)
            .zip(values.first().and_then(|v| number(v)))
            .is_some_and(|(a, b)| a < b),
        other => panic!("unknown operator {other}"),
    }
}

fn tolerates(tolerations: &[Value], taint: &Value) -> bool {
    tolerations.iter().any(|t| {
        let key_ok = match t["key"].as_str().unwrap_or("") {
            "" => t["operator"] == "Exists",
            k => k == taint["key"],
        };
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = match t["effect"].as_str().unwrap_or("") {
            "" => true,
            e => e == taint["effect"],
        };
        key_ok && value_ok && effect_ok
    })
}

/// Whether the DaemonSet's pod template may run on `node`.
fn schedulable(ds: &Value, node: &Value) -> bool {
    let pod = &ds["spec"]["template"]["spec"];
    let labels = &node["metadata"]["labels"];
    let selector_ok = pod["nodeSelector"].as_object().is_none_or(|sel| {
        sel.iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    });
    let affinity_ok = match pod
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        None => true,
        Some(terms) => terms.iter().any(|term| {
            term["matchExpressions"]
                .as_array()
                .is_some_and(|exprs| exprs.iter().all(|e| expression_matches(e, labels)))
        }),
    };
    let tolerations = pod["tolerations"].as_array().cloned().unwrap_or_default();
    let taints_ok = node["spec"]["taints"].as_array().is_none_or(|taints| {
        taints
            .iter()
            .filter(|t| t["effect"] != "PreferNoSchedule")
            .all(|t| tolerates(&tolerations, t))
    });
    selector_ok && affinity_ok && taints_ok
}

fn nodes_selected(api: &TestApiServer, ds: &Value) -> BTreeSet<String> {
    api.names("nodes", None)
        .into_iter()
        .filter(|n| schedulable(ds, &api.get_json("nodes", "", n).unwrap()))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn images(ds: &Value) -> Vec<String> {
    let pod = &ds["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[k].as_array().cloned().unwrap_or_default())
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect()
}

/// `(plural, namespace, name) → resourceVersion` of everything hpk8s applied.
fn applied_versions(api: &TestApiServer, report: &addons::ApplyReport) -> BTreeMap<String, String> {
    report
        .outcomes
        .iter()
        .map(|o| {
            let plural = match o.kind.as_str() {
                "Namespace" => "namespaces",
                "ServiceAccount" => "serviceaccounts",
                "ClusterRole" => "clusterroles",
                "ClusterRoleBinding" => "clusterrolebindings",
                "ConfigMap" => "configmaps",
                "DaemonSet" => "daemonsets",
                other => panic!("unexpected kind {other}"),
            };
            let (ns, name) = o.object.split_once('/').unwrap_or(("", &o.object));
            let stored = api.get_json(plural, ns, name).unwrap();
            (
                format!("{plural} {}", o.object),
                stored["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn everything_is_applied_server_side_by_hpk8s_and_a_second_apply_is_a_no_op() {
    let c = Cluster::start().await;
    let settings = c.settings(AddonsConfig::default());
    c.api.clear_requests();
    let first = c.apply(&settings).await.unwrap();
    // Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap
    // and three DaemonSets.
    assert_eq!(first.outcomes.len(), 8, "{:#?}", first.outcomes);
    assert!(first.outcomes.iter().all(|o| o.change == Change::Created));
    assert_eq!(first.daemon_sets.len(), 3);

    let patches: Vec<_> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 8, "one apply per object");
    for r in &patches {
        assert!(
            r.content_type.starts_with("application/apply-patch+yaml"),
            "{} {}: content type {}",
            r.method,
            r.path,
            r.content_type
        );
        let query: BTreeSet<&str> = r.query.split('&').collect();
        assert!(
            query.contains("fieldManager=hpk8s"),
            "{}?{}",
            r.path,
            r.query
        );
        assert!(query.contains("force=true"), "{}?{}", r.path, r.query);
    }
    assert!(
        c.api
            .requests()
            .iter()
            .all(|r| matches!(r.method.as_str(), "GET" | "PATCH")),
        "only reads and applies"
    );
    for (ns, name) in DAEMON_SETS {
        let ds = c.daemon_set(ns, name);
        let managers: Vec<&str> = ds["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, [FIELD_MANAGER], "{name}");
        assert_eq!(ds["metadata"]["labels"][addons::MANAGED_BY_LABEL], "hpk8s");
    }
    let ns = c
        .api
        .get_json("namespaces", "", flannel::NAMESPACE)
        .unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let binding = c
        .api
        .get_json("clusterrolebindings", "", flannel::ACCOUNT)
        .unwrap();
    assert_eq!(binding["subjects"][0]["namespace"], flannel::NAMESPACE);
    let role = c
        .api
        .get_json("clusterroles", "", flannel::ACCOUNT)
        .unwrap();
    assert!(
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"] == json!(["nodes/status"]) && r["verbs"] == json!(["patch"])),
        "{role}"
    );

    let versions = applied_versions(&c.api, &first);
    let global = c.api.resource_version();
    let second = c.apply(&settings).await.unwrap();
    assert!(
        second
            .outcomes
            .iter()
            .all(|o| o.change == Change::Unchanged),
        "{:#?}",
        second.outcomes
    );
    assert!(!second.changed());
    assert_eq!(applied_versions(&c.api, &second), versions);
    assert_eq!(c.api.resource_version(), global, "nothing was written");
}

#[tokio::test]
async fn flannel_net_conf_carries_the_pod_subnet() {
    let c = Cluster::start().await;
    c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    let cm = c
        .api
        .get_json("configmaps", flannel::NAMESPACE, flannel::CONFIG_MAP)
        .unwrap();
    let net: Value = serde_json::from_str(cm["data"]["net-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(net["Network"], POD_SUBNET);
    assert_eq!(net["Backend"]["Type"], "vxlan");
    let cni: Value = serde_json::from_str(cm["data"]["cni-conf.json"].as_str().unwrap()).unwrap();
    assert_eq!(cni["plugins"][0]["type"], "flannel");
    assert_eq!(cni["plugins"][1]["type"], "portmap");

    let ds = c.daemon_set(flannel::NAMESPACE, flannel::DAEMON_SET);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let main = &pod["containers"][0];
    assert_eq!(
        main["args"],
        json!(["--ip-masq", "--kube-subnet-mgr", "--iface=$(POD_IP)"])
    );
    // `$(POD_IP)` is expanded by kubelet from the pod's own IP, which for a
    // host-network pod is the node's address.
    assert!(
        main["env"].as_array().unwrap().contains(
            &json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        ),
        "{}",
        main["env"]
    );
    assert_eq!(
        main["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from([
            "/run/flannel",
            "/etc/cni/net.d",
            "/opt/cni/bin",
            "/run/xtables.lock"
        ])
    );
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 2);
    // flannel runs everywhere, GPU-tainted nodes included.
    assert_eq!(
        nodes_selected(&c.api, &ds),
        set(&["cpu-1", "cpu-2", "efa-1", "gpu-1", "gpu-efa-1"])
    );
}

#[tokio::test]
async fn nvidia_device_plugin_runs_only_on_gpu_nodes_and_tolerates_their_taint() {
    let c = Cluster::start().await;
    c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    let ds = c.daemon_set("kube-system", nvidia_device_plugin::DAEMON_SET);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": GPU_PRESENT, "operator": "In", "values": ["true"]}]}])
    );
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == GPU_TAINT_KEY && t["operator"] == "Exists"),
        "{}",
        pod["tolerations"]
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let ctr = &pod["containers"][0];
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(
        ctr["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "DEVICE_LIST_STRATEGY", "value": "envvar"})),
        "{}",
        ctr["env"]
    );
    assert_eq!(
        ctr["volumeMounts"][0]["mountPath"],
        "/var/lib/kubelet/device-plugins"
    );
    assert_eq!(nodes_selected(&c.api, &ds), set(&["gpu-1", "gpu-efa-1"]));

    // Without the toleration the tainted GPU nodes would be left out: the
    // check above is not vacuous.
    let mut untolerant = ds.clone();
    untolerant["spec"]["template"]["spec"]["tolerations"] = json!([]);
    assert!(nodes_selected(&c.api, &untolerant).is_empty());
}

#[tokio::test]
async fn efa_device_plugin_uses_host_network_and_runs_only_on_efa_nodes() {
    let c = Cluster::start().await;
    c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    let ds = c.daemon_set("kube-system", efa_device_plugin::DAEMON_SET);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let ctr = &pod["containers"][0];
    // Upstream runs plugin 0.5.9 and later privileged as root.
    assert_eq!(ctr["securityContext"]["privileged"], true);
    assert_eq!(ctr["securityContext"]["runAsUser"], 0);
    let mounts: BTreeSet<&str> = ctr["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        BTreeSet::from([
            "/var/lib/kubelet/device-plugins",
            "/dev/infiniband/",
            "/opt/aws/neuron/"
        ])
    );
    assert_eq!(nodes_selected(&c.api, &ds), set(&["efa-1", "gpu-efa-1"]));
}

#[tokio::test]
async fn registry_mirror_rewrites_every_addon_image() {
    let c = Cluster::start().await;
    let defaults = AddonsConfig::default();
    let settings = c.settings(AddonsConfig {
        registry_mirror: Some("mirror.internal:5000".into()),
        nvidia_device_plugin_image: "nvcr.io/nvidia/k8s-device-plugin:v0.17.0".into(),
        ..AddonsConfig::default()
    });
    c.apply(&settings).await.unwrap();
    let mut all = Vec::new();
    for (ns, name) in DAEMON_SETS {
        all.extend(images(&c.daemon_set(ns, name)));
    }
    assert_eq!(all.len(), 5, "{all:?}"); // flannel: 2 init + 1; one per plugin
    for image in &all {
        assert!(image.starts_with("mirror.internal:5000/"), "{image}");
    }
    let flannel_images = images(&c.daemon_set(flannel::NAMESPACE, flannel::DAEMON_SET));
    assert!(
        flannel_images.contains(&"mirror.internal:5000/flannel-io/flannel:v0.26.7".to_string())
    );
    assert_eq!(defaults.flannel_image, "ghcr.io/flannel-io/flannel:v0.26.7");
    assert_eq!(
        images(&c.daemon_set("kube-system", nvidia_device_plugin::DAEMON_SET)),
        ["mirror.internal:5000/nvidia/k8s-device-plugin:v0.17.0"],
        "overrides are mirrored too"
    );
    assert_eq!(
        images(&c.daemon_set("kube-system", efa_device_plugin::DAEMON_SET)),
        ["mirror.internal:5000/eks/aws-efa-k8s-device-plugin:v0.5.20"]
    );

    let bad = AddonSettings::from_config(
        &AddonsConfig {
            registry_mirror: Some("https://mirror.internal".into()),
            ..AddonsConfig::default()
        },
        POD_SUBNET,
    )
    .unwrap_err();
    assert_eq!(bad.kind(), "registry_mirror_invalid", "{bad}");
}

const CONFIG_MAP_A: &str = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "kube-system"}, "data": {"k": "1"}}"#;

const TWO_DOCS: &str = "# extra objects\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  k: \"2\"\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: c\n  namespace: kube-system\n";

#[tokio::test]
async fn manifest_dir_is_applied_in_file_name_order_after_the_addons() {
    let c = Cluster::start().await;
    c.manifest("20-b.yaml", TWO_DOCS);
    c.manifest("10-a.json", CONFIG_MAP_A);
    c.manifest(
        "30-ds.yml",
        &serde_json::to_string(&harness::kube_api::fixtures::daemon_set("default", "extra"))
            .unwrap(),
    );
    c.manifest("README.md", "not a manifest: ignored");
    let settings = c.settings(AddonsConfig {
        manifest_dir: MANIFEST_DIR.into(),
        ..AddonsConfig::default()
    });
    let report = c.apply(&settings).await.unwrap();
    let from_dir: Vec<(String, String)> = report
        .outcomes
        .iter()
        .skip(8)
        .map(|o| (o.origin.clone(), o.object.clone()))
        .collect();
    let origin = |file: &str, doc: usize| format!("manifest {MANIFEST_DIR}/{file} document {doc}");
    assert_eq!(
        from_dir,
        [
            (origin("10-a.json", 1), "kube-system/a".to_string()),
            (origin("20-b.yaml", 1), "default/b".to_string()),
            (origin("20-b.yaml", 2), "kube-system/c".to_string()),
            (origin("30-ds.yml", 1), "default/extra".to_string()),
        ]
    );
    assert_eq!(
        c.api.get_json("configmaps", "default", "b").unwrap()["data"]["k"],
        "2"
    );
    assert!(
        c.api
            .get_json("serviceaccounts", "kube-system", "c")
            .is_some()
    );
    // Its DaemonSet is followed too, under its own name.
    assert!(report.daemon_sets.iter().any(|t| t.label == "extra"));
    // The order on the wire: built-in addons first, then the files in order.
    let applied: Vec<String> = c
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path)
        .collect();
    let pos = |p: &str| applied.iter().position(|a| a == p).unwrap();
    assert!(
        pos(&format!(
            "/apis/apps/v1/namespaces/kube-system/daemonsets/{}",
            efa_device_plugin::DAEMON_SET
        )) < pos("/api/v1/namespaces/kube-system/configmaps/a")
    );
    assert!(
        pos("/api/v1/namespaces/kube-system/configmaps/a")
            < pos("/api/v1/namespaces/default/configmaps/b")
    );
    assert!(
        pos("/api/v1/namespaces/default/configmaps/b")
            < pos("/api/v1/namespaces/kube-system/serviceaccounts/c")
    );
    // Idempotent as well.
    let again = c.apply(&settings).await.unwrap();
    assert!(!again.changed(), "{:#?}", again.outcomes);
}

#[tokio::test]
async fn a_malformed_manifest_is_reported_by_file_and_document_and_nothing_is_applied() {
    let c = Cluster::start().await;
    c.manifest("10-a.json", CONFIG_MAP_A);
    let bad = c.manifest(
        "20-bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: [unclosed\n",
    );
    let settings = c.settings(AddonsConfig {
        manifest_dir: MANIFEST_DIR.into(),
        ..AddonsConfig::default()
    });
    c.api.clear_requests();
    let e = c.apply(&settings).await.unwrap_err();
    assert!(
        matches!(e, Error::ManifestSyntax { document: 2, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), "manifest_syntax");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{} document 2", bad.display())),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert!(
        c.api.requests().is_empty(),
        "nothing is sent before every file parses"
    );
    let top: lifecycle::Error = e.into();
    assert_eq!(top.kind(), "manifest_syntax");

    // An object without a name.
    std::fs::remove_file(c.host.path(&bad)).unwrap();
    let nameless = c.manifest("30-nameless.yaml", "apiVersion: v1\nkind: ConfigMap\n");
    let e = c.apply(&settings).await.unwrap_err();
    assert!(
        matches!(e, Error::ManifestInvalid { document: 1, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains(&nameless.display().to_string()),
        "{e}"
    );
    std::fs::remove_file(c.host.path(&nameless)).unwrap();

    // A kind the server does not serve: named, and nothing applied.
    c.manifest(
        "40-widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    );
    c.manifest(
        "50-gadget.yaml",
        "apiVersion: apps/v1\nkind: Gadget\nmetadata:\n  name: g\n",
    );
    c.api.clear_requests();
    let e = c.apply(&settings).await.unwrap_err();
    assert!(matches!(e, Error::UnknownKind { .. }), "{e}");
    assert_eq!(e.kind(), "manifest_unknown_kind");
    let msg = e.to_string();
    assert!(
        msg.contains("kind Widget (apiVersion example.com/v1)")
            && msg.contains("40-widget.yaml document 1"),
        "{msg}"
    );
    assert!(
        !c.api.requests().iter().any(|r| r.method == "PATCH"),
        "kinds are resolved before anything is applied"
    );
    std::fs::remove_file(c.host.path(Path::new(MANIFEST_DIR).join("40-widget.yaml"))).unwrap();
    let e = c.apply(&settings).await.unwrap_err();
    assert!(
        e.to_string().contains("kind Gadget (apiVersion apps/v1)"),
        "{e}"
    );
}

fn set_status(
    api: &TestApiServer,
    namespace: &str,
    name: &str,
    desired: i64,
    ready: i64,
    updated: i64,
) {
    let mut ds = api.get_json("daemonsets", namespace, name).unwrap();
    let generation = ds["metadata"]["generation"].clone();
    ds["status"] = json!({
        "currentNumberScheduled": desired, "desiredNumberScheduled": desired,
        "numberMisscheduled": 0, "numberReady": ready, "updatedNumberScheduled": updated,
        "numberAvailable": ready, "observedGeneration": generation,
    });
    api.apply_json(ds).unwrap();
}

#[tokio::test]
async fn rollout_is_reported_at_the_deadline_and_never_awaited_forever() {
    let c = Cluster::start().await;
    let report = c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    let targets: Vec<RolloutTarget> = report.daemon_sets.clone();
    let labels: Vec<&str> = targets.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(
        labels,
        ["flannel", "nvidia-device-plugin", "efa-device-plugin"]
    );

    // No status at all yet.
    let r = addons::rollout_status(&c.client, &targets, Duration::ZERO, POLL)
        .await
        .unwrap();
    assert!(r.timed_out && !r.all_ready());
    assert!(
        r.to_string().contains("flannel not ready (no status yet)"),
        "{r}"
    );

    set_status(&c.api, flannel::NAMESPACE, flannel::DAEMON_SET, 4, 3, 4);
    set_status(
        &c.api,
        "kube-system",
        nvidia_device_plugin::DAEMON_SET,
        2,
        2,
        2,
    );
    set_status(
        &c.api,
        "kube-system",
        efa_device_plugin::DAEMON_SET,
        2,
        2,
        1,
    );
    let started = Instant::now();
    let r = addons::rollout_status(
        &c.client,
        &targets,
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
    .await
    .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "returned before the deadline: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "overran the deadline: {waited:?}"
    );
    assert!(r.timed_out);
    let text = r.to_string();
    assert!(text.contains("flannel 3/4 ready\n"), "{text}");
    assert!(text.contains("nvidia-device-plugin 2/2 ready\n"), "{text}");
    assert!(
        text.contains("efa-device-plugin 2/2 ready, 1/2 updated\n"),
        "{text}"
    );
    assert!(
        text.contains("not ready at the deadline: flannel, efa-device-plugin"),
        "{text}"
    );
    let behind: Vec<&str> = r.not_ready().map(|e| e.target.label.as_str()).collect();
    assert_eq!(behind, ["flannel", "efa-device-plugin"]);

    // Becoming ready while polling ends the wait early.
    let flip = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_status(&c.api, flannel::NAMESPACE, flannel::DAEMON_SET, 4, 4, 4);
        set_status(
            &c.api,
            "kube-system",
            efa_device_plugin::DAEMON_SET,
            2,
            2,
            2,
        );
    };
    let started = Instant::now();
    let wait = addons::rollout_status(
        &c.client,
        &targets,
        Duration::from_secs(30),
        Duration::from_millis(100),
    );
    let ((), r) = tokio::join!(flip, wait);
    let r = r.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!r.timed_out && r.all_ready(), "{r}");
    assert!(r.to_string().contains("flannel 4/4 ready"), "{r}");

    // A changed spec the DaemonSet controller has not observed yet is not
    // ready, whatever the counts say.
    let changed = c.settings(AddonsConfig {
        flannel_image: "ghcr.io/flannel-io/flannel:v0.26.8".into(),
        ..AddonsConfig::default()
    });
    let outcome = c.apply(&changed).await.unwrap();
    assert!(outcome.changed());
    let r = addons::rollout_status(&c.client, &targets, Duration::ZERO, POLL)
        .await
        .unwrap();
    let behind: Vec<&str> = r.not_ready().map(|e| e.target.label.as_str()).collect();
    assert_eq!(behind, ["flannel"], "{r}");
    assert!(
        r.to_string()
            .contains("flannel 4/4 ready, latest spec not yet observed"),
        "{r}"
    );
}

#[tokio::test]
async fn kubectl_sees_the_addon_daemon_sets() {
    if harness::require(Path::new(KUBECTL).exists(), "kubectl (/usr/bin/kubectl)") {
        return;
    }
    let c = Cluster::start().await;
    c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    let kubeconfig = c.api.admin_kubeconfig_path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        kubectl(&kubeconfig, &["get", "ds", "-A", "-o", "json"])
    })
    .await
    .unwrap();
    let list: Value = serde_json::from_str(&out).unwrap();
    let found: BTreeSet<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["metadata"]["namespace"].as_str().unwrap().to_string(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = DAEMON_SETS
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    assert_eq!(found, want);
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

#[tokio::test]
async fn a_refused_apply_names_the_object_and_the_addon() {
    let c = Cluster::start().await;
    let settings = c.settings(AddonsConfig::default());
    // The NVIDIA plugin's DaemonSet is the first object under this prefix.
    c.api.inject_fault(
        "/apis/apps/v1/namespaces/kube-system/daemonsets",
        harness::kube_api::FaultKind::Status(500),
        1,
    );
    let e = c.apply(&settings).await.unwrap_err();
    assert!(matches!(e, Error::Apply { .. }), "{e}");
    assert_eq!(e.kind(), "addon_apply_failed");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "nvidia-device-plugin: server-side apply of DaemonSet kube-system/{} failed",
            nvidia_device_plugin::DAEMON_SET
        )),
        "{msg}"
    );
    // flannel went in before the failure; re-running finishes the job.
    assert!(
        c.api
            .get_json("configmaps", flannel::NAMESPACE, flannel::CONFIG_MAP)
            .is_some()
    );
    let report = c.apply(&settings).await.unwrap();
    let created: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|o| o.change == Change::Created)
        .map(|o| o.origin.as_str())
        .collect();
    assert_eq!(created, ["nvidia-device-plugin", "efa-device-plugin"]);
}

#[tokio::test]
async fn volume_mounts_strategy_gives_the_plugin_sys_admin_and_the_env() {
    let c = Cluster::start().await;
    c.apply(&c.settings(AddonsConfig {
        nvidia_device_list_strategy: DeviceListStrategy::VolumeMounts,
        ..AddonsConfig::default()
    }))
    .await
    .unwrap();
    let ds = c.daemon_set("kube-system", nvidia_device_plugin::DAEMON_SET);
    let ctr = &ds["spec"]["template"]["spec"]["containers"][0];
    assert!(
        ctr["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "DEVICE_LIST_STRATEGY", "value": "volume-mounts"})),
        "{}",
        ctr["env"]
    );
    // The toolkit then honours the plugin's own NVIDIA_VISIBLE_DEVICES=all
    // only for a container holding CAP_SYS_ADMIN.
    assert_eq!(
        ctr["securityContext"]["capabilities"]["add"],
        json!(["SYS_ADMIN"])
    );
    assert!(ctr["securityContext"]["capabilities"]["drop"].is_null());
    assert_ne!(ctr["securityContext"]["privileged"], true);
}

#[tokio::test]
async fn device_plugins_tolerate_every_taint_configured_on_a_group() {
    let c = Cluster::start().await;
    // A GPU node of a group tainted with its own key (not nvidia.com/gpu).
    c.api
        .register_node(&spec(
            "gpu-dedicated",
            &[(GPU_PRESENT, "true"), (EFA_PRESENT, "true")],
            &[Taint::new("dedicated", "ml-training", "NoExecute")],
        ))
        .unwrap();
    let config: lifecycle::config::Config = lifecycle::config::Config::parse(
        "[groups.training]\ntaints = [\"dedicated=ml-training:NoExecute\"]\n",
        Path::new("c.toml"),
    )
    .unwrap();

    // Without the group's taint in the settings the node gets no plugins:
    // the check below is not vacuous.
    c.apply(&c.settings(AddonsConfig::default())).await.unwrap();
    for name in [
        nvidia_device_plugin::DAEMON_SET,
        efa_device_plugin::DAEMON_SET,
    ] {
        let ds = c.daemon_set("kube-system", name);
        assert!(
            !nodes_selected(&c.api, &ds).contains("gpu-dedicated"),
            "{name}"
        );
    }

    let settings = c
        .settings(AddonsConfig::default())
        .with_group_taints(&config);
    c.apply(&settings).await.unwrap();
    for name in [
        nvidia_device_plugin::DAEMON_SET,
        efa_device_plugin::DAEMON_SET,
    ] {
        let ds = c.daemon_set("kube-system", name);
        let tolerations = &ds["spec"]["template"]["spec"]["tolerations"];
        assert!(
            tolerations.as_array().unwrap().contains(
                &json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"})
            ),
            "{name}: {tolerations}"
        );
        assert!(
            nodes_selected(&c.api, &ds).contains("gpu-dedicated"),
            "{name}"
        );
    }
}
