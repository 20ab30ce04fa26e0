//! A fake `libnvidia-ml.so` for testing the GPU health probe without a GPU.
//!
//! It exports the NVML C functions that `nvml-wrapper` 0.13 calls for the
//! probe (init/shutdown, device enumeration, ECC, retired pages, row
//! remapping, temperature, throttle reasons, PCIe, NVLink and event sets), with
//! the C layouts and return codes of the real library. What it reports comes
//! from a JSON fixture named by `HPK8S_NVML_FIXTURE`, re-read whenever the file
//! changes so that a test can inject a fault while the agent runs; the schema
//! is in `fixture.rs` and `README.md`. The Rust builder for fixtures is
//! `harness::nvml`.
//!
//! Unsafe code is the point of this crate (it writes through the caller's out
//! pointers, as every NVML function does), hence the crate-level allow; every
//! unsafe block says why it is sound.
#![allow(unsafe_code)]

mod events;
mod fixture;

use std::ffi::{c_char, c_uint, c_ulonglong};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use fixture::{EccCounts, Fixture, Gpu, LoadError};

pub use events::{
    nvmlDeviceGetSupportedEventTypes, nvmlDeviceRegisterEvents, nvmlEventSetCreate,
    nvmlEventSetFree, nvmlEventSetWait_v2,
};

/// `nvmlReturn_t`.
pub type NvmlReturn = c_uint;

const NVML_SUCCESS: NvmlReturn = 0;
const NVML_ERROR_UNINITIALIZED: NvmlReturn = 1;
const NVML_ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
const NVML_ERROR_NOT_SUPPORTED: NvmlReturn = 3;
const NVML_ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
const NVML_ERROR_DRIVER_NOT_LOADED: NvmlReturn = 9;
const NVML_ERROR_TIMEOUT: NvmlReturn = 10;
const NVML_ERROR_GPU_IS_LOST: NvmlReturn = 15;
const NVML_ERROR_UNKNOWN: NvmlReturn = 999;

/// NVML supports at most this many NVLinks per GPU; higher indices are
/// invalid arguments rather than "not supported".
const NVML_NVLINK_MAX_LINKS: c_uint = 18;

/// Opaque `nvmlDevice_t` target. Handles are never dereferenced: a handle's
/// address is the GPU index plus one.
#[repr(C)]
pub struct NvmlDevice {
    _opaque: [u8; 0],
}

/// `nvmlPciInfo_t` (v3 layout).
#[repr(C)]
pub struct NvmlPciInfo {
    /// `DDDD:BB:DD.F`, the legacy 16-byte form.
    pub bus_id_legacy: [c_char; 16],
    /// PCI domain.
    pub domain: c_uint,
    /// PCI bus.
    pub bus: c_uint,
    /// PCI device.
    pub device: c_uint,
    /// `(device id << 16) | vendor id`.
    pub pci_device_id: c_uint,
    /// Subsystem id.
    pub pci_sub_system_id: c_uint,
    /// `DDDDDDDD:BB:DD.F`.
    pub bus_id: [c_char; 32],
}

/// How many `nvmlInit*` calls have not been matched by `nvmlShutdown` yet.
static INIT_COUNT: AtomicU32 = AtomicU32::new(0);

/// Why a call failed, as an NVML return code.
type Res<T = ()> = Result<T, NvmlReturn>;

/// Runs a call body and turns its outcome into an NVML return code.
fn code(body: impl FnOnce() -> Res) -> NvmlReturn {
    match body() {
        Ok(()) => NVML_SUCCESS,
        Err(e) => e,
    }
}

fn load() -> Res<Arc<Fixture>> {
    fixture::current().map_err(|e| match e {
        LoadError::NotConfigured | LoadError::Unreadable => NVML_ERROR_DRIVER_NOT_LOADED,
        LoadError::Invalid => NVML_ERROR_UNKNOWN,
    })
}

/// The fixture, provided NVML is initialised.
fn initialised() -> Res<Arc<Fixture>> {
    if INIT_COUNT.load(Ordering::SeqCst) == 0 {
        return Err(NVML_ERROR_UNINITIALIZED);
    }
    load()
}

fn handle_for(index: usize) -> *mut NvmlDevice {
    std::ptr::without_provenance_mut(index + 1)
}

fn index_of(device: *mut NvmlDevice) -> Res<usize> {
    device
        .addr()
        .checked_sub(1)
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)
}

/// Runs `f` on the GPU behind `device`, answering the errors every device
/// call shares: not initialised, bad handle, GPU lost.
fn with_gpu(device: *mut NvmlDevice, f: impl FnOnce(&Gpu) -> Res) -> NvmlReturn {
    code(|| {
        let fixture = initialised()?;
        if fixture.call_delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(fixture.call_delay_ms));
        }
        let gpu = fixture
            .gpus
            .get(index_of(device)?)
            .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        if gpu.lost {
            return Err(NVML_ERROR_GPU_IS_LOST);
        }
        f(gpu)
    })
}

/// Writes `value` through an out pointer.
///
/// # Safety
/// `out` must be null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Res {
    if out.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and the caller guarantees it is valid for writes.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies `s` with its terminating NUL into a caller buffer of `len` bytes.
///
/// # Safety
/// `buf` must be null or valid for writes of `len` bytes.
unsafe fn put_str(buf: *mut c_char, len: c_uint, s: &str) -> Res {
    if buf.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    if s.len() >= len as usize {
        return Err(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: `s.len() + 1 <= len` bytes fit the buffer the caller vouches
    // for, and a `&str` never overlaps a buffer NVML's caller hands us.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), buf, s.len());
        buf.add(s.len()).write(0);
    }
    Ok(())
}

fn c_array<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (dst, src) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *dst = src as c_char;
    }
    out
}

fn init() -> NvmlReturn {
    code(|| {
        let fixture = load()?;
        if let Some(e) = fixture.init_error {
            return Err(e);
        }
        INIT_COUNT.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// `nvmlInit_v2`: succeeds when the fixture loads (and sets no `init_error`).
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    init()
}

/// `nvmlInitWithFlags`: flags are accepted and ignored.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    init()
}

/// `nvmlShutdown`: undoes one successful init.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    match INIT_COUNT.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(_) => NVML_SUCCESS,
        Err(_) => NVML_ERROR_UNINITIALIZED,
    }
}

/// `nvmlErrorString`: a static description of a return code.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    let s: &'static std::ffi::CStr = match result {
        NVML_SUCCESS => c"Success",
        NVML_ERROR_UNINITIALIZED => c"Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED => c"Not Supported",
        NVML_ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        NVML_ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        NVML_ERROR_TIMEOUT => c"Timeout",
        NVML_ERROR_GPU_IS_LOST => c"GPU is lost",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

/// `nvmlSystemGetDriverVersion`.
///
/// # Safety
/// `version` must be null or valid for writes of `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    code(|| {
        let fixture = initialised()?;
        // SAFETY: the caller's buffer contract is passed through unchanged.
        unsafe { put_str(version, length, &fixture.driver_version) }
    })
}

/// `nvmlDeviceGetCount_v2`: lost GPUs still count, as with the real driver.
///
/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> NvmlReturn {
    code(|| {
        let fixture = initialised()?;
        let n = c_uint::try_from(fixture.gpus.len()).map_err(|_| NVML_ERROR_UNKNOWN)?;
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(count, n) }
    })
}

/// `nvmlDeviceGetHandleByIndex_v2`: a lost GPU has no handle (GPU_IS_LOST).
///
/// # Safety
/// `device` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut *mut NvmlDevice,
) -> NvmlReturn {
    code(|| {
        let fixture = initialised()?;
        let gpu = fixture
            .gpus
            .get(index as usize)
            .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        if gpu.lost {
            return Err(NVML_ERROR_GPU_IS_LOST);
        }
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(device, handle_for(index as usize)) }
    })
}

/// `nvmlDeviceGetName`.
///
/// # Safety
/// `name` must be null or valid for writes of `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: *mut NvmlDevice,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's buffer contract is passed through unchanged.
    with_gpu(device, |gpu| unsafe { put_str(name, length, &gpu.name) })
}

/// `nvmlDeviceGetUUID`.
///
/// # Safety
/// `uuid` must be null or valid for writes of `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: *mut NvmlDevice,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's buffer contract is passed through unchanged.
    with_gpu(device, |gpu| unsafe { put_str(uuid, length, &gpu.uuid) })
}

/// Splits `DDDDDDDD:BB:DD.F` into (domain, bus, device).
fn parse_bus_id(id: &str) -> Res<(u32, u32, u32)> {
    let mut parts = id.split([':', '.']);
    let mut next = || {
        parts
            .next()
            .and_then(|p| u32::from_str_radix(p, 16).ok())
            .ok_or(NVML_ERROR_UNKNOWN)
    };
    Ok((next()?, next()?, next()?))
}

/// `nvmlDeviceGetPciInfo_v3`.
///
/// # Safety
/// `pci` must be null or valid for a write of an `nvmlPciInfo_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: *mut NvmlDevice,
    pci: *mut NvmlPciInfo,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let (domain, bus, dev) = parse_bus_id(&gpu.pci_bus_id)?;
        let legacy = format!("{:04x}:{bus:02x}:{dev:02x}.0", domain & 0xffff);
        let info = NvmlPciInfo {
            bus_id_legacy: c_array(&legacy),
            domain,
            bus,
            device: dev,
            pci_device_id: gpu.pci_device_id,
            pci_sub_system_id: gpu.pci_subsystem_id,
            bus_id: c_array(&gpu.pci_bus_id),
        };
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(pci, info) }
    })
}

fn ecc_pick(counts: (EccCounts, EccCounts), error_type: c_uint, counter_type: c_uint) -> Res<u64> {
    let (volatile, aggregate) = counts;
    let counts = match counter_type {
        0 => volatile,
        1 => aggregate,
        _ => return Err(NVML_ERROR_INVALID_ARGUMENT),
    };
    match error_type {
        0 => Ok(counts.corrected),
        1 => Ok(counts.uncorrected),
        _ => Err(NVML_ERROR_INVALID_ARGUMENT),
    }
}

/// `nvmlMemoryLocation_t` values and the fixture's names for them.
const MEMORY_LOCATIONS: [&str; 8] = [
    "l1_cache",
    "l2_cache",
    "device_memory",
    "register_file",
    "texture_memory",
    "texture_shm",
    "cbu",
    "sram",
];
const DEVICE_MEMORY: usize = 2;

/// `nvmlDeviceGetMemoryErrorCounter`.
///
/// # Safety
/// `count` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryErrorCounter(
    device: *mut NvmlDevice,
    error_type: c_uint,
    counter_type: c_uint,
    location: c_uint,
    count: *mut c_ulonglong,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let name = MEMORY_LOCATIONS
            .get(location as usize)
            .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        let counts = match gpu.ecc.by_location.get(*name) {
            Some(c) => (c.volatile, c.aggregate),
            None if location as usize == DEVICE_MEMORY => (gpu.ecc.volatile, gpu.ecc.aggregate),
            None => (EccCounts::default(), EccCounts::default()),
        };
        let value = ecc_pick(counts, error_type, counter_type)?;
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(count, value) }
    })
}

/// `nvmlDeviceGetTotalEccErrors`.
///
/// # Safety
/// `ecc_counts` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: *mut NvmlDevice,
    error_type: c_uint,
    counter_type: c_uint,
    ecc_counts: *mut c_ulonglong,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let value = ecc_pick(
            (gpu.ecc.volatile, gpu.ecc.aggregate),
            error_type,
            counter_type,
        )?;
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(ecc_counts, value) }
    })
}

/// Shared body of both retired-pages calls: NVML's in/out count protocol
/// (a short buffer gets the needed count and INSUFFICIENT_SIZE).
///
/// # Safety
/// `page_count` must be valid for reads and writes; `addresses` and
/// `timestamps` (each may be null) valid for `*page_count` writes.
unsafe fn retired_pages(
    device: *mut NvmlDevice,
    cause: c_uint,
    page_count: *mut c_uint,
    addresses: *mut c_ulonglong,
    timestamps: *mut c_ulonglong,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let pages = match cause {
            0 => &gpu.retired_pages.multiple_single_bit,
            1 => &gpu.retired_pages.double_bit,
            _ => return Err(NVML_ERROR_INVALID_ARGUMENT),
        };
        if page_count.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        let needed = c_uint::try_from(pages.len()).map_err(|_| NVML_ERROR_UNKNOWN)?;
        // SAFETY: non-null, and the caller guarantees it is valid.
        let capacity = unsafe { page_count.read() };
        // SAFETY: as above.
        unsafe { page_count.write(needed) };
        if capacity < needed {
            return Err(NVML_ERROR_INSUFFICIENT_SIZE);
        }
        for (i, page) in pages.iter().enumerate() {
            // SAFETY: `i < needed <= capacity`, the length the caller vouched
            // for; null arrays are skipped.
            unsafe {
                if !addresses.is_null() {
                    addresses.add(i).write(page.address);
                }
                if !timestamps.is_null() {
                    timestamps.add(i).write(page.timestamp);
                }
            }
        }
        Ok(())
    })
}

/// `nvmlDeviceGetRetiredPages`.
///
/// # Safety
/// `page_count` must be valid; `addresses` valid for `*page_count` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages(
    device: *mut NvmlDevice,
    cause: c_uint,
    page_count: *mut c_uint,
    addresses: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: the caller's contract is the helper's contract.
    unsafe { retired_pages(device, cause, page_count, addresses, std::ptr::null_mut()) }
}

/// `nvmlDeviceGetRetiredPages_v2` (with timestamps).
///
/// # Safety
/// `page_count` must be valid; `addresses` and `timestamps` valid for
/// `*page_count` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages_v2(
    device: *mut NvmlDevice,
    cause: c_uint,
    page_count: *mut c_uint,
    addresses: *mut c_ulonglong,
    timestamps: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: the caller's contract is the helper's contract.
    unsafe { retired_pages(device, cause, page_count, addresses, timestamps) }
}

/// `nvmlDeviceGetRetiredPagesPendingStatus`.
///
/// # Safety
/// `is_pending` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPagesPendingStatus(
    device: *mut NvmlDevice,
    is_pending: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe {
        put(is_pending, c_uint::from(gpu.retired_pages_pending))
    })
}

/// `nvmlDeviceGetRemappedRows`: NOT_SUPPORTED when the fixture has no
/// `remapped_rows` (GPUs before A100).
///
/// # Safety
/// All four pointers must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRemappedRows(
    device: *mut NvmlDevice,
    corr_rows: *mut c_uint,
    unc_rows: *mut c_uint,
    is_pending: *mut c_uint,
    failure_occurred: *mut c_uint,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let rows = gpu.remapped_rows.ok_or(NVML_ERROR_NOT_SUPPORTED)?;
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe {
            put(corr_rows, rows.corrected)?;
            put(unc_rows, rows.uncorrected)?;
            put(is_pending, c_uint::from(rows.pending))?;
            put(failure_occurred, c_uint::from(rows.failure))
        }
    })
}

/// One `nvmlFieldValue_t`.
#[repr(C)]
pub struct NvmlFieldValue {
    field_id: c_uint,
    scope_id: c_uint,
    timestamp: i64,
    latency_usec: i64,
    value_type: c_uint,
    nvml_return: NvmlReturn,
    value: u64,
}

/// `NVML_VALUE_TYPE_UNSIGNED_INT`.
const VALUE_TYPE_UNSIGNED_INT: c_uint = 1;
/// Field ids answered: NVLink link count and the row-remapping counters.
const FI_NVLINK_LINK_COUNT: c_uint = 91;
const FI_REMAPPED_COR: c_uint = 142;
const FI_REMAPPED_UNC: c_uint = 143;
const FI_REMAPPED_PENDING: c_uint = 144;
const FI_REMAPPED_FAILURE: c_uint = 145;

/// `nvmlDeviceGetFieldValues`: the NVLink link count (field 91) and the
/// row-remapping fields (142–145, NOT_SUPPORTED per value without row
/// remapping); any other field NOT_SUPPORTED in its own entry.
///
/// # Safety
/// `values` must point to `count` writable entries.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: *mut NvmlDevice,
    count: i32,
    values: *mut NvmlFieldValue,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        let n = usize::try_from(count).map_err(|_| NVML_ERROR_INVALID_ARGUMENT)?;
        if values.is_null() || n == 0 {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes `count` entries.
        let entries = unsafe { std::slice::from_raw_parts_mut(values, n) };
        for entry in entries {
            let rows = gpu.remapped_rows;
            let value = match entry.field_id {
                FI_NVLINK_LINK_COUNT => Some(u64::try_from(gpu.nvlinks.len()).unwrap_or(0)),
                FI_REMAPPED_COR => rows.map(|r| u64::from(r.corrected)),
                FI_REMAPPED_UNC => rows.map(|r| u64::from(r.uncorrected)),
                FI_REMAPPED_PENDING => rows.map(|r| u64::from(r.pending)),
                FI_REMAPPED_FAILURE => rows.map(|r| u64::from(r.failure)),
                _ => None,
            };
            match value {
                Some(v) => {
                    entry.value_type = VALUE_TYPE_UNSIGNED_INT;
                    entry.nvml_return = NVML_SUCCESS;
                    // The union's unsigned-int member is its first 4 bytes.
                    entry.value = v & 0xffff_ffff;
                }
                None => entry.nvml_return = NVML_ERROR_NOT_SUPPORTED,
            }
        }
        Ok(())
    })
}

/// `nvmlDeviceGetTemperature`: only the GPU core sensor (0) exists.
///
/// # Safety
/// `temp` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: *mut NvmlDevice,
    sensor: c_uint,
    temp: *mut c_uint,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        if sensor != 0 {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(temp, gpu.temperature_c) }
    })
}

/// `nvmlDeviceGetCurrentClocksThrottleReasons` (the name nvml-wrapper 0.13
/// calls).
///
/// # Safety
/// `reasons` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: *mut NvmlDevice,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(reasons, gpu.throttle_reasons) })
}

/// `nvmlDeviceGetCurrentClocksEventReasons` (the newer name of the same call).
///
/// # Safety
/// `reasons` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(
    device: *mut NvmlDevice,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(reasons, gpu.throttle_reasons) })
}

/// `nvmlDeviceGetCurrPcieLinkGeneration`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkGeneration(
    device: *mut NvmlDevice,
    value: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(value, gpu.pcie.r#gen) })
}

/// `nvmlDeviceGetCurrPcieLinkWidth`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkWidth(
    device: *mut NvmlDevice,
    value: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(value, gpu.pcie.width) })
}

/// `nvmlDeviceGetMaxPcieLinkGeneration`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkGeneration(
    device: *mut NvmlDevice,
    value: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(value, gpu.pcie.max_gen) })
}

/// `nvmlDeviceGetMaxPcieLinkWidth`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkWidth(
    device: *mut NvmlDevice,
    value: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(value, gpu.pcie.max_width) })
}

/// `nvmlDeviceGetPcieReplayCounter`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieReplayCounter(
    device: *mut NvmlDevice,
    value: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe { put(value, gpu.pcie.replay_counter) })
}

/// `nvmlDeviceGetNvLinkState`: links past the fixture's list are
/// NOT_SUPPORTED, past NVML's maximum INVALID_ARGUMENT.
///
/// # Safety
/// `is_active` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: *mut NvmlDevice,
    link: c_uint,
    is_active: *mut c_uint,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        if link >= NVML_NVLINK_MAX_LINKS {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        let active = *gpu
            .nvlinks
            .get(link as usize)
            .ok_or(NVML_ERROR_NOT_SUPPORTED)?;
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(is_active, c_uint::from(active)) }
    })
}

/// `nvmlDeviceGetNvLinkErrorCounter`: links as for `nvmlDeviceGetNvLinkState`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkErrorCounter(
    device: *mut NvmlDevice,
    link: c_uint,
    counter: c_uint,
    value: *mut c_ulonglong,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        if link >= NVML_NVLINK_MAX_LINKS {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        if link as usize >= gpu.nvlinks.len() {
            return Err(NVML_ERROR_NOT_SUPPORTED);
        }
        let errors = gpu
            .nvlink_errors
            .get(link as usize)
            .copied()
            .unwrap_or_default();
        let count = match counter {
            0 => errors.replay,
            1 => errors.recovery,
            2 => errors.crc_flit,
            3 => errors.crc_data,
            4 => errors.ecc_data,
            _ => return Err(NVML_ERROR_INVALID_ARGUMENT),
        };
        // SAFETY: the caller's out-pointer contract is passed through.
        unsafe { put(value, count) }
    })
}

#[cfg(test)]
mod layout {
    use std::mem::{align_of, offset_of, size_of};

    use nvml_wrapper_sys::bindings::{nvmlEventData_t, nvmlPciInfo_t};

    use crate::NvmlPciInfo;
    use crate::events::NvmlEventData;

    #[test]
    fn pci_info_matches_the_bindings() {
        assert_eq!(size_of::<NvmlPciInfo>(), size_of::<nvmlPciInfo_t>());
        assert_eq!(align_of::<NvmlPciInfo>(), align_of::<nvmlPciInfo_t>());
        assert_eq!(
            offset_of!(NvmlPciInfo, domain),
            offset_of!(nvmlPciInfo_t, domain)
        );
        assert_eq!(offset_of!(NvmlPciInfo, bus), offset_of!(nvmlPciInfo_t, bus));
        assert_eq!(
            offset_of!(NvmlPciInfo, device),
            offset_of!(nvmlPciInfo_t, device)
        );
        assert_eq!(
            offset_of!(NvmlPciInfo, pci_device_id),
            offset_of!(nvmlPciInfo_t, pciDeviceId)
        );
        assert_eq!(
            offset_of!(NvmlPciInfo, pci_sub_system_id),
            offset_of!(nvmlPciInfo_t, pciSubSystemId)
        );
        assert_eq!(
            offset_of!(NvmlPciInfo, bus_id),
            offset_of!(nvmlPciInfo_t, busId)
        );
    }

    #[test]
    fn event_data_matches_the_bindings() {
        assert_eq!(size_of::<NvmlEventData>(), size_of::<nvmlEventData_t>());
        assert_eq!(
            offset_of!(NvmlEventData, event_type),
            offset_of!(nvmlEventData_t, eventType)
        );
        assert_eq!(
            offset_of!(NvmlEventData, event_data),
            offset_of!(nvmlEventData_t, eventData)
        );
        assert_eq!(
            offset_of!(NvmlEventData, gpu_instance_id),
            offset_of!(nvmlEventData_t, gpuInstanceId)
        );
        assert_eq!(
            offset_of!(NvmlEventData, compute_instance_id),
            offset_of!(nvmlEventData_t, computeInstanceId)
        );
    }
}
