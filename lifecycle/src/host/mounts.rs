//! The host's mount table, read from `/proc/self/mountinfo` under the host
//! root: a directory that merely exists is not a mounted volume.

use std::path::{Path, PathBuf};

use super::access::Host;
use super::fs::FsError;

/// Where the kernel lists this process's mounts.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point (escapes decoded).
    pub mount_point: PathBuf,
    /// File-system type (`xfs`, `ext4`, `tmpfs`, …).
    pub fs_type: String,
    /// Mount source (`/dev/md127`, `/dev/nvme1n1`, …).
    pub source: String,
    /// Root of the mount within its file system (`/` unless a bind mount of a subdirectory).
    pub root: PathBuf,
}

/// Parses `mountinfo` text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                root: path(unescape(pre.get(3)?)),
                mount_point: path(unescape(pre.get(4)?)),
                fs_type: (*post.first()?).to_string(),
                source: String::from_utf8_lossy(&unescape(post.get(1).unwrap_or(&""))).into_owned(),
            })
        })
        .collect()
}

/// A path from raw bytes (mount points need not be UTF-8).
fn path(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal
/// (one byte each: multi-byte UTF-8 passes through as it is). A backslash
/// not followed by three octal digits worth at most 255 stays literal.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u16, |v, c| v * 8 + u16::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match (b[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

impl Host {
    /// The host's mounts; empty when `mountinfo` is absent (a bare image).
    pub fn mounts(&self) -> Result<Vec<Mount>, FsError> {
        Ok(self
            .read_string_opt(MOUNTINFO)?
            .map(|t| parse_mountinfo(&t))
            .unwrap_or_default())
    }

    /// The mount whose mount point is exactly `host_path`, if any (the last
    /// one wins, as the kernel shows stacked mounts in order).
    pub fn mount_at(&self, host_path: impl AsRef<Path>) -> Result<Option<Mount>, FsError> {
        let p = host_path.as_ref();
        Ok(self
            .mounts()?
            .into_iter()
            .rev()
            .find(|m| m.mount_point == p))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_escape_decodes_to_its_byte() {
        // At the very end, non-ASCII around it, out of range, incomplete.
        assert_eq!(unescape("/mnt/a\\040"), b"/mnt/a ");
        assert_eq!(unescape("/mnt/\\011tab\\012nl\\134"), b"/mnt/\ttab\nnl\\");
        assert_eq!(unescape("/mnt/é\\040ü"), "/mnt/é ü".as_bytes());
        assert_eq!(unescape("/mnt/\\777"), b"/mnt/\\777");
        assert_eq!(unescape("/mnt/\\04"), b"/mnt/\\04");
        assert_eq!(unescape("/mnt/\\303\\251"), "/mnt/é".as_bytes());
        for byte in 0u8..=255 {
            assert_eq!(unescape(&format!("\\{byte:03o}")), [byte], "{byte}");
        }
        let m = parse_mountinfo("36 35 98:0 / /mnt/with\\040space rw - xfs /dev/md127 rw\n");
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
    }

    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
98 22 9:127 / /opt/dlami/nvme rw,relatime shared:45 master:2 - xfs /dev/md127 rw,attr2
99 22 7:0 / /mnt/with\\040space rw - xfs /dev/loop0 rw
garbage line
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, Path::new("/opt/dlami/nvme"));
        assert_eq!(m[1].fs_type, "xfs");
        assert_eq!(m[1].source, "/dev/md127");
        assert_eq!(m[2].mount_point, Path::new("/mnt/with space"));
    }
}
