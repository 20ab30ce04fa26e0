//! A test LAN: a Linux bridge in the root network namespace holding the
//! gateway address `10.213.<n>.1/24`, and veth links attaching network
//! namespaces (hosts) to it, each with its own address and a default route
//! via the gateway.
//!
//! Every LAN gets its own `/24`: the index `<n>` is claimed with a lock file
//! under [`LOCK_DIR`] held for the LAN's lifetime, so parallel test
//! processes never share one, and a claim whose owner died (lock released)
//! first sweeps what the dead owner left (its bridge and veths).
//!
//! Nothing is forwarded off the LAN: forwarding is turned off on the bridge
//! (per input interface), and every host routes the instance metadata
//! address as unreachable, so a node can reach the gateway's services and
//! its peers but never the internet or IMDS.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context as _, bail};

use crate::netns::{Netns, run};

/// Second octet of every test LAN (`10.213.<n>.0/24`).
pub const SECOND_OCTET: u8 = 213;
/// Lock files claiming a LAN index, one per index.
pub const LOCK_DIR: &str = "/run/hpk8s-lan";
/// Bridge names: this prefix and the LAN index (`hpk8s-br7`).
pub const BRIDGE_PREFIX: &str = "hpk8s-br";
/// Root-side veth names: this prefix, the LAN index, `-`, the host number
/// (`hpk8s-7-10`, at most 12 characters of the kernel's 15).
pub const VETH_PREFIX: &str = "hpk8s-";
/// The interface name inside every host.
pub const HOST_DEV: &str = "eth0";
/// The gateway's host number.
pub const GATEWAY_HOST: u8 = 1;
/// Never reachable from a host of the LAN.
const IMDS: &str = "169.254.169.254/32";
const IP: &str = "ip";

/// A bridge with its `/24`, torn down (bridge and root-side veths) on drop.
#[derive(Debug)]
pub struct Lan {
    index: u8,
    veths: Vec<String>,
    _lock: File,
}

impl Lan {
    /// Claims a free `10.213.<n>.0/24` (starting from one derived from the
    /// pid, so parallel processes rarely contend) and creates its bridge.
    pub fn new() -> anyhow::Result<Self> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("cannot create {LOCK_DIR}"))?;
        sweep_stale();
        let start = std::process::id() % 250;
        for k in 0..250u32 {
            let index = u8::try_from((start + k) % 250 + 1).context("LAN index")?;
            let lock_path = Path::new(LOCK_DIR).join(format!("{index}.lock"));
            let lock = File::create(&lock_path)
                .with_context(|| format!("cannot create {}", lock_path.display()))?;
            if lock.try_lock().is_err() {
                continue;
            }
            // Ours now: anything still named for this index is a leftover
            // of a test process that died.
            sweep_index(index);
            if address_in_use(index) {
                // Someone else (not this harness) uses the subnet.
                continue;
            }
            let lan = Lan {
                index,
                veths: Vec::new(),
                _lock: lock,
            };
            lan.create_bridge()?;
            return Ok(lan);
        }
        bail!("no free 10.{SECOND_OCTET}.<n>.0/24 for a test LAN (all 250 are claimed)")
    }

    fn create_bridge(&self) -> anyhow::Result<()> {
        let br = self.bridge();
        run(IP, &["link", "add", &br, "type", "bridge"])?;
        run(
            IP,
            &["addr", "add", &format!("{}/24", self.gateway()), "dev", &br],
        )?;
        run(IP, &["link", "set", &br, "up"])?;
        // Packets from the nodes must end at the gateway, never be routed on
        // (the host's global ip_forward may be on).
        let forwarding = format!("/proc/sys/net/ipv4/conf/{br}/forwarding");
        std::fs::write(&forwarding, "0").with_context(|| format!("cannot write {forwarding}"))?;
        Ok(())
    }

    /// The LAN index `<n>` of `10.213.<n>.0/24`.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The bridge's name (`hpk8s-br<n>`).
    pub fn bridge(&self) -> String {
        format!("{BRIDGE_PREFIX}{}", self.index)
    }

    /// `10.213.<n>.0/24`.
    pub fn cidr(&self) -> String {
        format!("10.{SECOND_OCTET}.{}.0/24", self.index)
    }

    /// `10.213.<n>.<host>`.
    pub fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, SECOND_OCTET, self.index, host)
    }

    /// The gateway, `10.213.<n>.1`: the bridge's address in the root
    /// namespace, where the test's own servers (moto, the mirror) listen.
    pub fn gateway(&self) -> Ipv4Addr {
        self.address(GATEWAY_HOST)
    }

    /// The root-side veth names created so far.
    pub fn veths(&self) -> &[String] {
        &self.veths
    }

    /// Attaches `netns` as host number `host` (2..=254): a veth whose
    /// namespace end is `eth0` with `10.213.<n>.<host>/24`, a default route
    /// via the gateway and IMDS unreachable.
    pub fn attach(&mut self, netns: &Netns, host: u8) -> anyhow::Result<Ipv4Addr> {
        if host <= GATEWAY_HOST || host == 255 {
            bail!("host number {host} is not usable on a test LAN (2..=254)");
        }
        let veth = format!("{VETH_PREFIX}{}-{host}", self.index);
        run(
            IP,
            &[
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                HOST_DEV,
                "netns",
                netns.name(),
            ],
        )?;
        self.veths.push(veth.clone());
        run(IP, &["link", "set", &veth, "master", &self.bridge()])?;
        run(IP, &["link", "set", &veth, "up"])?;
        let address = self.address(host);
        netns.add_address(&format!("{address}/24"), HOST_DEV)?;
        let ns = netns.name();
        run(IP, &["-n", ns, "link", "set", HOST_DEV, "up"])?;
        run(
            IP,
            &[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &self.gateway().to_string(),
            ],
        )?;
        run(IP, &["-n", ns, "route", "add", "unreachable", IMDS])?;
        Ok(address)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // A veth goes with its namespace; delete what is left, then the bridge.
        for veth in &self.veths {
            if link_exists(veth) {
                let _ = run(IP, &["link", "delete", veth]);
            }
        }
        if let Err(e) = run(IP, &["link", "delete", &self.bridge()]) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Whether a link of this name exists in the root namespace.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Names of the root namespace's links made by this harness (bridges and
/// veths named `hpk8s-…`).
pub fn harness_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(VETH_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether some address of `10.213.<index>.0/24` is on a link this harness
/// did not make.
fn address_in_use(index: u8) -> bool {
    let out = run(IP, &["-4", "-o", "addr", "show"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let needle = format!(" 10.{SECOND_OCTET}.{index}.");
    out.lines().any(|l| {
        l.contains(&needle)
            && l.split_whitespace()
                .nth(1)
                .is_some_and(|dev| !dev.starts_with(VETH_PREFIX))
    })
}

/// Deletes the links of every LAN whose owner died (its lock is free),
/// e.g. after a test process was killed.
pub fn sweep_stale() {
    let bridges: Vec<u8> = harness_links()
        .iter()
        .filter_map(|l| l.strip_prefix(BRIDGE_PREFIX)?.parse().ok())
        .collect();
    for index in bridges {
        let lock_path = Path::new(LOCK_DIR).join(format!("{index}.lock"));
        if let Ok(lock) = File::create(&lock_path)
            && lock.try_lock().is_ok()
        {
            sweep_index(index);
        }
    }
}

/// Deletes the bridge and root-side veths of LAN `index` (a dead owner's).
fn sweep_index(index: u8) {
    // moto of a killed test process, bound to this LAN's gateway.
    let moto_args = format!("hpk8s_moto.py\0--host\010.{SECOND_OCTET}.{index}.{GATEWAY_HOST}\0");
    for pid in crate::cluster_bed::pids_whose_cmdline_contains(&moto_args) {
        eprintln!("killing a stale test LAN's moto (pid {pid})");
        if let Ok(p) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let bridge = format!("{BRIDGE_PREFIX}{index}");
    let veth_prefix = format!("{VETH_PREFIX}{index}-");
    for link in harness_links() {
        if link == bridge || link.starts_with(&veth_prefix) {
            eprintln!("removing stale test LAN link {link}");
            let _ = run(IP, &["link", "delete", &link]);
        }
    }
}
