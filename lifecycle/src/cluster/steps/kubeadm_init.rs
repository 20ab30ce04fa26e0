//! Step `kubeadm-init` (controller): `kubeadm init` once, from a config
//! file that carries a bootstrap token hpk8s drew itself (so nothing is
//! scraped from kubeadm's output) and the pod network sized for the
//! cluster; the pod network is recorded for later runs.
//!
//! The config file holds the token: it is written 0600 and removed as soon
//! as kubeadm has read it, whether `init` succeeded or not.

use std::path::Path;
use std::time::SystemTime;

use crate::Error;
use crate::cluster::context::Context;
use crate::cluster::error::ClusterError;
use crate::cluster::kubeadm::{self, Membership};
use crate::cluster::kubeadm_config::{self, KubeadmVersion};
use crate::cluster::pod_network::PodNetwork;
use crate::cluster::record::{CLUSTER_RECORD, ClusterRecord};
use crate::hardware::Hardware;
use crate::host::{CommandError, FileMode};
use crate::plan::{self, Change, StepPlan};

/// Step name.
pub const STEP: &str = "kubeadm-init";

/// What initialising the control plane would do.
pub fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    if cx.membership()? == Membership::ControlPlane {
        plan.note(format!(
            "already initialised ({} exists): kubeadm init is skipped",
            kubeadm::APISERVER_MANIFEST
        ));
        restrict_admin_kubeconfig(cx, &mut plan);
        return Ok(plan);
    }
    let version = cx.kubeadm_version(Some(&mut plan))?;
    if let Some(note) = &cx.gpu_gate().note {
        plan.note(note.clone());
    }
    let (rendered, network) = init_documents(cx, version)?;
    plan.note(format!(
        "pod network {} with /{} per node: {} nodes fit, {} needed (expected plus headroom); services {}",
        network.pod_subnet,
        network.node_cidr_mask_size,
        network.capacity,
        network.nodes_needed,
        network.service_subnet
    ));
    plan.push_opt(Change::write_file(
        cx.host,
        kubeadm::INIT_CONFIG,
        rendered.into_bytes(),
        FileMode::SECRET,
        true,
    )?);
    plan.push(Change::run(
        kubeadm::init_command(Path::new(kubeadm::INIT_CONFIG)),
        format!(
            "initialise the control plane ({} {})",
            cx.api_endpoint()?,
            version.api_version()?.as_str()
        ),
    ));
    plan.push(Change::RemoveFile {
        path: kubeadm::INIT_CONFIG.into(),
    });
    let record = ClusterRecord {
        pod_subnet: network.pod_subnet.to_string(),
        service_subnet: network.service_subnet.to_string(),
        node_cidr_mask_size: network.node_cidr_mask_size,
    };
    plan.push_opt(Change::write_file(
        cx.host,
        CLUSTER_RECORD,
        record.to_text(),
        FileMode::CONFIG,
        false,
    )?);
    Ok(plan)
}

/// `admin.conf` is a cluster-admin credential: root only, its mode
/// changed in place (never removed and rewritten).
fn restrict_admin_kubeconfig(cx: &Context<'_>, plan: &mut StepPlan) {
    if let Some(mode) = cx.host.mode_of(kubeadm::ADMIN_CONF)
        && mode & 0o077 != 0
    {
        plan.push(Change::SetMode {
            path: kubeadm::ADMIN_CONF.into(),
            current: mode,
            wanted: 0o600,
        });
    }
}

/// Applies the plan: the config written without any backup copy, `kubeadm
/// init` on a blocking thread, the config removed whatever happened.
pub async fn apply(cx: &Context<'_>, plan: StepPlan) -> Result<StepPlan, Error> {
    let started = SystemTime::now();
    let result = run(cx, &plan).await;
    let initialised = plan.changes.iter().any(|c| matches!(c, Change::Run { .. }));
    if initialised {
        cx.remove_secret_file(kubeadm::INIT_CONFIG);
    }
    result?;
    if initialised {
        // kubeadm counts the token's TTL from its own start: taking the
        // time first makes the ticket's expiry a little early, never late.
        cx.mark_initialised(started);
        let mut after = StepPlan::new(STEP);
        restrict_admin_kubeconfig(cx, &mut after);
        apply_host(cx, &after.changes).await?;
    }
    Ok(plan)
}

async fn run(cx: &Context<'_>, plan: &StepPlan) -> Result<(), Error> {
    for change in &plan.changes {
        match change {
            Change::WriteFile { path, contents, .. } if path == Path::new(kubeadm::INIT_CONFIG) => {
                cx.host.write_secret(path, contents)?;
            }
            Change::RemoveFile { path } if path == Path::new(kubeadm::INIT_CONFIG) => {
                cx.remove_secret_file(kubeadm::INIT_CONFIG);
            }
            Change::Run { command, .. } => {
                tracing::info!(endpoint = %cx.api_endpoint()?, "running kubeadm init");
                match cx.run_blocking(command).await {
                    Ok(()) => {}
                    Err(CommandError::Failed { stderr, .. }) => {
                        return Err(ClusterError::InitFailed { stderr }.into());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            other => apply_host(cx, std::slice::from_ref(other)).await?,
        }
    }
    Ok(())
}

async fn apply_host(cx: &Context<'_>, changes: &[Change]) -> Result<(), Error> {
    plan::apply(cx.host, changes)
        .await
        .map_err(|source| Error::Apply {
            step: STEP.into(),
            source,
        })
}

/// The `kubeadm init` documents carrying this run's first token, with the
/// pod network they size.
fn init_documents(
    cx: &Context<'_>,
    version: KubeadmVersion,
) -> Result<(kubeadm_config::Rendered, PodNetwork), Error> {
    let rendered = kubeadm_config::render_init_tainted(
        cx.identity,
        cx.config,
        &Hardware::detect(cx.host)?,
        cx.first_token()?,
        version,
        &cx.gpu_gate().taints,
    )?;
    let network = rendered
        .pod_network()
        .copied()
        .ok_or_else(|| ClusterError::InitFailed {
            stderr: "the init documents carry no pod network (a bug in hpk8s)".into(),
        })?;
    Ok((rendered, network))
}
