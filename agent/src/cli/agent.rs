//! `hpk8s agent`: the long-running loops, on every node.

use super::Cli;
use super::node::Node;

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cli: &Cli) -> anyhow::Result<()> {
    let node = Node::load(cli).await?;
    lifecycle::agent::run(&node.cluster(), shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM (systemd stopping the unit) or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stop the agent with SIGINT");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
}
