//! Pod network sizing and the overlap checks that keep pods, Services and
//! nodes apart.
//!
//! Each node gets a `/node_cidr_mask_size` slice of the pod network, so the
//! pod network caps the cluster: `2^(mask − prefix)` nodes fit (10.244.0.0/16
//! with /24 per node → 256, the limit the earlier scripts hit silently). The
//! network is therefore sized from the expected node count plus headroom for
//! scale-up and replacements, and a network the user chose is refused when it
//! is too small. Everything here is a pure function, checked before anything
//! on the host changes.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::ClusterConfig;
use crate::error::class::classify;
pub use crate::values::cidr::{CidrParseError, Ipv4Cidr};

/// Where an automatically sized pod network starts (flannel's default). A
/// network wider than /16 is the enclosing aligned block: /12 is
/// 10.240.0.0/12, /11 is 10.224.0.0/11.
pub const DEFAULT_POD_BASE: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 0);
pub use crate::config::DEFAULT_SERVICE_SUBNET;
/// The widest network sized automatically: the whole of 10.0.0.0/8.
pub const WIDEST_AUTO_PREFIX: u8 = 8;
/// The narrowest network sized automatically (flannel's default /16), so a
/// small cluster can still grow without re-addressing.
pub const NARROWEST_AUTO_PREFIX: u8 = 16;
/// Headroom is at least this many nodes, so a tiny cluster can still replace
/// a node or two.
pub const MIN_HEADROOM_NODES: u32 = 4;
/// Per-node pod ranges hpk8s accepts (`cluster.node_cidr_mask_size`): a /16
/// per node is already 65 534 pods; a /28 leaves 14 pod addresses.
pub const NODE_MASK_RANGE: std::ops::RangeInclusive<u8> = 16..=28;
/// kube-controller-manager refuses a pod network more than 16 bits wider
/// than the per-node mask (at most 65 536 node ranges).
pub const MAX_NODE_BITS: u8 = 16;
/// Service networks the API server accepts: at most 20 host bits (/12), and
/// room for kubeadm's DNS Service at the tenth address (/28).
pub const SERVICE_PREFIX_RANGE: std::ops::RangeInclusive<u8> = 12..=28;
/// kubelet's default `maxPods`.
pub const KUBELET_DEFAULT_MAX_PODS: u32 = 110;

/// Errors of pod network sizing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured pod network does not fit the expected nodes.
    #[error(
        "cluster.pod_subnet {subnet} fits {capacity} nodes with a /{mask} per node (cluster.node_cidr_mask_size), but {needed} are needed ({expected} expected plus headroom); use a /{suggested_prefix} or wider, or leave cluster.pod_subnet unset to size it automatically"
    )]
    PodSubnetTooSmall {
        /// The configured network.
        subnet: Ipv4Cidr,
        /// Per-node mask.
        mask: u8,
        /// Nodes that fit.
        capacity: u64,
        /// Nodes needed (expected plus headroom).
        needed: u64,
        /// Nodes expected by the inventory.
        expected: u32,
        /// The prefix that would fit.
        suggested_prefix: u8,
    },
    /// Even 10.0.0.0/8 cannot hold that many per-node ranges.
    #[error(
        "{needed} nodes ({expected} expected plus headroom) do not fit in 10.0.0.0/8 with a /{mask} per node (kube-controller-manager also allows at most 65536 node ranges); raise cluster.node_cidr_mask_size (fewer pod addresses per node) up to 24, or set cluster.pod_subnet"
    )]
    NoRoomForNodes {
        /// Nodes needed.
        needed: u64,
        /// Nodes expected by the inventory.
        expected: u32,
        /// Per-node mask.
        mask: u8,
    },
    /// `cluster.node_cidr_mask_size` is outside what hpk8s accepts.
    #[error(
        "cluster.node_cidr_mask_size {mask} is out of range; use 16 to 28 (24 gives each node 254 pod addresses; above 25 kubelet's maxPods is lowered to fit)"
    )]
    NodeMaskOutOfRange {
        /// The configured mask.
        mask: u8,
    },
    /// The pod network is more than 16 bits wider than the per-node mask,
    /// which kube-controller-manager refuses at start.
    #[error(
        "cluster.pod_subnet {subnet} is more than 16 bits wider than cluster.node_cidr_mask_size /{mask} (kube-controller-manager refuses it); use a /{narrowest} or narrower pod network, or a smaller mask size"
    )]
    PodSubnetTooWide {
        /// The configured network.
        subnet: Ipv4Cidr,
        /// Per-node mask.
        mask: u8,
        /// The widest prefix allowed with this mask.
        narrowest: u8,
    },
    /// The Service network is too wide or too narrow.
    #[error(
        "cluster.service_subnet {subnet} is out of range; the prefix must be /12 (the API server's limit) to /28 (room for the DNS Service address)"
    )]
    ServiceSubnetSize {
        /// The configured network.
        subnet: Ipv4Cidr,
    },
    /// The pod and Service networks overlap.
    #[error(
        "pod network {pod} ({pod_source}) overlaps cluster.service_subnet {service}; choose ranges that do not overlap"
    )]
    SubnetsOverlap {
        /// The pod network.
        pod: Ipv4Cidr,
        /// `cluster.pod_subnet` or `sized automatically`.
        pod_source: &'static str,
        /// The Service network.
        service: Ipv4Cidr,
    },
    /// A node address of the inventory lies inside the pod or Service network.
    #[error(
        "{key} {subnet} contains {count} node address(es) of the inventory, e.g. {address} (node addresses span {first}–{last}); set {key} to a range outside the node network"
    )]
    NodeAddressInSubnet {
        /// `cluster.pod_subnet` or `cluster.service_subnet`.
        key: &'static str,
        /// The network.
        subnet: Ipv4Cidr,
        /// The first offending address.
        address: Ipv4Addr,
        /// How many node addresses are inside.
        count: usize,
        /// Lowest node address.
        first: Ipv4Addr,
        /// Highest node address.
        last: Ipv4Addr,
    },
}

classify!(Error {
    PodSubnetTooSmall { .. } => Config "pod_subnet_too_small";
    NoRoomForNodes { .. } => Config "pod_network_no_room";
    NodeMaskOutOfRange { .. } => Config "node_cidr_mask_out_of_range";
    PodSubnetTooWide { .. } => Config "pod_subnet_too_wide";
    ServiceSubnetSize { .. } => Config "service_subnet_size";
    SubnetsOverlap { .. } => Config "subnets_overlap";
    NodeAddressInSubnet { .. } => Config "node_address_in_subnet";
});

/// The pod and Service networks a cluster is formed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNetwork {
    /// `ClusterConfiguration.networking.podSubnet` (and flannel's `Network`).
    pub pod_subnet: Ipv4Cidr,
    /// `ClusterConfiguration.networking.serviceSubnet`.
    pub service_subnet: Ipv4Cidr,
    /// kube-controller-manager `node-cidr-mask-size`.
    pub node_cidr_mask_size: u8,
    /// Nodes the pod network was sized for (expected plus headroom).
    pub nodes_needed: u64,
    /// Nodes that fit.
    pub capacity: u64,
    /// Whether the pod network was sized automatically.
    pub sized_automatically: bool,
}

impl PodNetwork {
    /// Pod addresses each node's range offers (network and broadcast
    /// addresses excluded).
    pub fn pod_addresses_per_node(&self) -> u32 {
        (1u32 << (32 - u32::from(self.node_cidr_mask_size))).saturating_sub(2)
    }

    /// kubelet's `maxPods` when the default (110) would not fit the node's
    /// range; `None` when the default fits.
    pub fn max_pods_override(&self) -> Option<u32> {
        let fit = self.pod_addresses_per_node();
        (fit < KUBELET_DEFAULT_MAX_PODS).then_some(fit)
    }
}

/// Nodes the pod network must hold: the expected ones plus
/// `headroom_percent` of them (rounded up), and at least
/// [`MIN_HEADROOM_NODES`] extra.
pub fn nodes_needed(expected: u32, headroom_percent: u32) -> u64 {
    let expected = u64::from(expected);
    let headroom = (expected * u64::from(headroom_percent)).div_ceil(100);
    expected + headroom.max(u64::from(MIN_HEADROOM_NODES))
}

/// The narrowest prefix whose network holds `nodes` ranges of `/mask`
/// (never wider than `/0`).
pub fn prefix_for(nodes: u64, mask: u8) -> u8 {
    // Bits needed to number `nodes` ranges: ceil(log2(nodes)).
    let bits = match nodes {
        0 | 1 => 0,
        n => 64 - (n - 1).leading_zeros(),
    };
    let bits = u8::try_from(bits).unwrap_or(u8::MAX);
    mask.saturating_sub(bits)
}

/// The automatically sized pod network for `nodes` nodes: the aligned block
/// around [`DEFAULT_POD_BASE`] of the narrowest prefix that fits, no
/// narrower than /16; `None` when even 10.0.0.0/8 is too small.
pub fn auto_pod_subnet(nodes: u64, mask: u8) -> Option<Ipv4Cidr> {
    let prefix = prefix_for(nodes, mask).min(NARROWEST_AUTO_PREFIX);
    (prefix >= WIDEST_AUTO_PREFIX)
        .then(|| Ipv4Cidr::containing(DEFAULT_POD_BASE, prefix))
        .flatten()
}

/// Decides the pod and Service networks for a cluster of `expected_nodes`
/// whose nodes have `node_addresses`, from `[cluster]`. Refuses a pod
/// network that cannot hold the nodes, ranges that overlap each other, and
/// ranges that contain a node's address.
pub fn plan(
    cluster: &ClusterConfig,
    expected_nodes: u32,
    node_addresses: &[IpAddr],
) -> Result<PodNetwork, Error> {
    let mask = cluster.node_cidr_mask_size;
    if !NODE_MASK_RANGE.contains(&mask) {
        return Err(Error::NodeMaskOutOfRange { mask });
    }
    let service = cluster.service_subnet;
    if !SERVICE_PREFIX_RANGE.contains(&service.prefix()) {
        return Err(Error::ServiceSubnetSize { subnet: service });
    }
    let needed = nodes_needed(expected_nodes, cluster.node_headroom_percent);
    let (pod, auto) = match cluster.pod_subnet {
        Some(pod) => {
            if mask.saturating_sub(pod.prefix()) > MAX_NODE_BITS {
                return Err(Error::PodSubnetTooWide {
                    subnet: pod,
                    mask,
                    narrowest: mask - MAX_NODE_BITS,
                });
            }
            let capacity = pod.slices(mask);
            if capacity < needed {
                return Err(Error::PodSubnetTooSmall {
                    subnet: pod,
                    mask,
                    capacity,
                    needed,
                    expected: expected_nodes,
                    suggested_prefix: prefix_for(needed, mask),
                });
            }
            (pod, false)
        }
        None => match auto_pod_subnet(needed, mask) {
            Some(pod) if mask - pod.prefix() <= MAX_NODE_BITS => (pod, true),
            _ => {
                return Err(Error::NoRoomForNodes {
                    needed,
                    expected: expected_nodes,
                    mask,
                });
            }
        },
    };
    if pod.overlaps(&service) {
        return Err(Error::SubnetsOverlap {
            pod,
            pod_source: if auto {
                "sized automatically; set cluster.pod_subnet"
            } else {
                "cluster.pod_subnet"
            },
            service,
        });
    }
    let v4: Vec<Ipv4Addr> = node_addresses
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            // An IPv6 node address cannot lie in an IPv4 range.
            IpAddr::V6(_) => None,
        })
        .collect();
    check_nodes_outside("cluster.pod_subnet", pod, &v4)?;
    check_nodes_outside("cluster.service_subnet", service, &v4)?;
    Ok(PodNetwork {
        pod_subnet: pod,
        service_subnet: service,
        node_cidr_mask_size: mask,
        nodes_needed: needed,
        capacity: pod.slices(mask),
        sized_automatically: auto,
    })
}

fn check_nodes_outside(
    key: &'static str,
    subnet: Ipv4Cidr,
    nodes: &[Ipv4Addr],
) -> Result<(), Error> {
    let mut inside = nodes.iter().filter(|a| subnet.contains(**a));
    let Some(first_inside) = inside.next() else {
        return Ok(());
    };
    let count = 1 + inside.count();
    let first = nodes.iter().min().copied().unwrap_or(*first_inside);
    let last = nodes.iter().max().copied().unwrap_or(*first_inside);
    Err(Error::NodeAddressInSubnet {
        key,
        subnet,
        address: *first_inside,
        count,
        first,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_and_prefixes() {
        assert_eq!(nodes_needed(0, 25), 4);
        assert_eq!(nodes_needed(3, 25), 7);
        assert_eq!(nodes_needed(100, 25), 125);
        assert_eq!(nodes_needed(101, 25), 127);
        assert_eq!(nodes_needed(100, 0), 104);
        assert_eq!(prefix_for(1, 24), 24);
        assert_eq!(prefix_for(256, 24), 16);
        assert_eq!(prefix_for(257, 24), 15);
        assert_eq!(prefix_for(u64::MAX, 24), 0);
    }
}
