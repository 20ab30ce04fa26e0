//! Benchmark: the operator commands over a large simulated cluster.
//!
//! `bench_operator [NODES] [RUNS] [HPK8S]` (default 5000 nodes, 3 runs,
//! `target/debug/hpk8s`): a simulated HyperPod cluster (test API server and
//! moto, `tests/src/sim.rs`) with NODES instances, 1 % of them orphans;
//! runs the real `hpk8s status --output json` and
//! `hpk8s delete-orphan-nodes --dry-run --output json` RUNS times each and
//! reports per command: wall time, the process's CPU time (user + system,
//! from the kernel's accounting of the child), and the API calls the
//! servers received (Kubernetes requests, SageMaker calls by operation).
//! Numbers as one JSON object on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use harness::sim::{Scenario, SimCluster};
use nix::sys::resource::{UsageWho, getrusage};

fn cpu_of_children() -> f64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[allow(clippy::disallowed_methods)] // a benchmark launches the real binary
fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let nodes: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let runs: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(3);
    let bin = args.get(2).map_or_else(harness::hpk8s_bin, PathBuf::from);
    let orphans = nodes / 100;
    let mut yaml = format!(
        "cluster: {{ name: bench-{nodes} }}\ngroups:\n  - {{ name: controller, instance_type: ml.m5.4xlarge, count: 1, control_plane: true }}\n  - {{ name: workers, count: {} }}\nnodes:\n",
        nodes - 1
    );
    for i in 0..orphans {
        let what = if i % 2 == 0 { "absent" } else { "Failure" };
        yaml.push_str(&format!(
            "  - {{ group: workers, index: {}, ready: \"Unknown\", for_minutes: 30, instance: {what} }}\n",
            i * 97 % (nodes - 1)
        ));
    }
    let scenario = Scenario::parse(&yaml)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let seeding = Instant::now();
    let sim = runtime.block_on(SimCluster::start(&scenario))?;
    let seeded_s = seeding.elapsed().as_secs_f64();
    let mut report = serde_json::json!({
        "nodes": nodes,
        "orphans": orphans,
        "runs": runs,
        "seed_s": seeded_s,
        "binary": bin.display().to_string(),
    });
    for (name, cmd) in [
        ("status", vec!["status", "--output", "json"]),
        (
            "delete_orphan_nodes_dry_run",
            vec!["delete-orphan-nodes", "--dry-run", "--output", "json"],
        ),
    ] {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut k8s_calls = 0;
        let mut sm_calls = serde_json::Value::Null;
        let mut reported = serde_json::Value::Null;
        for _ in 0..runs {
            sim.api.clear_requests();
            let sm_before = runtime.block_on(sim.moto.calls())?;
            let cpu_before = cpu_of_children();
            let started = Instant::now();
            let out = std::process::Command::new(&bin)
                .args(&cmd)
                .envs(sim.env())
                .env("HPK8S_ROOT", "/nonexistent-root")
                .output()
                .with_context(|| format!("run {}", bin.display()))?;
            walls.push(started.elapsed().as_secs_f64());
            cpus.push(cpu_of_children() - cpu_before);
            if !out.status.success() {
                bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            reported = doc["calls"].clone();
            if name.starts_with("delete") {
                let found = doc["orphans"].as_array().map_or(0, Vec::len);
                if found != orphans {
                    bail!("found {found} orphans, seeded {orphans}");
                }
            }
            k8s_calls = sim.api.requests().len();
            let sm_after = runtime.block_on(sim.moto.calls())?;
            sm_calls = serde_json::json!(
                sm_after
                    .iter()
                    .map(|(k, v)| (k.clone(), v - sm_before.get(k).copied().unwrap_or(0)))
                    .filter(|(_, v)| *v > 0)
                    .collect::<std::collections::BTreeMap<_, _>>()
            );
        }
        report[name] = serde_json::json!({
            "wall_s_median": median(walls.clone()),
            "wall_s": walls,
            "cpu_s_median": median(cpus.clone()),
            "cpu_s": cpus,
            "kubernetes_requests": k8s_calls,
            "sagemaker_calls": sm_calls,
            "calls_reported_by_hpk8s": reported,
        });
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
