//! Prometheus metrics of the node agent on a loopback port
//! (`gpu_health.metrics_address`): per-GPU health class, XIDs by code, ECC
//! and retired-page counters, temperature, the probe's duration and the
//! last successful publish. The text format, served to `GET /metrics`; the
//! server answers one request per connection and reads at most 8 KiB.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::gpu_health::HealthState;
use crate::gpu::classify::Class;
use crate::gpu::signals::Signal;

/// Every class, for the one-hot health gauge.
const CLASSES: [Class; 6] = [
    Class::Healthy,
    Class::Informational,
    Class::Degraded,
    Class::ProbeFailed,
    Class::Reboot,
    Class::Replace,
];

/// Label values are quoted; backslash, quote and newline escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `# HELP` and `# TYPE` of a metric family.
fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The metrics text for `state`.
pub fn render(state: &HealthState) -> String {
    let mut text = String::new();
    header(
        &mut text,
        "hpk8s_gpu_node_has_gpus",
        "gauge",
        "Whether the node has NVIDIA GPUs on its PCI bus.",
    );
    let _ = writeln!(text, "hpk8s_gpu_node_has_gpus {}", u8::from(state.has_gpus));
    if let Some(report) = &state.report {
        let s = &report.snapshot;
        header(
            &mut text,
            "hpk8s_gpu_health",
            "gauge",
            "1 for the GPU's current health class (node-wide faults count for every GPU).",
        );
        for g in &s.gpus {
            let class = report
                .faults
                .iter()
                .filter(|f| f.gpu.is_none_or(|i| i == g.index))
                .map(|f| f.class)
                .max()
                .unwrap_or(Class::Healthy);
            for c in CLASSES {
                let _ = writeln!(
                    text,
                    "hpk8s_gpu_health{{gpu=\"{}\",uuid=\"{}\",class=\"{}\"}} {}",
                    g.index,
                    esc(g.uuid.as_deref().unwrap_or("")),
                    c.as_str(),
                    u8::from(c == class)
                );
            }
        }
        header(
            &mut text,
            "hpk8s_gpu_ecc_errors",
            "gauge",
            "ECC error counters by kind.",
        );
        for g in &s.gpus {
            if let Signal::Value(e) = &g.ecc {
                for (kind, v) in [
                    ("volatile_uncorrected", e.volatile_uncorrected),
                    ("volatile_corrected", e.volatile_corrected),
                    ("aggregate_uncorrected", e.aggregate_uncorrected),
                    ("aggregate_corrected", e.aggregate_corrected),
                ] {
                    let _ = writeln!(
                        text,
                        "hpk8s_gpu_ecc_errors{{gpu=\"{}\",kind=\"{kind}\"}} {v}",
                        g.index
                    );
                }
            }
        }
        header(
            &mut text,
            "hpk8s_gpu_retired_pages",
            "gauge",
            "Retired memory pages.",
        );
        for g in &s.gpus {
            if let Signal::Value(v) = g.retired_pages {
                let _ = writeln!(text, "hpk8s_gpu_retired_pages{{gpu=\"{}\"}} {v}", g.index);
            }
        }
        header(
            &mut text,
            "hpk8s_gpu_temperature_celsius",
            "gauge",
            "GPU core temperature.",
        );
        for g in &s.gpus {
            if let Signal::Value(v) = g.temperature_c {
                let _ = writeln!(
                    text,
                    "hpk8s_gpu_temperature_celsius{{gpu=\"{}\"}} {v}",
                    g.index
                );
            }
        }
        header(
            &mut text,
            "hpk8s_gpu_probe_duration_seconds",
            "gauge",
            "How long the last probe took.",
        );
        let _ = writeln!(
            text,
            "hpk8s_gpu_probe_duration_seconds {}",
            s.duration_us as f64 / 1e6
        );
        header(
            &mut text,
            "hpk8s_gpus",
            "gauge",
            "GPUs counted by NVML and on the PCI bus.",
        );
        let _ = writeln!(text, "hpk8s_gpus{{source=\"nvml\"}} {}", s.nvml_gpus);
        let _ = writeln!(text, "hpk8s_gpus{{source=\"pci\"}} {}", s.pci_gpus);
    }
    header(
        &mut text,
        "hpk8s_gpu_xid_total",
        "counter",
        "XIDs reported since the agent started, by code.",
    );
    for (xid, n) in &state.xid_counts {
        let _ = writeln!(text, "hpk8s_gpu_xid_total{{xid=\"{xid}\"}} {n}");
    }
    header(
        &mut text,
        "hpk8s_gpu_last_publish_timestamp_seconds",
        "gauge",
        "When the GPU condition was last published successfully (Unix time; 0: never).",
    );
    let last = state
        .last_publish
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(text, "hpk8s_gpu_last_publish_timestamp_seconds {last}");
    text
}

/// Serves `render(state)` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<Mutex<HealthState>>) {
    serve_text(listener, move || {
        let st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        render(&st)
    })
    .await;
}

/// Serves what `render` returns at `GET /metrics` on `listener` until the
/// task is dropped (the controller's remediation metrics use it too).
pub async fn serve_text(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    let render = Arc::new(render);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(k)) => {
                        n += k;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let first = request.lines().next().unwrap_or("");
            let (status, body) = if first.starts_with("GET /metrics ") || first == "GET /metrics" {
                ("200 OK", render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
