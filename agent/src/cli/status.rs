//! `hpk8s status`: every Node and instance, mismatches flagged.

use std::time::{Duration, SystemTime};

use super::cluster_args::{ClusterArgs, connect};
use super::{Cli, Output};

/// Arguments of `hpk8s status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cluster, kubeconfig, output.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Keep refreshing (on every Node change, and the instances every 30 s)
    /// until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// Runs `hpk8s status`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let c = connect(cli, &args.cluster).await?;
    let inventory = !matches!(c.instances, lifecycle::ops::inventory::Instances::None);
    loop {
        let (rows, calls) = lifecycle::ops::inventory::read(&c.client, &c.instances).await?;
        let status = lifecycle::ops::status::build(rows, inventory, calls, SystemTime::now());
        match args.cluster.output {
            Output::Json if args.watch => println!("{}", serde_json::to_string(&status)?),
            Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            Output::Text => {
                if args.watch {
                    // Clear the terminal between refreshes.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", lifecycle::ops::status::render(&status));
            }
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            () = node_changed(&c.client) => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // Let a burst of changes settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Resolves on the next Node change (a watch from the current
/// resourceVersion); on an error, after a pause instead.
async fn node_changed(client: &kube::Client) {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams, WatchParams};
    let api: Api<Node> = Api::all(client.clone());
    let rv = match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(l) => l.metadata.resource_version.unwrap_or_default(),
        Err(_) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
    };
    match api.watch(&WatchParams::default().timeout(290), &rv).await {
        Ok(stream) => {
            futures::pin_mut!(stream);
            let _ = stream.next().await;
        }
        Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
    }
}
