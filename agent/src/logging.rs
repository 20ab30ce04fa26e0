//! Logging: journald when its socket exists (systemd units, lifecycle
//! scripts on systemd hosts), stderr otherwise. `HPK8S_LOG` (or `RUST_LOG`)
//! filters; the default is `info`.

use std::path::Path;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// journald's native-protocol socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Format of log lines on stderr.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: Format) {
    let filter = EnvFilter::try_from_env("HPK8S_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if Path::new(JOURNAL_SOCKET).exists()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry
            .with(journald.with_syslog_identifier("hpk8s".into()))
            .try_init();
        return;
    }
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        Format::Json => registry.with(stderr.json()).try_init(),
        Format::Text => registry.with(stderr).try_init(),
    };
}
