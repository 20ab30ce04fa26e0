//! Is this machine an EC2 instance? Asked before IMDS is ever contacted, so
//! that a laptop, a CI runner or an on-premises node never sends a packet to
//! the link-local metadata address.

use crate::host::Host;

/// DMI system vendor (Nitro instances).
pub const SYS_VENDOR: &str = "/sys/class/dmi/id/sys_vendor";
/// DMI board vendor (Nitro instances).
pub const BOARD_VENDOR: &str = "/sys/class/dmi/id/board_vendor";
/// Xen hypervisor UUID (older Xen-based instances): starts with `ec2`.
pub const HYPERVISOR_UUID: &str = "/sys/hypervisor/uuid";
/// The DMI vendor string of EC2.
const AMAZON_VENDOR: &str = "Amazon EC2";

/// Whether the host identifies itself as EC2 (read under the host root).
/// Unreadable files count as "no": detection must never fail a boot.
pub fn is_ec2(host: &Host) -> bool {
    let read = |path: &str| {
        host.read_string_opt(path)
            .inspect_err(|e| tracing::debug!("EC2 detection: {e}"))
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
    };
    let vendor = [SYS_VENDOR, BOARD_VENDOR]
        .iter()
        .any(|p| read(p).is_some_and(|v| v == AMAZON_VENDOR));
    vendor
        || read(HYPERVISOR_UUID)
            .is_some_and(|u| u.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("ec2")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FileMode, FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    fn host(files: &[(&str, &str)]) -> (tempfile::TempDir, Host) {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(
            d.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        for (p, c) in files {
            h.write_atomic(p, c.as_bytes(), FileMode::CONFIG).unwrap();
        }
        (d, h)
    }

    #[test]
    fn detection() {
        assert!(!is_ec2(&host(&[]).1));
        assert!(!is_ec2(&host(&[(SYS_VENDOR, "QEMU\n")]).1));
        assert!(is_ec2(&host(&[(SYS_VENDOR, "Amazon EC2\n")]).1));
        assert!(is_ec2(&host(&[(BOARD_VENDOR, "Amazon EC2\n")]).1));
        assert!(is_ec2(
            &host(&[(HYPERVISOR_UUID, "ec2e1916-9099-7caf-fd21-012345abcdef\n")]).1
        ));
        assert!(is_ec2(
            &host(&[(HYPERVISOR_UUID, "EC2E1916-9099-7CAF-FD21-012345ABCDEF\n")]).1
        ));
        assert!(!is_ec2(&host(&[(HYPERVISOR_UUID, "4f1a-...\n")]).1));
    }
}
