//! This node's own address: the one host interface address that the
//! inventory lists. Never a NIC name (they differ between instance types) and
//! never HyperPod's `AgentIpAddress` (its management ENI).

use std::collections::HashMap;
use std::net::IpAddr;

use super::error::IdentityError;
use crate::host::Host;

/// Fails when the inventory lists one address for two nodes: matching
/// could not tell them apart.
pub fn check_unique(listed: &[(IpAddr, &str)], inventory: &str) -> Result<(), IdentityError> {
    let mut seen: HashMap<IpAddr, &str> = HashMap::new();
    for (address, location) in listed {
        if let Some(first) = seen.insert(*address, location) {
            return Err(IdentityError::DuplicateAddress {
                inventory: inventory.to_string(),
                address: *address,
                first: first.to_string(),
                second: location.to_string(),
            });
        }
    }
    Ok(())
}

/// Picks this node's address among the inventory's: `pinned`
/// (`node.address`) when set, else the single host address listed.
pub fn own_address(
    inventory_addresses: &[IpAddr],
    host: &Host,
    pinned: Option<IpAddr>,
    inventory: &str,
) -> Result<IpAddr, IdentityError> {
    if let Some(address) = pinned {
        return if inventory_addresses.contains(&address) {
            Ok(address)
        } else {
            Err(IdentityError::PinnedAddressNotInInventory {
                address,
                inventory: inventory.to_string(),
            })
        };
    }
    let on_host = host
        .interface_addresses()
        .map_err(IdentityError::Interfaces)?;
    let matches: Vec<IpAddr> = on_host
        .iter()
        .copied()
        .filter(|a| inventory_addresses.contains(a))
        .collect();
    match matches[..] {
        [one] => Ok(one),
        [] => Err(IdentityError::AddressNotFound {
            found: join(&on_host),
            inventory: inventory.to_string(),
        }),
        _ => Err(IdentityError::AmbiguousAddress {
            matches: join(&matches),
            inventory: inventory.to_string(),
        }),
    }
}

fn join(addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    fn host(addrs: &[&str]) -> Host {
        let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
        Host::new(
            "/nonexistent",
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces(addrs)),
        )
    }

    fn ips(a: &[&str]) -> Vec<IpAddr> {
        a.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn matches_customer_address_not_agent() {
        let inv = ips(&["10.1.0.1", "10.1.0.2"]);
        let h = host(&["172.16.0.2", "10.1.0.2", "127.0.0.1"]);
        assert_eq!(own_address(&inv, &h, None, "f").unwrap(), inv[1]);
    }

    #[test]
    fn not_found_lists_host_addresses() {
        let e = own_address(
            &ips(&["10.1.0.1"]),
            &host(&["10.9.9.9", "172.16.0.1"]),
            None,
            "/rc.json",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("10.9.9.9, 172.16.0.1") && s.contains("/rc.json"),
            "{s}"
        );
        let e = own_address(&ips(&["10.1.0.1"]), &host(&[]), None, "f").unwrap_err();
        assert!(e.to_string().contains("(none)"), "{e}");
    }

    #[test]
    fn ambiguity_asks_for_node_address() {
        let inv = ips(&["10.1.0.1", "10.1.0.2"]);
        let e = own_address(&inv, &host(&["10.1.0.1", "10.1.0.2"]), None, "f").unwrap_err();
        assert!(matches!(e, IdentityError::AmbiguousAddress { .. }));
        assert!(e.to_string().contains("node.address"), "{e}");
        let pinned = own_address(&inv, &host(&["10.1.0.1", "10.1.0.2"]), Some(inv[1]), "f");
        assert_eq!(pinned.unwrap(), inv[1]);
    }

    #[test]
    fn pinned_must_be_listed() {
        let e = own_address(
            &ips(&["10.1.0.1"]),
            &host(&[]),
            Some(ips(&["10.1.0.9"])[0]),
            "f",
        )
        .unwrap_err();
        assert!(
            matches!(e, IdentityError::PinnedAddressNotInInventory { .. }),
            "{e}"
        );
    }

    #[test]
    fn duplicates_are_named() {
        let a = ips(&["10.1.0.1"])[0];
        let e = check_unique(&[(a, "g[0]"), (a, "g[1]")], "f").unwrap_err();
        assert!(e.to_string().contains("g[0] and g[1]"), "{e}");
    }
}
