//! Golden plans of phase `prepare` for the node kinds we ship to, and the
//! whole phase's idempotency and crash safety on a simulated host.
//!
//! Each scenario builds a fake root that looks like the real machine (PCI
//! devices, NVMe controllers, mounts, HyperPod files or a static topology),
//! plans the phase and compares the text plan with `tests/golden/<name>.plan`.
//! Set `UPDATE_GOLDEN=1` to rewrite the files after an intended change, then
//! review the diff like code.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness::fixtures::host_root::{
    AMAZON_VENDOR, EFA_CLASS, EFA_DEVICE, FakeRoot, GPU_CLASS, H100_DEVICE, NVIDIA_VENDOR,
    temp_files, tree_digest,
};
use harness::fixtures::hyperpod::{Inventory, PROVISIONING_PARAMETERS};
use harness::fixtures::sim::SimHost;
use harness::mirror::MirrorBuilder;
use lifecycle::config::{Config, PackageSource, StaticNode};
use lifecycle::host::{FixedInterfaces, Host};
use lifecycle::identity;
use lifecycle::prepare::{self, Context};

const ARN: &str = "arn:aws:sagemaker:us-west-2:111122223333:cluster/kb8v11zrrpvr";
const INSTANCE_STORAGE: &str = "Amazon EC2 NVMe Instance Storage";
const A100_DEVICE: u16 = 0x20b0;
const A10G_DEVICE: u16 = 0x2237;
const VERSION: &str = "1.34.1";

/// A machine to plan for: the simulated host, its address and config.
struct Scenario {
    sim: SimHost,
    address: IpAddr,
    config: Config,
    /// Keeps a file:// mirror alive, and is replaced by `<mirror>` in plans.
    mirror: Option<tempfile::TempDir>,
}

impl Scenario {
    fn host(&self) -> Host {
        Host::new(
            self.sim.root.path(),
            Arc::new(self.sim.runner.clone()),
            Arc::new(FixedInterfaces(vec![self.address])),
        )
    }

    async fn plan(&self) -> lifecycle::plan::Plan {
        let host = self.host();
        let id = identity::resolve_with(&host, &self.config, &identity::Overrides::default())
            .await
            .unwrap();
        let cx = Context {
            host: &host,
            config: &self.config,
            identity: &id,
        };
        prepare::plan(&cx).await.unwrap()
    }

    async fn apply(&self) -> Result<(), String> {
        let host = self.host();
        let id = identity::resolve_with(&host, &self.config, &identity::Overrides::default())
            .await
            .map_err(|e| e.to_string())?;
        let cx = Context {
            host: &host,
            config: &self.config,
            identity: &id,
        };
        prepare::apply(&cx)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The plan as text, with run-specific paths replaced by placeholders.
    async fn plan_text(&self) -> String {
        let mut text = self.plan().await.to_string();
        if let Some(m) = &self.mirror {
            text = text.replace(&format!("file://{}", m.path().display()), "<mirror>");
        }
        text.replace(&self.sim.root.path().display().to_string(), "<root>")
    }
}

fn hyperpod_config() -> Config {
    let mut c = Config::default();
    c.kubernetes.version = VERSION.into();
    c.identity.provisioning_parameters = PROVISIONING_PARAMETERS.into();
    c
}

fn hyperpod_inventory() -> Inventory {
    Inventory::new(ARN)
        .group("controller-machine", "ml.m5.2xlarge", 1)
        .group("login-group", "ml.m5.xlarge", 1)
        .group("worker-group-1", "ml.p5.48xlarge", 2)
        .group("worker-group-2", "ml.g5.8xlarge", 2)
        .controller_group("controller-machine")
        .login_group("login-group")
}

/// An Ubuntu DLAMI-like root: apt, containerd installed and running.
fn dlami_root(hostname: &str) -> FakeRoot {
    FakeRoot::new()
        .hostname(hostname)
        .file("/etc/debian_version", "bookworm/sid\n")
        .file("/usr/bin/dpkg-query", "")
        .file("/usr/bin/curl", "")
        .file("/usr/bin/gpg", "")
        .file("/usr/bin/containerd", "")
        .module("overlay")
        .ebs("nvme0")
}

fn with_gpus(mut root: FakeRoot, device: u16, n: u32) -> FakeRoot {
    for i in 0..n {
        root = root.pci_device(
            &format!("0000:{:02x}:00.0", 0x10 + i),
            NVIDIA_VENDOR,
            device,
            GPU_CLASS,
        );
    }
    root.file("/usr/bin/nvidia-container-runtime", "")
}

fn with_efa(mut root: FakeRoot, n: u32) -> FakeRoot {
    for i in 0..n {
        root = root.pci_device(
            &format!("0000:{:02x}:01.0", 0x40 + i),
            AMAZON_VENDOR,
            EFA_DEVICE,
            EFA_CLASS,
        );
    }
    root
}

fn hyperpod(root: FakeRoot, group: &str) -> Scenario {
    let inv = hyperpod_inventory();
    inv.write_to(root.path()).unwrap();
    let sim = SimHost::new(root);
    sim.set_active("containerd.service", true)
        .set_enabled("containerd.service", true);
    // The apt source installs the Kubernetes packages; the ECR credential
    // provider (for the EFA plugin's image) comes from its own URL, here a
    // local stand-in of artifacts.k8s.io.
    let mirror = tempfile::tempdir().unwrap();
    MirrorBuilder::new(VERSION).write(mirror.path()).unwrap();
    let mut config = hyperpod_config();
    config.addons.ecr_credential_provider_url = Some(format!(
        "file://{}/{}",
        mirror.path().display(),
        lifecycle::config::ECR_CREDENTIAL_PROVIDER_PATH
    ));
    Scenario {
        sim,
        address: inv.customer_ip(group, 0),
        config,
        mirror: Some(mirror),
    }
}

/// HyperPod p5.48xlarge worker on the DLAMI: 8 H100, 32 EFA, the instance
/// store already assembled and mounted at /opt/dlami/nvme.
fn hyperpod_p5_worker() -> Scenario {
    let root = with_efa(with_gpus(dlami_root("ip-10-1-0-3"), H100_DEVICE, 8), 32).mount(
        "/opt/dlami/nvme",
        "xfs",
        "/dev/md0",
    );
    hyperpod(root, "worker-group-1")
}

/// HyperPod g5.8xlarge worker: one A10G, no instance store mounted.
fn g5_worker() -> Scenario {
    hyperpod(
        with_gpus(dlami_root("ip-10-1-0-5"), A10G_DEVICE, 1),
        "worker-group-2",
    )
}

/// HyperPod CPU controller (m5.2xlarge).
fn cpu_controller() -> Scenario {
    hyperpod(dlami_root("ip-10-1-0-1"), "controller-machine")
}

/// HyperPod login node, not joining: kubectl only.
fn login_node() -> Scenario {
    hyperpod(dlami_root("ip-10-1-0-2"), "login-group")
}

/// Self-managed p4d.24xlarge worker in a private subnet: static topology,
/// 8 raw instance-store disks (RAID0), binaries from a checksummed mirror,
/// containerd installed but never configured.
fn self_managed_p4d_worker() -> Scenario {
    let mut root = with_efa(
        with_gpus(FakeRoot::new().hostname("worker-1"), A100_DEVICE, 8),
        4,
    )
    .ebs("nvme0")
    .file("/usr/bin/containerd", "")
    .module("overlay");
    for i in 1..=8 {
        root = root.nvme(
            &format!("nvme{i}"),
            INSTANCE_STORAGE,
            &format!("AWS2E0C4F3B1A2B3C4D{i}"),
        );
    }
    let mirror = tempfile::tempdir().unwrap();
    MirrorBuilder::new(VERSION).write(mirror.path()).unwrap();
    let mut config = Config::default();
    config.kubernetes.version = VERSION.into();
    config.packages.source = PackageSource::Mirror;
    config.packages.mirror_url = Some(format!("file://{}", mirror.path().display()));
    config.identity.cluster_name = Some("p4d-training".into());
    config.identity.nodes = vec![
        node("controller", "10.0.1.10", "controller", "m5.2xlarge"),
        node("worker-1", "10.0.1.11", "worker", "p4d.24xlarge"),
        node("worker-2", "10.0.1.12", "worker", "p4d.24xlarge"),
    ];
    Scenario {
        sim: SimHost::new(root),
        address: "10.0.1.11".parse().unwrap(),
        config,
        mirror: Some(mirror),
    }
}

fn node(name: &str, address: &str, role: &str, instance_type: &str) -> StaticNode {
    StaticNode {
        name: name.into(),
        address: address.parse().unwrap(),
        role: role.into(),
        group: None,
        instance_type: Some(instance_type.into()),
    }
}

fn golden_path(name: &str) -> PathBuf {
    harness::workspace_root()
        .join("tests/golden")
        .join(format!("{name}.plan"))
}

async fn check_golden(name: &str, scenario: Scenario) {
    let text = scenario.plan_text().await;
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    if text != want {
        let diff = similar_lines(&want, &text);
        panic!(
            "plan for {name} differs from {} (UPDATE_GOLDEN=1 to accept):\n{diff}",
            path.display()
        );
    }
    // Whatever the plan, applying it converges: a second plan is empty.
    scenario.apply().await.unwrap();
    let again = scenario.plan().await;
    assert!(
        again.is_empty(),
        "{name}: second plan is not empty:\n{again}"
    );
}

fn similar_lines(want: &str, got: &str) -> String {
    let want: Vec<&str> = want.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i), got.get(i));
        if w != g {
            out.push_str(&format!(
                "line {}:\n  want: {}\n  got:  {}\n",
                i + 1,
                w.unwrap_or(&"<none>"),
                g.unwrap_or(&"<none>")
            ));
        }
    }
    out
}

#[tokio::test]
async fn golden_hyperpod_p5_worker() {
    check_golden("hyperpod-p5-worker", hyperpod_p5_worker()).await;
}

#[tokio::test]
async fn golden_self_managed_p4d_worker() {
    check_golden("self-managed-p4d-worker", self_managed_p4d_worker()).await;
}

#[tokio::test]
async fn golden_g5_worker_without_nvme() {
    check_golden("hyperpod-g5-worker", g5_worker()).await;
}

#[tokio::test]
async fn golden_cpu_controller() {
    check_golden("hyperpod-cpu-controller", cpu_controller()).await;
}

#[tokio::test]
async fn golden_login_node() {
    check_golden("hyperpod-login-node", login_node()).await;
}

/// State that differs between runs by time only.
fn digest_without_state(root: &Path) -> String {
    let _ = std::fs::remove_file(root.join("var/lib/hpk8s/state.json"));
    tree_digest(root)
}

/// Crash safety of the whole phase: for every k, a run whose k-th command
/// fails stops with an error, and a re-run converges to exactly the host a
/// clean run produces, with no half-written file anywhere.
#[tokio::test]
async fn every_interrupted_run_converges() {
    let clean = self_managed_p4d_worker();
    clean.apply().await.unwrap();
    let commands = clean.sim.runner.calls().len();
    assert!(
        commands > 10,
        "expected a real sequence of commands, got {commands}"
    );
    let want = digest_without_state(clean.sim.root.path());

    for k in 0..commands {
        let s = self_managed_p4d_worker();
        s.sim.runner.fail_at(k);
        let first = s.apply().await;
        // Queries and readiness probes may tolerate one failure (a probe is
        // retried); anything else must stop the run.
        if first.is_ok() {
            let call = &s.sim.runner.calls()[k];
            assert!(
                call.starts_with("ctr ") || call.starts_with("systemctl is-"),
                "k={k}: `{call}` failed but the run succeeded"
            );
        }
        assert!(
            temp_files(s.sim.root.path()).is_empty(),
            "k={k}: temp files left: {:?}",
            temp_files(s.sim.root.path())
        );
        s.sim.runner.clear_failure();
        s.apply()
            .await
            .unwrap_or_else(|e| panic!("k={k}: re-run failed: {e}"));
        assert!(s.plan().await.is_empty(), "k={k}: re-run left changes");
        assert_eq!(
            digest_without_state(s.sim.root.path()),
            want,
            "k={k}: the host differs from a clean run's"
        );
    }
}

/// The state file records progress and stays private.
#[tokio::test]
async fn state_file_records_finished_phase() {
    let s = cpu_controller();
    s.apply().await.unwrap();
    let host = s.host();
    let state = lifecycle::state::State::load(&host).unwrap();
    let phase = &state.phases["prepare"];
    assert!(phase.finished);
    assert_eq!(
        phase.completed,
        [
            "packages",
            "networking",
            "instance-store",
            "containerd",
            "agent"
        ]
    );
    assert_eq!(host.mode_of(lifecycle::state::STATE_FILE), Some(0o600));
}
