//! A real systemd node: Debian bookworm booted with systemd as PID 1 in a
//! `systemd-nspawn` container, on its own network namespace.
//!
//! This is the closest stand-in for a HyperPod instance these machines
//! allow: `systemctl`, `journalctl`, containerd as a systemd service, its own
//! sysctls, and (with [`LoopXfs`]) a real mounted file system at
//! `/opt/dlami/nvme`. The root file system is built once with `debootstrap`
//! and cached; every node boots a private copy of it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::netns::{self, Netns, on_path, pid_alive, resolve, run};

/// Debian release of every node.
pub const SUITE: &str = "bookworm";
/// Packages installed into the node's root file system, besides `minbase`.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "containerd",
    "runc",
    "ca-certificates",
    "procps",
    // A real host has modprobe. Nodes share the host's kernel and have no
    // /lib/modules: here modprobe fails as it does on the bare machine.
    "kmod",
];
/// Bumped whenever the post-debootstrap tweaks change, so caches rebuild.
const RECIPE_VERSION: &str = "1";
/// Where built root file systems are cached between test runs.
pub const CACHE_DIR: &str = "/var/cache/hpk8s-tests";
/// apt sources of this machine: the Debian mirror actually configured here.
const APT_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// Used when [`APT_SOURCES`] names no Debian mirror.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Node copies and loop images live on disk, not on a tmpfs `/tmp`.
pub const WORK_DIR: &str = "/var/tmp";
/// Prefix of per-node directories under [`WORK_DIR`], followed by the
/// owner's pid and `-`.
pub const NODE_DIR_PREFIX: &str = "hpk8s-node-";
/// Prefix of per-loop-image directories under [`WORK_DIR`], followed by the
/// owner's pid and `-`.
pub const XFS_DIR_PREFIX: &str = "hpk8s-xfs-";

const DEBOOTSTRAP: &str = "debootstrap";
const NSPAWN: &str = "systemd-nspawn";
const NSENTER: &str = "nsenter";
const SETPRIV: &str = "setpriv";
const CP: &str = "cp";
const MOUNT: &str = "mount";
const UMOUNT: &str = "umount";
const LOSETUP: &str = "losetup";
const MKFS_XFS: &str = "mkfs.xfs";
/// Makes only `/proc/sys/net` writable inside the node (the node's own
/// network namespace), the rest of `/proc/sys` and `/sys` stays read-only.
const NSPAWN_API_VFS_WRITABLE: (&str, &str) = ("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network");
/// `PATH` for commands run inside a node (the host's may point at pyenv, cargo…).
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a node may take to reach `running`/`degraded`.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default limit for one command run inside a node.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(600);
/// How long an orderly power-off may take before the node is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether nspawn nodes can be booted here: root, `debootstrap`,
/// `systemd-nspawn`, `nsenter`, `setpriv` and `ip`.
pub fn available() -> bool {
    netns::available()
        && [DEBOOTSTRAP, NSPAWN, NSENTER, SETPRIV]
            .iter()
            .all(|p| on_path(p))
}

/// `harness::require` for nspawn nodes: `true` means skip (outside CI only).
pub fn require() -> bool {
    crate::require(available(), "root with debootstrap and systemd-nspawn")
}

/// Whether loop-mounted xfs file systems can be made here.
pub fn loop_xfs_available() -> bool {
    nix::unistd::geteuid().is_root() && [LOSETUP, MKFS_XFS, MOUNT].iter().all(|p| on_path(p))
}

/// The Debian mirror configured on this machine (first `URIs:` of a stanza
/// for `bookworm` in the deb822 sources), else `deb.debian.org`.
pub fn debian_mirror() -> String {
    fs::read_to_string(APT_SOURCES)
        .ok()
        .and_then(|text| mirror_from_sources(&text))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

fn mirror_from_sources(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let suites = field("Suites")?;
        suites
            .split_whitespace()
            .any(|s| s == SUITE)
            .then(|| field("URIs"))
            .flatten()
            .and_then(|u| u.split_whitespace().next())
            .map(str::to_string)
    })
}

/// The cached root file system, built with debootstrap on first use.
///
/// Concurrent test processes serialise on a lock file; the tree is built in
/// a temporary directory and renamed into place, so a half-built tree is
/// never used.
pub fn rootfs() -> anyhow::Result<PathBuf> {
    let key = {
        let mut h = Sha256::new();
        h.update(format!(
            "{SUITE}\n{}\n{RECIPE_VERSION}\n",
            PACKAGES.join(",")
        ));
        hex::encode(h.finalize())
    };
    let cache = Path::new(CACHE_DIR);
    fs::create_dir_all(cache).with_context(|| format!("cannot create {CACHE_DIR}"))?;
    let name = format!("rootfs-{}", &key[..16]);
    let done = cache.join(&name);
    if done.join(READY_MARKER).exists() {
        return Ok(done);
    }
    let lock_path = cache.join(format!("{name}.lock"));
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if done.join(READY_MARKER).exists() {
        return Ok(done);
    }
    // We hold the lock: anything else with this name is a leftover.
    for entry in fs::read_dir(cache)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n == name || n.starts_with(&format!("{name}.tmp")) {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    let tmp = cache.join(format!("{name}.tmp-{}", std::process::id()));
    let mirror = debian_mirror();
    eprintln!(
        "building node root file system {} from {mirror} (once per package list)",
        done.display()
    );
    let include = format!("--include={}", PACKAGES.join(","));
    let tmp_str = tmp.to_string_lossy().into_owned();
    run(
        DEBOOTSTRAP,
        &["--variant=minbase", &include, SUITE, &tmp_str, &mirror],
    )
    .with_context(|| {
        let log = fs::read_to_string(tmp.join("debootstrap/debootstrap.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "debootstrap from {mirror} failed (is the mirror reachable?); end of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })?;
    customise(&tmp)?;
    fs::write(tmp.join(READY_MARKER), PACKAGES.join("\n"))?;
    fs::rename(&tmp, &done)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), done.display()))?;
    remove_outdated(cache, &name);
    Ok(done)
}

/// Removes cached trees of other package lists (earlier versions of this
/// harness), each only when nobody is building it right now.
fn remove_outdated(cache: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        let Some(lock_name) = n.strip_suffix(".lock") else {
            continue;
        };
        if lock_name == current || !lock_name.starts_with("rootfs-") {
            continue;
        }
        let Ok(lock) = File::open(entry.path()) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            eprintln!("removing outdated node root file system {lock_name}");
            let _ = fs::remove_dir_all(cache.join(lock_name));
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Marks a complete cached tree.
const READY_MARKER: &str = ".hpk8s-rootfs-ready";

/// Post-debootstrap tweaks: smaller tree, quicker boot.
fn customise(root: &Path) -> anyhow::Result<()> {
    let archives = root.join("var/cache/apt/archives");
    if let Ok(entries) = fs::read_dir(&archives) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                fs::remove_file(e.path())?;
            }
        }
    }
    // The host name is the machine name nspawn gives each node, not the
    // build machine's (debootstrap copies it).
    let _ = fs::remove_file(root.join("etc/hostname"));
    // No getty on a container console: nothing is attached to it.
    let getty = root.join("etc/systemd/system/console-getty.service");
    let _ = fs::remove_file(&getty);
    std::os::unix::fs::symlink("/dev/null", &getty)
        .with_context(|| format!("cannot mask {}", getty.display()))?;
    Ok(())
}

/// A bind mount from the host into a node.
#[derive(Debug, Clone)]
struct Bind {
    host: PathBuf,
    node: String,
    read_only: bool,
}

/// Configures and boots an [`NspawnNode`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    binds: Vec<Bind>,
    files: Vec<(String, Vec<u8>, u32)>,
    netns: Option<Netns>,
    overlay_root: bool,
    hostname: Option<String>,
}

impl NodeBuilder {
    /// The node's host name (default: its machine name `hpk8s-<pid>-<n>`).
    pub fn hostname(mut self, name: &str) -> Self {
        self.hostname = Some(name.to_string());
        self
    }

    /// Boots on an overlay of the cached root file system (its changes in
    /// the node's directory) instead of a full copy: about 5 s less per
    /// node, and the cache is never written. containerd's overlayfs
    /// snapshotter cannot work on an overlay root; use it for nodes that
    /// run no containers (or keep containerd's data on a bind mount).
    pub fn overlay_root(mut self, on: bool) -> Self {
        self.overlay_root = on;
        self
    }

    /// Bind-mounts host path `host` read-write at `node` inside the node.
    pub fn bind(mut self, host: impl Into<PathBuf>, node: &str) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            node: node.into(),
            read_only: false,
        });
        self
    }

    /// Bind-mounts host path `host` read-only at `node` inside the node.
    pub fn bind_ro(mut self, host: impl Into<PathBuf>, node: &str) -> Self {
        self.binds.push(Bind {
            host: host.into(),
            node: node.into(),
            read_only: true,
        });
        self
    }

    /// Writes a file (absolute node path, parents created) into the node's
    /// root file system before it boots.
    pub fn file(mut self, node: &str, contents: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.files.push((node.into(), contents.into(), mode));
        self
    }

    /// Uses this network namespace instead of a fresh one (e.g. to prepare
    /// addresses or servers before boot).
    pub fn netns(mut self, netns: Netns) -> Self {
        self.netns = Some(netns);
        self
    }

    /// Copies the cached root file system, boots it and waits until systemd
    /// reports `running` or `degraded`.
    ///
    /// The node lives at most as long as the thread that booted it: nspawn
    /// gets SIGTERM when that thread exits, so a test killed half-way does
    /// not leave a running container behind.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn boot(self) -> anyhow::Result<NspawnNode> {
        sweep_stale();
        let rootfs = rootfs()?;
        let netns = match self.netns {
            Some(n) => n,
            None => Netns::new()?,
        };
        let name = format!(
            "hpk8s-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{NODE_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(WORK_DIR)
            .context("cannot create the node directory")?;
        let root = dir.path().join("root");
        // Unmounts the overlay if booting fails before the node owns it.
        struct Unmount(Option<PathBuf>);
        impl Drop for Unmount {
            fn drop(&mut self) {
                if let Some(d) = &self.0 {
                    unmount_under(d);
                }
            }
        }
        let mut guard = Unmount(None);
        if self.overlay_root {
            let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
            for d in [&root, &upper, &work] {
                fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
            }
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                rootfs.display(),
                upper.display(),
                work.display()
            );
            run(
                MOUNT,
                &[
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    &options,
                    &root.to_string_lossy(),
                ],
            )?;
            guard.0 = Some(dir.path().to_path_buf());
        } else {
            run(
                CP,
                &[
                    "-a",
                    "--reflink=auto",
                    &rootfs.to_string_lossy(),
                    &root.to_string_lossy(),
                ],
            )?;
        }
        for (path, contents, mode) in &self.files {
            let dest = root.join(path.trim_start_matches('/'));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(&dest, contents)
                .with_context(|| format!("cannot write {}", dest.display()))?;
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&dest, fs::Permissions::from_mode(*mode))?;
        }

        let log_path = dir.path().join("console.log");
        let log = File::create(&log_path)?;
        let mut cmd = Command::new(resolve(SETPRIV).unwrap_or_else(|| SETPRIV.into()));
        // If the test thread dies without dropping the node, the kernel
        // sends nspawn SIGTERM, which powers the container off. (A SIGKILLed
        // nspawn would leave the container running, orphaned.)
        cmd.args(["--pdeathsig", "TERM", "--"])
            .arg(resolve(NSPAWN).unwrap_or_else(|| NSPAWN.into()))
            // With --network-namespace-path nspawn mounts /proc/sys read-only
            // (it only opens /proc/sys/net for networks it creates itself);
            // the node must be able to set its own network sysctls.
            .env(NSPAWN_API_VFS_WRITABLE.0, NSPAWN_API_VFS_WRITABLE.1)
            .args([
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--console=read-only",
                "--boot",
            ])
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(&root)
            .arg(format!(
                "--network-namespace-path={}",
                netns.path().display()
            ));
        if let Some(h) = &self.hostname {
            cmd.arg(format!("--hostname={h}"));
        }
        for b in &self.binds {
            let flag = if b.read_only { "--bind-ro" } else { "--bind" };
            cmd.arg(format!("{flag}={}:{}", b.host.display(), b.node));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start systemd-nspawn")?;
        guard.0 = None;
        let mut node = NspawnNode {
            name,
            child: Some(child),
            leader: 0,
            log_path,
            netns,
            dir,
        };
        node.wait_booted().with_context(|| {
            format!(
                "node {} did not boot; console:\n{}",
                node.name,
                node.console()
            )
        })?;
        Ok(node)
    }
}

/// A booted node. Dropping it powers it off, kills what is left and removes
/// its copy of the root file system and its network namespace.
#[derive(Debug)]
pub struct NspawnNode {
    name: String,
    child: Option<Child>,
    /// Host pid of the container's PID 1 (systemd).
    leader: u32,
    log_path: PathBuf,
    // Dropped after the node is stopped (see `Drop`), in this order.
    netns: Netns,
    dir: tempfile::TempDir,
}

impl NspawnNode {
    /// A builder for a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// Machine name (also the node's host name unless
    /// [`NodeBuilder::hostname`] set another).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's root file system, as seen from the host.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The node's network namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Host pid of the node's systemd.
    pub fn leader_pid(&self) -> u32 {
        self.leader
    }

    /// Host pid of the `systemd-nspawn` process, while it runs.
    pub fn nspawn_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the node printed on its console so far.
    pub fn console(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `nsenter` into every namespace and the root of the node's PID 1,
    /// with a clean environment (the host's `PATH` may point at pyenv or
    /// cargo directories that do not exist inside). nsenter dies with the
    /// test thread: a stray one stopped by the node's shutdown (systemd
    /// freezes every process in the namespace first) would hold the
    /// shutdown up for 90 s.
    fn nsenter(&self) -> Command {
        #[allow(clippy::disallowed_methods)] // test harness launches real components
        let mut c = Command::new(SETPRIV);
        c.args(["--pdeathsig", "KILL", "--", NSENTER])
            .args(["-t", &self.leader.to_string(), "-a", "-r", "-w", "--"])
            .env_clear()
            .env("PATH", NODE_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `argv` inside the node (all its namespaces, its root) and
    /// captures stdout, stderr and the exit status; fails when it is still
    /// running after [`EXEC_TIMEOUT`].
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.exec_with(argv, &[], EXEC_TIMEOUT)
    }

    /// [`exec`](Self::exec) with extra environment variables and a time limit.
    pub fn exec_with(
        &self,
        argv: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut c = self.nsenter();
        c.args(argv).envs(env.iter().copied());
        output_within(c, timeout).with_context(|| format!("running {argv:?} in node {}", self.name))
    }

    /// Starts `argv` inside the node in the background with extra
    /// environment variables, its stdout and stderr going to the given
    /// files. The returned child is `nsenter`; the command runs as its
    /// child (nsenter forks to enter the node's PID namespace), so stop it
    /// with [`kill_tree`], not `Child::kill` alone. Like every command
    /// started here it is killed when the calling thread exits.
    pub fn spawn_with(
        &self,
        argv: &[&str],
        env: &[(&str, &str)],
        stdout: File,
        stderr: File,
    ) -> anyhow::Result<Child> {
        let mut c = self.nsenter();
        c.args(argv)
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(stderr);
        c.spawn()
            .with_context(|| format!("starting {argv:?} in node {}", self.name))
    }

    /// Runs `argv` inside the node and returns its trimmed stdout, failing
    /// with stdout and stderr when it exits non-zero.
    pub fn exec_ok(&self, argv: &[&str]) -> anyhow::Result<String> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            bail!(
                "{argv:?} in node {} failed ({}):\nstdout: {}\nstderr: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The journal of `unit` inside the node (for failure messages).
    pub fn journal(&self, unit: &str) -> String {
        match self.exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-precise",
            "-u",
            unit,
        ]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("cannot read the journal of {unit}: {e:#}"),
        }
    }

    fn nspawn_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn wait_booted(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let nspawn = self.nspawn_pid().context("nspawn is not running")?;
        // nspawn's direct child is the container's PID 1.
        self.leader = loop {
            if let Some(status) = self.nspawn_exited() {
                bail!("systemd-nspawn exited early ({status})");
            }
            if let Some(pid) = container_leader(nspawn) {
                break pid;
            }
            if Instant::now() > deadline {
                bail!("no container PID 1 under nspawn pid {nspawn} after {BOOT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut last = String::new();
        loop {
            if let Some(status) = self.nspawn_exited() {
                bail!("systemd-nspawn exited during boot ({status})");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "systemd did not finish booting within {BOOT_TIMEOUT:?} (last state: {last})"
                );
            }
            let mut probe = self.nsenter();
            probe.args(["systemctl", "is-system-running", "--wait"]);
            let out = output_within(probe, left)?;
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            match last.lines().next().unwrap_or("") {
                "running" => return Ok(()),
                "degraded" => {
                    let failed = self
                        .exec(&["systemctl", "--failed", "--no-legend", "--plain"])
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                        .unwrap_or_default();
                    eprintln!(
                        "node {} booted degraded; failed units:\n{failed}",
                        self.name
                    );
                    return Ok(());
                }
                // Early on, the bus may not be up yet.
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Powers the node off (SIGTERM to nspawn asks systemd for an orderly
    /// shutdown), kills it after a grace period, and waits for nspawn.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        if child.try_wait()?.is_none() {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    eprintln!(
                        "node {} did not power off in {STOP_TIMEOUT:?}; killing it",
                        self.name
                    );
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // A killed nspawn leaves the container behind: killing its PID 1
        // takes down the whole PID namespace.
        if self.leader != 0 {
            kill_and_reap(self.leader)
                .with_context(|| format!("node {} outlived its nspawn process", self.name))?;
        }
        Ok(())
    }
}

/// Runs `cmd` (stdout and stderr piped) and collects its output, killing it
/// and failing when it runs longer than `timeout`.
fn output_within(mut cmd: Command, timeout: Duration) -> anyhow::Result<Output> {
    let mut child = cmd.spawn().context("cannot start nsenter")?;
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The command itself may live on inside the node, holding the
            // pipes open: leave the readers behind rather than block.
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// SIGKILLs `pid` (a container's PID 1) if it still runs, and waits until it
/// is gone.
fn kill_and_reap(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_running(pid) {
        let _ = kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGKILL);
        if Instant::now() > deadline {
            bail!("host pid {pid} is still alive 10 s after SIGKILL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// SIGKILLs `pid` and every descendant of it (children first found, then
/// killed top-down so nothing re-parents and escapes).
pub fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
                all.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    for p in all {
        if let Ok(p) = i32::try_from(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub fn pid_running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

impl Drop for NspawnNode {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping node {}: {e:#}", self.name);
        }
        unmount_under(self.dir.path());
    }
}

/// The container's PID 1 among nspawn's children: the one whose pid in its
/// own namespace is 1.
fn container_leader(nspawn: u32) -> Option<u32> {
    let tasks = fs::read_dir(format!("/proc/{nspawn}/task")).ok()?;
    for task in tasks.flatten() {
        let Ok(children) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            if ns_pid(child).as_deref() == Some("1") {
                return Some(child);
            }
        }
    }
    None
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(char::from(b));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Unmounts (lazily if busy) everything mounted at or below `dir`.
fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let m = m.to_string_lossy().into_owned();
        if run(UMOUNT, &[&m]).is_err()
            && let Err(e) = run(UMOUNT, &["-l", &m])
        {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Cleans up after test processes that died without dropping their nodes
/// or loop images: unmounts and removes their directories, detaches their
/// loop devices. (Their nspawn processes died with them: see `--pdeathsig`.)
pub fn sweep_stale() {
    // Containers of dead test processes (normally gone already: nspawn
    // gets SIGTERM when its test dies, but a shutdown can hang).
    for nspawn in stale_nspawns() {
        eprintln!("killing a stale test node (nspawn pid {nspawn})");
        if let Some(leader) = container_leader(nspawn) {
            let _ = kill_and_reap(leader);
        }
        let _ = kill_and_reap(nspawn);
    }
    let Ok(entries) = fs::read_dir(WORK_DIR) else {
        return;
    };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            [NODE_DIR_PREFIX, XFS_DIR_PREFIX].iter().any(|p| {
                n.strip_prefix(p)
                    .and_then(|r| r.split('-').next())
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !pid_alive(pid))
            })
        })
        .map(|e| e.path())
        .collect();
    if stale.is_empty() {
        return;
    }
    for dir in &stale {
        unmount_under(dir);
    }
    for (dev, back) in loop_devices() {
        if stale.iter().any(|d| back.starts_with(d)) {
            let _ = run(LOSETUP, &["-d", &dev]);
        }
    }
    for dir in stale {
        eprintln!("removing stale test directory {}", dir.display());
        let _ = fs::remove_dir_all(&dir);
    }
}

/// `systemd-nspawn` processes of this harness (`--machine=hpk8s-<pid>-<n>`)
/// whose test process is gone. (A container's own `/proc/<pid>/root` reads
/// `/` from here, so the machine name is what identifies them.)
fn stale_nspawns() -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with(NSPAWN))
                && args.iter().any(|a| {
                    a.strip_prefix("--machine=")
                        .and_then(netns::owner_pid)
                        .is_some_and(|owner| !pid_alive(owner))
                })
        })
        .collect()
}

/// The innermost namespace pid of `pid` (`NSpid:` in its status).
fn ns_pid(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
}

/// `(device, backing file)` of every loop device in use.
pub fn loop_devices() -> Vec<(String, PathBuf)> {
    run(LOSETUP, &["-n", "-l", "-O", "NAME,BACK-FILE"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let (dev, back) = l.trim().split_once(char::is_whitespace)?;
                    Some((
                        dev.to_string(),
                        PathBuf::from(back.trim().trim_end_matches(" (deleted)")),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An xfs file system on a loop device, mounted on a temporary directory: a
/// faithful stand-in for a mounted NVMe instance store. Dropping it
/// unmounts it, detaches the loop device and deletes the image.
#[derive(Debug)]
pub struct LoopXfs {
    device: String,
    mount_point: PathBuf,
    mounted: bool,
    dir: tempfile::TempDir,
}

impl LoopXfs {
    /// A sparse image of `size` bytes (xfs needs at least 300 MiB), formatted
    /// and mounted.
    pub fn new(size: u64) -> anyhow::Result<Self> {
        sweep_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{XFS_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(WORK_DIR)
            .context("cannot create the loop image directory")?;
        let image = dir.path().join("disk.img");
        File::create(&image)?.set_len(size)?;
        let image_str = image.to_string_lossy().into_owned();
        let out = run(LOSETUP, &["-f", "--show", &image_str])?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mount_point = dir.path().join("mnt");
        let mut this = LoopXfs {
            device,
            mount_point,
            mounted: false,
            dir,
        };
        run(MKFS_XFS, &["-q", &this.device])?;
        fs::create_dir(&this.mount_point)?;
        run(
            MOUNT,
            &[
                "-t",
                "xfs",
                &this.device,
                &this.mount_point.to_string_lossy(),
            ],
        )?;
        this.mounted = true;
        Ok(this)
    }

    /// The loop device (`/dev/loopN`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Where the file system is mounted on the host.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The image file backing the loop device.
    pub fn image(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }
}

impl Drop for LoopXfs {
    fn drop(&mut self) {
        if self.mounted {
            unmount_under(&self.mount_point);
        }
        if let Err(e) = run(LOSETUP, &["-d", &self.device]) {
            eprintln!("warning: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_comes_from_the_bookworm_stanza() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_from_sources(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_sources("Types: deb\nSuites: trixie\nURIs: http://x\n"),
            None
        );
    }

    #[test]
    fn outdated_root_file_systems_go_unless_in_use() {
        let cache = tempfile::tempdir().unwrap();
        for n in ["rootfs-old", "rootfs-busy", "rootfs-new"] {
            fs::create_dir(cache.path().join(n)).unwrap();
            File::create(cache.path().join(format!("{n}.lock"))).unwrap();
        }
        let busy = File::open(cache.path().join("rootfs-busy.lock")).unwrap();
        busy.lock().unwrap();
        remove_outdated(cache.path(), "rootfs-new");
        assert!(!cache.path().join("rootfs-old").exists());
        assert!(!cache.path().join("rootfs-old.lock").exists());
        assert!(cache.path().join("rootfs-busy").exists());
        assert!(cache.path().join("rootfs-new").exists());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
