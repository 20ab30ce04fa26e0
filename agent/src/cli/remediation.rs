//! `hpk8s remediation status|resume`: the controller's remediation state
//! and closing its circuit breaker.

use std::path::PathBuf;

use lifecycle::kube::client::{self as kube_client, Credential};

use super::node::Local;
use super::{Cli, Output};

/// The remediation commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the circuit breaker's state and the nodes hpk8s holds.
    Status(Args),
    /// Close the circuit breaker (after checking why it opened): new
    /// actions resume, faults older than now no longer count towards it.
    Resume(Args),
}

impl Command {
    /// The output format asked for.
    pub fn output(&self) -> Output {
        match self {
            Command::Status(a) | Command::Resume(a) => a.output,
        }
    }
}

/// Common arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig with cluster-admin rights (default: the controller's
    /// /etc/kubernetes/admin.conf under --root).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Runs a remediation command.
pub async fn run(cli: &Cli, command: &Command) -> anyhow::Result<()> {
    let local = Local::load(cli)?;
    let args = match command {
        Command::Status(a) | Command::Resume(a) => a,
    };
    let client = match &args.kubeconfig {
        Some(path) => kube_client::from_kubeconfig(path, path)
            .await
            .map_err(lifecycle::Error::from)?,
        None => kube_client::client(&local.host, Credential::Admin)
            .await
            .map_err(lifecycle::Error::from)?,
    };
    match command {
        Command::Status(_) => {
            let status = lifecycle::ops::remediation::status(&client)
                .await
                .map_err(lifecycle::Error::from)?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Output::Text => {
                    match status.breaker {
                        "open" => println!(
                            "circuit breaker: OPEN since {} ({}); run `hpk8s remediation resume` once the cause is understood",
                            status.since.as_deref().unwrap_or("?"),
                            status.reason
                        ),
                        _ => println!("circuit breaker: closed"),
                    }
                    if status.held.is_empty() {
                        println!("no nodes held by hpk8s");
                    }
                    for h in &status.held {
                        println!(
                            "{}\t{}\t{}\t{:?}\tsince {}{}",
                            h.node,
                            h.reason,
                            h.action,
                            h.stage,
                            h.since,
                            if h.cordoned_by_hpk8s {
                                ""
                            } else {
                                "\t(cordon not hpk8s's)"
                            }
                        );
                    }
                }
            }
        }
        Command::Resume(_) => {
            let before = lifecycle::ops::remediation::resume(&client)
                .await
                .map_err(lifecycle::Error::from)?;
            match args.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"was_open": before.open, "reason": before.reason, "breaker": "closed"})
                ),
                Output::Text if before.open => {
                    println!(
                        "circuit breaker closed (it was open: {}); remediation resumes",
                        before.reason
                    )
                }
                Output::Text => println!(
                    "circuit breaker was already closed; faults before now no longer count towards it"
                ),
            }
        }
    }
    Ok(())
}
