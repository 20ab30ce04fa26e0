//! `hpk8s config`: the effective configuration.

use clap::Subcommand;

use super::Cli;
use super::node::Local;

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration, secrets redacted.
    Show,
}

/// Runs `hpk8s config …`.
pub fn run(cli: &Cli, command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Show => print!("{}", Local::load(cli)?.config.show()),
    }
    Ok(())
}
