//! Phase `prepare`: make any machine ready for kubeadm.
//!
//! Steps run in this order, each planned against the host as it is at that
//! moment (so a step sees what the previous one did):
//! 1. `packages`: kubelet/kubeadm/kubectl at the configured version. First,
//!    so a bad mirror or checksum fails before anything else changed.
//! 2. `networking`: kernel modules, sysctls, swap.
//! 3. `instance-store`: local NVMe mounted, kubelet's directory moved onto it.
//! 4. `containerd`: systemd cgroups, data root, NVIDIA runtime, restart.

pub mod containerd;
pub mod instance_store;
pub mod networking;
pub mod packages;

use crate::Error;
use tracing::Instrument;

use crate::config::Config;
use crate::host::Host;
use crate::identity::NodeIdentity;
use crate::plan::{self, Plan, StepPlan};
use crate::state::{State, now_unix};

/// Phase name in plans and the state file.
pub const PHASE: &str = "prepare";

/// What every step gets to look at.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The host being prepared.
    pub host: &'a Host,
    /// Effective configuration.
    pub config: &'a Config,
    /// Who this node is.
    pub identity: &'a NodeIdentity,
}

/// The steps of this phase, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Kubernetes packages.
    Packages,
    /// Bridged networking.
    Networking,
    /// Local NVMe.
    InstanceStore,
    /// containerd.
    Containerd,
}

impl Step {
    /// All steps in order.
    pub const ALL: [Step; 4] = [
        Step::Packages,
        Step::Networking,
        Step::InstanceStore,
        Step::Containerd,
    ];

    /// Name in plans and the state file.
    pub fn name(self) -> &'static str {
        match self {
            Step::Packages => "packages",
            Step::Networking => "networking",
            Step::InstanceStore => "instance-store",
            Step::Containerd => "containerd",
        }
    }

    /// What this step would change now.
    pub async fn plan(self, cx: &Context<'_>) -> Result<StepPlan, Error> {
        // A login node that does not join runs no kubelet: it only needs
        // kubectl (the packages step knows), not a container runtime.
        if !cx.identity.joins && self != Step::Packages {
            let mut plan = StepPlan::new(self.name());
            plan.note("this node does not join the cluster (login node): nothing to do");
            return Ok(plan);
        }
        Ok(match self {
            Step::Packages => packages::plan(cx).await?,
            Step::Networking => networking::plan(cx)?,
            Step::InstanceStore => instance_store::plan(cx)?,
            Step::Containerd => containerd::plan(cx)?,
        })
    }
}

/// Plans every step against the host as it is (a dry run).
pub async fn plan(cx: &Context<'_>) -> Result<Plan, Error> {
    let mut steps = Vec::new();
    for step in Step::ALL {
        steps.push(step.plan(cx).await?);
    }
    Ok(Plan {
        phase: PHASE.into(),
        steps,
    })
}

/// Plans and applies each step in turn, recording progress in the state file
/// after each. Returns what was applied.
///
/// Every step is planned once before anything changes: bad input that a
/// step detects (a broken containerd config, an unreachable mirror) fails
/// the run with the host untouched, not after earlier steps were applied.
/// Each step is then planned again right before it is applied, because it
/// must see what the steps before it did.
pub async fn apply(cx: &Context<'_>) -> Result<Plan, Error> {
    let preflight = plan(cx).await?;
    let mut state = State::load(cx.host)?;
    let phase = state.phase(PHASE);
    if !phase.finished && !phase.completed.is_empty() {
        tracing::info!(completed = ?phase.completed, "resuming phase prepare");
    }
    if preflight.is_empty() && phase.finished {
        tracing::info!("phase prepare: host is up to date");
        return Ok(preflight);
    }
    phase.finished = false;
    let mut applied = Vec::new();
    for step in Step::ALL {
        let step_plan = apply_step(cx, step)
            .instrument(tracing::info_span!("step", step = step.name()))
            .await?;
        let phase = state.phase(PHASE);
        if !phase.completed.iter().any(|s| s == step.name()) {
            phase.completed.push(step.name().into());
        }
        if !step_plan.changes.is_empty() {
            phase.last_change_unix = Some(now_unix());
        }
        state.save(cx.host)?;
        applied.push(step_plan);
    }
    state.phase(PHASE).finished = true;
    state.save(cx.host)?;
    Ok(Plan {
        phase: PHASE.into(),
        steps: applied,
    })
}

async fn apply_step(cx: &Context<'_>, step: Step) -> Result<StepPlan, Error> {
    let step_plan = step.plan(cx).await?;
    if step_plan.changes.is_empty() {
        tracing::info!("up to date");
        return Ok(step_plan);
    }
    tracing::info!(changes = step_plan.changes.len(), "applying");
    plan::apply(cx.host, &step_plan.changes)
        .await
        .map_err(|source| Error::Apply {
            step: step.name().into(),
            source,
        })?;
    Ok(step_plan)
}
