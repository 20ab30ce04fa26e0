//! Waiting until every expected node is Ready, and labelling nodes as they
//! turn Ready.
//!
//! The wait WATCHES Nodes (kube's watcher, which re-lists after a `410
//! Gone`) instead of polling, so a thousand-node cluster costs one list and
//! a stream of events. Each event is applied to an index by address in
//! constant time, so the wait notices the last node within one event, not
//! after a pass over every node. With labelling on, a Ready node whose
//! labels (as the watch shows them) lack the controller's gets exactly one
//! PATCH, sent as soon as it turns Ready: the last label lands about one
//! round trip after the last node turned Ready. Ready nodes the inventory
//! does not list (a scale-up, a replacement) are reported and labelled,
//! never fatal.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kube::Client;
use kube::runtime::watcher;
use tokio::time::Instant;

use super::error::NodesError;
use super::inventory::{
    Expectations, ExpectedNode, GroupLabels, NAMES_IN_ERROR, NodeView, ReadyNode, ReadyReport,
    UnexpectedNode, controller_labels, name_list, progress_line,
};
use super::labelling::{LABEL_CONCURRENCY, missing_labels, patch_labels};
use super::watch::{NodeEvents, node_events, on_watch_error};
use crate::cluster::labels;
use crate::identity::ElasticGroup;

/// Progress lines are logged on change, at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Waits until every `expected` node has a Ready Node (matched by
/// `InternalIP`); fails at `deadline` naming the missing nodes. API errors
/// while watching are retried (with kube's watcher backoff) until the
/// deadline.
pub async fn wait_until_ready(
    client: &Client,
    expected: &[ExpectedNode],
    deadline: Duration,
) -> Result<ReadyReport, NodesError> {
    watch(client, &Expectations::of_nodes(expected), deadline, false).await
}

/// [`wait_until_ready`], and every Ready node (expected or not) missing the
/// controller's labels gets them as it turns Ready, one PATCH per node;
/// returns once every expected node is Ready and every label update is
/// done. A node deleted while it is being labelled is skipped.
pub async fn wait_and_label(
    client: &Client,
    expected: &Expectations,
    deadline: Duration,
) -> Result<ReadyReport, NodesError> {
    watch(client, expected, deadline, true).await
}

/// The Nodes seen, indexed by the expected node each claims.
struct Tracker<'e> {
    expected: &'e [ExpectedNode],
    /// Elastic groups and the Ready Nodes (not expected by address) of each.
    elastic: Vec<(&'e ElasticGroup, BTreeSet<String>)>,
    by_address: HashMap<IpAddr, usize>,
    nodes: HashMap<String, NodeView>,
    /// Per expected node: the Ready Nodes claiming its address.
    ready: Vec<BTreeSet<String>>,
    ready_count: usize,
}

impl<'e> Tracker<'e> {
    fn new(expected: &'e [ExpectedNode], elastic: &'e [ElasticGroup]) -> Self {
        Tracker {
            expected,
            elastic: elastic.iter().map(|g| (g, BTreeSet::new())).collect(),
            by_address: expected
                .iter()
                .enumerate()
                .map(|(i, e)| (e.address, i))
                .collect(),
            nodes: HashMap::new(),
            ready: vec![BTreeSet::new(); expected.len()],
            ready_count: 0,
        }
    }

    /// The expected node `view` is, if any.
    fn expected_of(&self, view: &NodeView) -> Option<&'e ExpectedNode> {
        let expected = self.expected;
        view.internal_ips
            .iter()
            .find_map(|a| self.by_address.get(a))
            .map(|&i| &expected[i])
    }

    fn set_ready(&mut self, view: &NodeView, ready: bool) {
        if self.expected_of(view).is_none()
            && let Some(group) = view.labels.get(labels::INSTANCE_GROUP)
            && let Some((_, names)) = self.elastic.iter_mut().find(|(g, _)| g.name == *group)
        {
            if ready {
                names.insert(view.name.clone());
            } else {
                names.remove(&view.name);
            }
        }
        for a in &view.internal_ips {
            if let Some(&i) = self.by_address.get(a) {
                let was = !self.ready[i].is_empty();
                if ready {
                    self.ready[i].insert(view.name.clone());
                } else {
                    self.ready[i].remove(&view.name);
                }
                match (was, self.ready[i].is_empty()) {
                    (false, false) => self.ready_count += 1,
                    (true, true) => self.ready_count -= 1,
                    _ => {}
                }
            }
        }
    }

    fn upsert(&mut self, view: NodeView) {
        if let Some(old) = self.nodes.remove(&view.name)
            && old.ready
        {
            self.set_ready(&old, false);
        }
        if view.ready {
            self.set_ready(&view, true);
        }
        self.nodes.insert(view.name.clone(), view);
    }

    fn remove(&mut self, name: &str) {
        if let Some(old) = self.nodes.remove(name)
            && old.ready
        {
            self.set_ready(&old, false);
        }
    }

    fn replace_all(&mut self, views: BTreeMap<String, NodeView>) {
        self.nodes.clear();
        self.ready.iter_mut().for_each(BTreeSet::clear);
        self.elastic.iter_mut().for_each(|(_, n)| n.clear());
        self.ready_count = 0;
        for view in views.into_values() {
            self.upsert(view);
        }
    }

    fn all_ready(&self) -> bool {
        self.ready_count == self.expected.len() && self.elastic_short() == 0
    }

    /// Ready nodes the elastic groups still lack for their minimums.
    fn elastic_short(&self) -> usize {
        self.elastic
            .iter()
            .map(|(g, n)| {
                usize::try_from(g.min_nodes)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(n.len())
            })
            .sum()
    }

    /// Ready nodes counted towards what is waited for.
    fn ready_total(&self) -> usize {
        self.ready_count
            + self
                .elastic
                .iter()
                .map(|(g, n)| {
                    n.len()
                        .min(usize::try_from(g.min_nodes).unwrap_or(usize::MAX))
                })
                .sum::<usize>()
    }

    /// What is missing: expected nodes by name, then `2 more of gpu-spot`.
    fn missing(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .expected
            .iter()
            .zip(&self.ready)
            .filter(|(_, r)| r.is_empty())
            .map(|(e, _)| e.name.clone())
            .collect();
        for (g, names) in &self.elastic {
            let short = usize::try_from(g.min_nodes)
                .unwrap_or(usize::MAX)
                .saturating_sub(names.len());
            if short > 0 {
                out.push(format!("{short} more of elastic group {}", g.name));
            }
        }
        out
    }

    fn unexpected_ready(&self) -> usize {
        self.nodes
            .values()
            .filter(|n| n.ready && self.expected_of(n).is_none())
            .count()
    }

    fn report(&self, waited: Duration, labelled: usize) -> ReadyReport {
        let mut unexpected: Vec<UnexpectedNode> = self
            .nodes
            .values()
            .filter(|n| n.ready && self.expected_of(n).is_none())
            .map(UnexpectedNode::from)
            .collect();
        unexpected.sort_by(|a, b| a.node_name.cmp(&b.node_name));
        ReadyReport {
            ready: self
                .expected
                .iter()
                .zip(&self.ready)
                .map(|(e, names)| ReadyNode {
                    expected: e.clone(),
                    node_name: names.iter().next().cloned().unwrap_or_default(),
                })
                .collect(),
            unexpected,
            waited,
            labelled,
        }
    }
}

/// Label updates: queued as nodes turn Ready, at most
/// [`LABEL_CONCURRENCY`] in flight.
struct Labeller<'c> {
    client: &'c Client,
    groups: &'c GroupLabels,
    queued: VecDeque<(String, BTreeMap<String, String>)>,
    /// Nodes queued or in flight, with the labels sent.
    sent: HashMap<String, BTreeMap<String, String>>,
    in_flight: FuturesUnordered<futures::future::BoxFuture<'c, (String, Result<(), NodesError>)>>,
    labelled: usize,
}

impl<'c> Labeller<'c> {
    fn new(client: &'c Client, groups: &'c GroupLabels) -> Self {
        Labeller {
            client,
            groups,
            queued: VecDeque::new(),
            sent: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            labelled: 0,
        }
    }

    /// Queues `view`'s missing labels unless the same are already on their way.
    fn consider(&mut self, view: &NodeView, expected: Option<&ExpectedNode>) {
        if !view.ready {
            return;
        }
        let missing = missing_labels(
            &view.labels,
            &controller_labels(&view.labels, expected, self.groups),
        );
        if missing.is_empty() || self.sent.get(&view.name) == Some(&missing) {
            return;
        }
        self.sent.insert(view.name.clone(), missing.clone());
        self.queued.push_back((view.name.clone(), missing));
    }

    fn start_queued(&mut self) {
        while self.in_flight.len() < LABEL_CONCURRENCY {
            let Some((node, labels)) = self.queued.pop_front() else {
                break;
            };
            let client = self.client;
            self.in_flight.push(Box::pin(async move {
                let result = patch_labels(client, &node, &labels).await;
                (node, result)
            }));
        }
    }

    fn idle(&self) -> bool {
        self.queued.is_empty() && self.in_flight.is_empty()
    }

    fn finished(&mut self, node: String, result: Result<(), NodesError>) -> Result<(), NodesError> {
        match result {
            Ok(()) => {
                self.labelled += 1;
                Ok(())
            }
            Err(e @ NodesError::NodeGone { .. }) => {
                tracing::warn!(%node, "{e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

async fn watch(
    client: &Client,
    expectations: &Expectations,
    deadline: Duration,
    label: bool,
) -> Result<ReadyReport, NodesError> {
    let start = Instant::now();
    let expected = expectations.nodes.as_slice();
    let total = expectations.total();
    let mut events: NodeEvents = node_events(client);
    let mut tracker = Tracker::new(expected, &expectations.elastic);
    let mut labeller = Labeller::new(client, &expectations.group_labels);
    // A (re-)list in progress: replaces what is known once complete.
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
        expected = total,
        deadline_secs = deadline.as_secs(),
        label,
        "waiting for the cluster's nodes to be Ready"
    );
    for g in &expectations.elastic {
        tracing::info!(
            group = %g.name,
            min_nodes = g.min_nodes,
            "elastic group: waiting for {} of its nodes (members join and leave; later ones are labelled as they come)",
            g.min_nodes
        );
    }
    loop {
        if listed && tracker.all_ready() && labeller.idle() {
            let report = tracker.report(start.elapsed(), labeller.labelled);
            log_final(&report);
            return Ok(report);
        }
        if listed {
            let ready = tracker.ready_total();
            let unexpected = tracker.unexpected_ready();
            let changed = last_logged.is_none_or(|(r, u, _)| (r, u) != (ready, unexpected));
            let quiet = last_logged.is_some_and(|(_, _, at)| at.elapsed() < PROGRESS_EVERY);
            if changed && !quiet {
                let missing = tracker.missing();
                let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
                tracing::info!(
                    ready,
                    expected = total,
                    unexpected,
                    waited_secs = start.elapsed().as_secs(),
                    "{}",
                    progress_line(ready, total, &missing)
                );
                last_logged = Some((ready, unexpected, Instant::now()));
            }
        }
        tokio::select! {
            event = events.next() => {
                let mut touched: Vec<String> = Vec::new();
                match event {
                    Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                    Some(Ok(watcher::Event::InitApply(node))) => {
                        let view = NodeView::of(&node);
                        listing.get_or_insert_with(BTreeMap::new).insert(view.name.clone(), view);
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(complete) = listing.take() {
                            touched.extend(complete.keys().cloned());
                            tracker.replace_all(complete);
                        }
                        listed = true;
                        last_error = None;
                    }
                    Some(Ok(watcher::Event::Apply(node))) => {
                        let view = NodeView::of(&node);
                        touched.push(view.name.clone());
                        tracker.upsert(view);
                        last_error = None;
                    }
                    Some(Ok(watcher::Event::Delete(node))) => {
                        tracker.remove(&node.metadata.name.unwrap_or_default());
                    }
                    Some(Err(e)) => on_watch_error(client, &e, &mut events, &mut last_error),
                    // The watcher restarts itself; it never ends.
                    None => {}
                }
                if label && listed {
                    for name in touched {
                        if let Some(view) = tracker.nodes.get(&name) {
                            labeller.consider(view, tracker.expected_of(view));
                        }
                    }
                    labeller.start_queued();
                }
            }
            Some((node, result)) = labeller.in_flight.next(), if !labeller.in_flight.is_empty() => {
                labeller.finished(node, result)?;
                labeller.start_queued();
            }
            () = &mut timer => {
                let missing = tracker.missing();
                let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
                return Err(NodesError::NotReady {
                    missing: total - tracker.ready_total(),
                    expected: total,
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
        labelled = report.labelled,
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

/// The Ready nodes at a glance, for a plan (one list, no watch): which
/// expected nodes are not Ready and how many Ready nodes lack labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodesSnapshot {
    /// Expected nodes without a Ready Node.
    pub not_ready: Vec<String>,
    /// Ready nodes missing some of the controller's labels.
    pub unlabelled: usize,
    /// Expected nodes in all.
    pub expected: usize,
}

/// Reads every Node once and compares with `expected`.
pub async fn snapshot(
    client: &Client,
    expectations: &Expectations,
) -> Result<NodesSnapshot, kube::Error> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let list = crate::kube::client::timed(api.list(&kube::api::ListParams::default())).await?;
    let mut tracker = Tracker::new(&expectations.nodes, &expectations.elastic);
    let views: BTreeMap<String, NodeView> = list
        .items
        .iter()
        .map(NodeView::of)
        .map(|v| (v.name.clone(), v))
        .collect();
    tracker.replace_all(views);
    let unlabelled = tracker
        .nodes
        .values()
        .filter(|v| v.ready)
        .filter(|v| {
            !missing_labels(
                &v.labels,
                &controller_labels(
                    &v.labels,
                    tracker.expected_of(v),
                    &expectations.group_labels,
                ),
            )
            .is_empty()
        })
        .count();
    Ok(NodesSnapshot {
        not_ready: tracker.missing(),
        unlabelled,
        expected: expectations.total(),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::identity::{Peer, Role};

    fn expected(last: u8, role: Role) -> ExpectedNode {
        ExpectedNode::from_peer(&Peer {
            address: IpAddr::V4(Ipv4Addr::new(10, 1, 38, last)),
            name: None,
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
    fn nodes_match_by_internal_ip_and_ready_ones_win() {
        let e = [expected(1, Role::Controller), expected(2, Role::Worker)];
        let nodes: BTreeMap<String, NodeView> = [
            view("ctrl", "10.1.38.1", true),
            view("old-2", "10.1.38.2", false),
            view("new-2", "10.1.38.2", true),
            view("extra", "10.1.99.9", true),
            view("extra-not-ready", "10.1.99.8", false),
        ]
        .into_iter()
        .collect();
        let mut tracker = Tracker::new(&e, &[]);
        tracker.replace_all(nodes);
        assert!(tracker.all_ready());
        let report = tracker.report(Duration::ZERO, 0);
        let matched: Vec<&str> = report.ready.iter().map(|r| r.node_name.as_str()).collect();
        assert_eq!(matched, ["ctrl", "new-2"]);
        assert_eq!(report.unexpected.len(), 1);
        assert_eq!(report.unexpected[0].node_name, "extra");
    }

    #[test]
    fn elastic_groups_count_ready_nodes_by_group_label() {
        let e = [expected(1, Role::Controller)];
        let groups = [ElasticGroup {
            name: "gpu-spot".into(),
            min_nodes: 2,
            max_nodes: 10,
        }];
        let mut tracker = Tracker::new(&e, &groups);
        let member = |name: &str, ip: &str, ready: bool| {
            let (_, mut v) = view(name, ip, ready);
            v.labels
                .insert(labels::INSTANCE_GROUP.into(), "gpu-spot".into());
            v
        };
        tracker.upsert(view("ctrl", "10.1.38.1", true).1);
        tracker.upsert(member("g1", "10.1.50.1", true));
        tracker.upsert(member("g2", "10.1.50.2", false));
        assert!(!tracker.all_ready());
        assert_eq!(tracker.missing(), ["1 more of elastic group gpu-spot"]);
        assert_eq!(tracker.ready_total(), 2);
        tracker.upsert(member("g2", "10.1.50.2", true));
        assert!(tracker.all_ready());
        // A member going away counts no more.
        tracker.remove("g1");
        assert!(!tracker.all_ready());
        // Another group's node does not count.
        let (_, mut other) = view("c1", "10.1.60.1", true);
        other
            .labels
            .insert(labels::INSTANCE_GROUP.into(), "cpu".into());
        tracker.upsert(other);
        assert!(!tracker.all_ready());
    }

    #[test]
    fn readiness_is_tracked_per_event() {
        let e = [expected(1, Role::Controller), expected(2, Role::Worker)];
        let mut tracker = Tracker::new(&e, &[]);
        tracker.upsert(view("a", "10.1.38.1", true).1);
        tracker.upsert(view("b", "10.1.38.2", false).1);
        assert_eq!(
            (tracker.ready_count, tracker.missing()),
            (1, vec!["ip-10-1-38-2".to_string()])
        );
        tracker.upsert(view("b", "10.1.38.2", true).1);
        assert!(tracker.all_ready());
        // Two Ready nodes claim one address: one going away keeps it Ready.
        tracker.upsert(view("b2", "10.1.38.2", true).1);
        tracker.remove("b");
        assert!(tracker.all_ready());
        tracker.upsert(view("b2", "10.1.38.2", false).1);
        assert_eq!(tracker.ready_count, 1);
        assert_eq!(tracker.unexpected_ready(), 0);
    }
}
