//! Why step `instance-store` cannot plan.

use std::path::PathBuf;

use super::units::FS_LABEL;
use crate::error::class::classify;
use crate::host::CommandError;

/// Errors of this step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file could not be read.
    #[error(transparent)]
    Fs(#[from] crate::host::FsError),
    /// A probing command could not be started.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `blkid` failed for a reason other than "nothing found".
    #[error("`{command}` exited with status {status}: {stderr}; check the device {device}")]
    Probe {
        /// The device probed.
        device: PathBuf,
        /// Command line.
        command: String,
        /// Exit status.
        status: i32,
        /// Its stderr.
        stderr: String,
    },
    /// `mdadm --detail --scan` failed.
    #[error("`{command}` exited with status {status}: {stderr}; is the md driver available?")]
    RaidScan {
        /// Command line.
        command: String,
        /// Exit status.
        status: i32,
        /// Its stderr.
        stderr: String,
    },
    /// The array hpk8s would reuse holds a file system it did not create.
    #[error(
        "{device} (md array `{name}`) holds a {fs_type} file system not labelled {FS_LABEL}; hpk8s will not format it: wipe it (wipefs -a) or set instance_store.raid_name to another name"
    )]
    ForeignArray {
        /// Array device.
        device: PathBuf,
        /// Array name.
        name: String,
        /// File-system type found.
        fs_type: String,
    },
    /// Something other than the store is mounted where a directory would be
    /// bind-mounted.
    #[error(
        "{path} is already a mount of {source_device} (root {root}), not of the instance store at {store}; unmount it or set instance_store.{key} = false"
    )]
    ForeignMount {
        /// The directory.
        path: PathBuf,
        /// Its mount source.
        source_device: String,
        /// Root of that mount within its file system.
        root: PathBuf,
        /// Where the store is.
        store: PathBuf,
        /// The config key that asks for the move.
        key: &'static str,
    },
    /// The store's directory that would be bind-mounted is not one only
    /// root controls (a symlink, another owner, writable by others).
    #[error(
        "{path} would be bind-mounted as {dir} but {reason}; remove it (hpk8s creates it) or set instance_store.{key} = false"
    )]
    UntrustedDirectory {
        /// The directory on the store.
        path: PathBuf,
        /// Where it would be mounted.
        dir: &'static str,
        /// What is wrong.
        reason: String,
        /// The config key that asks for the move.
        key: &'static str,
    },
    /// The directory to move has mounts inside it (running pods' volumes).
    #[error(
        "{path} has file systems mounted inside it ({inner}); drain the node and reboot before moving it onto the instance store, or set instance_store.{key} = false"
    )]
    Busy {
        /// The directory.
        path: PathBuf,
        /// One mount inside it.
        inner: PathBuf,
        /// The config key that asks for the move.
        key: &'static str,
    },
    /// A path in `[instance_store]` cannot be a mount point.
    #[error(
        "instance_store.{key}: `{path}` must be an absolute, normalized path without whitespace"
    )]
    InvalidPath {
        /// Config key.
        key: &'static str,
        /// The value.
        path: PathBuf,
    },
    /// systemd could not say whether kubelet runs.
    #[error(
        "`{command}` exited with status {status}: {stderr}; cannot tell whether kubelet runs, so its files are not copied"
    )]
    ServiceState {
        /// Command line.
        command: String,
        /// Exit status.
        status: i32,
        /// Its stderr.
        stderr: String,
    },
    /// `instance_store.raid_name` cannot name an md array.
    #[error(
        "instance_store.raid_name: `{name}` is not a valid md array name (1–32 of letters, digits, `-`, `_`, `.`)"
    )]
    InvalidRaidName {
        /// The value.
        name: String,
    },
}

classify!(Error {
    Fs { 0: e } => via e;
    Command { 0: e } => via e;
    Probe { .. } => Host "device_probe_failed";
    RaidScan { .. } => Host "raid_scan_failed";
    ForeignArray { .. } => Refused "foreign_raid_array";
    ForeignMount { .. } => Refused "foreign_mount";
    UntrustedDirectory { .. } => Refused "instance_store_directory_untrusted";
    Busy { .. } => Refused "directory_busy";
    InvalidPath { .. } => Config "instance_store_path_invalid";
    InvalidRaidName { .. } => Config "raid_name_invalid";
    ServiceState { .. } => Host "service_state_unknown";
});
