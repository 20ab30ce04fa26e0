//! The join ticket as `join-ticket.json` in a directory every node shares
//! (NFS/FSx, a Vagrant synced folder).
//!
//! The file is written atomically (temporary file, fsync, rename, fsync of
//! the directory) with mode 0600, so a reader sees the old ticket or the new
//! one, never half of one. The directory must exist when publishing: creating
//! it would hide a shared file system that is not mounted, and the workers
//! would wait for a file only the controller can see.
//!
//! A shared file system is shared with other users. A ticket names the API
//! server a worker trusts with its kubelet, so nothing in the directory is
//! believed unless it could only have come from the controller: the
//! directory (checked with `lstat`) and the file (opened with `O_NOFOLLOW`
//! and `O_NONBLOCK`, checked with `fstat`) must be owned by the trusted
//! uid (root unless configured), not writable by group or others, and the
//! file a regular file of at most [`MAX_TICKET_BYTES`]. Anything else is
//! refused with the path and the reason; a waiting worker warns and keeps
//! waiting, so a planted file cannot stop the fleet, and the controller
//! refuses to publish into such a directory.

use std::io::{Read as _, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::error::RendezvousError;
use crate::cluster::join_ticket::JoinTicket;

/// The ticket's file name inside the directory.
pub const TICKET_FILE: &str = "join-ticket.json";
/// The ticket holds a token: owner read/write only.
const TICKET_MODE: u32 = 0o600;
/// The most a ticket file may hold (a ticket is a few hundred bytes).
pub const MAX_TICKET_BYTES: u64 = 64 * 1024;
/// Mode bits that let someone other than the owner change a file or
/// replace the entries of a directory.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// A shared directory holding the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRendezvous {
    dir: PathBuf,
    trusted_uid: u32,
}

impl DirectoryRendezvous {
    /// A rendezvous in `dir` whose directory and ticket `trusted_uid` owns.
    pub fn new(dir: PathBuf, trusted_uid: u32) -> DirectoryRendezvous {
        DirectoryRendezvous { dir, trusted_uid }
    }

    /// The ticket file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(TICKET_FILE)
    }

    pub(super) fn location(&self) -> String {
        format!("file {}", self.path().display())
    }

    fn untrusted(&self, path: &Path, reason: impl Into<String>) -> RendezvousError {
        RendezvousError::Untrusted {
            path: path.to_path_buf(),
            reason: reason.into(),
            trusted_uid: self.trusted_uid,
        }
    }

    pub(super) async fn publish(&self, ticket: &JoinTicket) -> Result<(), RendezvousError> {
        let body = ticket.to_secret_json();
        let this = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            this.check_directory()?;
            write_ticket(&this.dir, &this.path(), &body)
        })
        .await
        .map_err(|e| RendezvousError::Io {
            action: "write",
            path: self.path(),
            source: std::io::Error::other(e.to_string()),
        })??;
        tracing::info!(
            rendezvous = %self.location(),
            changed = written,
            cluster = %ticket.cluster_id,
            endpoint = %ticket.endpoint,
            expires_at = %ticket.expires_at_rfc3339(),
            "published the join ticket"
        );
        Ok(())
    }

    pub(super) async fn fetch(&self) -> Result<Option<JoinTicket>, RendezvousError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.fetch_blocking())
            .await
            .map_err(|e| RendezvousError::Transient {
                location: self.location(),
                detail: e.to_string(),
            })?
    }

    fn fetch_blocking(&self) -> Result<Option<JoinTicket>, RendezvousError> {
        match self.check_directory() {
            // Not mounted yet (or not created yet by the controller).
            Err(RendezvousError::DirectoryMissing { .. }) => return Ok(None),
            other => other?,
        }
        let path = self.path();
        let Some(bytes) = self.read_trusted(&path)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| self.untrusted(&path, "the file is not UTF-8 text"))?;
        JoinTicket::parse(&text)
            .map(Some)
            .map_err(|e| self.untrusted(&path, format!("not a join ticket: {e}")))
    }

    /// The directory exists, is a directory (not a symlink to one), is owned
    /// by the trusted uid and not writable by others.
    fn check_directory(&self) -> Result<(), RendezvousError> {
        let meta = match std::fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RendezvousError::DirectoryMissing {
                    path: self.dir.clone(),
                });
            }
            Err(e) => {
                return Err(RendezvousError::Transient {
                    location: format!("directory {}", self.dir.display()),
                    detail: e.to_string(),
                });
            }
        };
        if meta.file_type().is_symlink() {
            return Err(self.untrusted(&self.dir, "the directory is a symbolic link"));
        }
        if !meta.is_dir() {
            return Err(self.untrusted(&self.dir, "not a directory"));
        }
        self.check_owner_and_mode(&self.dir, meta.uid(), meta.mode(), "the directory")
    }

    fn check_owner_and_mode(
        &self,
        path: &Path,
        uid: u32,
        mode: u32,
        what: &str,
    ) -> Result<(), RendezvousError> {
        if uid != self.trusted_uid {
            return Err(self.untrusted(path, format!("{what} is owned by uid {uid}")));
        }
        if mode & WRITABLE_BY_OTHERS != 0 {
            return Err(self.untrusted(
                path,
                format!(
                    "{what} is writable by group or others (mode {:04o})",
                    mode & 0o7777
                ),
            ));
        }
        Ok(())
    }

    /// Reads the ticket file when it can be trusted: opened without
    /// following a symlink and without blocking on a FIFO, then checked on
    /// the open descriptor (no race with a rename), and read up to the limit.
    fn read_trusted(&self, path: &Path) -> Result<Option<Vec<u8>>, RendezvousError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(self.untrusted(path, "the ticket is a symbolic link")),
            Err(Errno::EACCES | Errno::EPERM) => {
                return Err(RendezvousError::Io {
                    action: "read",
                    path: path.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                });
            }
            // NFS hiccups (stale handles, EIO) may pass.
            Err(e) => {
                return Err(RendezvousError::Transient {
                    location: self.location(),
                    detail: e.desc().to_string(),
                });
            }
        };
        let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| RendezvousError::Transient {
            location: self.location(),
            detail: e.desc().to_string(),
        })?;
        let kind = stat.st_mode & libc_mode_mask();
        if kind != S_IFREG {
            return Err(self.untrusted(
                path,
                format!("the ticket is not a regular file ({})", file_kind(kind)),
            ));
        }
        self.check_owner_and_mode(path, stat.st_uid, stat.st_mode, "the ticket")?;
        let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
        if size > MAX_TICKET_BYTES {
            return Err(self.untrusted(
                path,
                format!("the ticket is {size} bytes, more than {MAX_TICKET_BYTES}"),
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(MAX_TICKET_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| RendezvousError::Transient {
                location: self.location(),
                detail: e.to_string(),
            })?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_TICKET_BYTES {
            return Err(self.untrusted(path, "the ticket grew past 64 KiB while being read"));
        }
        Ok(Some(bytes))
    }
}

/// The file-type bits of `st_mode`.
const fn libc_mode_mask() -> u32 {
    0o170_000
}
/// A regular file's type bits.
const S_IFREG: u32 = 0o100_000;

fn file_kind(kind: u32) -> &'static str {
    match kind {
        0o010_000 => "a FIFO",
        0o020_000 => "a character device",
        0o060_000 => "a block device",
        0o140_000 => "a socket",
        0o040_000 => "a directory",
        _ => "not a regular file",
    }
}

/// Writes `body` to `path` atomically with mode 0600; `false` when the file
/// already had exactly that content and mode.
fn write_ticket(dir: &Path, path: &Path, body: &str) -> Result<bool, RendezvousError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| RendezvousError::Io {
            action,
            path: p,
            source,
        }
    };
    let same = std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o777 == TICKET_MODE)
        && std::fs::read(path).is_ok_and(|old| old == body.as_bytes());
    if same {
        return Ok(false);
    }
    // NamedTempFile creates the file 0600 in the same directory (same file
    // system, so the rename is atomic; a symlink at `path` is replaced, not
    // followed).
    let mut tmp = tempfile::Builder::new()
        .prefix(".join-ticket.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(TICKET_MODE))
        .map_err(io("set the mode of", &tmp_path))?;
    tmp.write_all(body.as_bytes())
        .map_err(io("write", &tmp_path))?;
    tmp.as_file().sync_all().map_err(io("fsync", &tmp_path))?;
    tmp.persist(path)
        .map_err(|e| io("rename a temporary file onto", path)(e.error))?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok(true)
}
