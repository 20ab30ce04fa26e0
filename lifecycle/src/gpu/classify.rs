//! From signals to faults. Each fault has a class (what a cluster should
//! do about it), a stable machine-readable reason (`xid-79`,
//! `row-remap-pending`, `gpu-count-7-of-8`), the GPU, the evidence and a
//! message. The default policy is NVIDIA's XID catalog and DCGM's limits
//! (`[gpu_health]` changes it):
//!
//! - `informational`: application-level XIDs, corrected ECC; never acted
//!   on, escalated to `degraded` only by rate;
//! - `degraded`: sustained hardware slowdown, PCIe below its width or
//!   replaying, EFA adapters missing, XID floods;
//! - `reboot`: uncorrected ECC, pending row remap or page retirement, a
//!   lost GPU, NVLink down, GPUs missing, reset-class XIDs, no driver with
//!   NVIDIA GPUs on the bus;
//! - `replace`: remap failure, retired pages at the limit, XID 79/54/151,
//!   and a reboot-class fault that came back after a reboot;
//! - `probe-failed`: hpk8s could not look (NVML failed or hung). Never a
//!   statement about the hardware.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use super::record::{PastFault, XidEvent};
use super::signals::{Library, Signal, Snapshot};
use crate::config::GpuHealthConfig;

/// Throttle bits that are hardware slowdowns (not `SW_POWER_CAP`, which is
/// normal under load): HW_SLOWDOWN, HW_THERMAL_SLOWDOWN, HW_POWER_BRAKE.
pub const HW_SLOWDOWN_BITS: u64 = 0x8 | 0x40 | 0x80;

/// What a cluster should do about a fault, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// Nothing found.
    Healthy,
    /// Recorded; no action.
    Informational,
    /// Works, slower or less redundant: prefer other nodes.
    Degraded,
    /// hpk8s could not look: never acted on as a hardware fault.
    ProbeFailed,
    /// Needs a GPU reset or a reboot.
    Reboot,
    /// Needs the instance replaced.
    Replace,
}

impl Class {
    /// The kebab-case name used in output, labels and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Healthy => "healthy",
            Class::Informational => "informational",
            Class::Degraded => "degraded",
            Class::ProbeFailed => "probe-failed",
            Class::Reboot => "reboot",
            Class::Replace => "replace",
        }
    }
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    /// What to do about it.
    pub class: Class,
    /// Stable machine-readable reason.
    pub reason: String,
    /// The GPU's index, when the fault is one GPU's.
    pub gpu: Option<u32>,
    /// Its UUID, when known.
    pub uuid: Option<String>,
    /// The evidence: counter values, the XID and its time.
    pub evidence: String,
    /// What it means, for people.
    pub message: String,
}

/// What only a loop that keeps probing can know: since when a condition
/// has held, and how fast a counter grows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trend {
    /// Since when each GPU has been in hardware slowdown (by index).
    pub slowdown_since: BTreeMap<u32, SystemTime>,
    /// PCIe replays per minute over the last interval (by index).
    pub pcie_replays_per_minute: BTreeMap<u32, u64>,
}

/// Everything classification looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The probe.
    pub snapshot: &'a Snapshot,
    /// XIDs of this boot.
    pub xids: &'a [XidEvent],
    /// Durations and rates (empty for a one-shot check).
    pub trend: &'a Trend,
    /// Reboot-class faults of earlier boots.
    pub earlier: &'a [PastFault],
    /// Now.
    pub now: SystemTime,
}

/// The faults of `observed` under `policy`, worst first.
pub fn classify(observed: &Observed<'_>, policy: &GpuHealthConfig) -> Vec<Fault> {
    let mut out = Vec::new();
    let s = observed.snapshot;
    let mut push = |class,
                    reason: String,
                    gpu: Option<(u32, Option<String>)>,
                    evidence: String,
                    message: String| {
        let (gpu, uuid) = gpu.map_or((None, None), |(i, u)| (Some(i), u));
        out.push(Fault {
            class,
            reason,
            gpu,
            uuid,
            evidence,
            message,
        });
    };
    match &s.library {
        Library::NoDriver(detail) if s.pci_gpus > 0 => push(
            Class::Reboot,
            "no-driver".into(),
            None,
            format!("{} NVIDIA GPU(s) on the PCI bus; {detail}", s.pci_gpus),
            "NVIDIA GPUs are present but no NVIDIA driver is loaded: install or load the driver, then reboot".into(),
        ),
        Library::NoDriver(_) => {}
        Library::Failed(detail) => push(
            Class::ProbeFailed,
            "nvml-failed".into(),
            None,
            detail.clone(),
            "hpk8s could not read the GPUs through NVML; this says nothing about the hardware".into(),
        ),
        Library::Loaded(_) => {}
    }
    if matches!(s.library, Library::Loaded(_)) {
        let expected = s.expected_gpus.unwrap_or(0).max(s.pci_gpus);
        if expected > s.nvml_gpus {
            let source = if s.expected_gpus.unwrap_or(0) >= s.pci_gpus {
                format!(
                    "{} has {expected}",
                    s.instance_type.as_deref().unwrap_or("the instance type")
                )
            } else {
                format!("the PCI bus shows {expected}")
            };
            push(
                Class::Reboot,
                format!("gpu-count-{}-of-{expected}", s.nvml_gpus),
                None,
                format!("NVML counts {} GPU(s); {source}", s.nvml_gpus),
                "GPUs are missing: reboot (a GPU that stays missing needs the instance replaced)"
                    .into(),
            );
        }
    }
    if let Some(efa) = s.expected_efa
        && s.efa_devices < efa
    {
        push(
            Class::Degraded,
            format!("efa-count-{}-of-{efa}", s.efa_devices),
            None,
            format!(
                "{} EFA adapter(s) seen; {} has {efa}",
                s.efa_devices,
                s.instance_type.as_deref().unwrap_or("the instance type")
            ),
            "EFA adapters are missing: collective communication is slower or fails".into(),
        );
    }

    for g in &s.gpus {
        let id = || Some((g.index, g.uuid.clone()));
        if let Some(e) = &g.probe_error {
            push(
                Class::ProbeFailed,
                "gpu-probe-error".into(),
                id(),
                e.clone(),
                format!("hpk8s could not read GPU {}", g.index),
            );
            continue;
        }
        if g.lost {
            push(
                Class::Reboot,
                "gpu-lost".into(),
                id(),
                "NVML answers GPU_IS_LOST".into(),
                format!("GPU {} has fallen off the bus", g.index),
            );
            continue;
        }
        if let Signal::Value(ecc) = &g.ecc
            && ecc.volatile_uncorrected > 0
        {
            push(
                Class::Reboot,
                "ecc-uncorrected".into(),
                id(),
                format!(
                    "volatile uncorrected ECC errors: {}",
                    ecc.volatile_uncorrected
                ),
                format!(
                    "GPU {} had uncorrectable (double-bit) memory errors: reset or reboot",
                    g.index
                ),
            );
        }
        if let Signal::Value(true) = g.retired_pages_pending {
            push(
                Class::Reboot,
                "retired-pages-pending".into(),
                id(),
                "pages pending retirement".into(),
                format!(
                    "GPU {} has pages waiting to be retired at the next reboot",
                    g.index
                ),
            );
        }
        if let Signal::Value(n) = g.retired_pages
            && n >= policy.retired_pages_limit
        {
            push(
                Class::Replace,
                "retired-pages-limit".into(),
                id(),
                format!("retired pages: {n} (limit {})", policy.retired_pages_limit),
                format!(
                    "GPU {} has retired {n} memory pages: replace the instance",
                    g.index
                ),
            );
        }
        if let Signal::Value(r) = g.row_remap {
            if r.failure {
                push(
                    Class::Replace,
                    "row-remap-failure".into(),
                    id(),
                    format!(
                        "remapped rows: {} uncorrectable, failure flagged",
                        r.uncorrected
                    ),
                    format!(
                        "GPU {} failed to remap a memory row: replace the instance",
                        g.index
                    ),
                );
            } else if r.pending {
                push(
                    Class::Reboot,
                    "row-remap-pending".into(),
                    id(),
                    format!("remapped rows pending ({} uncorrectable)", r.uncorrected),
                    format!("GPU {} has a memory row remap waiting for a reset", g.index),
                );
            }
        }
        if let Signal::Value(links) = &g.nvlink
            && !links.inactive.is_empty()
        {
            push(
                Class::Reboot,
                "nvlink-down".into(),
                id(),
                format!("inactive NVLinks {:?} of {}", links.inactive, links.count),
                format!("GPU {} has NVLinks down", g.index),
            );
        }
        if let Signal::Value(p) = g.pcie
            && p.max_width > 0
            && p.width < p.max_width
        {
            push(
                Class::Degraded,
                format!("pcie-width-{}-of-{}", p.width, p.max_width),
                id(),
                format!(
                    "PCIe x{} (max x{}), gen {} (max {})",
                    p.width, p.max_width, p.generation, p.max_generation
                ),
                format!("GPU {} runs its PCIe link below its width", g.index),
            );
        }
        if let Some(rate) = observed.trend.pcie_replays_per_minute.get(&g.index)
            && *rate > policy.pcie_replays_per_minute
        {
            push(
                Class::Degraded,
                "pcie-replays".into(),
                id(),
                format!(
                    "{rate} PCIe replays/min (limit {})",
                    policy.pcie_replays_per_minute
                ),
                format!("GPU {}'s PCIe link keeps replaying", g.index),
            );
        }
        if let Signal::Value(bits) = g.throttle_reasons
            && bits & HW_SLOWDOWN_BITS != 0
        {
            let since = observed.trend.slowdown_since.get(&g.index).copied();
            let held = since
                .and_then(|t| observed.now.duration_since(t).ok())
                .unwrap_or_default();
            let (class, reason) = if held >= Duration::from_secs(policy.slowdown_sustained_secs) {
                (Class::Degraded, "hw-slowdown")
            } else {
                (Class::Informational, "hw-slowdown-observed")
            };
            push(
                class,
                reason.into(),
                id(),
                format!("clock event reasons 0x{bits:x} for {} s", held.as_secs()),
                format!(
                    "GPU {} is slowed down by the hardware (thermal or power brake)",
                    g.index
                ),
            );
        }
    }

    // XIDs of this boot, by NVIDIA's catalog (as configured).
    let mut informational_by_gpu: BTreeMap<u32, Vec<&XidEvent>> = BTreeMap::new();
    let window = policy.xid_rate_window_secs;
    let now_secs = observed
        .now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut seen: BTreeMap<(u32, u64), &XidEvent> = BTreeMap::new();
    for x in observed.xids {
        seen.insert((x.gpu, x.xid), x);
        let listed = |list: &[u64]| list.contains(&x.xid);
        if !(listed(&policy.xid_replace)
            || listed(&policy.xid_reboot)
            || listed(&policy.xid_degraded))
            && now_secs.saturating_sub(x.at_secs) <= window
        {
            informational_by_gpu.entry(x.gpu).or_default().push(x);
        }
    }
    for ((gpu, xid), x) in seen {
        let class = if policy.xid_replace.contains(&xid) {
            Class::Replace
        } else if policy.xid_reboot.contains(&xid) {
            Class::Reboot
        } else if policy.xid_degraded.contains(&xid) {
            Class::Degraded
        } else {
            Class::Informational
        };
        push(
            class,
            format!("xid-{xid}"),
            Some((gpu, x.uuid.clone())),
            format!(
                "XID {xid} at {}",
                crate::values::time::rfc3339(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(x.at_secs)
                )
            ),
            format!("GPU {gpu} reported XID {xid}"),
        );
    }
    for (gpu, events) in informational_by_gpu {
        if events.len() >= usize::try_from(policy.xid_rate_limit).unwrap_or(usize::MAX) {
            let uuid = events.first().and_then(|e| e.uuid.clone());
            push(
                Class::Degraded,
                "xid-rate".into(),
                Some((gpu, uuid)),
                format!(
                    "{} application XIDs within {} s (limit {})",
                    events.len(),
                    window,
                    policy.xid_rate_limit
                ),
                format!("GPU {gpu} reports application faults at an abnormal rate"),
            );
        }
    }

    // A reboot-class fault that was there in an earlier boot too: replace.
    for f in &mut out {
        if f.class == Class::Reboot
            && observed
                .earlier
                .iter()
                .any(|p| p.reason == f.reason && p.uuid.is_some() && p.uuid == f.uuid)
        {
            f.class = Class::Replace;
            f.message = format!(
                "{}; it came back after a reboot: replace the instance",
                f.message
            );
        }
    }
    out.sort_by(|a, b| {
        b.class
            .cmp(&a.class)
            .then(a.gpu.cmp(&b.gpu))
            .then(a.reason.cmp(&b.reason))
    });
    out
}

/// The worst class among `faults` ([`Class::Healthy`] when none).
pub fn worst(faults: &[Fault]) -> Class {
    faults
        .iter()
        .map(|f| f.class)
        .max()
        .unwrap_or(Class::Healthy)
}
