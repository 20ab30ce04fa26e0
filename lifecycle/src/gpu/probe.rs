//! One probe of the node's GPUs through NVML (nvml-wrapper, which loads
//! `libnvidia-ml` at run time). Every call that the library lacks
//! (`FailedToLoadSymbol`) or the GPU does not support (`NotSupported`,
//! `FunctionNotFound`) makes that signal unavailable, never a fault; a GPU
//! answering `GpuLost` is lost. Field values (row remapping, the NVLink
//! link count) are read through `nvmlDeviceGetFieldValues`, each value
//! with its own result: the raw row-remapping call panics in the bindings
//! when the library lacks it.
//!
//! NVML calls block (a sick driver may hang them): callers run the probe
//! on a thread of its own and give up after `gpu_health.probe_timeout_secs`.

use std::ffi::OsStr;
use std::time::Instant;

use nvml_wrapper::Device;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;

use super::signals::{Ecc, GpuSignals, Library, NvLinks, PcieLink, RowRemap, Signal, Snapshot};
use crate::config::GpuHealthConfig;
use crate::hardware::Hardware;

/// NVML field ids (`nvml_wrapper::sys_exports::field_id`).
const FI_NVLINK_LINK_COUNT: u32 = 91;
const FI_REMAPPED_COR: u32 = 142;
const FI_REMAPPED_UNC: u32 = 143;
const FI_REMAPPED_PENDING: u32 = 144;
const FI_REMAPPED_FAILURE: u32 = 145;
/// The most NVLinks a GPU has (NVML's `NVML_NVLINK_MAX_LINKS`).
const MAX_NVLINKS: u32 = 18;

/// The library, opened once (the agent keeps it for its whole run).
pub struct Opened {
    /// The handle, when initialised.
    pub nvml: Option<Nvml>,
    /// What opening it gave.
    pub library: Library,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

/// Opens NVML (`gpu_health.library_path`, else the loader's default).
/// No library or driver is [`Library::NoDriver`]; anything else that
/// stops initialisation is [`Library::Failed`].
pub fn open(config: &GpuHealthConfig) -> Opened {
    let result = match &config.library_path {
        Some(path) => Nvml::builder()
            .lib_path(OsStr::new(path.as_os_str()))
            .init(),
        None => Nvml::init(),
    };
    match result {
        Ok(nvml) => {
            let driver = nvml
                .sys_driver_version()
                .unwrap_or_else(|e| format!("unknown ({e})"));
            Opened {
                nvml: Some(nvml),
                library: Library::Loaded(driver),
            }
        }
        Err(
            e @ (NvmlError::LibloadingError(_)
            | NvmlError::LibraryNotFound
            | NvmlError::DriverNotLoaded),
        ) => Opened {
            nvml: None,
            library: Library::NoDriver(e.to_string()),
        },
        Err(e) => Opened {
            nvml: None,
            library: Library::Failed(format!("NVML did not initialise: {e}")),
        },
    }
}

/// Probes every GPU NVML reports. `hardware` is the PCI view (GPUs and EFA
/// adapters present), `expected` what the instance type should have.
pub fn probe(
    opened: &Opened,
    hardware: &Hardware,
    instance_type: Option<&str>,
    expected: Option<(u32, u32)>,
) -> Snapshot {
    let start = Instant::now();
    let mut library = opened.library.clone();
    let mut gpus = Vec::new();
    let mut nvml_gpus = 0;
    if let Some(nvml) = &opened.nvml {
        match nvml.device_count() {
            Ok(n) => {
                nvml_gpus = n;
                gpus = (0..n).map(|i| gpu(nvml, i)).collect();
            }
            Err(e) => library = Library::Failed(format!("cannot count the GPUs: {e}")),
        }
    }
    Snapshot {
        library,
        pci_gpus: hardware.nvidia_gpus,
        efa_devices: hardware.efa_devices,
        instance_type: instance_type.map(String::from),
        expected_gpus: expected.map(|(g, _)| g),
        expected_efa: expected.map(|(_, e)| e),
        nvml_gpus,
        gpus,
        duration_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
    }
}

/// A signal from a call: unavailable when the library lacks it or the GPU
/// does not support it (or any other error, named), `lost` set on `GpuLost`.
fn signal<T>(lost: &mut bool, what: &str, r: Result<T, NvmlError>) -> Signal<T> {
    match r {
        Ok(v) => Signal::Value(v),
        Err(NvmlError::GpuLost) => {
            *lost = true;
            Signal::Unavailable("GPU lost".into())
        }
        Err(NvmlError::NotSupported) => Signal::Unavailable(format!("{what}: not supported")),
        Err(NvmlError::FailedToLoadSymbol(s)) => {
            Signal::Unavailable(format!("{what}: the library lacks {s}"))
        }
        Err(NvmlError::FunctionNotFound) => {
            Signal::Unavailable(format!("{what}: the driver lacks the call"))
        }
        Err(e) => Signal::Unavailable(format!("{what}: {e}")),
    }
}

fn unavailable<T>(why: &str) -> Signal<T> {
    Signal::Unavailable(why.to_string())
}

fn lost_gpu(index: u32) -> GpuSignals {
    GpuSignals {
        index,
        uuid: None,
        name: None,
        pci_bus_id: None,
        lost: true,
        probe_error: None,
        ecc: unavailable("GPU lost"),
        retired_pages: unavailable("GPU lost"),
        retired_pages_pending: unavailable("GPU lost"),
        row_remap: unavailable("GPU lost"),
        temperature_c: unavailable("GPU lost"),
        throttle_reasons: unavailable("GPU lost"),
        pcie: unavailable("GPU lost"),
        pcie_replays: unavailable("GPU lost"),
        nvlink: unavailable("GPU lost"),
        power_mw: unavailable("GPU lost"),
    }
}

fn gpu(nvml: &Nvml, index: u32) -> GpuSignals {
    let device = match nvml.device_by_index(index) {
        Ok(d) => d,
        Err(NvmlError::GpuLost) => return lost_gpu(index),
        Err(e) => {
            let mut g = lost_gpu(index);
            g.lost = false;
            g.probe_error = Some(format!("cannot open GPU {index}: {e}"));
            return g;
        }
    };
    let mut lost = false;
    let uuid = signal(&mut lost, "uuid", device.uuid()).value().cloned();
    let name = signal(&mut lost, "name", device.name()).value().cloned();
    let pci_bus_id = signal(&mut lost, "pci", device.pci_info())
        .value()
        .map(|p| p.bus_id.clone());
    let ecc = ecc(&mut lost, &device);
    let retired_pages = retired(&mut lost, &device);
    let retired_pages_pending = signal(
        &mut lost,
        "retired pages pending",
        device.are_pages_pending_retired(),
    );
    let fields = device.field_values_for(&[
        FieldId(FI_REMAPPED_COR),
        FieldId(FI_REMAPPED_UNC),
        FieldId(FI_REMAPPED_PENDING),
        FieldId(FI_REMAPPED_FAILURE),
        FieldId(FI_NVLINK_LINK_COUNT),
    ]);
    let (row_remap, link_count) = match fields {
        Ok(values) => (remap_of(&values), field(&values, FI_NVLINK_LINK_COUNT)),
        Err(e) => {
            let s: Signal<()> = signal(&mut lost, "field values", Err(e));
            let why = match s {
                Signal::Unavailable(w) => w,
                Signal::Value(()) => String::new(),
            };
            (Signal::Unavailable(why.clone()), Signal::Unavailable(why))
        }
    };
    let temperature_c = signal(
        &mut lost,
        "temperature",
        device.temperature(TemperatureSensor::Gpu),
    );
    let throttle_reasons = match signal(
        &mut lost,
        "clock event reasons",
        device.current_throttle_reasons(),
    ) {
        Signal::Value(r) => Signal::Value(r.bits()),
        Signal::Unavailable(w) => Signal::Unavailable(w),
    };
    let pcie = pcie(&mut lost, &device);
    let pcie_replays = match signal(&mut lost, "PCIe replays", device.pcie_replay_counter()) {
        Signal::Value(v) => Signal::Value(u64::from(v)),
        Signal::Unavailable(w) => Signal::Unavailable(w),
    };
    let nvlink = nvlinks(&mut lost, &device, link_count);
    let power_mw = signal(&mut lost, "power", device.power_usage());
    GpuSignals {
        index,
        uuid,
        name,
        pci_bus_id,
        lost,
        probe_error: None,
        ecc,
        retired_pages,
        retired_pages_pending,
        row_remap,
        temperature_c,
        throttle_reasons,
        pcie,
        pcie_replays,
        nvlink,
        power_mw,
    }
}

fn ecc(lost: &mut bool, device: &Device<'_>) -> Signal<Ecc> {
    let mut read =
        |error, counter, what| signal(lost, what, device.total_ecc_errors(error, counter));
    let vu = read(MemoryError::Uncorrected, EccCounter::Volatile, "ECC");
    let Signal::Value(volatile_uncorrected) = vu else {
        return match vu {
            Signal::Unavailable(w) => Signal::Unavailable(w),
            Signal::Value(_) => unavailable("ECC"),
        };
    };
    let v = |s: Signal<u64>| s.value().copied().unwrap_or(0);
    Signal::Value(Ecc {
        volatile_uncorrected,
        volatile_corrected: v(read(MemoryError::Corrected, EccCounter::Volatile, "ECC")),
        aggregate_uncorrected: v(read(MemoryError::Uncorrected, EccCounter::Aggregate, "ECC")),
        aggregate_corrected: v(read(MemoryError::Corrected, EccCounter::Aggregate, "ECC")),
    })
}

fn retired(lost: &mut bool, device: &Device<'_>) -> Signal<u64> {
    let mut total = 0u64;
    for cause in [
        RetirementCause::MultipleSingleBitEccErrors,
        RetirementCause::DoubleBitEccError,
    ] {
        match signal(lost, "retired pages", device.retired_pages(cause)) {
            Signal::Value(pages) => total += u64::try_from(pages.len()).unwrap_or(u64::MAX),
            Signal::Unavailable(w) => return Signal::Unavailable(w),
        }
    }
    Signal::Value(total)
}

fn field(values: &[Result<FieldValueSample, NvmlError>], id: u32) -> Signal<u64> {
    let found = values.iter().find_map(|v| match v {
        Ok(sample) if sample.field.0 == id => {
            Some(sample.value.as_ref().map_err(ToString::to_string))
        }
        _ => None,
    });
    match found {
        Some(Ok(SampleValue::U32(v))) => Signal::Value(u64::from(*v)),
        Some(Ok(SampleValue::U64(v))) => Signal::Value(*v),
        Some(Ok(SampleValue::I64(v))) => Signal::Value(u64::try_from(*v).unwrap_or(0)),
        // The fields read here are integers; a float answer is not one.
        Some(Ok(SampleValue::F64(_))) => Signal::Unavailable(format!("field {id}: not an integer")),
        Some(Err(e)) => Signal::Unavailable(format!("field {id}: {e}")),
        None => Signal::Unavailable(format!("field {id}: no answer")),
    }
}

fn remap_of(values: &[Result<FieldValueSample, NvmlError>]) -> Signal<RowRemap> {
    let pending = field(values, FI_REMAPPED_PENDING);
    let Signal::Value(pending) = pending else {
        return match pending {
            Signal::Unavailable(w) => Signal::Unavailable(format!("row remapping: {w}")),
            Signal::Value(_) => unavailable("row remapping"),
        };
    };
    let v = |id| field(values, id).value().copied().unwrap_or(0);
    Signal::Value(RowRemap {
        corrected: v(FI_REMAPPED_COR),
        uncorrected: v(FI_REMAPPED_UNC),
        pending: pending != 0,
        failure: v(FI_REMAPPED_FAILURE) != 0,
    })
}

fn pcie(lost: &mut bool, device: &Device<'_>) -> Signal<PcieLink> {
    let width = signal(lost, "PCIe width", device.current_pcie_link_width());
    let Signal::Value(width) = width else {
        return match width {
            Signal::Unavailable(w) => Signal::Unavailable(w),
            Signal::Value(_) => unavailable("PCIe"),
        };
    };
    let v = |s: Signal<u32>| s.value().copied().unwrap_or(0);
    Signal::Value(PcieLink {
        generation: v(signal(lost, "PCIe gen", device.current_pcie_link_gen())),
        width,
        max_generation: v(signal(lost, "PCIe max gen", device.max_pcie_link_gen())),
        max_width: v(signal(lost, "PCIe max width", device.max_pcie_link_width())),
    })
}

fn nvlinks(lost: &mut bool, device: &Device<'_>, count: Signal<u64>) -> Signal<NvLinks> {
    let count = match count {
        Signal::Value(c) => u32::try_from(c).unwrap_or(MAX_NVLINKS).min(MAX_NVLINKS),
        Signal::Unavailable(w) => return Signal::Unavailable(format!("NVLink: {w}")),
    };
    if count == 0 {
        return Signal::Value(NvLinks::default());
    }
    let mut links = NvLinks {
        count,
        ..NvLinks::default()
    };
    for link in 0..count {
        let wrapper = device.link_wrapper_for(link);
        match signal(lost, "NVLink state", wrapper.is_active()) {
            Signal::Value(true) => {}
            Signal::Value(false) => links.inactive.push(link),
            Signal::Unavailable(w) => return Signal::Unavailable(w),
        }
        for counter in [
            ErrorCounter::DlReplay,
            ErrorCounter::DlRecovery,
            ErrorCounter::DlCrcFlit,
            ErrorCounter::DlCrcData,
        ] {
            if let Signal::Value(n) = signal(lost, "NVLink errors", wrapper.error_counter(counter))
            {
                links.errors = links.errors.saturating_add(n);
            }
        }
    }
    Signal::Value(links)
}
