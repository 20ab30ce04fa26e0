//! Fixtures for the NVML stub (`tests/nvml-stub`, a fake `libnvidia-ml.so`):
//! a builder for the JSON it reads from `HPK8S_NVML_FIXTURE` and the path of
//! the built library. Rewriting the fixture while the stub is loaded changes
//! what it reports from the next call on.
//!
//! ```no_run
//! use harness::nvml::{NvmlFixture, FakeGpu};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("nvml.json");
//! NvmlFixture::new()
//!     .gpus((0..8).map(FakeGpu::h100))
//!     .xid(3, 79, 200)
//!     .write(&path)
//!     .unwrap();
//! // env HPK8S_NVML_FIXTURE=path, then Nvml::builder().lib_path(stub_path()).init()
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Environment variable the stub reads the fixture path from.
pub const FIXTURE_ENV: &str = "HPK8S_NVML_FIXTURE";

/// File name of the built stub library.
const STUB_FILE: &str = "libnvml_stub.so";

/// Throttle reason bits (`nvmlClocksThrottleReason*`).
pub mod throttle {
    /// GPU idle.
    pub const GPU_IDLE: u64 = 0x1;
    /// Software power cap (normal under load).
    pub const SW_POWER_CAP: u64 = 0x4;
    /// Hardware slowdown.
    pub const HW_SLOWDOWN: u64 = 0x8;
    /// Software thermal slowdown.
    pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
    /// Hardware thermal slowdown.
    pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
    /// Hardware power brake slowdown.
    pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
}

/// The built stub: `$CARGO_TARGET_DIR` (or `target/`)`/debug/libnvml_stub.so`.
/// `scripts/test.sh` builds the whole workspace before running tests.
pub fn stub_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let lib = target.join("debug").join(STUB_FILE);
    assert!(
        lib.exists(),
        "{} is missing: run `cargo build -p nvml-stub` (or scripts/test.sh) first",
        lib.display()
    );
    lib
}

/// The whole simulated system (the stub's fixture schema).
#[derive(Debug, Clone, Serialize)]
pub struct NvmlFixture {
    driver_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_error: Option<u32>,
    gpus: Vec<FakeGpu>,
    xid_timeline: Vec<ScheduledXid>,
    #[serde(skip_serializing_if = "is_zero")]
    call_delay_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// An XID the stub delivers through event sets `at_ms` after their creation.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScheduledXid {
    /// GPU index.
    pub gpu: u32,
    /// XID number.
    pub xid: u64,
    /// Milliseconds after the event set was created.
    pub at_ms: u64,
}

impl Default for NvmlFixture {
    fn default() -> Self {
        Self::new()
    }
}

impl NvmlFixture {
    /// No GPUs, driver 550.90.07.
    pub fn new() -> Self {
        NvmlFixture {
            driver_version: "550.90.07".to_owned(),
            init_error: None,
            gpus: Vec::new(),
            xid_timeline: Vec::new(),
            call_delay_ms: 0,
        }
    }

    /// Sets the driver version string.
    pub fn driver_version(mut self, version: &str) -> Self {
        version.clone_into(&mut self.driver_version);
        self
    }

    /// Makes `nvmlInit` fail with this NVML return code.
    pub fn init_error(mut self, code: u32) -> Self {
        self.init_error = Some(code);
        self
    }

    /// Adds one GPU (indices follow insertion order).
    pub fn gpu(mut self, gpu: FakeGpu) -> Self {
        self.gpus.push(gpu);
        self
    }

    /// Adds several GPUs.
    pub fn gpus(mut self, gpus: impl IntoIterator<Item = FakeGpu>) -> Self {
        self.gpus.extend(gpus);
        self
    }

    /// Makes every device call sleep `ms` first (a hanging driver call).
    pub fn call_delay_ms(mut self, ms: u64) -> Self {
        self.call_delay_ms = ms;
        self
    }

    /// Schedules XID `xid` on GPU `gpu`, `at_ms` after event-set creation.
    pub fn xid(mut self, gpu: u32, xid: u64, at_ms: u64) -> Self {
        self.xid_timeline.push(ScheduledXid { gpu, xid, at_ms });
        self
    }

    /// Mutable access to GPU `index`, to inject a fault into a fixture that is
    /// then written again.
    pub fn gpu_mut(&mut self, index: usize) -> &mut FakeGpu {
        &mut self.gpus[index]
    }

    /// The fixture as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the fixture atomically (temp file + rename), so a stub that
    /// re-reads it never sees half a file.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json())?;
        std::fs::rename(&tmp, path)
    }
}

/// One simulated GPU (healthy unless a fault is injected).
#[derive(Debug, Clone, Serialize)]
pub struct FakeGpu {
    name: String,
    uuid: String,
    pci_bus_id: String,
    pci_device_id: u32,
    lost: bool,
    ecc: Ecc,
    retired_pages: RetiredPages,
    retired_pages_pending: bool,
    remapped_rows: Option<RemappedRows>,
    temperature_c: u32,
    throttle_reasons: u64,
    pcie: Pcie,
    nvlinks: Vec<bool>,
    nvlink_errors: Vec<NvLinkErrors>,
    supported_events: u64,
}

/// NVLink error counters of one link (`nvmlDeviceGetNvLinkErrorCounter`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NvLinkErrors {
    /// Data link replays.
    pub replay: u64,
    /// Data link recoveries.
    pub recovery: u64,
    /// Flow-control CRC errors.
    pub crc_flit: u64,
    /// Data CRC errors.
    pub crc_data: u64,
    /// Data ECC errors.
    pub ecc_data: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct EccCounts {
    corrected: u64,
    uncorrected: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Ecc {
    volatile: EccCounts,
    aggregate: EccCounts,
    by_location: BTreeMap<String, EccByCounter>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct EccByCounter {
    volatile: EccCounts,
    aggregate: EccCounts,
}

/// One retired page as the stub reports it.
#[derive(Debug, Clone, Copy, Serialize)]
struct RetiredPage {
    address: u64,
    timestamp: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct RetiredPages {
    multiple_single_bit: Vec<RetiredPage>,
    double_bit: Vec<RetiredPage>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct RemappedRows {
    corrected: u32,
    uncorrected: u32,
    pending: bool,
    failure: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Pcie {
    r#gen: u32,
    width: u32,
    max_gen: u32,
    max_width: u32,
    replay_counter: u32,
}

/// Retirement cause for [`FakeGpu::retired_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireCause {
    /// Multiple single-bit ECC errors.
    MultipleSingleBit,
    /// A double-bit ECC error.
    DoubleBit,
}

impl FakeGpu {
    /// A healthy H100 SXM at `index`: unique UUID and bus id, PCIe gen 5 x16,
    /// 18 active NVLinks, 35 °C, no errors.
    pub fn h100(index: u32) -> Self {
        FakeGpu {
            name: "NVIDIA H100 80GB HBM3".to_owned(),
            uuid: format!("GPU-5a1c0d2e-0000-4000-8000-{index:012x}"),
            pci_bus_id: format!("00000000:{:02X}:00.0", 0x53 + index * 0x10),
            pci_device_id: 0x2330_10de,
            lost: false,
            ecc: Ecc::default(),
            retired_pages: RetiredPages::default(),
            retired_pages_pending: false,
            remapped_rows: Some(RemappedRows::default()),
            temperature_c: 35,
            throttle_reasons: 0,
            pcie: Pcie {
                r#gen: 5,
                width: 16,
                max_gen: 5,
                max_width: 16,
                replay_counter: 0,
            },
            nvlinks: vec![true; 18],
            nvlink_errors: Vec::new(),
            supported_events: 0x1 | 0x2 | 0x8,
        }
    }

    /// Overrides the marketing name.
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// Overrides the UUID.
    pub fn uuid(mut self, uuid: &str) -> Self {
        uuid.clone_into(&mut self.uuid);
        self
    }

    /// Overrides the PCI bus id (`DDDDDDDD:BB:DD.F`).
    pub fn pci_bus_id(mut self, bus_id: &str) -> Self {
        bus_id.clone_into(&mut self.pci_bus_id);
        self
    }

    /// The GPU fell off the bus: every call for it returns `GpuLost`.
    pub fn lost(mut self, lost: bool) -> Self {
        self.lost = lost;
        self
    }

    /// Volatile ECC counts (since driver load).
    pub fn ecc_volatile(mut self, corrected: u64, uncorrected: u64) -> Self {
        self.ecc.volatile = EccCounts {
            corrected,
            uncorrected,
        };
        self
    }

    /// Aggregate ECC counts (lifetime).
    pub fn ecc_aggregate(mut self, corrected: u64, uncorrected: u64) -> Self {
        self.ecc.aggregate = EccCounts {
            corrected,
            uncorrected,
        };
        self
    }

    /// ECC counts at one memory location for `nvmlDeviceGetMemoryErrorCounter`
    /// (`l1_cache`, `l2_cache`, `device_memory`, `register_file`,
    /// `texture_memory`, `texture_shm`, `cbu`, `sram`), each as
    /// (corrected, uncorrected). Unlisted locations report the totals for
    /// `device_memory` and zero elsewhere.
    pub fn ecc_at(mut self, location: &str, volatile: (u64, u64), aggregate: (u64, u64)) -> Self {
        let counts = |(corrected, uncorrected)| EccCounts {
            corrected,
            uncorrected,
        };
        self.ecc.by_location.insert(
            location.to_owned(),
            EccByCounter {
                volatile: counts(volatile),
                aggregate: counts(aggregate),
            },
        );
        self
    }

    /// Adds a retired page.
    pub fn retired_page(mut self, cause: RetireCause, address: u64, timestamp: u64) -> Self {
        let page = RetiredPage { address, timestamp };
        match cause {
            RetireCause::MultipleSingleBit => self.retired_pages.multiple_single_bit.push(page),
            RetireCause::DoubleBit => self.retired_pages.double_bit.push(page),
        }
        self
    }

    /// Pages waiting for a reboot to retire.
    pub fn retired_pages_pending(mut self, pending: bool) -> Self {
        self.retired_pages_pending = pending;
        self
    }

    /// Row remapping state.
    pub fn remapped_rows(
        mut self,
        corrected: u32,
        uncorrected: u32,
        pending: bool,
        failure: bool,
    ) -> Self {
        self.remapped_rows = Some(RemappedRows {
            corrected,
            uncorrected,
            pending,
            failure,
        });
        self
    }

    /// No row remapping support (pre-A100): the call returns NotSupported.
    pub fn without_row_remapping(mut self) -> Self {
        self.remapped_rows = None;
        self
    }

    /// Core temperature in °C.
    pub fn temperature(mut self, celsius: u32) -> Self {
        self.temperature_c = celsius;
        self
    }

    /// Throttle reason bits (see [`throttle`]).
    pub fn throttle_reasons(mut self, bits: u64) -> Self {
        self.throttle_reasons = bits;
        self
    }

    /// Current PCIe generation and width.
    pub fn pcie_current(mut self, generation: u32, width: u32) -> Self {
        self.pcie.r#gen = generation;
        self.pcie.width = width;
        self
    }

    /// Maximum PCIe generation and width.
    pub fn pcie_max(mut self, generation: u32, width: u32) -> Self {
        self.pcie.max_gen = generation;
        self.pcie.max_width = width;
        self
    }

    /// PCIe replay counter.
    pub fn pcie_replays(mut self, count: u32) -> Self {
        self.pcie.replay_counter = count;
        self
    }

    /// NVLink states by link index (`true` = active).
    pub fn nvlinks(mut self, links: impl IntoIterator<Item = bool>) -> Self {
        self.nvlinks = links.into_iter().collect();
        self
    }

    /// Marks one NVLink inactive.
    pub fn nvlink_down(mut self, link: usize) -> Self {
        if let Some(l) = self.nvlinks.get_mut(link) {
            *l = false;
        }
        self
    }

    /// Error counters of one NVLink.
    pub fn nvlink_errors(mut self, link: usize, errors: NvLinkErrors) -> Self {
        if self.nvlink_errors.len() <= link {
            self.nvlink_errors.resize(link + 1, NvLinkErrors::default());
        }
        self.nvlink_errors[link] = errors;
        self
    }

    /// Supported event type bits (`nvmlEventType*`).
    pub fn supported_events(mut self, bits: u64) -> Self {
        self.supported_events = bits;
        self
    }
}

/// Environment variable marking the child process [`run_with_fixture`] starts.
const CHILD_ENV: &str = "HPK8S_NVML_STUB_CHILD";

/// Runs the calling test in a child process whose `HPK8S_NVML_FIXTURE` names
/// `fixture` (written to a temp dir).
///
/// The stub is loaded once per process and reads its fixture path from the
/// environment, which a multi-threaded test binary cannot change safely; so
/// each test re-runs itself (`current_exe <test> --exact`) with the variable
/// set. In the parent this returns `None` after asserting that the child
/// passed; in the child it returns `Some(fixture path)` and the test body
/// runs. `test` is the test function's name.
#[allow(clippy::disallowed_methods)] // test harness launches real components
pub fn run_with_fixture(test: &str, fixture: &NvmlFixture) -> Option<PathBuf> {
    if std::env::var_os(CHILD_ENV).is_some() {
        let path = std::env::var_os(FIXTURE_ENV).map(PathBuf::from);
        assert!(
            path.is_some(),
            "{CHILD_ENV} is set but {FIXTURE_ENV} is not"
        );
        return path;
    }
    let dir = tempfile::tempdir().expect("temp dir for the NVML fixture");
    let path = dir.path().join("nvml.json");
    fixture.write(&path).expect("write the NVML fixture");
    let exe = std::env::current_exe().expect("path of the test binary");
    let out = std::process::Command::new(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(FIXTURE_ENV, &path)
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} failed against the NVML stub ({}):\n{stdout}\n{stderr}",
        out.status
    );
    None
}
