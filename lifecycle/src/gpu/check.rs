//! One health check of this node's GPUs (`hpk8s gpu-check`, the pre-join
//! gate): probe on a thread of its own with a deadline (a hung driver call
//! is `probe-failed`, not a hang), classify with this boot's XIDs and the
//! earlier boots' faults, and report.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::classify::{self, Class, Fault, Observed, Trend};
use super::history::{self, History};
use super::probe;
use super::signals::{Library, Snapshot};
use crate::config::GpuHealthConfig;
use crate::error::class::classify;
use crate::hardware::Hardware;
use crate::host::Host;

/// What one check found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst class found.
    pub worst: Class,
    /// The faults, worst first.
    pub faults: Vec<Fault>,
    /// What the probe saw.
    pub snapshot: Snapshot,
}

impl Report {
    /// Whether the node has NVIDIA GPUs at all (by PCI or NVML).
    pub fn has_gpus(&self) -> bool {
        self.snapshot.pci_gpus > 0 || self.snapshot.nvml_gpus > 0
    }

    /// The faults that keep the node from taking work (reboot, replace).
    pub fn blocking(&self) -> Vec<&Fault> {
        self.faults
            .iter()
            .filter(|f| matches!(f.class, Class::Reboot | Class::Replace))
            .collect()
    }
}

/// Probes with a deadline: the probe runs on its own thread; past
/// `probe_timeout_secs` the snapshot says the library hung (the thread is
/// left to finish or die with the process).
pub fn probe_with_deadline(
    config: &GpuHealthConfig,
    hardware: Hardware,
    instance_type: Option<String>,
) -> Snapshot {
    let (tx, rx) = mpsc::channel();
    let cfg = config.clone();
    let it = instance_type.clone();
    let expected = instance_type
        .as_deref()
        .and_then(|t| super::expected::expected(t, &config.expected));
    let spawned = std::thread::Builder::new()
        .name("gpu-probe".into())
        .spawn(move || {
            let opened = probe::open(&cfg);
            let snap = probe::probe(&opened, &hardware, it.as_deref(), expected);
            let _ = tx.send(snap);
        });
    let failed = |why: String| Snapshot {
        library: Library::Failed(why),
        pci_gpus: hardware.nvidia_gpus,
        efa_devices: hardware.efa_devices,
        instance_type: instance_type.clone(),
        expected_gpus: expected.map(|(g, _)| g),
        expected_efa: expected.map(|(_, e)| e),
        nvml_gpus: 0,
        gpus: Vec::new(),
        duration_us: 0,
    };
    if let Err(e) = spawned {
        return failed(format!("cannot start the probe thread: {e}"));
    }
    let limit = Duration::from_secs(config.probe_timeout_secs.max(1));
    match rx.recv_timeout(limit) {
        Ok(s) => s,
        Err(_) => failed(format!(
            "an NVML call did not return within {} s (gpu_health.probe_timeout_secs)",
            limit.as_secs()
        )),
    }
}

/// One check: probe, then classify with this boot's XIDs and the earlier
/// boots' faults from the history.
pub fn check(host: &Host, config: &GpuHealthConfig, instance_type: Option<String>) -> Report {
    let hardware = Hardware::detect(host).unwrap_or_default();
    let snapshot = probe_with_deadline(config, hardware, instance_type);
    let history = History::load(host);
    let boot = history::boot_id(host);
    let xids = history.xids(&boot);
    let earlier = history.earlier(&boot);
    let faults = classify::classify(
        &Observed {
            snapshot: &snapshot,
            xids: &xids,
            trend: &Trend::default(),
            earlier: &earlier,
            now: SystemTime::now(),
        },
        config,
    );
    Report {
        worst: classify::worst(&faults),
        faults,
        snapshot,
    }
}

/// The check's verdict as an error (its exit code), when the GPUs are not
/// healthy. The report itself is printed by the caller first.
#[derive(Debug, thiserror::Error)]
pub enum Verdict {
    /// A GPU needs the instance replaced.
    #[error("GPU check: {0}")]
    NeedsReplacement(String),
    /// A GPU needs a reset or a reboot.
    #[error("GPU check: {0}")]
    NeedsReboot(String),
    /// hpk8s could not look.
    #[error("GPU check: {0}")]
    ProbeFailed(String),
    /// The GPUs work, degraded.
    #[error("GPU check: {0}")]
    Degraded(String),
}

classify!(Verdict {
    NeedsReplacement { .. } => Host "gpu_needs_replacement";
    NeedsReboot { .. } => Host "gpu_needs_reboot";
    ProbeFailed { .. } => Unavailable "gpu_probe_failed";
    Degraded { .. } => Verification "gpu_degraded";
});

impl Verdict {
    /// The verdict of `report`, `None` when healthy or informational only.
    pub fn of(report: &Report) -> Option<Verdict> {
        let of_class = |c: Class| -> Vec<String> {
            report
                .faults
                .iter()
                .filter(|f| f.class == c)
                .map(|f| match f.gpu {
                    Some(g) => format!("GPU {g} {}", f.reason),
                    None => f.reason.clone(),
                })
                .collect()
        };
        let summary = |c: Class| {
            let list = of_class(c);
            format!("{} ({})", c.as_str(), list.join(", "))
        };
        Some(match report.worst {
            Class::Replace => Verdict::NeedsReplacement(summary(Class::Replace)),
            Class::Reboot => Verdict::NeedsReboot(summary(Class::Reboot)),
            Class::ProbeFailed => Verdict::ProbeFailed(summary(Class::ProbeFailed)),
            Class::Degraded => Verdict::Degraded(summary(Class::Degraded)),
            Class::Healthy | Class::Informational => return None,
        })
    }
}

/// A table for people: one line per GPU, then the faults.
pub fn render_text(report: &Report) -> String {
    use std::fmt::Write as _;
    let s = &report.snapshot;
    let mut out = String::new();
    let library = match &s.library {
        Library::Loaded(v) => format!("driver {v}"),
        Library::NoDriver(why) => format!("no NVIDIA driver ({why})"),
        Library::Failed(why) => format!("NVML failed: {why}"),
    };
    if !report.has_gpus() && !matches!(s.library, Library::Failed(_)) {
        let _ = writeln!(
            out,
            "no NVIDIA GPUs on this node ({library}); nothing to check"
        );
        return out;
    }
    let expected = s
        .expected_gpus
        .map(|e| {
            format!(
                ", {} expects {e}",
                s.instance_type.as_deref().unwrap_or("the instance type")
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} GPU(s) by NVML, {} on the PCI bus{expected}; {library}; probe {} ms",
        s.nvml_gpus,
        s.pci_gpus,
        s.duration_us / 1000
    );
    let _ = writeln!(
        out,
        "{:<4} {:<26} {:<14} {:>5} {:>8}  UUID",
        "GPU", "NAME", "BUS", "TEMP", "ECC-DBE"
    );
    for g in &s.gpus {
        let temp = g
            .temperature_c
            .value()
            .map_or("-".into(), |t| format!("{t}C"));
        let dbe = g
            .ecc
            .value()
            .map_or("-".into(), |e| e.volatile_uncorrected.to_string());
        let _ = writeln!(
            out,
            "{:<4} {:<26} {:<14} {:>5} {:>8}  {}",
            g.index,
            g.name
                .as_deref()
                .unwrap_or(if g.lost { "(lost)" } else { "-" }),
            g.pci_bus_id
                .as_deref()
                .map(|b| b.trim_start_matches("0000"))
                .unwrap_or("-"),
            temp,
            dbe,
            g.uuid.as_deref().unwrap_or("-")
        );
    }
    if report.faults.is_empty() {
        let _ = writeln!(out, "healthy");
    } else {
        let _ = writeln!(
            out,
            "{} ({} fault(s)):",
            report.worst.as_str(),
            report.faults.len()
        );
        for f in &report.faults {
            let gpu = f.gpu.map(|g| format!("GPU {g} ")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<13} {gpu}{}: {} [{}]",
                f.class.as_str(),
                f.reason,
                f.message,
                f.evidence
            );
        }
    }
    out
}
