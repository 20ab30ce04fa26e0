//! JSON fixture builders in the kube-rs style
//! (`Node::test("n1").ready().with_label("k", "v").json()`), so tests say
//! what matters about an object instead of pasting manifests.

use serde_json::{Value, json};

use super::objects::now;

/// Sets (or replaces) a condition by `type`, moving `lastTransitionTime`
/// only when the status changes.
pub fn set_condition(obj: &mut Value, type_: &str, status: bool, reason: &str, message: &str) {
    let t = now();
    let status_str = if status { "True" } else { "False" };
    if !obj["status"]["conditions"].is_array() {
        obj["status"]["conditions"] = json!([]);
    }
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut cond = json!({"type": type_, "status": status_str, "reason": reason, "message": message,
                          "lastHeartbeatTime": t, "lastTransitionTime": t});
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            if existing["status"] == status_str {
                cond["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = cond;
        }
        None => conds.push(cond),
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value ("" for none).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl Taint {
    /// A taint `key=value:effect`.
    pub fn new(key: &str, value: &str, effect: &str) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    fn json(&self) -> Value {
        let mut t = json!({"key": self.key, "effect": self.effect});
        if !self.value.is_empty() {
            t["value"] = json!(self.value);
        }
        t
    }
}

/// What a kubelet registers: the handle's `register_node` input.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// `(type, address)` pairs (`InternalIP`, `Hostname`).
    pub addresses: Vec<(String, String)>,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Registration taints.
    pub taints: Vec<Taint>,
}

/// A Node builder.
#[derive(Debug, Clone)]
pub struct Node(Value);

impl Node {
    /// A node as a kubelet registers it, not yet Ready, with the
    /// well-known hostname/os/arch labels.
    pub fn test(name: &str) -> Self {
        Self(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
            "spec": {},
            "status": {"conditions": [], "addresses": [{"type": "Hostname", "address": name}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0", "containerRuntimeVersion": "containerd://1.7.0",
                                    "operatingSystem": "linux", "architecture": "amd64"}}
        }))
    }

    /// From a [`NodeSpec`].
    pub fn from_spec(spec: &NodeSpec) -> Self {
        let mut n = Self::test(&spec.name);
        for (k, v) in &spec.labels {
            n = n.with_label(k, v);
        }
        for (t, a) in &spec.addresses {
            n = n.with_address(t, a);
        }
        for t in &spec.taints {
            n = n.with_taint(t.clone());
        }
        n
    }

    /// Condition Ready=True.
    pub fn ready(mut self) -> Self {
        set_condition(
            &mut self.0,
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
        );
        self
    }

    /// Condition Ready=False.
    pub fn not_ready(mut self) -> Self {
        set_condition(
            &mut self.0,
            "Ready",
            false,
            "KubeletNotReady",
            "container runtime network not ready",
        );
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Adds a taint.
    pub fn with_taint(mut self, taint: Taint) -> Self {
        if !self.0["spec"]["taints"].is_array() {
            self.0["spec"]["taints"] = json!([]);
        }
        if let Some(list) = self.0["spec"]["taints"].as_array_mut() {
            list.push(taint.json());
        }
        self
    }

    /// Adds a status address (replacing one of the same type).
    pub fn with_address(mut self, type_: &str, address: &str) -> Self {
        if let Some(list) = self.0["status"]["addresses"].as_array_mut() {
            list.retain(|a| a["type"] != type_);
            list.push(json!({"type": type_, "address": address}));
        }
        self
    }

    /// Cordoned.
    pub fn unschedulable(mut self) -> Self {
        self.0["spec"]["unschedulable"] = json!(true);
        self
    }

    /// The object.
    pub fn json(self) -> Value {
        self.0
    }
}

/// A Pod builder.
#[derive(Debug, Clone)]
pub struct Pod(Value);

impl Pod {
    /// A pending pod with one container in `namespace`.
    pub fn test(namespace: &str, name: &str) -> Self {
        Self(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {}},
            "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
            "status": {"phase": "Pending"}
        }))
    }

    /// Bound to a node.
    pub fn on_node(mut self, node: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(node);
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    /// Phase Running with Ready=True.
    pub fn running_ready(mut self) -> Self {
        self.0["status"]["phase"] = json!("Running");
        set_condition(&mut self.0, "Ready", true, "", "");
        strip_heartbeats(&mut self.0);
        self
    }

    /// Controlled by an owner (`DaemonSet`, `ReplicaSet`, ...).
    pub fn owned_by(mut self, api_version: &str, kind: &str, name: &str) -> Self {
        self.0["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": name,
            "uid": format!("owner-{kind}-{name}").to_lowercase(), "controller": true, "blockOwnerDeletion": true
        }]);
        self
    }

    /// Mounts an emptyDir volume (kubectl drain then needs
    /// `--delete-emptydir-data`).
    pub fn with_empty_dir(mut self, volume: &str) -> Self {
        self.0["spec"]["volumes"] = json!([{"name": volume, "emptyDir": {}}]);
        self
    }

    /// The object.
    pub fn json(self) -> Value {
        self.0
    }
}

fn strip_heartbeats(obj: &mut Value) {
    if let Some(conds) = obj["status"]["conditions"].as_array_mut() {
        for c in conds {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
}

/// A PodDisruptionBudget builder.
#[derive(Debug, Clone)]
pub struct PodDisruptionBudget(Value);

impl PodDisruptionBudget {
    /// A budget selecting pods labelled `key=value`.
    pub fn test(namespace: &str, name: &str, key: &str, value: &str) -> Self {
        Self(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {key: value}}}
        }))
    }

    /// `spec.minAvailable` (an integer or "50%").
    pub fn min_available(mut self, v: impl Into<Value>) -> Self {
        self.0["spec"]["minAvailable"] = v.into();
        self
    }

    /// `spec.maxUnavailable` (an integer or "50%").
    pub fn max_unavailable(mut self, v: impl Into<Value>) -> Self {
        self.0["spec"]["maxUnavailable"] = v.into();
        self
    }

    /// The object.
    pub fn json(self) -> Value {
        self.0
    }
}

/// A DaemonSet whose pods carry `app=<name>`.
pub fn daemon_set(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": name, "image": "registry.example/ds:1"}]}}}
    })
}
