//! The fixture schema and its loader, which re-reads the file whenever it
//! changes on disk so that a test can inject a fault while the agent runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Deserialize;

/// Environment variable naming the JSON fixture file.
pub const FIXTURE_ENV: &str = "HPK8S_NVML_FIXTURE";

/// The whole simulated system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What `nvmlSystemGetDriverVersion` reports.
    #[serde(default = "default_driver_version")]
    pub driver_version: String,
    /// When set, `nvmlInit*` fails with this NVML return code (e.g. 9 =
    /// driver not loaded, 18 = library/driver version mismatch).
    #[serde(default)]
    pub init_error: Option<u32>,
    /// The GPUs, in index order.
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    /// XIDs delivered through event sets, relative to each set's creation.
    #[serde(default)]
    pub xid_timeline: Vec<Xid>,
    /// Every device call first sleeps this long: a driver call that hangs.
    #[serde(default)]
    pub call_delay_ms: u64,
}

/// One simulated GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Marketing name (`nvmlDeviceGetName`).
    #[serde(default = "default_name")]
    pub name: String,
    /// `GPU-…` UUID (`nvmlDeviceGetUUID`).
    pub uuid: String,
    /// `DDDDDDDD:BB:DD.F` bus id (`nvmlDeviceGetPciInfo_v3`).
    pub pci_bus_id: String,
    /// `(device id << 16) | vendor id`, 0x233010de for an H100 SXM.
    #[serde(default = "default_pci_device_id")]
    pub pci_device_id: u32,
    /// PCI subsystem id.
    #[serde(default = "default_pci_subsystem_id")]
    pub pci_subsystem_id: u32,
    /// The GPU fell off the bus: every call for it returns
    /// `NVML_ERROR_GPU_IS_LOST` (15), `nvmlDeviceGetHandleByIndex_v2` included.
    #[serde(default)]
    pub lost: bool,
    /// ECC error counters.
    #[serde(default)]
    pub ecc: Ecc,
    /// Retired pages by cause.
    #[serde(default)]
    pub retired_pages: RetiredPages,
    /// Pages waiting for a reboot to be retired.
    #[serde(default)]
    pub retired_pages_pending: bool,
    /// Row remapping state; `None` = not supported (pre-A100).
    #[serde(default = "default_remapped_rows")]
    pub remapped_rows: Option<RemappedRows>,
    /// GPU core temperature in °C.
    #[serde(default = "default_temperature")]
    pub temperature_c: u32,
    /// `nvmlClocksThrottleReason*` / `nvmlClocksEventReason*` bits.
    #[serde(default)]
    pub throttle_reasons: u64,
    /// PCIe link state.
    #[serde(default)]
    pub pcie: Pcie,
    /// NVLink link states by link index (`true` = active); links past the
    /// end are "not supported".
    #[serde(default)]
    pub nvlinks: Vec<bool>,
    /// NVLink error counters by link index (missing links count zero).
    #[serde(default)]
    pub nvlink_errors: Vec<NvLinkErrors>,
    /// `nvmlEventType*` bits this GPU supports (default SBE | DBE | XID).
    #[serde(default = "default_supported_events")]
    pub supported_events: u64,
}

/// ECC counters: totals, and optionally per memory location.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecc {
    /// Since the last driver reload.
    #[serde(default)]
    pub volatile: EccCounts,
    /// Over the GPU's lifetime.
    #[serde(default)]
    pub aggregate: EccCounts,
    /// Per-location counters for `nvmlDeviceGetMemoryErrorCounter`, keyed by
    /// `l1_cache`, `l2_cache`, `device_memory`, `register_file`,
    /// `texture_memory`, `texture_shm`, `cbu`, `sram`. A location not listed
    /// reports the totals for `device_memory` and zero elsewhere.
    #[serde(default)]
    pub by_location: BTreeMap<String, EccByCounter>,
}

/// Volatile and aggregate counts for one memory location.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EccByCounter {
    /// Since the last driver reload.
    #[serde(default)]
    pub volatile: EccCounts,
    /// Over the GPU's lifetime.
    #[serde(default)]
    pub aggregate: EccCounts,
}

/// Corrected (single-bit) and uncorrected (double-bit) counts.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EccCounts {
    /// Single-bit, corrected.
    #[serde(default)]
    pub corrected: u64,
    /// Double-bit, uncorrected.
    #[serde(default)]
    pub uncorrected: u64,
}

/// Retired pages by cause.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredPages {
    /// Retired after multiple single-bit errors.
    #[serde(default)]
    pub multiple_single_bit: Vec<RetiredPage>,
    /// Retired after a double-bit error.
    #[serde(default)]
    pub double_bit: Vec<RetiredPage>,
}

/// One retired page.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredPage {
    /// Physical page address.
    pub address: u64,
    /// Retirement time (seconds since the epoch).
    #[serde(default)]
    pub timestamp: u64,
}

/// `nvmlDeviceGetRemappedRows` values.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemappedRows {
    /// Rows remapped after correctable errors.
    #[serde(default)]
    pub corrected: u32,
    /// Rows remapped after uncorrectable errors.
    #[serde(default)]
    pub uncorrected: u32,
    /// A remapping waits for a GPU reset.
    #[serde(default)]
    pub pending: bool,
    /// A remapping failed: the GPU needs replacing.
    #[serde(default)]
    pub failure: bool,
}

/// PCIe link state.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pcie {
    /// Current generation.
    #[serde(default = "default_pcie_gen")]
    pub r#gen: u32,
    /// Current width (lanes).
    #[serde(default = "default_pcie_width")]
    pub width: u32,
    /// Maximum generation.
    #[serde(default = "default_pcie_gen")]
    pub max_gen: u32,
    /// Maximum width (lanes).
    #[serde(default = "default_pcie_width")]
    pub max_width: u32,
    /// PCIe replay counter.
    #[serde(default)]
    pub replay_counter: u32,
}

impl Default for Pcie {
    fn default() -> Self {
        Pcie {
            r#gen: default_pcie_gen(),
            width: default_pcie_width(),
            max_gen: default_pcie_gen(),
            max_width: default_pcie_width(),
            replay_counter: 0,
        }
    }
}

/// `nvmlDeviceGetNvLinkErrorCounter` values for one link.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvLinkErrors {
    /// Data link replays (`NVML_NVLINK_ERROR_DL_REPLAY`).
    #[serde(default)]
    pub replay: u64,
    /// Data link recoveries.
    #[serde(default)]
    pub recovery: u64,
    /// Flow-control CRC errors.
    #[serde(default)]
    pub crc_flit: u64,
    /// Data CRC errors.
    #[serde(default)]
    pub crc_data: u64,
    /// Data ECC errors.
    #[serde(default)]
    pub ecc_data: u64,
}

/// One scheduled XID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Xid {
    /// GPU index.
    pub gpu: u32,
    /// The XID number (e.g. 79 = fallen off the bus).
    pub xid: u64,
    /// Milliseconds after the event set's creation.
    pub at_ms: u64,
}

fn default_driver_version() -> String {
    "550.90.07".to_owned()
}
fn default_name() -> String {
    "NVIDIA H100 80GB HBM3".to_owned()
}
fn default_pci_device_id() -> u32 {
    0x2330_10de
}
fn default_pci_subsystem_id() -> u32 {
    0x16c1_10de
}
fn default_remapped_rows() -> Option<RemappedRows> {
    Some(RemappedRows::default())
}
fn default_temperature() -> u32 {
    35
}
fn default_pcie_gen() -> u32 {
    5
}
fn default_pcie_width() -> u32 {
    16
}
fn default_supported_events() -> u64 {
    0x1 | 0x2 | 0x8
}

/// Identity of the file version we parsed: a rewrite (in place or by rename)
/// changes at least one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

struct Cache {
    path: PathBuf,
    stamp: Stamp,
    fixture: Arc<Fixture>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Why the fixture could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// `HPK8S_NVML_FIXTURE` is not set: behaves like a host without a driver.
    NotConfigured,
    /// The file is missing or unreadable.
    Unreadable,
    /// The file is not valid fixture JSON.
    Invalid,
}

/// The current fixture, re-read when the file changed since the last call.
pub fn current() -> Result<Arc<Fixture>, LoadError> {
    let Some(path) = std::env::var_os(FIXTURE_ENV).map(PathBuf::from) else {
        return Err(LoadError::NotConfigured);
    };
    let meta = std::fs::metadata(&path).map_err(|e| {
        eprintln!("nvml-stub: cannot stat {}: {e}", path.display());
        LoadError::Unreadable
    })?;
    let stamp = Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    };
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = cache.as_ref()
        && c.path == path
        && c.stamp == stamp
    {
        return Ok(Arc::clone(&c.fixture));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        eprintln!("nvml-stub: cannot read {}: {e}", path.display());
        LoadError::Unreadable
    })?;
    let fixture: Fixture = serde_json::from_str(&text).map_err(|e| {
        eprintln!("nvml-stub: {} is not a valid fixture: {e}", path.display());
        LoadError::Invalid
    })?;
    let fixture = Arc::new(fixture);
    *cache = Some(Cache {
        path,
        stamp,
        fixture: Arc::clone(&fixture),
    });
    Ok(fixture)
}
