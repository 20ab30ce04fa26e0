//! The controller's view of the cluster's Nodes: waiting until every node
//! of the inventory is Ready, and the labels a node may not set on itself
//! (NodeRestriction) that the controller applies with its cluster
//! credential.
//!
//! Nodes are matched to the inventory by the `InternalIP` in their
//! `status.addresses`, never by name: a node's name comes from its hostname
//! or `node.name` and need not be the inventory's. The wait WATCHES Nodes
//! (kube's watcher, which re-lists after a `410 Gone`) instead of polling,
//! so a 1000-node cluster costs one list and a stream of events. Ready nodes
//! the inventory does not list (a scale-up, a replacement) are reported,
//! never fatal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::time::Instant;

use super::labels;
use crate::config::ClusterConfig;
use crate::identity::{NodeIdentity, Peer, Role};

/// The wait for Ready nodes when `cluster.nodes_ready_timeout_secs` is
/// unset: this long…
pub const BASE_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// …plus this much per expected node (image pulls and joins queue up on
/// the control plane as clusters grow).
pub const READY_TIMEOUT_PER_NODE: Duration = Duration::from_secs(1);
/// Progress lines are logged on change, at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long one label update keeps retrying 5xx, 429 and connection errors.
pub const LABEL_RETRY_TOTAL: Duration = Duration::from_secs(60);
/// How often the joining-node labeller retries nodes it failed to label.
pub const RELABEL_EVERY: Duration = Duration::from_secs(30);
/// Label kubeadm puts on control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// Node names shown in a progress line.
const NAMES_IN_PROGRESS: usize = 2;
/// Node names shown in the deadline error.
const NAMES_IN_ERROR: usize = 5;

/// Errors of the node wait and of node labelling (exit codes 170–179, see
/// `docs/exit-codes.md`).
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Some expected nodes were not Ready before the deadline.
    #[error(
        "{missing} of {expected} expected nodes not Ready after {waited_secs} s (watching GET /api/v1/nodes): {names}{last_error}; check those nodes' `journalctl -u hpk8s-bootstrap` and `journalctl -u kubelet`, or raise cluster.nodes_ready_timeout_secs"
    )]
    NotReady {
        /// How many are missing.
        missing: usize,
        /// How many were expected.
        expected: usize,
        /// The first few missing nodes (`a, b and 3 more`).
        names: String,
        /// Seconds waited.
        waited_secs: u64,
        /// `; last API error: …` when watching failed lately, else empty.
        last_error: String,
    },
    /// The node was deleted while it was being labelled.
    #[error("node {node} was deleted while labelling it ({endpoint} answered 404 Not Found)")]
    NodeGone {
        /// The node.
        node: String,
        /// `GET /api/v1/nodes/NAME` or `PATCH …`.
        endpoint: String,
    },
    /// The API server kept failing (5xx, 429, connection errors) for
    /// [`LABEL_RETRY_TOTAL`].
    #[error(
        "{endpoint} kept failing for {retried_secs} s while labelling node {node}: {source}; check the API server (`kubectl get --raw /readyz`) and re-run"
    )]
    Unavailable {
        /// The node.
        node: String,
        /// `PATCH /api/v1/nodes/NAME`, …
        endpoint: String,
        /// Seconds spent retrying.
        retried_secs: u64,
        /// The last failure.
        #[source]
        source: Box<kube::Error>,
    },
    /// The API server refused the request (forbidden, invalid label value).
    #[error(
        "{endpoint} was refused while labelling node {node}: {source}; check the controller's credential (admin kubeconfig) and the label values"
    )]
    Refused {
        /// The node.
        node: String,
        /// `PATCH /api/v1/nodes/NAME`, …
        endpoint: String,
        /// The refusal.
        #[source]
        source: Box<kube::Error>,
    },
}

impl NodesError {
    /// Process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            NodesError::NotReady { .. } => 170,
            NodesError::NodeGone { .. } => 171,
            NodesError::Unavailable { .. } => 172,
            NodesError::Refused { .. } => 173,
        }
    }
}

/// A node the controller expects to join, from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedNode {
    /// Its address: the `InternalIP` its Node reports.
    pub address: IpAddr,
    /// Its name in messages: the inventory's name, else `ip-10-1-38-128`.
    pub name: String,
    /// Its instance group.
    pub group: String,
    /// Its role.
    pub role: Role,
}

impl ExpectedNode {
    /// The expected node for an inventory peer.
    pub fn from_peer(peer: &Peer) -> ExpectedNode {
        ExpectedNode {
            address: peer.address,
            name: peer
                .name
                .clone()
                .unwrap_or_else(|| address_name(peer.address)),
            group: peer.group.clone(),
            role: peer.role,
        }
    }
}

/// `10.1.38.128` → `ip-10-1-38-128` (EC2's private DNS style; IPv6 colons
/// become dashes too).
pub fn address_name(address: IpAddr) -> String {
    format!("ip-{}", address.to_string().replace(['.', ':'], "-"))
}

/// Every node of `identity`'s inventory that joins, the controller included.
pub fn expected_nodes(identity: &NodeIdentity) -> Vec<ExpectedNode> {
    identity.peers.iter().map(ExpectedNode::from_peer).collect()
}

/// How long to wait for `expected` nodes: `cluster.nodes_ready_timeout_secs`
/// when set, else [`BASE_READY_TIMEOUT`] + [`READY_TIMEOUT_PER_NODE`] per node.
pub fn ready_deadline(expected: usize, config: &ClusterConfig) -> Duration {
    match config.nodes_ready_timeout_secs {
        Some(secs) => Duration::from_secs(secs),
        None => {
            BASE_READY_TIMEOUT
                + READY_TIMEOUT_PER_NODE.saturating_mul(u32::try_from(expected).unwrap_or(u32::MAX))
        }
    }
}

/// An expected node found Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyNode {
    /// The inventory's node.
    pub expected: ExpectedNode,
    /// The name of its Node object.
    pub node_name: String,
}

/// A Ready node the inventory does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedNode {
    /// The name of its Node object.
    pub node_name: String,
    /// Its `InternalIP`, if it reports one.
    pub address: Option<IpAddr>,
    /// The labels it carries (to derive the controller's labels from).
    pub labels: BTreeMap<String, String>,
}

impl From<&NodeView> for UnexpectedNode {
    fn from(n: &NodeView) -> Self {
        UnexpectedNode {
            node_name: n.name.clone(),
            address: n.internal_ips.first().copied(),
            labels: n.labels.clone(),
        }
    }
}

/// The outcome of [`wait_until_ready`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyReport {
    /// Every expected node, in the order given, with its Node's name.
    pub ready: Vec<ReadyNode>,
    /// Ready nodes that were not expected (scale-up, replacements).
    pub unexpected: Vec<UnexpectedNode>,
    /// How long the wait took.
    pub waited: Duration,
}

impl ReadyReport {
    /// The Node name of the expected node at `address`.
    pub fn node_name(&self, address: IpAddr) -> Option<&str> {
        self.ready
            .iter()
            .find(|r| r.expected.address == address)
            .map(|r| r.node_name.as_str())
    }

    /// The controller's labels for every Ready node: from the inventory for
    /// expected nodes, from their own labels for the others.
    pub fn labels_to_apply(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let expected = self.ready.iter().map(|r| {
            (
                r.node_name.clone(),
                controller_labels(&BTreeMap::new(), Some(&r.expected)),
            )
        });
        let others = self
            .unexpected
            .iter()
            .map(|u| (u.node_name.clone(), controller_labels(&u.labels, None)));
        expected.chain(others).collect()
    }
}

/// The labels the controller puts on a node (NodeRestriction forbids the
/// node to set them itself): [`labels::ROLE_WORKER`] `""` on every node
/// that is not a controller, and [`labels::INSTANCE_GROUP`] when the group
/// is known. With `expected`, role and group come from the inventory;
/// without (a node that joined later), from the labels it registered with:
/// hpk8s nodes set their instance group themselves, and kubeadm marks
/// control-plane nodes with [`CONTROL_PLANE_LABEL`].
pub fn controller_labels(
    node_labels: &BTreeMap<String, String>,
    expected: Option<&ExpectedNode>,
) -> BTreeMap<String, String> {
    let (controller, group) = match expected {
        Some(e) => (e.role == Role::Controller, Some(e.group.clone())),
        None => (
            node_labels.contains_key(CONTROL_PLANE_LABEL),
            node_labels.get(labels::INSTANCE_GROUP).cloned(),
        ),
    };
    let mut out = BTreeMap::new();
    if !controller {
        out.insert(labels::ROLE_WORKER.to_string(), String::new());
    }
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        out.insert(labels::INSTANCE_GROUP.to_string(), g);
    }
    out
}

/// What the wait needs of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeView {
    name: String,
    internal_ips: Vec<IpAddr>,
    ready: bool,
    labels: BTreeMap<String, String>,
}

impl NodeView {
    fn of(node: &Node) -> NodeView {
        let status = node.status.as_ref();
        NodeView {
            name: node.metadata.name.clone().unwrap_or_default(),
            internal_ips: status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
            ready: is_ready(node),
            labels: node.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// Condition `Ready` is `True`.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The expected nodes against the Nodes seen: the Ready Node name for each
/// expected node (a Ready one wins when several claim the address), and
/// the Ready Nodes no expected node matched.
fn assess<'n>(
    expected: &[ExpectedNode],
    nodes: &'n BTreeMap<String, NodeView>,
) -> (Vec<Option<&'n str>>, Vec<&'n NodeView>) {
    let wanted: HashSet<IpAddr> = expected.iter().map(|e| e.address).collect();
    // Ready nodes by address (the first by name when several claim one):
    // linear in nodes, so a 1000-node cluster's events stay cheap.
    let mut ready_at: HashMap<IpAddr, &str> = HashMap::with_capacity(nodes.len());
    for n in nodes.values().filter(|n| n.ready) {
        for a in &n.internal_ips {
            ready_at.entry(*a).or_insert(n.name.as_str());
        }
    }
    let matched = expected
        .iter()
        .map(|e| ready_at.get(&e.address).copied())
        .collect();
    let unexpected = nodes
        .values()
        .filter(|n| n.ready && !n.internal_ips.iter().any(|a| wanted.contains(a)))
        .collect();
    (matched, unexpected)
}

/// The names of the expected nodes `matched` has no Ready Node for.
fn missing_names<'e>(expected: &'e [ExpectedNode], matched: &[Option<&str>]) -> Vec<&'e str> {
    expected
        .iter()
        .zip(matched)
        .filter(|(_, m)| m.is_none())
        .map(|(e, _)| e.name.as_str())
        .collect()
}

/// `a`, `a and b`, `a, b and c`, `a, b and 3 more` (at most `shown` names).
fn name_list(names: &[&str], shown: usize) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_string(),
        _ if names.len() <= shown => {
            let (last, rest) = names.split_last().unwrap_or((&"", &[]));
            format!("{} and {last}", rest.join(", "))
        }
        _ => format!(
            "{} and {} more",
            names[..shown].join(", "),
            names.len() - shown
        ),
    }
}

/// `37/64 Ready; waiting for ip-10-1-38-128, ip-10-1-29-16 and 35 more`.
fn progress_line(ready: usize, total: usize, missing: &[&str]) -> String {
    if missing.is_empty() {
        format!("{ready}/{total} Ready")
    } else {
        format!(
            "{ready}/{total} Ready; waiting for {}",
            name_list(missing, NAMES_IN_PROGRESS)
        )
    }
}

type NodeEvents = futures::stream::BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>>;

/// A watch of every Node: a list, then a watch, resumed after errors with
/// kube's watcher backoff.
fn node_events(client: &Client) -> NodeEvents {
    watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed()
}

/// Whether the watch must start over from a fresh list. kube's watcher
/// re-lists by itself after a `410 Gone` event inside the stream, but not
/// when the server refuses to start the watch with 410 (as some servers do
/// once the version it resumes from is compacted): it would retry the same
/// version forever.
fn expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
}

/// A failed watch: started over from a fresh list when the version it
/// resumes from is gone, otherwise left to the watcher's own backoff; a
/// repeated error is logged once.
fn on_watch_error(
    client: &Client,
    e: &watcher::Error,
    events: &mut NodeEvents,
    last_error: &mut Option<String>,
) {
    if expired(e) {
        tracing::info!("the Node watch expired (410 Gone); listing Nodes again");
        *events = node_events(client);
        return;
    }
    let text = e.to_string();
    if last_error.as_ref() != Some(&text) {
        tracing::warn!(error = %text, "watching Nodes failed; retrying");
    }
    *last_error = Some(text);
}

/// Waits until every `expected` node has a Ready Node (matched by
/// `InternalIP`), watching Nodes; fails at `deadline` naming the missing
/// nodes. API errors while watching are retried (with kube's watcher
/// backoff) until the deadline.
pub async fn wait_until_ready(
    client: &Client,
    expected: &[ExpectedNode],
    deadline: Duration,
) -> Result<ReadyReport, NodesError> {
    let start = Instant::now();
    let mut events = node_events(client);
    let mut nodes: BTreeMap<String, NodeView> = BTreeMap::new();
    // A (re-)list in progress: replaces `nodes` once complete.
    let mut listing: Option<BTreeMap<String, NodeView>> = None;
    let mut last_error: Option<String> = None;
    let mut last_logged: Option<(usize, usize, Instant)> = None;
    // Progress is logged once the first list is in (before, it would
    // always say 0 Ready).
    let mut listed = false;
    let timer = tokio::time::sleep(deadline);
    tokio::pin!(timer);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tracing::info!(
        expected = expected.len(),
        deadline_secs = deadline.as_secs(),
        "waiting for the cluster's nodes to be Ready"
    );
    // Assessing every expected node costs a pass over all Nodes: done at
    // most every ASSESS_EVERY while events stream in, not once per event.
    let mut dirty = true;
    let mut next_assess = Instant::now();
    loop {
        if dirty && Instant::now() >= next_assess {
            dirty = false;
            next_assess = Instant::now() + ASSESS_EVERY;
            let (matched, unexpected) = assess(expected, &nodes);
            let ready = matched.iter().filter(|m| m.is_some()).count();
            let missing = missing_names(expected, &matched);
            if missing.is_empty() {
                let report = ReadyReport {
                    ready: expected
                        .iter()
                        .zip(matched)
                        .map(|(e, m)| ReadyNode {
                            expected: e.clone(),
                            node_name: m.unwrap_or_default().to_string(),
                        })
                        .collect(),
                    unexpected: unexpected.into_iter().map(UnexpectedNode::from).collect(),
                    waited: start.elapsed(),
                };
                log_final(&report);
                return Ok(report);
            }
            let changed = last_logged.is_none_or(|(r, u, _)| (r, u) != (ready, unexpected.len()));
            let quiet = last_logged.is_some_and(|(_, _, at)| at.elapsed() < PROGRESS_EVERY);
            if listed && changed && !quiet {
                tracing::info!(
                    ready,
                    expected = expected.len(),
                    unexpected = unexpected.len(),
                    waited_secs = start.elapsed().as_secs(),
                    "{}",
                    progress_line(ready, expected.len(), &missing)
                );
                last_logged = Some((ready, unexpected.len(), Instant::now()));
            }
        }
        tokio::select! {
            event = events.next() => {
                // Everything already received is applied before the next
                // assessment: one pass over the nodes per batch, not per
                // event (thousands of nodes turn Ready within seconds).
                let mut next = event;
                loop {
                    match next {
                        Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                        Some(Ok(watcher::Event::InitApply(node))) => {
                            let view = NodeView::of(&node);
                            listing.get_or_insert_with(BTreeMap::new).insert(view.name.clone(), view);
                        }
                        Some(Ok(watcher::Event::InitDone)) => {
                            if let Some(complete) = listing.take() {
                                nodes = complete;
                            }
                            listed = true;
                            last_error = None;
                        }
                        Some(Ok(watcher::Event::Apply(node))) => {
                            let view = NodeView::of(&node);
                            nodes.insert(view.name.clone(), view);
                            last_error = None;
                        }
                        Some(Ok(watcher::Event::Delete(node))) => {
                            nodes.remove(&node.metadata.name.unwrap_or_default());
                        }
                        Some(Err(e)) => {
                            on_watch_error(client, &e, &mut events, &mut last_error);
                            break;
                        }
                        // The watcher restarts itself; it never ends.
                        None => break,
                    }
                    match events.next().now_or_never() {
                        Some(more) => next = more,
                        None => break,
                    }
                }
                dirty = true;
            }
            () = tokio::time::sleep_until(next_assess), if dirty => {}
            () = &mut timer => {
                let (matched, _) = assess(expected, &nodes);
                let missing = missing_names(expected, &matched);
                return Err(NodesError::NotReady {
                    missing: missing.len(),
                    expected: expected.len(),
                    names: name_list(&missing, NAMES_IN_ERROR),
                    waited_secs: start.elapsed().as_secs(),
                    last_error: last_error
                        .map(|e| format!("; last API error: {e}"))
                        .unwrap_or_default(),
                });
            }
            _ = tick.tick() => {}
        }
    }
}

fn log_final(report: &ReadyReport) {
    tracing::info!(
        ready = report.ready.len(),
        unexpected = report.unexpected.len(),
        waited_secs = report.waited.as_secs(),
        "{}/{} Ready; every expected node is Ready",
        report.ready.len(),
        report.ready.len()
    );
    if !report.unexpected.is_empty() {
        let names: Vec<&str> = report
            .unexpected
            .iter()
            .map(|u| u.node_name.as_str())
            .collect();
        tracing::info!(
            count = names.len(),
            "Ready nodes the inventory does not list (scale-up or replacements): {}",
            name_list(&names, NAMES_IN_ERROR)
        );
    }
}

/// A failed attempt of one label update, before retrying decides.
enum Attempt {
    Gone(String),
    Transient(String, kube::Error),
    Refused(String, kube::Error),
}

/// Whether retrying may help: 5xx, 429, and failures to reach the server.
pub fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

fn attempt_error(endpoint: String, e: kube::Error) -> Attempt {
    match &e {
        kube::Error::Api(s) if s.code == 404 => Attempt::Gone(endpoint),
        _ if is_transient(&e) => Attempt::Transient(endpoint, e),
        _ => Attempt::Refused(endpoint, e),
    }
}

/// Sets `wanted` on node `node_name` when any label is missing or
/// different, with a JSON merge patch of only those labels (field manager
/// `hpk8s`); returns whether it patched. 5xx, 429 and connection errors are
/// retried with jittered backoff for [`LABEL_RETRY_TOTAL`]; a 404 (the node
/// was deleted meanwhile) is [`NodesError::NodeGone`] at once.
pub async fn label_node(
    client: &Client,
    node_name: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<bool, NodesError> {
    let api: Api<Node> = Api::all(client.clone());
    let start = Instant::now();
    let attempt = || async {
        let path = format!("/api/v1/nodes/{node_name}");
        let node = api
            .get(node_name)
            .await
            .map_err(|e| attempt_error(format!("GET {path}"), e))?;
        let current = node.metadata.labels.unwrap_or_default();
        let missing: BTreeMap<&String, &String> = wanted
            .iter()
            .filter(|(k, v)| current.get(*k) != Some(*v))
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        let params = PatchParams {
            field_manager: Some(labels::FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let patch = json!({"metadata": {"labels": missing}});
        api.patch(node_name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| attempt_error(format!("PATCH {path}"), e))?;
        Ok(true)
    };
    let changed = attempt
        .retry(
            ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_total_delay(Some(LABEL_RETRY_TOTAL))
                .without_max_times(),
        )
        .when(|a: &Attempt| matches!(a, Attempt::Transient(..)))
        .notify(|a: &Attempt, pause: Duration| {
            if let Attempt::Transient(endpoint, e) = a {
                tracing::warn!(node = node_name, %endpoint, error = %e, ?pause, "labelling the node failed; retrying");
            }
        })
        .await
        .map_err(|a| match a {
            Attempt::Gone(endpoint) => NodesError::NodeGone {
                node: node_name.to_string(),
                endpoint,
            },
            Attempt::Transient(endpoint, source) => NodesError::Unavailable {
                node: node_name.to_string(),
                endpoint,
                retried_secs: start.elapsed().as_secs(),
                source: Box::new(source),
            },
            Attempt::Refused(endpoint, source) => NodesError::Refused {
                node: node_name.to_string(),
                endpoint,
                source: Box::new(source),
            },
        })?;
    if changed {
        let shown: Vec<String> = wanted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tracing::info!(node = node_name, labels = %shown.join(","), "labelled the node");
    }
    Ok(changed)
}

/// Applies [`ReadyReport::labels_to_apply`]; returns how many nodes
/// changed. A node deleted meanwhile is logged and skipped.
pub async fn apply_controller_labels(
    client: &Client,
    report: &ReadyReport,
) -> Result<usize, NodesError> {
    // A few requests in flight: a thousand nodes one at a time take
    // seconds, all at once would be a burst the API server may throttle.
    let mut results = futures::stream::iter(report.labels_to_apply())
        .map(|(node, wanted)| async move {
            let result = label_node(client, &node, &wanted).await;
            (node, result)
        })
        .buffer_unordered(LABEL_CONCURRENCY);
    let mut changed = 0;
    while let Some((node, result)) = results.next().await {
        match result {
            Ok(true) => changed += 1,
            Ok(false) => {}
            Err(e @ NodesError::NodeGone { .. }) => tracing::warn!(%node, "{e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(changed)
}

/// Shortest pause between two assessments of the expected nodes while
/// Node events stream in (also the most a finished wait can lag).
pub const ASSESS_EVERY: Duration = Duration::from_millis(100);

/// Label updates in flight at once.
pub const LABEL_CONCURRENCY: usize = 16;

/// For the long-running agent on the controller: watches Nodes and gives
/// each Ready node the [`controller_labels`] derived from its own labels
/// as it appears (nodes that join after the bootstrap need no inventory),
/// until `shutdown` resolves. Failures are logged and retried every
/// [`RELABEL_EVERY`]; nothing here ends the agent. Returns how many nodes
/// it labelled.
pub async fn label_joining_nodes(client: &Client, shutdown: impl Future<Output = ()>) -> usize {
    let mut labelled = 0;
    let work = label_loop(client, &mut labelled);
    tokio::select! {
        () = shutdown => {}
        () = work => {}
    }
    labelled
}

async fn label_loop(client: &Client, labelled: &mut usize) {
    let mut events = node_events(client);
    // Nodes whose labelling failed, retried on the tick.
    let mut pending: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut tick = tokio::time::interval(RELABEL_EVERY);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node))) => {
                    let view = NodeView::of(&node);
                    let wanted = controller_labels(&view.labels, None);
                    let missing = wanted.iter().any(|(k, v)| view.labels.get(k) != Some(v));
                    if view.ready && missing {
                        pending.remove(&view.name);
                        label_one(client, &view.name, wanted, labelled, &mut pending).await;
                    }
                }
                Some(Ok(watcher::Event::Delete(node))) => {
                    pending.remove(&node.metadata.name.unwrap_or_default());
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => last_error = None,
                Some(Err(e)) => on_watch_error(client, &e, &mut events, &mut last_error),
                None => {}
            },
            _ = tick.tick() => {
                for (node, wanted) in std::mem::take(&mut pending) {
                    label_one(client, &node, wanted, labelled, &mut pending).await;
                }
            }
        }
    }
}

async fn label_one(
    client: &Client,
    node: &str,
    wanted: BTreeMap<String, String>,
    labelled: &mut usize,
    pending: &mut BTreeMap<String, BTreeMap<String, String>>,
) {
    match label_node(client, node, &wanted).await {
        Ok(true) => *labelled += 1,
        Ok(false) => {}
        Err(NodesError::NodeGone { .. }) => {}
        Err(e) => {
            tracing::warn!(node, error = %e, "cannot label the joining node; will retry");
            pending.insert(node.to_string(), wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn expected(last: u8, role: Role, name: Option<&str>) -> ExpectedNode {
        ExpectedNode::from_peer(&Peer {
            address: IpAddr::V4(Ipv4Addr::new(10, 1, 38, last)),
            name: name.map(String::from),
            group: "gpu".into(),
            role,
            instance_id: None,
        })
    }

    fn view(name: &str, ip: &str, ready: bool) -> (String, NodeView) {
        (
            name.to_string(),
            NodeView {
                name: name.into(),
                internal_ips: vec![ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))],
                ready,
                labels: BTreeMap::new(),
            },
        )
    }

    #[test]
    fn display_names_fall_back_to_the_address() {
        assert_eq!(expected(128, Role::Worker, None).name, "ip-10-1-38-128");
        assert_eq!(expected(128, Role::Worker, Some("gpu-1")).name, "gpu-1");
        assert_eq!(
            address_name(
                "fd00::1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            ),
            "ip-fd00--1"
        );
    }

    #[test]
    fn name_lists_and_progress_lines() {
        assert_eq!(name_list(&[], 2), "");
        assert_eq!(name_list(&["a"], 2), "a");
        assert_eq!(name_list(&["a", "b"], 2), "a and b");
        assert_eq!(name_list(&["a", "b", "c"], 3), "a, b and c");
        assert_eq!(name_list(&["a", "b", "c", "d"], 2), "a, b and 2 more");
        let missing: Vec<String> = (0..37).map(|i| format!("n{i}")).collect();
        let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
        assert_eq!(
            progress_line(27, 64, &missing),
            "27/64 Ready; waiting for n0, n1 and 35 more"
        );
        assert_eq!(progress_line(3, 3, &[]), "3/3 Ready");
    }

    #[test]
    fn deadline_grows_with_the_cluster_unless_configured() {
        let mut c = ClusterConfig::default();
        assert_eq!(ready_deadline(0, &c), Duration::from_secs(600));
        assert_eq!(ready_deadline(1000, &c), Duration::from_secs(1600));
        c.nodes_ready_timeout_secs = Some(42);
        assert_eq!(ready_deadline(1000, &c), Duration::from_secs(42));
    }

    #[test]
    fn nodes_match_by_internal_ip_and_ready_ones_win() {
        let e = [
            expected(1, Role::Controller, None),
            expected(2, Role::Worker, None),
        ];
        let nodes: BTreeMap<String, NodeView> = [
            view("ctrl", "10.1.38.1", true),
            view("old-2", "10.1.38.2", false),
            view("new-2", "10.1.38.2", true),
            view("extra", "10.1.99.9", true),
            view("extra-not-ready", "10.1.99.8", false),
        ]
        .into_iter()
        .collect();
        let (matched, unexpected) = assess(&e, &nodes);
        assert_eq!(matched, [Some("ctrl"), Some("new-2")]);
        assert_eq!(unexpected.len(), 1);
        assert_eq!(unexpected[0].name, "extra");
    }

    #[test]
    fn controller_labels_from_inventory_or_from_the_node() {
        let w = controller_labels(&BTreeMap::new(), Some(&expected(2, Role::Worker, None)));
        assert_eq!(
            w,
            BTreeMap::from([
                (labels::INSTANCE_GROUP.to_string(), "gpu".to_string()),
                (labels::ROLE_WORKER.to_string(), String::new()),
            ])
        );
        let c = controller_labels(&BTreeMap::new(), Some(&expected(1, Role::Controller, None)));
        assert_eq!(
            c,
            BTreeMap::from([(labels::INSTANCE_GROUP.to_string(), "gpu".to_string())])
        );
        let late = BTreeMap::from([(labels::INSTANCE_GROUP.to_string(), "cpu".to_string())]);
        assert_eq!(
            controller_labels(&late, None),
            BTreeMap::from([
                (labels::INSTANCE_GROUP.to_string(), "cpu".to_string()),
                (labels::ROLE_WORKER.to_string(), String::new()),
            ])
        );
        let cp = BTreeMap::from([(CONTROL_PLANE_LABEL.to_string(), String::new())]);
        assert!(controller_labels(&cp, None).is_empty());
    }
}
