//! Cheap presence checks for the accelerators and fabrics a node carries.
//!
//! Hardware-specific work (the NVIDIA container runtime, memory locking for
//! EFA, node labels) is guarded by what the PCI bus shows under the host
//! root, never by an instance-type list: a new instance type must work
//! without a code change, and a node whose GPUs fell off the bus must not be
//! configured as if they were there.

use std::path::Path;

use serde::Serialize;

use crate::host::{FsError, Host};

/// Every PCI function the kernel knows, one directory each.
pub const PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// RDMA devices (EFA registers here as `rdmap…` or `efa_…`).
pub const INFINIBAND: &str = "/sys/class/infiniband";

/// NVIDIA's PCI vendor id.
const VENDOR_NVIDIA: u32 = 0x10de;
/// Amazon's PCI vendor id (EFA, ENA, NVMe).
const VENDOR_AMAZON: u32 = 0x1d0f;
/// PCI device ids of the EFA generations (ENA and NVMe share the vendor id).
const EFA_DEVICE_IDS: [u32; 4] = [0xefa0, 0xefa1, 0xefa2, 0xefa3];
/// PCI base class "display controller" (VGA 0x0300, 3D 0x0302): GPUs. An
/// NVSwitch is a bridge (0x06) and a GPU's HDMI audio function is 0x04, so
/// counting display functions only counts GPUs.
const CLASS_DISPLAY: u32 = 0x03;

/// What accelerators and fabric adapters the node has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Hardware {
    /// NVIDIA GPUs (display-class PCI functions of vendor 0x10de).
    pub nvidia_gpus: u32,
    /// EFA adapters.
    pub efa_devices: u32,
    /// PCI device id of the first NVIDIA GPU (the model), when there is one.
    pub gpu_device_id: Option<u32>,
}

/// A GPU model's names in node labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuModel {
    /// `nvidia.com/gpu.product`, as NVIDIA's GPU feature discovery writes
    /// it (the NVML name with `-` for spaces).
    pub product: &'static str,
    /// `k8s.amazonaws.com/accelerator`, the label the cluster autoscaler's
    /// AWS provider reads to scale GPU groups from zero.
    pub accelerator: &'static str,
}

/// GPUs of AWS instance families: PCI device id, instance family, names.
const GPU_MODELS: [(u32, &str, GpuModel); 11] = [
    (
        0x2330,
        "p5",
        GpuModel {
            product: "NVIDIA-H100-80GB-HBM3",
            accelerator: "nvidia-h100",
        },
    ),
    (
        0x2335,
        "p5e",
        GpuModel {
            product: "NVIDIA-H200",
            accelerator: "nvidia-h200",
        },
    ),
    (
        0x2335,
        "p5en",
        GpuModel {
            product: "NVIDIA-H200",
            accelerator: "nvidia-h200",
        },
    ),
    (
        0x20b0,
        "p4d",
        GpuModel {
            product: "NVIDIA-A100-SXM4-40GB",
            accelerator: "nvidia-tesla-a100",
        },
    ),
    (
        0x20b2,
        "p4de",
        GpuModel {
            product: "NVIDIA-A100-SXM4-80GB",
            accelerator: "nvidia-a100-80gb",
        },
    ),
    (
        0x2237,
        "g5",
        GpuModel {
            product: "NVIDIA-A10G",
            accelerator: "nvidia-a10g",
        },
    ),
    (
        0x27b8,
        "g6",
        GpuModel {
            product: "NVIDIA-L4",
            accelerator: "nvidia-l4",
        },
    ),
    (
        0x26b9,
        "g6e",
        GpuModel {
            product: "NVIDIA-L40S",
            accelerator: "nvidia-l40s",
        },
    ),
    (
        0x1eb8,
        "g4dn",
        GpuModel {
            product: "Tesla-T4",
            accelerator: "nvidia-tesla-t4",
        },
    ),
    (
        0x1db1,
        "p3",
        GpuModel {
            product: "Tesla-V100-SXM2-16GB",
            accelerator: "nvidia-tesla-v100",
        },
    ),
    (
        0x2901,
        "p6-b200",
        GpuModel {
            product: "NVIDIA-B200",
            accelerator: "nvidia-b200",
        },
    ),
];

/// The GPU model, from the PCI device id when known, else from the instance
/// type's family (`p5.48xlarge` → `p5`).
pub fn gpu_model(device_id: Option<u32>, instance_type: Option<&str>) -> Option<GpuModel> {
    if let Some(id) = device_id
        && let Some((_, _, m)) = GPU_MODELS.iter().find(|(d, _, _)| *d == id)
    {
        return Some(*m);
    }
    let family = instance_type?.trim_start_matches("ml.").split('.').next()?;
    GPU_MODELS
        .iter()
        .find(|(_, f, _)| *f == family)
        .map(|(_, _, m)| *m)
}

/// One PCI function's identifying registers.
struct PciFunction {
    vendor: Option<u32>,
    device: Option<u32>,
    class: Option<u32>,
}

impl Hardware {
    /// Looks at the host's PCI bus (and RDMA devices). A host without
    /// `/sys` (an image being prepared) simply has no hardware.
    pub fn detect(host: &Host) -> Result<Hardware, FsError> {
        let mut hw = Hardware::default();
        let mut efa_pci = 0u32;
        for name in host.list_dir(PCI_DEVICES)? {
            let f = pci_function(host, &Path::new(PCI_DEVICES).join(&name))?;
            match f.vendor {
                Some(VENDOR_NVIDIA) if f.class.is_some_and(|c| c >> 16 == CLASS_DISPLAY) => {
                    hw.nvidia_gpus += 1;
                    hw.gpu_device_id = hw.gpu_device_id.or(f.device);
                }
                Some(VENDOR_AMAZON) if f.device.is_some_and(|d| EFA_DEVICE_IDS.contains(&d)) => {
                    efa_pci += 1;
                }
                _ => {}
            }
        }
        // The same adapters seen from the RDMA side; a sysfs without the PCI
        // tree (some containers) still shows these.
        let mut efa_rdma = 0u32;
        for name in host.list_dir(INFINIBAND)? {
            let dev = Path::new(INFINIBAND).join(&name);
            let vendor = read_hex(host, &dev.join("device/vendor"))?;
            let is_efa = match vendor {
                Some(v) => v == VENDOR_AMAZON,
                None => name.starts_with("efa") || name.starts_with("rdmap"),
            };
            if is_efa {
                efa_rdma += 1;
            }
        }
        hw.efa_devices = efa_pci.max(efa_rdma);
        Ok(hw)
    }
}

fn pci_function(host: &Host, dir: &Path) -> Result<PciFunction, FsError> {
    Ok(PciFunction {
        vendor: read_hex(host, &dir.join("vendor"))?,
        device: read_hex(host, &dir.join("device"))?,
        class: read_hex(host, &dir.join("class"))?,
    })
}

/// Reads a sysfs register such as `0x10de\n`; `None` when absent or garbled.
fn read_hex(host: &Host, path: &Path) -> Result<Option<u32>, FsError> {
    Ok(host.read_string_opt(path)?.and_then(|s| {
        let s = s.trim();
        u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
    }))
}

#[cfg(test)]
mod gpu_model_tests {
    use super::*;

    #[test]
    fn gpu_models_by_device_then_family() {
        assert_eq!(
            gpu_model(Some(0x2330), None).unwrap().product,
            "NVIDIA-H100-80GB-HBM3"
        );
        assert_eq!(
            gpu_model(None, Some("ml.g5.8xlarge")).unwrap().accelerator,
            "nvidia-a10g"
        );
        assert_eq!(
            gpu_model(Some(0x9999), Some("p4de.24xlarge"))
                .unwrap()
                .product,
            "NVIDIA-A100-SXM4-80GB"
        );
        assert!(gpu_model(Some(0x9999), Some("m5.large")).is_none());
        assert!(gpu_model(None, None).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    fn pci(root: &Path, addr: &str, vendor: &str, device: &str, class: &str) {
        let d = root.join("sys/bus/pci/devices").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
        std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
    }

    fn host(root: &Path) -> Host {
        Host::new(
            root,
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        )
    }

    #[test]
    fn counts_gpus_not_nvswitches_or_audio_and_efa_by_device_id() {
        let d = tempfile::tempdir().unwrap();
        pci(d.path(), "0000:10:1c.0", "0x10de", "0x2330", "0x030200");
        pci(d.path(), "0000:10:1d.0", "0x10de", "0x2330", "0x030200");
        pci(d.path(), "0000:10:1e.0", "0x10de", "0x1af1", "0x068000"); // NVSwitch
        pci(d.path(), "0000:10:1f.0", "0x10de", "0x22ba", "0x040300"); // HDMI audio
        pci(d.path(), "0000:20:00.0", "0x1d0f", "0xefa1", "0x020000"); // EFA
        pci(d.path(), "0000:21:00.0", "0x1d0f", "0xec20", "0x020000"); // ENA
        pci(d.path(), "0000:22:00.0", "0x1d0f", "0xcd01", "0x010802"); // NVMe
        let hw = Hardware::detect(&host(d.path())).unwrap();
        assert_eq!(
            hw,
            Hardware {
                nvidia_gpus: 2,
                efa_devices: 1,
                gpu_device_id: Some(0x2330),
            }
        );
    }

    #[test]
    fn no_sysfs_is_no_hardware_and_rdma_side_counts_efa_only() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            Hardware::detect(&host(d.path())).unwrap(),
            Hardware::default()
        );
        let ib = d.path().join("sys/class/infiniband");
        std::fs::create_dir_all(ib.join("rdmap16s27")).unwrap();
        std::fs::create_dir_all(ib.join("mlx5_0/device")).unwrap();
        std::fs::write(ib.join("mlx5_0/device/vendor"), "0x15b3\n").unwrap();
        let hw = Hardware::detect(&host(d.path())).unwrap();
        assert_eq!(hw.efa_devices, 1);
        assert_eq!(hw.nvidia_gpus, 0);
    }
}
