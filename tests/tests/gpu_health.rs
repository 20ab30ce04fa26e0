//! GPU health from fixture to class, reason and condition: the NVML stub
//! (`tests/nvml-stub`) seen through the real nvml-wrapper by hpk8s's probe,
//! classified with the default policy (NVIDIA's XID catalog, DCGM's
//! limits), then turned into the Node condition. Each scenario runs in a
//! child process with its own fixture (`harness::nvml::run_with_fixture`).

#![allow(clippy::unwrap_used)] // test code: a panic with its location is the failure report

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use harness::nvml::{FakeGpu, NvmlFixture, RetireCause, run_with_fixture, stub_path, throttle};
use lifecycle::config::GpuHealthConfig;
use lifecycle::gpu::check::{self, Report, Verdict};
use lifecycle::gpu::classify::{Class, Observed, Trend, XidEvent, classify};
use lifecycle::gpu::condition::{GPU_HEALTHY, condition};
use lifecycle::gpu::history::{BOOT_ID, History};
use lifecycle::gpu::signals::{Library, Signal};
use lifecycle::host::{FixedInterfaces, Host, ScriptedRunner};

const BOOT: &str = "6f0a6c2e-1111-4222-8333-444455556666";

/// A fake root with `gpus` NVIDIA GPUs (H100) and `efa` EFA adapters on the
/// PCI bus, and a boot id.
fn root(gpus: u32, efa: u32) -> (tempfile::TempDir, Host) {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: String, text: &str| {
        let p = dir.path().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    for i in 0..gpus {
        let d = format!("sys/bus/pci/devices/0000:{:02x}:00.0", 0x53 + i * 0x10);
        write(format!("{d}/vendor"), "0x10de\n");
        write(format!("{d}/device"), "0x2330\n");
        write(format!("{d}/class"), "0x030200\n");
    }
    for i in 0..efa {
        let d = format!("sys/bus/pci/devices/0000:{:02x}:01.0", 0x10 + i);
        write(format!("{d}/vendor"), "0x1d0f\n");
        write(format!("{d}/device"), "0xefa1\n");
        write(format!("{d}/class"), "0x020000\n");
    }
    write(BOOT_ID.to_string(), &format!("{BOOT}\n"));
    let host = Host::new(
        dir.path(),
        Arc::new(ScriptedRunner::new()),
        Arc::new(FixedInterfaces::default()),
    );
    (dir, host)
}

fn policy() -> GpuHealthConfig {
    GpuHealthConfig {
        library_path: Some(stub_path()),
        probe_timeout_secs: 5,
        ..GpuHealthConfig::default()
    }
}

fn eight() -> NvmlFixture {
    NvmlFixture::new().gpus((0..8).map(FakeGpu::h100))
}

/// XIDs of this boot, as the node agent records them.
fn record_xids(host: &Host, xids: &[(u32, u64, u64)]) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let events: Vec<XidEvent> = xids
        .iter()
        .map(|(gpu, xid, ago)| XidEvent {
            gpu: *gpu,
            uuid: Some(format!("GPU-5a1c0d2e-0000-4000-8000-{gpu:012x}")),
            xid: *xid,
            at_secs: now - ago,
        })
        .collect();
    let mut h = History::default();
    h.record(BOOT, &events, &[]);
    h.save(host).unwrap();
}

fn check_p5(host: &Host) -> Report {
    check::check(host, &policy(), Some("p5.48xlarge".into()))
}

/// Asserts the worst class, that `reason` is among the faults of that
/// class, and the condition's status and reason.
fn expect(report: &Report, class: Class, reason: &str, status: &str, cond_reason: &str) {
    assert_eq!(report.worst, class, "{:#?}", report.faults);
    if !reason.is_empty() {
        assert!(
            report
                .faults
                .iter()
                .any(|f| f.class == class && f.reason == reason),
            "no {} fault {reason}: {:#?}",
            class.as_str(),
            report.faults
        );
    }
    let c = condition(&report.faults, report.snapshot.nvml_gpus);
    assert_eq!(c.type_, GPU_HEALTHY);
    assert_eq!((c.status, c.reason), (status, cond_reason), "{c:?}");
    assert!(!c.message.contains('\n'), "{c:?}");
}

macro_rules! scenario {
    ($name:ident, $fixture:expr, |$host:ident| $body:block) => {
        #[test]
        fn $name() {
            let fixture: NvmlFixture = $fixture;
            if run_with_fixture(stringify!($name), &fixture).is_none() {
                return;
            }
            let (_dir, $host) = root(8, 32);
            $body
        }
    };
}

scenario!(healthy_p5_is_healthy_and_fast, eight(), |host| {
    let r = check_p5(&host);
    expect(&r, Class::Healthy, "", "True", "GPUsHealthy");
    assert_eq!(r.snapshot.nvml_gpus, 8);
    assert!(matches!(r.snapshot.library, Library::Loaded(_)));
    // Every GPU's signals came back.
    let g = &r.snapshot.gpus[3];
    assert!(matches!(g.ecc, Signal::Value(_)));
    assert!(matches!(g.row_remap, Signal::Value(_)));
    assert!(matches!(g.nvlink, Signal::Value(ref l) if l.count == 18 && l.inactive.is_empty()));
    assert!(Verdict::of(&r).is_none());
});

scenario!(xid_79_needs_replacement, eight(), |host| {
    record_xids(&host, &[(3, 79, 5)]);
    let r = check_p5(&host);
    expect(&r, Class::Replace, "xid-79", "False", "GPUNeedsReplacement");
    let f = &r.faults[0];
    assert_eq!(f.gpu, Some(3));
    assert!(f.uuid.as_deref().unwrap().ends_with("000000000003"));
    let c = condition(&r.faults, 8);
    assert!(
        c.message.contains("GPU 3") && c.message.contains("XID 79"),
        "{c:?}"
    );
});

scenario!(xid_48_needs_a_reboot, eight(), |host| {
    record_xids(&host, &[(1, 48, 5)]);
    expect(
        &check_p5(&host),
        Class::Reboot,
        "xid-48",
        "False",
        "GPUNeedsReboot",
    );
});

scenario!(xid_13_once_is_informational, eight(), |host| {
    record_xids(&host, &[(0, 13, 5)]);
    let r = check_p5(&host);
    expect(&r, Class::Informational, "xid-13", "True", "GPUsHealthy");
    assert!(condition(&r.faults, 8).message.contains("recorded: GPU 0"));
    assert!(Verdict::of(&r).is_none());
});

scenario!(xid_13_flood_degrades_by_rate, eight(), |host| {
    let flood: Vec<(u32, u64, u64)> = (0..25).map(|i| (2, 13, i * 10)).collect();
    record_xids(&host, &flood);
    expect(
        &check_p5(&host),
        Class::Degraded,
        "xid-rate",
        "False",
        "GPUDegraded",
    );
});

scenario!(
    xid_13_spread_over_hours_stays_informational,
    eight(),
    |host| {
        // The same count outside the window is no flood.
        let slow: Vec<(u32, u64, u64)> = (0..25).map(|i| (2, 13, 700 + i * 600)).collect();
        record_xids(&host, &slow);
        expect(
            &check_p5(&host),
            Class::Informational,
            "xid-13",
            "True",
            "GPUsHealthy",
        );
    }
);

scenario!(xid_109_needs_a_reboot, eight(), |host| {
    record_xids(&host, &[(4, 109, 5)]);
    expect(
        &check_p5(&host),
        Class::Reboot,
        "xid-109",
        "False",
        "GPUNeedsReboot",
    );
});

scenario!(xid_119_needs_a_reboot, eight(), |host| {
    record_xids(&host, &[(4, 119, 5)]);
    expect(
        &check_p5(&host),
        Class::Reboot,
        "xid-119",
        "False",
        "GPUNeedsReboot",
    );
});

scenario!(xid_94_is_informational, eight(), |host| {
    record_xids(&host, &[(4, 94, 5)]);
    expect(
        &check_p5(&host),
        Class::Informational,
        "xid-94",
        "True",
        "GPUsHealthy",
    );
});

scenario!(
    uncorrected_ecc_needs_a_reboot,
    {
        let mut f = eight();
        *f.gpu_mut(5) = FakeGpu::h100(5).ecc_volatile(7, 2);
        f
    },
    |host| {
        let r = check_p5(&host);
        expect(
            &r,
            Class::Reboot,
            "ecc-uncorrected",
            "False",
            "GPUNeedsReboot",
        );
        assert!(r.faults[0].evidence.contains('2'), "{:?}", r.faults[0]);
    }
);

scenario!(
    pending_row_remap_needs_a_reboot,
    {
        let mut f = eight();
        *f.gpu_mut(6) = FakeGpu::h100(6).remapped_rows(0, 1, true, false);
        f
    },
    |host| {
        expect(
            &check_p5(&host),
            Class::Reboot,
            "row-remap-pending",
            "False",
            "GPUNeedsReboot",
        );
    }
);

scenario!(
    row_remap_failure_needs_replacement,
    {
        let mut f = eight();
        *f.gpu_mut(6) = FakeGpu::h100(6).remapped_rows(0, 8, false, true);
        f
    },
    |host| {
        expect(
            &check_p5(&host),
            Class::Replace,
            "row-remap-failure",
            "False",
            "GPUNeedsReplacement",
        );
    }
);

scenario!(
    retired_pages_at_the_limit_need_replacement,
    {
        let mut f = eight();
        let mut g = FakeGpu::h100(2);
        for i in 0..63u64 {
            g = g.retired_page(RetireCause::DoubleBit, 4096 * (i + 1), 1_700_000_000 + i);
        }
        *f.gpu_mut(2) = g;
        f
    },
    |host| {
        expect(
            &check_p5(&host),
            Class::Replace,
            "retired-pages-limit",
            "False",
            "GPUNeedsReplacement",
        );
    }
);

scenario!(
    nvlink_down_needs_a_reboot,
    {
        let mut f = eight();
        *f.gpu_mut(1) = FakeGpu::h100(1).nvlink_down(7);
        f
    },
    |host| {
        let r = check_p5(&host);
        expect(&r, Class::Reboot, "nvlink-down", "False", "GPUNeedsReboot");
        assert!(r.faults[0].evidence.contains("[7]"), "{:?}", r.faults[0]);
    }
);

scenario!(
    pcie_below_its_width_is_degraded,
    {
        let mut f = eight();
        *f.gpu_mut(0) = FakeGpu::h100(0).pcie_current(5, 8);
        f
    },
    |host| {
        expect(
            &check_p5(&host),
            Class::Degraded,
            "pcie-width-8-of-16",
            "False",
            "GPUDegraded",
        );
    }
);

scenario!(
    hw_thermal_slowdown_is_degraded_only_when_sustained,
    {
        let mut f = eight();
        *f.gpu_mut(7) = FakeGpu::h100(7).throttle_reasons(throttle::HW_THERMAL_SLOWDOWN);
        f
    },
    |host| {
        // A one-shot check sees it once: recorded, not acted on.
        expect(
            &check_p5(&host),
            Class::Informational,
            "hw-slowdown-observed",
            "True",
            "GPUsHealthy",
        );
        // The agent has seen it for two minutes.
        let snapshot = check::probe_with_deadline(
            &policy(),
            lifecycle::hardware::Hardware::detect(&host).unwrap(),
            Some("p5.48xlarge".into()),
        );
        let now = SystemTime::now();
        let mut trend = Trend::default();
        trend
            .slowdown_since
            .insert(7, now - Duration::from_secs(120));
        let faults = classify(
            &Observed {
                snapshot: &snapshot,
                xids: &[],
                trend: &trend,
                earlier: &[],
                now,
            },
            &policy(),
        );
        assert_eq!(faults[0].reason, "hw-slowdown");
        assert_eq!(faults[0].class, Class::Degraded);
    }
);

scenario!(
    sw_power_cap_alone_is_normal,
    {
        let mut f = eight();
        *f.gpu_mut(7) = FakeGpu::h100(7).throttle_reasons(throttle::SW_POWER_CAP);
        f
    },
    |host| {
        expect(&check_p5(&host), Class::Healthy, "", "True", "GPUsHealthy");
    }
);

scenario!(
    a_lost_gpu_needs_a_reboot,
    {
        let mut f = eight();
        *f.gpu_mut(3) = FakeGpu::h100(3).lost(true);
        f
    },
    |host| {
        expect(
            &check_p5(&host),
            Class::Reboot,
            "gpu-lost",
            "False",
            "GPUNeedsReboot",
        );
    }
);

scenario!(
    seven_of_eight_gpus_on_p5_is_a_missing_gpu,
    NvmlFixture::new().gpus((0..7).map(FakeGpu::h100)),
    |host| {
        let (_d, seven_on_pci) = root(7, 32);
        // The instance type says 8 even when the bus shows 7.
        let r = check_p5(&seven_on_pci);
        expect(
            &r,
            Class::Reboot,
            "gpu-count-7-of-8",
            "False",
            "GPUNeedsReboot",
        );
        assert!(
            r.faults[0].evidence.contains("p5.48xlarge has 8"),
            "{:?}",
            r.faults[0]
        );
        // And the bus showing 8 with NVML counting 7, type unknown.
        let r = check::check(&host, &policy(), None);
        expect(
            &r,
            Class::Reboot,
            "gpu-count-7-of-8",
            "False",
            "GPUNeedsReboot",
        );
    }
);

scenario!(missing_efa_adapters_degrade, eight(), |host| {
    let (_d, fewer) = root(8, 30);
    expect(
        &check_p5(&fewer),
        Class::Degraded,
        "efa-count-30-of-32",
        "False",
        "GPUDegraded",
    );
    let _ = host;
});

scenario!(
    a_library_without_some_calls_leaves_those_signals_unavailable,
    eight(),
    |host| {
        // The stub has no nvmlDeviceGetPowerUsage: unavailable, not a fault.
        let r = check_p5(&host);
        expect(&r, Class::Healthy, "", "True", "GPUsHealthy");
        match &r.snapshot.gpus[0].power_mw {
            Signal::Unavailable(why) => assert!(why.contains("power"), "{why}"),
            other => panic!("power should be unavailable: {other:?}"),
        }
    }
);

scenario!(
    gpus_on_the_bus_without_a_driver_is_a_fault,
    eight(),
    |host| {
        let cfg = GpuHealthConfig {
            library_path: Some(Path::new("/nonexistent/libnvidia-ml.so.1").to_path_buf()),
            ..policy()
        };
        let r = check::check(&host, &cfg, Some("p5.48xlarge".into()));
        assert!(
            matches!(r.snapshot.library, Library::NoDriver(_)),
            "{:?}",
            r.snapshot.library
        );
        expect(&r, Class::Reboot, "no-driver", "False", "GPUNeedsReboot");
        // A CPU node without a driver: healthy and quiet.
        let (_d, cpu) = root(0, 0);
        let r = check::check(&cpu, &cfg, Some("m5.2xlarge".into()));
        expect(&r, Class::Healthy, "", "True", "NoGPUs");
        assert!(!r.has_gpus());
        assert!(check::render_text(&r).starts_with("no NVIDIA GPUs on this node"));
    }
);

scenario!(
    nvml_init_error_is_probe_failed_never_a_hardware_fault,
    eight().init_error(18),
    |host| {
        let r = check_p5(&host);
        expect(
            &r,
            Class::ProbeFailed,
            "nvml-failed",
            "Unknown",
            "GPUProbeFailed",
        );
        assert!(
            r.faults.iter().all(|f| f.class == Class::ProbeFailed),
            "{:#?}",
            r.faults
        );
        assert_eq!(
            lifecycle::Error::from(Verdict::of(&r).unwrap()).kind(),
            "gpu_probe_failed"
        );
    }
);

scenario!(
    a_hung_driver_call_is_probe_failed,
    eight().call_delay_ms(3000),
    |host| {
        let cfg = GpuHealthConfig {
            probe_timeout_secs: 1,
            ..policy()
        };
        let started = std::time::Instant::now();
        let r = check::check(&host, &cfg, Some("p5.48xlarge".into()));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        expect(
            &r,
            Class::ProbeFailed,
            "nvml-failed",
            "Unknown",
            "GPUProbeFailed",
        );
        assert!(
            r.faults[0].evidence.contains("did not return within 1 s"),
            "{:?}",
            r.faults[0]
        );
    }
);

scenario!(
    a_reboot_fault_that_comes_back_after_a_reboot_needs_replacement,
    eight(),
    |host| {
        // The last boot saw XID 48 on GPU 1; this boot sees it again.
        let uuid = "GPU-5a1c0d2e-0000-4000-8000-000000000001";
        let mut h = History::default();
        h.record(
            "earlier-boot",
            &[],
            &[lifecycle::gpu::classify::Fault {
                class: Class::Reboot,
                reason: "xid-48".into(),
                gpu: Some(1),
                uuid: Some(uuid.into()),
                evidence: String::new(),
                message: String::new(),
            }],
        );
        h.save(&host).unwrap();
        let mut h = History::load(&host);
        h.record(
            BOOT,
            &[XidEvent {
                gpu: 1,
                uuid: Some(uuid.into()),
                xid: 48,
                at_secs: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            }],
            &[],
        );
        h.save(&host).unwrap();
        let r = check_p5(&host);
        expect(&r, Class::Replace, "xid-48", "False", "GPUNeedsReplacement");
        assert!(r.faults[0].message.contains("came back after a reboot"));
        // Cleared history: a reboot-class fault again.
        lifecycle::gpu::history::clear(&host).unwrap();
        record_xids(&host, &[(1, 48, 5)]);
        expect(
            &check_p5(&host),
            Class::Reboot,
            "xid-48",
            "False",
            "GPUNeedsReboot",
        );
    }
);

/// The keys of every object in `v`, by path (`""`, `faults[]`,
/// `snapshot.gpus[]`, …), arrays merged.
fn shape(
    v: &serde_json::Value,
    path: &str,
    out: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) {
    match v {
        serde_json::Value::Object(m) => {
            let keys = out.entry(path.to_string()).or_default();
            keys.extend(m.keys().cloned());
            for (k, v) in m {
                // Signals are {"value": …} or {"unavailable": …}: one shape.
                if v.get("value").is_some() || v.get("unavailable").is_some() {
                    continue;
                }
                shape(v, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                shape(v, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The example of `docs/gpu-health.md` (its JSON block, `…` made strings).
fn documented_example() -> serde_json::Value {
    let doc =
        std::fs::read_to_string(harness::workspace_root().join("docs/gpu-health.md")).unwrap();
    let block = doc
        .split("```json\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    serde_json::from_str(&block.replace("\"GPU-…\"", "\"GPU-x\"")).unwrap()
}

scenario!(
    gpu_check_json_matches_the_documented_schema_and_exits_by_class,
    {
        let mut f = eight();
        *f.gpu_mut(1) = FakeGpu::h100(1).ecc_volatile(0, 3);
        f
    },
    |host| {
        let config = host.path("/etc/hpk8s/config.toml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
        &config,
        format!(
            "[identity]\nsource = \"local\"\n[node]\naddress = \"10.9.9.9\"\n[gpu_health]\nlibrary_path = \"{}\"\n",
            stub_path().display()
        ),
    )
    .unwrap();
        #[allow(clippy::disallowed_methods)] // the binary under test
        let out = std::process::Command::new(harness::hpk8s_bin())
            .args([
                "--root",
                host.root().to_str().unwrap(),
                "gpu-check",
                "--output",
                "json",
            ])
            .env("HPK8S_LOG", "off")
            .output()
            .unwrap();
        // Reboot class: the host class's code.
        assert_eq!(
            out.status.code(),
            Some(11),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .starts_with("error[gpu_needs_reboot]: GPU check: reboot (GPU 1 ecc-uncorrected)"),
            "{stderr}"
        );
        // Exactly one JSON document on stdout: the report.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["worst"], "reboot");
        let (mut got, mut want) = (Default::default(), Default::default());
        shape(&report, "", &mut got);
        shape(&documented_example(), "", &mut want);
        assert_eq!(got, want, "the JSON differs from docs/gpu-health.md");
    }
);
