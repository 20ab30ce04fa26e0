//! `hpk8s delete-orphan-nodes`: delete the Nodes whose instance is gone.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::{Duration, SystemTime};

use lifecycle::ops::OpsError;
use lifecycle::ops::orphans::{self, Answer, Orphan};

use super::cluster_args::{ClusterArgs, connect};
use super::{Cli, Output};

/// Arguments of `hpk8s delete-orphan-nodes`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster, kubeconfig, output.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Show the orphans, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask (for automation; without a terminal and without --yes
    /// nothing is deleted).
    #[arg(long)]
    pub yes: bool,
    /// Delete even when the orphans are more than the share limit.
    #[arg(long)]
    pub force: bool,
    /// Minutes a Node must have been NotReady.
    #[arg(long, default_value_t = 10)]
    pub grace_minutes: u64,
    /// The most Nodes deleted at once without --force, percent of the Nodes.
    #[arg(long, default_value_t = orphans::DEFAULT_MAX_PERCENT)]
    pub max_percent: usize,
    /// Also delete the orphans' instances that HyperPod still lists in
    /// `Failure` (BatchDeleteClusterNodes, up to 99 per call).
    #[arg(long)]
    pub delete_instances: bool,
}

/// Runs `hpk8s delete-orphan-nodes`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let c = connect(cli, &args.cluster).await?;
    let opts = orphans::Options {
        grace: Duration::from_secs(args.grace_minutes * 60),
        dry_run: args.dry_run,
        force: args.force,
        delete_instances: args.delete_instances,
        max_percent: args.max_percent,
    };
    let yes = args.yes;
    let report = orphans::delete_orphans(
        &c.client,
        &c.instances,
        &opts,
        SystemTime::now(),
        async move |found: &[Orphan]| ask(found, yes),
    )
    .await?;
    match args.cluster.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            if report.orphans.is_empty() {
                println!("no orphan Nodes among {} Nodes", report.nodes);
            }
            for o in &report.orphans {
                println!("{}\t{}", o.node, o.reason);
            }
            if report.dry_run {
                println!(
                    "dry run: {} orphan Node(s), nothing deleted",
                    report.orphans.len()
                );
            } else if !report.orphans.is_empty() {
                println!("deleted {} Node(s)", report.deleted.len());
            }
            for k in &report.kept {
                println!("kept {}: {}", k.node, k.why);
            }
            for i in &report.instances_deleted {
                println!("deleted instance {i}");
            }
            for f in &report.instance_failures {
                println!(
                    "instance {} not deleted: {}: {}",
                    f.node_id, f.code, f.message
                );
            }
        }
    }
    Ok(())
}

fn ask(found: &[Orphan], yes: bool) -> Result<Answer, OpsError> {
    if yes {
        return Ok(Answer::Yes);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(OpsError::ConfirmationRequired {
            what: format!("deleting {} orphan Node(s)", found.len()),
        });
    }
    let mut err = std::io::stderr();
    for o in found {
        let _ = writeln!(err, "  {}\t{}", o.node, o.reason);
    }
    let _ = write!(err, "Delete these {} Node(s)? [y/N] ", found.len());
    let _ = err.flush();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    Ok(match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Answer::Yes,
        _ => Answer::No,
    })
}
