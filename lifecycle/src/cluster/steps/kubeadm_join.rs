//! Step `kubeadm-join` (a worker, or a login node that joins): wait for a
//! usable join ticket, then `kubeadm join` with the ticket's token and CA
//! pins.
//!
//! The token only ever travels in the 0600 `JoinConfiguration` file, which
//! is removed as soon as kubeadm has read it; it is never on a command line,
//! in a log line or in an error.

use std::path::Path;
use std::time::SystemTime;

use crate::Error;
use crate::cluster::bootstrap_token::BootstrapToken;
use crate::cluster::context::Context;
use crate::cluster::error::ClusterError;
use crate::cluster::join_ticket::JoinTicket;
use crate::cluster::kubeadm::{self, Membership};
use crate::cluster::kubeadm_config::{self, JoinDiscovery, KubeadmVersion};
use crate::cluster::rendezvous::{self, WaitPolicy};
use crate::hardware::Hardware;
use crate::host::CommandError;
use crate::plan::{Change, StepPlan};
use crate::values::version::KubeVersion;

/// Step name.
pub const STEP: &str = "kubeadm-join";

/// What joining would do (no remote call: the ticket is not fetched).
pub fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    if cx.membership()? == Membership::Worker {
        plan.note(format!(
            "already joined ({} exists): nothing to do",
            kubeadm::KUBELET_CONF
        ));
        return Ok(plan);
    }
    let version = cx.kubeadm_version(Some(&mut plan))?;
    version.api_version()?;
    kubeadm_config::node_labels(cx.identity, &Hardware::detect(cx.host)?, cx.config)?;
    if let Some(note) = &cx.gpu_gate().note {
        plan.note(note.clone());
    }
    plan.push(Change::WaitForTicket {
        location: cx.rendezvous_location(),
        deadline_secs: cx.config.rendezvous.deadline_secs,
    });
    plan.push(Change::run(
        kubeadm::join_command(Path::new(kubeadm::JOIN_CONFIG)),
        format!(
            "join the cluster with the ticket's token and CA pins ({} is written 0600 and removed after the join)",
            kubeadm::JOIN_CONFIG
        ),
    ));
    Ok(plan)
}

/// Waits for the ticket and joins.
pub async fn apply(cx: &Context<'_>, plan: StepPlan) -> Result<StepPlan, Error> {
    let version = cx.kubeadm_version(None)?;
    let hardware = Hardware::detect(cx.host)?;
    let rendezvous = cx.rendezvous().await?;
    // A ticket naming another API server is refused whatever else it says
    // (on a shared file system anyone may have written it).
    let policy = WaitPolicy {
        endpoints: kubeadm_config::join_endpoints(cx.identity, cx.config)?,
        ..WaitPolicy::from_config(&cx.config.rendezvous)
    };
    let ticket =
        rendezvous::wait_for_ticket(rendezvous, &policy, SystemTime::now, rendezvous::tcp_probe)
            .await?;
    check_ticket(cx, &ticket, version)?;
    let token =
        BootstrapToken::parse(ticket.token.expose()).map_err(|e| Error::ClusterConfig(e.into()))?;
    let discovery = JoinDiscovery {
        api_server_endpoint: ticket.endpoint.clone(),
        ca_cert_hashes: ticket.ca_pins.clone(),
    };
    let rendered = kubeadm_config::render_join_tainted(
        cx.identity,
        cx.config,
        &hardware,
        &token,
        version,
        &discovery,
        &cx.gpu_gate().taints,
    )?;
    cx.host
        .write_secret(kubeadm::JOIN_CONFIG, rendered.as_bytes())?;
    let cmd = kubeadm::join_command(Path::new(kubeadm::JOIN_CONFIG));
    tracing::info!(endpoint = %ticket.endpoint, expires_at = %ticket.expires_at_rfc3339(), "joining the cluster");
    let result = cx.run_blocking(&cmd).await;
    cx.remove_secret_file(kubeadm::JOIN_CONFIG);
    match result {
        Ok(()) => {}
        Err(CommandError::Failed { stderr, .. }) if pin_refused(&stderr) => {
            return Err(ClusterError::CaPinMismatch {
                endpoint: ticket.endpoint.clone(),
                location: rendezvous.location(),
            }
            .into());
        }
        Err(CommandError::Failed { stderr, .. }) => {
            return Err(ClusterError::JoinFailed {
                endpoint: ticket.endpoint.clone(),
                stderr,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(node = %cx.identity.node_name, endpoint = %ticket.endpoint, "joined the cluster");
    let mut done = StepPlan::new(STEP);
    done.notes = plan.notes;
    done.push(Change::run(
        cmd,
        format!("joined the cluster at {}", ticket.endpoint),
    ));
    Ok(done)
}

/// kubeadm's discovery refuses a CA whose key is not among the pins
/// ("none of the public keys … are pinned").
fn pin_refused(stderr: &str) -> bool {
    stderr.contains("are pinned")
}

fn check_ticket(cx: &Context<'_>, ticket: &JoinTicket, node: KubeadmVersion) -> Result<(), Error> {
    if ticket.cluster_id != cx.cluster_key() {
        return Err(ClusterError::OtherCluster {
            location: cx.rendezvous_location(),
            found: ticket.cluster_id.clone(),
            expected: cx.cluster_key().to_string(),
        }
        .into());
    }
    let skew = || ClusterError::VersionSkew {
        node: node.to_string(),
        control_plane: ticket.kubernetes_version.clone(),
    };
    let control_plane = KubeVersion::parse(&ticket.kubernetes_version).ok_or_else(skew)?;
    if !node.kube().may_join(&control_plane) {
        return Err(skew().into());
    }
    Ok(())
}
