//! IPv4 networks in CIDR notation (`10.244.0.0/16`), always canonical.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network in CIDR notation, always canonical (no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrParseError {
    /// Not `a.b.c.d/n` with `n` ≤ 32.
    #[error("`{0}` is not an IPv4 CIDR (a.b.c.d/n with n from 0 to 32)")]
    Syntax(String),
    /// Host bits are set (`10.244.1.0/16`), which usually is a typo.
    #[error("`{given}` has host bits set; did you mean `{canonical}`?")]
    HostBits {
        /// What was written.
        given: String,
        /// The network it lies in.
        canonical: Ipv4Cidr,
    },
}

impl Ipv4Cidr {
    /// A network from an address whose host bits are already clear, for
    /// constants; `prefix` is capped at 32.
    pub const fn canonical(network: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        Ipv4Cidr {
            network,
            prefix: if prefix > 32 { 32 } else { prefix },
        }
    }

    /// The network of `address` with `prefix` bits (host bits cleared);
    /// `None` when `prefix` > 32.
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The highest address of the network.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `address` lies in the network.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two networks share any address (aligned blocks either
    /// nest or are disjoint).
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// How many `/mask` slices the network holds (0 when `mask` is wider
    /// than the network itself).
    pub fn slices(&self, mask: u8) -> u64 {
        if mask < self.prefix || mask > 32 {
            0
        } else {
            1u64 << (mask - self.prefix)
        }
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrParseError::Syntax(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let address: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        let cidr = Ipv4Cidr::containing(address, prefix).ok_or_else(syntax)?;
        if cidr.network != address {
            return Err(CidrParseError::HostBits {
                given: s.to_string(),
                canonical: cidr,
            });
        }
        Ok(cidr)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_display_and_refusals() {
        assert_eq!(cidr("10.244.0.0/16").to_string(), "10.244.0.0/16");
        assert_eq!(cidr("0.0.0.0/0").last(), Ipv4Addr::BROADCAST);
        assert_eq!(cidr("10.1.2.3/32").last(), Ipv4Addr::new(10, 1, 2, 3));
        for bad in [
            "10.244.0.0",
            "10.244.0.0/33",
            "10.244.0/16",
            "10.244.0.0/",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/008",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(CidrParseError::Syntax(_))),
                "{bad}"
            );
        }
        let e = "10.244.1.0/16".parse::<Ipv4Cidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`10.244.1.0/16` has host bits set; did you mean `10.244.0.0/16`?"
        );
    }

    #[test]
    fn overlap_and_contains() {
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.96.0.0/12")));
        assert!(cidr("10.96.0.0/12").overlaps(&cidr("10.0.0.0/8")));
        assert!(!cidr("10.244.0.0/16").overlaps(&cidr("10.96.0.0/12")));
        assert!(cidr("10.240.0.0/12").contains(Ipv4Addr::new(10, 255, 255, 255)));
        assert!(!cidr("10.240.0.0/12").contains(Ipv4Addr::new(10, 239, 255, 255)));
    }
}
