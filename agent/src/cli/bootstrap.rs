//! `hpk8s bootstrap`: phase `prepare`, then phase `cluster`.

use clap::ValueEnum;
use lifecycle::plan::Plan;
use lifecycle::{cluster, prepare};

use super::node::Node;
use super::{Cli, Output};

/// Which phase to run.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Phase {
    /// Host preparation: packages, networking, instance store, containerd.
    Prepare,
    /// Form the cluster (controller) or join it (workers).
    Cluster,
    /// Every phase: prepare, then cluster.
    All,
}

/// Arguments of `hpk8s bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which phase to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plan output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `hpk8s bootstrap`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let node = Node::load(cli).await?;
    let prepare_cx = node.prepare();
    let cluster_cx = node.cluster();
    let run_prepare = matches!(args.phase, Phase::Prepare | Phase::All);
    let run_cluster = matches!(args.phase, Phase::Cluster | Phase::All);
    let mut plans: Vec<Plan> = Vec::new();
    if args.dry_run {
        if run_prepare {
            plans.push(prepare::plan(&prepare_cx).await?);
        }
        if run_cluster {
            plans.push(cluster::phase::plan(&cluster_cx).await?);
        }
    } else {
        if run_cluster && cluster_cx.identity.joins {
            // A missing region or a bad rendezvous setting must stop the
            // run before anything changes.
            cluster_cx
                .rendezvous()
                .await
                .map_err(lifecycle::Error::from)?;
        }
        if run_prepare && run_cluster {
            // What phase cluster would refuse (a pod CIDR too small for the
            // cluster, a half-initialised control plane) must stop the run
            // before phase prepare changes the host.
            cluster::phase::plan(&cluster_cx).await?;
        }
        if run_prepare {
            plans.push(prepare::apply(&prepare_cx).await?);
        }
        if run_cluster {
            plans.push(cluster::phase::apply(&cluster_cx).await?);
        }
    }
    print_plans(&plans, args.output, args.dry_run)
}

/// Prints what was planned (dry run) or done: one plan object per phase in
/// JSON (an array when several phases ran).
fn print_plans(plans: &[Plan], output: Output, dry_run: bool) -> anyhow::Result<()> {
    match output {
        Output::Json if plans.len() == 1 => {
            println!("{}", serde_json::to_string_pretty(&plans[0])?);
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(plans)?),
        Output::Text => {
            for plan in plans {
                if dry_run {
                    print!("{plan}");
                } else {
                    println!(
                        "phase {}: applied {} change(s)",
                        plan.phase,
                        plan.change_count()
                    );
                }
            }
        }
    }
    Ok(())
}
