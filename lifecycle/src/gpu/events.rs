//! XID and ECC events through an NVML event set, on a thread of its own
//! (`nvmlEventSetWait` blocks; a multi-second wait, never on the async
//! runtime). Each GPU registers only the event types it supports: one
//! failed registration frees the whole set. When several XIDs queue up,
//! NVML may report the last for all: the probe that follows each event
//! reads the counters anyway.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;

use super::probe;
use super::record::XidEvent;
use crate::config::GpuHealthConfig;

/// How long one wait blocks.
pub const WAIT: Duration = Duration::from_secs(2);
/// The event types watched.
fn wanted() -> EventTypes {
    EventTypes::CRITICAL_XID_ERROR
        | EventTypes::DOUBLE_BIT_ECC_ERROR
        | EventTypes::SINGLE_BIT_ECC_ERROR
}

/// An event from a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuEvent {
    /// An XID.
    Xid(XidEvent),
    /// An ECC error (probe the counters).
    Ecc {
        /// GPU index.
        gpu: u32,
        /// Double-bit (uncorrectable).
        double_bit: bool,
    },
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts the event thread. It sends events to `tx` (a full channel drops
/// the event: the periodic probe catches up), stamps `alive` after every
/// wait, and ends when `stop` is set. Without NVML or GPUs it only stamps.
pub fn spawn(
    config: GpuHealthConfig,
    tx: tokio::sync::mpsc::Sender<GpuEvent>,
    alive: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("gpu-events".into())
        .spawn(move || run(&config, &tx, &alive, &stop))
}

fn run(
    config: &GpuHealthConfig,
    tx: &tokio::sync::mpsc::Sender<GpuEvent>,
    alive: &AtomicU64,
    stop: &AtomicBool,
) {
    let opened = probe::open(config);
    let Some(nvml) = &opened.nvml else {
        while !stop.load(Ordering::Relaxed) {
            alive.store(now_secs(), Ordering::Relaxed);
            std::thread::sleep(WAIT);
        }
        return;
    };
    // GPUs whose registration failed (they would free the set for all).
    let mut excluded: std::collections::BTreeSet<u32> = std::collections::BTreeSet::new();
    while !stop.load(Ordering::Relaxed) {
        alive.store(now_secs(), Ordering::Relaxed);
        // (Re)build the set: after an error NVML may have freed it.
        let mut uuids: BTreeMap<String, u32> = BTreeMap::new();
        let mut set = match nvml.create_event_set() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create an NVML event set; retrying");
                std::thread::sleep(WAIT);
                continue;
            }
        };
        let count = nvml.device_count().unwrap_or(0);
        let mut registered = 0;
        let mut failed = false;
        for i in 0..count {
            let Ok(device) = nvml.device_by_index(i) else {
                continue;
            };
            if let Ok(uuid) = device.uuid() {
                uuids.insert(uuid, i);
            }
            if excluded.contains(&i) {
                continue;
            }
            let supported = match device.supported_event_types() {
                Ok(t) => t & wanted(),
                Err(_) => continue,
            };
            let Some(current) = set.take() else { break };
            if supported.is_empty() {
                set = Some(current);
                continue;
            }
            match device.register_events(supported, current) {
                Ok(s) => {
                    set = Some(s);
                    registered += 1;
                }
                Err(e) => {
                    tracing::warn!(gpu = i, error = %e.error, "cannot register this GPU's events; watching the others");
                    excluded.insert(i);
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        let Some(set) = set.filter(|_| registered > 0) else {
            // Nothing to wait on: stay alive, look again later.
            std::thread::sleep(WAIT);
            continue;
        };
        let wait_ms = u32::try_from(WAIT.as_millis()).unwrap_or(2000);
        while !stop.load(Ordering::Relaxed) {
            alive.store(now_secs(), Ordering::Relaxed);
            match set.wait(wait_ms) {
                Ok(data) => {
                    let uuid = data.device.uuid().ok();
                    let gpu = uuid
                        .as_ref()
                        .and_then(|u| uuids.get(u).copied())
                        .unwrap_or(u32::MAX);
                    let event = if data.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                        let xid = match data.event_data {
                            Some(XidError::Value(x)) => x,
                            _ => 0,
                        };
                        GpuEvent::Xid(XidEvent {
                            gpu,
                            uuid,
                            xid,
                            at_secs: now_secs(),
                        })
                    } else {
                        GpuEvent::Ecc {
                            gpu,
                            double_bit: data.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR),
                        }
                    };
                    if tx.try_send(event).is_err() {
                        tracing::debug!(
                            "GPU event dropped (the health loop is behind; the next probe reads the counters)"
                        );
                    }
                }
                Err(NvmlError::Timeout) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for GPU events failed; rebuilding the event set");
                    std::thread::sleep(WAIT);
                    break;
                }
            }
        }
    }
}
