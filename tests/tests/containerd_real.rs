//! The config the `containerd` step generates, run by a real containerd:
//! an xfs file system on a loop device stands in for the instance store,
//! the config starts from the real `containerd config default`, and the
//! data must land on that volume with runc on systemd cgroups.
//!
//! Needs root, containerd, ctr, losetup, mkfs.xfs and mount; skips outside
//! CI when they are missing and fails under CI.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifecycle::config::Config;
use lifecycle::host::{
    CmdOutput, CommandRunner, FixedInterfaces, Host, ScriptedRunner, SystemRunner,
};
use lifecycle::plan::Change;
use lifecycle::prepare::Context;
use lifecycle::prepare::containerd;

const CONFIG: &str = "/etc/containerd/config.toml";
/// xfs refuses file systems under 300 MiB; the file is sparse.
const VOLUME_BYTES: u64 = 512 << 20;
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the test set up on the real machine, torn down in reverse
/// order even when an assertion fails half-way.
#[derive(Default)]
struct Cleanup {
    containerd: Option<Child>,
    mount: Option<PathBuf>,
    loop_device: Option<String>,
}

impl Drop for Cleanup {
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn drop(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(m) = self.mount.take() {
            let ok = Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
        if let Some(dev) = self.loop_device.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
    }
}

/// Runs a command to completion; panics with its stderr when it fails.
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(program).is_file()
        || Path::new("/sbin").join(program).is_file()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The config the step would write for a node whose containerd config does
/// not exist yet; `setup` adjusts the fake root and the configuration.
fn generated_config(fake_root: &Path, setup: impl FnOnce(&Path, &mut Config)) -> String {
    planned_files(fake_root, setup)
        .into_iter()
        .find_map(|(path, text)| (path == Path::new(CONFIG)).then_some(text))
        .unwrap_or_else(|| panic!("no {CONFIG} in the plan"))
}

/// Every file the step would write (host path, contents).
fn planned_files(
    fake_root: &Path,
    setup: impl FnOnce(&Path, &mut Config),
) -> Vec<(PathBuf, String)> {
    // The fake root sees the real mount table, so `store` is a mount point.
    let mountinfo = fake_root.join("proc/self/mountinfo");
    std::fs::create_dir_all(mountinfo.parent().unwrap()).unwrap();
    std::fs::copy("/proc/self/mountinfo", &mountinfo).unwrap();

    let runner = ScriptedRunner::new();
    // The real default of the installed containerd; systemd is not PID 1
    // here, so the unit's state is scripted (the step only reads it).
    runner
        .on_with(&["containerd", "config", "default"], |cmd| {
            SystemRunner::new(Path::new("/"))
                .run(cmd)
                .unwrap_or_else(|e| CmdOutput::failed(127, e.to_string()))
        })
        .on(&["systemctl", "is-enabled"], CmdOutput::ok("enabled\n"))
        .on(&["systemctl", "is-active"], CmdOutput::ok("active\n"));
    let host = Host::new(
        fake_root,
        Arc::new(runner),
        Arc::new(FixedInterfaces::default()),
    );
    let mut config = Config::default();
    config.node.address = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7)));
    setup(fake_root, &mut config);
    let identity = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(lifecycle::identity::resolve(&host, &config))
        .unwrap();
    let cx = Context {
        host: &host,
        config: &config,
        identity: &identity,
    };
    let plan = containerd::plan(&cx).unwrap();
    plan.changes
        .iter()
        .filter_map(|c| match c {
            Change::WriteFile { path, contents, .. } => {
                Some((path.clone(), String::from_utf8(contents.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// A containerd started on a generated config, its socket and state in the
/// test's temp dir.
struct Daemon {
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts containerd on `generated` (with `root` overridden when given)
    /// and waits until it answers.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn start(work: &Path, generated: &str, root: Option<&Path>, cleanup: &mut Cleanup) -> Daemon {
        // The test's own overrides: everything containerd would otherwise
        // write outside the data root goes into the temp dir.
        let mut doc: toml_edit::DocumentMut = generated.parse().unwrap();
        if let Some(root) = root {
            doc["root"] = toml_edit::value(root.to_str().unwrap());
        }
        let socket = work.join("containerd.sock");
        doc["state"] = toml_edit::value(work.join("state").to_str().unwrap());
        doc["grpc"]["address"] = toml_edit::value(socket.to_str().unwrap());
        doc["plugins"]["io.containerd.internal.v1.opt"]["path"] =
            toml_edit::value(work.join("opt").to_str().unwrap());
        let config = work.join("config.toml");
        std::fs::write(&config, doc.to_string()).unwrap();

        let log = work.join("containerd.log");
        let out = File::create(&log).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        cleanup.containerd = Some(child);
        let daemon = Daemon {
            config,
            socket,
            log,
        };

        let deadline = Instant::now() + READY_TIMEOUT;
        while !daemon.ctr(&["version"]).status.success() {
            if let Some(status) = cleanup
                .containerd
                .as_mut()
                .and_then(|c| c.try_wait().unwrap())
            {
                panic!("containerd exited with {status}:\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {READY_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// The STATUS column of `ctr plugins ls` for one plugin ("ok", "error", …).
    fn plugin_status(&self, kind: &str, id: &str) -> String {
        let out = self.ctr(&["plugins", "ls"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&kind) && cols.get(1) == Some(&id))
            .and_then(|cols| cols.last().map(|s| s.to_string()))
            .unwrap_or_else(|| format!("(not listed in: {text})"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `containerd config dump` for this daemon's config.
    fn dump(&self) -> toml_edit::DocumentMut {
        run(
            "containerd",
            &["--config", self.config.to_str().unwrap(), "config", "dump"],
        )
        .parse()
        .unwrap()
    }
}

#[test]
#[allow(clippy::disallowed_methods)] // test harness launches real components
fn real_containerd_runs_the_generated_config_on_the_instance_store() {
    let available = is_root()
        && [
            "containerd",
            "ctr",
            "losetup",
            "mkfs.xfs",
            "mount",
            "umount",
        ]
        .iter()
        .all(|p| on_path(p));
    if harness::require(
        available,
        "root with containerd, ctr, losetup, mkfs.xfs and mount",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();

    // The "NVMe": an xfs file system on a loop device, mounted.
    let image = work.path().join("nvme.img");
    File::create(&image)
        .and_then(|f| f.set_len(VOLUME_BYTES))
        .unwrap();
    let dev = run("losetup", &["-f", "--show", image.to_str().unwrap()])
        .trim()
        .to_string();
    cleanup.loop_device = Some(dev.clone());
    run("mkfs.xfs", &["-q", &dev]);
    let store = work.path().join("nvme");
    std::fs::create_dir(&store).unwrap();
    run("mount", &[&dev, store.to_str().unwrap()]);
    cleanup.mount = Some(store.clone());

    let generated = generated_config(&work.path().join("root"), |_, config| {
        config.instance_store.existing_mounts = vec![store.clone()];
    });
    let data_root = store.join("containerd");
    assert!(
        generated.contains(&format!("root = \"{}\"", data_root.display())),
        "{generated}"
    );

    let daemon = Daemon::start(work.path(), &generated, None, &mut cleanup);
    assert_eq!(
        daemon.plugin_status("io.containerd.grpc.v1", "cri"),
        "ok",
        "{}",
        daemon.log()
    );

    // Its metadata lives on the xfs volume.
    let meta = data_root.join("io.containerd.metadata.v1.bolt/meta.db");
    assert!(
        meta.is_file(),
        "{} missing:\n{}",
        meta.display(),
        daemon.log()
    );
    let fs_type = run("stat", &["-f", "-c", "%T", data_root.to_str().unwrap()]);
    assert_eq!(fs_type.trim(), "xfs");

    // containerd itself reads runc's cgroup driver and the sandbox image as
    // hpk8s wrote them.
    let dump = daemon.dump();
    let (runtime, sandbox) = cri_view(&dump);
    assert_eq!(
        runtime["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{dump}"
    );
    assert_eq!(runtime["default_runtime_name"].as_str(), Some("runc"));
    assert_eq!(sandbox.as_str(), Some("registry.k8s.io/pause:3.10.1"));
    assert_eq!(dump["root"].as_str(), Some(data_root.to_str().unwrap()));
}

/// A GPU node's config (fake PCI GPUs and runtime binary under the fake
/// root): containerd accepts `nvidia` as its default runtime and the CRI
/// plugin loads with it.
#[test]
fn real_containerd_accepts_the_nvidia_runtime_as_default() {
    let available = is_root() && ["containerd", "ctr"].iter().all(|p| on_path(p));
    if harness::require(available, "root with containerd and ctr") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let generated = generated_config(&work.path().join("root"), |root, _| {
        for (addr, class) in [("0000:53:00.0", "0x030200"), ("0000:64:00.0", "0x030200")] {
            let d = root.join("sys/bus/pci/devices").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
            std::fs::write(d.join("device"), "0x2330\n").unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
        }
        let bin = root.join("usr/bin/nvidia-container-runtime");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(bin, "#!/bin/sh\n").unwrap();
    });
    let data_root = work.path().join("data");
    let daemon = Daemon::start(work.path(), &generated, Some(&data_root), &mut cleanup);
    assert_eq!(
        daemon.plugin_status("io.containerd.grpc.v1", "cri"),
        "ok",
        "{}",
        daemon.log()
    );
    let dump = daemon.dump();
    let (runtime, _) = cri_view(&dump);
    assert_eq!(
        runtime["default_runtime_name"].as_str(),
        Some("nvidia"),
        "{dump}"
    );
    let nvidia = &runtime["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some("/usr/bin/nvidia-container-runtime")
    );
    assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true));
}

/// The NVIDIA Container Toolkit's schema-2 drop-in (its runtime only):
/// containerd 1.x lays its CRI table over the main file's whole, undoing
/// runc's cgroup driver and the pause image; the step completes it, and
/// the real containerd then runs with what hpk8s set.
#[test]
fn real_containerd_merges_the_completed_toolkit_drop_in() {
    let available = is_root() && ["containerd", "ctr"].iter().all(|p| on_path(p));
    if harness::require(available, "root with containerd and ctr") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let toolkit = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"nvidia\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\nruntime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\nBinaryName = \"/usr/bin/nvidia-container-runtime\"\n";
    let default = run("containerd", &["config", "default"]);
    let main = if default.contains("imports = []") {
        default.replace("imports = []", "imports = [\"conf.d/99-nvidia.toml\"]")
    } else {
        format!("imports = [\"conf.d/99-nvidia.toml\"]\n{default}")
    };
    let files = planned_files(&work.path().join("root"), |root, _| {
        let d = root.join("sys/bus/pci/devices/0000:53:00.0");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x10de\n").unwrap();
        std::fs::write(d.join("device"), "0x2330\n").unwrap();
        std::fs::write(d.join("class"), "0x030200\n").unwrap();
        let bin = root.join("usr/bin/nvidia-container-runtime");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(bin, "#!/bin/sh\n").unwrap();
        let etc = root.join("etc/containerd");
        std::fs::create_dir_all(etc.join("conf.d")).unwrap();
        std::fs::write(etc.join("config.toml"), &main).unwrap();
        let drop_in = etc.join("conf.d/99-nvidia.toml");
        std::fs::write(&drop_in, toolkit).unwrap();
        std::fs::set_permissions(
            &drop_in,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    });
    let text = |p: &str| {
        files
            .iter()
            .find_map(|(path, text)| (path == Path::new(p)).then(|| text.clone()))
            .unwrap_or_else(|| panic!("{p} not in the plan: {files:?}"))
    };
    let generated = text(CONFIG);
    let completed = text("/etc/containerd/conf.d/99-nvidia.toml");

    // Untouched, the drop-in undoes SystemdCgroup on this containerd: what
    // the step guards against is real.
    let conf_d = work.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    std::fs::write(conf_d.join("99-nvidia.toml"), toolkit).unwrap();
    let data_root = work.path().join("data");
    let daemon = Daemon::start(work.path(), &generated, Some(&data_root), &mut cleanup);
    let undone = daemon.dump();
    let (runtime, _) = cri_view(&undone);
    if undone["version"].as_integer() != Some(3) {
        let cgroup = runtime
            .get("runtimes")
            .and_then(|r| r.get("runc"))
            .and_then(|r| r.get("options"))
            .and_then(|o| o.get("SystemdCgroup"))
            .and_then(toml_edit::Item::as_bool);
        assert_ne!(
            cgroup,
            Some(true),
            "containerd 1.x should replace the CRI table: {undone}"
        );
    }
    drop(daemon);
    drop(cleanup);

    let mut cleanup = Cleanup::default();
    std::fs::write(conf_d.join("99-nvidia.toml"), &completed).unwrap();
    let daemon = Daemon::start(work.path(), &generated, Some(&data_root), &mut cleanup);
    assert_eq!(
        daemon.plugin_status("io.containerd.grpc.v1", "cri"),
        "ok",
        "{}",
        daemon.log()
    );
    let dump = daemon.dump();
    let (runtime, sandbox) = cri_view(&dump);
    assert_eq!(
        runtime["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{dump}"
    );
    assert_eq!(
        runtime["default_runtime_name"].as_str(),
        Some("nvidia"),
        "{dump}"
    );
    assert_eq!(
        runtime["runtimes"]["nvidia"]["options"]["SystemdCgroup"].as_bool(),
        Some(true),
        "{dump}"
    );
    assert_eq!(
        sandbox.as_str(),
        Some("registry.k8s.io/pause:3.10.1"),
        "{dump}"
    );
}

/// The CRI runtime table (`default_runtime_name`, `runtimes`) and the
/// sandbox image of a `config dump`, in either schema (containerd 2.x dumps
/// version 3, whose CRI plugins have other names).
fn cri_view(dump: &toml_edit::DocumentMut) -> (&toml_edit::Item, &toml_edit::Item) {
    if dump["version"].as_integer() == Some(3) {
        (
            &dump["plugins"]["io.containerd.cri.v1.runtime"]["containerd"],
            &dump["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"],
        )
    } else {
        let cri = &dump["plugins"]["io.containerd.grpc.v1.cri"];
        (&cri["containerd"], &cri["sandbox_image"])
    }
}
