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
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
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
                () = &mut shutdown => return,
                () = tokio::time::sleep(PRESENCE_EVERY.min(Duration::from_secs(self.config.probe_interval_secs.max(1)) * 10)) => {}
            }
        }
        lock(&self.state).has_gpus = true;

        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<GpuEvent>(EVENT_QUEUE);
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

        let boot = history::boot_id(&self.host);
        let mut history = History::load(&self.host);
        let mut xids: Vec<XidEvent> = history.xids(&boot);
        let earlier = history.earlier(&boot);
        let mut trend = Trend::default();
        let mut last_replays: BTreeMap<u32, (u64, Instant)> = BTreeMap::new();
        let mut announced: BTreeSet<(String, Option<u32>)> = BTreeSet::new();
        let mut published: Option<condition::Condition> = None;
        let mut published_at = Instant::now();
        let mut publish_pending = true;
        let interval = Duration::from_secs(self.config.probe_interval_secs.max(1));
        let timeout = Duration::from_secs(self.config.probe_timeout_secs.max(1));
        let mut next_probe = Instant::now();

        loop {
            // Wait for the next probe, an event, or a publish retry.
            let wake = if publish_pending {
                next_probe.min(Instant::now() + REPUBLISH_AFTER_FAILURE)
            } else {
                next_probe
            };
            let probe_now;
            tokio::select! {
                () = &mut shutdown => break,
                Some(event) = rx.recv() => {
                    if let GpuEvent::Xid(x) = &event {
                        *lock(&self.state).xid_counts.entry(x.xid).or_default() += 1;
                        tracing::warn!(gpu = x.gpu, xid = x.xid, "GPU reported an XID");
                        xids.push(x.clone());
                    }
                    probe_now = true;
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    probe_now = Instant::now() >= next_probe;
                }
            }
            self.liveness.probes.store(now_secs(), Ordering::Relaxed);
            if probe_now {
                next_probe = Instant::now() + interval;
                let hw = Hardware::detect(&self.host).unwrap_or_default();
                let expected = self
                    .instance_type
                    .as_deref()
                    .and_then(|t| crate::gpu::expected::expected(t, &self.config.expected));
                let it = self.instance_type.clone();
                let o = opened.clone();
                let job = tokio::task::spawn_blocking(move || {
                    probe::probe(&o, &hw, it.as_deref(), expected)
                });
                let snapshot = match tokio::time::timeout(timeout, job).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "the GPU probe panicked");
                        continue;
                    }
                    Err(_) => {
                        // A driver call hangs: stop feeding the watchdog so
                        // systemd restarts the agent (the stuck thread cannot
                        // be cancelled), and say so meanwhile.
                        tracing::error!(
                            timeout_secs = timeout.as_secs(),
                            "a GPU probe did not return; the agent will be restarted by its watchdog"
                        );
                        self.liveness.probe_stuck.store(true, Ordering::Relaxed);
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
                if published.as_ref() != Some(&cond) || published_at.elapsed() >= REFRESH_EVERY {
                    publish_pending = true;
                }
                published = Some(cond);
                if let Some(status) = &self.status {
                    for (warning, reason, message) in events_to_send {
                        if let Err(e) = status.event(warning, &reason, &message).await {
                            tracing::warn!(error = %e, "cannot create an Event for a GPU fault");
                        }
                    }
                }
            }
            if publish_pending && self.status.is_none() {
                match crate::kube::client::client(&self.host, crate::kube::client::Credential::Node)
                    .await
                {
                    Ok(client) => self.status = Some(NodeStatus::new(client, &self.node_name)),
                    Err(e) => {
                        tracing::debug!(error = %e, "no kubelet credential yet; the GPU condition waits")
                    }
                }
            }
            if publish_pending && let Some(cond) = &published {
                let ok = match &mut self.status {
                    Some(status) => {
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
                    None => false,
                };
                if ok {
                    publish_pending = false;
                    published_at = Instant::now();
                    lock(&self.state).last_publish = Some(SystemTime::now());
                }
                lock(&self.state).ready = true;
            }
        }
        stop.store(true, Ordering::Relaxed);
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
