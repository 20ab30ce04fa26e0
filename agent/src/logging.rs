//! Logging: journald when its socket exists (systemd units, lifecycle
//! scripts on systemd hosts), stderr otherwise. `HPK8S_LOG` (or `RUST_LOG`)
//! filters; the default is `info`.

use std::io::IsTerminal;
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

/// Installs the global subscriber; returns whether logs go to journald
/// (then errors must also be logged there, not only printed).
pub fn init(format: Format) -> bool {
    let filter = EnvFilter::try_from_env("HPK8S_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = Path::new(JOURNAL_SOCKET)
        .exists()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|j| j.with_syslog_identifier("hpk8s".into()));
    let to_journal = journald.is_some();
    // An operator at a terminal sees progress even when the journal gets it too.
    let to_stderr = !to_journal || std::io::stderr().is_terminal();
    let text = (to_stderr && format == Format::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let json = (to_stderr && format == Format::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(text)
        .with(json)
        .try_init();
    to_journal
}
