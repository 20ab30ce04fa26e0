//! The controller's remediation loop: a reflector over Nodes (a watch, no
//! polling) wakes it on every change; each pass reads every Node, updates
//! the circuit breaker, decides per node with [`policy::decide`] (oldest
//! fault first, so the budget goes to the nodes that waited longest),
//! applies the decisions and starts drains in the background (at most
//! `drain_concurrency` at once). A timer wakes it too, for the recovery
//! period and drains that finished.
//!
//! Nothing here ends the agent: a failed patch (409 from a concurrent
//! change, the API server away) is logged and decided again on the next
//! pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector;

use super::breaker::{self, Breaker};
use super::metrics::Metrics;
use super::node_report::NodeReport;
use super::ownership::{self, Change, HoldSpec, Record};
use super::policy::{self, Budget, Decision, Facts, Held, Stage, Trouble};
use super::restart::{self, Outcome, Route, Target};
use crate::agent::node_status::node_event;
use crate::aws::sagemaker::Restart;
use crate::cluster::gpu_gate::{TAINT_KEY as GPU_TAINT, label_value};
use crate::cluster::nodes::watch::resilient_node_events;
use crate::config::{ClassAction, RemediationConfig};
use crate::drain::{self, DrainError, Report};
use crate::host::Host;
use crate::kube::client::timed;
use crate::values::time::{rfc3339, timestamp};

/// The Events' reporting component.
pub const COMPONENT: &str = "hpk8s-remediation";
/// How often a pass runs without a Node change (recovery periods, drains).
pub const PASS_EVERY: Duration = Duration::from_secs(5);
/// The longest gap kept between two passes woken by Node changes.
const MIN_GAP: Duration = Duration::from_millis(200);
/// How long a failed drain start waits before it is tried again.
const DRAIN_RETRY: Duration = Duration::from_secs(30);
/// How long a restart request is remembered in the process.
const REQUEST_MEMORY: Duration = Duration::from_secs(3600);
/// How long after a failed restart request it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(120);
/// How often the open breaker is logged again.
const LOUD_EVERY: Duration = Duration::from_secs(60);

/// Makes sure a join ticket valid for longer than the replacement deadline
/// is published before a replacement (the new instance must be able to
/// join). Err: why not.
pub type TicketCheck<'a> = Box<dyn Fn() -> BoxFuture<'a, Result<(), String>> + Send + Sync + 'a>;

/// Everything the loop needs.
pub struct Setup<'a> {
    /// Admin client.
    pub client: Client,
    /// `[remediation]`.
    pub config: RemediationConfig,
    /// For the Slurm route's `scontrol`.
    pub host: Host,
    /// How restarts are requested.
    pub route: Route,
    /// Groups never acted on (the controller group).
    pub controller_groups: Vec<String>,
    /// Run before replacements.
    pub ticket_check: Option<TicketCheck<'a>>,
    /// Shared with the metrics endpoint.
    pub metrics: Arc<Mutex<Metrics>>,
    /// How often a pass runs without a Node change ([`PASS_EVERY`]).
    pub pass_every: Duration,
}

struct Loop<'a> {
    s: Setup<'a>,
    nodes: Api<Node>,
    breaker: Breaker,
    /// Node → the last Event key sent (no repeats while nothing changes).
    reported: HashMap<String, String>,
    /// Nodes being drained.
    draining: HashSet<String>,
    /// Nodes whose drain could not start, and when to try again.
    drain_retry: HashMap<String, Instant>,
    /// Hold starts in the last hour.
    holds: VecDeque<SystemTime>,
    /// Nodes not to ask a restart for before the instant: requested
    /// ([`REQUEST_MEMORY`], even when recording the request failed) or
    /// refused ([`RETRY_FAILED`]).
    requested: HashMap<String, Instant>,
    /// Nodes patched in this process whose change the watch has not shown
    /// yet: the patched Node (its resourceVersion is what the watch must
    /// reach).
    overlay: HashMap<String, Arc<Node>>,
    loud_at: Option<Instant>,
    done_tx: tokio::sync::mpsc::UnboundedSender<(String, Result<Report, DrainError>)>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Runs the loop until `shutdown` resolves.
pub async fn run(setup: Setup<'_>, shutdown: impl Future<Output = ()>) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let concurrency = (setup.config.drain_concurrency as usize).max(1);
    let mut l = Loop {
        nodes: Api::all(setup.client.clone()),
        s: setup,
        breaker: Breaker::default(),
        reported: HashMap::new(),
        draining: HashSet::new(),
        drain_retry: HashMap::new(),
        holds: VecDeque::new(),
        requested: HashMap::new(),
        overlay: HashMap::new(),
        loud_at: None,
        done_tx,
        slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
    };
    match breaker::load(&l.s.client).await {
        Ok(b) => l.breaker = b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the remediation breaker's state; assuming closed")
        }
    }
    let (store, writer) = reflector::store::<Node>();
    let events = reflector::reflector(writer, resilient_node_events(l.s.client.clone()));
    tokio::pin!(events);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(l.s.pass_every.max(Duration::from_millis(50)));
    let mut seeded = false;
    let mut last_pass = Instant::now();
    let mut pass_took = Duration::ZERO;
    loop {
        let mut ticked = !seeded;
        tokio::select! {
            () = &mut shutdown => break,
            ev = events.next() => {
                match ev {
                    Some(Err(e)) => { tracing::warn!(error = %e, "watching Nodes failed; retrying"); continue; }
                    None => break,
                    Some(Ok(_)) => {}
                }
                // A big, busy cluster changes Nodes many times a second:
                // passes at most a fifth of the time (a gap of four times
                // the last pass, at most MIN_GAP), taking whatever came
                // meanwhile. A small cluster's pass takes a millisecond.
                let gap = (pass_took * 4).min(MIN_GAP);
                if let Some(wait) = gap.checked_sub(last_pass.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                while let Some(Some(_)) = events.next().now_or_never() {}
            }
            Some((node, result)) = done_rx.recv() => l.drained(&node, result).await,
            _ = tick.tick() => ticked = true,
        }
        if store.wait_until_ready().now_or_never().is_none() {
            continue;
        }
        // The store's own Arcs: a pass clones no Node.
        let nodes = store.state();
        if !seeded {
            l.seed(&nodes);
            seeded = true;
        }
        let started = Instant::now();
        l.pass(nodes, ticked).await;
        last_pass = Instant::now();
        pass_took = last_pass - started;
    }
}

fn protected_groups_note(groups: &[String]) -> String {
    if groups.is_empty() {
        String::new()
    } else {
        format!(" (controller groups: {})", groups.join(", "))
    }
}

impl Loop<'_> {
    /// Holds recorded on the Nodes count towards the hourly limit after a
    /// restart of the controller.
    fn seed(&mut self, nodes: &[Arc<Node>]) {
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        for n in nodes {
            if let Some(r) = ownership::record(n)
                && r.action >= ClassAction::Cordon
                && r.notice.is_none()
                && let Some(t) = r.since()
                && t >= hour_ago
            {
                self.holds.push_back(t);
            }
        }
        tracing::info!(
            nodes = nodes.len(),
            "remediation watching Nodes{}",
            protected_groups_note(&self.s.controller_groups)
        );
    }

    /// The newer of the watch's copy and the copy a patch of this process
    /// returned. resourceVersions are opaque to clients, but every API
    /// server hpk8s talks to issues etcd revisions (integers that only
    /// grow); were one not a number, the watch's copy wins as soon as it
    /// differs from the patched one.
    fn current(&mut self, node: Arc<Node>) -> Arc<Node> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let Some(patched) = self.overlay.get(&name) else {
            return node;
        };
        let rv = |n: &Node| n.metadata.resource_version.clone().unwrap_or_default();
        let (seen, ours) = (rv(&node), rv(patched.as_ref()));
        let caught_up = match (seen.parse::<u64>(), ours.parse::<u64>()) {
            (Ok(a), Ok(b)) => a >= b,
            _ => seen == ours,
        };
        if caught_up {
            self.overlay.remove(&name);
            node
        } else {
            Arc::clone(patched)
        }
    }

    /// One pass over every Node; `reload` also re-reads the breaker's
    /// ConfigMap (a resume from the CLI or the annotation).
    async fn pass(&mut self, nodes: Vec<Arc<Node>>, reload: bool) {
        let now = SystemTime::now();
        let cfg = self.s.config.clone();
        let nodes: Vec<Arc<Node>> = nodes.into_iter().map(|n| self.current(n)).collect();
        let names: HashSet<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        self.reported.retain(|n, _| names.contains(n));
        self.overlay.retain(|n, _| names.contains(n));
        let hour_ago = now - Duration::from_secs(3600);
        while self.holds.front().is_some_and(|t| *t < hour_ago) {
            self.holds.pop_front();
        }
        let mut rows: Vec<(NodeReport, Option<Record>, Arc<Node>)> = nodes
            .into_iter()
            .map(|n| (NodeReport::of(&n), ownership::record(&n), n))
            .collect();
        self.update_breaker(&rows, now, reload).await;
        // Oldest trouble first; then by name, for a stable order.
        rows.sort_by(|a, b| {
            let key = |r: &NodeReport| (r.trouble == Trouble::Healthy, r.began, r.name.clone());
            key(&a.0).cmp(&key(&b.0))
        });
        let mut budget = Budget {
            nodes: rows.len(),
            held: rows
                .iter()
                .filter(|(_, r, _)| {
                    r.as_ref()
                        .is_some_and(|r| r.action >= ClassAction::Cordon && r.notice.is_none())
                })
                .count(),
            actions_last_hour: self.holds.len(),
            breaker_open: self.breaker.open,
        };
        let avoided = rows
            .iter()
            .filter(|(_, r, _)| {
                r.as_ref()
                    .is_some_and(|r| r.action == ClassAction::PreferAvoid)
            })
            .count();
        let mut restarts: Vec<(Restart, Target, Record)> = Vec::new();
        let mut deferred: HashMap<&'static str, usize> = HashMap::new();
        for (report, record, node) in rows {
            let gate_only = record.is_none()
                && node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == GPU_TAINT));
            let held = record.as_ref().map(Record::held).or_else(|| {
                gate_only.then_some(Held {
                    action: ClassAction::Report,
                    stage: Stage::Holding,
                    failures: 0,
                    notice: false,
                })
            });
            let facts = Facts {
                protected: report.protected(&self.s.controller_groups),
                held,
                healthy_since: report.healthy_since,
                restarts_last_day: ownership::restarts_since(
                    &node,
                    now - Duration::from_secs(86_400),
                )
                .len(),
            };
            let decision = policy::decide(&cfg, &report.trouble, &facts, &budget, now);
            let resume_drain = record
                .as_ref()
                .is_some_and(|r| r.action >= ClassAction::Drain && r.stage == Stage::Holding);
            if report.trouble == Trouble::Healthy && record.is_none() && !gate_only {
                self.reported.remove(&report.name);
            }
            match decision {
                Decision::Nothing => {}
                Decision::Report { reason, why } => {
                    self.once(&report.name, reason, false, &why).await;
                }
                Decision::Refuse(why) => {
                    let why = format!(
                        "{why}: never cordoned, drained, rebooted or replaced by hpk8s ({})",
                        describe(&report.trouble)
                    );
                    self.once(&report.name, "RemediationRefused", true, &why)
                        .await;
                }
                Decision::Defer(d) => {
                    *deferred
                        .entry(match d {
                            policy::Deferral::Breaker => "breaker",
                            policy::Deferral::Budget => "budget",
                            policy::Deferral::Rate => "rate",
                        })
                        .or_default() += 1;
                    let why = match d {
                        policy::Deferral::Breaker => format!(
                            "{}: the remediation circuit breaker is open ({}); no new actions until `hpk8s remediation resume`",
                            describe(&report.trouble),
                            self.breaker.reason
                        ),
                        policy::Deferral::Budget => format!(
                            "{}: hpk8s already holds {} of {} nodes (remediation.max_unavailable_percent = {}); waiting for one to recover",
                            describe(&report.trouble),
                            budget.held,
                            budget.nodes,
                            cfg.max_unavailable_percent
                        ),
                        policy::Deferral::Rate => format!(
                            "{}: {} actions in the last hour (remediation.max_actions_per_hour = {}); waiting",
                            describe(&report.trouble),
                            budget.actions_last_hour,
                            cfg.max_actions_per_hour
                        ),
                    };
                    self.once(&report.name, d.reason(), true, &why).await;
                }
                Decision::Avoid => {
                    let spec = self.spec_for(&report, ClassAction::PreferAvoid, now);
                    self.apply_hold(&node, &spec, None, false).await;
                }
                Decision::Hold {
                    action,
                    drain,
                    deadline,
                } => {
                    let spec = self.spec_for(&report, action, now);
                    let counted = spec.notice.is_none()
                        && record
                            .as_ref()
                            .is_none_or(|r| r.action < ClassAction::Cordon);
                    if self
                        .apply_hold(&node, &spec, drain.then_some(deadline), true)
                        .await
                        && counted
                    {
                        budget.held += 1;
                        budget.actions_last_hour += 1;
                        self.holds.push_back(now);
                    }
                }
                Decision::Restart(kind) => {
                    let asked = self
                        .requested
                        .get(&report.name)
                        .is_some_and(|t| Instant::now() < *t);
                    if let Some(r) = record.filter(|_| !asked) {
                        let target = Target {
                            node: report.name.clone(),
                            instance_id: report.instance_id.clone(),
                        };
                        restarts.push((kind, target, r));
                    }
                }
                Decision::Release => self.release(&node, &report).await,
            }
            // A drain that should run but does not (the controller
            // restarted mid-drain, or its start failed).
            if resume_drain
                && report.trouble != Trouble::Healthy
                && !self.draining.contains(&report.name)
                && self
                    .drain_retry
                    .get(&report.name)
                    .is_none_or(|t| Instant::now() >= *t)
            {
                let deadline = match &report.trouble {
                    Trouble::Notice(n) => {
                        n.at.map(|t| t - Duration::from_secs(cfg.interruption_margin_secs))
                    }
                    _ => None,
                };
                self.start_drain(&report.name, deadline);
            }
        }
        if !restarts.is_empty() {
            self.restart(restarts, now).await;
        }
        if let Ok(mut m) = self.s.metrics.lock() {
            m.held = budget.held;
            m.avoided = avoided;
            m.breaker_open = self.breaker.open;
            m.deferred = deferred.into_iter().collect();
        }
    }

    async fn update_breaker(
        &mut self,
        rows: &[(NodeReport, Option<Record>, Arc<Node>)],
        now: SystemTime,
        reload: bool,
    ) {
        let cfg = &self.s.config;
        if reload && let Ok(b) = breaker::load(&self.s.client).await {
            self.breaker = b;
        }
        if self.breaker.resume_requested {
            tracing::warn!(
                "remediation resumed through the {} annotation",
                breaker::RESUME_ANNOTATION
            );
            if let Err(e) = breaker::resume(&self.s.client, now).await {
                tracing::warn!(error = %e, "cannot record the resume");
            }
            self.breaker = Breaker {
                resumed_at: Some(now),
                ..Breaker::default()
            };
        }
        let window = Duration::from_secs(cfg.breaker_window_secs);
        let recent = rows
            .iter()
            .filter(|(r, _, _)| matches!(r.trouble, Trouble::Gpu { .. }))
            .filter(|(r, _, _)| breaker::counts(r.began, window, self.breaker.resumed_at, now))
            .count();
        if !self.breaker.open && breaker::trips(recent, rows.len(), cfg.breaker_percent) {
            let reason = format!(
                "{recent} of {} nodes began reporting GPU faults within {} s (more than {} %): a systemic cause (a driver update, a monitoring bug) is likelier than failing GPUs",
                rows.len(),
                cfg.breaker_window_secs,
                cfg.breaker_percent
            );
            tracing::error!(%reason, "remediation circuit breaker OPEN: no new actions until `hpk8s remediation resume`");
            self.breaker.open = true;
            self.breaker.reason = reason;
            self.breaker.since = Some(now);
            self.loud_at = Some(Instant::now());
            if let Err(e) = breaker::store(&self.s.client, &self.breaker).await {
                tracing::warn!(error = %e, "cannot record the open breaker; it stays open in this process");
            }
            if let Ok(mut m) = self.s.metrics.lock() {
                m.breaker_trips += 1;
            }
            // Reported on every faulty node through its deferral Event.
        } else if self.breaker.open && self.loud_at.is_none_or(|t| t.elapsed() >= LOUD_EVERY) {
            self.loud_at = Some(Instant::now());
            tracing::error!(
                reason = %self.breaker.reason,
                since = %self.breaker.since.map(rfc3339).unwrap_or_default(),
                "remediation circuit breaker is open: no new actions; check the nodes, then run `hpk8s remediation resume`"
            );
        }
    }

    fn spec_for(&self, report: &NodeReport, action: ClassAction, now: SystemTime) -> HoldSpec {
        let added = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            timestamp(now),
        ));
        let (reason, taint, notice) = match &report.trouble {
            Trouble::Notice(n) => (
                format!("{:?}", n.kind),
                Taint {
                    key: ownership::INTERRUPTION_TAINT.into(),
                    value: Some(label_value(&n.action)),
                    effect: "NoSchedule".into(),
                    time_added: added,
                },
                Some(n.kind),
            ),
            Trouble::Gpu { reason, .. } => (
                reason.clone(),
                Taint {
                    key: GPU_TAINT.into(),
                    value: Some(label_value(reason)),
                    effect: if action == ClassAction::PreferAvoid {
                        "PreferNoSchedule"
                    } else {
                        "NoSchedule"
                    }
                    .into(),
                    time_added: added,
                },
                None,
            ),
            Trouble::Healthy | Trouble::Unknown => (
                "Unknown".into(),
                Taint {
                    key: GPU_TAINT.into(),
                    value: None,
                    effect: "NoSchedule".into(),
                    time_added: added,
                },
                None,
            ),
        };
        let health_label =
            (self.s.config.health_label && action >= ClassAction::Cordon).then_some(match action {
                ClassAction::Reboot => "UnschedulablePendingReboot",
                ClassAction::Replace => "UnschedulablePendingReplacement",
                _ => "Unschedulable",
            });
        HoldSpec {
            reason,
            action,
            taint,
            cordon: action >= ClassAction::Cordon,
            health_label,
            notice,
        }
    }

    /// Patches the Node; returns whether it took. `drain`: the drain to
    /// start (with a notice's deadline).
    async fn apply_hold(
        &mut self,
        node: &Node,
        spec: &HoldSpec,
        drain: Option<Option<SystemTime>>,
        out: bool,
    ) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let change = ownership::hold(node, spec, SystemTime::now());
        let action = spec.action.as_str();
        if !self.patch(node, &change).await {
            self.count(action, "failed");
            return false;
        }
        self.count(action, "ok");
        let t = &spec.taint;
        let mut what = format!(
            "{}: tainted {}={}:{}",
            spec.reason,
            t.key,
            t.value.as_deref().unwrap_or(""),
            t.effect
        );
        if out {
            what.push_str(if change.record.as_ref().is_some_and(|r| r.cordoned) {
                ", cordoned"
            } else {
                ", already cordoned (by someone else; left so)"
            });
        }
        if drain.is_some() {
            what.push_str(", draining");
        }
        match spec.action {
            ClassAction::Reboot => what.push_str("; a reboot follows the drain"),
            ClassAction::Replace => what.push_str("; a replacement follows the drain"),
            _ => {}
        }
        tracing::warn!(node = %name, "{what}");
        self.event(
            &name,
            true,
            if spec.notice.is_some() {
                "InterruptionHold"
            } else {
                "RemediationHold"
            },
            &what,
        )
        .await;
        self.reported
            .insert(name.clone(), format!("hold:{}", spec.action.as_str()));
        if let Some(deadline) = drain {
            self.start_drain(&name, deadline);
        }
        true
    }

    fn start_drain(&mut self, name: &str, deadline: Option<SystemTime>) {
        if !self.draining.insert(name.to_string()) {
            return;
        }
        let mut opts = drain::Options::from_config(&self.s.config);
        if let Some(d) = deadline {
            let left = d
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            opts.deadline = opts.deadline.min(left);
        }
        let client = self.s.client.clone();
        let tx = self.done_tx.clone();
        let slots = self.slots.clone();
        let node = name.to_string();
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = drain::drain(&client, &node, &opts).await;
            let _ = tx.send((node, result));
        });
    }

    async fn drained(&mut self, name: &str, result: Result<Report, DrainError>) {
        self.draining.remove(name);
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot drain; trying again in {} s", DRAIN_RETRY.as_secs());
                self.drain_retry
                    .insert(name.to_string(), Instant::now() + DRAIN_RETRY);
                return;
            }
        };
        self.drain_retry.remove(name);
        if let Ok(mut m) = self.s.metrics.lock() {
            m.drain(report.finished, report.elapsed_secs);
        }
        let json = serde_json::to_string(&report).unwrap_or_default();
        let stage = if report.finished {
            Stage::Drained
        } else {
            Stage::DrainBlocked
        };
        if !self
            .record_outcome(
                name,
                |r| r.stage = stage,
                |n, r| ownership::update(n, r, &[]),
            )
            .await
        {
            tracing::info!(node = %name, "the hold ended during the drain (released or the Node gone)");
            return;
        }
        if report.finished {
            tracing::info!(node = %name, drain = %json, "{}", report.summary());
            self.count("drain", "finished");
            self.event(name, false, "Drained", &report.summary()).await;
        } else {
            tracing::warn!(node = %name, drain = %json, "{}", report.summary());
            self.count("drain", "deadline");
            self.event(
                name,
                true,
                "DrainBlocked",
                &format!(
                    "{}; the node stays cordoned, no reboot or replacement requested",
                    report.summary()
                ),
            )
            .await;
        }
    }

    async fn restart(&mut self, batch: Vec<(Restart, Target, Record)>, now: SystemTime) {
        for kind in [Restart::Reboot, Restart::Replace] {
            let items: Vec<&(Restart, Target, Record)> =
                batch.iter().filter(|b| b.0 == kind).collect();
            if items.is_empty() {
                continue;
            }
            if kind == Restart::Replace
                && let Some(check) = &self.s.ticket_check
                && let Err(why) = check().await
            {
                for (_, t, _) in &items {
                    self.once(
                        &t.node,
                        "ReplaceWaitsForTicket",
                        true,
                        &format!("no replacement yet: {why}"),
                    )
                    .await;
                }
                continue;
            }
            let targets: Vec<Target> = items.iter().map(|b| b.1.clone()).collect();
            let outcomes = restart::request(&self.s.route, &self.s.host, kind, &targets).await;
            let self_reboot = matches!(self.s.route, Route::SelfManaged) && kind == Restart::Reboot;
            for (target, outcome) in outcomes {
                let verb = match kind {
                    Restart::Reboot => "reboot",
                    Restart::Replace => "replace",
                };
                let id = target
                    .instance_id
                    .clone()
                    .unwrap_or_else(|| "unknown instance".into());
                let name = target.node.clone();
                match outcome {
                    Outcome::Requested { via } => {
                        self.requested
                            .insert(name.clone(), Instant::now() + REQUEST_MEMORY);
                        self.record_outcome(
                            &name,
                            |_| {},
                            |n, r| ownership::requested(n, r, kind, self_reboot, now),
                        )
                        .await;
                        self.count(verb, "requested");
                        let msg = format!("{verb} of {id} requested through {via}");
                        tracing::warn!(node = %name, "{msg}");
                        self.event(
                            &name,
                            true,
                            if kind == Restart::Reboot {
                                "RebootRequested"
                            } else {
                                "ReplaceRequested"
                            },
                            &msg,
                        )
                        .await;
                    }
                    Outcome::Reported => {
                        self.requested
                            .insert(name.clone(), Instant::now() + REQUEST_MEMORY);
                        self.record_outcome(
                            &name,
                            |_| {},
                            |n, r| ownership::requested(n, r, kind, false, now),
                        )
                        .await;
                        self.count(verb, "reported");
                        let msg = format!(
                            "GPU needs replacing: terminate instance {id} (its autoscaling group launches a new one); hpk8s keeps the node cordoned and drained"
                        );
                        tracing::warn!(node = %name, "{msg}");
                        self.event(&name, true, "ReplaceInstance", &msg).await;
                    }
                    Outcome::Failed { code, message } => {
                        self.requested
                            .insert(name.clone(), Instant::now() + RETRY_FAILED);
                        let failures = items
                            .iter()
                            .find(|b| b.1 == target)
                            .map_or(1, |b| b.2.failures + 1);
                        self.record_outcome(
                            &name,
                            |r| r.failures = failures,
                            |n, r| ownership::update(n, r, &[]),
                        )
                        .await;
                        self.count(verb, "failed");
                        let msg = format!(
                            "{verb} of {id} failed ({code}): {message}; attempt {failures} of {}",
                            policy::MAX_REQUEST_FAILURES
                        );
                        tracing::warn!(node = %name, "{msg}");
                        self.event(&name, true, "RestartFailed", &msg).await;
                    }
                    Outcome::Stopped { code, message } => {
                        self.record_outcome(
                            &name,
                            |r| r.stage = Stage::Stopped,
                            |n, r| ownership::update(n, r, &[]),
                        )
                        .await;
                        self.count(verb, "stopped");
                        let msg = format!(
                            "{verb} of {id} not requested ({code}): {message}; hpk8s stops asking and keeps the node held"
                        );
                        tracing::warn!(node = %name, "{msg}");
                        self.event(&name, true, "RestartStopped", &msg).await;
                    }
                }
            }
        }
    }

    async fn release(&mut self, node: &Node, report: &NodeReport) {
        let change = ownership::release(node, self.s.config.health_label);
        let record = ownership::record(node);
        if !self.patch(node, &change).await {
            self.count("release", "failed");
            return;
        }
        self.count("release", "ok");
        let kept = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
            && !record.as_ref().is_some_and(|r| r.cordoned);
        let msg = format!(
            "healthy for {} s: removed hpk8s's taints{}{}",
            self.s.config.recovery_after_secs,
            if record.as_ref().is_some_and(|r| r.cordoned) {
                " and cordon"
            } else {
                ""
            },
            if kept {
                "; the cordon someone else set stays"
            } else {
                ""
            }
        );
        tracing::info!(node = %report.name, "{msg}");
        self.event(&report.name, false, "RemediationReleased", &msg)
            .await;
        self.reported.remove(&report.name);
    }

    /// Changes the record on the current Node (read fresh; a concurrent
    /// change is retried): for outcomes that must not be lost (a restart
    /// requested, a drain's end). `extra`: annotations set beside it.
    async fn record_outcome(
        &mut self,
        name: &str,
        f: impl Fn(&mut Record),
        extra: impl Fn(&Node, &Record) -> Change,
    ) -> bool {
        for _ in 0..5 {
            let node = match timed(self.nodes.get_opt(name)).await {
                Ok(Some(n)) => n,
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot read the Node");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let Some(mut record) = ownership::record(&node) else {
                return false; // released meanwhile
            };
            f(&mut record);
            let change = extra(&node, &record);
            if self.patch(&node, &change).await {
                return true;
            }
        }
        false
    }

    async fn patch(&mut self, node: &Node, change: &Change) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        match timed(
            self.nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&change.patch)),
        )
        .await
        {
            Ok(patched) => {
                self.overlay.insert(name, Arc::new(patched));
                true
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::info!(node = %name, "the Node changed meanwhile; deciding again");
                false
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot update the Node");
                false
            }
        }
    }

    fn count(&self, action: &str, result: &str) {
        if let Ok(mut m) = self.s.metrics.lock() {
            m.action(action, result);
        }
    }

    async fn once(&mut self, node: &str, reason: &str, warning: bool, message: &str) {
        let key = format!("{reason}:{message}");
        if self.reported.get(node) == Some(&key) {
            return;
        }
        if warning {
            tracing::warn!(node, reason, "{message}");
        } else {
            tracing::info!(node, reason, "{message}");
        }
        self.event(node, warning, reason, message).await;
        self.reported.insert(node.to_string(), key);
    }

    async fn event(&self, node: &str, warning: bool, reason: &str, message: &str) {
        if let Err(e) = node_event(
            &self.s.client,
            node,
            COMPONENT,
            warning,
            reason,
            "Remediate",
            message,
        )
        .await
        {
            tracing::warn!(node, error = %e, "cannot create an Event");
        }
    }
}

fn describe(t: &Trouble) -> String {
    match t {
        Trouble::Healthy => "healthy".into(),
        Trouble::Unknown => "GPU state unknown".into(),
        Trouble::Gpu { reason, class } => format!("{reason} ({})", class.as_str()),
        Trouble::Notice(n) => format!("{:?} notice ({})", n.kind, n.action),
    }
}
