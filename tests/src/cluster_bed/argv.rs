//! Samples every process's argument list while a scenario runs, to prove a
//! secret never appeared in one (any local user can read
//! `/proc/<pid>/cmdline`), and every process's environment, to prove that
//! hpk8s's own credentials (`AWS_SECRET_ACCESS_KEY`) never reach the
//! commands it runs (kubeadm, apt, curl, maintainer scripts). The host's
//! `/proc` shows the processes of every test node too.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Argument lists of processes started (directly or not) by an hpk8s
    /// process, with the environment entries seen for them.
    environs: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    samples: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArgvRecorder {
    /// Starts sampling every [`SAMPLE_EVERY`].
    pub fn start() -> Self {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let environs = Arc::new(Mutex::new(BTreeMap::new()));
        let samples = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, environs, samples, stop) = (
                seen.clone(),
                environs.clone(),
                samples.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("argv-recorder".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        sample(&seen, &environs);
                        samples.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(SAMPLE_EVERY);
                    }
                })
                .ok()
        };
        Self {
            seen,
            environs,
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
        sample(&self.seen, &self.environs);
        lock(&self.seen)
            .iter()
            .filter(|a| a.contains(needle))
            .cloned()
            .collect()
    }

    /// The argument lists of processes hpk8s started (its descendants, not
    /// hpk8s itself) whose environment held `needle` (in a variable's name
    /// or value).
    pub fn environ_matching(&self, needle: &str) -> Vec<String> {
        sample(&self.seen, &self.environs);
        lock(&self.environs)
            .iter()
            .filter(|(_, env)| env.iter().any(|e| e.contains(needle)))
            .map(|(argv, _)| argv.clone())
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

/// One pass over `/proc`: argument lists, and the environment of every
/// process descending from an hpk8s process.
fn sample(seen: &Mutex<BTreeSet<String>>, environs: &Mutex<BTreeMap<String, BTreeSet<String>>>) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let split = |raw: &[u8]| -> Vec<String> {
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    // pid → (parent pid, argument list, environment)
    let mut table: BTreeMap<u32, (u32, String, Vec<String>)> = BTreeMap::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue;
        }
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let ppid = std::fs::read_to_string(p.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        let env = std::fs::read(p.path().join("environ"))
            .map(|raw| split(&raw))
            .unwrap_or_default();
        table.insert(pid, (ppid, split(&raw).join(" "), env));
    }
    let is_hpk8s = |argv: &str| {
        let first = argv.split_whitespace().next().unwrap_or("");
        first.rsplit('/').next() == Some("hpk8s")
    };
    let descends_from_hpk8s = |mut pid: u32| {
        for _ in 0..64 {
            let Some((ppid, _, _)) = table.get(&pid) else {
                return false;
            };
            match table.get(ppid) {
                Some((_, argv, _)) if is_hpk8s(argv) => return true,
                Some(_) => pid = *ppid,
                None => return false,
            }
        }
        false
    };
    let mut environs = lock(environs);
    let mut seen = lock(seen);
    for (pid, (_, argv, env)) in &table {
        if descends_from_hpk8s(*pid) && !is_hpk8s(argv) {
            environs
                .entry(argv.clone())
                .or_default()
                .extend(env.iter().cloned());
        }
        seen.insert(argv.clone());
    }
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
        // A process named hpk8s (a copy of sh) whose child inherits a
        // marked environment.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("hpk8s");
        std::fs::copy("/bin/sh", &fake).unwrap();
        let mut child = std::process::Command::new(&fake)
            .args(["-c", "sh -c 'sleep 0.3; true'; true"])
            .env("HPK8S_ENV_PROBE", &needle)
            .spawn()
            .unwrap();
        child.wait().unwrap();
        let found = recorder.environ_matching(&needle);
        assert!(
            found.iter().any(|a| a == "sh -c sleep 0.3; true"),
            "{found:?}"
        );
        // hpk8s itself is not reported (it is given credentials on purpose).
        assert!(!found.iter().any(|a| a.contains("/hpk8s")), "{found:?}");
        assert!(recorder.samples() > 0);
    }
}
