//! The RAID0 array striping several instance-store disks: finding the one a
//! previous boot created (so a reboot reuses it instead of creating another)
//! and the command creating it.
//!
//! The array is not written to `/etc/mdadm/mdadm.conf`: udev's incremental
//! assembly brings it back at boot without it (possibly as `/dev/md127`
//! with a `homehost:` prefix on its name, which [`find`] accepts), and the
//! file system is mounted by label, so the device name never matters.

use std::path::{Path, PathBuf};

use crate::host::Cmd;

/// The md management tool.
pub const MDADM: &str = "mdadm";

/// One `ARRAY` line of `mdadm --detail --scan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdArray {
    /// Device, e.g. `/dev/md/hpk8s-nvme` or `/dev/md127`.
    pub device: PathBuf,
    /// `name=` as recorded in the superblock (`host:name` or `name`).
    pub name: Option<String>,
}

/// `mdadm --detail --scan`: lists active arrays.
pub fn scan_cmd() -> Cmd {
    Cmd::new(MDADM).args(["--detail", "--scan"])
}

/// Parses `mdadm --detail --scan` output.
pub fn parse_scan(text: &str) -> Vec<MdArray> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "ARRAY" {
                return None;
            }
            let device = PathBuf::from(words.next()?);
            let name = words
                .find_map(|w| w.strip_prefix("name="))
                .map(str::to_string);
            Some(MdArray { device, name })
        })
        .collect()
}

/// The array called `name`, whatever host created it or device it got.
pub fn find<'a>(arrays: &'a [MdArray], name: &str) -> Option<&'a MdArray> {
    arrays.iter().find(|a| {
        a.device == device(name)
            || a.name
                .as_deref()
                .is_some_and(|n| n.rsplit_once(':').map_or(n, |(_, short)| short) == name)
    })
}

/// Where mdadm creates the array called `name`.
pub fn device(name: &str) -> PathBuf {
    Path::new("/dev/md").join(name)
}

/// `mdadm --create` of a RAID0 array over `members`. `--run` answers the
/// "continue creating array?" question mdadm would otherwise ask.
pub fn create_cmd(name: &str, members: &[PathBuf]) -> Cmd {
    Cmd::new(MDADM)
        .arg("--create")
        .arg(device(name).display().to_string())
        .arg("--level=0")
        .arg(format!("--raid-devices={}", members.len()))
        .arg(format!("--name={name}"))
        .arg("--run")
        .args(members.iter().map(|m| m.display().to_string()))
}

/// Whether `name` is usable as an md array name (it becomes `/dev/md/<name>`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_array_by_name_or_device() {
        let scan = "\
ARRAY /dev/md/other metadata=1.2 name=ip-10-0-0-1:other UUID=1
ARRAY /dev/md127 metadata=1.2 name=ip-10-0-0-9:hpk8s-nvme UUID=2
";
        let arrays = parse_scan(scan);
        assert_eq!(arrays.len(), 2);
        assert_eq!(
            find(&arrays, "hpk8s-nvme").map(|a| a.device.clone()),
            Some(PathBuf::from("/dev/md127"))
        );
        assert!(find(&arrays, "hpk8s").is_none());
        let by_device = parse_scan("ARRAY /dev/md/hpk8s-nvme metadata=1.2 UUID=3\n");
        assert!(find(&by_device, "hpk8s-nvme").is_some());
    }

    #[test]
    fn create_names_every_member() {
        let c = create_cmd(
            "x",
            &[PathBuf::from("/dev/nvme1n1"), PathBuf::from("/dev/nvme2n1")],
        );
        assert_eq!(
            c.display(),
            "mdadm --create /dev/md/x --level=0 --raid-devices=2 --name=x --run /dev/nvme1n1 /dev/nvme2n1"
        );
    }
}
