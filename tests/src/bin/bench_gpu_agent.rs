//! Benchmark: the node agent's GPU health path, with the NVML stub and the
//! test API server. Three measurements, numbers as one JSON object on
//! stdout:
//!
//! - `bench_gpu_agent latency [ROUNDS]` (default 200): an XID handed over
//!   by the stub's event set (a reboot-class XID 79, timestamped by the stub
//!   as it returns it) until the `GPUHealthy=False` condition reaches a
//!   watch on the Node (admin credential, kube's watcher). Each round
//!   resets the condition, clears the GPU history and starts the agent's
//!   loop afresh, so every round measures a change.
//! - `bench_gpu_agent probe [COUNT]` (default 1000): one full probe of 8
//!   GPUs (every signal) through the real nvml-wrapper.
//! - `bench_gpu_agent remediation [ROUNDS] [NODES]` (default 200 over 50
//!   nodes): the same XID, on node `round % NODES` (the node agent's loop
//!   with that node's kubelet credential), until the controller's
//!   remediation loop (running beside it, watching all the Nodes) has the
//!   `hpk8s.io/gpu-unhealthy` taint on that Node, as a watch sees it. Each
//!   round then reports the node healthy and waits for the release.
//! - `bench_gpu_agent idle [SECS] [HPK8S]` (default 60 s,
//!   `target/debug/hpk8s`): the real `hpk8s agent` process with 8 GPUs and
//!   default intervals, after its first publish: RSS (peak of one sample a
//!   second) and CPU time over SECS.
//!
//! The stub's fixture path is set in the environment before it loads: the
//! binary re-runs itself with `HPK8S_NVML_FIXTURE` (and the delivery log)
//! set.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use harness::kube_api::{NodeSpec, TestApiServer};
use harness::nvml::{FIXTURE_ENV, FakeGpu, NvmlFixture, stub_path};
use k8s_openapi::api::core::v1::Node;
use lifecycle::agent::gpu_health::{HealthState, Liveness, Loop};
use lifecycle::config::GpuHealthConfig;
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};

const NODE: &str = "bench-gpu";
const DELIVERY_LOG_ENV: &str = "HPK8S_NVML_DELIVERY_LOG";
/// The XID every latency round delivers, and when (after the loop's event
/// set exists): long enough for the loop's first, healthy publish.
const XID: u64 = 79;
const XID_AT_MS: u64 = 400;

#[allow(clippy::disallowed_methods)] // a benchmark launches itself and the agent
fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map_or("latency", String::as_str).to_string();
    if std::env::var_os(FIXTURE_ENV).is_none() {
        // Parent: write the fixture, re-run with it in the environment.
        let dir = tempfile::tempdir()?;
        let fixture = dir.path().join("nvml.json");
        let mut f = NvmlFixture::new().gpus((0..8).map(FakeGpu::h100));
        if mode == "latency" || mode == "remediation" {
            f = f.xid(3, XID, XID_AT_MS);
        }
        f.write(&fixture)?;
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(&args)
            .env(FIXTURE_ENV, &fixture)
            .env(DELIVERY_LOG_ENV, dir.path().join("delivered.log"))
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let number = |i: usize, default: u64| -> anyhow::Result<u64> {
        Ok(args
            .get(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let report = match mode.as_str() {
        "latency" => runtime.block_on(latency(usize::try_from(number(1, 200)?)?))?,
        "probe" => probe(usize::try_from(number(1, 1000)?)?)?,
        "remediation" => runtime.block_on(remediation(
            usize::try_from(number(1, 200)?)?,
            usize::try_from(number(2, 50)?)?,
        ))?,
        "idle" => {
            let secs = number(1, 60)?;
            let bin = args.get(2).map_or_else(harness::hpk8s_bin, PathBuf::from);
            runtime.block_on(idle(secs, &bin))?
        }
        other => bail!("unknown mode {other}: latency, probe, remediation or idle"),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// A p5.48xlarge's bus under `root`: 8 H100s and 32 EFA adapters.
fn fake_bus(root: &Path) -> anyhow::Result<()> {
    for i in 0..8u32 {
        let d = root.join(format!(
            "sys/bus/pci/devices/0000:{:02x}:00.0",
            0x53 + i * 0x10
        ));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("vendor"), "0x10de\n")?;
        std::fs::write(d.join("device"), "0x2330\n")?;
        std::fs::write(d.join("class"), "0x030200\n")?;
    }
    for i in 0..32u32 {
        let d = root.join(format!("sys/bus/pci/devices/0000:{:02x}:01.0", 0x10 + i));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("vendor"), "0x1d0f\n")?;
        std::fs::write(d.join("device"), "0xefa1\n")?;
        std::fs::write(d.join("class"), "0x020000\n")?;
    }
    let boot = root.join("proc/sys/kernel/random/boot_id");
    std::fs::create_dir_all(boot.parent().context("boot_id parent")?)?;
    std::fs::write(boot, "bench-boot\n")?;
    Ok(())
}

fn kubelet_conf(root: &Path, api: &TestApiServer) -> anyhow::Result<()> {
    kubelet_conf_of(root, api, NODE)
}

fn kubelet_conf_of(root: &Path, api: &TestApiServer, node: &str) -> anyhow::Result<()> {
    let conf = root.join("etc/kubernetes/kubelet.conf");
    std::fs::create_dir_all(conf.parent().context("kubelet.conf parent")?)?;
    std::fs::copy(api.node_kubeconfig(node)?, &conf)?;
    Ok(())
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a rank within the slice
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn gpu_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "GPUHealthy")
        .map(|c| c.status.clone())
}

async fn latency(rounds: usize) -> anyhow::Result<serde_json::Value> {
    let api = TestApiServer::start().await?;
    api.register_node(&NodeSpec {
        name: NODE.into(),
        addresses: vec![("InternalIP".into(), "10.1.0.5".into())],
        labels: Vec::new(),
        taints: Vec::new(),
    })?;
    let root = tempfile::tempdir()?;
    fake_bus(root.path())?;
    kubelet_conf(root.path(), &api)?;
    let log = PathBuf::from(std::env::var_os(DELIVERY_LOG_ENV).context("delivery log")?);

    let kubeconfig = kube::config::Kubeconfig::read_from(api.admin_kubeconfig_path())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    // What the watch saw: (received at, GPUHealthy status).
    let (seen, watch) = watch_nodes(&nodes, gpu_status);
    let result = rounds_of_latency(rounds, root.path(), &log, &nodes, &seen).await;
    watch.abort();
    result
}

async fn rounds_of_latency(
    rounds: usize,
    root: &Path,
    log: &Path,
    nodes: &kube::Api<Node>,
    seen: &Mutex<Vec<(SystemTime, String)>>,
) -> anyhow::Result<serde_json::Value> {
    let config = GpuHealthConfig {
        library_path: Some(stub_path()),
        ..GpuHealthConfig::default()
    };
    let mut latencies_ms = Vec::with_capacity(rounds);
    let started = Instant::now();
    for round in 0..rounds {
        // Reset: the condition True (as the admin), no GPU history.
        let reset_at = SystemTime::now();
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "GPUHealthy", "status": "True", "reason": "BenchReset", "message": format!("round {round}"),
            "lastHeartbeatTime": lifecycle::values::time::rfc3339(reset_at),
            "lastTransitionTime": lifecycle::values::time::rfc3339(reset_at),
        }]}});
        nodes
            .patch_status(
                NODE,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await?;
        wait(
            Duration::from_secs(10),
            "the reset condition through the watch",
            || {
                let s = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.iter()
                    .any(|(at, status)| *at >= reset_at && status == "True")
            },
        )
        .await?;
        let _ = std::fs::remove_file(root.join("var/lib/hpk8s/gpu-history.json"));
        let delivered_before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count();

        let (stop, agent) = start_agent(root, &config, NODE);
        let delivered_at = delivered_after(log, delivered_before).await?;
        let mut received = None;
        wait(
            Duration::from_secs(10),
            "the False condition through the watch",
            || {
                let s = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                received = s
                    .iter()
                    .find(|(at, status)| nanos(*at) >= delivered_at && status == "False")
                    .map(|(at, _)| nanos(*at));
                received.is_some()
            },
        )
        .await?;
        let received = received.context("receipt time")?;
        latencies_ms.push((received - delivered_at) as f64 / 1e6);
        let _ = stop.send(());
        agent.await?;
    }
    latencies_ms.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "mode": "latency",
        "rounds": rounds,
        "xid_to_condition_ms": {
            "p50": percentile(&latencies_ms, 50.0),
            "p99": percentile(&latencies_ms, 99.0),
            "max": latencies_ms.last().copied().unwrap_or(f64::NAN),
            "min": latencies_ms.first().copied().unwrap_or(f64::NAN),
        },
        "wall_s": started.elapsed().as_secs_f64(),
    }))
}

async fn wait(within: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > within {
            bail!("{what} did not happen within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn probe(count: usize) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    fake_bus(root.path())?;
    let host = Host::new(
        root.path(),
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces::default()),
    );
    let hardware = lifecycle::hardware::Hardware::detect(&host)?;
    let config = GpuHealthConfig {
        library_path: Some(stub_path()),
        ..GpuHealthConfig::default()
    };
    let opened_at = Instant::now();
    let opened = lifecycle::gpu::probe::open(&config);
    let open_ms = opened_at.elapsed().as_secs_f64() * 1e3;
    let expected = lifecycle::gpu::expected::expected("p5.48xlarge", &config.expected);
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let snapshot =
            lifecycle::gpu::probe::probe(&opened, &hardware, Some("p5.48xlarge"), expected);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if snapshot.gpus.len() != 8 {
            bail!("the probe saw {} GPUs, not 8", snapshot.gpus.len());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "mode": "probe",
        "gpus": 8,
        "probes": count,
        "open_ms": open_ms,
        "probe_ms": {
            "p50": percentile(&times, 50.0),
            "p99": percentile(&times, 99.0),
            "max": times.last().copied().unwrap_or(f64::NAN),
        },
    }))
}

/// `utime + stime` of `pid` in clock ticks, and its RSS in KiB.
fn sample(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11).context("utime")?.parse::<u64>()?
        + fields.get(12).context("stime")?.parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse::<u64>()?;
    Ok((ticks, rss))
}

#[allow(clippy::disallowed_methods)] // a benchmark launches the agent
async fn idle(secs: u64, bin: &Path) -> anyhow::Result<serde_json::Value> {
    let api = TestApiServer::start().await?;
    api.register_node(&NodeSpec {
        name: NODE.into(),
        addresses: vec![("InternalIP".into(), "127.0.0.1".into())],
        labels: Vec::new(),
        taints: Vec::new(),
    })?;
    let root = tempfile::tempdir()?;
    fake_bus(root.path())?;
    kubelet_conf(root.path(), &api)?;
    let config = format!(
        r#"[identity]
source = "static"
cluster_name = "bench"

[[identity.nodes]]
name = "bench-controller"
address = "10.255.0.1"
role = "controller"

[[identity.nodes]]
name = "{NODE}"
address = "127.0.0.1"
role = "worker"
instance_type = "p5.48xlarge"

[node]
address = "127.0.0.1"

[gpu_health]
library_path = "{}"
metrics_address = "127.0.0.1:0"
"#,
        stub_path().display()
    );
    let config_path = root.path().join("etc/hpk8s/config.toml");
    std::fs::create_dir_all(config_path.parent().context("config parent")?)?;
    std::fs::write(&config_path, config)?;
    let mut child = tokio::process::Command::new(bin)
        .arg("--root")
        .arg(root.path())
        .arg("agent")
        .env("HPK8S_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("agent pid")?;
    // Ready: the condition is on the Node.
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let published = api
            .get_json("nodes", "", NODE)
            .and_then(|n| n["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["type"] == "GPUHealthy"));
        if published {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = e.read_to_string(&mut err).await;
            }
            bail!("the agent exited ({status}) before publishing:\n{err}");
        }
        if Instant::now() > ready_by {
            bail!("the agent did not publish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ticks_before, rss_start) = sample(pid)?;
    let start = Instant::now();
    let mut rss_peak = rss_start;
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_peak = rss_peak.max(sample(pid)?.1);
    }
    let (ticks_after, rss_end) = sample(pid)?;
    let elapsed = start.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let cpu_s = (ticks_after - ticks_before) as f64 / hz;
    child.kill().await?;
    Ok(serde_json::json!({
        "mode": "idle",
        "binary": bin.display().to_string(),
        "gpus": 8,
        "seconds": elapsed,
        "rss_kib": { "start": rss_start, "end": rss_end, "peak": rss_peak },
        "cpu_seconds": cpu_s,
        "cpu_percent_of_one_core": cpu_s / elapsed * 100.0,
    }))
}

/// What a watch on the Nodes sees, as `what(node)` (when `Some`) with the
/// time it arrived, until the task is aborted.
#[allow(clippy::type_complexity)] // a shared log and its task
fn watch_nodes<T: Send + 'static>(
    nodes: &kube::Api<Node>,
    what: impl Fn(&Node) -> Option<T> + Send + 'static,
) -> (
    Arc<Mutex<Vec<(SystemTime, T)>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<Vec<(SystemTime, T)>>> = Arc::default();
    let log = seen.clone();
    let nodes = nodes.clone();
    let task = tokio::spawn(async move {
        use kube::runtime::WatchStreamExt as _;
        // With backoff: a watcher without it spins on errors.
        let stream = kube::runtime::watcher(nodes, kube::runtime::watcher::Config::default())
            .default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(
                kube::runtime::watcher::Event::Apply(node)
                | kube::runtime::watcher::Event::InitApply(node),
            ) = event
                && let Some(v) = what(&node)
            {
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((SystemTime::now(), v));
            }
        }
    });
    (seen, task)
}

/// Starts the node agent's GPU loop for `node` (its kubelet credential
/// under `root`): the stop switch and the task.
fn start_agent(
    root: &Path,
    config: &GpuHealthConfig,
    node: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let host = Host::new(
        root,
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces::default()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(
        Loop {
            host,
            config: config.clone(),
            instance_type: Some("p5.48xlarge".into()),
            node_name: node.to_string(),
            status: None,
            state: Arc::new(Mutex::new(HealthState::default())),
            liveness: Arc::new(Liveness::default()),
        }
        .run(async {
            let _ = stopped.await;
        }),
    );
    (stop, agent)
}

/// When the stub handed over the XID after the `before`-th delivery (ns
/// since the epoch, from its delivery log).
async fn delivered_after(log: &Path, before: usize) -> anyhow::Result<u128> {
    let mut delivered_at = None;
    wait(
        Duration::from_secs(10),
        "the stub delivering the XID",
        || {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            delivered_at = text
                .lines()
                .nth(before)
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|n| n.parse::<u128>().ok());
            delivered_at.is_some()
        },
    )
    .await?;
    delivered_at.context("delivery time")
}

fn gpu_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "hpk8s.io/gpu-unhealthy"))
}

async fn remediation(rounds: usize, node_count: usize) -> anyhow::Result<serde_json::Value> {
    use lifecycle::remediation::controller::{self, Setup};
    let api = TestApiServer::start().await?;
    let names: Vec<String> = (0..node_count)
        .map(|i| format!("bench-gpu-{i:03}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        api.register_node(&NodeSpec {
            name: name.clone(),
            addresses: vec![(
                "InternalIP".into(),
                format!("10.1.{}.{}", i / 250, 10 + i % 250),
            )],
            labels: Vec::new(),
            taints: Vec::new(),
        })?;
        api.set_ready(name, true)?;
    }
    let root = tempfile::tempdir()?;
    fake_bus(root.path())?;
    let log = PathBuf::from(std::env::var_os(DELIVERY_LOG_ENV).context("delivery log")?);
    let admin = api.admin_kubeconfig_path();
    let client = lifecycle::kube::client::from_kubeconfig_with(
        admin,
        admin,
        lifecycle::kube::client::Retries::Caller,
    )
    .await?;
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());

    // The controller's remediation loop: acting on every fault at once
    // (no budget, breaker or rate in the way), releasing at once.
    let mut config = lifecycle::config::RemediationConfig {
        recovery_after_secs: 0,
        max_unavailable_percent: 100,
        breaker_percent: 100,
        max_actions_per_hour: 1_000_000,
        ..lifecycle::config::RemediationConfig::default()
    };
    config.needs_reboot = lifecycle::config::ClassAction::Cordon;
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(
        Setup {
            client: client.clone(),
            config,
            host: Host::new(
                root.path(),
                Arc::new(ScriptedRunner::new()),
                Arc::new(FixedInterfaces::default()),
            ),
            route: lifecycle::remediation::restart::Route::SelfManaged,
            controller_groups: Vec::new(),
            ticket_check: None,
            metrics: Arc::default(),
            pass_every: controller::PASS_EVERY,
        },
        async {
            let _ = controller_stopped.await;
        },
    ));

    // What the watch saw: (received at, (node, tainted)).
    let (seen, watch) = watch_nodes(&nodes, |node| {
        Some((
            node.metadata.name.clone().unwrap_or_default(),
            gpu_taint(node),
        ))
    });
    let gpu_config = GpuHealthConfig {
        library_path: Some(stub_path()),
        ..GpuHealthConfig::default()
    };
    let mut latencies_ms = Vec::with_capacity(rounds);
    let started = Instant::now();
    for round in 0..rounds {
        let name = &names[round % node_count];
        // Healthy, untainted, before the round.
        let reset_at = SystemTime::now();
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "GPUHealthy", "status": "True", "reason": "BenchReset", "message": format!("round {round}"),
            "lastHeartbeatTime": lifecycle::values::time::rfc3339(reset_at),
            "lastTransitionTime": lifecycle::values::time::rfc3339(reset_at),
        }]}});
        nodes
            .patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await?;
        wait(Duration::from_secs(20), "the node untainted", || {
            let s = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.iter()
                .rev()
                .find(|(_, (n, _))| n == name)
                .is_some_and(|(at, (_, tainted))| *at >= reset_at && !tainted)
        })
        .await?;
        let _ = std::fs::remove_file(root.path().join("var/lib/hpk8s/gpu-history.json"));
        kubelet_conf_of(root.path(), &api, name)?;
        let delivered_before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count();
        let (stop, agent) = start_agent(root.path(), &gpu_config, name);
        let delivered_at = delivered_after(&log, delivered_before).await?;
        let mut received = None;
        wait(
            Duration::from_secs(10),
            "the taint through the watch",
            || {
                let s = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                received = s
                    .iter()
                    .find(|(at, (n, tainted))| n == name && *tainted && nanos(*at) >= delivered_at)
                    .map(|(at, _)| nanos(*at));
                received.is_some()
            },
        )
        .await?;
        let received = received.context("receipt time")?;
        latencies_ms.push((received - delivered_at) as f64 / 1e6);
        let _ = stop.send(());
        agent.await?;
    }
    watch.abort();
    let _ = stop_controller.send(());
    controller.await?;
    latencies_ms.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "mode": "remediation",
        "rounds": rounds,
        "nodes": node_count,
        "xid_to_taint_ms": {
            "p50": percentile(&latencies_ms, 50.0),
            "p99": percentile(&latencies_ms, 99.0),
            "max": latencies_ms.last().copied().unwrap_or(f64::NAN),
            "min": latencies_ms.first().copied().unwrap_or(f64::NAN),
        },
        "wall_s": started.elapsed().as_secs_f64(),
    }))
}
