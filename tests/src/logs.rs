//! Every log line a test binary emits, for assertions on what is (progress
//! lines) and is not (a token, a password) logged.
//!
//! One process-wide subscriber at TRACE level: a thread-local one misses
//! events from the runtime's other threads and from callsites another test
//! registered first. Tests of one binary share the buffer, so each looks
//! for what is its own (its token, its node names).

use std::sync::{Arc, Mutex, OnceLock};

/// The shared buffer the subscriber writes to.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// The capture, installed as the global subscriber on first use.
    pub fn global() -> CapturedLogs {
        static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = CapturedLogs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            // Fails only if another subscriber is already global, which
            // the test then notices by not finding its lines.
            let _ = tracing_subscriber::util::SubscriberInitExt::try_init(subscriber);
            logs
        })
        .clone()
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}
