//! `hpk8s replace-instance NODE` and `hpk8s reboot-instance NODE`.

use std::time::Duration;

use lifecycle::aws::sagemaker::Restart;
use lifecycle::config::RecoveryRoute;
use lifecycle::ops::restart_instance::{self, DEFAULT_REBOOT_WAIT, DEFAULT_REPLACE_WAIT};

use super::cluster_args::{ClusterArgs, connect, progress};
use super::{Cli, Output};

/// How the request is made.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Via {
    /// The SageMaker API; Slurm only when the API call fails as
    /// unsupported with nothing accepted.
    Auto,
    /// `BatchReplaceClusterNodes` / `BatchRebootClusterNodes`.
    Api,
    /// `scontrol update node=<name> state=fail reason=Action:Replace|Reboot`.
    Slurm,
}

/// Arguments of `hpk8s replace-instance` and `hpk8s reboot-instance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node: node name, instance id or address.
    pub node: String,
    /// Cluster, kubeconfig, output.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// How the request is made.
    #[arg(long, value_enum, default_value_t = Via::Auto)]
    pub via: Via,
    /// Drain deadline (`90s`, `15m`, `1h`; a bare number is minutes).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Go on when the drain stops at its deadline (pods still there are
    /// killed with the instance).
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the node to be back (`20m`, `2h`; a bare number
    /// is minutes; default 90m for a replacement, 20m for a reboot).
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

/// Runs the command.
pub async fn run(cli: &Cli, args: &Args, kind: Restart) -> anyhow::Result<()> {
    let c = connect(cli, &args.cluster).await?;
    let wait = args.wait.unwrap_or(match kind {
        Restart::Replace => DEFAULT_REPLACE_WAIT,
        Restart::Reboot => DEFAULT_REBOOT_WAIT,
    });
    let opts = restart_instance::Options {
        kind,
        via: match args.via {
            Via::Auto => RecoveryRoute::Auto,
            Via::Api => RecoveryRoute::Api,
            Via::Slurm => RecoveryRoute::Slurm,
        },
        drain_timeout: args.drain_timeout,
        force: args.force,
        wait,
        poll_every: Duration::from_secs(5),
        controller_groups: c.controller_groups.clone(),
    };
    // On the controller: the join ticket is made to outlive the wait.
    let cx = c.node.as_ref().map(super::node::Node::cluster);
    let admin = c.client.clone();
    let check: Option<lifecycle::remediation::controller::TicketCheck<'_>> = match (&cx, &c.node) {
        (Some(cx), Some(n))
            if n.identity.role == lifecycle::identity::Role::Controller
                && matches!(
                    cx.membership(),
                    Ok(lifecycle::cluster::kubeadm::Membership::ControlPlane)
                ) =>
        {
            let admin = &admin;
            Some(Box::new(move || {
                Box::pin(lifecycle::agent::ticket_for_replacement(cx, admin, wait))
            }))
        }
        _ => {
            if kind == Restart::Replace {
                tracing::warn!(
                    "not on the formed controller: the published join ticket's validity is not checked before the replacement"
                );
            }
            None
        }
    };
    let progress = progress();
    let report = restart_instance::restart_instance(
        &c.client,
        &c.instances,
        &c.host,
        &args.node,
        &opts,
        check.as_ref(),
        progress.as_ref(),
    )
    .await?;
    match args.cluster.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => match kind {
            Restart::Replace => println!(
                "{} ({}) replaced through {} by {} ({}), Ready after {:.0} s",
                report.node,
                report.instance_id,
                report.via,
                report.new_instance_id.as_deref().unwrap_or("?"),
                report.ready_node,
                report.elapsed_secs
            ),
            Restart::Reboot => println!(
                "{} ({}) rebooted through {}, Ready after {:.0} s{}",
                report.node,
                report.instance_id,
                report.via,
                report.elapsed_secs,
                if report.uncordoned {
                    ", uncordoned"
                } else {
                    ""
                }
            ),
        },
    }
    Ok(())
}

/// `90s`, `15m`, `2h`, or a bare number of minutes.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (n, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "m"),
    };
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: the unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("a duration must be more than 0".into());
    }
    Ok(Duration::from_secs(secs))
}
