//! Plan, then apply.
//!
//! Every step compares what is on the host with what should be there and
//! returns the difference as a list of [`Change`]s: plain data that can be
//! printed (`--dry-run`), serialised (`--output json`), compared against
//! golden files, and applied by [`apply`]. A step whose host is already right
//! returns no changes, which is what makes re-runs cheap and idempotent.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::download::{Downloaded, download};
use crate::error::class::{ExitClass, classify};
use crate::host::fs::mask_credentials;
use crate::host::{Cmd, CommandError, FileMode, FsError, Host};
use crate::values::time::human;

/// One concrete change to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// Create or replace a file (atomically).
    WriteFile {
        /// Host path.
        path: PathBuf,
        /// Mode and owner.
        mode: FileMode,
        /// New contents (never serialised nor shown: they may be secret).
        #[serde(skip)]
        contents: FileContents,
        /// Unified diff from the current contents, or a note when secret.
        diff: String,
        /// Whether the file did not exist before.
        created: bool,
    },
    /// Remove a file.
    RemoveFile {
        /// Host path.
        path: PathBuf,
    },
    /// Create a directory (and parents).
    CreateDir {
        /// Host path.
        path: PathBuf,
    },
    /// Set a kernel parameter now (persisting it is a separate `WriteFile`).
    Sysctl {
        /// Dotted key, e.g. `net.ipv4.ip_forward`.
        key: String,
        /// Current value, when readable.
        current: Option<String>,
        /// Wanted value.
        wanted: String,
    },
    /// Run a command.
    Run {
        /// The command (secrets redacted when shown).
        command: Cmd,
        /// Why it is needed.
        reason: String,
    },
    /// Start, stop, restart, enable or reload a systemd unit.
    Service {
        /// Unit name, e.g. `containerd.service`.
        unit: String,
        /// What to do.
        operation: ServiceOperation,
        /// Why.
        reason: String,
    },
    /// Download a file, verify its SHA-256 and install it; nothing is
    /// installed when the digest does not match.
    Download {
        /// Source URL (credentials redacted when shown or serialised).
        url: SourceUrl,
        /// Expected SHA-256, hex.
        sha256: String,
        /// Host path to install to.
        path: PathBuf,
        /// Mode and owner.
        mode: FileMode,
    },
    /// Wait until a probe command succeeds, up to a deadline.
    WaitFor {
        /// What we wait for, in words.
        what: String,
        /// Command that exits 0 once ready.
        probe: Cmd,
        /// Deadline in seconds.
        timeout_secs: u64,
    },
    /// Change a file's permission bits in place (the file is never
    /// removed or rewritten, so a kill at any moment leaves it present).
    SetMode {
        /// Host path.
        path: PathBuf,
        /// Current mode bits.
        current: u32,
        /// Wanted mode bits.
        wanted: u32,
    },
    /// Remote: create a bootstrap token (a `kube-system` Secret).
    CreateBootstrapToken {
        /// Its lifetime in seconds.
        ttl_secs: u64,
        /// Why a new token is needed.
        reason: String,
    },
    /// Remote: publish a join ticket at the rendezvous.
    PublishTicket {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Which token it carries.
        token: TicketToken,
        /// How long it stays valid, seconds.
        valid_secs: u64,
    },
    /// Remote: server-side apply one object.
    ApplyObject {
        /// Where it comes from (`flannel`, `manifest FILE document N`).
        origin: String,
        /// Its kind.
        kind: String,
        /// `namespace/name` or `name`.
        object: String,
        /// What differs (`absent`, `spec.template…image differs`).
        reason: String,
    },
    /// Remote: wait for a join ticket to be published.
    WaitForTicket {
        /// `secret NAME` or `file PATH`.
        location: String,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Remote: wait until Nodes are Ready.
    WaitForNodes {
        /// How many are not Ready yet.
        count: usize,
        /// Deadline in seconds.
        deadline_secs: u64,
    },
    /// Remote: put the controller's labels on Nodes, each as it turns Ready.
    LabelNodes {
        /// How many Nodes (at most) get labels.
        count: usize,
        /// The label keys set.
        labels: Vec<String>,
    },
}

/// The bootstrap token a published join ticket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TicketToken {
    /// The first token, which `kubeadm init` creates from hpk8s's config.
    First,
    /// A token created just before (see [`Change::CreateBootstrapToken`]).
    New,
}

/// A file's new contents. `Debug` shows only the size: a plan may be
/// logged with `?` and some files hold tokens or credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct FileContents(pub Vec<u8>);

impl std::ops::Deref for FileContents {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for FileContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A systemd operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceOperation {
    /// `systemctl daemon-reload` (unit is ignored).
    DaemonReload,
    /// `systemctl enable`.
    Enable,
    /// `systemctl enable --now`.
    EnableNow,
    /// `systemctl start`.
    Start,
    /// `systemctl stop`.
    Stop,
    /// `systemctl restart`.
    Restart,
}

impl ServiceOperation {
    fn command(self, unit: &str) -> Cmd {
        let c = Cmd::new("systemctl");
        match self {
            Self::DaemonReload => c.arg("daemon-reload"),
            Self::Enable => c.args(["enable", unit]),
            Self::EnableNow => c.args(["enable", "--now", unit]),
            Self::Start => c.args(["start", unit]),
            Self::Stop => c.args(["stop", unit]),
            Self::Restart => c.args(["restart", unit]),
        }
    }
}

impl Change {
    /// The change that makes `path` hold `contents` with `mode`, or `None`
    /// when it already does. `secret` files get no diff, only a size; in
    /// other diffs the values of credential lines (`password = …`,
    /// `auth: …`, `user:password@` URLs) are masked. An existing file whose
    /// mode is stricter than `mode` keeps its own (an operator's 0600
    /// config holding registry credentials must not become 0644).
    pub fn write_file(
        host: &Host,
        path: impl AsRef<Path>,
        contents: impl Into<Vec<u8>>,
        mode: FileMode,
        secret: bool,
    ) -> Result<Option<Change>, FsError> {
        let path = path.as_ref();
        let contents = contents.into();
        let current = host.read_opt(path)?;
        let mode = match host.mode_of(path) {
            Some(existing) if existing != mode.mode && existing & !mode.mode & 0o777 == 0 => {
                FileMode {
                    mode: existing,
                    ..mode
                }
            }
            _ => mode,
        };
        if current.as_deref() == Some(contents.as_slice()) && host.mode_of(path) == Some(mode.mode)
        {
            return Ok(None);
        }
        let created = current.is_none();
        let diff = if secret {
            format!("(secret contents, {} bytes, not shown)", contents.len())
        } else {
            let old = mask_credentials(&String::from_utf8_lossy(
                current.as_deref().unwrap_or_default(),
            ));
            let new = mask_credentials(&String::from_utf8_lossy(&contents));
            if old == new && current.as_deref() != Some(contents.as_slice()) {
                "(a credential's value changes; not shown)".to_string()
            } else if old == new {
                format!(
                    "(mode {:o} -> {:o})",
                    host.mode_of(path).unwrap_or(0),
                    mode.mode
                )
            } else {
                let shown = path.display().to_string();
                similar::TextDiff::from_lines(&old, &new)
                    .unified_diff()
                    .context_radius(2)
                    .header(if created { "/dev/null" } else { &shown }, &shown)
                    .to_string()
            }
        };
        Ok(Some(Change::WriteFile {
            path: path.to_path_buf(),
            mode,
            contents: FileContents(contents),
            diff,
            created,
        }))
    }

    /// A systemd operation on `unit`.
    pub fn service(unit: &str, operation: ServiceOperation, reason: impl Into<String>) -> Change {
        Change::Service {
            unit: unit.to_string(),
            operation,
            reason: reason.into(),
        }
    }

    /// Running `command` because of `reason`.
    pub fn run(command: Cmd, reason: impl Into<String>) -> Change {
        Change::Run {
            command,
            reason: reason.into(),
        }
    }

    /// One line saying what this change does.
    pub fn summary(&self) -> String {
        match self {
            Change::WriteFile {
                path,
                mode,
                created,
                ..
            } => format!(
                "{} {} (mode {:04o})",
                if *created { "create" } else { "update" },
                path.display(),
                mode.mode
            ),
            Change::RemoveFile { path } => format!("remove {}", path.display()),
            Change::CreateDir { path } => format!("create directory {}", path.display()),
            Change::Sysctl {
                key,
                current,
                wanted,
            } => {
                format!(
                    "set {key} = {wanted} (now {})",
                    current.as_deref().unwrap_or("unset")
                )
            }
            Change::Run { command, reason } => format!("run `{}` ({reason})", command.display()),
            Change::Service {
                unit,
                operation,
                reason,
            } => format!("`{}` ({reason})", operation.command(unit).display()),
            Change::Download {
                url, path, sha256, ..
            } => {
                format!(
                    "install {} from {} (sha256 {})",
                    path.display(),
                    redact_url(url),
                    short(sha256)
                )
            }
            Change::WaitFor {
                what, timeout_secs, ..
            } => format!("wait up to {timeout_secs}s for {what}"),
            Change::SetMode {
                path,
                current,
                wanted,
            } => format!("chmod {wanted:04o} {} (now {current:04o})", path.display()),
            Change::CreateBootstrapToken { ttl_secs, reason } => format!(
                "create a bootstrap token valid {} ({reason})",
                human(Duration::from_secs(*ttl_secs))
            ),
            Change::PublishTicket {
                location,
                token,
                valid_secs,
            } => format!(
                "publish a join ticket with {} to {location} (valid {})",
                match token {
                    TicketToken::First => "the token kubeadm init creates",
                    TicketToken::New => "the new token",
                },
                human(Duration::from_secs(*valid_secs))
            ),
            Change::ApplyObject {
                origin,
                kind,
                object,
                reason,
            } => format!("server-side apply {kind} {object} from {origin} ({reason})"),
            Change::WaitForTicket {
                location,
                deadline_secs,
            } => format!("wait up to {deadline_secs}s for a usable join ticket at {location}"),
            Change::WaitForNodes {
                count,
                deadline_secs,
            } => format!("wait up to {deadline_secs}s for {count} node(s) to be Ready"),
            Change::LabelNodes { count, labels } => format!(
                "label {count} node(s) as each turns Ready ({})",
                labels.join(", ")
            ),
        }
    }

    /// Whether the change is made through a remote API (Kubernetes, the
    /// rendezvous) rather than on the host; such changes are applied by
    /// their step, not by [`apply`].
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Change::CreateBootstrapToken { .. }
                | Change::PublishTicket { .. }
                | Change::ApplyObject { .. }
                | Change::WaitForTicket { .. }
                | Change::WaitForNodes { .. }
                | Change::LabelNodes { .. }
        )
    }
}

/// A download URL, which may carry mirror credentials: `Debug`, `Display`
/// and serialisation show it with them redacted; only fetching sees them.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl(pub String);

impl std::ops::Deref for SourceUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl Serialize for SourceUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&redact_url(&self.0))
    }
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

pub use crate::values::url::redact_url;

/// What one step would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepPlan {
    /// Step name, e.g. `containerd`.
    pub step: String,
    /// Facts the step found that explain its plan ("no instance-store disks").
    pub notes: Vec<String>,
    /// Changes in the order they will be applied.
    pub changes: Vec<Change>,
}

impl StepPlan {
    /// An empty plan for `step`.
    pub fn new(step: impl Into<String>) -> Self {
        Self {
            step: step.into(),
            notes: Vec::new(),
            changes: Vec::new(),
        }
    }

    /// Records a fact.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Adds a change.
    pub fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Adds a change if there is one.
    pub fn push_opt(&mut self, change: Option<Change>) {
        self.changes.extend(change);
    }
}

/// What a phase would change, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Phase name.
    pub phase: String,
    /// Step plans in order.
    pub steps: Vec<StepPlan>,
}

impl Plan {
    /// Number of changes across all steps.
    pub fn change_count(&self) -> usize {
        self.steps.iter().map(|s| s.changes.len()).sum()
    }

    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.change_count() == 0
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "phase {}: {} change(s)", self.phase, self.change_count())?;
        for step in &self.steps {
            let n = step.changes.len();
            writeln!(
                f,
                "\nstep {} ({})",
                step.step,
                if n == 0 {
                    "up to date".to_string()
                } else {
                    format!("{n} change(s)")
                }
            )?;
            for note in &step.notes {
                writeln!(f, "  · {note}")?;
            }
            for change in &step.changes {
                writeln!(f, "  - {}", change.summary())?;
                if let Change::WriteFile { diff, .. } = change {
                    let mut indented = String::new();
                    for line in diff.lines() {
                        let _ = writeln!(indented, "      {line}");
                    }
                    f.write_str(&indented)?;
                }
            }
        }
        Ok(())
    }
}

/// Why applying a change failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A file operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A sysctl could not be written.
    #[error("cannot set {key} (writing {path}): {source}")]
    Sysctl {
        /// Dotted key.
        key: String,
        /// Host path written.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A download failed.
    #[error("cannot download {url}: {message}")]
    Download {
        /// URL, credentials redacted.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A downloaded file did not have the expected digest; nothing was installed.
    #[error(
        "checksum mismatch for {url}: expected sha256 {expected}, got {actual}; nothing installed (check the mirror's .sha256 files)"
    )]
    ChecksumMismatch {
        /// URL, credentials redacted.
        url: String,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// A remote change reached the host applier (a bug in a step).
    #[error("`{summary}` is remote work that its step applies; this is a bug in hpk8s")]
    NotHostWork {
        /// The change.
        summary: String,
    },
    /// A readiness probe did not succeed in time.
    #[error("timed out after {timeout_secs}s waiting for {what} (last: `{probe}`: {last})")]
    Timeout {
        /// What we waited for.
        what: String,
        /// Probe command line.
        probe: String,
        /// Deadline.
        timeout_secs: u64,
        /// Last probe result.
        last: String,
    },
}

classify!(ApplyError {
    Fs { 0: e } => via e;
    Command { 0: e } => via e;
    Sysctl { source, .. } => Host "sysctl_write_failed" refine Some(ExitClass::of_io(source, ExitClass::Host));
    Download { .. } => Unavailable "download_failed";
    ChecksumMismatch { .. } => Verification "checksum_mismatch";
    Timeout { .. } => Deadline "readiness_timeout";
    NotHostWork { .. } => Internal "remote_change_misrouted";
});

/// The `/proc/sys` file for a dotted sysctl key.
pub fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Applies `changes` in order. Stops at the first failure: every change is
/// idempotent and files are replaced atomically, so re-planning after a
/// failure converges. Every download is fetched and verified before the
/// first change is applied, so an unreachable file or a bad checksum leaves
/// the host exactly as it was (not merely without that one file).
pub async fn apply(host: &Host, changes: &[Change]) -> Result<(), ApplyError> {
    if let Some(remote) = changes.iter().find(|c| c.is_remote()) {
        return Err(ApplyError::NotHostWork {
            summary: remote.summary(),
        });
    }
    let mut fetched = Vec::with_capacity(changes.len());
    for change in changes {
        fetched.push(match change {
            Change::Download { url, sha256, .. } => Some(fetch_verified(url, sha256).await?),
            _ => None,
        });
    }
    for (change, body) in changes.iter().zip(fetched) {
        tracing::info!(change = %change.summary(), "applying");
        match change {
            Change::WaitFor {
                what,
                probe,
                timeout_secs,
            } => wait_for(host, what, probe, *timeout_secs).await?,
            Change::Download {
                url,
                sha256,
                path,
                mode,
            } => {
                let got = match body {
                    Some(got) => got,
                    None => fetch_verified(url, sha256).await?,
                };
                let (h, path, mode) = (host.clone(), path.clone(), *mode);
                blocking(move || Ok(h.install_file(&path, got.file.path(), mode)?)).await?;
            }
            other => {
                let (h, change) = (host.clone(), other.clone());
                blocking(move || apply_now(&h, &change)).await?;
            }
        }
    }
    Ok(())
}

/// Runs `work` (files, commands: blocking) on a blocking thread, so that a
/// command taking minutes (`apt-get install`) does not stall the runtime's
/// other tasks; a panic in it is a panic here.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApplyError> + Send + 'static,
) -> Result<T, ApplyError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(ApplyError::Command(CommandError::Spawn {
            command: "(a change)".into(),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}

/// Makes one host change (not a download or a wait), blocking.
fn apply_now(host: &Host, change: &Change) -> Result<(), ApplyError> {
    match change {
        Change::WriteFile {
            path,
            mode,
            contents,
            ..
        } => host.write_atomic(path, contents, *mode)?,
        Change::RemoveFile { path } => host.remove_file(path)?,
        Change::CreateDir { path } => host.create_dir_all(path)?,
        Change::Sysctl { key, wanted, .. } => {
            let path = sysctl_path(key);
            std::fs::write(host.path(&path), format!("{wanted}\n")).map_err(|source| {
                ApplyError::Sysctl {
                    key: key.clone(),
                    path,
                    source,
                }
            })?;
        }
        Change::Run { command, .. } => {
            host.run(command)?;
        }
        Change::Service {
            unit, operation, ..
        } => {
            host.run(&operation.command(unit))?;
        }
        Change::SetMode { path, wanted, .. } => host.set_mode(path, *wanted)?,
        other => {
            return Err(ApplyError::NotHostWork {
                summary: other.summary(),
            });
        }
    }
    Ok(())
}

async fn wait_for(
    host: &Host,
    what: &str,
    probe: &Cmd,
    timeout_secs: u64,
) -> Result<(), ApplyError> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut delay = Duration::from_millis(100);
    loop {
        let (h, p) = (host.clone(), probe.clone());
        let last = match blocking(move || Ok(h.runner().run(&p))).await? {
            Ok(out) if out.status == 0 => return Ok(()),
            Ok(out) => out.stderr_tail(),
            Err(e) => e.to_string(),
        };
        if Instant::now() + delay > deadline {
            return Err(ApplyError::Timeout {
                what: what.to_string(),
                probe: probe.display(),
                timeout_secs,
                last,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Streams `url` to a temporary file while hashing it and checks the
/// digest; the caller installs it. Nothing reaches the host root before
/// the digest matches.
async fn fetch_verified(url: &str, sha256: &str) -> Result<Downloaded, ApplyError> {
    let shown = redact_url(url);
    let got = download(url).await.map_err(|e| ApplyError::Download {
        url: shown.clone(),
        message: e.to_string(),
    })?;
    if !got.sha256.eq_ignore_ascii_case(sha256) {
        return Err(ApplyError::ChecksumMismatch {
            url: shown,
            expected: sha256.to_string(),
            actual: got.sha256,
        });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(
            redact_url("https://u:p@mirror.example/k8s/x"),
            "https://<redacted>@mirror.example/k8s/x"
        );
        assert_eq!(
            redact_url("https://mirror.example/a@b"),
            "https://mirror.example/a@b"
        );
    }

    #[test]
    fn debug_output_shows_neither_file_contents_nor_url_credentials() {
        let dl = Change::Download {
            url: SourceUrl("https://ops:hunter2@mirror.example/k8s/kubelet".into()),
            sha256: "00".repeat(32),
            path: "/usr/bin/kubelet".into(),
            mode: FileMode::EXECUTABLE,
        };
        let file = Change::WriteFile {
            path: "/etc/kubernetes/hpk8s/kubeadm-join.yaml".into(),
            mode: FileMode::SECRET,
            contents: FileContents(b"token: abcdef.0123456789abcdef".to_vec()),
            diff: "(secret contents, 30 bytes, not shown)".into(),
            created: true,
        };
        let shown = format!(
            "{dl:?} {dl:#?} {file:?} {}",
            serde_json::to_string(&dl).unwrap()
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<30 bytes>"), "{shown}");
    }

    #[tokio::test]
    async fn write_file_is_a_noop_when_equal_and_checksum_mismatch_installs_nothing() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(
            d.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        let c = Change::write_file(&h, "/etc/x", "a\n", FileMode::CONFIG, false)
            .unwrap()
            .unwrap();
        assert!(matches!(&c, Change::WriteFile { created: true, diff, .. } if diff.contains("+a")));
        apply(&h, &[c]).await.unwrap();
        assert!(
            Change::write_file(&h, "/etc/x", "a\n", FileMode::CONFIG, false)
                .unwrap()
                .is_none()
        );

        let src = d.path().join("blob");
        std::fs::write(&src, b"binary").unwrap();
        let dl = Change::Download {
            url: SourceUrl(format!("file://{}", src.display())),
            sha256: "00".repeat(32),
            path: "/usr/bin/kubelet".into(),
            mode: FileMode::EXECUTABLE,
        };
        let err = apply(&h, &[dl]).await.unwrap_err();
        assert!(matches!(err, ApplyError::ChecksumMismatch { .. }), "{err}");
        assert!(!h.exists("/usr/bin/kubelet"));
        assert!(h.list_dir("/usr/bin").unwrap().is_empty());
    }
}
