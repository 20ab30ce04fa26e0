//! What a disk holds, asked of `blkid`, which knows file systems and RAID
//! superblocks alike. A disk is only ever formatted when `blkid` finds
//! nothing on it.

use std::path::Path;

use crate::host::mounts::Mount;
use crate::host::{Cmd, Host};

use super::error::Error;
use super::units::FS_LABEL;

/// Identifies file systems and RAID members on a device.
pub const BLKID: &str = "blkid";
/// `blkid` type of a disk that belongs to an md array.
pub const RAID_MEMBER: &str = "linux_raid_member";

/// What a disk holds, per `blkid`.
#[derive(Debug, PartialEq, Eq)]
pub enum Contents {
    /// Nothing recognisable.
    Blank,
    /// The file system hpk8s made (an interrupted earlier run).
    Ours,
    /// A member of an md array.
    RaidMember,
    /// Anything else: never touched.
    Foreign(String),
}

/// Whether `m` is a mount of `dev` or of one of its partitions.
pub fn on_device(m: &Mount, dev: &Path) -> bool {
    let dev = dev.to_string_lossy();
    m.source == dev
        || m.source
            .strip_prefix(dev.as_ref())
            .and_then(|rest| rest.strip_prefix('p'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `blkid -o value -s <tag> <dev>`: `None` when blkid finds nothing (exit 2).
pub fn blkid(host: &Host, dev: &Path, tag: &str) -> Result<Option<String>, Error> {
    let cmd = Cmd::new(BLKID)
        .args(["-o", "value", "-s", tag])
        .arg(dev.display().to_string());
    let out = host.runner().run(&cmd)?;
    match out.status {
        0 => Ok(Some(out.stdout_str().trim().to_string()).filter(|s| !s.is_empty())),
        2 => Ok(None),
        status => Err(Error::Probe {
            device: dev.to_path_buf(),
            command: cmd.display(),
            status,
            stderr: out.stderr_tail(),
        }),
    }
}

/// The file-system type on `dev` for messages (`unknown` when none).
pub fn fs_type(host: &Host, dev: &Path) -> Result<String, Error> {
    Ok(blkid(host, dev, "TYPE")?.unwrap_or_else(|| "unknown".into()))
}

/// What `dev` holds, per `blkid` (one call, two for an xfs file system).
pub fn probe(host: &Host, dev: &Path) -> Result<Contents, Error> {
    Ok(match blkid(host, dev, "TYPE")?.as_deref() {
        None => Contents::Blank,
        Some(RAID_MEMBER) => Contents::RaidMember,
        Some("xfs") if blkid(host, dev, "LABEL")?.as_deref() == Some(FS_LABEL) => Contents::Ours,
        Some(other) => Contents::Foreign(other.to_string()),
    })
}
