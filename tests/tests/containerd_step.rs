//! Step `containerd` against fake host roots and a scripted runner: what it
//! plans on a fresh node, on an operator's file, with and without NVIDIA
//! hardware, and that a second run after applying plans nothing.

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lifecycle::config::Config;
use lifecycle::host::{CmdOutput, FixedInterfaces, Host, ScriptedRunner};
use lifecycle::identity::{self, NodeIdentity};
use lifecycle::plan::{self, Change, ServiceOperation, StepPlan};
use lifecycle::prepare::Context;
use lifecycle::prepare::containerd::{self, DROP_IN, Error};

const CONFIG: &str = "/etc/containerd/config.toml";
const NVIDIA_BIN: &str = "/usr/bin/nvidia-container-runtime";

/// What containerd 1.6's `containerd config default` prints, trimmed to the
/// sections the step reads or that neighbour them.
const DEFAULT_V2: &str = r#"disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/var/lib/containerd"
state = "/run/containerd"
temp = ""
version = 2

[grpc]
  address = "/run/containerd/containerd.sock"
  gid = 0
  uid = 0

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    systemd_cgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            SystemdCgroup = false

  [plugins."io.containerd.internal.v1.opt"]
    path = "/opt/containerd"
"#;

/// A containerd 2.x (schema 3) file, as `containerd config default` lays
/// it out, trimmed.
const DEFAULT_V3: &str = r#"version = 3
root = '/var/lib/containerd'
state = '/run/containerd'

[grpc]
  address = '/run/containerd/containerd.sock'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'

    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            SystemdCgroup = false
"#;

/// A node: a fake root, a scripted runner standing in for systemd, ctr and
/// containerd, and the configuration.
struct Node {
    /// Keeps the fake root alive.
    _dir: tempfile::TempDir,
    runner: ScriptedRunner,
    host: Host,
    config: Config,
    identity: NodeIdentity,
}

impl Node {
    async fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let runner = ScriptedRunner::new();
        runner
            .on(
                &["containerd", "config", "default"],
                CmdOutput::ok(DEFAULT_V2),
            )
            .on(&["systemctl"], CmdOutput::ok(""))
            .on(&["systemctl", "is-enabled"], CmdOutput::ok("enabled\n"))
            .on(&["systemctl", "is-active"], CmdOutput::ok("active\n"))
            .on(&["ctr"], CmdOutput::ok("Server:\n  Version: 1.6.20\n"))
            .on(&["cp"], CmdOutput::ok(""));
        let host = Host::new(
            dir.path(),
            Arc::new(runner.clone()),
            Arc::new(FixedInterfaces::default()),
        );
        let mut config = Config::default();
        config.node.address = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7)));
        let identity = identity::resolve(&host, &config).await.unwrap();
        Node {
            _dir: dir,
            runner,
            host,
            config,
            identity,
        }
    }

    fn cx(&self) -> Context<'_> {
        Context {
            host: &self.host,
            config: &self.config,
            identity: &self.identity,
        }
    }

    fn path(&self, host_path: &str) -> PathBuf {
        self.host.path(host_path)
    }

    fn write(&self, host_path: &str, text: &str) {
        let p = self.path(host_path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, host_path: &str) -> String {
        std::fs::read_to_string(self.path(host_path)).unwrap()
    }

    /// A PCI function under the fake `/sys`.
    fn pci(&self, addr: &str, vendor: &str, device: &str, class: &str) {
        let d = format!("/sys/bus/pci/devices/{addr}");
        self.write(&format!("{d}/vendor"), &format!("{vendor}\n"));
        self.write(&format!("{d}/device"), &format!("{device}\n"));
        self.write(&format!("{d}/class"), &format!("{class}\n"));
    }

    fn gpus(&self, n: usize) {
        for i in 0..n {
            self.pci(
                &format!("0000:{:02x}:00.0", 0x10 + i),
                "0x10de",
                "0x2330",
                "0x030200",
            );
        }
        // An NVSwitch, which is not a GPU.
        self.pci("0000:c0:00.0", "0x10de", "0x22a3", "0x068000");
    }

    fn remove_gpus(&self) {
        std::fs::remove_dir_all(self.path("/sys/bus/pci/devices")).unwrap();
    }

    fn nvidia_binary(&self) {
        self.write(NVIDIA_BIN, "#!/bin/sh\n");
    }

    fn plan(&self) -> Result<StepPlan, Error> {
        containerd::plan(&self.cx())
    }

    /// Plans, applies, and checks that a second plan is empty.
    async fn converge(&self) -> StepPlan {
        let p = self.plan().unwrap();
        plan::apply(&self.host, &p.changes).await.unwrap();
        let again = self.plan().unwrap();
        assert!(
            again.changes.is_empty(),
            "second run planned changes: {:#?}",
            again.changes
        );
        p
    }
}

fn written<'a>(p: &'a StepPlan, path: &str) -> Option<&'a str> {
    p.changes.iter().find_map(|c| match c {
        Change::WriteFile {
            path: p, contents, ..
        } if p == Path::new(path) => std::str::from_utf8(contents).ok(),
        _ => None,
    })
}

fn services(p: &StepPlan) -> Vec<ServiceOperation> {
    p.changes
        .iter()
        .filter_map(|c| match c {
            Change::Service { operation, .. } => Some(*operation),
            _ => None,
        })
        .collect()
}

fn has_note(p: &StepPlan, text: &str) -> bool {
    p.notes.iter().any(|n| n.contains(text))
}

#[tokio::test]
async fn fresh_node_starts_from_the_default_and_converges() {
    let node = Node::new().await;
    let p = node.plan().unwrap();
    let cfg = written(&p, CONFIG).expect("config written");
    assert!(cfg.starts_with("# Generated by hpk8s"), "{cfg}");
    assert!(cfg.contains("SystemdCgroup = true"), "{cfg}");
    assert!(!cfg.contains("SystemdCgroup = false"), "{cfg}");
    assert!(
        cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10.1\""),
        "{cfg}"
    );
    assert!(cfg.contains("default_runtime_name = \"runc\""), "{cfg}");
    assert!(cfg.contains("root = \"/var/lib/containerd\""), "{cfg}");
    assert!(!cfg.contains("runtimes.nvidia"), "{cfg}");
    assert_eq!(
        written(&p, DROP_IN),
        Some(
            "# Written by hpk8s: EFA/NCCL pin large buffers in memory.\n[Service]\nLimitMEMLOCK=infinity\n"
        )
    );
    assert_eq!(
        services(&p),
        vec![ServiceOperation::DaemonReload, ServiceOperation::Restart]
    );
    match p.changes.last().unwrap() {
        Change::WaitFor {
            probe,
            timeout_secs,
            ..
        } => {
            assert_eq!(
                probe.display(),
                "ctr --address /run/containerd/containerd.sock version"
            );
            assert_eq!(*timeout_secs, 60);
        }
        other => panic!("last change is {other:?}"),
    }
    assert!(has_note(
        &p,
        "NVIDIA runtime: not configured (no NVIDIA PCI devices)"
    ));
    assert!(has_note(
        &p,
        "missing: starting from `containerd config default`"
    ));

    node.converge().await;
    assert_eq!(node.host.mode_of(CONFIG), Some(0o644));
    let calls = node.runner.calls();
    assert!(
        calls.contains(&"systemctl daemon-reload".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"systemctl restart containerd.service".to_string()),
        "{calls:?}"
    );
    // Once the file exists, the default is not asked for again.
    node.runner.clear_calls();
    node.plan().unwrap();
    assert!(
        !node
            .runner
            .calls()
            .iter()
            .any(|c| c.starts_with("containerd ")),
        "{:?}",
        node.runner.calls()
    );
}

#[tokio::test]
async fn operator_comments_and_unrelated_keys_survive() {
    let node = Node::new().await;
    let operator = r#"# Site policy: mirrors are configured per registry.
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  # pinned by the platform team
  sandbox_image = "registry.k8s.io/pause:3.9"
  max_container_log_line_size = 32768

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"

  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false  # flipped by hpk8s
"#;
    node.write(CONFIG, operator);
    let p = node.converge().await;
    let cfg = node.read(CONFIG);
    assert!(
        cfg.starts_with("# Site policy: mirrors are configured per registry.\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains(
            "  # pinned by the platform team\n  sandbox_image = \"registry.k8s.io/pause:3.10.1\"\n"
        ),
        "{cfg}"
    );
    assert!(cfg.contains("max_container_log_line_size = 32768"), "{cfg}");
    assert!(
        cfg.contains("config_path = \"/etc/containerd/certs.d\""),
        "{cfg}"
    );
    assert!(
        cfg.contains("SystemdCgroup = true  # flipped by hpk8s"),
        "{cfg}"
    );
    // Only the two managed values changed.
    assert_eq!(
        cfg.lines().filter(|l| !operator.contains(l)).count(),
        2,
        "{cfg}"
    );
    assert!(has_note(&p, "config keys to set"));
    assert!(
        !node
            .runner
            .calls()
            .iter()
            .any(|c| c.starts_with("containerd "))
    );
    // The original is kept for the operator.
    assert_eq!(
        node.read("/var/lib/hpk8s/backup/etc/containerd/config.toml"),
        operator
    );
}

#[tokio::test]
async fn schema_3_uses_containerd_2_plugin_names() {
    let node = Node::new().await;
    node.write(CONFIG, DEFAULT_V3);
    node.gpus(2);
    node.nvidia_binary();
    let p = node.converge().await;
    assert!(has_note(&p, "V3"));
    let cfg = node.read(CONFIG);
    assert!(
        cfg.contains("sandbox = 'registry.k8s.io/pause:3.10.1'\n"),
        "{cfg}"
    );
    assert!(!cfg.contains("io.containerd.grpc.v1.cri"), "{cfg}");
    assert!(!cfg.contains("SystemdCgroup = false"), "{cfg}");
    assert!(cfg.contains("default_runtime_name = 'nvidia'"), "{cfg}");
    assert!(
        cfg.contains("[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia.options]")
            || cfg.contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.nvidia.options]"
            ),
        "{cfg}"
    );
    assert!(
        cfg.contains(&format!("BinaryName = '{NVIDIA_BIN}'")),
        "{cfg}"
    );
    // Laid out like containerd's own runc table, literal strings included.
    assert!(
        cfg.contains("SystemdCgroup = true\n\n        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n          runtime_type = 'io.containerd.runc.v2'\n"),
        "{cfg}"
    );
}

#[tokio::test]
async fn nvidia_runtime_needs_both_gpus_and_the_binary() {
    // GPUs and binary: nvidia is the default runtime.
    let node = Node::new().await;
    node.gpus(8);
    node.nvidia_binary();
    let p = node.converge().await;
    assert!(
        has_note(&p, "NVIDIA runtime: default runtime (8 NVIDIA GPU(s)"),
        "{:?}",
        p.notes
    );
    let cfg = node.read(CONFIG);
    assert!(cfg.contains("default_runtime_name = \"nvidia\""), "{cfg}");
    let nvidia = cfg
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]")
        .nth(1)
        .expect("nvidia runtime table");
    assert!(
        nvidia.contains("runtime_type = \"io.containerd.runc.v2\""),
        "{cfg}"
    );
    assert!(
        nvidia.contains(&format!("BinaryName = \"{NVIDIA_BIN}\"")),
        "{cfg}"
    );
    assert!(nvidia.contains("SystemdCgroup = true"), "{cfg}");

    // GPUs gone (the node was re-imaged onto another instance type): runc
    // is the default again, and containerd restarts.
    node.remove_gpus();
    let p = node.converge().await;
    assert!(services(&p).contains(&ServiceOperation::Restart));
    let cfg = node.read(CONFIG);
    assert!(cfg.contains("default_runtime_name = \"runc\""), "{cfg}");

    // GPUs but no binary.
    let node = Node::new().await;
    node.gpus(4);
    let p = node.converge().await;
    assert!(
        has_note(
            &p,
            "4 NVIDIA GPU(s) but /usr/bin/nvidia-container-runtime is missing"
        ),
        "{:?}",
        p.notes
    );
    assert!(!node.read(CONFIG).contains("runtimes.nvidia"));

    // Binary but no GPUs.
    let node = Node::new().await;
    node.nvidia_binary();
    node.pci("0000:00:02.0", "0x1234", "0x1111", "0x030000"); // a VGA that is not NVIDIA
    let p = node.converge().await;
    assert!(has_note(&p, "no NVIDIA PCI devices"), "{:?}", p.notes);
    assert!(!node.read(CONFIG).contains("runtimes.nvidia"));
}

#[tokio::test]
async fn data_root_moves_onto_the_instance_store() {
    let node = Node::new().await;
    node.write(
        "/proc/self/mountinfo",
        "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw\n\
         98 22 9:127 / /opt/dlami/nvme rw,relatime shared:45 - xfs /dev/md127 rw\n",
    );
    node.write(
        "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db",
        "db",
    );
    node.write(CONFIG, DEFAULT_V2);
    let p = node.plan().unwrap();
    let ops: Vec<String> = p.changes.iter().map(Change::summary).collect();
    assert!(
        matches!(
            &p.changes[0],
            Change::Service {
                operation: ServiceOperation::Stop,
                ..
            }
        ),
        "{ops:#?}"
    );
    assert!(
        matches!(&p.changes[1], Change::CreateDir { path } if path == Path::new("/opt/dlami/nvme/containerd")),
        "{ops:#?}"
    );
    assert!(
        matches!(&p.changes[2], Change::Run { command, .. }
            if command.display() == "cp -a /var/lib/containerd/. /opt/dlami/nvme/containerd/"),
        "{ops:#?}"
    );
    assert!(matches!(&p.changes[3], Change::WriteFile { path, .. } if path == Path::new(CONFIG)));
    assert!(
        services(&p).ends_with(&[ServiceOperation::Start]),
        "{ops:#?}"
    );
    let cfg = written(&p, CONFIG).unwrap();
    assert!(
        cfg.contains("root = \"/opt/dlami/nvme/containerd\""),
        "{cfg}"
    );
    assert!(has_note(&p, "data root: /opt/dlami/nvme/containerd"));
    node.converge().await;
    assert!(node.path("/opt/dlami/nvme/containerd").is_dir());

    // Opting out leaves `root` alone, even with an instance store.
    let mut other = Node::new().await;
    other.config.containerd.data_on_instance_store = false;
    other.write(
        "/proc/self/mountinfo",
        "98 22 9:127 / /opt/dlami/nvme rw - xfs /dev/md127 rw\n",
    );
    other.write(CONFIG, DEFAULT_V2);
    let p = other.plan().unwrap();
    assert!(
        written(&p, CONFIG)
            .unwrap()
            .contains("root = \"/var/lib/containerd\"")
    );
    assert!(has_note(&p, "data_on_instance_store = false"));

    // Not a mount point any more: root is left as it is now.
    node.write(
        "/proc/self/mountinfo",
        "22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n",
    );
    let p = node.plan().unwrap();
    assert!(p.changes.is_empty(), "{:#?}", p.changes);
    assert!(has_note(&p, "no instance store"));
}

#[tokio::test]
async fn empty_old_root_and_stopped_unit() {
    let node = Node::new().await;
    node.write(
        "/proc/self/mountinfo",
        "98 22 9:127 / /opt/dlami/nvme rw - xfs /dev/md127 rw\n",
    );
    node.runner
        .once(&["systemctl", "is-enabled"], CmdOutput::failed(1, ""))
        .once(&["systemctl", "is-active"], CmdOutput::failed(3, ""));
    let p = node.plan().unwrap();
    // Nothing to copy, and a disabled unit is enabled and started.
    assert!(!p.changes.iter().any(|c| matches!(c, Change::Run { .. })));
    assert_eq!(
        services(&p),
        vec![ServiceOperation::DaemonReload, ServiceOperation::EnableNow]
    );

    // Running but not enabled: enabled for the next boot, and restarted so
    // that the new config takes effect now.
    node.runner.once(
        &["systemctl", "is-enabled"],
        CmdOutput::failed(1, "disabled\n"),
    );
    let p = node.plan().unwrap();
    assert_eq!(
        services(&p),
        vec![
            ServiceOperation::DaemonReload,
            ServiceOperation::Enable,
            ServiceOperation::Restart
        ]
    );
    assert!(matches!(p.changes.last(), Some(Change::WaitFor { .. })));

    // Everything in place but containerd stopped: started again.
    node.converge().await;
    node.runner.once(
        &["systemctl", "is-active"],
        CmdOutput::failed(3, "inactive\n"),
    );
    let p = node.plan().unwrap();
    assert_eq!(services(&p), vec![ServiceOperation::Restart]);
    assert!(
        p.changes
            .iter()
            .any(|c| c.summary().contains("containerd is not running"))
    );
}

#[tokio::test]
async fn broken_toml_names_file_and_line() {
    let node = Node::new().await;
    node.write(
        CONFIG,
        "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"\nsandbox_image = 1\n",
    );
    let e = node.plan().unwrap_err();
    let s = e.to_string();
    assert!(s.contains("/etc/containerd/config.toml: line 3:"), "{s}");
    assert_eq!(e.kind(), "containerd_config_syntax");
    assert_eq!(lifecycle::Error::from(e).kind(), "containerd_config_syntax");
}

#[tokio::test]
async fn wrong_types_name_the_key() {
    let node = Node::new().await;
    node.write(
        CONFIG,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = \"yes\"\n",
    );
    let e = node.plan().unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("line 3: `plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options.SystemdCgroup` must be a boolean"),
        "{s}"
    );
    assert_eq!(e.kind(), "containerd_config_wrong_type");
    // Nothing was touched.
    assert!(!node.path(DROP_IN).exists());

    node.write(CONFIG, "version = 2\nroot = 5\n");
    let e = node.plan().unwrap_err();
    assert!(e.to_string().contains("`root` must be a string"), "{e}");
    node.write(
        CONFIG,
        "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\", 7]\n",
    );
    let e = node.plan().unwrap_err();
    assert!(
        e.to_string()
            .contains("line 2: `imports` must be an array of strings"),
        "{e}"
    );
    node.write(
        CONFIG,
        "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
    );
    let p = node.plan().unwrap();
    assert!(
        has_note(&p, "config imports /etc/containerd/conf.d/*.toml"),
        "{:?}",
        p.notes
    );
    node.write(CONFIG, "version = 1\n");
    assert_eq!(node.plan().unwrap_err().kind(), "containerd_config_schema");
}

#[tokio::test]
async fn missing_containerd_is_a_clear_error() {
    let mut node = Node::new().await;
    // Nothing installs it in this run.
    node.config.containerd.source = lifecycle::config::ContainerdSource::None;
    node.runner.once(
        &["containerd"],
        CmdOutput::failed(127, "containerd: command not found"),
    );
    let e = node.plan().unwrap_err();
    let s = e.to_string();
    assert!(
        s.starts_with("containerd is not installed (/etc/containerd/config.toml is missing"),
        "{s}"
    );
    assert!(s.contains("apt-get install containerd"), "{s}");
    assert_eq!(e.kind(), "containerd_not_installed");

    node.runner
        .once(&["containerd"], CmdOutput::failed(1, "panic: boom"));
    let e = node.plan().unwrap_err();
    assert_eq!(e.kind(), "containerd_default_config_failed", "{e}");
    assert!(e.to_string().contains("boom"), "{e}");
}

#[tokio::test]
async fn a_containerd_installed_in_this_run_is_planned_from_the_built_in_default() {
    // `bootstrap --dry-run` on a bare Debian/Ubuntu image: step `packages`
    // plans the install (packages.source = apt), so this step plans the
    // config it will write instead of failing.
    let node = Node::new().await;
    node.runner.once(
        &["containerd"],
        CmdOutput::failed(127, "containerd: command not found"),
    );
    node.runner.on(
        &["systemctl", "is-enabled"],
        CmdOutput::failed(1, "not-found\n"),
    );
    node.runner.on(
        &["systemctl", "is-active"],
        CmdOutput::failed(3, "inactive\n"),
    );
    let p = node.plan().unwrap();
    assert!(has_note(&p, "built-in default"), "{:#?}", p.notes);
    let cfg = written(&p, CONFIG).expect("config planned");
    assert!(cfg.contains("SystemdCgroup = true"), "{cfg}");
    assert!(
        cfg.contains("sandbox_image = \"registry.k8s.io/pause:3.10.1\""),
        "{cfg}"
    );
    assert!(
        services(&p).contains(&ServiceOperation::EnableNow),
        "{:#?}",
        p.changes
    );
}

#[tokio::test]
async fn sandbox_image_follows_the_kubernetes_minor_and_repository() {
    let mut node = Node::new().await;
    node.config.kubernetes.version = "1.30.2".into();
    node.config.kubernetes.image_repository = "mirror.internal:5000/k8s/".into();
    let p = node.plan().unwrap();
    assert!(
        written(&p, CONFIG)
            .unwrap()
            .contains("sandbox_image = \"mirror.internal:5000/k8s/pause:3.9\"")
    );
    node.config.kubernetes.version = "1.23.0".into();
    assert_eq!(
        node.plan().unwrap_err().kind(),
        "kubernetes_version_unsupported"
    );
    assert_eq!(containerd::pause_tag(1, 33), Some("3.10"));
    assert_eq!(containerd::pause_tag(1, 31), Some("3.10"));
    assert_eq!(containerd::pause_tag(1, 27), Some("3.9"));
    assert_eq!(containerd::pause_tag(1, 40), Some("3.10.1"));
}

/// An operator's 0600 config holding registry credentials: it stays 0600,
/// its secrets appear in no plan, and no backup copy of it is kept.
#[tokio::test]
async fn a_private_config_with_registry_auth_stays_private() {
    use std::os::unix::fs::PermissionsExt as _;
    const PASSWORD: &str = "pa55-w0rd-s3cret";
    const AUTH: &str = "dXNlcjpwYTU1LXcwcmQtczNjcmV0";
    let node = Node::new().await;
    let operator = format!(
        r#"version = 2

[plugins."io.containerd.grpc.v1.cri".registry.configs."registry.internal:5000".auth]
  username = "puller"
  password = "{PASSWORD}"
  auth = "{AUTH}"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
"#
    );
    node.write(CONFIG, &operator);
    std::fs::set_permissions(node.path(CONFIG), std::fs::Permissions::from_mode(0o600)).unwrap();
    let p = node.plan().unwrap();
    let shown = format!("{:#?} {}", p, serde_json::to_string(&p).unwrap());
    let text: String = p
        .changes
        .iter()
        .map(|c| match c {
            Change::WriteFile { diff, .. } => diff.clone(),
            other => other.summary(),
        })
        .collect();
    for secret in [PASSWORD, AUTH] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!text.contains(secret), "{text}");
    }
    let write = p
        .changes
        .iter()
        .find_map(|c| match c {
            Change::WriteFile { path, mode, .. } if path == Path::new(CONFIG) => Some(*mode),
            _ => None,
        })
        .unwrap();
    assert_eq!(write.mode, 0o600, "the stricter mode is kept");
    plan::apply(&node.host, &p.changes).await.unwrap();
    let mode = std::fs::metadata(node.path(CONFIG))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        node.read(CONFIG).contains(PASSWORD),
        "the credentials themselves stay"
    );
    assert!(
        !node
            .path("/var/lib/hpk8s/backup/etc/containerd/config.toml")
            .exists(),
        "no second copy of the credentials"
    );
}

/// What the NVIDIA Container Toolkit's `nvidia-ctk runtime configure
/// --drop-in` leaves: a schema-2 CRI table holding its runtime only.
const TOOLKIT_DROP_IN_V2: &str = r#"version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "nvidia"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
"#;

const DROP_IN_DIR: &str = "/etc/containerd/conf.d";

fn with_imports(main: &str) -> String {
    main.replace(
        "imports = []",
        "imports = [\"/etc/containerd/conf.d/*.toml\"]",
    )
}

#[tokio::test]
async fn schema_2_import_that_replaces_the_cri_table_is_completed() {
    // containerd 1.x lays an import's plugin table over the main file's
    // whole, so this drop-in alone would undo SystemdCgroup and the pause
    // image; hpk8s sets them in the drop-in too.
    let node = Node::new().await;
    node.gpus(1);
    node.nvidia_binary();
    node.write(CONFIG, &with_imports(DEFAULT_V2));
    let drop_in = format!("{DROP_IN_DIR}/99-nvidia.toml");
    node.write(&drop_in, TOOLKIT_DROP_IN_V2);
    std::fs::set_permissions(
        node.path(&drop_in),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let p = node.converge().await;
    assert!(
        has_note(&p, "99-nvidia.toml (imported) overrides"),
        "{:#?}",
        p.notes
    );
    let written = node.read(&drop_in);
    assert!(written.contains("SystemdCgroup = true"), "{written}");
    assert!(
        written.contains("sandbox_image = \"registry.k8s.io/pause:3.10.1\""),
        "{written}"
    );
    assert!(
        written.contains("BinaryName = \"/usr/bin/nvidia-container-runtime\""),
        "{written}"
    );
    assert!(
        !written.contains("root ="),
        "a root the import did not set stays the main file's: {written}"
    );
    // A restart follows the drop-in's change.
    assert!(
        services(&p).contains(&ServiceOperation::Restart),
        "{:#?}",
        p.changes
    );
}

#[tokio::test]
async fn schema_3_import_merges_key_by_key_and_is_left_alone() {
    let node = Node::new().await;
    node.write(
        CONFIG,
        &DEFAULT_V3.replace(
            "version = 3\n",
            "version = 3\nimports = ['conf.d/extra.toml']\n",
        ),
    );
    let extra = format!("{DROP_IN_DIR}/extra.toml");
    let text = "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kata]\nruntime_type = 'io.containerd.kata.v2'\n";
    node.write(&extra, text);
    let p = node.converge().await;
    assert!(has_note(&p, "imports checked: 1 file(s)"), "{:#?}", p.notes);
    assert_eq!(
        node.read(&extra),
        text,
        "a merging import that keeps hpk8s's keys is not touched"
    );
}

#[tokio::test]
async fn an_import_nobody_but_its_owner_may_edit_is_an_error_naming_it() {
    let node = Node::new().await;
    node.write(CONFIG, &with_imports(DEFAULT_V2));
    let drop_in = format!("{DROP_IN_DIR}/50-other.toml");
    node.write(
        &drop_in,
        TOOLKIT_DROP_IN_V2
            .replace(
                "BinaryName",
                "SystemdCgroup = false\n            BinaryName",
            )
            .as_str(),
    );
    // Group-writable: another tool's (or user's) file, not hpk8s's to edit.
    std::fs::set_permissions(
        node.path(&drop_in),
        std::os::unix::fs::PermissionsExt::from_mode(0o664),
    )
    .unwrap();
    let before = std::fs::read(node.path(&drop_in)).unwrap();
    let err = node.plan().unwrap_err();
    assert_eq!(err.kind(), "containerd_import_overrides");
    let msg = err.to_string();
    assert!(
        msg.contains("50-other.toml") && msg.contains(CONFIG),
        "{msg}"
    );
    assert_eq!(std::fs::read(node.path(&drop_in)).unwrap(), before);
}

#[tokio::test]
async fn a_missing_import_is_named() {
    let node = Node::new().await;
    node.write(
        CONFIG,
        &DEFAULT_V2.replace("imports = []", "imports = [\"/etc/containerd/site.toml\"]"),
    );
    let err = node.plan().unwrap_err();
    assert_eq!(err.kind(), "containerd_import_missing");
    assert!(
        err.to_string().contains("/etc/containerd/site.toml"),
        "{err}"
    );
}

#[tokio::test]
async fn schema_2_relative_glob_is_matched_from_the_root_and_the_config_directory() {
    // containerd 1.6.20 globs `conf.d/*.toml` from its working directory
    // (`/` under systemd); later 1.6/1.7 releases from the config's
    // directory. Both count.
    let node = Node::new().await;
    node.write(
        CONFIG,
        &DEFAULT_V2.replace("imports = []", "imports = [\"conf.d/*.toml\"]"),
    );
    node.write(
        "/conf.d/20-seen.toml",
        "version = 2\n[debug]\nlevel = \"info\"\n",
    );
    node.write(
        "/etc/containerd/conf.d/10-also.toml",
        "version = 2\n[metrics]\naddress = \"127.0.0.1:1338\"\n",
    );
    let p = node.converge().await;
    assert!(has_note(&p, "imports checked: 2 file(s)"), "{:#?}", p.notes);
}

/// Debian 12's `containerd` package ships this file: its CNI directory is
/// `/usr/lib/cni`, where neither flannel's plugin nor `kubernetes-cni` is.
const DEBIAN_PACKAGED: &str = r#"version = 2

[plugins."io.containerd.grpc.v1.cri".cni]
bin_dir = "/usr/lib/cni"
conf_dir = "/etc/cni/net.d"

[plugins."io.containerd.internal.v1.opt"]
path = "/var/lib/containerd/opt"
"#;

#[tokio::test]
async fn cni_plugins_are_looked_up_where_flannel_and_kubernetes_cni_put_them() {
    let node = Node::new().await;
    node.write(CONFIG, DEBIAN_PACKAGED);
    node.converge().await;
    let cfg = node.read(CONFIG);
    assert!(cfg.contains("bin_dir = \"/opt/cni/bin\""), "{cfg}");
    assert!(cfg.contains("conf_dir = \"/etc/cni/net.d\""), "{cfg}");

    // containerd 2.1+ reads a list.
    let node = Node::new().await;
    node.write(
        CONFIG,
        &format!(
            "{DEFAULT_V3}\n    [plugins.'io.containerd.cri.v1.runtime'.cni]\n      bin_dirs = ['/usr/lib/cni']\n"
        ),
    );
    node.converge().await;
    let cfg = node.read(CONFIG);
    assert!(
        cfg.contains("bin_dirs = ['/opt/cni/bin', '/usr/lib/cni']")
            || cfg.contains("bin_dirs = [\"/opt/cni/bin\", '/usr/lib/cni']"),
        "{cfg}"
    );
}

/// What `nvidia-ctk config default` writes, trimmed: the two keys are
/// commented out at the top level, before the first table.
const TOOLKIT_CONFIG: &str = r#"#accept-nvidia-visible-devices-as-volume-mounts = false
#accept-nvidia-visible-devices-envvar-when-unprivileged = true
disable-require = false
supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"

[nvidia-container-cli]
environment = []
ldconfig = "@/sbin/ldconfig.real"
load-kmods = true

[nvidia-container-runtime]
log-level = "info"
mode = "auto"
"#;

#[tokio::test]
async fn volume_mounts_strategy_sets_the_toolkit_and_envvar_puts_it_back() {
    use lifecycle::config::DeviceListStrategy;
    use lifecycle::prepare::containerd::nvidia_toolkit::{
        AS_VOLUME_MOUNTS, CONFIG as TOOLKIT, ENVVAR_WHEN_UNPRIVILEGED,
    };

    // Default (envvar): the toolkit's own defaults are that; nothing written.
    let node = Node::new().await;
    node.gpus(1);
    node.nvidia_binary();
    node.write(TOOLKIT, TOOLKIT_CONFIG);
    let p = node.converge().await;
    assert!(written(&p, TOOLKIT).is_none(), "{:#?}", p.changes);
    assert!(has_note(&p, "NVIDIA device list strategy: envvar"));

    let mut node = node;
    node.config.addons.nvidia_device_list_strategy = DeviceListStrategy::VolumeMounts;
    let p = node.converge().await;
    let text = written(&p, TOOLKIT).expect("toolkit config written");
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    // Top-level keys, which is where the toolkit reads them.
    assert_eq!(
        doc[ENVVAR_WHEN_UNPRIVILEGED].as_bool(),
        Some(false),
        "{text}"
    );
    assert_eq!(doc[AS_VOLUME_MOUNTS].as_bool(), Some(true), "{text}");
    assert_eq!(
        doc["nvidia-container-cli"]["ldconfig"].as_str(),
        Some("@/sbin/ldconfig.real")
    );
    assert!(
        text.contains("#accept-nvidia-visible-devices-as-volume-mounts = false"),
        "{text}"
    );
    // No containerd restart for a file the runtime reads per container.
    assert!(
        !services(&p).contains(&ServiceOperation::Restart),
        "{:#?}",
        p.changes
    );

    node.config.addons.nvidia_device_list_strategy = DeviceListStrategy::Envvar;
    node.converge().await;
    let doc: toml_edit::DocumentMut = node.read(TOOLKIT).parse().unwrap();
    assert_eq!(doc[ENVVAR_WHEN_UNPRIVILEGED].as_bool(), Some(true));
    assert_eq!(doc[AS_VOLUME_MOUNTS].as_bool(), Some(false));

    // A node without GPUs has no toolkit to configure.
    let node = Node::new().await;
    node.config_volume_mounts_without_gpus().await;
}

impl Node {
    async fn config_volume_mounts_without_gpus(mut self) {
        self.config.addons.nvidia_device_list_strategy =
            lifecycle::config::DeviceListStrategy::VolumeMounts;
        let p = self.converge().await;
        assert!(
            written(&p, lifecycle::prepare::containerd::nvidia_toolkit::CONFIG).is_none(),
            "{:#?}",
            p.changes
        );
    }
}

#[tokio::test]
async fn a_toolkit_key_of_the_wrong_type_is_named() {
    let node = Node::new().await;
    node.gpus(1);
    node.nvidia_binary();
    node.write(
        "/etc/nvidia-container-runtime/config.toml",
        "accept-nvidia-visible-devices-envvar-when-unprivileged = \"no\"\n",
    );
    let err = node.plan().unwrap_err();
    assert_eq!(err.kind(), "nvidia_toolkit_config_invalid");
    let msg = err.to_string();
    assert!(
        msg.contains("/etc/nvidia-container-runtime/config.toml")
            && msg.contains("accept-nvidia-visible-devices-envvar-when-unprivileged")
            && msg.contains("line 1"),
        "{msg}"
    );
}
