//! What a probe saw: per GPU, every health signal NVML gives, each either a
//! value or the reason it is unavailable (a call the library lacks, a
//! `NotSupported` answer). An unavailable signal is never a fault.

use serde::Serialize;

/// A signal's value, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal<T> {
    /// The value read.
    Value(T),
    /// Not available here: the library lacks the call, or the GPU does not
    /// support it. Says which.
    Unavailable(String),
}

impl<T> Signal<T> {
    /// The value, if available.
    pub fn value(&self) -> Option<&T> {
        match self {
            Signal::Value(v) => Some(v),
            Signal::Unavailable(_) => None,
        }
    }
}

/// Row remapping state (A100 and newer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RowRemap {
    /// Rows remapped after correctable errors.
    pub corrected: u64,
    /// Rows remapped after uncorrectable errors.
    pub uncorrected: u64,
    /// A remapping waits for a GPU reset.
    pub pending: bool,
    /// A remapping failed.
    pub failure: bool,
}

/// PCIe link state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PcieLink {
    /// Current generation.
    pub generation: u32,
    /// Current width (lanes).
    pub width: u32,
    /// Maximum generation.
    pub max_generation: u32,
    /// Maximum width.
    pub max_width: u32,
}

/// NVLink state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NvLinks {
    /// Links the GPU has (NVML field 91).
    pub count: u32,
    /// Links that are not active.
    pub inactive: Vec<u32>,
    /// Sum of the data-link error counters over every link (replay,
    /// recovery, CRC flit, CRC data).
    pub errors: u64,
}

/// ECC counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ecc {
    /// Uncorrected errors since the driver loaded (double-bit).
    pub volatile_uncorrected: u64,
    /// Corrected errors since the driver loaded (single-bit).
    pub volatile_corrected: u64,
    /// Uncorrected errors over the GPU's life.
    pub aggregate_uncorrected: u64,
    /// Corrected errors over the GPU's life.
    pub aggregate_corrected: u64,
}

/// Every signal of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuSignals {
    /// NVML index.
    pub index: u32,
    /// `GPU-…`, when readable.
    pub uuid: Option<String>,
    /// Product name.
    pub name: Option<String>,
    /// PCI bus id `DDDDDDDD:BB:DD.F`.
    pub pci_bus_id: Option<String>,
    /// The GPU fell off the bus (`GpuLost`).
    pub lost: bool,
    /// NVML could not open or read this GPU for another reason.
    pub probe_error: Option<String>,
    /// ECC counters.
    pub ecc: Signal<Ecc>,
    /// Pages retired (single- plus double-bit causes).
    pub retired_pages: Signal<u64>,
    /// Pages waiting for a reboot to be retired.
    pub retired_pages_pending: Signal<bool>,
    /// Row remapping.
    pub row_remap: Signal<RowRemap>,
    /// Core temperature, °C.
    pub temperature_c: Signal<u32>,
    /// Clock-event (throttle) reason bits.
    pub throttle_reasons: Signal<u64>,
    /// PCIe link.
    pub pcie: Signal<PcieLink>,
    /// PCIe replay counter.
    pub pcie_replays: Signal<u64>,
    /// NVLink.
    pub nvlink: Signal<NvLinks>,
    /// Power draw, milliwatts.
    pub power_mw: Signal<u32>,
}

/// The state of the NVIDIA management library itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Library {
    /// Loaded and initialised; the driver version.
    Loaded(String),
    /// No library or driver: no NVIDIA driver on this node.
    NoDriver(String),
    /// The library loaded but failed to initialise, or a call failed for
    /// another reason: the probe could not look.
    Failed(String),
}

/// One probe of the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The library's state.
    pub library: Library,
    /// NVIDIA GPUs on the PCI bus (vendor 0x10de, display/3D class).
    pub pci_gpus: u32,
    /// EFA adapters seen.
    pub efa_devices: u32,
    /// Instance type, when known.
    pub instance_type: Option<String>,
    /// GPUs the instance type has, when it is in the table.
    pub expected_gpus: Option<u32>,
    /// EFA adapters the instance type has, when it is in the table.
    pub expected_efa: Option<u32>,
    /// GPUs NVML counts (0 when it could not count).
    pub nvml_gpus: u32,
    /// Per GPU.
    pub gpus: Vec<GpuSignals>,
    /// How long the probe took, microseconds.
    pub duration_us: u64,
}
