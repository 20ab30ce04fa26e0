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
}

classify!(FsError {
    Read { source, .. } => Host "host_file_unreadable" refine Some(ExitClass::of_io(source, ExitClass::Host));
    Write { source, .. } => Host "host_file_unwritable" refine Some(ExitClass::of_io(source, ExitClass::Host));
});

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
    /// Reads a host file; `Ok(None)` when it does not exist.
    pub fn read_opt(&self, host_path: impl AsRef<Path>) -> Result<Option<Vec<u8>>, FsError> {
        let host_path = host_path.as_ref();
        match std::fs::read(self.path(host_path)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(FsError::Read {
                path: host_path.to_path_buf(),
                source,
            }),
        }
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

    /// Creates a host directory and its parents (mode 0755 for new ones).
    pub fn create_dir_all(&self, host_path: impl AsRef<Path>) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        std::fs::create_dir_all(self.path(host_path)).map_err(|source| FsError::Write {
            path: host_path.to_path_buf(),
            source,
        })
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
        std::fs::create_dir_all(dir).map_err(err)?;
        if target.exists() {
            self.keep_original(host_path)?;
        }
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
    /// with mode 0600. Unlike [`Host::write_atomic`] no copy of earlier
    /// contents is ever kept: a backup would outlive the secret.
    pub fn write_secret(
        &self,
        host_path: impl AsRef<Path>,
        contents: &[u8],
    ) -> Result<(), FsError> {
        let host_path = host_path.as_ref();
        self.discard_secret(host_path)?;
        self.write_atomic(host_path, contents, FileMode::SECRET)
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

#[cfg(test)]
mod tests {
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
