//! Step `nodes` (controller): every node of the inventory Ready, and every
//! Ready node labelled by the controller (the labels NodeRestriction keeps
//! a node from setting on itself) as it turns Ready; then the addons'
//! rollout reported (their pods can only run once nodes are there).

use std::time::Duration;

use crate::Error;
use crate::cluster::addons::{self, AddonSettings};
use crate::cluster::context::Context;
use crate::cluster::kubeadm::Membership;
use crate::cluster::labels;
use crate::cluster::nodes;
use crate::plan::{Change, StepPlan};

use super::addons::manifests;

/// Step name.
pub const STEP: &str = "nodes";

/// How often the addons' rollout is looked at.
const ROLLOUT_POLL: Duration = Duration::from_secs(5);

fn label_keys() -> Vec<String> {
    vec![
        labels::ROLE_WORKER.to_string(),
        labels::INSTANCE_GROUP.to_string(),
    ]
}

/// What waiting for and labelling the nodes would do. On a formed
/// controller this lists the Nodes once.
pub async fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    let expected = nodes::Expectations::of(cx.identity, cx.config);
    let deadline = nodes::ready_deadline(expected.total(), &cx.config.cluster);
    for g in &cx.identity.elastic_groups {
        plan.note(format!(
            "elastic group {}: waits for {} Ready node(s); the others are labelled as they join",
            g.name, g.min_nodes
        ));
    }
    let formed = cx.initialised_at().is_none() && cx.membership()? == Membership::ControlPlane;
    if !formed {
        plan.push(Change::WaitForNodes {
            count: expected.total(),
            deadline_secs: deadline.as_secs(),
        });
        plan.push(Change::LabelNodes {
            count: expected.total(),
            labels: label_keys(),
        });
        return Ok(plan);
    }
    let client = cx.admin().await?;
    let seen = nodes::snapshot(client, &expected).await.map_err(|source| {
        nodes::NodesError::Unavailable {
            node: "(all)".into(),
            endpoint: "GET /api/v1/nodes".into(),
            retried_secs: 0,
            source: Box::new(source),
        }
    })?;
    if !seen.not_ready.is_empty() {
        plan.push(Change::WaitForNodes {
            count: seen.not_ready.len(),
            deadline_secs: deadline.as_secs(),
        });
    }
    let to_label = seen.unlabelled + seen.not_ready.len();
    if to_label > 0 {
        plan.push(Change::LabelNodes {
            count: to_label,
            labels: label_keys(),
        });
    }
    if plan.changes.is_empty() {
        plan.note(format!(
            "{0}/{0} expected nodes Ready and labelled",
            seen.expected
        ));
    }
    Ok(plan)
}

/// Waits for the expected nodes, labelling each as it turns Ready, then
/// reports the addons' rollout (never waiting beyond
/// `addons.rollout_timeout_secs`).
pub async fn apply(cx: &Context<'_>, mut plan: StepPlan) -> Result<StepPlan, Error> {
    let client = cx.admin().await?;
    let expected = nodes::Expectations::of(cx.identity, cx.config);
    let deadline = nodes::ready_deadline(expected.total(), &cx.config.cluster);
    let ready = nodes::wait_and_label(client, &expected, deadline).await?;
    plan.note(format!(
        "{}/{} expected nodes Ready after {} s ({} more not in the inventory); labels set on {}",
        ready.ready.len(),
        expected.nodes.len(),
        ready.waited.as_secs(),
        ready.unexpected.len(),
        ready.labelled
    ));
    let (settings, manifests): (AddonSettings, _) = manifests(cx)?;
    let rollout = addons::rollout_status(
        client,
        &addons::rollout_targets(&manifests),
        settings.rollout_timeout,
        ROLLOUT_POLL,
    )
    .await?;
    for entry in &rollout.entries {
        plan.note(entry.to_string());
    }
    if !rollout.all_ready() {
        tracing::warn!(report = %rollout, "some addons are not rolled out yet; check `kubectl get ds -A`");
    }
    Ok(plan)
}
