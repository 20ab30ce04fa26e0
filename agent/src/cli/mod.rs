//! The command line: one module per subcommand. Each gets the node
//! (host, configuration, identity) loaded once by [`node::Node`].

mod agent;
mod bootstrap;
mod cluster_args;
mod config;
mod delete_orphan_nodes;
mod generate_new_token;
mod gpu_check;
mod identity;
mod node;
mod remediation;
mod restart_instance;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lifecycle::error::class::ExitClass;

use crate::logging;

/// Node-bootstrap agent for GPU Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "hpk8s", version, about)]
pub struct Cli {
    /// Host root to operate on. Anything other than `/` is for tests and for
    /// inspecting an image: commands then run inside it through chroot.
    #[arg(long, global = true, default_value = "/", env = "HPK8S_ROOT")]
    pub root: PathBuf,
    /// Config file (default: /etc/hpk8s/config.toml under --root; absent means defaults).
    #[arg(long, global = true, env = "HPK8S_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr (journald is used instead when its socket exists).
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    pub log_format: logging::Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of a command's result (and of its error).
#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prepare this node, then form the cluster (controller) or join it.
    Bootstrap(bootstrap::Args),
    /// Show who this node is and what cluster it belongs to.
    Identity(identity::Args),
    /// Long-running agent on every node, for systemd to supervise. On the
    /// controller: keeps a fresh join ticket published (rotating the
    /// bootstrap token before it expires), labels nodes that join later and
    /// remediates faulty nodes.
    /// Stops on SIGTERM or SIGINT.
    Agent,
    /// Controller only: create a new bootstrap token now and publish a join
    /// ticket with it; prints when it expires.
    GenerateNewToken(generate_new_token::Args),
    /// Probe this node's GPUs once (NVML): a table or JSON, the exit status
    /// by the worst fault (reboot, replace, degraded, probe failed).
    GpuCheck(gpu_check::Args),
    /// Every Node and instance of the cluster: readiness, GPU health,
    /// interruptions, what hpk8s holds, HyperPod status; mismatches flagged.
    Status(status::Args),
    /// Delete the Nodes whose instance is gone (absent, Failure, NotFound)
    /// and that have been NotReady beyond a grace period.
    DeleteOrphanNodes(delete_orphan_nodes::Args),
    /// Cordon and drain a node, have HyperPod replace its instance, delete
    /// the old Node and wait for the new instance's Node to be Ready.
    ReplaceInstance(restart_instance::Args),
    /// Cordon and drain a node, have its instance rebooted and wait for it
    /// to be Ready again (uncordoned if hpk8s cordoned it).
    RebootInstance(restart_instance::Args),
    /// Controller: the remediation circuit breaker and the nodes hpk8s
    /// holds (`status`), and resuming after the breaker opened (`resume`).
    Remediation {
        /// The remediation command.
        #[command(subcommand)]
        command: remediation::Command,
    },
    /// Configuration commands.
    Config {
        /// The configuration command.
        #[command(subcommand)]
        command: config::Command,
    },
}

impl Command {
    /// The output format the command was asked for.
    pub fn output(&self) -> Output {
        match self {
            Command::Bootstrap(a) => a.output,
            Command::Identity(a) => a.output,
            Command::GenerateNewToken(a) => a.output,
            Command::GpuCheck(a) => a.output,
            Command::Remediation { command } => command.output(),
            Command::Status(a) => a.cluster.output,
            Command::DeleteOrphanNodes(a) => a.cluster.output,
            Command::ReplaceInstance(a) | Command::RebootInstance(a) => a.cluster.output,
            Command::Agent | Command::Config { .. } => Output::Text,
        }
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Config { command } => config::run(&cli, command),
        Command::Identity(args) => identity::run(&cli, args).await,
        Command::Bootstrap(args) => bootstrap::run(&cli, args).await,
        Command::Agent => agent::run(&cli).await,
        Command::GenerateNewToken(args) => generate_new_token::run(&cli, args).await,
        Command::GpuCheck(args) => gpu_check::run(&cli, args).await,
        Command::Remediation { command } => remediation::run(&cli, command).await,
        Command::Status(args) => status::run(&cli, args).await,
        Command::DeleteOrphanNodes(args) => delete_orphan_nodes::run(&cli, args).await,
        Command::ReplaceInstance(args) => {
            restart_instance::run(&cli, args, lifecycle::aws::sagemaker::Restart::Replace).await
        }
        Command::RebootInstance(args) => {
            restart_instance::run(&cli, args, lifecycle::aws::sagemaker::Restart::Reboot).await
        }
    }
}

/// A command's failure, as the operator and scripts see it.
pub struct Failure {
    class: ExitClass,
    kind: &'static str,
    message: String,
    /// The command already printed its result (a `gpu-check` report): no
    /// second JSON document on stdout.
    result_printed: bool,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let (class, kind) = lifecycle::error::classify_any(e.as_ref());
        // Library errors carry their causes in one line already; anything
        // else gets its context chain.
        let message = match e.downcast_ref::<lifecycle::Error>() {
            Some(le) => le.to_string(),
            None => format!("{e:#}"),
        };
        let result_printed = matches!(
            e.downcast_ref::<lifecycle::Error>(),
            Some(lifecycle::Error::GpuCheck(_))
        );
        Failure {
            class,
            kind,
            message: message.replace('\n', " "),
            result_printed,
        }
    }
}

impl Failure {
    /// Prints the failure (one line on stderr; with `--output json` also a
    /// JSON document on stdout), logs it to the journal with its kind and
    /// class as fields, and gives the exit code.
    pub fn report(&self, output: Output, journald: bool) -> ExitCode {
        if journald {
            tracing::error!(
                error_kind = self.kind,
                exit_class = self.class.name(),
                exit_code = self.class.code(),
                "{}",
                self.message
            );
        }
        if output == Output::Json && !self.result_printed {
            let doc = serde_json::json!({"error": {
                "kind": self.kind,
                "class": self.class.name(),
                "exit_code": self.class.code(),
                "message": self.message,
            }});
            println!("{doc}");
        }
        eprintln!("error[{}]: {}", self.kind, self.message);
        crate::exit_code(self.class)
    }
}
