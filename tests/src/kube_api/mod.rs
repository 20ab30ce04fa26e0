//! An in-process Kubernetes API server for tests: HTTPS on 127.0.0.1 with
//! its own CA, callers identified by client certificate (or bearer token),
//! an in-memory object store with watches, patches, server-side apply,
//! evictions honouring PodDisruptionBudgets and NodeRestriction. Checked
//! against the real kubectl (`tests/tests/kube_api_kubectl.rs`) and the kube
//! crate (`tests/tests/kube_api_client.rs`).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use harness::kube_api::{TestApiServer, fixtures::Node};
//! let api = TestApiServer::start().await?;
//! api.apply_json(Node::test("n1").ready().json())?;
//! let kubeconfig = api.admin_kubeconfig_path(); // for kubectl or kube::Client
//! # Ok(()) }
//! ```
//!
//! For kube clients, set `Config::default_retry = false` where a test
//! asserts on 429/503 handling: kube 5 otherwise retries those up to 15
//! times (an eviction blocked by a budget then takes minutes to surface).
//!
//! Authorization: `system:masters` may do anything; `system:node:<name>`
//! gets NodeRestriction ([`authz`]); everyone else (service accounts,
//! bearer tokens) is authorized by the stored RBAC objects ([`rbac`]).
//!
//! Simplified on purpose (tests relying on these need more work here):
//! server-side apply merges like a strategic merge patch and records the
//! manager, but neither removes fields a manager stops applying nor detects
//! conflicts between managers; a PodDisruptionBudget's expected count is
//! the number of pods it selects; only nodes and pods have Table columns.
//! Not served: aggregated discovery, HTTP/2, periodic watch bookmarks,
//! OpenAPI schemas (`kubectl explain` fails), admission webhooks, and
//! protobuf bodies (kubectl's `create configmap|secret|namespace`
//! generators get 415; `create -f` and `apply -f` work).

pub mod authz;
pub mod bootstrap_signer;
pub mod discovery;
pub mod eviction;
pub mod faults;
pub mod fixtures;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod rbac;
pub mod rest;
pub mod selectors;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use self::authz::Identity;
use self::faults::Fault;
pub use self::faults::{FaultKind, RequestRecord};
pub use self::fixtures::{NodeSpec, Taint};
use self::server::Shared;
use self::store::Store;
use self::tls::{Pki, lock};

/// Namespaces a fresh kubeadm cluster has.
const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A running test API server. Dropping it stops accepting connections.
pub struct TestApiServer {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    url: String,
    admin_kubeconfig: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestApiServer {
    /// Starts a server on a free 127.0.0.1 port, with the initial
    /// namespaces and an admin kubeconfig written.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the test API server to 127.0.0.1")?;
        Self::serve(listener, &[]).await
    }

    /// Starts a server on `listener` (e.g. one bound inside a test node's
    /// network namespace with [`crate::netns::Netns::listen_tcp`]), its
    /// serving certificate also valid for `ip_sans`. The URL and
    /// kubeconfigs name the listener's address.
    pub async fn start_on(
        listener: std::net::TcpListener,
        ip_sans: &[std::net::IpAddr],
    ) -> anyhow::Result<Self> {
        listener
            .set_nonblocking(true)
            .context("making the test API server's listener non-blocking")?;
        let listener = TcpListener::from_std(listener).context("handing the listener to tokio")?;
        Self::serve(listener, ip_sans).await
    }

    async fn serve(listener: TcpListener, ip_sans: &[std::net::IpAddr]) -> anyhow::Result<Self> {
        let address = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            pki: Pki::with_ip_sans(ip_sans)?,
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            node_restriction: AtomicBool::new(true),
            hold_pods: AtomicBool::new(false),
            address: address.clone(),
        });
        {
            let mut store = lock(&shared.store);
            for ns in INITIAL_NAMESPACES {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns},
                                 "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                objects::upsert(&mut store, obj).map_err(|e| anyhow::anyhow!(e.message))?;
            }
        }
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        let dir = tempfile::tempdir().context("creating the test API server's directory")?;
        let mut api = Self {
            shared,
            dir,
            url: format!("https://{address}"),
            admin_kubeconfig: PathBuf::new(),
            task,
        };
        api.admin_kubeconfig = api.kubeconfig_for(&Identity::admin(), "admin.kubeconfig")?;
        Ok(api)
    }

    /// `https://<listener address>` (`https://127.0.0.1:<port>` from
    /// [`Self::start`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA certificate, PEM-encoded.
    pub fn ca_pem(&self) -> &str {
        self.shared.pki.ca_pem()
    }

    /// The CA's private key, PEM-encoded (for the kubeadm stand-in, which
    /// signs node credentials out of process).
    pub fn ca_key_pem(&self) -> &str {
        self.shared.pki.ca_key_pem()
    }

    /// A kubeconfig for `kubernetes-admin` (group `system:masters`).
    pub fn admin_kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// Writes a kubeconfig for the kubelet identity `system:node:<name>`.
    pub fn node_kubeconfig(&self, name: &str) -> anyhow::Result<PathBuf> {
        self.kubeconfig_for(&Identity::node(name), &format!("node-{name}.kubeconfig"))
    }

    /// Writes a kubeconfig with a client certificate for any identity.
    pub fn kubeconfig_for(&self, identity: &Identity, file_name: &str) -> anyhow::Result<PathBuf> {
        let cert = self.shared.pki.issue_client(identity)?;
        let user = json!({
            "client-certificate-data": B64.encode(cert.cert_pem),
            "client-key-data": B64.encode(cert.key_pem),
        });
        self.write_kubeconfig(file_name, &identity.user, user)
    }

    /// Accepts `token` as a bearer token for `identity` (bootstrap tokens,
    /// service-account tokens) and writes a kubeconfig using it.
    pub fn token_kubeconfig(
        &self,
        token: &str,
        identity: Identity,
        file_name: &str,
    ) -> anyhow::Result<PathBuf> {
        let user = identity.user.clone();
        lock(&self.shared.tokens).insert(token.to_string(), identity);
        self.write_kubeconfig(file_name, &user, json!({"token": token}))
    }

    fn write_kubeconfig(
        &self,
        file_name: &str,
        user: &str,
        credentials: Value,
    ) -> anyhow::Result<PathBuf> {
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "hpk8s-test", "cluster": {
                "server": self.url, "certificate-authority-data": B64.encode(self.ca_pem())}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": "hpk8s-test", "context": {"cluster": "hpk8s-test", "user": user}}],
            "current-context": "hpk8s-test",
        });
        let path = self.dir.path().join(file_name);
        write_secret_file(&path, &serde_json::to_vec_pretty(&config)?)?;
        Ok(path)
    }

    /// Turns NodeRestriction for node identities on (the default) or off.
    pub fn set_node_restriction(&self, on: bool) {
        self.shared.node_restriction.store(on, Ordering::Relaxed);
    }

    /// Plays kubelet for pod termination: when on, deleted and evicted pods
    /// keep existing with a `deletionTimestamp` (Terminating) until
    /// [`Self::finish_pod_termination`] or a force delete
    /// (`gracePeriodSeconds: 0`); when off (the default) they go at once.
    pub fn hold_pod_termination(&self, on: bool) {
        self.shared.hold_pods.store(on, Ordering::Relaxed);
    }

    /// Plays kubelet: a Terminating pod's containers stopped, so it goes.
    /// Returns the removed pod.
    pub fn finish_pod_termination(&self, namespace: &str, name: &str) -> Option<Value> {
        let pods = discovery::find("", "v1", "pods")?;
        let mut store = lock(&self.shared.store);
        let pod = store.get(pods, namespace, name)?.clone();
        Some(objects::delete_now(&mut store, pods, namespace, name, pod))
    }

    /// Creates or replaces an object as given (status included, no
    /// authorization). Namespaced objects without a namespace go to
    /// `default`.
    pub fn apply_json(&self, obj: Value) -> anyhow::Result<Value> {
        objects::upsert(&mut lock(&self.shared.store), obj)
            .map_err(|e| anyhow::anyhow!("seeding an object: {}", e.message))
    }

    /// The stored object of `plural` (`nodes`, `pods`, `leases`, ...), if
    /// any.
    pub fn get_json(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = discovery::find_plural(plural)?;
        lock(&self.shared.store).get(rt, namespace, name).cloned()
    }

    /// Names of the stored objects of `plural` in `namespace` (all
    /// namespaces when `None`).
    pub fn names(&self, plural: &str, namespace: Option<&str>) -> Vec<String> {
        let Some(rt) = discovery::find_plural(plural) else {
            return Vec::new();
        };
        lock(&self.shared.store)
            .list(rt, namespace)
            .into_iter()
            .filter_map(|(_, o)| {
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect()
    }

    /// Plays kubelet: registers a node (not yet Ready).
    pub fn register_node(&self, spec: &NodeSpec) -> anyhow::Result<Value> {
        self.apply_json(fixtures::Node::from_spec(spec).json())
    }

    /// Plays kubelet: sets the node's Ready condition.
    pub fn set_ready(&self, name: &str, ready: bool) -> anyhow::Result<Value> {
        let mut node = self
            .get_json("nodes", "", name)
            .with_context(|| format!("node {name} is not registered"))?;
        let (reason, message) = if ready {
            ("KubeletReady", "kubelet is posting ready status")
        } else {
            ("KubeletNotReady", "kubelet stopped posting node status")
        };
        fixtures::set_condition(&mut node, "Ready", ready, reason, message);
        self.apply_json(node)
    }

    /// Arms a fault for the next `times` requests whose path starts with
    /// `path_prefix`.
    pub fn inject_fault(&self, path_prefix: &str, kind: FaultKind, times: usize) {
        lock(&self.shared.faults).push(Fault {
            prefix: path_prefix.to_string(),
            exact: false,
            method: None,
            kind,
            remaining: times,
        });
    }

    /// Arms a fault for the next `times` `method` requests to exactly `path`
    /// (not its subresources).
    pub fn inject_fault_on(&self, method: &str, path: &str, kind: FaultKind, times: usize) {
        lock(&self.shared.faults).push(Fault {
            prefix: path.to_string(),
            exact: true,
            method: Some(method.to_string()),
            kind,
            remaining: times,
        });
    }

    /// Disarms every injected fault (the server answers again).
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// How many injected fault hits are still armed.
    pub fn armed_faults(&self) -> usize {
        lock(&self.shared.faults).iter().map(|f| f.remaining).sum()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// Drops the watch event history (as etcd compaction does): watches
    /// from older versions then get 410 Gone.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }
}

/// Writes a file readable by its owner only (kubeconfigs hold keys).
fn write_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}
