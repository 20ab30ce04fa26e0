//! The node agent's GPU health loop: XID and ECC events from their own
//! thread, a full probe every `gpu_health.probe_interval_secs` and right
//! after an event, classification with what only a running loop knows
//! (how long a slowdown lasted, how fast PCIe replays grow, this boot's
//! XIDs), the `GPUHealthy` condition and an Event per new fault published
//! with the node's own credential. Publishing failures (an API outage)
//! keep the latest state, which is published when the server is back.
//!
//! A node without NVIDIA GPUs only looks at its PCI bus now and then.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::node_status::{NodeStatus, Published};
use crate::config::GpuHealthConfig;
use crate::gpu::check::Report;
use crate::gpu::classify::{self, Class, Fault, Observed, Trend, XidEvent};
use crate::gpu::condition;
use crate::gpu::events::{self, GpuEvent, now_secs};
use crate::gpu::history::{self, History};
use crate::gpu::probe::{self, Opened};
use crate::gpu::signals::Signal;
use crate::hardware::Hardware;
use crate::host::Host;

/// How often a node without GPUs looks at its PCI bus.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(300);
/// How soon a failed publish is retried.
pub const REPUBLISH_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The condition is refreshed (heartbeat) this often even when unchanged.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// Events from the event thread waiting for the loop.
const EVENT_QUEUE: usize = 256;

/// What the loop knows, shared with the metrics endpoint and the watchdog.
#[derive(Debug, Default)]
pub struct HealthState {
    /// The latest check.
    pub report: Option<Report>,
    /// XIDs seen since the agent started, by code.
    pub xid_counts: BTreeMap<u64, u64>,
    /// When the condition was last published successfully.
    pub last_publish: Option<SystemTime>,
    /// Whether the node has NVIDIA GPUs.
    pub has_gpus: bool,
    /// Set once the first probe and the first publish attempt are done.
    pub ready: bool,
}

/// Liveness of the loop's two halves, for the systemd watchdog.
#[derive(Debug, Default)]
pub struct Liveness {
    /// The event thread's last stamp (seconds since the epoch).
    pub events: Arc<AtomicU64>,
    /// The probe loop's last stamp.
    pub probes: AtomicU64,
    /// A probe is stuck in a driver call.
    pub probe_stuck: AtomicBool,
}

impl Liveness {
    /// Both halves stamped within `window`, and no probe stuck.
    pub fn alive(&self, window: Duration) -> bool {
        let now = now_secs();
        let fresh = |t: u64| now.saturating_sub(t) <= window.as_secs();
        !self.probe_stuck.load(Ordering::Relaxed)
            && fresh(self.events.load(Ordering::Relaxed))
            && fresh(self.probes.load(Ordering::Relaxed))
    }
}

/// The loop's inputs.
pub struct Loop {
    /// The host.
    pub host: Host,
    /// `[gpu_health]`.
    pub config: GpuHealthConfig,
    /// The instance type, for the expected GPU count.
    pub instance_type: Option<String>,
    /// This node's name.
    pub node_name: String,
    /// Where conditions go: the kubelet's credential, connected on first
    /// publish (a node that has not joined yet keeps its state).
    pub status: Option<NodeStatus>,
    /// Shared state.
    pub state: Arc<Mutex<HealthState>>,
    /// Liveness.
    pub liveness: Arc<Liveness>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Loop {
    /// Runs until `shutdown`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        use futures::FutureExt as _;
        let shutdown = shutdown.boxed().shared();
        self.liveness.probes.store(now_secs(), Ordering::Relaxed);
        // A node without GPUs: a cheap look at the PCI bus now and then.
        loop {
            let hw = Hardware::detect(&self.host).unwrap_or_default();
            if hw.nvidia_gpus > 0 {
                break;
            }
            {
                let mut st = lock(&self.state);
                st.has_gpus = false;
                st.ready = true;
            }
            self.liveness.events.store(now_secs(), Ordering::Relaxed);
            self.liveness.probes.store(now_secs(), Ordering::Relaxed);
            tracing::debug!("no NVIDIA GPUs on the PCI bus; looking again later");
            tokio::select! {
                () = shutdown.clone() => return,
                () = tokio::time::sleep(PRESENCE_EVERY.min(Duration::from_secs(self.config.probe_interval_secs.max(1)) * 10)) => {}
            }
        }
        lock(&self.state).has_gpus = true;

        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::channel::<GpuEvent>(EVENT_QUEUE);
        let _events = events::spawn(
            self.config.clone(),
            tx,
            self.liveness.events.clone(),
            stop.clone(),
        );
        let opened: Arc<Opened> = {
            let cfg = self.config.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || probe::open(&cfg))
                    .await
                    .unwrap_or_else(|_| probe::Opened {
                        nvml: None,
                        library: crate::gpu::signals::Library::Failed(
                            "the probe thread died".into(),
                        ),
                    }),
            )
        };

        let (conditions, latest) = tokio::sync::watch::channel(None::<condition::Condition>);
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        let publisher = Publisher {
            host: self.host.clone(),
            node_name: self.node_name.clone(),
            status: self.status.take(),
            state: self.state.clone(),
        };
        let publishing = publisher.run(latest, events_rx, shutdown.clone());
        let probing = self.probe_loop(conditions, events_tx, shutdown, rx, opened);
        tokio::join!(publishing, probing);
        stop.store(true, Ordering::Relaxed);
    }

    /// Probes until `shutdown`, handing each condition and new fault's
    /// Event to the publisher: an API outage never holds up a probe (or
    /// the watchdog's pings).
    async fn probe_loop(
        self,
        conditions: tokio::sync::watch::Sender<Option<condition::Condition>>,
        events_tx: tokio::sync::mpsc::Sender<(bool, String, String)>,
        shutdown: impl std::future::Future<Output = ()>,
        mut rx: tokio::sync::mpsc::Receiver<GpuEvent>,
        opened: Arc<Opened>,
    ) {
        tokio::pin!(shutdown);
        let boot = history::boot_id(&self.host);
        let mut history = History::load(&self.host);
        let mut xids: Vec<XidEvent> = history.xids(&boot);
        let earlier = history.earlier(&boot);
        let mut trend = Trend::default();
        let mut last_replays: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
        let interval = Duration::from_secs(self.config.probe_interval_secs.max(1));
        let timeout = Duration::from_secs(self.config.probe_timeout_secs.max(1));
        let mut next_probe = Instant::now();
        let mut announced: BTreeSet<(String, Option<u32>)> = BTreeSet::new();
        let mut stuck: Option<tokio::task::JoinHandle<crate::gpu::signals::Snapshot>> = None;

        loop {
            // Wait for the next probe or an event.
            tokio::select! {
                () = &mut shutdown => break,
                Some(event) = rx.recv() => {
                    if let GpuEvent::Xid(x) = &event {
                        *lock(&self.state).xid_counts.entry(x.xid).or_default() += 1;
                        tracing::warn!(gpu = x.gpu, xid = x.xid, "GPU reported an XID");
                        xids.push(x.clone());
                    }
                }
                () = tokio::time::sleep_until(next_probe.into()) => {}
            }
            self.liveness.probes.store(now_secs(), Ordering::Relaxed);
            {
                next_probe = Instant::now() + interval;
                let hw = Hardware::detect(&self.host).unwrap_or_default();
                let expected = self
                    .instance_type
                    .as_deref()
                    .and_then(|t| crate::gpu::expected::expected(t, &self.config.expected));
                // A probe still stuck in a driver call: no second thread
                // into the driver; report the failure again meanwhile.
                if stuck.as_ref().is_some_and(|j| j.is_finished()) {
                    stuck = None;
                    self.liveness.probe_stuck.store(false, Ordering::Relaxed);
                    tracing::info!("the stuck GPU probe returned");
                }
                let it = self.instance_type.clone();
                let o = opened.clone();
                let hw_probe = hw;
                let outcome = if stuck.is_some() {
                    Err(None)
                } else {
                    let mut job = tokio::task::spawn_blocking(move || {
                        probe::probe(&o, &hw_probe, it.as_deref(), expected)
                    });
                    match tokio::time::timeout(timeout, &mut job).await {
                        Ok(r) => Ok(r),
                        Err(_) => Err(Some(job)),
                    }
                };
                let snapshot = match outcome {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the GPU probe panicked");
                        continue;
                    }
                    Err(job) => {
                        if let Some(job) = job {
                            // A driver call hangs: stop feeding the watchdog
                            // so systemd restarts the agent (the stuck thread
                            // cannot be cancelled), and say so meanwhile.
                            tracing::error!(
                                timeout_secs = timeout.as_secs(),
                                "a GPU probe did not return; the agent will be restarted by its watchdog"
                            );
                            self.liveness.probe_stuck.store(true, Ordering::Relaxed);
                            stuck = Some(job);
                        }
                        let mut failed = probe::probe(
                            &Opened {
                                nvml: None,
                                library: crate::gpu::signals::Library::Failed(format!(
                                    "an NVML call did not return within {} s",
                                    timeout.as_secs()
                                )),
                            },
                            &hw,
                            self.instance_type.as_deref(),
                            expected,
                        );
                        failed.nvml_gpus = 0;
                        failed
                    }
                };
                let now = SystemTime::now();
                update_trend(&mut trend, &mut last_replays, &snapshot, now);
                let window = self.config.xid_rate_window_secs.max(1);
                xids.retain(|x| now_secs().saturating_sub(x.at_secs) <= window.max(86_400));
                let faults = classify::classify(
                    &Observed {
                        snapshot: &snapshot,
                        xids: &xids,
                        trend: &trend,
                        earlier: &earlier,
                        now,
                    },
                    &self.config,
                );
                history.record(&boot, &xids, &faults);
                if let Err(e) = history.save(&self.host) {
                    tracing::warn!(error = %e, "cannot save the GPU history");
                }
                let cond = condition::condition(&faults, snapshot.nvml_gpus.max(snapshot.pci_gpus));
                let new: Vec<&Fault> = faults
                    .iter()
                    .filter(|f| f.class > Class::Healthy)
                    .filter(|f| announced.insert((f.reason.clone(), f.gpu)))
                    .collect();
                let events_to_send: Vec<(bool, String, String)> = new
                    .iter()
                    .map(|f| {
                        (
                            f.class >= Class::Degraded && f.class != Class::ProbeFailed,
                            event_reason(f.class).to_string(),
                            format!("{}: {} [{}]", f.reason, f.message, f.evidence),
                        )
                    })
                    .collect();
                let report = Report {
                    worst: classify::worst(&faults),
                    faults,
                    snapshot,
                };
                lock(&self.state).report = Some(report);
                for event in events_to_send {
                    if events_tx.try_send(event).is_err() {
                        tracing::warn!(
                            "too many GPU fault Events waiting for the API server; one dropped"
                        );
                    }
                }
                conditions.send_replace(Some(cond));
            }
        }
    }
}

/// Publishes the latest condition and the fault Events with the node's
/// own credential, on its own schedule: retried every
/// [`REPUBLISH_AFTER_FAILURE`] while the API server is away (only the
/// latest condition is kept), refreshed every [`REFRESH_EVERY`].
struct Publisher {
    host: Host,
    node_name: String,
    /// Connected on first use: a node that has not joined yet has no
    /// kubelet credential, and keeps its state until it has.
    status: Option<NodeStatus>,
    state: Arc<Mutex<HealthState>>,
}

impl Publisher {
    async fn run(
        mut self,
        mut latest: tokio::sync::watch::Receiver<Option<condition::Condition>>,
        mut events: tokio::sync::mpsc::Receiver<(bool, String, String)>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut published: Option<condition::Condition> = None;
        let mut published_at = Instant::now();
        let mut retry_at: Option<Instant> = None;
        loop {
            let refresh = published_at + REFRESH_EVERY;
            let wake = retry_at.map_or(refresh, |r| r.min(refresh));
            tokio::select! {
                () = &mut shutdown => return,
                changed = latest.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some(first) = events.recv() => {
                    let mut pending = vec![first];
                    while let Ok(e) = events.try_recv() {
                        pending.push(e);
                    }
                    self.send_events(pending).await;
                    continue;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let Some(cond) = latest.borrow_and_update().clone() else {
                continue;
            };
            let due = published.as_ref() != Some(&cond)
                || published_at.elapsed() >= REFRESH_EVERY
                || retry_at.is_some();
            if !due {
                continue;
            }
            let ok = self.publish(&cond).await;
            {
                let mut st = lock(&self.state);
                // READY=1 after the first probe and publish attempt.
                st.ready = true;
                if ok {
                    st.last_publish = Some(SystemTime::now());
                }
            }
            if ok {
                published = Some(cond);
                published_at = Instant::now();
                retry_at = None;
            } else {
                retry_at = Some(Instant::now() + REPUBLISH_AFTER_FAILURE);
            }
        }
    }

    async fn connect(&mut self) -> Option<&mut NodeStatus> {
        if self.status.is_none() {
            // The loop is the retry: every answer comes back at once.
            match crate::kube::client::client_with(
                &self.host,
                crate::kube::client::Credential::Node,
                crate::kube::client::Retries::Caller,
            )
            .await
            {
                Ok(client) => self.status = Some(NodeStatus::new(client, &self.node_name)),
                Err(e) => {
                    tracing::debug!(error = %e, "no kubelet credential yet; the GPU condition waits");
                }
            }
        }
        self.status.as_mut()
    }

    async fn publish(&mut self, cond: &condition::Condition) -> bool {
        let Some(status) = self.connect().await else {
            return false;
        };
        let c = Published {
            type_: cond.type_.into(),
            status: cond.status.into(),
            reason: cond.reason.into(),
            message: cond.message.clone(),
        };
        match status.publish(&c).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish the GPU condition; keeping the latest state and retrying");
                false
            }
        }
    }

    async fn send_events(&mut self, pending: Vec<(bool, String, String)>) {
        let Some(status) = self.connect().await else {
            tracing::debug!(
                count = pending.len(),
                "no kubelet credential yet; GPU fault Events not sent"
            );
            return;
        };
        for (warning, reason, message) in pending {
            if let Err(e) = status.event(warning, &reason, &message).await {
                tracing::warn!(error = %e, "cannot create an Event for a GPU fault");
            }
        }
    }
}

/// The Event reason of a class.
fn event_reason(class: Class) -> &'static str {
    match class {
        Class::Healthy | Class::Informational => "GPUFaultRecorded",
        Class::Degraded => "GPUDegraded",
        Class::ProbeFailed => "GPUProbeFailed",
        Class::Reboot => "GPUNeedsReboot",
        Class::Replace => "GPUNeedsReplacement",
    }
}

/// Slowdowns: since when; PCIe replays: per minute since the last probe.
fn update_trend(
    trend: &mut Trend,
    last: &mut BTreeMap<u32, (u64, Instant)>,
    snapshot: &crate::gpu::signals::Snapshot,
    now: SystemTime,
) {
    for g in &snapshot.gpus {
        match g.throttle_reasons {
            Signal::Value(bits) if bits & classify::HW_SLOWDOWN_BITS != 0 => {
                trend.slowdown_since.entry(g.index).or_insert(now);
            }
            _ => {
                trend.slowdown_since.remove(&g.index);
            }
        }
        if let Signal::Value(count) = g.pcie_replays {
            if let Some((before, at)) = last.get(&g.index) {
                let secs = at.elapsed().as_secs().max(1);
                let per_minute = count.saturating_sub(*before).saturating_mul(60) / secs;
                trend.pcie_replays_per_minute.insert(g.index, per_minute);
            }
            last.insert(g.index, (count, Instant::now()));
        }
    }
}
