//! The multi-host test bed for cluster formation: one controller and N
//! workers, each a real systemd node ([`NspawnNode`]) with its own address
//! on one LAN ([`Lan`]), each running the real `hpk8s` binary, against
//! moto's Secrets Manager and a Kubernetes binary mirror on the LAN's
//! gateway, the [`TestApiServer`] listening on the controller's own
//! `address:6443`, and the kubeadm stand-in installed by phase prepare as
//! `/usr/bin/kubeadm`.
//!
//! ```no_run
//! use std::time::Duration;
//! use harness::cluster_bed::ClusterBed;
//! # fn demo() -> anyhow::Result<()> {
//! let bed = ClusterBed::builder().workers(3).gpu_worker(0, 8).build()?;
//! let argv = harness::cluster_bed::ArgvRecorder::start();
//! let mut runs = bed.spawn_all(&["hpk8s", "bootstrap"])?;
//! for r in &mut runs {
//!     let out = r.wait(Duration::from_secs(120))?;
//!     assert!(out.status.success(), "{}", bed.all_logs());
//! }
//! let ticket = bed.read_secret()?.expect("ticket published");
//! assert!(!argv.saw(ticket["token"].as_str().unwrap()));
//! # Ok(()) }
//! ```
//!
//! The bed's servers run on its own multi-threaded tokio runtime, so a
//! scenario test is a plain `#[test]` that may block (waiting on a node)
//! while nodes talk to the API server; run async code with
//! [`ClusterBed::block_on`]. Dropping the bed powers the nodes off and
//! removes their namespaces, the LAN, the servers and every file.
//!
//! Commands started in nodes ([`BedNode::spawn`], [`BedNode::exec`]) die
//! with the thread that started them: start them from the test's thread.
//!
//! Every node gets [`RESOURCE_CONFIG`] (HyperPod format, its LAN address
//! as `CustomerIpAddress`), [`CONFIG_TOML`] (controller group, the mirror,
//! Kubernetes [`K8S_VERSION`], a short rendezvous poll cap and token TTL),
//! the stand-in's JSON ([`STAND_IN_JSON`]), the cluster CA ([`CA_CERT`]),
//! and the bed's environment ([`ClusterBed::node_env`]: stand-in JSON,
//! moto endpoint, static credentials, region, IMDS off) for commands run
//! through [`BedNode`], in [`ENV_FILE`] and for every systemd unit.
//!
//! Fake hardware: every node's `/sys/bus/pci/devices` is a tree the bed
//! writes (an ENA and an NVMe function, plus NVIDIA GPUs and EFA adapters
//! as asked), bind-mounted from inside the node after boot (nspawn mounts
//! its `/sys` over its own `--bind`s there), so what `lifecycle::hardware`
//! detects is what the test says, not what the build machine has.
//! `/sys/class/infiniband` is left alone: sysfs is read-only and has no
//! such class here, so there is no mount point; EFA is detected from the
//! PCI tree.

pub mod argv;
pub mod lan;

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

pub use self::argv::ArgvRecorder;
pub use self::lan::Lan;
use crate::kube_api::TestApiServer;
use crate::kubeadm_stand_in::StandInConfig;
use crate::mirror::{MirrorBuilder, MirrorLayout, MirrorServer};
use crate::moto::Moto;
use crate::netns::{Netns, resolve};
use crate::node::{self, NspawnNode, kill_tree};

/// Kubernetes version of the mirror, the config and the stand-in.
pub const K8S_VERSION: &str = "1.34.1";
/// The controller's instance group.
pub const CONTROLLER_GROUP: &str = "controller-machine";
/// The workers' instance group.
pub const WORKER_GROUP: &str = "worker-group-1";
/// The cluster's name in `resource_config.json`.
pub const CLUSTER_NAME: &str = "ml-cluster";
/// The cluster id (last segment of the ARN); the ticket secret is
/// `hyperpod-k8s-<id>`.
pub const CLUSTER_ID: &str = "kb8v11zrrpvr";
/// AWS region of the bed.
pub const REGION: &str = "us-west-2";
/// Static test credentials handed to every node (moto accepts anything).
pub const ACCESS_KEY_ID: &str = "AKIAHPK8STESTBED0000";
/// See [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "hpk8s-test-bed-secret-access-key";
/// User of the mirror URL's credentials.
pub const MIRROR_USER: &str = "bed-mirror-user";
/// Password of the mirror URL's credentials.
pub const MIRROR_PASSWORD: &str = "hpk8s-bed-mirror-password";
/// The API server's port on the controller.
pub const API_PORT: u16 = 6443;
/// Host numbers on the LAN: the controller, then workers from here on.
pub const CONTROLLER_HOST: u8 = 10;
/// First worker's host number.
pub const FIRST_WORKER_HOST: u8 = 11;

/// Node paths the bed writes.
pub const RESOURCE_CONFIG: &str = "/opt/ml/config/resource_config.json";
/// hpk8s's configuration.
pub const CONFIG_TOML: &str = "/etc/hpk8s/config.toml";
/// The kubeadm stand-in's JSON (named by `HPK8S_FAKE_KUBEADM`).
pub const STAND_IN_JSON: &str = "/etc/hpk8s-test/kubeadm-stand-in.json";
/// The cluster CA certificate (PEM), for probes from inside a node.
pub const CA_CERT: &str = "/etc/hpk8s-test/ca.crt";
/// The bed's environment as `KEY=value` lines (for `systemd`
/// `EnvironmentFile=` or a shell's `set -a; . FILE`).
pub const ENV_FILE: &str = "/etc/hpk8s-test/env";
/// Gives every systemd unit of the node the bed's environment.
pub const SYSTEMD_ENV_DROP_IN: &str = "/etc/systemd/system.conf.d/hpk8s-test-env.conf";
/// Where hpk8s is bind-mounted in every node.
pub const HPK8S_IN_NODE: &str = "/usr/local/bin/hpk8s";
/// Replaced by the bed's fake PCI tree.
pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// The fake PCI tree inside the node, bind-mounted over [`PCI_DEVICES`].
pub const FAKE_PCI_DIR: &str = "/var/lib/hpk8s-test/pci";

/// Prefix of every bed's directory under [`node::WORK_DIR`], followed by
/// the owner's pid and `-`.
pub const BED_DIR_PREFIX: &str = "hpk8s-bed-";
const KUBECTL: &str = "kubectl";
const OBJCOPY: &str = "objcopy";
/// How long the bed waits for its own setup commands inside nodes.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a bed can be built here: nspawn nodes (root, debootstrap,
/// systemd-nspawn) and moto.
pub fn available() -> bool {
    node::available() && Moto::available()
}

/// `harness::require` for the bed: `true` means skip (outside CI only).
pub fn require() -> bool {
    node::require() || crate::require(Moto::available(), "moto (set HPK8S_MOTO_PYTHON)")
}

/// A node's role in the bed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BedRole {
    /// The control plane node (group [`CONTROLLER_GROUP`]).
    Controller,
    /// A worker (group [`WORKER_GROUP`]).
    Worker,
}

/// Fake PCI hardware of one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeHardware {
    /// NVIDIA GPUs (H100, display class 0x0302).
    pub gpus: u32,
    /// EFA adapters (Amazon 0x1d0f:0xefa1).
    pub efa: u32,
}

/// Configures a [`ClusterBed`].
#[derive(Debug, Clone)]
pub struct ClusterBedBuilder {
    workers: usize,
    hardware: Vec<(usize, FakeHardware)>,
    node_ready_delay_ms: u64,
    poll_cap_ms: u64,
    token_ttl: Option<String>,
    config: Vec<(String, toml_edit::Value)>,
}

impl Default for ClusterBedBuilder {
    fn default() -> Self {
        Self {
            workers: 3,
            hardware: Vec::new(),
            node_ready_delay_ms: 0,
            poll_cap_ms: 200,
            token_ttl: Some("10m".into()),
            config: Vec::new(),
        }
    }
}

impl ClusterBedBuilder {
    /// Number of workers (default 3).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Worker `index` (0-based) has `gpus` NVIDIA GPUs on its PCI bus.
    pub fn gpu_worker(mut self, index: usize, gpus: u32) -> Self {
        self.hardware_mut(index).gpus = gpus;
        self
    }

    /// Worker `index` (0-based) has `adapters` EFA adapters on its PCI bus.
    pub fn efa_worker(mut self, index: usize, adapters: u32) -> Self {
        self.hardware_mut(index).efa = adapters;
        self
    }

    fn hardware_mut(&mut self, index: usize) -> &mut FakeHardware {
        if let Some(i) = self.hardware.iter().position(|(w, _)| *w == index) {
            return &mut self.hardware[i].1;
        }
        self.hardware.push((index, FakeHardware::default()));
        let last = self.hardware.len() - 1;
        &mut self.hardware[last].1
    }

    /// The stand-in's `node_ready_delay_ms`: how long after `init`/`join`
    /// a node turns Ready (default 0).
    pub fn node_ready_delay_ms(mut self, ms: u64) -> Self {
        self.node_ready_delay_ms = ms;
        self
    }

    /// `[rendezvous] poll_cap_ms` (default 200).
    pub fn poll_cap_ms(mut self, ms: u64) -> Self {
        self.poll_cap_ms = ms;
        self
    }

    /// `[cluster] token_ttl` (default `10m`; `None` leaves hpk8s's default).
    pub fn token_ttl(mut self, ttl: Option<&str>) -> Self {
        self.token_ttl = ttl.map(str::to_string);
        self
    }

    /// Sets any other key of `/etc/hpk8s/config.toml`, dotted
    /// (`cluster.gpu_taint`, `rendezvous.deadline_secs`), on every node.
    pub fn config(mut self, dotted_key: &str, value: impl Into<toml_edit::Value>) -> Self {
        self.config.push((dotted_key.to_string(), value.into()));
        self
    }

    /// Builds the LAN and the servers, then boots every node in parallel.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn build(self) -> anyhow::Result<ClusterBed> {
        let started = Instant::now();
        // kube (ring) and the AWS SDK (aws-lc-rs) are both linked: pick one
        // process-wide, before any client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if self.workers == 0 || self.workers > 200 {
            bail!("a bed needs 1..=200 workers, not {}", self.workers);
        }
        if let Some((w, _)) = self.hardware.iter().find(|(w, _)| *w >= self.workers) {
            bail!(
                "hardware asked for worker {w} but the bed has {} workers",
                self.workers
            );
        }
        node::sweep_stale();
        sweep_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{BED_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(node::WORK_DIR)
            .context("cannot create the bed's directory")?;
        let lan = Lan::new()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cluster-bed")
            .build()
            .context("cannot start the bed's tokio runtime")?;
        let gateway = lan.gateway();

        // Servers on the gateway.
        let moto = Moto::start_on(IpAddr::V4(gateway))?;
        let mirror_dir = dir.path().join("mirror");
        let kubeadm = slim_copy(&crate::kubeadm_bin(), dir.path())?;
        let mirror_layout = MirrorBuilder::new(K8S_VERSION)
            .binary_file("kubeadm", &kubeadm)
            .write(&mirror_dir)
            .context("cannot write the mirror")?;
        let mirror = MirrorServer::serve_on(
            TcpListener::bind((gateway, 0)).context("cannot bind the mirror on the gateway")?,
            &mirror_dir,
        )?;

        let mut bed = ClusterBed {
            nodes: Vec::new(),
            keepers: Vec::new(),
            api: None,
            mirror,
            mirror_layout,
            moto,
            rt: Some(rt),
            lan,
            logs: Arc::new(Mutex::new(Vec::new())),
            boot_time: Duration::ZERO,
            dir,
        };

        // Namespaces on the LAN; the API server on the controller's own
        // address:6443.
        let n = self.workers + 1;
        let mut plans = Vec::with_capacity(n);
        for i in 0..n {
            let (role, host, group, instance) = if i == 0 {
                (
                    BedRole::Controller,
                    CONTROLLER_HOST,
                    CONTROLLER_GROUP,
                    format!("{CONTROLLER_GROUP}-1"),
                )
            } else {
                (
                    BedRole::Worker,
                    FIRST_WORKER_HOST + u8::try_from(i - 1).context("too many workers")?,
                    WORKER_GROUP,
                    format!("{WORKER_GROUP}-{i}"),
                )
            };
            let netns = Netns::new()?;
            let address = bed.lan.attach(&netns, host)?;
            let hardware = if i == 0 {
                FakeHardware::default()
            } else {
                self.hardware
                    .iter()
                    .find(|(w, _)| *w == i - 1)
                    .map(|(_, h)| *h)
                    .unwrap_or_default()
            };
            plans.push(NodePlan {
                role,
                group,
                instance_id: instance_id(bed.lan.index(), host),
                instance,
                address,
                netns,
                hardware,
            });
        }
        let controller_ip = plans[0].address;
        let listener = plans[0]
            .netns
            .listen_tcp(SocketAddr::from((controller_ip, API_PORT)))
            .with_context(|| {
                format!("cannot bind {controller_ip}:{API_PORT} in the controller's namespace")
            })?;
        let api = bed.block_on(TestApiServer::start_on(
            listener,
            &[IpAddr::V4(controller_ip)],
        ))?;

        let resource_config = resource_config(&plans);
        let stand_in = StandInConfig {
            api_url: format!("https://{controller_ip}:{API_PORT}"),
            ca_cert_pem: api.ca_pem().to_string(),
            ca_key_pem: api.ca_key_pem().to_string(),
            root: PathBuf::from("/"),
            version: K8S_VERSION.to_string(),
            node_ready_delay_ms: self.node_ready_delay_ms,
        };
        let ca_pem = api.ca_pem().to_string();
        bed.api = Some(api);
        let stand_in_json = serde_json::to_vec_pretty(&stand_in)?;
        let env = bed.node_env();
        let env_file: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let systemd_env = format!(
            "[Manager]\nDefaultEnvironment={}\n",
            env.iter()
                .map(|(k, v)| format!("\"{k}={v}\""))
                .collect::<Vec<_>>()
                .join(" ")
        );
        // The mirror URL carries credentials, as a private mirror's does:
        // they must reach no argument list, log or world-readable file.
        let config_toml = self.config_toml(
            &bed.mirror
                .url_with_credentials(MIRROR_USER, MIRROR_PASSWORD),
        )?;

        // Boot every node on a keeper thread of its own: nspawn dies with
        // the thread that started it, so that thread lives as long as the
        // bed.
        let mut pending = Vec::with_capacity(n);
        for plan in plans {
            let mut builder = NspawnNode::builder()
                .overlay_root(true)
                .hostname(&hostname_for(plan.address))
                .netns(plan.netns)
                .bind_ro(crate::hpk8s_bin(), HPK8S_IN_NODE)
                .file(RESOURCE_CONFIG, resource_config.clone(), 0o644)
                .file(CONFIG_TOML, config_toml.clone(), 0o644)
                .file(STAND_IN_JSON, stand_in_json.clone(), 0o600)
                .file(CA_CERT, ca_pem.clone(), 0o644)
                .file(ENV_FILE, env_file.clone(), 0o600)
                .file(SYSTEMD_ENV_DROP_IN, systemd_env.clone(), 0o600);
            for (rel, contents) in fake_pci_files(plan.hardware) {
                builder = builder.file(&format!("{FAKE_PCI_DIR}/{rel}"), contents, 0o444);
            }
            let (node_tx, node_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("bed-{}", plan.instance))
                .spawn(move || {
                    let booted = builder
                        .boot()
                        .and_then(|node| mount_fake_pci(&node).map(|()| node));
                    let ok = booted.is_ok();
                    let _ = node_tx.send(booted);
                    if ok {
                        // Until the bed drops the sender (after it stopped the node).
                        let _ = release_rx.recv();
                    }
                })
                .context("cannot start a node keeper thread")?;
            bed.keepers.push(Keeper {
                release: Some(release_tx),
                thread: Some(thread),
            });
            let meta = (
                plan.role,
                plan.group,
                plan.instance,
                plan.instance_id,
                plan.address,
                plan.hardware,
            );
            pending.push((meta, node_rx));
        }
        let mut first_error = None;
        for ((role, group, instance, instance_id, address, hardware), rx) in pending {
            match rx.recv() {
                Ok(Ok(node)) => {
                    let log_dir = bed.dir.path().join("logs").join(&instance);
                    std::fs::create_dir_all(&log_dir)?;
                    bed.nodes.push(BedNode {
                        node,
                        role,
                        group: group.to_string(),
                        instance,
                        instance_id,
                        address,
                        hardware,
                        env: env.clone(),
                        logs: bed.logs.clone(),
                        log_dir,
                        runs: AtomicU32::new(0),
                    });
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e.context(format!("node {instance} did not boot")));
                }
                Err(_) => {
                    first_error.get_or_insert(anyhow::anyhow!("the keeper of {instance} died"));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        bed.boot_time = started.elapsed();
        Ok(bed)
    }

    fn config_toml(&self, mirror_url: &str) -> anyhow::Result<String> {
        let mut doc = toml_edit::DocumentMut::new();
        let mut keys: Vec<(String, toml_edit::Value)> = vec![
            (
                "identity.controller_groups".into(),
                toml_edit::Array::from_iter([CONTROLLER_GROUP]).into(),
            ),
            ("kubernetes.version".into(), K8S_VERSION.into()),
            ("packages.source".into(), "mirror".into()),
            ("packages.mirror_url".into(), mirror_url.into()),
            // The bed's mirror is plain http on the test LAN.
            ("packages.allow_insecure_mirror".into(), true.into()),
            (
                "rendezvous.poll_cap_ms".into(),
                i64::try_from(self.poll_cap_ms)
                    .context("poll_cap_ms")?
                    .into(),
            ),
        ];
        if let Some(ttl) = &self.token_ttl {
            keys.push(("cluster.token_ttl".into(), ttl.as_str().into()));
        }
        keys.extend(self.config.iter().cloned());
        for (key, value) in keys {
            let mut parts: Vec<&str> = key.split('.').collect();
            let Some(last) = parts.pop() else {
                bail!("empty config key");
            };
            let mut table = doc.as_table_mut();
            for p in parts {
                table = table
                    .entry(p)
                    .or_insert_with(|| toml_edit::Item::Table(toml_edit::Table::new()))
                    .as_table_mut()
                    .with_context(|| format!("config key {key}: {p} is not a table"))?;
            }
            table.insert(last, toml_edit::Item::Value(value));
        }
        Ok(doc.to_string())
    }
}

/// Host pids whose raw `/proc/<pid>/cmdline` (arguments NUL-separated)
/// contains `needle`.
pub fn pids_whose_cmdline_contains(needle: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Removes the directories of beds whose test process died.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(node::WORK_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(BED_DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if owner.is_some_and(|pid| !crate::netns::pid_alive(pid)) {
            eprintln!("removing stale bed directory {}", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What the builder knows about a node before it boots.
struct NodePlan {
    role: BedRole,
    group: &'static str,
    instance: String,
    instance_id: String,
    address: Ipv4Addr,
    netns: Netns,
    hardware: FakeHardware,
}

/// An EC2-style host name, `ip-10-213-7-11`.
pub fn hostname_for(address: Ipv4Addr) -> String {
    format!("ip-{}", address.to_string().replace('.', "-"))
}

/// `i-` and 17 hex digits, stable per LAN and host.
fn instance_id(lan: u8, host: u8) -> String {
    format!(
        "i-0{:08x}{:08x}",
        0x6b8_0000 + u32::from(lan),
        u32::from(host)
    )
}

/// `resource_config.json` as HyperPod writes it.
fn resource_config(plans: &[NodePlan]) -> String {
    let group = |name: &str, instance_type: &str| {
        let instances: Vec<Value> = plans
            .iter()
            .filter(|p| p.group == name)
            .map(|p| {
                json!({
                    "AgentIpAddress": format!("172.16.{}.{}", p.address.octets()[2], p.address.octets()[3]),
                    "CustomerIpAddress": p.address.to_string(),
                    "InstanceId": p.instance_id,
                    "InstanceName": p.instance,
                })
            })
            .collect();
        json!({ "Name": name, "InstanceType": instance_type, "Instances": instances })
    };
    let gpus = plans.iter().any(|p| p.hardware.gpus > 0);
    let worker_type = if gpus {
        "ml.p5.48xlarge"
    } else {
        "ml.c5.2xlarge"
    };
    json!({
        "ClusterConfig": {
            "ClusterArn": format!("arn:aws:sagemaker:{REGION}:111122223333:cluster/{CLUSTER_ID}"),
            "ClusterName": CLUSTER_NAME,
        },
        "InstanceGroups": [
            group(CONTROLLER_GROUP, "ml.m5.2xlarge"),
            group(WORKER_GROUP, worker_type),
        ],
    })
    .to_string()
}

/// The files of a PCI tree with an ENA and an NVMe function and the asked
/// GPUs and EFA adapters (vendor, device and class registers, as sysfs
/// shows them), as (path relative to the tree, contents).
pub fn fake_pci_files(hw: FakeHardware) -> Vec<(String, String)> {
    let mut functions = vec![
        ("0000:00:05.0".to_string(), "0x1d0f", "0xec20", "0x020000"), // ENA
        ("0000:00:04.0".to_string(), "0x1d0f", "0x8061", "0x010802"), // NVMe (EBS)
    ];
    for g in 0..hw.gpus {
        functions.push((
            format!("0000:{:02x}:00.0", 0x10 + g),
            "0x10de",
            "0x2330",
            "0x030200",
        ));
    }
    for e in 0..hw.efa {
        functions.push((
            format!("0000:{:02x}:00.0", 0x80 + e),
            "0x1d0f",
            "0xefa1",
            "0x020000",
        ));
    }
    functions
        .into_iter()
        .flat_map(|(address, vendor, device, class)| {
            [("vendor", vendor), ("device", device), ("class", class)]
                .map(|(file, value)| (format!("{address}/{file}"), format!("{value}\n")))
        })
        .collect()
}

/// Writes [`fake_pci_files`] under `dir`.
pub fn write_fake_pci(dir: &Path, hw: FakeHardware) -> anyhow::Result<()> {
    for (rel, contents) in fake_pci_files(hw) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Bind-mounts the node's fake PCI tree over `/sys/bus/pci/devices` inside
/// its mount namespace. (nspawn's own `--bind` cannot: it mounts `/sys`
/// over binds below it.) The mount dies with the node.
fn mount_fake_pci(node: &NspawnNode) -> anyhow::Result<()> {
    let out = node.exec_with(
        &["mount", "--bind", "-o", "ro", FAKE_PCI_DIR, PCI_DEVICES],
        &[],
        SETUP_TIMEOUT,
    )?;
    if !out.status.success() {
        bail!(
            "cannot bind {FAKE_PCI_DIR} over {PCI_DEVICES} in node {}: {}",
            node.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A copy of `binary` in `dir` without debug sections (a third of the size:
/// four nodes download and hash it at once), keeping the symbol table for
/// backtraces; the binary itself where `objcopy` is missing.
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn slim_copy(binary: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let Some(objcopy) = resolve(OBJCOPY) else {
        return Ok(binary.to_path_buf());
    };
    let name = binary.file_name().context("binary has no file name")?;
    let slim = dir.join(name);
    let out = std::process::Command::new(objcopy)
        .arg("--strip-debug")
        .arg(binary)
        .arg(&slim)
        .output()
        .context("cannot run objcopy")?;
    if !out.status.success() {
        bail!(
            "objcopy --strip-debug {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(slim)
}

/// Keeps a booted node's nspawn alive (see [`ClusterBedBuilder::build`]).
struct Keeper {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The bed. Fields drop in an order that stops the nodes before anything
/// they use.
pub struct ClusterBed {
    nodes: Vec<BedNode>,
    keepers: Vec<Keeper>,
    api: Option<TestApiServer>,
    mirror: MirrorServer,
    mirror_layout: MirrorLayout,
    moto: Moto,
    rt: Option<tokio::runtime::Runtime>,
    lan: Lan,
    logs: Arc<Mutex<Vec<(String, PathBuf)>>>,
    boot_time: Duration,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ClusterBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBed")
            .field("lan", &self.lan.cidr())
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.instance).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ClusterBed {
    /// A builder: 3 workers, no GPUs, Ready at once, poll cap 200 ms.
    pub fn builder() -> ClusterBedBuilder {
        ClusterBedBuilder::default()
    }

    /// Runs a future on the bed's runtime (from a plain `#[test]`).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime lives until the bed is dropped"),
        }
    }

    /// The bed's tokio runtime handle.
    pub fn runtime(&self) -> tokio::runtime::Handle {
        match &self.rt {
            Some(rt) => rt.handle().clone(),
            None => unreachable!("the runtime lives until the bed is dropped"),
        }
    }

    /// The LAN.
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// Every node, the controller first.
    pub fn nodes(&self) -> &[BedNode] {
        &self.nodes
    }

    /// The controller.
    pub fn controller(&self) -> &BedNode {
        &self.nodes[0]
    }

    /// The workers, in order.
    pub fn workers(&self) -> &[BedNode] {
        &self.nodes[1..]
    }

    /// The node with this instance name (`worker-group-1-2`).
    pub fn node(&self, instance: &str) -> Option<&BedNode> {
        self.nodes.iter().find(|n| n.instance == instance)
    }

    /// How long building and booting took.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The API server (on the controller's `address:6443`).
    pub fn api(&self) -> &TestApiServer {
        match &self.api {
            Some(api) => api,
            None => unreachable!("the API server lives until the bed is dropped"),
        }
    }

    /// An admin kubeconfig for `kubectl` or `kube::Config`
    /// (server `https://<controller>:6443`, reachable from the test).
    pub fn admin_kubeconfig(&self) -> &Path {
        self.api().admin_kubeconfig_path()
    }

    /// A kube client as `kubernetes-admin` (use it with
    /// [`Self::block_on`]). kube's retries of 429/503 are off, so faults
    /// surface at once.
    pub fn admin_client(&self) -> anyhow::Result<kube::Client> {
        let path = self.admin_kubeconfig().to_path_buf();
        self.block_on(async move {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .context("loading the admin kubeconfig")?;
            config.default_retry = false;
            kube::Client::try_from(config).context("building the admin kube client")
        })
    }

    /// Runs the real `kubectl` with the admin kubeconfig.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        std::process::Command::new(resolve(KUBECTL).unwrap_or_else(|| KUBECTL.into()))
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .args(args)
            .output()
            .context("cannot run kubectl")
    }

    /// moto (on the gateway).
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// The mirror server (on the gateway).
    pub fn mirror(&self) -> &MirrorServer {
        &self.mirror
    }

    /// The mirror's tree (`layout.binary("kubeadm")` is what nodes install).
    pub fn mirror_layout(&self) -> &MirrorLayout {
        &self.mirror_layout
    }

    /// The environment every node's hpk8s runs with.
    pub fn node_env(&self) -> Vec<(String, String)> {
        [
            ("HPK8S_FAKE_KUBEADM", STAND_IN_JSON.to_string()),
            ("AWS_ENDPOINT_URL", self.moto.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", "/dev/null".to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The ticket secret's name, `hyperpod-k8s-<cluster id>`.
    pub fn secret_name(&self) -> String {
        format!("hyperpod-k8s-{CLUSTER_ID}")
    }

    /// The join ticket (the secret's `AWSCURRENT` value, parsed), or `None`
    /// when the secret does not exist yet.
    pub fn read_secret(&self) -> anyhow::Result<Option<Value>> {
        let name = self.secret_name();
        self.block_on(async {
            let sdk = self.moto.sdk_config(REGION).await;
            let client = aws_sdk_secretsmanager::Client::new(&sdk);
            let out = client
                .get_secret_value()
                .secret_id(&name)
                .version_stage("AWSCURRENT")
                .send()
                .await;
            match out {
                Ok(o) => {
                    let text = o
                        .secret_string()
                        .with_context(|| format!("secret {name} has no string value"))?;
                    serde_json::from_str(text)
                        .map(Some)
                        .with_context(|| format!("secret {name} is not JSON"))
                }
                Err(e) => {
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception())
                    {
                        Ok(None)
                    } else {
                        Err(anyhow::Error::new(e).context(format!("GetSecretValue {name}")))
                    }
                }
            }
        })
    }

    /// Files in `node` matching `pattern`, an absolute node path whose
    /// components may hold `*` (`/var/lib/hpk8s/*.json`), as (node path,
    /// contents), sorted by path.
    pub fn node_files(&self, node: &BedNode, pattern: &str) -> Vec<(String, Vec<u8>)> {
        node.files(pattern)
    }

    /// Starts `argv` on every node at once (controller first).
    pub fn spawn_all(&self, argv: &[&str]) -> anyhow::Result<Vec<Running>> {
        self.nodes.iter().map(|n| n.spawn(argv)).collect()
    }

    /// Every captured output, each node's journal (hpk8s and kubelet) and
    /// the end of moto's log: for failure messages and secret-leak checks.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        let captured: Vec<(String, PathBuf)> = lock(&self.logs).clone();
        for (label, path) in captured {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = writeln!(out, "=== {label} ===\n{text}");
        }
        for n in &self.nodes {
            for (what, args) in [
                ("journal -t hpk8s", &["-t", "hpk8s"][..]),
                ("journal -u kubelet", &["-u", "kubelet"][..]),
                ("journal -u hpk8s*", &["-u", "hpk8s*"][..]),
            ] {
                let _ = writeln!(
                    out,
                    "=== {} {what} ===\n{}",
                    n.instance,
                    n.journal_with(args)
                );
            }
        }
        let _ = writeln!(out, "=== moto (last lines) ===\n{}", self.moto.log_tail());
        out
    }
}

impl ClusterBed {
    /// Where `secret` shows up: the [`Self::all_logs`] sections holding it,
    /// the argument lists `argv` saw with it, and files under the nodes'
    /// `/etc/hpk8s` and `/var/lib/hpk8s` that hold it and are not 0600.
    /// Empty means no leak.
    pub fn leaks(&self, secret: &str, argv: Option<&ArgvRecorder>) -> Vec<String> {
        let mut found = Vec::new();
        let logs = self.all_logs();
        let mut section = String::new();
        for line in logs.lines() {
            if line.starts_with("=== ") {
                section = line.to_string();
            } else if line.contains(secret) || line.contains(MIRROR_PASSWORD) {
                found.push(format!("log {section}"));
            }
        }
        found.dedup();
        if let Some(a) = argv {
            found.extend(a.matching(secret).into_iter().map(|l| format!("argv: {l}")));
        }
        // The mirror's credentials and hpk8s's AWS secret never appear in
        // an argument list or in the environment of a command hpk8s ran.
        if let Some(a) = argv {
            found.extend(
                a.matching(MIRROR_PASSWORD)
                    .into_iter()
                    .map(|l| format!("argv holds the mirror password: {l}")),
            );
            for needle in [SECRET_ACCESS_KEY, MIRROR_PASSWORD] {
                found.extend(
                    a.environ_matching(needle)
                        .into_iter()
                        .map(|l| format!("environment of `{l}` (run by hpk8s) holds a credential")),
                );
            }
        }
        for n in &self.nodes {
            for pattern in ["/etc/hpk8s/*", "/var/lib/hpk8s/*", "/var/lib/hpk8s/*/*"] {
                for (path, contents) in n.files(pattern) {
                    if !String::from_utf8_lossy(&contents).contains(secret) {
                        continue;
                    }
                    let host = n.root().join(path.trim_start_matches('/'));
                    let mode = std::fs::metadata(&host).map_or(0o777, |m| {
                        use std::os::unix::fs::PermissionsExt as _;
                        m.permissions().mode() & 0o777
                    });
                    if mode & 0o077 != 0 {
                        found.push(format!("{} {path} (mode {mode:04o})", n.instance));
                    }
                }
            }
        }
        found
    }
}

impl Drop for ClusterBed {
    fn drop(&mut self) {
        // Power every node off at once (each may take seconds).
        std::thread::scope(|s| {
            for n in &mut self.nodes {
                s.spawn(move || {
                    if let Err(e) = n.node.stop() {
                        eprintln!("warning: stopping {}: {e:#}", n.instance);
                    }
                });
            }
        });
        self.nodes.clear();
        for k in &mut self.keepers {
            k.release.take();
            if let Some(t) = k.thread.take() {
                let _ = t.join();
            }
        }
        self.api.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        // moto, the mirror and the LAN go with the remaining fields.
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node of the bed: the nspawn node plus its place in the cluster and
/// the bed's environment.
#[derive(Debug)]
pub struct BedNode {
    node: NspawnNode,
    role: BedRole,
    group: String,
    instance: String,
    instance_id: String,
    address: Ipv4Addr,
    hardware: FakeHardware,
    env: Vec<(String, String)>,
    logs: Arc<Mutex<Vec<(String, PathBuf)>>>,
    log_dir: PathBuf,
    runs: AtomicU32,
}

impl std::ops::Deref for BedNode {
    type Target = NspawnNode;
    fn deref(&self) -> &NspawnNode {
        &self.node
    }
}

impl BedNode {
    /// The nspawn node.
    pub fn node(&self) -> &NspawnNode {
        &self.node
    }

    /// Controller or worker.
    pub fn role(&self) -> BedRole {
        self.role
    }

    /// The instance group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The instance name (`controller-machine-1`, `worker-group-1-2`).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The instance id (`i-…`).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The node's host name (`ip-10-213-7-11`): its Kubernetes node name,
    /// since `resource_config.json` names no host.
    pub fn hostname(&self) -> String {
        hostname_for(self.address)
    }

    /// The node's LAN address (its `CustomerIpAddress`).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The fake hardware on its PCI bus.
    pub fn hardware(&self) -> FakeHardware {
        self.hardware
    }

    /// The environment commands run with here (see [`ClusterBed::node_env`]).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Runs `argv` in the node with the bed's environment (waits at most
    /// [`node::EXEC_TIMEOUT`]).
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.exec_timeout(argv, node::EXEC_TIMEOUT)
    }

    /// [`Self::exec`] with a time limit.
    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        self.node.exec_with(argv, &self.env_refs(), timeout)
    }

    /// Runs `argv` with the bed's environment; its trimmed stdout, or an
    /// error with both streams when it fails.
    pub fn exec_ok(&self, argv: &[&str]) -> anyhow::Result<String> {
        let out = self.exec_timeout(argv, SETUP_TIMEOUT.max(node::EXEC_TIMEOUT))?;
        if !out.status.success() {
            bail!(
                "{argv:?} in {} failed ({}):\nstdout: {}\nstderr: {}",
                self.instance,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts `argv` in the background with the bed's environment, stdout
    /// and stderr captured to files (collected by
    /// [`ClusterBed::all_logs`]).
    pub fn spawn(&self, argv: &[&str]) -> anyhow::Result<Running> {
        let n = self.runs.fetch_add(1, Ordering::Relaxed);
        let stem = format!(
            "{n:02}-{}",
            argv.iter()
                .take(3)
                .map(|a| a.rsplit('/').next().unwrap_or(a))
                .collect::<Vec<_>>()
                .join("_")
        );
        let stdout_path = self.log_dir.join(format!("{stem}.stdout"));
        let stderr_path = self.log_dir.join(format!("{stem}.stderr"));
        let stdout = File::create(&stdout_path)?;
        let stderr = File::create(&stderr_path)?;
        let child = self
            .node
            .spawn_with(argv, &self.env_refs(), stdout, stderr)?;
        let label = format!("{} {}", self.instance, argv.join(" "));
        {
            let mut logs = lock(&self.logs);
            logs.push((format!("{label} (stdout)"), stdout_path.clone()));
            logs.push((format!("{label} (stderr)"), stderr_path.clone()));
        }
        Ok(Running {
            label,
            child,
            status: None,
            stdout: stdout_path,
            stderr: stderr_path,
        })
    }

    /// Journal entries selected by `journalctl` arguments (`-t hpk8s`,
    /// `-u kubelet`), one line each: time, message and the structured
    /// fields (`STEP=…`, `CHANGE=…`) that `-o short` would hide.
    pub fn journal_with(&self, selectors: &[&str]) -> String {
        let mut argv = vec!["journalctl", "--no-pager", "-o", "json"];
        argv.extend_from_slice(selectors);
        match self.node.exec(&argv) {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(format_journal_entry)
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("cannot read the journal ({selectors:?}): {e:#}"),
        }
    }

    /// The journal of syslog identifier `tag` (`hpk8s`).
    pub fn journal_tag(&self, tag: &str) -> String {
        self.node
            .exec(&["journalctl", "--no-pager", "-o", "cat", "-t", tag])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("cannot read the journal of {tag}: {e:#}"))
    }

    /// A file of the node (absolute node path), if it exists.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.node.root().join(path.trim_start_matches('/'))).ok()
    }

    /// Files matching `pattern` (see [`ClusterBed::node_files`]).
    pub fn files(&self, pattern: &str) -> Vec<(String, Vec<u8>)> {
        let root = self.node.root();
        let mut found = Vec::new();
        glob(
            &root,
            Path::new("/"),
            pattern.trim_start_matches('/'),
            &mut found,
        );
        found.sort();
        found
            .into_iter()
            .filter_map(|p| {
                let host = root.join(p.trim_start_matches('/'));
                std::fs::read(host).ok().map(|c| (p, c))
            })
            .collect()
    }
}

/// Journal fields every entry has, left out of [`format_journal_entry`].
const JOURNAL_NOISE: &[&str] = &[
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "SYSLOG_FACILITY",
    "SYSLOG_PID",
    "SYSLOG_TIMESTAMP",
    "CODE_FILE",
    "CODE_LINE",
    "CODE_FUNC",
    "TARGET",
    "SPAN_CODE_FILE",
    "SPAN_CODE_LINE",
    "SPAN_TARGET",
];

/// One `journalctl -o json` line as `seconds.micros IDENT: MESSAGE K=V…`.
fn format_journal_entry(line: &str) -> String {
    let Ok(Value::Object(entry)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let field = |k: &str| match entry.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let micros: u64 = field("__REALTIME_TIMESTAMP").parse().unwrap_or(0);
    let mut text = format!(
        "{}.{:06} {}: {}",
        micros / 1_000_000,
        micros % 1_000_000,
        field("SYSLOG_IDENTIFIER"),
        field("MESSAGE")
    );
    for (k, _) in entry.iter() {
        if !k.starts_with('_') && !JOURNAL_NOISE.contains(&k.as_str()) {
            let _ = write!(text, " {k}={}", field(k));
        }
    }
    text
}

/// Expands `pattern` (components with `*`) under `root`, from node
/// directory `at`, into node paths of regular files.
fn glob(root: &Path, at: &Path, pattern: &str, out: &mut Vec<String>) {
    let (first, rest) = match pattern.split_once('/') {
        Some((f, r)) => (f, Some(r)),
        None => (pattern, None),
    };
    let dir = root.join(at.strip_prefix("/").unwrap_or(at));
    let candidates: Vec<String> = if first.contains('*') {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| wildcard(first, n))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![first.to_string()]
    };
    for name in candidates {
        let next = at.join(&name);
        let host = root.join(next.strip_prefix("/").unwrap_or(&next));
        match rest {
            Some(r) if host.is_dir() => glob(root, &next, r, out),
            None if host.is_file() => out.push(next.display().to_string()),
            _ => {}
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return pattern == name;
    }
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A command running in a node in the background; killed (with all its
/// descendants) when dropped.
#[derive(Debug)]
pub struct Running {
    label: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// `<instance> <argv>`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Host pid of the `nsenter` running the command.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// Waits for the command to exit; kills it and fails (with what it
    /// printed) when it runs longer than `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Output {
                    status,
                    stdout: std::fs::read(&self.stdout).unwrap_or_default(),
                    stderr: std::fs::read(&self.stderr).unwrap_or_default(),
                });
            }
            if Instant::now() > deadline {
                self.kill();
                bail!(
                    "{} still ran after {timeout:?} (killed):\nstdout: {}\nstderr: {}",
                    self.label,
                    self.stdout_text(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILLs the command and everything it started, and reaps it.
    pub fn kill(&mut self) {
        if self.status.is_none() {
            kill_tree(self.child.id());
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*.json", "a.json"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
        assert!(wildcard("plain", "plain"));
        assert!(!wildcard("*.json", ".jso"));
        assert!(wildcard("*", ""));
    }

    #[test]
    fn glob_reads_matching_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/x/sub")).unwrap();
        std::fs::write(d.path().join("var/lib/x/a.json"), "1").unwrap();
        std::fs::write(d.path().join("var/lib/x/b.txt"), "2").unwrap();
        std::fs::write(d.path().join("var/lib/x/sub/c.json"), "3").unwrap();
        let mut out = Vec::new();
        glob(d.path(), Path::new("/"), "var/lib/*/*.json", &mut out);
        assert_eq!(out, ["/var/lib/x/a.json"]);
        let mut out = Vec::new();
        glob(d.path(), Path::new("/"), "var/*/x/sub/*", &mut out);
        assert_eq!(out, ["/var/lib/x/sub/c.json"]);
    }

    #[test]
    fn config_has_every_bed_key_and_overrides() {
        let toml = ClusterBed::builder()
            .poll_cap_ms(150)
            .config("cluster.gpu_taint", true)
            .config("rendezvous.deadline_secs", 60)
            .config_toml("http://10.213.1.1:8080")
            .unwrap();
        let cfg = lifecycle::config::Config::parse(&toml, Path::new("config.toml"));
        assert!(cfg.is_ok(), "{toml}\n{cfg:?}");
        assert!(
            toml.contains("controller_groups = [\"controller-machine\"]"),
            "{toml}"
        );
        assert!(toml.contains("poll_cap_ms = 150"), "{toml}");
        assert!(toml.contains("gpu_taint = true"), "{toml}");
        assert!(toml.contains("token_ttl = \"10m\""), "{toml}");
    }

    #[test]
    fn fake_pci_is_what_lifecycle_detects() {
        let d = tempfile::tempdir().unwrap();
        write_fake_pci(
            &d.path().join("sys/bus/pci/devices"),
            FakeHardware { gpus: 8, efa: 4 },
        )
        .unwrap();
        let host = lifecycle::host::Host::new(
            d.path(),
            Arc::new(lifecycle::host::ScriptedRunner::new()),
            Arc::new(lifecycle::host::FixedInterfaces::default()),
        );
        let hw = lifecycle::hardware::Hardware::detect(&host).unwrap();
        assert_eq!((hw.nvidia_gpus, hw.efa_devices), (8, 4));
    }
}
