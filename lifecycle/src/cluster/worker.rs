//! A worker (or a login node that joins): wait for a usable join ticket,
//! then `kubeadm join` with the ticket's token and CA pins.
//!
//! The token only ever travels in the 0600 `JoinConfiguration` file, which
//! is removed as soon as kubeadm has read it; it is never on a command line,
//! in a log line or in an error.

use std::path::Path;
use std::time::SystemTime;

use super::bootstrap_token::BootstrapToken;
use super::join_ticket::JoinTicket;
use super::kubeadm::{self, Membership};
use super::kubeadm_config::{self, JoinDiscovery, KubeadmVersion};
use super::phase::{self, ClusterError, Context};
use super::rendezvous::{self, WaitPolicy};
use crate::Error;
use crate::config::parse_version;
use crate::hardware::Hardware;
use crate::host::CommandError;
use crate::plan::{Change, StepPlan};

/// Step name.
const STEP: &str = "kubeadm-join";

/// Oldest node a control plane accepts: kubelet may be up to three minor
/// versions older than the API server (never newer).
const MAX_MINOR_SKEW: u32 = 3;

/// What joining would do (no remote call: the ticket is not fetched).
pub fn plan(cx: &Context<'_>) -> Result<Vec<StepPlan>, Error> {
    let mut plan = StepPlan::new(STEP);
    if phase::check_membership(cx)? == Membership::Worker {
        plan.note(format!(
            "already joined ({} exists): nothing to do",
            kubeadm::KUBELET_CONF
        ));
        return Ok(vec![plan]);
    }
    let version = phase::kubeadm_version(cx, Some(&mut plan))?;
    version.api_version()?;
    kubeadm_config::node_labels(cx.identity, &Hardware::detect(cx.host)?)?;
    plan.note(format!(
        "wait up to {} s for a usable join ticket at {}",
        cx.config.rendezvous.deadline_secs,
        phase::rendezvous_location(cx)
    ));
    plan.note(format!(
        "write {} (mode 0600, holds the ticket's token; removed after the join)",
        kubeadm::JOIN_CONFIG
    ));
    plan.push(Change::run(
        kubeadm::join_command(Path::new(kubeadm::JOIN_CONFIG)),
        "join the cluster with the ticket's token and CA pins",
    ));
    Ok(vec![plan])
}

/// Waits for the ticket and joins. A node that already joined is left alone.
pub async fn apply(cx: &Context<'_>) -> Result<Vec<StepPlan>, Error> {
    let mut done = StepPlan::new(STEP);
    if phase::check_membership(cx)? == Membership::Worker {
        done.note("already joined: nothing to do");
        return Ok(vec![done]);
    }
    let version = phase::kubeadm_version(cx, None)?;
    let hardware = Hardware::detect(cx.host)?;
    let rendezvous = cx.rendezvous()?;
    let ticket = rendezvous::wait_for_ticket(
        rendezvous,
        &WaitPolicy::from_config(&cx.config.rendezvous),
        SystemTime::now,
        rendezvous::tcp_probe,
    )
    .await?;
    check_ticket(cx, &ticket, version)?;
    let token =
        BootstrapToken::parse(ticket.token.expose()).map_err(|e| Error::ClusterConfig(e.into()))?;
    let discovery = JoinDiscovery {
        api_server_endpoint: ticket.endpoint.clone(),
        ca_cert_hashes: ticket.ca_pins.clone(),
    };
    let rendered = kubeadm_config::render_join(
        cx.identity,
        cx.config,
        &hardware,
        &token,
        version,
        &discovery,
    )?;
    cx.host
        .write_secret(kubeadm::JOIN_CONFIG, rendered.as_bytes())?;
    let cmd = kubeadm::join_command(Path::new(kubeadm::JOIN_CONFIG));
    tracing::info!(endpoint = %ticket.endpoint, expires_at = %ticket.expires_at_rfc3339(), "joining the cluster");
    let result = phase::run_blocking(cx, &cmd).await;
    phase::remove_secret_file(cx.host, kubeadm::JOIN_CONFIG);
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
    done.push(Change::run(
        cmd,
        format!("joined the cluster at {}", ticket.endpoint),
    ));
    Ok(vec![done])
}

/// kubeadm's discovery refuses a CA whose key is not among the pins
/// ("none of the public keys … are pinned").
fn pin_refused(stderr: &str) -> bool {
    stderr.contains("are pinned")
}

fn check_ticket(cx: &Context<'_>, ticket: &JoinTicket, node: KubeadmVersion) -> Result<(), Error> {
    if ticket.cluster_id != cx.cluster_key() {
        return Err(ClusterError::OtherCluster {
            location: cx.rendezvous()?.location(),
            found: ticket.cluster_id.clone(),
            expected: cx.cluster_key().to_string(),
        }
        .into());
    }
    let skew = || ClusterError::VersionSkew {
        node: node.to_string(),
        control_plane: ticket.kubernetes_version.clone(),
    };
    let (major, minor, _) = parse_version(&ticket.kubernetes_version).ok_or_else(skew)?;
    if major != node.major || node.minor > minor || node.minor + MAX_MINOR_SKEW < minor {
        return Err(skew().into());
    }
    Ok(())
}
