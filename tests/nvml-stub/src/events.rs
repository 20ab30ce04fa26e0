//! Event sets: the fixture's `xid_timeline` delivered through
//! `nvmlEventSetWait_v2`, each XID at most once per event set, once its time
//! (relative to the set's creation) has come and its GPU is registered for
//! critical XID events in that set.

use std::ffi::{c_uint, c_ulonglong};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::fixture::Xid;
use crate::{
    NVML_ERROR_GPU_IS_LOST, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_TIMEOUT, NvmlDevice, NvmlReturn, Res, code, handle_for, index_of, initialised, put,
    with_gpu,
};

/// `nvmlEventTypeXidCriticalError`.
const EVENT_XID: u64 = 0x8;

/// How often a waiting thread re-reads the fixture when no XID is due sooner.
const REREAD: Duration = Duration::from_millis(50);

/// What an `nvmlEventSet_t` points at.
pub struct NvmlEventSet {
    created: Instant,
    /// (GPU index, registered event mask).
    registrations: Mutex<Vec<(usize, u64)>>,
    /// Timeline entries already delivered through this set.
    delivered: Mutex<Vec<Xid>>,
}

/// `nvmlEventData_t`.
#[repr(C)]
pub struct NvmlEventData {
    /// The device the event happened on.
    pub device: *mut NvmlDevice,
    /// One `nvmlEventType*` bit.
    pub event_type: c_ulonglong,
    /// The XID for critical XID events, else 0.
    pub event_data: c_ulonglong,
    /// MIG GPU instance (unused: 0xFFFFFFFF would mean "none").
    pub gpu_instance_id: c_uint,
    /// MIG compute instance (unused).
    pub compute_instance_id: c_uint,
}

/// `nvmlEventSetCreate`.
///
/// # Safety
/// `set` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut *mut NvmlEventSet) -> NvmlReturn {
    code(|| {
        initialised()?;
        let state = Box::new(NvmlEventSet {
            created: Instant::now(),
            registrations: Mutex::new(Vec::new()),
            delivered: Mutex::new(Vec::new()),
        });
        let raw = Box::into_raw(state);
        // SAFETY: the caller's out-pointer contract is passed through.
        let written = unsafe { put(set, raw) };
        if written.is_err() {
            // SAFETY: `raw` came from `Box::into_raw` above and was not handed out.
            drop(unsafe { Box::from_raw(raw) });
        }
        written
    })
}

/// `nvmlEventSetFree`.
///
/// # Safety
/// `set` must come from `nvmlEventSetCreate`, not be freed already, and not be
/// used by another thread meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetFree(set: *mut NvmlEventSet) -> NvmlReturn {
    if set.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: the caller hands back ownership of a set from `Box::into_raw`.
    drop(unsafe { Box::from_raw(set) });
    crate::NVML_SUCCESS
}

/// `nvmlDeviceGetSupportedEventTypes`.
///
/// # Safety
/// `event_types` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: *mut NvmlDevice,
    event_types: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: the caller's out-pointer contract is passed through.
    with_gpu(device, |gpu| unsafe {
        put(event_types, gpu.supported_events)
    })
}

/// `nvmlDeviceRegisterEvents`: NOT_SUPPORTED for bits the GPU does not
/// support, as the real driver does.
///
/// # Safety
/// `set` must come from `nvmlEventSetCreate` and not be freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceRegisterEvents(
    device: *mut NvmlDevice,
    event_types: c_ulonglong,
    set: *mut NvmlEventSet,
) -> NvmlReturn {
    with_gpu(device, |gpu| {
        if set.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        if event_types & !gpu.supported_events != 0 {
            return Err(NVML_ERROR_NOT_SUPPORTED);
        }
        // SAFETY: a live set from `nvmlEventSetCreate`, per the caller.
        let set = unsafe { &*set };
        let index = index_of(device)?;
        set.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((index, event_types));
        Ok(())
    })
}

/// The earliest due, undelivered, registered XID, marked delivered.
fn take_due(set: &NvmlEventSet, timeline: &[Xid]) -> Option<Xid> {
    let elapsed = u64::try_from(set.created.elapsed().as_millis()).unwrap_or(u64::MAX);
    let registrations = set
        .registrations
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut delivered = set.delivered.lock().unwrap_or_else(PoisonError::into_inner);
    let mut already = delivered.clone();
    let mut due: Vec<Xid> = timeline
        .iter()
        .filter(|x| {
            // Multiset difference: each delivery accounts for one entry.
            if let Some(i) = already.iter().position(|d| d == *x) {
                already.swap_remove(i);
                return false;
            }
            x.at_ms <= elapsed
                && registrations
                    .iter()
                    .any(|(gpu, mask)| *gpu == x.gpu as usize && mask & EVENT_XID != 0)
        })
        .copied()
        .collect();
    due.sort_by_key(|x| x.at_ms);
    let first = due.first().copied()?;
    delivered.push(first);
    Some(first)
}

/// Environment variable naming a file that gets a line per delivered XID,
/// `<gpu> <xid> <nanoseconds since the epoch>`: benchmarks measure from
/// the moment the "driver" handed the event over.
pub const DELIVERY_LOG_ENV: &str = "HPK8S_NVML_DELIVERY_LOG";

fn log_delivery(xid: &Xid) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os(DELIVERY_LOG_ENV) else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{} {} {nanos}", xid.gpu, xid.xid);
    }
}

/// `nvmlEventSetWait_v2`: the next due XID, or TIMEOUT after `timeoutms`.
///
/// # Safety
/// `set` must come from `nvmlEventSetCreate` and not be freed while waiting;
/// `data` must be null or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: *mut NvmlEventSet,
    data: *mut NvmlEventData,
    timeoutms: c_uint,
) -> NvmlReturn {
    code(|| -> Res {
        if set.is_null() || data.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: a live set from `nvmlEventSetCreate`, per the caller.
        let set = unsafe { &*set };
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeoutms));
        loop {
            // Re-read every round so a test can append XIDs while we wait.
            let fixture = initialised()?;
            if let Some(xid) = take_due(set, &fixture.xid_timeline) {
                let index = xid.gpu as usize;
                if index >= fixture.gpus.len() {
                    return Err(NVML_ERROR_GPU_IS_LOST);
                }
                let event = NvmlEventData {
                    device: handle_for(index),
                    event_type: EVENT_XID,
                    event_data: xid.xid,
                    gpu_instance_id: c_uint::MAX,
                    compute_instance_id: c_uint::MAX,
                };
                log_delivery(&xid);
                // SAFETY: the caller's out-pointer contract is passed through.
                return unsafe { put(data, event) };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NVML_ERROR_TIMEOUT);
            }
            // Sleep until the next scheduled XID is due, or one re-read
            // period (a test may append XIDs), or the deadline: a real
            // driver blocks in the kernel, and a benchmark of the agent's
            // idle CPU must not count the stub spinning.
            let elapsed = set.created.elapsed();
            let next_due = fixture
                .xid_timeline
                .iter()
                .map(|x| Duration::from_millis(x.at_ms))
                .filter(|at| *at > elapsed)
                .min()
                .map(|at| at - elapsed);
            let nap = next_due.map_or(REREAD, |d| d.min(REREAD));
            std::thread::sleep(nap.min(deadline - now));
        }
    })
}
