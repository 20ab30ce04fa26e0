//! DaemonSet rollout: polls each DaemonSet's status until every one is
//! ready or the deadline passes, and reports `flannel 3/4 ready` lines
//! either way. Not being ready in time is a report, not an error: a node
//! whose image pull is slow must not fail the whole bootstrap, and the
//! report says exactly which addon is behind.

use std::fmt;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::{Api, Client};
use tokio::time::Instant;

use super::error::{Error, Result};

/// How often the status is read while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A DaemonSet to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutTarget {
    /// Name in reports (`flannel`, or the DaemonSet's name for manifests).
    pub label: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// One DaemonSet's state at the last look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutEntry {
    /// The DaemonSet.
    pub target: RolloutTarget,
    /// Nodes that should run a pod (`desiredNumberScheduled`); `None` when
    /// the DaemonSet has no status yet (its controller has not seen it) or
    /// is gone.
    pub desired: Option<i32>,
    /// Pods ready (`numberReady`).
    pub ready: i32,
    /// Pods running the current template (`updatedNumberScheduled`).
    pub updated: i32,
    /// Whether the controller has seen the latest spec (`observedGeneration`).
    pub observed: bool,
}

impl RolloutEntry {
    /// Ready: every desired pod ready and updated, the latest spec observed.
    pub fn is_ready(&self) -> bool {
        self.desired
            .is_some_and(|d| self.observed && self.ready >= d && self.updated >= d)
    }

    fn from_daemon_set(target: RolloutTarget, ds: Option<&DaemonSet>) -> Self {
        let generation = ds.and_then(|d| d.metadata.generation);
        let status = ds.and_then(|d| d.status.as_ref());
        Self {
            target,
            desired: status.map(|s| s.desired_number_scheduled),
            ready: status.map_or(0, |s| s.number_ready),
            updated: status.and_then(|s| s.updated_number_scheduled).unwrap_or(0),
            observed: match (status.and_then(|s| s.observed_generation), generation) {
                (Some(seen), Some(generation)) => seen >= generation,
                // A status without observedGeneration (older servers): trust the counts.
                _ => status.is_some(),
            },
        }
    }
}

impl fmt::Display for RolloutEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = &self.target.label;
        match self.desired {
            None => write!(f, "{label} not ready (no status yet)"),
            Some(d) => {
                write!(f, "{label} {}/{d} ready", self.ready)?;
                if self.updated < d {
                    write!(f, ", {}/{d} updated", self.updated)?;
                }
                if !self.observed {
                    write!(f, ", latest spec not yet observed")?;
                }
                Ok(())
            }
        }
    }
}

/// The rollout of every followed DaemonSet at the end of the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutReport {
    /// One entry per DaemonSet.
    pub entries: Vec<RolloutEntry>,
    /// Whether the deadline passed with some not ready.
    pub timed_out: bool,
}

impl RolloutReport {
    /// Whether every DaemonSet is ready.
    pub fn all_ready(&self) -> bool {
        self.entries.iter().all(RolloutEntry::is_ready)
    }

    /// The entries not ready.
    pub fn not_ready(&self) -> impl Iterator<Item = &RolloutEntry> {
        self.entries.iter().filter(|e| !e.is_ready())
    }
}

impl fmt::Display for RolloutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            writeln!(f, "{e}")?;
        }
        if self.timed_out {
            let names: Vec<&str> = self.not_ready().map(|e| e.target.label.as_str()).collect();
            writeln!(f, "not ready at the deadline: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Reads every target's status until all are ready or `timeout` has passed
/// (`Duration::ZERO`: read once). Errors only when the API cannot be read.
pub async fn rollout_status(
    client: &Client,
    targets: &[RolloutTarget],
    timeout: Duration,
    poll: Duration,
) -> Result<RolloutReport> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut entries = Vec::with_capacity(targets.len());
        for t in targets {
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), &t.namespace);
            let ds = crate::kube::client::timed(api.get_opt(&t.name))
                .await
                .map_err(|source| Error::RolloutRead {
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                    source: Box::new(source),
                })?;
            entries.push(RolloutEntry::from_daemon_set(t.clone(), ds.as_ref()));
        }
        let ready = entries.iter().all(RolloutEntry::is_ready);
        let now = Instant::now();
        if ready || now >= deadline {
            let report = RolloutReport {
                entries,
                timed_out: !ready,
            };
            for e in &report.entries {
                if e.is_ready() {
                    tracing::info!(daemon_set = %e.target.name, "{e}");
                } else {
                    tracing::warn!(daemon_set = %e.target.name, "{e}");
                }
            }
            return Ok(report);
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}
