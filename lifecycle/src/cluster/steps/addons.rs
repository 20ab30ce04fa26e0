//! Step `addons` (controller): flannel, the NVIDIA and EFA device plugins
//! and the operator's manifests, with server-side apply.
//!
//! On a fresh controller every object is planned (no remote call). On a
//! formed one each object is read and compared with a server-side apply
//! dry run, and only the objects that would change are planned and applied.

use crate::Error;
use crate::cluster::addons::diff::{self, ObjectState};
use crate::cluster::addons::{self, AddonSettings, Manifest};
use crate::cluster::context::Context;
use crate::cluster::kubeadm::Membership;
use crate::cluster::record::recorded_pod_subnet;
use crate::plan::{Change, StepPlan};

/// Step name.
pub const STEP: &str = "addons";

/// The settings and manifests of this cluster's addons.
pub fn manifests(cx: &Context<'_>) -> Result<(AddonSettings, Vec<Manifest>), Error> {
    let settings = AddonSettings::from_config(&cx.config.addons, &recorded_pod_subnet(cx)?)?
        .with_group_taints(cx.config);
    let manifests = addons::all_manifests(cx.host, &settings)?;
    Ok((settings, manifests))
}

/// What applying the addons would change.
pub async fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    let (_, mut manifests) = manifests(cx)?;
    let formed = cx.initialised_at().is_none() && cx.membership()? == Membership::ControlPlane;
    if !formed {
        for m in &manifests {
            plan.push(apply_change(m, "not applied yet".into()));
        }
        return Ok(plan);
    }
    let states = diff::compare(cx.admin().await?, &mut manifests).await?;
    let mut current = 0;
    for (m, state) in manifests.iter().zip(states) {
        match state {
            ObjectState::Current => current += 1,
            ObjectState::Absent => plan.push(apply_change(m, "absent".into())),
            ObjectState::Differs(path) => plan.push(apply_change(m, format!("{path} differs"))),
        }
    }
    if current > 0 {
        plan.note(format!("{current} object(s) as applied"));
    }
    Ok(plan)
}

fn apply_change(m: &Manifest, reason: String) -> Change {
    Change::ApplyObject {
        origin: m.origin.clone(),
        kind: m.gvk.kind.clone(),
        object: m.display_name(),
        reason,
    }
}

/// Applies the objects the plan names, in manifest order.
pub async fn apply(cx: &Context<'_>, mut plan: StepPlan) -> Result<StepPlan, Error> {
    let (_, manifests) = manifests(cx)?;
    let wanted: Vec<Manifest> = manifests
        .into_iter()
        .filter(|m| {
            plan.changes.iter().any(|c| {
                matches!(c, Change::ApplyObject { origin, kind, object, .. }
                    if *origin == m.origin && *kind == m.gvk.kind
                        && object.rsplit('/').next() == m.object.metadata.name.as_deref())
            })
        })
        .collect();
    let report = addons::apply_objects(cx.admin().await?, wanted).await?;
    for outcome in &report.outcomes {
        plan.note(outcome.to_string());
    }
    Ok(plan)
}
