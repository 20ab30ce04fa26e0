//! Phase `prepare`: make any machine ready for kubeadm.
//!
//! Steps run in this order, each planned against the host as it is at that
//! moment (so a step sees what the previous one did):
//! 1. `packages`: kubelet/kubeadm/kubectl at the configured version. First,
//!    so a bad mirror or checksum fails before anything else changed.
//! 2. `networking`: kernel modules, sysctls, swap.
//! 3. `instance-store`: local NVMe mounted, kubelet's directory moved onto it.
//! 4. `containerd`: systemd cgroups, data root, NVIDIA runtime, restart.
//! 5. `agent`: the node agent's systemd unit, enabled and running.

pub mod agent_unit;
pub mod containerd;
mod context;
pub mod instance_store;
pub mod networking;
pub mod packages;

pub use self::context::Context;

use crate::Error;
use crate::phase::{self, Phase};
use crate::plan::{Plan, StepPlan};

/// Phase name in plans and the state file.
pub const PHASE: &str = "prepare";

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
    /// The node agent's unit.
    Agent,
}

impl Step {
    /// All steps in order.
    pub const ALL: [Step; 5] = [
        Step::Packages,
        Step::Networking,
        Step::InstanceStore,
        Step::Containerd,
        Step::Agent,
    ];

    /// Name in plans and the state file.
    pub fn name(self) -> &'static str {
        match self {
            Step::Packages => "packages",
            Step::Networking => "networking",
            Step::InstanceStore => "instance-store",
            Step::Containerd => "containerd",
            Step::Agent => "agent",
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
            Step::Agent => agent_unit::plan(cx)?,
        })
    }
}

impl Phase for Context<'_> {
    type Step = Step;

    fn name(&self) -> &'static str {
        PHASE
    }

    fn host(&self) -> &crate::host::Host {
        self.host
    }

    fn steps(&self) -> Vec<Step> {
        Step::ALL.to_vec()
    }

    fn directories(&self) -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<std::path::PathBuf> = [
            crate::state::STATE_DIR,
            "/etc",
            "/etc/apt/keyrings",
            "/etc/apt/preferences.d",
            "/etc/apt/sources.list.d",
            "/etc/modules-load.d",
            "/etc/sysctl.d",
            "/etc/systemd/system",
            "/etc/systemd/system/containerd.service.d",
            "/etc/systemd/system/kubelet.service.d",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .collect();
        dirs.push(self.config.packages.install_dir.clone());
        if let Some(parent) = self.config.containerd.config_path.parent() {
            dirs.push(parent.to_path_buf());
        }
        dirs
    }

    fn step_name(&self, step: Step) -> &'static str {
        step.name()
    }

    async fn plan_step(&self, step: Step) -> Result<StepPlan, Error> {
        step.plan(self).await
    }

    async fn apply_step(&self, _step: Step, plan: StepPlan) -> Result<StepPlan, Error> {
        phase::apply_host_changes(self.host, plan).await
    }
}

/// Plans every step against the host as it is (a dry run).
pub async fn plan(cx: &Context<'_>) -> Result<Plan, Error> {
    phase::plan(cx).await
}

/// Plans and applies each step in turn, recording progress in the state
/// file (see [`crate::phase::apply`]). Returns what was applied.
pub async fn apply(cx: &Context<'_>) -> Result<Plan, Error> {
    phase::apply(cx).await
}
