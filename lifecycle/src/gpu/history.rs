//! What the GPU checks saw in this boot and in earlier ones, kept in
//! `/var/lib/hpk8s/gpu-history.json`: the XIDs of this boot (events are
//! gone once read, so a later `hpk8s gpu-check` learns them here) and the
//! reboot-class faults of each boot, so one that comes back after a reboot
//! is classified `replace`. `hpk8s gpu-check --clear-history` empties it
//! (after a GPU or the instance was replaced).

use serde::{Deserialize, Serialize};

use super::classify::{Class, Fault};
pub use super::record::{PastFault, XidEvent};
use crate::host::{FileMode, FsError, Host};

/// The file.
pub const HISTORY: &str = "/var/lib/hpk8s/gpu-history.json";
/// The kernel's id of this boot.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// Boots kept.
const BOOTS_KEPT: usize = 8;
/// XIDs kept per boot (the newest).
const XIDS_KEPT: usize = 1000;
/// The most read.
const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// One boot's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boot {
    /// `boot_id`.
    pub boot_id: String,
    /// Reboot-class faults seen.
    pub faults: Vec<PastFault>,
    /// XIDs seen.
    pub xids: Vec<XidEvent>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Oldest first.
    pub boots: Vec<Boot>,
}

impl History {
    /// Loads the history (empty when absent or unreadable: a damaged file
    /// never stops a health check; it is rewritten on the next record).
    pub fn load(host: &Host) -> History {
        match host.read_opt_limited(HISTORY, MAX_BYTES) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = HISTORY, error = %e, "ignoring an unreadable GPU history");
                History::default()
            }),
            Ok(None) => History::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the GPU history");
                History::default()
            }
        }
    }

    /// This boot's record, created when missing.
    pub fn current(&mut self, boot_id: &str) -> &mut Boot {
        if self.boots.last().is_none_or(|b| b.boot_id != boot_id) {
            self.boots.push(Boot {
                boot_id: boot_id.to_string(),
                ..Boot::default()
            });
            let excess = self.boots.len().saturating_sub(BOOTS_KEPT);
            self.boots.drain(..excess);
        }
        let last = self.boots.len() - 1;
        &mut self.boots[last]
    }

    /// XIDs of this boot.
    pub fn xids(&self, boot_id: &str) -> Vec<XidEvent> {
        self.boots
            .iter()
            .find(|b| b.boot_id == boot_id)
            .map(|b| b.xids.clone())
            .unwrap_or_default()
    }

    /// Reboot-class faults of earlier boots.
    pub fn earlier(&self, boot_id: &str) -> Vec<PastFault> {
        self.boots
            .iter()
            .filter(|b| b.boot_id != boot_id)
            .flat_map(|b| b.faults.iter().cloned())
            .collect()
    }

    /// Records this boot's XIDs and its reboot-class faults (a fault
    /// already `replace` because it recurred is recorded as seen too).
    pub fn record(&mut self, boot_id: &str, xids: &[XidEvent], faults: &[Fault]) {
        let boot = self.current(boot_id);
        for x in xids {
            if !boot.xids.contains(x) {
                boot.xids.push(x.clone());
            }
        }
        let excess = boot.xids.len().saturating_sub(XIDS_KEPT);
        boot.xids.drain(..excess);
        for f in faults
            .iter()
            .filter(|f| matches!(f.class, Class::Reboot | Class::Replace))
        {
            let past = PastFault {
                reason: f.reason.clone(),
                uuid: f.uuid.clone(),
            };
            if !boot.faults.contains(&past) {
                boot.faults.push(past);
            }
        }
    }

    /// Writes the history (0644: no secrets, operators read it).
    pub fn save(&self, host: &Host) -> Result<(), FsError> {
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        host.write_atomic(HISTORY, &text, FileMode::CONFIG)
    }
}

/// This boot's id (`unknown` where the kernel does not say: then every run
/// looks like the same boot, and nothing is escalated by recurrence).
pub fn boot_id(host: &Host) -> String {
    host.read_string_opt(BOOT_ID)
        .ok()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Empties the history.
pub fn clear(host: &Host) -> Result<(), FsError> {
    History::default().save(host)
}
