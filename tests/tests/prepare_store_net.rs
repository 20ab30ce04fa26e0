//! Steps `networking` and `instance-store` of phase `prepare`, against fake
//! host roots whose scripted commands mimic their effects (mkfs labels a
//! disk, `systemctl enable --now` of a mount unit adds the mount, modprobe
//! loads a module), so that re-planning after applying must come out empty.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::path::{Path, PathBuf};
use std::sync::Arc;

use harness::fixtures::host_root::{
    FakeRoot, GPU_CLASS, H100_DEVICE, NVIDIA_VENDOR, temp_files, tree_digest,
};
use harness::fixtures::sim::SimHost;
use lifecycle::config::Config;
use lifecycle::host::{CmdOutput, Host};
use lifecycle::identity::{self, NodeIdentity};
use lifecycle::plan::{self, Change, ServiceOperation, StepPlan};
use lifecycle::prepare::{Context, instance_store, networking};

const INSTANCE_STORAGE: &str = "Amazon EC2 NVMe Instance Storage";

/// The simulated host every test here runs on.
type Sim = SimHost;

const KUBELET: &str = "kubelet.service";

async fn id(host: &Host, config: &Config) -> NodeIdentity {
    identity::resolve(host, config).await.unwrap()
}

fn p4d_root() -> FakeRoot {
    let mut root = FakeRoot::new().hostname("ip-10-1-0-5").ebs("nvme0");
    for i in 1..=8 {
        root = root.nvme(
            &format!("nvme{i}"),
            INSTANCE_STORAGE,
            &format!("AWS2E0C4F3B1A2B3C4D{i}"),
        );
    }
    root
}

/// Command lines of the `Run` changes.
fn runs(p: &StepPlan) -> Vec<String> {
    p.changes
        .iter()
        .filter_map(|c| match c {
            Change::Run { command, .. } => Some(command.display()),
            _ => None,
        })
        .collect()
}

fn services(p: &StepPlan) -> Vec<(String, ServiceOperation)> {
    p.changes
        .iter()
        .filter_map(|c| match c {
            Change::Service {
                unit, operation, ..
            } => Some((unit.clone(), *operation)),
            _ => None,
        })
        .collect()
}

fn written(p: &StepPlan, path: &str) -> Option<String> {
    p.changes.iter().find_map(|c| match c {
        Change::WriteFile {
            path: p, contents, ..
        } if p == Path::new(path) => Some(String::from_utf8_lossy(contents).into_owned()),
        _ => None,
    })
}

/// Plans and applies networking, then the instance store, as phase
/// `prepare` does; the first failure ends the run.
async fn run_steps(host: &Host, config: &Config) -> Result<(), String> {
    let identity = id(host, config).await;
    let cx = Context {
        host,
        config,
        identity: &identity,
    };
    let p = networking::plan(&cx).map_err(|e| e.to_string())?;
    plan::apply(host, &p.changes)
        .await
        .map_err(|e| e.to_string())?;
    let p = instance_store::plan(&cx).map_err(|e| e.to_string())?;
    plan::apply(host, &p.changes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn plans(host: &Host, config: &Config) -> (StepPlan, StepPlan) {
    let identity = id(host, config).await;
    let cx = Context {
        host,
        config,
        identity: &identity,
    };
    (
        networking::plan(&cx).unwrap(),
        instance_store::plan(&cx).unwrap(),
    )
}

#[tokio::test]
async fn hyperpod_p5_uses_the_dlami_mount_and_only_moves_kubelet() {
    let mut root = FakeRoot::new().hostname("ip-10-4-0-7").ebs("nvme0");
    for i in 1..=8 {
        root = root.nvme(&format!("nvme{i}"), INSTANCE_STORAGE, &format!("AWS5{i}"));
    }
    for gpu in 0..8 {
        root = root.pci_device(
            &format!("0000:{:02x}:00.0", 0x53 + gpu),
            NVIDIA_VENDOR,
            H100_DEVICE,
            GPU_CLASS,
        );
    }
    let root = root
        .mount("/opt/dlami/nvme", "xfs", "/dev/md127")
        .dir_at("/opt/dlami/nvme");
    let sim = Sim::new(root);
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);

    assert_eq!(
        instance_store::store_root(&cx).unwrap().as_deref(),
        Some(Path::new("/opt/dlami/nvme"))
    );
    let p = instance_store::plan(&cx).unwrap();
    assert!(
        sim.runner.calls().is_empty(),
        "no probing needed: {:?}",
        sim.runner.calls()
    );
    assert!(
        runs(&p).is_empty(),
        "no mdadm/mkfs on the DLAMI: {:?}",
        runs(&p)
    );
    assert_eq!(
        p.changes.first(),
        Some(&Change::CreateDir {
            path: "/opt/dlami/nvme/kubelet".into()
        })
    );
    let unit = written(&p, "/etc/systemd/system/var-lib-kubelet.mount").expect("bind unit");
    for line in [
        "What=/opt/dlami/nvme/kubelet",
        "Where=/var/lib/kubelet",
        "Type=none",
        "Options=bind",
        "RequiresMountsFor=/opt/dlami/nvme",
        "WantedBy=local-fs.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line} in\n{unit}");
    }
    assert_eq!(
        services(&p),
        vec![
            (String::new(), ServiceOperation::DaemonReload),
            ("var-lib-kubelet.mount".into(), ServiceOperation::EnableNow),
        ]
    );
    assert_eq!(p.changes.len(), 4, "{p:#?}");

    plan::apply(&host, &p.changes).await.unwrap();
    let m = host.mount_at("/var/lib/kubelet").unwrap().unwrap();
    assert_eq!(
        (m.root.as_path(), m.source.as_str()),
        (Path::new("/kubelet"), "/dev/md127")
    );
    let again = instance_store::plan(&cx).unwrap();
    assert!(again.changes.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn p4d_stripes_the_eight_instance_store_disks_and_never_the_ebs_volume() {
    let root = p4d_root()
        .file(
            "/var/lib/kubelet/config.yaml",
            "kind: KubeletConfiguration\n",
        )
        .file("/var/lib/kubelet/pki/kubelet.crt", "cert\n");
    let sim = Sim::new(root);
    sim.set_active(KUBELET, true);
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);

    assert_eq!(
        instance_store::store_root(&cx).unwrap().as_deref(),
        Some(Path::new("/mnt/k8s-disks"))
    );
    let p = instance_store::plan(&cx).unwrap();
    let members: Vec<String> = (1..=8).map(|i| format!("/dev/nvme{i}n1")).collect();
    assert_eq!(
        runs(&p),
        vec![
            format!(
                "mdadm --create /dev/md/hpk8s-nvme --level=0 --raid-devices=8 --name=hpk8s-nvme --run {}",
                members.join(" ")
            ),
            "mkfs.xfs -L hpk8s-nvme /dev/md/hpk8s-nvme".to_string(),
            "udevadm settle --timeout=60".to_string(),
            "cp -a /var/lib/kubelet/. /mnt/k8s-disks/kubelet/".to_string(),
        ]
    );
    let unit = written(&p, "/etc/systemd/system/mnt-k8s\\x2ddisks.mount").expect("store unit");
    for line in [
        "What=/dev/disk/by-label/hpk8s-nvme",
        "Where=/mnt/k8s-disks",
        "Type=xfs",
        "Options=defaults,noatime,nofail",
        "WantedBy=local-fs.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line} in\n{unit}");
    }
    let svc = services(&p);
    assert_eq!(
        svc.first(),
        Some(&(String::new(), ServiceOperation::DaemonReload))
    );
    assert!(svc.contains(&(
        "mnt-k8s\\x2ddisks.mount".into(),
        ServiceOperation::EnableNow
    )));
    assert_eq!(svc[2], ("kubelet.service".into(), ServiceOperation::Stop));
    assert_eq!(
        svc.last(),
        Some(&("kubelet.service".into(), ServiceOperation::Start))
    );

    plan::apply(&host, &p.changes).await.unwrap();
    let all = sim.runner.calls();
    assert!(
        all.iter().all(|c| !c.contains("nvme0")),
        "the EBS volume was touched: {all:#?}"
    );
    assert_eq!(
        all.iter()
            .filter(|c| c.starts_with("mdadm --create"))
            .count(),
        1
    );
    assert_eq!(
        host.mount_at("/mnt/k8s-disks").unwrap().unwrap().source,
        "/dev/md/hpk8s-nvme"
    );
    assert_eq!(
        sim.dir()
            .read("/mnt/k8s-disks/kubelet/pki/kubelet.crt")
            .as_deref(),
        Some("cert\n")
    );
    assert!(sim.is_active(KUBELET), "kubelet restarted");
    let again = instance_store::plan(&cx).unwrap();
    assert!(again.changes.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn an_array_from_before_the_reboot_is_reused_not_created() {
    for formatted in [true, false] {
        let sim = Sim::new(p4d_root());
        for i in 1..=8 {
            sim.device(&format!("/dev/nvme{i}n1"), "linux_raid_member", "");
        }
        sim.array("ARRAY /dev/md127 metadata=1.2 name=ip-10-1-0-9:hpk8s-nvme UUID=aa:bb:cc:dd");
        sim.array("ARRAY /dev/md/scratch metadata=1.2 name=ip-10-1-0-9:scratch UUID=11:22:33:44");
        if formatted {
            sim.device("/dev/md127", "xfs", "hpk8s-nvme");
        }
        let host = sim.host();
        let config = Config::default();
        let identity = id(&host, &config).await;
        let cx = cx_with(&host, &config, &identity);
        let p = instance_store::plan(&cx).unwrap();
        let r = runs(&p);
        assert!(r.iter().all(|c| !c.contains("--create")), "{r:?}");
        assert_eq!(
            r.iter().any(|c| c == "mkfs.xfs -L hpk8s-nvme /dev/md127"),
            !formatted,
            "{r:?}"
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("reusing md array `hpk8s-nvme` (/dev/md127)"))
        );
        plan::apply(&host, &p.changes).await.unwrap();
        assert_eq!(
            host.mount_at("/mnt/k8s-disks").unwrap().unwrap().source,
            "/dev/md127"
        );
        assert!(instance_store::plan(&cx).unwrap().changes.is_empty());
    }
}

#[tokio::test]
async fn a_foreign_file_system_on_the_reused_array_is_an_error() {
    let sim = Sim::new(p4d_root());
    for i in 1..=8 {
        sim.device(&format!("/dev/nvme{i}n1"), "linux_raid_member", "");
    }
    sim.array("ARRAY /dev/md/hpk8s-nvme metadata=1.2 name=x:hpk8s-nvme UUID=aa");
    sim.device("/dev/md/hpk8s-nvme", "ext4", "data");
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "foreign_raid_array");
    let msg = e.to_string();
    assert!(
        msg.contains("/dev/md/hpk8s-nvme") && msg.contains("ext4"),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[tokio::test]
async fn a_single_disk_is_formatted_directly() {
    let root = FakeRoot::new()
        .ebs("nvme0")
        .nvme("nvme1", INSTANCE_STORAGE, "AWS1")
        .dir_at("/opt/dlami/nvme");
    let sim = Sim::new(root);
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let p = instance_store::plan(&cx).unwrap();
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("/opt/dlami/nvme exists but is not a mount point")),
        "{:?}",
        p.notes
    );
    assert_eq!(
        runs(&p),
        vec![
            "mkfs.xfs -L hpk8s-nvme /dev/nvme1n1",
            "udevadm settle --timeout=60"
        ]
    );
    plan::apply(&host, &p.changes).await.unwrap();
    assert!(sim.runner.calls().iter().all(|c| !c.starts_with("mdadm")));
    assert_eq!(
        host.mount_at("/mnt/k8s-disks").unwrap().unwrap().source,
        "/dev/nvme1n1"
    );
    assert!(instance_store::plan(&cx).unwrap().changes.is_empty());
}

#[tokio::test]
async fn no_instance_store_disks_means_nothing_to_do() {
    for root in [
        FakeRoot::new().ebs("nvme0"),
        FakeRoot::new(),
        FakeRoot::new()
            .ebs("nvme0")
            .nvme("nvme1", INSTANCE_STORAGE, "AWS1")
            .partition("nvme1n1", 1),
    ] {
        let sim = Sim::new(root);
        let host = sim.host();
        let config = Config::default();
        let identity = id(&host, &config).await;
        let cx = cx_with(&host, &config, &identity);
        let before = tree_digest(sim.root.path());
        assert_eq!(instance_store::store_root(&cx).unwrap(), None);
        let p = instance_store::plan(&cx).unwrap();
        assert!(p.changes.is_empty(), "{p:#?}");
        assert!(
            p.notes
                .iter()
                .any(|n| n.ends_with("instance-store disks: nothing to do")),
            "{:?}",
            p.notes
        );
        assert!(sim.runner.calls().is_empty(), "{:?}", sim.runner.calls());
        assert_eq!(before, tree_digest(sim.root.path()));
    }
}

#[tokio::test]
async fn disabled_instance_store_is_left_alone() {
    let sim = Sim::new(p4d_root());
    let host = sim.host();
    let mut config = Config::default();
    config.instance_store.enabled = false;
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let p = instance_store::plan(&cx).unwrap();
    assert!(p.changes.is_empty() && sim.runner.calls().is_empty());
    assert_eq!(instance_store::store_root(&cx).unwrap(), None);
}

#[tokio::test]
async fn partitioned_mounted_and_foreign_disks_are_skipped() {
    let root = p4d_root()
        .partition("nvme1n1", 1)
        .mount("/data", "ext4", "/dev/nvme2n1")
        .mount("/scratch", "ext4", "/dev/nvme3n1p1");
    let sim = Sim::new(root);
    sim.device("/dev/nvme4n1", "ext4", "mine");
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let p = instance_store::plan(&cx).unwrap();
    let create = runs(&p)
        .into_iter()
        .find(|c| c.starts_with("mdadm --create"))
        .unwrap();
    assert!(
        create.ends_with("--raid-devices=4 --name=hpk8s-nvme --run /dev/nvme5n1 /dev/nvme6n1 /dev/nvme7n1 /dev/nvme8n1"),
        "{create}"
    );
    for (dev, why) in [
        ("/dev/nvme1n1", "has partitions"),
        ("/dev/nvme2n1", "mounted at /data"),
        ("/dev/nvme3n1", "mounted at /scratch"),
        ("/dev/nvme4n1", "holds a ext4 file system"),
    ] {
        assert!(
            p.notes
                .iter()
                .any(|n| n.starts_with(dev) && n.contains(why)),
            "{dev}: {:?}",
            p.notes
        );
    }
    // Partitioned and mounted disks are not even probed.
    let calls = sim.runner.calls();
    for dev in ["nvme1n1", "nvme2n1", "nvme3n1", "nvme0n1"] {
        assert!(
            calls.iter().all(|c| !c.contains(dev)),
            "{dev} probed: {calls:?}"
        );
    }
}

#[tokio::test]
async fn kubelet_directory_already_in_use_or_mounted_elsewhere_is_an_error() {
    let root = FakeRoot::new()
        .mount("/opt/dlami/nvme", "xfs", "/dev/md127")
        .mount(
            "/var/lib/kubelet/pods/abc/volumes/kubernetes.io~projected/x",
            "tmpfs",
            "tmpfs",
        );
    let sim = Sim::new(root);
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "directory_busy", "{e}");
    assert!(
        e.to_string()
            .contains("/var/lib/kubelet has file systems mounted inside it")
    );

    let root = FakeRoot::new()
        .mount("/opt/dlami/nvme", "xfs", "/dev/md127")
        .mount("/var/lib/kubelet", "ext4", "/dev/nvme9n1");
    let sim = Sim::new(root);
    let host = sim.host();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "foreign_mount", "{e}");
    assert!(e.to_string().contains("move_kubelet = false"), "{e}");
}

#[tokio::test]
async fn a_store_directory_that_is_not_roots_alone_is_never_bind_mounted() {
    let config = Config::default();
    // A symlink planted where kubelet's directory would come from.
    let root = FakeRoot::new().mount("/opt/dlami/nvme", "xfs", "/dev/md127");
    let sim = Sim::new(root);
    let host = sim.host();
    let store = host.path("/opt/dlami/nvme");
    std::fs::create_dir_all(&store).unwrap();
    std::os::unix::fs::symlink("/etc", store.join("kubelet")).unwrap();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "instance_store_directory_untrusted", "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("/opt/dlami/nvme/kubelet would be bind-mounted as /var/lib/kubelet")
            && msg.contains("not a directory"),
        "{msg}"
    );

    // A directory anyone may write.
    std::fs::remove_file(store.join("kubelet")).unwrap();
    std::fs::create_dir(store.join("kubelet")).unwrap();
    std::fs::set_permissions(
        store.join("kubelet"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "instance_store_directory_untrusted", "{e}");
    assert!(e.to_string().contains("mode 0777"), "{e}");

    // Root's own directory is used.
    std::fs::set_permissions(
        store.join("kubelet"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    instance_store::plan(&cx).unwrap();
}

#[tokio::test]
async fn networking_applies_modules_sysctls_and_swap_then_plans_nothing() {
    let root = FakeRoot::new().swap("/swapfile");
    let sim = Sim::new(root);
    let host = sim.host();
    let config = Config::default();
    let (p, _) = plans(&host, &config).await;
    assert_eq!(
        runs(&p),
        vec!["modprobe overlay", "modprobe br_netfilter", "swapoff -a"]
    );
    assert_eq!(
        written(&p, "/etc/modules-load.d/hpk8s.conf")
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        vec!["overlay", "br_netfilter"]
    );
    let sysctl = written(&p, "/etc/sysctl.d/99-hpk8s.conf").unwrap();
    for line in [
        "net.bridge.bridge-nf-call-ip6tables = 1",
        "net.bridge.bridge-nf-call-iptables = 1",
        "net.ipv4.ip_forward = 1",
    ] {
        assert!(sysctl.lines().any(|l| l == line), "{sysctl}");
    }
    let sysctls: Vec<_> = p
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Sysctl { .. }))
        .collect();
    assert_eq!(sysctls.len(), 3);
    // modprobe comes first so that the bridge sysctls exist when set.
    let first_sysctl = p
        .changes
        .iter()
        .position(|c| matches!(c, Change::Sysctl { .. }));
    let last_modprobe = p
        .changes
        .iter()
        .rposition(|c| matches!(c, Change::Run { command, .. } if command.program() == "modprobe"));
    assert!(last_modprobe < first_sysctl);

    run_steps(&host, &config).await.unwrap();
    let root = sim.dir();
    assert_eq!(root.sysctl("net.ipv4.ip_forward").as_deref(), Some("1"));
    assert_eq!(
        root.sysctl("net.bridge.bridge-nf-call-iptables").as_deref(),
        Some("1")
    );
    let fstab = root.read("/etc/fstab").unwrap();
    assert!(fstab.contains("\n#hpk8s: /swapfile\tnone\tswap"), "{fstab}");
    assert!(
        fstab.contains("\nLABEL=cloudimg-rootfs\t/\text4"),
        "{fstab}"
    );
    let (again, _) = plans(&host, &config).await;
    assert!(again.changes.is_empty(), "{again:#?}");
}

#[tokio::test]
async fn built_in_modules_are_present_without_sys_module_entries() {
    // This machine's kernel: br_netfilter and overlay built in, nothing in
    // /sys/module or /proc/modules, sysctls already right, no swap.
    let root = FakeRoot::new()
        .filesystem("overlay")
        .sysctl("net.bridge.bridge-nf-call-iptables", "1")
        .sysctl("net.bridge.bridge-nf-call-ip6tables", "1")
        .sysctl("net.ipv4.ip_forward", "1");
    let sim = Sim::new(root);
    let host = sim.host();
    let config = Config::default();
    let (p, _) = plans(&host, &config).await;
    assert!(runs(&p).is_empty(), "{:?}", runs(&p));
    let paths: Vec<_> = p
        .changes
        .iter()
        .map(|c| match c {
            Change::WriteFile { path, .. } => path.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            PathBuf::from("/etc/modules-load.d/hpk8s.conf"),
            PathBuf::from("/etc/sysctl.d/99-hpk8s.conf")
        ]
    );
    plan::apply(&host, &p.changes).await.unwrap();
    let (again, _) = plans(&host, &config).await;
    assert!(again.changes.is_empty());
    assert!(sim.runner.calls().is_empty());
}

#[tokio::test]
async fn invalid_networking_config_names_the_key() {
    let sim = Sim::new(FakeRoot::new());
    let host = sim.host();
    let mut config = Config::default();
    config.networking.modules.push("../../evil".into());
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let e = networking::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "kernel_module_name_invalid");
    assert!(e.to_string().contains("networking.modules"), "{e}");
    let mut config = Config::default();
    config
        .networking
        .sysctls
        .insert("net/../../x".into(), "1".into());
    let e = networking::plan(&cx_with(&host, &config, &identity)).unwrap_err();
    assert_eq!(e.kind(), "sysctl_key_invalid", "{e}");
}

fn cx_with<'a>(host: &'a Host, config: &'a Config, identity: &'a NodeIdentity) -> Context<'a> {
    Context {
        host,
        config,
        identity,
    }
}

/// The full p4d node: swap, modules missing, eight disks, kubelet running
/// with state to copy.
fn p4d_scenario() -> Sim {
    let root = p4d_root().swap("/swapfile").file(
        "/var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\n",
    );
    let sim = Sim::new(root);
    sim.set_active(KUBELET, true);
    sim
}

/// One disk, pod logs moved too, kubelet stopped.
fn single_disk_scenario() -> Sim {
    let root = FakeRoot::new()
        .ebs("nvme0")
        .nvme("nvme1", INSTANCE_STORAGE, "AWS1")
        .file(
            "/var/lib/kubelet/config.yaml",
            "kind: KubeletConfiguration\n",
        )
        .file("/var/log/pods/default_web-0_uid/web/0.log", "hello\n");
    Sim::new(root)
}

/// HyperPod: the DLAMI mounted the store; kubelet ran before.
fn hyperpod_scenario() -> Sim {
    let root = FakeRoot::new()
        .ebs("nvme0")
        .nvme("nvme1", INSTANCE_STORAGE, "AWS1")
        .mount("/opt/dlami/nvme", "xfs", "/dev/md127")
        .dir_at("/opt/dlami/nvme")
        .file(
            "/var/lib/kubelet/config.yaml",
            "kind: KubeletConfiguration\n",
        );
    let sim = Sim::new(root);
    sim.set_active(KUBELET, true);
    sim
}

/// Name, fresh world, config, least number of commands a clean run makes.
type Scenario = (&'static str, fn() -> Sim, Config, usize);

#[tokio::test]
async fn a_run_failing_at_any_command_converges_on_the_next_run() {
    let mut with_logs = Config::default();
    with_logs.instance_store.move_pod_logs = true;
    let scenarios: [Scenario; 3] = [
        ("p4d", p4d_scenario, Config::default(), 20),
        ("single disk", single_disk_scenario, with_logs, 12),
        ("hyperpod", hyperpod_scenario, Config::default(), 8),
    ];
    for (name, scenario, config, at_least) in scenarios {
        let clean = scenario();
        run_steps(&clean.host(), &config).await.unwrap();
        let total = clean.runner.calls().len();
        assert!(
            total >= at_least,
            "{name}: expected a real sequence of commands, got {:?}",
            clean.runner.calls()
        );
        clean.runner.clear_calls();
        let (n, s) = plans(&clean.host(), &config).await;
        assert!(
            n.changes.is_empty() && s.changes.is_empty(),
            "{name}: {n:#?} {s:#?}"
        );
        // A converged node (or one after a reboot) is only looked at.
        for call in clean.runner.calls() {
            assert!(
                call.starts_with("blkid -o value"),
                "{name}: re-plan ran `{call}`"
            );
        }
        let clean_digest = tree_digest(clean.root.path());

        for k in 0..total {
            let sim = scenario();
            let host = sim.host();
            sim.runner.fail_at(k);
            let first = run_steps(&host, &config).await;
            let failed_call = sim.runner.calls().get(k).cloned();
            assert!(
                first.is_err(),
                "{name}: call {k} ({failed_call:?}) failed but the run succeeded"
            );
            sim.runner.clear_failure();
            run_steps(&host, &config).await.unwrap_or_else(|e| {
                panic!("{name}: re-run after failing call {k} ({failed_call:?}): {e}")
            });
            let (n, s) = plans(&host, &config).await;
            assert!(
                n.changes.is_empty() && s.changes.is_empty(),
                "{name}: not converged after failing call {k} ({failed_call:?}): {n:#?} {s:#?}"
            );
            assert_eq!(temp_files(sim.root.path()), Vec::<PathBuf>::new());
            assert_eq!(
                tree_digest(sim.root.path()),
                clean_digest,
                "{name}: root differs from a clean run after failing call {k} ({failed_call:?})"
            );
        }
    }
}

#[tokio::test]
async fn pod_logs_move_with_kubelet_and_kubelet_state_unknown_is_an_error() {
    let sim = single_disk_scenario();
    let host = sim.host();
    let mut config = Config::default();
    config.instance_store.move_pod_logs = true;
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    let p = instance_store::plan(&cx).unwrap();
    let r = runs(&p);
    assert!(
        r.contains(&"cp -a /var/lib/kubelet/. /mnt/k8s-disks/kubelet/".to_string()),
        "{r:?}"
    );
    assert!(
        r.contains(&"cp -a /var/log/pods/. /mnt/k8s-disks/pods-logs/".to_string()),
        "{r:?}"
    );
    let logs = written(&p, "/etc/systemd/system/var-log-pods.mount").unwrap();
    assert!(
        logs.lines().any(|l| l == "What=/mnt/k8s-disks/pods-logs"),
        "{logs}"
    );
    // kubelet was not running: nothing to stop or start.
    assert!(services(&p).iter().all(|(u, _)| u != "kubelet.service"));
    plan::apply(&host, &p.changes).await.unwrap();
    assert_eq!(
        sim.dir()
            .read("/mnt/k8s-disks/pods-logs/default_web-0_uid/web/0.log")
            .as_deref(),
        Some("hello\n")
    );
    assert_eq!(
        host.mount_at("/var/log/pods").unwrap().unwrap().root,
        Path::new("/pods-logs")
    );

    // systemd cannot say whether kubelet runs: do not copy under its feet.
    let sim = single_disk_scenario();
    sim.runner.once(
        &["systemctl", "is-active"],
        CmdOutput::failed(
            1,
            "System has not been booted with systemd as init system (PID 1).",
        ),
    );
    let host = sim.host();
    let cx = cx_with(&host, &config, &identity);
    let e = instance_store::plan(&cx).unwrap_err();
    assert_eq!(e.kind(), "service_state_unknown", "{e}");
    assert!(
        e.to_string()
            .contains("systemctl is-active kubelet.service"),
        "{e}"
    );
}

#[tokio::test]
async fn a_store_mounted_by_another_tool_is_used_but_not_taken_over() {
    // The EKS AMI mounts its own array at the same path with its own unit.
    let eks_unit = "[Mount]\nWhat=/dev/md/kubernetes\nWhere=/mnt/k8s-disks\n";
    let root = p4d_root()
        .mount("/mnt/k8s-disks", "xfs", "/dev/md/kubernetes")
        .file("/etc/systemd/system/mnt-k8s\\x2ddisks.mount", eks_unit);
    let sim = Sim::new(root);
    sim.device("/dev/md/kubernetes", "xfs", "");
    let host = sim.host();
    let config = Config::default();
    let identity = id(&host, &config).await;
    let cx = cx_with(&host, &config, &identity);
    assert_eq!(
        instance_store::store_root(&cx).unwrap().as_deref(),
        Some(Path::new("/mnt/k8s-disks"))
    );
    let p = instance_store::plan(&cx).unwrap();
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("which hpk8s did not format")),
        "{:?}",
        p.notes
    );
    assert!(written(&p, "/etc/systemd/system/mnt-k8s\\x2ddisks.mount").is_none());
    assert!(runs(&p).is_empty(), "{:?}", runs(&p));
    plan::apply(&host, &p.changes).await.unwrap();
    assert_eq!(
        sim.dir()
            .read("/etc/systemd/system/mnt-k8s\\x2ddisks.mount")
            .as_deref(),
        Some(eks_unit)
    );
    let m = host.mount_at("/var/lib/kubelet").unwrap().unwrap();
    assert_eq!(m.source, "/dev/md/kubernetes");
    assert!(instance_store::plan(&cx).unwrap().changes.is_empty());
}

/// A loop device backed by a sparse file, detached on drop.
struct Loop {
    dev: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn attach() -> Option<Loop> {
        let file = tempfile::NamedTempFile::new().ok()?;
        file.as_file().set_len(320 << 20).ok()?;
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file.path())
            .output()
            .ok()?;
        out.status.success().then(|| Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            _file: file,
        })
    }
}

impl Drop for Loop {
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

#[allow(clippy::disallowed_methods)] // test harness launches real components
fn tool(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The probe's reading of `blkid` (exit 2 = nothing, our label = ours)
/// against the real tools on a real block device.
#[test]
fn probe_agrees_with_real_blkid_on_a_loop_device() {
    use instance_store::disk::{Contents, probe};
    use lifecycle::host::{SystemInterfaces, SystemRunner};

    let lo = Loop::attach();
    let tools = tool("mkfs.xfs", &["-V"]) && tool("blkid", &["-V"]);
    if harness::require(
        lo.is_some() && tools,
        "loop devices (root), blkid and mkfs.xfs",
    ) {
        return;
    }
    let lo = lo.unwrap();
    let host = Host::new(
        "/",
        Arc::new(SystemRunner::new(Path::new("/"))),
        Arc::new(SystemInterfaces),
    );
    let dev = Path::new(&lo.dev);
    assert_eq!(probe(&host, dev).unwrap(), Contents::Blank);
    assert!(tool("mkfs.xfs", &["-q", "-L", "hpk8s-nvme", &lo.dev]));
    assert_eq!(probe(&host, dev).unwrap(), Contents::Ours);
    // mkfs.xfs refuses a device that has a file system: hpk8s relies on it.
    assert!(!tool("mkfs.xfs", &["-q", "-L", "hpk8s-nvme", &lo.dev]));
    assert!(tool("mkfs.xfs", &["-q", "-f", "-L", "scratch", &lo.dev]));
    assert_eq!(probe(&host, dev).unwrap(), Contents::Foreign("xfs".into()));
    if tool("mkfs.ext4", &["-q", "-F", &lo.dev]) {
        assert_eq!(probe(&host, dev).unwrap(), Contents::Foreign("ext4".into()));
    }
}

/// systemd itself checks the unit names we derive: a mount unit whose name
/// does not match `Where=` is refused by `systemd-analyze verify`.
#[test]
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn systemd_accepts_the_mount_units() {
    use instance_store::units::{bind_mount_unit, mount_unit_name, store_mount_unit};

    if harness::require(
        tool("systemd-analyze", &["--version"]),
        "systemd-analyze (package systemd)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for store in [
        "/mnt/k8s-disks",
        "/mnt/.nvme",
        "/srv/ü-disk_1",
        "/opt/dlami/nvme",
    ] {
        let name = mount_unit_name(Path::new(store));
        let path = dir.path().join(&name);
        std::fs::write(
            &path,
            store_mount_unit("/dev/disk/by-label/hpk8s-nvme", Path::new(store)),
        )
        .unwrap();
        files.push(path);
    }
    for target in ["/var/lib/kubelet", "/var/log/pods"] {
        let store = Path::new("/mnt/k8s-disks");
        let path = dir.path().join(mount_unit_name(Path::new(target)));
        std::fs::write(
            &path,
            bind_mount_unit(store, &store.join("x"), Path::new(target)),
        )
        .unwrap();
        files.push(path);
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (A `:` in the file name confuses `verify` itself, so none here; the
    // unit tests compare such names with `systemd-escape`.)
    // And the check is real: a misnamed unit is refused.
    let wrong = dir.path().join("mnt-k8s-disks.mount");
    std::fs::write(
        &wrong,
        store_mount_unit("/dev/disk/by-label/hpk8s-nvme", Path::new("/mnt/k8s-disks")),
    )
    .unwrap();
    assert!(
        !std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&wrong)
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// The "is the unit enabled" check reads the links real `systemctl enable`
/// makes (checked offline with `systemctl --root`).
#[tokio::test]
#[allow(clippy::disallowed_methods)] // test harness launches real components
async fn enabled_units_are_recognised_as_real_systemctl_links_them() {
    if harness::require(
        tool("systemctl", &["--version"]),
        "systemctl (package systemd)",
    ) {
        return;
    }
    let sim = Sim::new(p4d_root());
    let host = sim.host();
    let config = Config::default();
    run_steps(&host, &config).await.unwrap();
    let wants = sim.dir().join("/etc/systemd/system/local-fs.target.wants");
    std::fs::remove_dir_all(&wants).unwrap();
    let (_, p) = plans(&host, &config).await;
    let units = ["mnt-k8s\\x2ddisks.mount", "var-lib-kubelet.mount"];
    assert_eq!(
        services(&p),
        vec![
            (String::new(), ServiceOperation::DaemonReload),
            (units[0].to_string(), ServiceOperation::EnableNow),
        ],
        "only the store unit is re-enabled: kubelet's bind mount is in place"
    );
    let out = std::process::Command::new("systemctl")
        .arg(format!("--root={}", sim.root.path().display()))
        .arg("enable")
        .args(units)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for unit in units {
        assert!(wants.join(unit).is_symlink(), "{unit}");
    }
    let (_, again) = plans(&host, &config).await;
    assert!(again.changes.is_empty(), "{again:#?}");
}
