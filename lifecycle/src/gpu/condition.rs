//! The Node condition that reports GPU health, in Kubernetes' own terms:
//! type `GPUHealthy`, status `True` (healthy, or informational faults
//! only), `False` (degraded, needs a reboot, needs replacing) or `Unknown`
//! (hpk8s could not look), a reason per class and a message naming the
//! GPUs and the evidence. Whoever publishes it keeps `lastTransitionTime`
//! when only the reason or message changed.

use serde::Serialize;

use super::classify::{Class, Fault};

/// The condition type.
pub const GPU_HEALTHY: &str = "GPUHealthy";
/// The longest message published (Node status stays small).
const MAX_MESSAGE: usize = 1024;

/// A condition's content (times are the publisher's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// `GPUHealthy`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// One per class: `GPUsHealthy`, `GPUDegraded`, `GPUNeedsReboot`,
    /// `GPUNeedsReplacement`, `GPUProbeFailed`, `NoGPUs`.
    pub reason: &'static str,
    /// GPUs and evidence.
    pub message: String,
}

/// The condition for `faults` (worst first) on a node with `gpus` GPUs.
pub fn condition(faults: &[Fault], gpus: u32) -> Condition {
    let worst = faults
        .iter()
        .map(|f| f.class)
        .max()
        .unwrap_or(Class::Healthy);
    let (status, reason) = match worst {
        Class::Healthy | Class::Informational if gpus == 0 => ("True", "NoGPUs"),
        Class::Healthy | Class::Informational => ("True", "GPUsHealthy"),
        Class::Degraded => ("False", "GPUDegraded"),
        Class::Reboot => ("False", "GPUNeedsReboot"),
        Class::Replace => ("False", "GPUNeedsReplacement"),
        Class::ProbeFailed => ("Unknown", "GPUProbeFailed"),
    };
    let relevant: Vec<String> = faults
        .iter()
        .filter(|f| f.class == worst || worst <= Class::Informational)
        .map(|f| {
            let gpu = match (&f.gpu, &f.uuid) {
                (Some(i), Some(u)) => format!("GPU {i} ({u}) "),
                (Some(i), None) => format!("GPU {i} "),
                _ => String::new(),
            };
            format!("{gpu}{}: {}", f.reason, f.evidence)
        })
        .collect();
    let mut message = match (worst, relevant.is_empty()) {
        (_, true) if gpus == 0 => "no NVIDIA GPUs on this node".to_string(),
        (_, true) => format!("{gpus} GPU(s) healthy"),
        (Class::Healthy | Class::Informational, false) => {
            format!("{gpus} GPU(s) healthy; recorded: {}", relevant.join("; "))
        }
        (_, false) => relevant.join("; "),
    };
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    Condition {
        type_: GPU_HEALTHY,
        status,
        reason,
        message,
    }
}
