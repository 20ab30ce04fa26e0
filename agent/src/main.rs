//! `hpk8s`: turns bare GPU instances into a Kubernetes cluster.
//!
//! This binary is thin on purpose: it parses the command line, sets up
//! logging, loads the config, wires the real host seams and calls into the
//! `lifecycle` library. Exit codes come from the library's errors
//! (`docs/exit-codes.md`).

mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use lifecycle::cluster::phase as cluster;
use lifecycle::cluster::rendezvous::Rendezvous;
use lifecycle::config::{self, Config};
use lifecycle::host::{Host, SystemInterfaces, SystemRunner};
use lifecycle::plan::Plan;
use lifecycle::{identity, prepare};

/// Node-bootstrap agent for GPU Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "hpk8s", version, about)]
struct Cli {
    /// Host root to operate on. Anything other than `/` is for tests and for
    /// inspecting an image: commands then run inside it through chroot.
    #[arg(long, global = true, default_value = "/", env = "HPK8S_ROOT")]
    root: PathBuf,
    /// Config file (default: /etc/hpk8s/config.toml under --root; absent means defaults).
    #[arg(long, global = true, env = "HPK8S_CONFIG")]
    config: Option<PathBuf>,
    /// Log format on stderr (journald is used instead when its socket exists).
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Phase {
    /// Host preparation: packages, networking, instance store, containerd.
    Prepare,
    /// Form the cluster (controller) or join it (workers).
    Cluster,
    /// Every phase: prepare, then cluster.
    All,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare this node, then form the cluster (controller) or join it.
    Bootstrap {
        /// Which phase to run.
        #[arg(long, value_enum, default_value_t = Phase::All)]
        phase: Phase,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Plan output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show who this node is and what cluster it belongs to.
    Identity {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Long-running agent. On the controller: keeps a fresh join ticket
    /// published (rotating the bootstrap token before it expires) and labels
    /// nodes that join later. Stops on SIGTERM or SIGINT.
    Agent,
    /// Controller only: create a new bootstrap token now and publish a join
    /// ticket with it; prints when it expires.
    GenerateNewToken {
        /// Also print the token itself (it lets any machine join the cluster).
        #[arg(long)]
        show_token: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Show,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // kube's TLS and the AWS SDK's may link different rustls providers;
    // one process-wide default keeps rustls from having to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let journald = logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Library errors already carry their causes in one line; printing
            // the source chain as well would repeat them.
            let (code, message) = match e.downcast_ref::<lifecycle::Error>() {
                Some(le) => (le.exit_code(), le.to_string()),
                None => (1, format!("{e:#}")),
            };
            let message = message.replace('\n', " ");
            if journald {
                tracing::error!(exit_code = code, "{message}");
            }
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, lifecycle::Error> {
    Ok(match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => {
            let host_path = cli.root.join(config::DEFAULT_PATH.trim_start_matches('/'));
            Config::load(&host_path, false)?
        }
    })
}

/// The join-ticket rendezvous of this node's cluster.
async fn connect(
    host: &Host,
    config: &Config,
    id: &identity::NodeIdentity,
) -> Result<Rendezvous, lifecycle::Error> {
    Rendezvous::connect(host, &config.rendezvous, id, cluster::cluster_key(id)).await
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    let host = Host::new(
        &cli.root,
        Arc::new(SystemRunner::new(&cli.root)),
        Arc::new(SystemInterfaces),
    );
    match cli.command {
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            print!("{}", config.show());
        }
        Command::Identity { output } => {
            let id = identity::resolve(&host, &config)
                .await
                .map_err(lifecycle::Error::from)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&id)?),
                Output::Text => print!("{}", identity::render_text(&id)),
            }
        }
        Command::Agent => {
            let id = identity::resolve(&host, &config)
                .await
                .map_err(lifecycle::Error::from)?;
            if id.role != identity::Role::Controller {
                tracing::info!(role = ?id.role, "nothing for the agent to do on this node yet");
                return Ok(());
            }
            let rendezvous = connect(&host, &config, &id).await?;
            let cx = cluster::Context {
                host: &host,
                config: &config,
                identity: &id,
                rendezvous: Some(&rendezvous),
            };
            lifecycle::cluster::controller::run_agent(&cx, shutdown_signal()).await?;
        }
        Command::GenerateNewToken { show_token, output } => {
            let id = identity::resolve(&host, &config)
                .await
                .map_err(lifecycle::Error::from)?;
            let rendezvous = connect(&host, &config, &id).await?;
            let cx = cluster::Context {
                host: &host,
                config: &config,
                identity: &id,
                rendezvous: Some(&rendezvous),
            };
            let ticket = lifecycle::cluster::controller::generate_new_token(&cx).await?;
            let mut shown = serde_json::json!({
                "token_id": ticket.token.id(),
                "expires_at": ticket.expires_at_rfc3339(),
                "rendezvous": rendezvous.location(),
            });
            if show_token {
                shown["token"] = ticket.token.expose().into();
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
                Output::Text => {
                    println!(
                        "published a join ticket with token {} to {}; it expires at {}",
                        ticket.token.id(),
                        rendezvous.location(),
                        ticket.expires_at_rfc3339()
                    );
                    if show_token {
                        println!("token: {}", ticket.token.expose());
                    }
                }
            }
        }
        Command::Bootstrap {
            phase,
            dry_run,
            output,
        } => {
            let id = identity::resolve(&host, &config)
                .await
                .map_err(lifecycle::Error::from)?;
            let prepare_cx = prepare::Context {
                host: &host,
                config: &config,
                identity: &id,
            };
            let run_prepare = matches!(phase, Phase::Prepare | Phase::All);
            let run_cluster = matches!(phase, Phase::Cluster | Phase::All);
            // Built before anything changes, so that a missing region or a
            // bad rendezvous setting leaves the host untouched. A dry run
            // makes no remote call and needs none.
            let rendezvous = if run_cluster && id.joins && !dry_run {
                Some(connect(&host, &config, &id).await?)
            } else {
                None
            };
            let cluster_cx = cluster::Context {
                host: &host,
                config: &config,
                identity: &id,
                rendezvous: rendezvous.as_ref(),
            };
            let mut plans: Vec<Plan> = Vec::new();
            if run_prepare && run_cluster && !dry_run {
                // What phase cluster would refuse (a pod CIDR too small for
                // the cluster, a half-initialised control plane) must stop
                // the run before phase prepare changes the host.
                cluster::plan(&cluster_cx).await?;
            }
            if run_prepare {
                plans.push(if dry_run {
                    prepare::plan(&prepare_cx).await?
                } else {
                    prepare::apply(&prepare_cx).await?
                });
            }
            if run_cluster {
                plans.push(if dry_run {
                    cluster::plan(&cluster_cx).await?
                } else {
                    cluster::apply(&cluster_cx).await?
                });
            }
            print_plans(&plans, output, dry_run)?;
        }
    }
    Ok(())
}
