//! Step `packages` of phase `prepare`: the mirror source against the stand-in
//! mirror and a fake root, the apt source against a scripted runner, and the
//! binary failing on a bad checksum before touching its root.

#![allow(clippy::unwrap_used)] // a failed fixture step should abort the test loudly

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use harness::mirror::{MirrorBuilder, MirrorLayout, MirrorServer, sha256_hex, unreachable_url};
use lifecycle::config::{Config, PackageSource};
use lifecycle::host::{CmdOutput, FixedInterfaces, Host, ScriptedRunner};
use lifecycle::identity::{self, NodeIdentity};
use lifecycle::plan::{self, ApplyError, Change, Plan, ServiceOperation, StepPlan};
use lifecycle::prepare::Context;
use lifecycle::prepare::packages::{self, Error};

const VERSION: &str = "1.34.1";

/// A fake root, a scripted runner and a config.
struct Node {
    root: tempfile::TempDir,
    runner: ScriptedRunner,
    host: Host,
    config: Config,
    identity: NodeIdentity,
}

impl Node {
    async fn new(config: Config) -> Node {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/hostname"), "node-a\n").unwrap();
        // These nodes have containerd, the CNI plugins and crictl (as
        // HyperPod and DLAMI images do); `Node::bare` removes them.
        for image_has in [
            "usr/bin/containerd",
            "opt/cni/bin/bridge",
            "usr/local/bin/crictl",
        ] {
            let path = root.path().join(image_has);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "#!/bin/sh\n").unwrap();
        }
        let runner = ScriptedRunner::new();
        let host = Host::new(
            root.path(),
            Arc::new(runner.clone()),
            Arc::new(FixedInterfaces::default()),
        );
        let mut config = config;
        config.node.address = Some("10.1.0.5".parse().unwrap());
        let identity = identity::resolve(&host, &config).await.unwrap();
        Node {
            root,
            runner,
            host,
            config,
            identity,
        }
    }

    /// A bare OS image: no containerd, CNI plugins or crictl.
    fn bare(self) -> Node {
        for path in [
            "/usr/bin/containerd",
            "/opt/cni/bin/bridge",
            "/usr/local/bin/crictl",
        ] {
            std::fs::remove_file(self.file(path)).unwrap();
        }
        self
    }

    /// `tar` as the real one, inside the fake root (a real host runs it
    /// through chroot).
    fn script_tar(&self) {
        let root = self.root.path().to_path_buf();
        self.runner.on_with(&["tar"], move |cmd| {
            harness::fixtures::sim::real_tar_in(&root, cmd)
        });
    }

    /// Turns this node into a login node that does not join.
    fn login(mut self) -> Node {
        self.identity.role = identity::Role::Login;
        self.identity.joins = false;
        self
    }

    fn cx(&self) -> Context<'_> {
        Context {
            host: &self.host,
            config: &self.config,
            identity: &self.identity,
        }
    }

    async fn plan(&self) -> Result<StepPlan, Error> {
        packages::plan(&self.cx()).await
    }

    fn file(&self, host_path: &str) -> PathBuf {
        self.host.path(host_path)
    }

    /// systemctl as a real systemd would answer it: `is-enabled` says no
    /// until `enable` ran.
    fn script_systemctl(&self) {
        let enabled = Arc::new(AtomicBool::new(false));
        let e = Arc::clone(&enabled);
        self.runner.on_with(&["systemctl", "enable"], move |_| {
            e.store(true, Ordering::SeqCst);
            CmdOutput::ok("")
        });
        self.runner
            .on_with(&["systemctl", "is-enabled"], move |_| {
                if enabled.load(Ordering::SeqCst) {
                    CmdOutput::ok("enabled\n")
                } else {
                    CmdOutput {
                        status: 1,
                        stdout: b"disabled\n".to_vec(),
                        stderr: Vec::new(),
                    }
                }
            })
            .on(&["systemctl", "daemon-reload"], CmdOutput::ok(""));
    }
}

fn mirror_config(url: &str) -> Config {
    let mut c = Config::default();
    c.kubernetes.version = VERSION.into();
    c.packages.source = PackageSource::Mirror;
    c.packages.mirror_url = Some(url.into());
    c
}

fn mirror(version: &str) -> (tempfile::TempDir, MirrorLayout, MirrorServer) {
    let dir = tempfile::tempdir().unwrap();
    let layout = MirrorBuilder::new(version).write(dir.path()).unwrap();
    let server = MirrorServer::serve(dir.path()).unwrap();
    (dir, layout, server)
}

/// Every entry under `dir`: type, mode and content digest (or link target).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let mode = meta.permissions().mode();
            let what = if meta.is_dir() {
                walk(base, &path, out);
                format!("dir {mode:o}")
            } else if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                format!(
                    "file {mode:o} {}",
                    sha256_hex(&std::fs::read(&path).unwrap())
                )
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn summaries(plan: &StepPlan) -> Vec<String> {
    plan.changes.iter().map(Change::summary).collect()
}

fn as_phase(step: &StepPlan) -> Plan {
    Plan {
        phase: "prepare".into(),
        steps: vec![step.clone()],
    }
}

// ---------------------------------------------------------------- mirror

#[tokio::test]
async fn mirror_fresh_install_then_nothing_to_do() {
    let (_dir, layout, server) = mirror(VERSION);
    let node = Node::new(mirror_config(&server.url())).await;
    node.script_systemctl();

    let plan = node.plan().await.unwrap();
    let c = &plan.changes;
    assert_eq!(c.len(), 7, "{:#?}", summaries(&plan));
    for (change, binary) in c.iter().zip(["kubelet", "kubeadm", "kubectl"]) {
        match change {
            Change::Download {
                url,
                sha256,
                path,
                mode,
            } => {
                assert_eq!(
                    url.0,
                    format!("{}{}", server.url(), layout.url_path(binary))
                );
                assert_eq!(*sha256, layout.sha256(binary).unwrap());
                assert_eq!(*path, Path::new("/usr/bin").join(binary));
                assert_eq!(mode.mode, 0o755);
            }
            other => panic!("expected a download of {binary} first, got {other:?}"),
        }
    }
    assert!(
        matches!(&c[3], Change::WriteFile { path, created: true, .. } if path == Path::new("/etc/systemd/system/kubelet.service"))
    );
    assert!(
        matches!(&c[4], Change::WriteFile { path, created: true, .. } if path == Path::new("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"))
    );
    assert!(matches!(
        &c[5],
        Change::Service {
            operation: ServiceOperation::DaemonReload,
            ..
        }
    ));
    assert!(
        matches!(&c[6], Change::Service { unit, operation: ServiceOperation::Enable, .. } if unit == "kubelet.service")
    );
    // Planning fetched only the checksums, and asked systemd nothing (the
    // unit did not exist yet).
    assert_eq!(
        server.paths(),
        ["kubelet", "kubeadm", "kubectl"]
            .map(|b| format!("{}.sha256", layout.url_path(b)))
            .to_vec()
    );
    assert!(node.runner.calls().is_empty(), "{:?}", node.runner.calls());

    plan::apply(&node.host, &plan.changes).await.unwrap();
    for binary in ["kubelet", "kubeadm", "kubectl"] {
        let installed = node.file(&format!("/usr/bin/{binary}"));
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(layout.binary(binary)).unwrap()
        );
        assert_eq!(
            std::fs::metadata(&installed).unwrap().permissions().mode() & 0o7777,
            0o755
        );
    }
    let unit = std::fs::read_to_string(node.file("/etc/systemd/system/kubelet.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/kubelet\n"), "{unit}");
    let drop_in =
        std::fs::read_to_string(node.file("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"))
            .unwrap();
    assert!(drop_in.contains("ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS"));
    assert_eq!(
        node.runner.calls(),
        [
            "systemctl daemon-reload",
            "systemctl enable kubelet.service"
        ]
    );
    assert_eq!(
        run_stand_in(&node.file("/usr/bin/kubelet"), &["--version"]),
        format!("Kubernetes v{VERSION}")
    );
    assert_eq!(
        run_stand_in(&node.file("/usr/bin/kubeadm"), &["version", "-o", "short"]),
        format!("v{VERSION}")
    );

    let again = node.plan().await.unwrap();
    assert!(again.changes.is_empty(), "{:#?}", summaries(&again));
    assert!(
        again
            .notes
            .iter()
            .any(|n| n == &format!("kubelet v{VERSION} is installed at /usr/bin/kubelet")),
        "{:?}",
        again.notes
    );
    assert_eq!(
        node.runner.calls().last().map(String::as_str),
        Some("systemctl is-enabled kubelet.service")
    );
}

#[allow(clippy::disallowed_methods)] // test harness launches real components
fn run_stand_in(path: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("sh")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn mirror_new_patch_downloads_binaries_only() {
    let (_old_dir, _old, old_server) = mirror(VERSION);
    let node = Node::new(mirror_config(&old_server.url())).await;
    node.script_systemctl();
    let first = node.plan().await.unwrap();
    plan::apply(&node.host, &first.changes).await.unwrap();

    let (_dir, layout, server) = mirror("1.34.2");
    let mut config = node.config.clone();
    config.kubernetes.version = "1.34.2".into();
    config.packages.mirror_url = Some(server.url());
    let cx = Context {
        config: &config,
        ..node.cx()
    };
    let plan = packages::plan(&cx).await.unwrap();
    assert_eq!(
        summaries(&plan),
        ["kubelet", "kubeadm", "kubectl"]
            .map(|b| format!(
                "install /usr/bin/{b} from {}{} (sha256 {})",
                server.url(),
                layout.url_path(b),
                &layout.sha256(b).unwrap()[..12]
            ))
            .to_vec(),
        "units are unchanged and kubelet is already enabled"
    );
}

#[tokio::test]
async fn checksum_mismatch_leaves_the_root_byte_for_byte_unchanged() {
    let (_dir, layout, server) = mirror(VERSION);
    // The last binary is the bad one: the first two verify, and must still
    // not be installed.
    layout.corrupt_checksum("kubectl").unwrap();
    let node = Node::new(mirror_config(&server.url())).await;
    node.script_systemctl();
    std::fs::create_dir_all(node.file("/usr/bin")).unwrap();
    std::fs::write(node.file("/usr/bin/kubelet"), "#!/bin/sh\necho old\n").unwrap();
    std::fs::write(node.file("/etc/debian_version"), "12.7\n").unwrap();
    let before = snapshot(node.root.path());

    let plan = node.plan().await.unwrap();
    assert!(matches!(&plan.changes[0], Change::Download { .. }));
    let err = plan::apply(&node.host, &plan.changes).await.unwrap_err();
    assert!(
        matches!(&err, ApplyError::ChecksumMismatch { url, .. } if url.ends_with("/kubectl")),
        "{err}"
    );
    let err = lifecycle::Error::Apply {
        step: "packages".into(),
        source: err,
    };
    assert_eq!(err.kind(), "checksum_mismatch");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(snapshot(node.root.path()), before);
    assert!(node.runner.calls().is_empty(), "{:?}", node.runner.calls());
}

#[tokio::test]
async fn mirror_failures_are_distinct_and_change_nothing() {
    let (_dir, layout, server) = mirror(VERSION);

    // Unreachable.
    let node = Node::new(mirror_config(&unreachable_url().unwrap())).await;
    let before = snapshot(node.root.path());
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::MirrorUnreachable { .. }), "{e}");
    assert_eq!(e.kind(), "mirror_unreachable");
    assert!(e.to_string().contains("kubelet.sha256"), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    assert_eq!(snapshot(node.root.path()), before);

    // A version the mirror does not carry.
    let mut config = mirror_config(&server.url());
    config.kubernetes.version = "1.35.0".into();
    let node = Node::new(config).await;
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::MirrorNotFound { .. }), "{e}");
    assert_eq!(e.kind(), "mirror_file_missing");
    assert!(e.to_string().contains("/v1.35.0/bin/linux/"), "{e}");

    // The mirror is broken.
    let node = Node::new(mirror_config(&server.url())).await;
    server.respond_with(Some(500));
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::MirrorStatus { status: 500, .. }), "{e}");
    assert_eq!(e.kind(), "mirror_http_error");
    server.respond_with(None);

    // A checksum file that is not one.
    layout.garble_checksum("kubeadm").unwrap();
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::MalformedChecksum { .. }), "{e}");
    assert_eq!(e.kind(), "mirror_checksum_malformed");
    assert!(e.to_string().contains("kubeadm.sha256"), "{e}");
    assert!(!e.to_string().contains("oops"), "{e}");
    assert!(node.runner.calls().is_empty());
}

#[tokio::test]
async fn login_node_gets_kubectl_only() {
    let (_dir, layout, server) = mirror(VERSION);
    let node = Node::new(mirror_config(&server.url())).await.login();
    let plan = node.plan().await.unwrap();
    assert_eq!(plan.changes.len(), 1, "{:#?}", summaries(&plan));
    assert!(
        matches!(&plan.changes[0], Change::Download { path, .. } if path == Path::new("/usr/bin/kubectl"))
    );
    assert_eq!(
        server.paths(),
        [format!("{}.sha256", layout.url_path("kubectl"))]
    );
    plan::apply(&node.host, &plan.changes).await.unwrap();
    assert!(node.runner.calls().is_empty());
    assert!(!node.host.exists("/usr/bin/kubelet"));
    assert!(!node.host.exists("/etc/systemd/system/kubelet.service"));
    assert!(node.plan().await.unwrap().changes.is_empty());
}

#[tokio::test]
async fn mirror_credentials_never_shown() {
    const PASSWORD: &str = "hunter2-s3cret";
    let (_dir, layout, server) = mirror(VERSION);
    let url = server.url_with_credentials("mirror-user", PASSWORD);
    let node = Node::new(mirror_config(&url)).await;
    node.script_systemctl();

    let plan = node.plan().await.unwrap();
    let text = as_phase(&plan).to_string();
    let json = serde_json::to_string(&as_phase(&plan)).unwrap();
    for shown in [&text, &json] {
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(!shown.contains("mirror-user"), "{shown}");
    }
    assert!(text.contains("<redacted>@127.0.0.1"), "{text}");
    assert!(json.contains("<redacted>@127.0.0.1"), "{json}");

    // The credentials are still used.
    plan::apply(&node.host, &plan.changes).await.unwrap();
    assert!(server.requests().iter().all(|r| r.authorized));
    assert!(node.host.exists("/usr/bin/kubeadm"));

    // ... and kept out of errors.
    layout.corrupt_checksum("kubeadm").unwrap();
    std::fs::remove_file(node.file("/usr/bin/kubeadm")).unwrap();
    let plan = node.plan().await.unwrap();
    let e = plan::apply(&node.host, &plan.changes).await.unwrap_err();
    assert!(!e.to_string().contains(PASSWORD), "{e}");
    assert!(!format!("{e:?}").contains(PASSWORD), "{e:?}");
    server.respond_with(Some(404));
    let e = node.plan().await.unwrap_err();
    assert!(!e.to_string().contains(PASSWORD), "{e}");
    assert!(!format!("{e:?}").contains(PASSWORD), "{e:?}");
    let dead = unreachable_url()
        .unwrap()
        .replace("http://", &format!("http://u:{PASSWORD}@"));
    let node = Node::new(mirror_config(&dead)).await;
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::MirrorUnreachable { .. }), "{e}");
    assert!(!e.to_string().contains(PASSWORD), "{e}");
}

#[tokio::test]
async fn file_url_mirror_and_install_dir() {
    let dir = tempfile::tempdir().unwrap();
    let layout = MirrorBuilder::new(VERSION).write(dir.path()).unwrap();
    let mut config = mirror_config(&format!("file://{}", dir.path().display()));
    config.packages.install_dir = "/opt/k8s/bin".into();
    let node = Node::new(config).await.login();
    let plan = node.plan().await.unwrap();
    plan::apply(&node.host, &plan.changes).await.unwrap();
    assert_eq!(
        std::fs::read(node.file("/opt/k8s/bin/kubectl")).unwrap(),
        std::fs::read(layout.binary("kubectl")).unwrap()
    );
    assert!(node.plan().await.unwrap().changes.is_empty());

    std::fs::remove_dir_all(layout.binary_dir()).unwrap();
    let e = node.plan().await.unwrap_err();
    assert_eq!(e.kind(), "mirror_file_missing", "{e}");
}

#[tokio::test]
async fn mirror_kubelet_unit_uses_install_dir() {
    let (_dir, _layout, server) = mirror(VERSION);
    let mut config = mirror_config(&server.url());
    config.packages.install_dir = "/opt/k8s/bin".into();
    let node = Node::new(config).await;
    node.script_systemctl();
    let plan = node.plan().await.unwrap();
    plan::apply(&node.host, &plan.changes).await.unwrap();
    let drop_in =
        std::fs::read_to_string(node.file("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"))
            .unwrap();
    assert!(drop_in.contains("\nExecStart=/opt/k8s/bin/kubelet $KUBELET_KUBECONFIG_ARGS"));
    // An operator disabling kubelet is noticed.
    node.runner
        .once(&["systemctl", "is-enabled"], CmdOutput::failed(1, ""));
    let plan = node.plan().await.unwrap();
    assert_eq!(
        summaries(&plan),
        ["`systemctl enable kubelet.service` (kubeadm expects kubelet to be enabled)"]
    );
}

// ---------------------------------------------------------------- apt

const DPKG_QUERY: &[&str] = &["dpkg-query", "-W"];
const DPKG_QUERY_SHOWN: &str =
    "dpkg-query -W -f '${Package} ${db:Status-Abbrev} ${Version}\\n' kubelet kubeadm kubectl";

async fn debian_node() -> Node {
    let mut config = Config::default();
    // These tests are about the apt source; the ECR credential provider
    // (which `auto` sets up for the default EFA image) has its own tests.
    config.addons.ecr_credential_provider = lifecycle::config::EcrCredentialProvider::Never;
    let node = Node::new(config).await;
    std::fs::write(node.file("/etc/debian_version"), "12.7\n").unwrap();
    node
}

#[tokio::test]
async fn apt_up_to_date_is_left_alone() {
    let node = debian_node().await;
    node.runner.on(
        DPKG_QUERY,
        CmdOutput::ok("kubelet ii  1.34.1-1.1\nkubeadm ii  1.34.1-1.1\nkubectl hi  1.34.1-1.1\n"),
    );
    let plan = node.plan().await.unwrap();
    assert!(plan.changes.is_empty(), "{:#?}", summaries(&plan));
    assert_eq!(node.runner.calls(), [DPKG_QUERY_SHOWN]);
}

#[tokio::test]
async fn apt_other_version_installs_pins_and_holds() {
    let node = debian_node().await;
    for tool in ["/usr/bin/curl", "/usr/bin/gpg"] {
        std::fs::create_dir_all(node.file("/usr/bin")).unwrap();
        std::fs::write(node.file(tool), "").unwrap();
    }
    // kubectl is missing: dpkg-query exits 1 and still lists the others.
    node.runner.on(
        DPKG_QUERY,
        CmdOutput {
            status: 1,
            stdout: b"kubelet ii  1.33.2-1.1\nkubeadm ii  1.33.2-1.1\n".to_vec(),
            stderr: b"dpkg-query: no packages found matching kubectl\n".to_vec(),
        },
    );
    for prefix in [
        &["sh", "-c"][..],
        &["apt-get", "update"],
        &["apt-get", "install"],
        &["apt-mark", "hold"],
        &["systemctl", "enable"],
    ] {
        node.runner.on(prefix, CmdOutput::ok(""));
    }

    let plan = node.plan().await.unwrap();
    assert!(
        plan.notes
            .iter()
            .any(|n| n == "kubelet 1.33.2-1.1 is installed, 1.34.1 is wanted")
    );
    assert!(plan.notes.iter().any(|n| n == "kubectl is not installed"));
    plan::apply(&node.host, &plan.changes).await.unwrap();
    assert_eq!(
        node.runner.calls(),
        [
            DPKG_QUERY_SHOWN,
            "sh -c 'set -e; key=$(mktemp); trap '\\''rm -f \"$key\"'\\'' EXIT; curl -fsSL --retry 3 -o \"$key\" --config -; gpg --dearmor --batch --yes -o \"$1\" \"$key\"; chmod 0644 \"$1\"' hpk8s-fetch-key /etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "apt-get update",
            "apt-get install -y --allow-downgrades --allow-change-held-packages 'kubelet=1.34.1-*' 'kubeadm=1.34.1-*' 'kubectl=1.34.1-*'",
            "apt-mark hold kubelet kubeadm kubectl",
            "systemctl enable kubelet.service",
        ]
    );
    assert!(node.host.exists("/etc/apt/keyrings"));
    assert_eq!(
        std::fs::read_to_string(node.file("/etc/apt/sources.list.d/kubernetes.list")).unwrap(),
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /\n"
    );
    let pin = std::fs::read_to_string(node.file("/etc/apt/preferences.d/kubernetes")).unwrap();
    assert!(
        pin.contains(
            "Package: kubelet kubeadm kubectl\nPin: version 1.34.1-*\nPin-Priority: 1001\n"
        ),
        "{pin}"
    );
}

#[tokio::test]
async fn apt_updates_lists_only_when_the_version_is_missing() {
    let node = debian_node().await;
    for (path, text) in [
        ("/etc/apt/keyrings/kubernetes-apt-keyring.gpg", "key".to_string()),
        (
            "/etc/apt/sources.list.d/kubernetes.list",
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /\n".to_string(),
        ),
        (
            "/etc/apt/preferences.d/kubernetes",
            packages::apt::pin(&["kubelet", "kubeadm", "kubectl"], VERSION),
        ),
    ] {
        std::fs::create_dir_all(node.file(path).parent().unwrap()).unwrap();
        std::fs::write(node.file(path), text).unwrap();
    }
    node.runner.on(
        DPKG_QUERY,
        CmdOutput::ok("kubelet ii  1.34.0-1.1\nkubeadm ii  1.34.0-1.1\nkubectl ii  1.34.0-1.1\n"),
    );
    let madison = |v: &str| {
        CmdOutput::ok(
            ["kubelet", "kubeadm", "kubectl"]
                .map(|p| {
                    format!(
                        "   {p} | {v} | https://pkgs.k8s.io/core:/stable:/v1.34/deb  Packages\n"
                    )
                })
                .concat(),
        )
    };
    node.runner
        .once(&["apt-cache", "madison"], madison("1.34.0-1.1"));
    let stale_lists = node.plan().await.unwrap();
    assert_eq!(
        stale_lists
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Run { command, .. } => Some(command.display()),
                _ => None,
            })
            .take(2)
            .collect::<Vec<_>>(),
        [
            "apt-get update",
            "apt-get install -y --allow-downgrades --allow-change-held-packages 'kubelet=1.34.1-*' 'kubeadm=1.34.1-*' 'kubectl=1.34.1-*'"
        ]
    );
    node.runner
        .once(&["apt-cache", "madison"], madison("1.34.1-1.1"));
    let fresh_lists = node.plan().await.unwrap();
    assert_eq!(
        fresh_lists.changes.len(),
        3,
        "{:#?}",
        summaries(&fresh_lists)
    );
    assert!(
        matches!(&fresh_lists.changes[0], Change::Run { command, .. } if command.display().starts_with("apt-get install"))
    );
}

#[tokio::test]
async fn apt_login_node_installs_kubectl_only() {
    let node = debian_node().await.login();
    std::fs::create_dir_all(node.file("/etc/apt/keyrings")).unwrap();
    std::fs::write(
        node.file("/etc/apt/keyrings/kubernetes-apt-keyring.gpg"),
        "k",
    )
    .unwrap();
    node.runner
        .on(DPKG_QUERY, CmdOutput::failed(1, "no packages found"));
    let plan = node.plan().await.unwrap();
    assert_eq!(
        node.runner.calls(),
        ["dpkg-query -W -f '${Package} ${db:Status-Abbrev} ${Version}\\n' kubectl"]
    );
    let shown = summaries(&plan);
    assert_eq!(shown.len(), 5, "{shown:#?}");
    assert!(
        matches!(&plan.changes[1], Change::WriteFile { path, diff, .. } if path == Path::new("/etc/apt/preferences.d/kubernetes") && diff.contains("+Package: kubectl\n")),
        "{shown:#?}"
    );
    assert_eq!(
        shown[2..],
        [
            "run `apt-get update` (the Kubernetes repository was added or changed)",
            "run `apt-get install -y --allow-downgrades --allow-change-held-packages 'kubectl=1.34.1-*'` (install Kubernetes 1.34.1 packages)",
            "run `apt-mark hold kubectl` (keep unattended upgrades off the cluster's version)",
        ]
    );
}

#[tokio::test]
async fn apt_errors() {
    let node = Node::new(Config::default()).await;
    let e = node.plan().await.unwrap_err();
    assert!(matches!(e, Error::NotDebian { .. }), "{e}");
    assert_eq!(e.kind(), "apt_unavailable");
    assert!(e.to_string().contains("\"mirror\""), "{e}");
    assert!(node.runner.calls().is_empty());

    let node = debian_node().await;
    node.runner.on(
        DPKG_QUERY,
        CmdOutput::failed(2, "dpkg-query: error: database is locked"),
    );
    let e = node.plan().await.unwrap_err();
    assert_eq!(e.kind(), "package_query_failed", "{e}");
    assert!(e.to_string().contains("database is locked"), "{e}");
}

#[tokio::test]
async fn source_none_does_nothing() {
    let mut config = Config::default();
    config.packages.source = PackageSource::None;
    let node = Node::new(config).await;
    let plan = node.plan().await.unwrap();
    assert!(plan.changes.is_empty());
    assert!(!plan.notes.is_empty());
    assert!(node.runner.calls().is_empty());
}

// ---------------------------------------------------------------- binary

/// `hpk8s bootstrap --phase prepare` against a fake root.
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn bootstrap(root: &Path, config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    std::process::Command::new(harness::hpk8s_bin())
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(&cfg)
        .args(["bootstrap", "--phase", "prepare"])
        .env("HPK8S_LOG", "info")
        .output()
        .unwrap()
}

fn binary_config(url: &str) -> String {
    format!(
        "[kubernetes]\nversion = \"{VERSION}\"\n\n[node]\nname = \"node-a\"\naddress = \"10.1.0.5\"\n\n[packages]\nsource = \"mirror\"\nmirror_url = \"{url}\"\nallow_insecure_mirror = true\n"
    )
}

#[test]
fn binary_bad_checksum_exits_as_verification_failed_and_changes_nothing() {
    let (_dir, layout, server) = mirror(VERSION);
    layout.corrupt_checksum("kubeadm").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/hostname"), "node-a\n").unwrap();
    std::fs::write(root.path().join("etc/debian_version"), "12.7\n").unwrap();
    // containerd is installed, so every step plans before the downloads run.
    std::fs::create_dir_all(root.path().join("etc/containerd")).unwrap();
    std::fs::write(
        root.path().join("etc/containerd/config.toml"),
        "version = 2\n",
    )
    .unwrap();
    let before = snapshot(root.path());

    let out = bootstrap(
        root.path(),
        &binary_config(&server.url_with_credentials("u", "hunter2-s3cret")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(stderr.contains("error[checksum_mismatch]: "), "{stderr}");
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    assert!(stderr.contains("/kubeadm"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(snapshot(root.path()), before);
    // kubelet was fetched and verified, and still not installed.
    assert!(
        server.paths().contains(&layout.url_path("kubelet")),
        "{:?}",
        server.paths()
    );
}

#[test]
fn binary_unreachable_mirror_exits_as_unavailable() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let before = snapshot(root.path());
    let out = bootstrap(root.path(), &binary_config(&unreachable_url().unwrap()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.starts_with("error[mirror_unreachable]: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("cannot reach the package mirror"),
        "{stderr}"
    );
    assert_eq!(snapshot(root.path()), before);
}

#[tokio::test]
async fn apt_repository_credentials_reach_curl_on_stdin_never_argv() {
    const PASSWORD: &str = "hunter2-s3cret";
    let mut config = Config::default();
    config.kubernetes.version = VERSION.into();
    config.packages.apt_repository =
        format!("https://apt-user:{PASSWORD}@mirror.internal/k8s/v{{minor}}/deb/");
    let node = Node::new(config).await;
    std::fs::write(node.file("/etc/debian_version"), "12.7\n").unwrap();
    for tool in ["/usr/bin/curl", "/usr/bin/gpg"] {
        std::fs::create_dir_all(node.file("/usr/bin")).unwrap();
        std::fs::write(node.file(tool), "").unwrap();
    }
    node.runner.on(DPKG_QUERY, CmdOutput::failed(1, ""));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let record = seen.clone();
    node.runner.on_with(&["sh", "-c"], move |cmd| {
        let argv: Vec<&str> = std::iter::once(cmd.program())
            .chain(cmd.arg_values())
            .collect();
        record.lock().unwrap().push((
            argv.join(" "),
            cmd.stdin_bytes().unwrap_or_default().to_vec(),
        ));
        CmdOutput::ok("")
    });
    let plan = node.plan().await.unwrap();
    let shown = format!(
        "{:?} {}",
        summaries(&plan),
        serde_json::to_string(&plan).unwrap()
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(
        shown
            .contains("fetch it from https://<redacted>@mirror.internal/k8s/v1.34/deb/Release.key"),
        "{shown}"
    );
    let fetch: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.summary().contains("hpk8s-fetch-key"))
        .cloned()
        .collect();
    plan::apply(&node.host, &fetch).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (argv, stdin) = &seen[0];
    assert!(
        !argv.contains(PASSWORD),
        "the password is in the argument list: {argv}"
    );
    let stdin = String::from_utf8_lossy(stdin);
    assert_eq!(
        stdin,
        format!(
            "url = \"https://apt-user:{PASSWORD}@mirror.internal/k8s/v1.34/deb/Release.key\"\n"
        )
    );
    // The sources file holds the credentials: 0600.
    let sources = plan
        .changes
        .iter()
        .find(|c| c.summary().contains("kubernetes.list"))
        .unwrap()
        .summary();
    assert!(sources.contains("(mode 0600)"), "{sources}");
}

#[tokio::test]
async fn pinned_digests_win_over_the_mirrors_checksum_files() {
    let (_dir, layout, server) = mirror(VERSION);
    let mut config = mirror_config(&server.url());
    // kubeadm pinned to the real digest: its .sha256 is never asked for.
    config
        .packages
        .sha256
        .insert("kubeadm".into(), layout.sha256("kubeadm").unwrap());
    // kubelet pinned to another build: the mirror's checksum would match
    // the mirror's binary, the pin does not.
    config
        .packages
        .sha256
        .insert("kubelet".into(), "ab".repeat(32));
    let node = Node::new(config).await;
    node.script_systemctl();
    let plan = node.plan().await.unwrap();
    let asked = server.paths();
    assert!(
        !asked
            .iter()
            .any(|p| p.ends_with("/kubeadm.sha256") || p.ends_with("/kubelet.sha256")),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|p| p.ends_with("/kubectl.sha256")),
        "{asked:?}"
    );
    let err = plan::apply(&node.host, &plan.changes).await.unwrap_err();
    assert!(
        matches!(&err, ApplyError::ChecksumMismatch { url, expected, .. }
            if url.ends_with("/kubelet") && *expected == "ab".repeat(32)),
        "{err}"
    );
    assert!(
        !node.host.exists("/usr/bin/kubeadm"),
        "nothing installed before all verify"
    );
}

// ------------------------------------------------- bare images: containerd

/// The release archives a bare node gets, in plan order.
const RELEASE_DOWNLOADS: [&str; 4] = [
    "/var/lib/hpk8s/downloads/cni-plugins-linux-",
    "/var/lib/hpk8s/downloads/crictl-v",
    "/var/lib/hpk8s/downloads/containerd-",
    "/usr/local/sbin/runc",
];

#[tokio::test]
async fn bare_node_mirror_installs_containerd_runc_cni_plugins_and_crictl_once() {
    let (_dir, layout, server) = mirror(VERSION);
    let node = Node::new(mirror_config(&server.url())).await.bare();
    node.script_systemctl();
    node.script_tar();

    let plan = node.plan().await.unwrap();
    let downloads: Vec<String> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Download { path, .. } => Some(path.display().to_string()),
            _ => None,
        })
        .skip(3) // kubelet, kubeadm, kubectl
        .collect();
    assert_eq!(downloads.len(), RELEASE_DOWNLOADS.len(), "{downloads:#?}");
    for (got, wanted) in downloads.iter().zip(RELEASE_DOWNLOADS) {
        assert!(got.starts_with(wanted), "{got} vs {wanted}");
    }
    let shown = summaries(&plan).join("\n");
    assert!(
        shown.contains("create /usr/local/lib/systemd/system/containerd.service"),
        "{shown}"
    );
    // Every release checksum came from the mirror, in its project's format.
    let paths = server.paths();
    for checksum in [
        "containerd-1.7.29-linux-amd64.tar.gz.sha256sum",
        "runc.sha256sum",
        "cni-plugins-linux-amd64-v1.8.0.tgz.sha256",
        "crictl-v1.34.0-linux-amd64.tar.gz.sha256",
    ] {
        let checksum = checksum.replace("amd64", layout.arch());
        assert!(
            paths.iter().any(|p| p.ends_with(&checksum)),
            "{checksum} not fetched: {paths:?}"
        );
    }

    plan::apply(&node.host, &plan.changes).await.unwrap();
    for (installed, version) in [
        ("/usr/local/bin/containerd", "1.7.29"),
        ("/usr/local/bin/ctr", "1.7.29"),
        ("/usr/local/sbin/runc", "1.3.3"),
        ("/opt/cni/bin/bridge", "1.8.0"),
        ("/opt/cni/bin/portmap", "1.8.0"),
        ("/usr/local/bin/crictl", "1.34.0"),
    ] {
        let path = node.file(installed);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{installed}");
        assert!(
            run_stand_in(&path, &[]).ends_with(&format!("v{version}")),
            "{installed}"
        );
    }
    // Staged archives are gone; markers name asset and digest.
    assert!(
        std::fs::read_dir(node.file("/var/lib/hpk8s/downloads"))
            .unwrap()
            .next()
            .is_none()
    );
    let marker = std::fs::read_to_string(node.file("/var/lib/hpk8s/installed/containerd")).unwrap();
    assert!(marker.starts_with("containerd-1.7.29-linux-"), "{marker}");

    let again = node.plan().await.unwrap();
    assert!(again.changes.is_empty(), "{:#?}", summaries(&again));
    assert!(
        again
            .notes
            .iter()
            .any(|n| n.contains("containerd is installed (/usr/local/bin/containerd)")),
        "{:?}",
        again.notes
    );
}

#[tokio::test]
async fn a_pinned_release_digest_wins_and_a_mismatch_installs_nothing() {
    let (_dir, layout, server) = mirror(VERSION);
    let mut config = mirror_config(&server.url());
    config.packages.sha256.insert(
        format!("containerd-1.7.29-linux-{}.tar.gz", layout.arch()),
        "0".repeat(64),
    );
    let node = Node::new(config).await.bare();
    node.script_systemctl();
    node.script_tar();
    let before = snapshot(node.root.path());
    let plan = node.plan().await.unwrap();
    assert!(
        !server
            .paths()
            .iter()
            .any(|p| p.ends_with(".tar.gz.sha256sum")),
        "a pinned digest is not looked up: {:?}",
        server.paths()
    );
    let err = plan::apply(&node.host, &plan.changes).await.unwrap_err();
    assert!(
        matches!(&err, ApplyError::ChecksumMismatch { url, .. } if url.contains("containerd-1.7.29")),
        "{err}"
    );
    assert_eq!(
        snapshot(node.root.path()),
        before,
        "downloads are verified before any change"
    );
    assert!(node.runner.calls().is_empty(), "{:?}", node.runner.calls());
}

#[tokio::test]
async fn bare_debian_node_gets_the_distribution_containerd() {
    let node = debian_node().await.bare();
    node.runner.on(
        DPKG_QUERY,
        CmdOutput::ok("kubelet ii  1.34.1-1.1\nkubeadm ii  1.34.1-1.1\nkubectl hi  1.34.1-1.1\n"),
    );
    let plan = node.plan().await.unwrap();
    let install = plan
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Run { command, .. } if command.starts_with(&["apt-get", "install"]) => {
                Some(command.clone())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{:#?}", summaries(&plan)));
    assert_eq!(
        install.display(),
        "apt-get install -y --no-install-recommends containerd runc"
    );
    assert!(
        install
            .env_vars()
            .iter()
            .any(|(k, v)| k == "DEBIAN_FRONTEND" && v == "noninteractive"),
        "{install:?}"
    );
    assert!(
        matches!(&plan.changes[0], Change::Run { command, .. } if command.display() == "apt-get update")
    );

    // Told not to, hpk8s installs nothing (step containerd then says so).
    let mut node = node;
    node.config.containerd.source = lifecycle::config::ContainerdSource::None;
    let plan = node.plan().await.unwrap();
    assert!(plan.changes.is_empty(), "{:#?}", summaries(&plan));
    assert!(plan.notes.iter().any(|n| n.contains("nothing installs it")));
}
