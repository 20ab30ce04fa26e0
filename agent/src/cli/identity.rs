//! `hpk8s identity`: who this node is and what cluster it belongs to.

use super::node::Node;
use super::{Cli, Output};

/// Arguments of `hpk8s identity`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `hpk8s identity`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let node = Node::load(cli).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&node.identity)?),
        Output::Text => print!("{}", lifecycle::identity::render_text(&node.identity)),
    }
    Ok(())
}
