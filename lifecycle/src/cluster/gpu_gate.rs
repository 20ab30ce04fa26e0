//! The pre-join gate: before `kubeadm join` (or `init`), a node with NVIDIA
//! GPUs is checked once; one whose GPUs need a reboot or a replacement
//! registers with the taint `hpk8s.io/gpu-unhealthy=<reason>:NoSchedule`,
//! so it is in the cluster, visible and unused until remediation or a
//! person acts (a kubelet may taint itself only at registration).
//! `gpu_health.gate = "warn"` only logs it; `off` does not probe.

use crate::config::{Config, GateMode};
use crate::gpu::check::{self, Report};
use crate::gpu::classify::Class;
use crate::hardware::Hardware;
use crate::host::Host;
use crate::identity::NodeIdentity;
use crate::values::taint::{Effect, Taint};

/// The taint key a gated node registers with.
pub const TAINT_KEY: &str = "hpk8s.io/gpu-unhealthy";

/// What the gate decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Taints to register with (empty: none).
    pub taints: Vec<Taint>,
    /// What to say in the plan.
    pub note: Option<String>,
}

/// Checks this node's GPUs when it has any (by PCI) and the gate is on.
pub fn decide(host: &Host, config: &Config, identity: &NodeIdentity) -> Gate {
    let none = |note: Option<String>| Gate {
        taints: Vec::new(),
        note,
    };
    let mode = config.gpu_health.gate;
    if mode == GateMode::Off {
        return none(Some("GPU gate: off (gpu_health.gate)".into()));
    }
    let hardware = Hardware::detect(host).unwrap_or_default();
    if hardware.nvidia_gpus == 0 {
        return none(None);
    }
    let report = check::check(host, &config.gpu_health, identity.instance_type.clone());
    from_report(&report, mode)
}

/// The gate's decision for a check's `report`.
pub fn from_report(report: &Report, mode: GateMode) -> Gate {
    let blocking = report.blocking();
    let Some(worst) = blocking.first() else {
        let what = match report.worst {
            Class::ProbeFailed => {
                "the GPUs could not be checked (probe failed): joining untainted; the node agent reports it"
            }
            Class::Degraded => "GPUs degraded: joining untainted; the node agent reports it",
            _ => "GPUs healthy",
        };
        return Gate {
            taints: Vec::new(),
            note: Some(format!("GPU gate: {what}")),
        };
    };
    let summary: Vec<String> = blocking
        .iter()
        .map(|f| match f.gpu {
            Some(g) => format!("GPU {g} {} ({})", f.reason, f.class.as_str()),
            None => format!("{} ({})", f.reason, f.class.as_str()),
        })
        .collect();
    match mode {
        GateMode::Gate => {
            tracing::warn!(faults = %summary.join(", "), "GPU gate: joining with a NoSchedule taint");
            Gate {
                taints: vec![Taint {
                    key: TAINT_KEY.into(),
                    value: label_value(&worst.reason),
                    effect: Effect::NoSchedule,
                }],
                note: Some(format!(
                    "GPU gate: registering with {TAINT_KEY}={}:NoSchedule ({})",
                    label_value(&worst.reason),
                    summary.join(", ")
                )),
            }
        }
        GateMode::Warn | GateMode::Off => {
            tracing::warn!(faults = %summary.join(", "), "GPU gate (warn): joining untainted although GPUs need action");
            Gate {
                taints: Vec::new(),
                note: Some(format!("GPU gate (warn only): {}", summary.join(", "))),
            }
        }
    }
}

/// A reason as a taint value (at most 63 label characters); remediation's
/// taints use it too.
pub(crate) fn label_value(reason: &str) -> String {
    let mut v: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(['-', '_', '.']) {
        v.pop();
    }
    v
}
