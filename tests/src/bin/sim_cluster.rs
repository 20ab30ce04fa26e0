//! `sim_cluster SCENARIO.yaml`: a simulated HyperPod cluster (the test API
//! server and moto with hpk8s's extension) loaded from a scenario, until
//! Ctrl-C or SIGTERM. Prints the environment that points `hpk8s` at it:
//!
//! ```sh
//! cargo run -p hpk8s-tests --bin sim_cluster -- tests/scenarios/small.yaml
//! # in another shell: source the printed env file, then
//! hpk8s status
//! ```

use std::path::PathBuf;

use anyhow::Context as _;
use harness::sim::{Scenario, SimCluster};

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: sim_cluster SCENARIO.yaml")?,
    );
    let scenario = Scenario::load(&path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sim = SimCluster::start(&scenario).await?;
        let env = sim.write_env()?;
        println!(
            "simulated cluster {} ({} instances) is up",
            sim.seeded.cluster_name,
            sim.nodes.len()
        );
        for (k, v) in sim.env() {
            println!("export {k}='{v}'");
        }
        println!("# or: source {}", env.display());
        println!("# then e.g.: hpk8s status; hpk8s delete-orphan-nodes --dry-run");
        // Ctrl-C or a plain kill: either way moto goes with us (its Drop).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        println!("stopping");
        drop(sim);
        anyhow::Ok(())
    })
}
