//! Samples every process's argument list while a scenario runs, to prove a
//! secret never appeared in one (any local user can read
//! `/proc/<pid>/cmdline`). The host's `/proc` shows the processes of every
//! test node too.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often `/proc` is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A background thread recording every distinct argument list seen in
/// `/proc/*/cmdline` (arguments joined with spaces); stops on drop.
#[derive(Debug)]
pub struct ArgvRecorder {
    seen: Arc<Mutex<BTreeSet<String>>>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArgvRecorder {
    /// Starts sampling every [`SAMPLE_EVERY`].
    pub fn start() -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let samples = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, samples, stop) = (seen.clone(), samples.clone(), stop.clone());
            std::thread::Builder::new()
                .name("argv-recorder".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        sample(&seen);
                        samples.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })
                .ok()
        };
        Self {
            seen,
            samples,
            stop,
            thread,
        }
    }

    /// Whether any argument list seen so far contains `needle`.
    pub fn saw(&self, needle: &str) -> bool {
        !self.matching(needle).is_empty()
    }

    /// The argument lists seen so far that contain `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        sample(&self.seen);
        lock(&self.seen)
            .iter()
            .filter(|a| a.contains(needle))
            .cloned()
            .collect()
    }

    /// Every distinct argument list seen so far.
    pub fn all(&self) -> Vec<String> {
        lock(&self.seen).iter().cloned().collect()
    }

    /// How many times `/proc` was sampled (a recorder that never ran
    /// proves nothing).
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::SeqCst)
    }

    /// Stops sampling (what was seen stays readable).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ArgvRecorder {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One pass over `/proc`.
fn sample(seen: &Mutex<BTreeSet<String>>) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut batch = Vec::new();
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        batch.push(args.join(" "));
    }
    lock(seen).extend(batch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // test harness launches real components
    fn sees_a_short_lived_argument() {
        let recorder = ArgvRecorder::start();
        let needle = format!("hpk8s-argv-probe-{}", std::process::id());
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3", &needle])
            .spawn()
            .unwrap();
        child.wait().unwrap();
        assert!(recorder.saw(&needle));
        assert!(!recorder.saw("hpk8s-argv-never-ran"));
        assert!(recorder.samples() > 0);
    }
}
