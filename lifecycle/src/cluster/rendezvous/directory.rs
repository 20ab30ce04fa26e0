//! The join ticket as `join-ticket.json` in a directory every node shares
//! (NFS/FSx, a Vagrant synced folder).
//!
//! The file is written atomically (temporary file, fsync, rename, fsync of
//! the directory) with mode 0600, so a reader sees the old ticket or the new
//! one, never half of one. The directory must exist when publishing: creating
//! it would hide a shared file system that is not mounted, and the workers
//! would wait for a file only the controller can see.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::RendezvousError;
use crate::cluster::join_ticket::JoinTicket;

/// The ticket's file name inside the directory.
pub const TICKET_FILE: &str = "join-ticket.json";
/// The ticket holds a token: owner read/write only.
const TICKET_MODE: u32 = 0o600;

/// A shared directory holding the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRendezvous {
    dir: PathBuf,
}

impl DirectoryRendezvous {
    /// A rendezvous in `dir`.
    pub fn new(dir: PathBuf) -> DirectoryRendezvous {
        DirectoryRendezvous { dir }
    }

    /// The ticket file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(TICKET_FILE)
    }

    pub(super) fn location(&self) -> String {
        format!("file {}", self.path().display())
    }

    pub(super) async fn publish(&self, ticket: &JoinTicket) -> Result<(), RendezvousError> {
        let body = ticket.to_secret_json();
        let dir = self.dir.clone();
        let path = self.path();
        let written = tokio::task::spawn_blocking(move || write_ticket(&dir, &path, &body))
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
        let path = self.path();
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            // Not published yet, or the shared file system not mounted yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(RendezvousError::Io {
                    action: "read",
                    path,
                    source: e,
                });
            }
            // NFS hiccups (stale handles, EIO) may pass.
            Err(e) => {
                return Err(RendezvousError::Transient {
                    location: self.location(),
                    detail: e.to_string(),
                });
            }
        };
        JoinTicket::parse(&text)
            .map(Some)
            .map_err(|source| RendezvousError::MalformedTicket {
                location: self.location(),
                source,
            })
    }
}

/// Writes `body` to `path` atomically with mode 0600; `false` when the file
/// already had exactly that content and mode.
fn write_ticket(dir: &Path, path: &Path, body: &str) -> Result<bool, RendezvousError> {
    if !dir.is_dir() {
        return Err(RendezvousError::DirectoryMissing {
            path: dir.to_path_buf(),
        });
    }
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| RendezvousError::Io {
            action,
            path: p,
            source,
        }
    };
    let same = std::fs::read(path).is_ok_and(|old| old == body.as_bytes())
        && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == TICKET_MODE);
    if same {
        return Ok(false);
    }
    // NamedTempFile creates the file 0600 in the same directory (same file
    // system, so the rename is atomic).
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
