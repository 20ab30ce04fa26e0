//! What is remembered of GPU faults: XIDs (events, gone once read) and
//! the reboot-class faults of a boot. Plain data shared by classification
//! and the history file.

use serde::{Deserialize, Serialize};

/// An XID seen this boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidEvent {
    /// GPU index.
    pub gpu: u32,
    /// GPU UUID, when known.
    pub uuid: Option<String>,
    /// The XID.
    pub xid: u64,
    /// When it arrived (seconds since the Unix epoch).
    pub at_secs: u64,
}

/// A reboot-class fault of a boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastFault {
    /// Its reason.
    pub reason: String,
    /// The GPU's UUID.
    pub uuid: Option<String>,
}
