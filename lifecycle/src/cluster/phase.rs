//! Phase `cluster`: the controller forms the cluster, workers join it.
//!
//! Controller: `kubeadm-init` (once), `join-ticket`, `addons`, `nodes`.
//! Worker: `kubeadm-join`. A login node that does not join has nothing to
//! do here. Every step plans concrete changes (see [`super::steps`]), run
//! by the common phase runner ([`crate::phase`]), which records progress
//! in the state file.
//!
//! A dry run on a fresh host makes no remote call: it renders and checks
//! the kubeadm documents (so a CIDR too small for the cluster is refused
//! before anything changes) and plans the whole set. On a formed controller
//! it makes short read-only calls and plans only the difference.

use super::context::Context;
use super::steps::{addons, join_ticket, kubeadm_init, kubeadm_join, nodes};
use crate::Error;
use crate::identity::Role;
use crate::phase::{self, Phase};
use crate::plan::{Plan, StepPlan};

/// Phase name in plans and the state file.
pub const PHASE: &str = "cluster";

/// The steps of this phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `kubeadm init` (controller).
    KubeadmInit,
    /// The join ticket (controller).
    JoinTicket,
    /// Addons (controller).
    Addons,
    /// Nodes Ready and labelled (controller).
    Nodes,
    /// `kubeadm join` (worker).
    KubeadmJoin,
    /// A login node that does not join.
    NotJoining,
}

impl Step {
    /// Name in plans and the state file.
    pub fn name(self) -> &'static str {
        match self {
            Step::KubeadmInit => kubeadm_init::STEP,
            Step::JoinTicket => join_ticket::STEP,
            Step::Addons => addons::STEP,
            Step::Nodes => nodes::STEP,
            Step::KubeadmJoin => kubeadm_join::STEP,
            Step::NotJoining => "kubeadm",
        }
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
        match self.identity.role {
            _ if !self.identity.joins => vec![Step::NotJoining],
            Role::Controller => vec![
                Step::KubeadmInit,
                Step::JoinTicket,
                Step::Addons,
                Step::Nodes,
            ],
            _ => vec![Step::KubeadmJoin],
        }
    }

    fn step_name(&self, step: Step) -> &'static str {
        step.name()
    }

    fn directories(&self) -> Vec<std::path::PathBuf> {
        [
            crate::state::STATE_DIR,
            super::kubeadm::CONFIG_DIR,
            "/etc/kubernetes",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .collect()
    }

    async fn plan_step(&self, step: Step) -> Result<StepPlan, Error> {
        match step {
            Step::KubeadmInit => kubeadm_init::plan(self),
            Step::JoinTicket => join_ticket::plan(self).await,
            Step::Addons => addons::plan(self).await,
            Step::Nodes => nodes::plan(self).await,
            Step::KubeadmJoin => kubeadm_join::plan(self),
            Step::NotJoining => {
                let mut plan = StepPlan::new(step.name());
                plan.note("this node does not join the cluster (login node): nothing to do");
                Ok(plan)
            }
        }
    }

    async fn apply_step(&self, step: Step, plan: StepPlan) -> Result<StepPlan, Error> {
        match step {
            Step::KubeadmInit => kubeadm_init::apply(self, plan).await,
            Step::JoinTicket => join_ticket::apply(self, plan).await,
            Step::Addons => addons::apply(self, plan).await,
            Step::Nodes => nodes::apply(self, plan).await,
            Step::KubeadmJoin => kubeadm_join::apply(self, plan).await,
            Step::NotJoining => Ok(plan),
        }
    }
}

/// What the phase would do on this node (a dry run).
pub async fn plan(cx: &Context<'_>) -> Result<Plan, Error> {
    phase::plan(cx).await
}

/// Forms or joins the cluster, recording each finished step in the state
/// file. Returns what was done, step by step.
pub async fn apply(cx: &Context<'_>) -> Result<Plan, Error> {
    phase::apply(cx).await
}
