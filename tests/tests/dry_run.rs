//! `hpk8s bootstrap --dry-run` on the machine running the tests: a plain
//! developer box with no HyperPod file and no IMDS. It must fall back to the
//! local single-node default, print a readable plan and change nothing.
//! Also: logs never carry credentials, in text or JSON.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

use harness::fixtures::host_root::{FakeRoot, tree_digest};
use harness::mirror::{MirrorBuilder, MirrorServer};

#[allow(clippy::disallowed_methods)] // test harness launches the real binary
fn hpk8s(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(harness::hpk8s_bin());
    cmd.args(args)
        .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
        .env_remove("HPK8S_CONFIG")
        .env_remove("HPK8S_ROOT")
        // An explicit empty config: the developer's own /etc/hpk8s must not
        // change what this test sees.
        .env("HPK8S_CONFIG", "/dev/null");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn dry_run_on_this_machine_prints_a_plan_for_a_local_cluster() {
    let out = hpk8s(&["bootstrap", "--dry-run"], &[("HPK8S_LOG", "warn")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("phase prepare: "), "{stdout}");
    for step in [
        "packages",
        "networking",
        "instance-store",
        "containerd",
        "kubeadm-init",
        "join-ticket",
        "addons",
        "nodes",
    ] {
        assert!(
            stdout.contains(&format!("\nstep {step} (")),
            "{step}: {stdout}"
        );
    }
    assert!(stdout.contains("\nphase cluster: "), "{stdout}");

    let out = hpk8s(
        &["bootstrap", "--dry-run", "--output", "json"],
        &[("HPK8S_LOG", "off")],
    );
    assert!(out.status.success());
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plans[0]["phase"], "prepare");
    assert_eq!(plans[0]["steps"].as_array().unwrap().len(), 5);
    assert_eq!(plans[1]["phase"], "cluster");

    let out = hpk8s(
        &[
            "bootstrap",
            "--dry-run",
            "--phase",
            "prepare",
            "--output",
            "json",
        ],
        &[("HPK8S_LOG", "off")],
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["phase"], "prepare");

    let out = hpk8s(&["identity", "--output", "json"], &[("HPK8S_LOG", "off")]);
    assert!(out.status.success());
    let id: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(id["source"], "local", "{id}");
    assert_eq!(id["role"], "controller");
}

/// A mirror URL with credentials: neither the plan (text or JSON), nor the
/// debug logs (text or JSON), nor `config show` may show the password.
#[test]
fn credentials_never_reach_plans_or_logs() {
    let dir = tempfile::tempdir().unwrap();
    MirrorBuilder::new("1.34.1").write(dir.path()).unwrap();
    let server = MirrorServer::serve(dir.path()).unwrap();
    let url = server.url_with_credentials("ops", "hunter2-secret");
    let root = FakeRoot::new().file("/etc/containerd/config.toml", "version = 2\n");
    root.dir().write(
        "/etc/hpk8s/config.toml",
        format!(
            "[node]\nname = \"box\"\naddress = \"10.0.0.1\"\n[packages]\nsource = \"mirror\"\nmirror_url = \"{url}\"\nallow_insecure_mirror = true\n"
        ),
    );
    let cfg = root.path().join("etc/hpk8s/config.toml");
    let cfg = cfg.to_str().unwrap();
    let root_arg = root.path().to_str().unwrap();
    let before = tree_digest(root.path());
    for args in [
        vec![
            "--root",
            root_arg,
            "--config",
            cfg,
            "bootstrap",
            "--dry-run",
        ],
        vec![
            "--root",
            root_arg,
            "--config",
            cfg,
            "bootstrap",
            "--dry-run",
            "--output",
            "json",
        ],
        vec![
            "--root",
            root_arg,
            "--config",
            cfg,
            "--log-format",
            "json",
            "bootstrap",
            "--dry-run",
        ],
        vec!["--root", root_arg, "--config", cfg, "config", "show"],
    ] {
        let out = hpk8s(&args, &[("HPK8S_LOG", "trace")]);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {all}");
        assert!(
            !all.contains("hunter2"),
            "{args:?} leaked the password:\n{all}"
        );
    }
    assert_eq!(
        tree_digest(root.path()),
        before,
        "a dry run changed the root"
    );
}

/// `hpk8s agent` on a node that is not the controller keeps running (for
/// systemd to supervise), says so, and stops cleanly on SIGTERM.
#[test]
#[allow(clippy::disallowed_methods)] // test harness launches the real binary
fn the_agent_keeps_running_on_a_worker_until_sigterm() {
    let root = FakeRoot::new().hostname("worker-1");
    root.dir().write(
        "/etc/hpk8s/config.toml",
        "[identity]\nsource = \"static\"\ncluster_name = \"t\"\n\
         [[identity.nodes]]\nname = \"ctrl\"\naddress = \"10.9.0.1\"\nrole = \"controller\"\n\
         [[identity.nodes]]\nname = \"worker-1\"\naddress = \"10.9.0.2\"\nrole = \"worker\"\n\
         [node]\naddress = \"10.9.0.2\"\n",
    );
    let mut child = std::process::Command::new(harness::hpk8s_bin())
        .arg("--root")
        .arg(root.path())
        .arg("agent")
        .env_remove("SAGEMAKER_RESOURCE_CONFIG_PATH")
        .env_remove("HPK8S_CONFIG")
        .env_remove("HPK8S_ROOT")
        .env("HPK8S_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the agent exited on a worker"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A worker without GPUs: ready at once (nothing to probe), then idle.
    assert!(stderr.contains("agent ready"), "{stderr}");
    assert!(stderr.contains("agent stopped"), "{stderr}");
}

/// A failure under `--output json` is a JSON document on stdout with its
/// stable kind and class, besides the one line on stderr.
#[test]
fn a_failure_with_json_output_names_its_kind_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[containerd]\nsystemd_cgroups = true\n").unwrap();
    let out = hpk8s(
        &["bootstrap", "--dry-run", "--output", "json"],
        &[
            ("HPK8S_LOG", "off"),
            ("HPK8S_CONFIG", config.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "config_unknown_key", "{doc}");
    assert_eq!(doc["error"]["class"], "config", "{doc}");
    assert_eq!(doc["error"]["exit_code"], 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("systemd_cgroups"),
        "{doc}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error[config_unknown_key]: "),
        "{stderr}"
    );
}
