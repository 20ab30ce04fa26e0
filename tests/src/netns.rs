//! Network namespaces owned by one test: a private loopback with its own
//! addresses and sysctls, so test servers and nodes never touch the host's
//! network.
//!
//! Names are `hpk8s-<pid>-<n>`: unique per test process, and a namespace
//! whose owner process is gone (a killed test run) is swept away by the next
//! [`Netns::new`].

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

/// Prefix of every namespace this harness creates.
pub const PREFIX: &str = "hpk8s-";
/// Where `ip netns` keeps its named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
const IP: &str = "ip";
const SYSCTL: &str = "sysctl";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Whether `ip netns` can be used here (root, iproute2 present).
pub fn available() -> bool {
    nix::unistd::geteuid().is_root() && on_path(IP)
}

impl Netns {
    /// Creates a fresh namespace with `lo` up (so `127.0.0.1` works inside),
    /// after sweeping stale ones left by dead test processes.
    pub fn new() -> anyhow::Result<Self> {
        sweep_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(IP, &["netns", "add", &name])?;
        let ns = Netns { name };
        run(IP, &["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace name (`hpk8s-<pid>-<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, e.g. for
    /// `systemd-nspawn --network-namespace-path=`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// Adds `cidr` (e.g. `10.1.38.128/32`) to `dev` inside the namespace.
    pub fn add_address(&self, cidr: &str, dev: &str) -> anyhow::Result<()> {
        run(IP, &["-n", &self.name, "addr", "add", cidr, "dev", dev]).map(drop)
    }

    /// Runs `argv` inside the namespace (`ip netns exec`) and captures its output.
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        let (prog, args) = argv.split_first().context("empty command")?;
        Command::new(resolve(IP).unwrap_or_else(|| PathBuf::from(IP)))
            .args(["netns", "exec", &self.name, prog])
            .args(args)
            .output()
            .with_context(|| format!("cannot run ip netns exec {} {argv:?}", self.name))
    }

    /// Runs `f` on a short-lived thread that has joined this namespace, and
    /// returns its result. Sockets created there stay in this namespace, so
    /// they can be used from any thread afterwards.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = std::fs::File::open(&path)?;
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }

    /// Binds a TCP listener inside the namespace (see [`run_in`](Self::run_in)).
    pub fn listen_tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        self.run_in(|| TcpListener::bind(addr))
    }

    /// Connects this namespace to `peer` with a veth pair: `dev` here with
    /// address `cidr`, `peer_dev` there with `peer_cidr`, both up. (Several
    /// nodes on one L2 network can be connected the same way to a bridge
    /// in a namespace of their own.)
    pub fn connect(
        &self,
        dev: &str,
        cidr: &str,
        peer: &Netns,
        peer_dev: &str,
        peer_cidr: &str,
    ) -> anyhow::Result<()> {
        run(
            IP,
            &[
                "-n", &self.name, "link", "add", dev, "type", "veth", "peer", "name", peer_dev,
                "netns", &peer.name,
            ],
        )?;
        self.add_address(cidr, dev)?;
        peer.add_address(peer_cidr, peer_dev)?;
        run(IP, &["-n", &self.name, "link", "set", dev, "up"])?;
        run(IP, &["-n", &peer.name, "link", "set", peer_dev, "up"])?;
        Ok(())
    }

    /// Sets a sysctl of this namespace (e.g. `net.ipv4.ip_forward`); a new
    /// namespace may inherit some values from the host, so tests that expect
    /// a change start from a known value.
    pub fn set_sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let sysctl = resolve(SYSCTL).unwrap_or_else(|| SYSCTL.into());
        let out = self.exec(&[&sysctl.to_string_lossy(), "-w", &format!("{key}={value}")])?;
        if !out.status.success() {
            bail!(
                "sysctl -w {key}={value} in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Reads a sysctl of this namespace (e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str) -> anyhow::Result<String> {
        let sysctl = resolve(SYSCTL).unwrap_or_else(|| SYSCTL.into());
        let out = self.exec(&[&sysctl.to_string_lossy(), "-n", key])?;
        if !out.status.success() {
            bail!(
                "sysctl -n {key} in {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(IP, &["netns", "delete", &self.name]) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Deletes `hpk8s-<pid>-<n>` namespaces whose owner process no longer
/// exists; returns their names.
pub fn sweep_stale() -> Vec<String> {
    let mut swept = Vec::new();
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return swept;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name)
            && !pid_alive(pid)
            && run(IP, &["netns", "delete", &name]).is_ok()
        {
            swept.push(name);
        }
    }
    swept
}

/// The owner pid encoded in a harness name `hpk8s-<pid>-<n>`.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether `prog` can be run here (see [`resolve`]).
pub fn on_path(prog: &str) -> bool {
    resolve(prog).is_some()
}

/// Finds `prog` in `$PATH` and the sbin directories (a non-login root shell
/// may lack them in `$PATH`); a name with a slash is taken as is.
pub fn resolve(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog)).filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Runs a command, failing with its stderr when it exits non-zero.
#[allow(clippy::disallowed_methods)] // test harness launches real components
pub(crate) fn run(prog: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(resolve(prog).unwrap_or_else(|| PathBuf::from(prog)))
        .args(args)
        .output()
        .with_context(|| format!("cannot run {prog} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{prog} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_harness_names() {
        assert_eq!(owner_pid("hpk8s-1234-0"), Some(1234));
        assert_eq!(owner_pid("hpk8s-1234"), None);
        assert_eq!(owner_pid("other-1234-0"), None);
        assert_eq!(owner_pid("hpk8s-x-0"), None);
    }
}
