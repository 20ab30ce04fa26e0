//! Finding the instance-store NVMe namespaces in sysfs. EBS volumes are NVMe
//! controllers too; only the model string tells them apart, so that is the
//! one thing we trust.

use std::path::{Path, PathBuf};

use crate::host::{FsError, Host};

/// One directory per NVMe controller.
pub const SYS_CLASS_NVME: &str = "/sys/class/nvme";
/// One directory per block device, with one subdirectory per partition.
pub const SYS_BLOCK: &str = "/sys/block";
/// Model of an instance-store controller.
pub const INSTANCE_STORE_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
/// Model of an EBS controller (never touched).
pub const EBS_MODEL: &str = "Amazon Elastic Block Store";

/// A namespace (block device) of an instance-store controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Controller name, e.g. `nvme1`.
    pub controller: String,
    /// Block device name, e.g. `nvme1n1`.
    pub name: String,
}

impl Namespace {
    /// The device node, e.g. `/dev/nvme1n1`.
    pub fn dev(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }
}

/// What sysfs shows: instance-store namespaces (in controller order) and the
/// other NVMe controllers left alone (EBS and unknown models).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Instance-store namespaces.
    pub instance_store: Vec<Namespace>,
    /// `(controller, model)` of every other controller.
    pub others: Vec<(String, String)>,
}

/// Reads the NVMe inventory under the host root; empty when the kernel has
/// no NVMe driver (no `/sys/class/nvme`).
pub fn inventory(host: &Host) -> Result<Inventory, FsError> {
    let mut controllers: Vec<String> = host
        .list_dir(SYS_CLASS_NVME)?
        .into_iter()
        .filter(|c| numbered(c, "nvme").is_some())
        .collect();
    // nvme10 after nvme9, not after nvme1.
    controllers.sort_by_key(|c| numbered(c, "nvme"));
    let mut inv = Inventory::default();
    for ctrl in controllers {
        let dir = Path::new(SYS_CLASS_NVME).join(&ctrl);
        let model = host
            .read_string_opt(dir.join("model"))?
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        if model != INSTANCE_STORE_MODEL {
            inv.others.push((ctrl, model));
            continue;
        }
        let mut namespaces: Vec<String> = host
            .list_dir(&dir)?
            .into_iter()
            .filter_map(|entry| block_name(&ctrl, &entry))
            .collect();
        namespaces.sort_by_key(|n| namespace_number(n));
        namespaces.dedup();
        inv.instance_store
            .extend(namespaces.into_iter().map(|name| Namespace {
                controller: ctrl.clone(),
                name,
            }));
    }
    Ok(inv)
}

/// Whether the block device `name` has partitions (`/sys/block/nvme1n1/nvme1n1p1`).
pub fn has_partitions(host: &Host, name: &str) -> Result<bool, FsError> {
    let prefix = format!("{name}p");
    Ok(host
        .list_dir(Path::new(SYS_BLOCK).join(name))?
        .iter()
        .any(|e| numbered(e, &prefix).is_some()))
}

/// `nvme12` → 12 for prefix `nvme`.
fn numbered(s: &str, prefix: &str) -> Option<u32> {
    let digits = s.strip_prefix(prefix)?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The block device named by a controller's sysfs entry: `nvme1n1`, or
/// `nvme1c1n1` (native multipath names the path, the block device is
/// `nvme1n1`); other entries are not namespaces.
fn block_name(ctrl: &str, entry: &str) -> Option<String> {
    let rest = entry.strip_prefix(ctrl)?;
    let rest = match rest.strip_prefix('c') {
        Some(r) => {
            let n = r.find('n')?;
            numbered(&r[..n], "")?;
            &r[n..]
        }
        None => rest,
    };
    numbered(rest, "n")?;
    let instance = ctrl.strip_prefix("nvme")?;
    // With multipath the subsystem, not the controller, numbers the device;
    // on EC2 each instance-store controller is its own subsystem.
    Some(format!("nvme{instance}{rest}"))
}

fn namespace_number(name: &str) -> u32 {
    name.rsplit_once('n')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_entries() {
        assert_eq!(block_name("nvme1", "nvme1n1").as_deref(), Some("nvme1n1"));
        assert_eq!(block_name("nvme1", "nvme1c1n1").as_deref(), Some("nvme1n1"));
        assert_eq!(block_name("nvme1", "nvme1n2").as_deref(), Some("nvme1n2"));
        assert_eq!(block_name("nvme1", "model"), None);
        assert_eq!(block_name("nvme1", "nvme10n1"), None);
        assert_eq!(block_name("nvme1", "nvme1n"), None);
        assert_eq!(numbered("nvme12", "nvme"), Some(12));
        assert_eq!(numbered("nvme-fabrics", "nvme"), None);
    }
}
