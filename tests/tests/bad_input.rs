//! Bad input to `hpk8s bootstrap`: each case gets one `error:` line naming
//! the file, field or URL, its own exit code, and leaves the host root
//! byte-for-byte unchanged. (Identity's own cases, malformed HyperPod files
//! among them, are in `identity.rs`; checksum and unreachable-mirror runs in
//! `packages.rs`.)

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use std::path::Path;

use harness::fixtures::host_root::{FakeRoot, tree_digest};
use harness::mirror::MirrorBuilder;

/// A config that resolves a local single-node identity and leaves packages
/// alone, so each case reaches exactly the step it breaks.
const BASE: &str =
    "[node]\nname = \"box\"\naddress = \"10.0.0.1\"\n[packages]\nsource = \"none\"\n";

/// A containerd config that already has everything hpk8s sets.
const GOOD_CONTAINERD: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
"#;

struct Case {
    name: &'static str,
    /// Config text written to `<root>/etc/hpk8s/config.toml` (None: none).
    config: Option<String>,
    /// Extra setup of the fake root.
    setup: fn(&FakeRoot),
    /// Extra arguments before the subcommand.
    global_args: Vec<String>,
    /// Exit code (the class) and the kind the error line names.
    code: (i32, &'static str),
    /// Words the one error line must contain.
    says: Vec<&'static str>,
}

fn nothing(_: &FakeRoot) {}

#[allow(clippy::disallowed_methods)] // test harness launches the real binary
fn run(root: &Path, global_args: &[String]) -> (i32, String) {
    let out = std::process::Command::new(harness::hpk8s_bin())
        .arg("--root")
        .arg(root)
        .args(global_args)
        .args(["bootstrap", "--phase", "prepare"])
        .env("HPK8S_LOG", "off")
        .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
        .env_remove("HPK8S_CONFIG")
        .env_remove("HPK8S_ROOT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cases(mirror: &Path) -> Vec<Case> {
    let mirror_url = format!("file://{}", mirror.display());
    vec![
        Case {
            name: "config: unknown key",
            config: Some(format!("{BASE}[containerd]\nsystemd_cgroups = true\n")),
            setup: nothing,
            global_args: vec![],
            code: (3, "config_unknown_key"),
            says: vec![
                "config.toml line 7",
                "unknown key `systemd_cgroups`",
                "[containerd]",
            ],
        },
        Case {
            name: "config: not TOML",
            config: Some(format!("{BASE}[kubernetes\nversion = \"1.34.1\"\n")),
            setup: nothing,
            global_args: vec![],
            code: (3, "config_syntax"),
            says: vec!["config.toml line 6"],
        },
        Case {
            name: "config: invalid Kubernetes version",
            config: Some(format!("{BASE}[kubernetes]\nversion = \"1.34\"\n")),
            setup: nothing,
            global_args: vec![],
            code: (3, "config_invalid_value"),
            says: vec!["kubernetes.version", "line 7", "MAJOR.MINOR.PATCH"],
        },
        Case {
            name: "config: explicit file missing",
            config: None,
            setup: nothing,
            global_args: vec!["--config".into(), "/nonexistent/hpk8s.toml".into()],
            code: (3, "config_unreadable"),
            says: vec!["/nonexistent/hpk8s.toml"],
        },
        Case {
            name: "state file corrupt",
            config: Some(BASE.into()),
            setup: |r| {
                // containerd already configured, so no step needs a command.
                r.dir()
                    .write("/etc/containerd/config.toml", GOOD_CONTAINERD);
                r.dir().write("/var/lib/hpk8s/state.json", "{not json");
            },
            global_args: vec![],
            code: (5, "state_file_corrupt"),
            says: vec!["/var/lib/hpk8s/state.json", "corrupt", "move it aside"],
        },
        Case {
            name: "containerd config not TOML",
            config: Some(BASE.into()),
            setup: |r| {
                r.dir()
                    .write("/etc/containerd/config.toml", "version = 2\n[plugins\n")
            },
            global_args: vec![],
            code: (5, "containerd_config_syntax"),
            says: vec!["/etc/containerd/config.toml", "line 2"],
        },
        Case {
            name: "containerd config wrong type",
            config: Some(BASE.into()),
            setup: |r| {
                r.dir().write(
                    "/etc/containerd/config.toml",
                    "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = \"yes\"\n",
                )
            },
            global_args: vec![],
            code: (5, "containerd_config_wrong_type"),
            says: vec!["/etc/containerd/config.toml", "SystemdCgroup"],
        },
        Case {
            name: "apt on a host without dpkg",
            config: Some(BASE.replace("source = \"none\"", "source = \"apt\"")),
            setup: nothing,
            global_args: vec![],
            code: (5, "apt_unavailable"),
            says: vec!["mirror"],
        },
        Case {
            name: "mirror: malformed checksum file",
            config: Some(BASE.replace(
                "source = \"none\"",
                &format!("source = \"mirror\"\nmirror_url = \"{mirror_url}\""),
            )),
            setup: nothing,
            global_args: vec![],
            code: (10, "mirror_checksum_malformed"),
            says: vec!["kubelet.sha256"],
        },
        Case {
            name: "mirror: unreachable",
            config: Some(BASE.replace(
                "source = \"none\"",
                "source = \"mirror\"\nmirror_url = \"http://127.0.0.1:9/k8s\"\nallow_insecure_mirror = true",
            )),
            setup: nothing,
            global_args: vec![],
            code: (6, "mirror_unreachable"),
            says: vec!["http://127.0.0.1:9/k8s/v1.34.1/bin/linux"],
        },
    ]
}

#[test]
fn bad_input_fails_with_one_line_distinct_codes_and_an_untouched_host() {
    let mirror = tempfile::tempdir().unwrap();
    let layout = MirrorBuilder::new("1.34.1").write(mirror.path()).unwrap();
    layout.garble_checksum("kubelet").unwrap();

    let all = cases(mirror.path());
    let mut kinds: Vec<&str> = all.iter().map(|c| c.code.1).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), all.len(), "every case has its own error kind");

    for case in all {
        let root = FakeRoot::new().file("/usr/bin/containerd", "");
        if let Some(cfg) = &case.config {
            root.dir().write("/etc/hpk8s/config.toml", cfg);
        }
        (case.setup)(&root);
        let before = tree_digest(root.path());
        let (code, stderr) = run(root.path(), &case.global_args);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(code, case.code.0, "{}: {stderr}", case.name);
        assert_eq!(lines.len(), 1, "{}: one line expected: {stderr}", case.name);
        assert!(
            lines[0].starts_with(&format!("error[{}]: ", case.code.1)),
            "{}: {stderr}",
            case.name
        );
        for word in &case.says {
            assert!(
                stderr.contains(word),
                "{}: `{word}` missing from: {stderr}",
                case.name
            );
        }
        assert_eq!(
            tree_digest(root.path()),
            before,
            "{}: the host root changed",
            case.name
        );
    }
}

/// The whole `hpk8s bootstrap` (prepare, then cluster): what phase cluster
/// refuses stops the run before phase prepare changes the host.
#[test]
#[allow(clippy::disallowed_methods)] // test harness launches the real binary
fn bootstrap_refuses_cluster_input_before_preparing_the_host() {
    let directory = "[rendezvous]\nkind = \"directory\"\ndirectory = \"/srv/hpk8s\"\n";
    let cases = [
        Case {
            name: "pod CIDR too small for the cluster",
            config: Some(format!(
                "{BASE}{directory}[cluster]\npod_subnet = \"10.200.0.0/24\"\n"
            )),
            setup: nothing,
            global_args: vec![],
            code: (3, "pod_subnet_too_small"),
            says: vec!["10.200.0.0/24", "cluster.pod_subnet", "5 are needed"],
        },
        Case {
            name: "half-initialised control plane",
            config: Some(format!("{BASE}{directory}")),
            setup: |r| {
                r.dir().write(
                    "/etc/kubernetes/manifests/kube-apiserver.yaml",
                    "kind: Pod\n",
                )
            },
            global_args: vec![],
            code: (9, "partial_control_plane"),
            says: vec!["kubeadm reset -f", "/etc/kubernetes/admin.conf"],
        },
        Case {
            name: "no AWS region for the Secrets Manager rendezvous",
            config: Some(BASE.to_string()),
            setup: nothing,
            global_args: vec![],
            code: (3, "aws_region_missing"),
            says: vec!["AWS_REGION"],
        },
    ];
    for Case {
        name,
        config,
        setup,
        code: want,
        says,
        ..
    } in cases
    {
        let root = FakeRoot::new().file("/usr/bin/containerd", "");
        root.dir()
            .write("/etc/hpk8s/config.toml", config.unwrap_or_default());
        setup(&root);
        let before = tree_digest(root.path());
        let out = std::process::Command::new(harness::hpk8s_bin())
            .arg("--root")
            .arg(root.path())
            .arg("bootstrap")
            .env("HPK8S_LOG", "off")
            .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
            .env_remove("HPK8S_CONFIG")
            .env_remove("HPK8S_ROOT")
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/aws-credentials",
            )
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(want.0), "{name}: {stderr}");
        assert!(
            stderr.starts_with(&format!("error[{}]: ", want.1)),
            "{name}: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{name}: one line expected: {stderr}"
        );
        for word in &says {
            assert!(stderr.contains(word), "{name}: `{word}` missing: {stderr}");
        }
        assert_eq!(
            tree_digest(root.path()),
            before,
            "{name}: the host root changed"
        );
    }
}
