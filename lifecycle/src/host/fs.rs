//! File operations on the host root: reads that treat "absent" as a value,
//! and atomic writes (temp file, fsync, rename, fsync dir) so that a crash
//! never leaves a half-written file behind.

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::access::Host;
use crate::error::class::{ExitClass, classify};

/// Where the first original of every file hpk8s overwrites is kept, so an
/// operator can always see (and restore) what the image shipped.
pub const BACKUP_DIR: &str = "/var/lib/hpk8s/backup";

/// Errors from file operations; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// Reading failed for a reason other than the file being absent.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Host path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing (or renaming, or setting mode/owner) failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Host path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than hpk8s reads (an input someone else wrote, or
    /// not the file it should be).
    #[error(
        "{path} is larger than {limit} bytes, more than hpk8s reads from it; check that it is the right file"
    )]
    TooLarge {
        /// Host path.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
}

classify!(FsError {
    Read { source, .. } => Host "host_file_unreadable" refine Some(ExitClass::of_io(source, ExitClass::Host));
    Write { source, .. } => Host "host_file_unwritable" refine Some(ExitClass::of_io(source, ExitClass::Host));
    TooLarge { .. } => Input "host_file_too_large";
});

/// The most hpk8s reads from any host file unless told otherwise.
pub const DEFAULT_READ_LIMIT: u64 = 16 * 1024 * 1024;
/// Mode of directories hpk8s creates: explicit, whatever the umask.
pub const DIR_MODE: u32 = 0o755;

/// Permissions and ownership of a file hpk8s writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FileMode {
    /// Unix permission bits, e.g. `0o644`.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl FileMode {
    /// `0644 root:root`: ordinary configuration.
    pub const CONFIG: FileMode = FileMode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    /// `0600 root:root`: anything holding a secret.
    pub const SECRET: FileMode = FileMode {
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    /// `0755 root:root`: executables.
    pub const EXECUTABLE: FileMode = FileMode {
        mode: 0o755,
        uid: 0,
        gid: 0,
    };
}

impl Host {
    /// Reads a host file (at most [`DEFAULT_READ_LIMIT`] bytes); `Ok(None)`
    /// when it does not exist.
    pub fn read_opt(&self, host_path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, FsError> {
        self.read_opt_limited(host_path, DEFAULT_READ_LIMIT)
    }

    /// Reads a host file of at most `limit` bytes (a larger one is an
    /// error, found without reading it whole); `Ok(None)` when absent.
    pub fn read_opt_limited(
        &self,
        host_path: impl AsRef<Path>,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, FsError> {
        let host_path = host_path.as_ref();
        read_limited(&self.path(host_path), host_path, limit)
    }

    /// Reads a host file as UTF-8 (lossy); `Ok(None)` when it does not exist.
    pub fn read_string_opt(&self, host_path: impl AsRef<Path>) -> Result<Option<String>, FsError> {
        Ok(self
            .read_opt(host_path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Whether a host path exists (following symlinks).
    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.path(host_path).exists()
    }

    /// Names of the entries of a host directory, sorted; empty when absent.
    pub fn list_dir(&self, host_path: impl AsRef<Path>) -> Result<Vec<String>, FsError> {
        let host_path = host_path.as_ref();
        let rd = match std::fs::read_dir(self.path(host_path)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(FsError::Read {
                    path: host_path.to_path_buf(),
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| FsError::Read {
                path: host_path.to_path_buf(),
                source,
            })?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Mode bits of a host file, if it exists.
    pub fn mode_of(&self, host_path: impl AsRef<Path>) -> Option<u32> {
        std::fs::metadata(self.path(host_path))
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    /// Who owns a host path and how, without following a final symlink:
    /// `None` when it does not exist.
    pub fn ownership(&self, host_path: impl AsRef<Path>) -> Option<Ownership> {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(self.path(host_path))
            .ok()
            .map(|m| Ownership {
                uid: m.uid(),
                mode: m.mode() & 0o7777,
                regular_file: m.file_type().is_file(),
                directory: m.file_type().is_dir(),
            })
    }

    /// Sets a host file's permission bits in place (no rewrite, no
    /// rename: the file exists throughout).
    pub fn set_mode(&self, host_path: impl AsRef<Path>, mode: u32) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        std::fs::set_permissions(self.path(host_path), std::fs::Permissions::from_mode(mode))
            .map_err(|source| FsError::Write {
                path: host_path.to_path_buf(),
                source,
            })
    }

    /// Creates a host directory and its parents. Each new directory gets
    /// mode 0755 explicitly (hpk8s runs with umask 077, and tools such as
    /// apt read its directories as another user), and its parent is fsynced
    /// so the new entry survives a crash.
    pub fn create_dir_all(&self, host_path: impl AsRef<Path>) -> Result<(), FsError> {
        self.create_dir_all_mode(host_path, DIR_MODE)
    }

    /// [`Host::create_dir_all`] with another mode for the new directories.
    pub fn create_dir_all_mode(
        &self,
        host_path: impl AsRef<Path>,
        mode: u32,
    ) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        let err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| FsError::Write { path: p, source }
        };
        let full = self.path(host_path);
        if full.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut at = full.as_path();
        while !at.exists() {
            missing.push(at.to_path_buf());
            match at.parent() {
                Some(p) => at = p,
                None => break,
            }
        }
        for dir in missing.into_iter().rev() {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(host_path)(e)),
            }
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(err(host_path))?;
            if let Some(parent) = dir.parent() {
                std::fs::File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(err(host_path))?;
            }
        }
        Ok(())
    }

    /// Writes `contents` to a host file atomically: a temp file in the same
    /// directory is written, fsynced, given `mode` and owner, and renamed over
    /// the target; then the directory is fsynced. The first time hpk8s
    /// replaces a file it did not create, the original is copied under
    /// [`BACKUP_DIR`].
    pub fn write_atomic(
        &self,
        host_path: impl AsRef<Path>,
        contents: &[u8],
        mode: FileMode,
    ) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        let err = |source| FsError::Write {
            path: host_path.to_path_buf(),
            source,
        };
        let target = self.path(host_path);
        let dir = target
            .parent()
            .ok_or_else(|| err(std::io::Error::other("no parent directory")))?;
        if let Some(parent) = host_path.parent() {
            self.create_dir_all(parent)?;
        }
        if target.exists() {
            self.keep_original(host_path)?;
        }
        self.replace(host_path, &target, dir, contents, mode)
    }

    /// Temp file in `dir`, fsync, mode and owner, rename onto `target`,
    /// fsync of `dir`: the file is old or new, never half-written or absent.
    fn replace(
        &self,
        host_path: &Path,
        target: &Path,
        dir: &Path,
        contents: &[u8],
        mode: FileMode,
    ) -> Result<(), FsError> {
        let err = |source| FsError::Write {
            path: host_path.to_path_buf(),
            source,
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".hpk8s-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(err)?;
        tmp.write_all(contents).map_err(err)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode.mode))
            .map_err(err)?;
        if self.is_live() || nix::unistd::geteuid().is_root() {
            chown(tmp.path(), Some(mode.uid), Some(mode.gid)).map_err(err)?;
        }
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(target).map_err(|e| err(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// Installs the local file `source` (outside the host root, e.g. a
    /// verified download) at `host_path` like [`Host::write_atomic`]:
    /// copied into a temp file next to the target, then renamed over it.
    pub fn install_file(
        &self,
        host_path: impl AsRef<Path>,
        source: &Path,
        mode: FileMode,
    ) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        let err = |source| FsError::Write {
            path: host_path.to_path_buf(),
            source,
        };
        let target = self.path(host_path);
        let dir = target
            .parent()
            .ok_or_else(|| err(std::io::Error::other("no parent directory")))?;
        if let Some(parent) = host_path.parent() {
            self.create_dir_all(parent)?;
        }
        if target.exists() {
            self.keep_original(host_path)?;
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".hpk8s-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(err)?;
        let mut src = std::fs::File::open(source).map_err(err)?;
        std::io::copy(&mut src, tmp.as_file_mut()).map_err(err)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode.mode))
            .map_err(err)?;
        if self.is_live() || nix::unistd::geteuid().is_root() {
            chown(tmp.path(), Some(mode.uid), Some(mode.gid)).map_err(err)?;
        }
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&target).map_err(|e| err(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }

    /// Removes a host file (keeping its original under [`BACKUP_DIR`]);
    /// absent is fine.
    pub fn remove_file(&self, host_path: impl AsRef<Path>) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        if !self.path(host_path).exists() {
            return Ok(());
        }
        self.keep_original(host_path)?;
        std::fs::remove_file(self.path(host_path)).map_err(|source| FsError::Write {
            path: host_path.to_path_buf(),
            source,
        })
    }

    /// Writes a file holding a secret (a bootstrap token, a credential)
    /// with mode 0600, atomically like [`Host::write_atomic`] (the old file
    /// stays until the new one replaces it), but no copy of earlier contents
    /// is ever kept: a backup would outlive the secret.
    pub fn write_secret(
        &self,
        host_path: impl AsRef<Path>,
        contents: &[u8],
    ) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        let target = self.path(host_path);
        let dir = target.parent().ok_or_else(|| FsError::Write {
            path: host_path.to_path_buf(),
            source: std::io::Error::other("no parent directory"),
        })?;
        if let Some(parent) = host_path.parent() {
            self.create_dir_all(parent)?;
        }
        self.replace(host_path, &target, dir, contents, FileMode::SECRET)
    }

    /// Removes the temporary files (`.hpk8s-*.tmp`) a killed run left in
    /// `dirs`: each is half of a write that never happened, and some hold
    /// secrets. Returns how many were removed.
    pub fn remove_stale_temp_files(&self, dirs: &[&Path]) -> usize {
        let mut removed = 0;
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(self.path(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let stale = name.starts_with(".hpk8s-") && name.ends_with(".tmp");
                let file = entry.file_type().is_ok_and(|t| t.is_file());
                if stale && file && std::fs::remove_file(entry.path()).is_ok() {
                    tracing::info!(path = %dir.join(&*name).display(), "removed a temporary file an interrupted run left");
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Removes a file holding a secret without keeping a copy; absent is fine.
    pub fn discard_secret(&self, host_path: impl AsRef<Path>) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        match std::fs::remove_file(self.path(host_path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FsError::Write {
                path: host_path.to_path_buf(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn keep_original(&self, host_path: &Path) -> Result<(), FsError> {
        let rel = host_path.strip_prefix("/").unwrap_or(host_path);
        let backup = Path::new(BACKUP_DIR).join(rel);
        if self.exists(&backup)
            || host_path.starts_with(BACKUP_DIR)
            || host_path.starts_with("/var/lib/hpk8s")
        {
            return Ok(());
        }
        let original = self.read_opt(host_path)?.unwrap_or_default();
        if looks_like_it_holds_credentials(&original) {
            // A copy would be a second place holding them, kept forever.
            tracing::info!(path = %host_path.display(), "not keeping a backup of a file that holds credentials");
            return Ok(());
        }
        let mode = self.mode_of(host_path).unwrap_or(0o600);
        // The backup keeps the original's mode so a secret stays private.
        self.write_atomic(
            &backup,
            &original,
            FileMode {
                mode,
                uid: 0,
                gid: 0,
            },
        )
    }
}

/// The owner, permission bits and type of a path (see [`Host::ownership`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Owning user.
    pub uid: u32,
    /// Permission bits.
    pub mode: u32,
    /// A regular file (not a symlink, directory or device).
    pub regular_file: bool,
    /// A directory (not a symlink to one).
    pub directory: bool,
}

impl Ownership {
    /// Only `uid` could have written it: a regular file of that owner that
    /// neither group nor others may write.
    pub fn writable_only_by(&self, uid: u32) -> bool {
        self.regular_file && self.uid == uid && self.mode & 0o022 == 0
    }

    /// A directory (not a symlink) of `uid` that neither group nor others
    /// may write.
    pub fn private_directory_of(&self, uid: u32) -> bool {
        self.directory && self.uid == uid && self.mode & 0o022 == 0
    }
}

/// Reads the file at `real` (named `shown` in errors), at most `limit`
/// bytes (a larger one is an error, found without reading it whole);
/// `Ok(None)` when absent.
pub fn read_limited(real: &Path, shown: &Path, limit: u64) -> Result<Option<Vec<u8>>, FsError> {
    use std::io::Read as _;
    let read_err = |source| FsError::Read {
        path: shown.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(real) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(FsError::TooLarge {
            path: shown.to_path_buf(),
            limit,
        });
    }
    Ok(Some(bytes))
}

/// Whether file contents carry credentials (registry auth, passwords,
/// tokens, `user:password@` URLs): such a file is never backed up, and its
/// values are masked in plan diffs.
pub fn looks_like_it_holds_credentials(contents: &[u8]) -> bool {
    let text = String::from_utf8_lossy(contents);
    text.lines().any(|l| credential_line(l).is_some())
}

/// Words that name a credential in a config line (`password = "…"`,
/// `"auth": "…"`, `identitytoken = …`, `token: …`).
const CREDENTIAL_KEYS: [&str; 8] = [
    "password",
    "passwd",
    "auth",
    "identitytoken",
    "registrytoken",
    "token",
    "secret",
    "credentials",
];

/// For a line carrying a credential, where its value starts (after the
/// `=` or `:` of a credential key, or the `//user:` of a URL).
pub fn credential_line(line: &str) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    for key in CREDENTIAL_KEYS {
        let mut from = 0;
        while let Some(at) = lower[from..].find(key) {
            let end = from + at + key.len();
            let rest = lower[end..].trim_start_matches(['"', '\'', ' ', '\t']);
            if rest.starts_with('=') || rest.starts_with(':') {
                let sep = lower.len() - rest.len();
                return Some(sep + 1);
            }
            from = end;
        }
    }
    let scheme = lower.find("://")?;
    let after = &line[scheme + 3..];
    let authority = after.split(['/', '"', '\'', ' ']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .filter(|(user, _)| user.contains(':'))
        .map(|_| scheme + 3)
}

/// `text` with the value of every credential line replaced by `<redacted>`.
pub fn mask_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match credential_line(line) {
            Some(at) => {
                out.push_str(&line[..at]);
                out.push_str(" <redacted>");
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn credential_lines_are_found_and_masked() {
        for line in [
            "  password = \"hunter2\"",
            "auth = \"dXNlcjpwYXNz\"",
            "\"identitytoken\": \"x\"",
            "deb https://u:p4ss@apt.internal/ /",
            "token: abcdef.0123456789abcdef",
        ] {
            assert!(credential_line(line).is_some(), "{line}");
            let masked = mask_credentials(line);
            assert!(masked.contains("<redacted>"), "{masked}");
            for secret in ["hunter2", "dXNlcjpwYXNz", "p4ss", "0123456789abcdef"] {
                assert!(!masked.contains(secret), "{masked}");
            }
        }
        for line in [
            "SystemdCgroup = true",
            "token_ttl = \"4h\"",
            "url = \"https://mirror.internal/k8s\"",
        ] {
            assert_eq!(credential_line(line), None, "{line}");
        }
    }

    #[test]
    fn new_directories_get_their_mode_whatever_the_umask() {
        use nix::sys::stat::{Mode, umask};
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(
            d.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        let old = umask(Mode::from_bits_truncate(0o077));
        let made = h.create_dir_all("/etc/apt/keyrings");
        umask(old);
        made.unwrap();
        for dir in ["/etc", "/etc/apt", "/etc/apt/keyrings"] {
            assert_eq!(h.mode_of(dir), Some(0o755), "{dir}");
        }
    }

    #[test]
    fn temporary_files_of_a_killed_run_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(
            d.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        std::fs::create_dir_all(d.path().join("etc/kubernetes/hpk8s")).unwrap();
        for name in [
            ".hpk8s-abc.tmp",
            ".hpk8s-def.tmp",
            "kubeadm-init.yaml",
            ".other.tmp",
        ] {
            std::fs::write(d.path().join("etc/kubernetes/hpk8s").join(name), "x").unwrap();
        }
        let removed =
            h.remove_stale_temp_files(&[Path::new("/etc/kubernetes/hpk8s"), Path::new("/nope")]);
        assert_eq!(removed, 2);
        assert_eq!(
            h.list_dir("/etc/kubernetes/hpk8s").unwrap(),
            [".other.tmp", "kubeadm-init.yaml"]
        );
    }

    #[test]
    fn a_file_holding_credentials_is_never_backed_up_and_reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(
            d.path(),
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        );
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/creds.conf"), "password = \"s3cret\"\n").unwrap();
        h.write_atomic("/etc/creds.conf", b"password = \"n3w\"\n", FileMode::SECRET)
            .unwrap();
        assert!(!h.exists("/var/lib/hpk8s/backup/etc/creds.conf"));
        std::fs::write(d.path().join("etc/big"), vec![b'x'; 2048]).unwrap();
        let e = h.read_opt_limited("/etc/big", 1024).unwrap_err();
        assert!(matches!(e, FsError::TooLarge { limit: 1024, .. }), "{e}");
        assert_eq!(
            h.read_opt_limited("/etc/big", 2048).unwrap().unwrap().len(),
            2048
        );
    }

    use super::*;
    use crate::host::{FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    fn host(dir: &Path) -> Host {
        Host::new(
            dir,
            Arc::new(ScriptedRunner::new()),
            Arc::new(FixedInterfaces::default()),
        )
    }

    #[test]
    fn secret_files_are_never_backed_up() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        h.write_secret("/etc/kubernetes/t.yaml", b"token-1")
            .unwrap();
        h.write_secret("/etc/kubernetes/t.yaml", b"token-2")
            .unwrap();
        assert_eq!(h.mode_of("/etc/kubernetes/t.yaml"), Some(0o600));
        h.discard_secret("/etc/kubernetes/t.yaml").unwrap();
        h.discard_secret("/etc/kubernetes/t.yaml").unwrap();
        assert!(!h.exists("/etc/kubernetes/t.yaml"));
        assert!(
            !h.exists(BACKUP_DIR),
            "a secret was copied to the backup directory"
        );
    }

    #[test]
    fn atomic_write_sets_mode_and_keeps_first_original() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        h.write_atomic("/etc/a.conf", b"one", FileMode::CONFIG)
            .unwrap();
        assert_eq!(h.read_opt("/etc/a.conf").unwrap().unwrap(), b"one");
        assert_eq!(h.mode_of("/etc/a.conf"), Some(0o644));
        h.write_atomic("/etc/a.conf", b"two", FileMode::SECRET)
            .unwrap();
        h.write_atomic("/etc/a.conf", b"three", FileMode::SECRET)
            .unwrap();
        assert_eq!(h.mode_of("/etc/a.conf"), Some(0o600));
        assert_eq!(
            h.read_opt("/var/lib/hpk8s/backup/etc/a.conf")
                .unwrap()
                .unwrap(),
            b"one"
        );
        // No temp files left behind.
        assert_eq!(h.list_dir("/etc").unwrap(), vec!["a.conf"]);
    }

    #[test]
    fn absent_is_a_value() {
        let d = tempfile::tempdir().unwrap();
        let h = host(d.path());
        assert!(h.read_opt("/nope").unwrap().is_none());
        assert!(h.list_dir("/nope").unwrap().is_empty());
        assert_eq!(h.path("/etc/x"), d.path().join("etc/x"));
    }
}
