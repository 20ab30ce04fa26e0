//! Progress of each phase, kept in `/var/lib/hpk8s/state.json` so that a
//! re-run after a crash or reboot knows where it stopped and an operator
//! can read how far a node got. Steps re-plan against the host anyway, so the state
//! file is a record, never a reason to skip checking the host.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::class::classify;
use crate::host::{FileMode, FsError, Host};

/// Where hpk8s keeps its own state.
pub const STATE_DIR: &str = "/var/lib/hpk8s";
/// The state file.
pub const STATE_FILE: &str = "/var/lib/hpk8s/state.json";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file exists but is not ours or is corrupt.
    #[error("state file {path} is corrupt ({message}); move it aside to start over")]
    Corrupt {
        /// Host path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// I/O.
    #[error(transparent)]
    Fs(#[from] FsError),
}

classify!(StateError {
    Corrupt { .. } => Precondition "state_file_corrupt";
    Fs { 0: e } => via e;
});

/// Progress of one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseState {
    /// Steps finished, in order.
    pub completed: Vec<String>,
    /// Whether every step finished.
    pub finished: bool,
    /// Unix time of the last change applied by this phase.
    pub last_change_unix: Option<u64>,
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Per-phase progress.
    pub phases: BTreeMap<String, PhaseState>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            version: 1,
            phases: BTreeMap::new(),
        }
    }
}

impl State {
    /// Loads the state file; a missing file is a fresh state.
    pub fn load(host: &Host) -> Result<State, StateError> {
        match host.read_opt(STATE_FILE)? {
            None => Ok(State::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: STATE_FILE.into(),
                message: e.to_string(),
            }),
        }
    }

    /// Writes the state file atomically (0600).
    pub fn save(&self, host: &Host) -> Result<(), StateError> {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        if host.read_opt(STATE_FILE)?.as_deref() == Some(text.as_bytes()) {
            return Ok(());
        }
        host.write_atomic(STATE_FILE, text.as_bytes(), FileMode::SECRET)?;
        Ok(())
    }

    /// The progress record of `phase`.
    pub fn phase(&mut self, phase: &str) -> &mut PhaseState {
        self.phases.entry(phase.to_string()).or_default()
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
