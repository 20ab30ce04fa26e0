//! `hpk8s generate-new-token`: a new bootstrap token and join ticket now.

use super::node::Node;
use super::{Cli, Output};

/// Arguments of `hpk8s generate-new-token`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also print the token itself (it lets any machine join the cluster).
    #[arg(long)]
    pub show_token: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs `hpk8s generate-new-token`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let node = Node::load(cli).await?;
    let cx = node.cluster();
    let ticket = lifecycle::ops::generate_new_token::generate_new_token(&cx).await?;
    let location = cx.rendezvous_location();
    match args.output {
        Output::Json => {
            let mut shown = serde_json::json!({
                "token_id": ticket.token.id(),
                "expires_at": ticket.expires_at_rfc3339(),
                "rendezvous": location,
            });
            if args.show_token {
                shown["token"] = ticket.token.expose().into();
            }
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        Output::Text => {
            println!(
                "published a join ticket with token {} to {location}; it expires at {}",
                ticket.token.id(),
                ticket.expires_at_rfc3339()
            );
            if args.show_token {
                println!("token: {}", ticket.token.expose());
            }
        }
    }
    Ok(())
}
