//! The NVML stub seen through the real `nvml-wrapper` API: every fault the
//! fixture can describe comes back where the GPU health probe will look.
//! Each test re-runs itself in a child process with its own fixture
//! (`harness::nvml::run_with_fixture`).
// Row remapping has no safe wrapper in nvml-wrapper 0.13: one raw call.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use harness::nvml::{
    FakeGpu, NvLinkErrors, NvmlFixture, RetireCause, run_with_fixture, stub_path, throttle,
};
use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    EccCounter, MemoryError, MemoryLocation, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;

fn init() -> Nvml {
    let stub = stub_path();
    Nvml::builder()
        .lib_path(stub.as_os_str())
        .init()
        .expect("init NVML from the stub")
}

/// `nvmlDeviceGetRemappedRows` through the raw library:
/// (corrected, uncorrected, pending, failure).
fn remapped_rows(
    nvml: &Nvml,
    device: &nvml_wrapper::Device,
) -> Result<(u32, u32, bool, bool), u32> {
    let (mut corr, mut unc, mut pending, mut failure) = (0, 0, 0, 0);
    // SAFETY: the handle belongs to a live device of this `Nvml`, and the four
    // out pointers are distinct live locals.
    let ret = unsafe {
        nvml.lib().nvmlDeviceGetRemappedRows(
            device.handle(),
            &mut corr,
            &mut unc,
            &mut pending,
            &mut failure,
        )
    };
    if ret != 0 {
        return Err(ret);
    }
    Ok((corr, unc, pending != 0, failure != 0))
}

fn faulty_fixture() -> NvmlFixture {
    NvmlFixture::new()
        .driver_version("550.90.07")
        .gpu(FakeGpu::h100(0))
        .gpu(
            FakeGpu::h100(1)
                .uuid("GPU-faulty-1")
                .pci_bus_id("00000000:64:00.0")
                .ecc_volatile(7, 2)
                .ecc_aggregate(70, 3)
                .retired_page(RetireCause::MultipleSingleBit, 0x1000, 1_700_000_000)
                .retired_page(RetireCause::DoubleBit, 0x2000, 1_700_000_100)
                .retired_page(RetireCause::DoubleBit, 0x3000, 1_700_000_200)
                .retired_pages_pending(true)
                .remapped_rows(1, 2, true, true)
                .temperature(91)
                .throttle_reasons(
                    throttle::HW_SLOWDOWN | throttle::HW_THERMAL_SLOWDOWN | throttle::SW_POWER_CAP,
                )
                .pcie_current(4, 8)
                .pcie_max(5, 16)
                .pcie_replays(42)
                .nvlink_down(3)
                .nvlink_errors(
                    2,
                    NvLinkErrors {
                        replay: 5,
                        crc_flit: 2,
                        ..NvLinkErrors::default()
                    },
                )
                .ecc_at("sram", (4, 1), (40, 1)),
        )
}

#[test]
fn inventory_and_health_faults_come_back_through_the_wrapper() {
    let Some(_) = run_with_fixture(
        "inventory_and_health_faults_come_back_through_the_wrapper",
        &faulty_fixture(),
    ) else {
        return;
    };
    let nvml = init();
    assert_eq!(nvml.sys_driver_version().unwrap(), "550.90.07");
    assert_eq!(nvml.device_count().unwrap(), 2);

    let healthy = nvml.device_by_index(0).unwrap();
    assert_eq!(healthy.name().unwrap(), "NVIDIA H100 80GB HBM3");
    assert_eq!(
        healthy
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            .unwrap(),
        0
    );
    assert!(
        healthy
            .retired_pages(RetirementCause::DoubleBitEccError)
            .unwrap()
            .is_empty()
    );
    assert!(!healthy.are_pages_pending_retired().unwrap());
    assert_eq!(remapped_rows(&nvml, &healthy), Ok((0, 0, false, false)));
    assert!(healthy.current_throttle_reasons().unwrap().is_empty());
    assert!(healthy.link_wrapper_for(17).is_active().unwrap());

    let gpu = nvml.device_by_index(1).unwrap();
    assert_eq!(gpu.uuid().unwrap(), "GPU-faulty-1");
    let pci = gpu.pci_info().unwrap();
    assert_eq!(pci.bus_id, "00000000:64:00.0");
    assert_eq!((pci.domain, pci.bus, pci.device), (0, 0x64, 0));
    assert_eq!(pci.pci_device_id, 0x2330_10de);

    for (error, counter, want) in [
        (MemoryError::Corrected, EccCounter::Volatile, 7),
        (MemoryError::Uncorrected, EccCounter::Volatile, 2),
        (MemoryError::Corrected, EccCounter::Aggregate, 70),
        (MemoryError::Uncorrected, EccCounter::Aggregate, 3),
    ] {
        assert_eq!(
            gpu.total_ecc_errors(error, counter).unwrap(),
            want,
            "{error:?} {counter:?}"
        );
        assert_eq!(
            gpu.memory_error_counter(error, counter, MemoryLocation::Device)
                .unwrap(),
            want
        );
    }
    let sram = |error, counter| {
        gpu.memory_error_counter(error, counter, MemoryLocation::SRAM)
            .unwrap()
    };
    assert_eq!(sram(MemoryError::Corrected, EccCounter::Volatile), 4);
    assert_eq!(sram(MemoryError::Uncorrected, EccCounter::Volatile), 1);
    assert_eq!(sram(MemoryError::Corrected, EccCounter::Aggregate), 40);
    assert_eq!(
        gpu.memory_error_counter(
            MemoryError::Uncorrected,
            EccCounter::Volatile,
            MemoryLocation::L1Cache
        )
        .unwrap(),
        0
    );

    let sbe = gpu
        .retired_pages(RetirementCause::MultipleSingleBitEccErrors)
        .unwrap();
    assert_eq!(
        sbe.iter()
            .map(|p| (p.address, p.timestamp))
            .collect::<Vec<_>>(),
        [(0x1000, 1_700_000_000)]
    );
    let dbe = gpu
        .retired_pages(RetirementCause::DoubleBitEccError)
        .unwrap();
    assert_eq!(
        dbe.iter().map(|p| p.address).collect::<Vec<_>>(),
        [0x2000, 0x3000]
    );
    assert!(gpu.are_pages_pending_retired().unwrap());
    assert_eq!(remapped_rows(&nvml, &gpu), Ok((1, 2, true, true)));

    assert_eq!(gpu.temperature(TemperatureSensor::Gpu).unwrap(), 91);
    let reasons = gpu.current_throttle_reasons().unwrap();
    assert_eq!(
        reasons,
        ThrottleReasons::HW_SLOWDOWN
            | ThrottleReasons::HW_THERMAL_SLOWDOWN
            | ThrottleReasons::SW_POWER_CAP
    );
    assert!(!reasons.contains(ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN));

    assert_eq!(gpu.current_pcie_link_gen().unwrap(), 4);
    assert_eq!(gpu.current_pcie_link_width().unwrap(), 8);
    assert_eq!(gpu.max_pcie_link_gen().unwrap(), 5);
    assert_eq!(gpu.max_pcie_link_width().unwrap(), 16);
    assert_eq!(gpu.pcie_replay_counter().unwrap(), 42);

    assert!(gpu.link_wrapper_for(2).is_active().unwrap());
    assert!(!gpu.link_wrapper_for(3).is_active().unwrap());
    assert!(matches!(
        gpu.link_wrapper_for(18).is_active(),
        Err(NvmlError::InvalidArg)
    ));
    let link2 = gpu.link_wrapper_for(2);
    assert_eq!(link2.error_counter(ErrorCounter::DlReplay).unwrap(), 5);
    assert_eq!(link2.error_counter(ErrorCounter::DlCrcFlit).unwrap(), 2);
    assert_eq!(link2.error_counter(ErrorCounter::DlRecovery).unwrap(), 0);
    let link3 = gpu.link_wrapper_for(3);
    assert_eq!(link3.error_counter(ErrorCounter::DlReplay).unwrap(), 0);

    let supported = gpu.supported_event_types().unwrap();
    assert!(supported.contains(
        EventTypes::CRITICAL_XID_ERROR
            | EventTypes::DOUBLE_BIT_ECC_ERROR
            | EventTypes::SINGLE_BIT_ECC_ERROR
    ));
}

#[test]
fn row_remapping_is_not_supported_before_a100() {
    let fixture = NvmlFixture::new().gpu(
        FakeGpu::h100(0)
            .name("Tesla V100-SXM2-16GB")
            .without_row_remapping(),
    );
    let Some(_) = run_with_fixture("row_remapping_is_not_supported_before_a100", &fixture) else {
        return;
    };
    let nvml = init();
    let gpu = nvml.device_by_index(0).unwrap();
    assert_eq!(
        remapped_rows(&nvml, &gpu),
        Err(3),
        "NVML_ERROR_NOT_SUPPORTED"
    );
}

#[test]
fn a_lost_gpu_reports_gpu_lost_also_after_the_fixture_changes() {
    let fixture = NvmlFixture::new()
        .gpu(FakeGpu::h100(0))
        .gpu(FakeGpu::h100(1).lost(true));
    let Some(path) = run_with_fixture(
        "a_lost_gpu_reports_gpu_lost_also_after_the_fixture_changes",
        &fixture,
    ) else {
        return;
    };
    let nvml = init();
    assert_eq!(nvml.device_count().unwrap(), 2, "a lost GPU still counts");
    assert!(matches!(nvml.device_by_index(1), Err(NvmlError::GpuLost)));

    // GPU 0 falls off the bus while the agent holds its handle.
    let gpu0 = nvml.device_by_index(0).unwrap();
    assert_eq!(gpu0.temperature(TemperatureSensor::Gpu).unwrap(), 35);
    let mut changed = fixture.clone();
    *changed.gpu_mut(0) = FakeGpu::h100(0).lost(true);
    changed.write(&path).unwrap();
    assert!(matches!(gpu0.uuid(), Err(NvmlError::GpuLost)));
    assert!(matches!(
        gpu0.temperature(TemperatureSensor::Gpu),
        Err(NvmlError::GpuLost)
    ));
    assert!(matches!(
        gpu0.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
        Err(NvmlError::GpuLost)
    ));

    // A rewrite that heals it is seen too: the fixture is re-read on change.
    *changed.gpu_mut(0) = FakeGpu::h100(0).temperature(50);
    changed.write(&path).unwrap();
    assert_eq!(gpu0.temperature(TemperatureSensor::Gpu).unwrap(), 50);
}

#[test]
fn init_errors_come_from_the_fixture() {
    let fixture = NvmlFixture::new().init_error(9);
    let Some(_) = run_with_fixture("init_errors_come_from_the_fixture", &fixture) else {
        return;
    };
    let stub = stub_path();
    let result = Nvml::builder().lib_path(stub.as_os_str()).init();
    assert!(
        matches!(result, Err(NvmlError::DriverNotLoaded)),
        "{result:?}"
    );
}

#[test]
fn a_scheduled_xid_arrives_through_an_event_set_on_time() {
    let fixture = NvmlFixture::new()
        .gpus((0..8).map(FakeGpu::h100))
        .xid(3, 79, 200);
    let Some(_) = run_with_fixture(
        "a_scheduled_xid_arrives_through_an_event_set_on_time",
        &fixture,
    ) else {
        return;
    };
    let nvml = init();
    let want_uuid = nvml.device_by_index(3).unwrap().uuid().unwrap();
    let started = Instant::now();
    // `wait` blocks: like the probe, run it on a dedicated thread.
    let (elapsed, xid, uuid, then) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut set = nvml.create_event_set().unwrap();
            for i in 0..nvml.device_count().unwrap() {
                let device = nvml.device_by_index(i).unwrap();
                set = device
                    .register_events(
                        EventTypes::CRITICAL_XID_ERROR
                            | EventTypes::DOUBLE_BIT_ECC_ERROR
                            | EventTypes::SINGLE_BIT_ECC_ERROR,
                        set,
                    )
                    .unwrap();
            }
            let event = set.wait(5_000).unwrap();
            let elapsed = started.elapsed();
            let uuid = event.device.uuid().unwrap();
            // Delivered once: the next wait times out.
            let then = set.wait(100);
            (elapsed, event.event_data, uuid, then.map(|e| e.event_data))
        })
        .join()
        .unwrap()
    });
    assert!(
        elapsed >= Duration::from_millis(200),
        "XID arrived after {elapsed:?}, scheduled at 200 ms"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "XID arrived late: {elapsed:?}"
    );
    assert!(matches!(xid, Some(XidError::Value(79))), "{xid:?}");
    assert_eq!(uuid, want_uuid);
    assert!(matches!(then, Err(NvmlError::Timeout)), "{then:?}");
}

#[test]
fn events_only_reach_sets_registered_for_that_gpu() {
    let fixture = NvmlFixture::new()
        .gpus((0..2).map(FakeGpu::h100))
        .xid(1, 48, 0);
    let Some(_) = run_with_fixture("events_only_reach_sets_registered_for_that_gpu", &fixture)
    else {
        return;
    };
    let nvml = init();
    let set = nvml.create_event_set().unwrap();
    let set = nvml
        .device_by_index(0)
        .unwrap()
        .register_events(EventTypes::CRITICAL_XID_ERROR, set)
        .unwrap();
    assert!(matches!(set.wait(50), Err(NvmlError::Timeout)));
    let set = nvml
        .device_by_index(1)
        .unwrap()
        .register_events(EventTypes::CRITICAL_XID_ERROR, set)
        .unwrap();
    let event = set.wait(1_000).unwrap();
    assert!(matches!(event.event_data, Some(XidError::Value(48))));
    // Unsupported event types are refused, as by the real driver.
    let set = nvml.create_event_set().unwrap();
    let refused = nvml
        .device_by_index(0)
        .unwrap()
        .register_events(EventTypes::CLOCK_CHANGE, set);
    assert!(
        matches!(refused, Err(ref e) if matches!(e.error, NvmlError::NotSupported)),
        "{:?}",
        refused.err()
    );
}
