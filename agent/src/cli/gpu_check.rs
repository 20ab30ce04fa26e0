//! `hpk8s gpu-check`: one probe of this node's GPUs, printed as a table or
//! JSON (`docs/gpu-health.md` has the schema); the exit status is the worst
//! class's (0 healthy or informational only, see `docs/exit-codes.md`).

use lifecycle::gpu::check::{self, Verdict};
use lifecycle::gpu::history;

use super::node::Local;
use super::{Cli, Output};

/// Arguments of `hpk8s gpu-check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Forget the XIDs and faults recorded in earlier checks and boots
    /// (after a GPU or the instance was replaced), then check.
    #[arg(long)]
    pub clear_history: bool,
}

/// Runs `hpk8s gpu-check`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let Local { host, config } = Local::load(cli)?;
    if args.clear_history {
        history::clear(&host)?;
        eprintln!("GPU history cleared ({})", history::HISTORY);
    }
    // The instance type sets how many GPUs to expect; an identity that
    // cannot be resolved here (no inventory) only loses that expectation.
    let instance_type = match lifecycle::identity::resolve(&host, &config).await {
        Ok(id) => id.instance_type,
        Err(e) => {
            tracing::debug!(error = %e, "no identity: checking without the instance type's GPU count");
            None
        }
    };
    let gpu = config.gpu_health.clone();
    let report =
        tokio::task::spawn_blocking(move || check::check(&host, &gpu, instance_type)).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", check::render_text(&report)),
    }
    match Verdict::of(&report) {
        Some(v) => Err(lifecycle::Error::from(v).into()),
        None => Ok(()),
    }
}
