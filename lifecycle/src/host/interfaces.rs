//! Where the host's own addresses come from. Identity matches these against
//! the cluster inventory instead of trusting a hard-coded NIC name.

use std::net::IpAddr;

/// Source of the host's interface addresses.
pub trait InterfaceAddresses: Send + Sync {
    /// Usable unicast addresses of this host: loopback, link-local and
    /// unspecified addresses are left out.
    fn addresses(&self) -> Result<Vec<IpAddr>, std::io::Error>;
}

/// The addresses of the network namespace this process runs in.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemInterfaces;

impl InterfaceAddresses for SystemInterfaces {
    fn addresses(&self) -> Result<Vec<IpAddr>, std::io::Error> {
        let mut out = Vec::new();
        for ifa in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if usable(&ip) && !out.contains(&ip) {
                out.push(ip);
            }
        }
        Ok(out)
    }
}

/// A fixed list, for tests and for inspecting an image of another machine.
#[derive(Debug, Default, Clone)]
pub struct FixedInterfaces(pub Vec<IpAddr>);

impl InterfaceAddresses for FixedInterfaces {
    fn addresses(&self) -> Result<Vec<IpAddr>, std::io::Error> {
        Ok(self.0.iter().copied().filter(usable).collect())
    }
}

fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_unicast_link_local()),
    }
}
