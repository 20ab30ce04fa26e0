//! systemd mount units: the unit name systemd derives from a mount point,
//! and the two kinds of unit this step writes (the instance-store file
//! system, and bind mounts of state directories onto it).

use std::path::Path;

/// Label of the file system hpk8s creates; the mount unit finds it by this.
pub const FS_LABEL: &str = "hpk8s-nvme";

/// Where hpk8s installs its unit files.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The target whose `.wants` directory `systemctl enable` links units into.
pub const WANTED_BY: &str = "local-fs.target";

/// Whether `path` is absolute and normalized (no `.`/`..` components, no
/// empty components, no trailing slash), as systemd requires of `Where=`
/// and as [`mount_unit_name`] assumes. Whitespace is refused too, because
/// `RequiresMountsFor=` separates paths with spaces.
pub fn is_normalized(path: &Path) -> bool {
    let Some(s) = path.to_str() else { return false };
    if s.chars().any(char::is_whitespace) {
        return false;
    }
    s == "/"
        || s.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
        })
}

/// The unit name systemd gives the mount at `path` (`systemd-escape --path
/// --suffix=mount`): `/mnt/k8s-disks` → `mnt-k8s\x2ddisks.mount`. `path`
/// must satisfy [`is_normalized`].
pub fn mount_unit_name(path: &Path) -> String {
    let s = path.to_string_lossy();
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    let mut out = String::with_capacity(trimmed.len() + 6);
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            // A leading dot would make a hidden file; systemd escapes it.
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(char::from(b));
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push_str(".mount");
    out
}

/// The unit file mounting the instance-store file system (found by its
/// label) at `mount_point`. `nofail` keeps a node whose disks vanished
/// (stop/start onto a new host) bootable.
pub fn store_mount_unit(what: &str, mount_point: &Path) -> String {
    format!(
        "# Written by hpk8s: the local NVMe instance store.\n\
         # Its contents are lost when the instance stops: keep nothing here that must survive.\n\
         [Unit]\n\
         Description=hpk8s instance store at {where_}\n\
         \n\
         [Mount]\n\
         What={what}\n\
         Where={where_}\n\
         Type=xfs\n\
         Options=defaults,noatime,nofail\n\
         \n\
         [Install]\n\
         WantedBy={WANTED_BY}\n",
        where_ = mount_point.display(),
    )
}

/// The unit file bind-mounting `source` (a directory on the store) over
/// `target`. `ConditionPathIsMountPoint=` makes it a no-op rather than a
/// bind onto the root disk when the store is not mounted at boot (a store
/// mounted late by an image's own service has no unit for
/// `RequiresMountsFor=` to wait on).
pub fn bind_mount_unit(store: &Path, source: &Path, target: &Path) -> String {
    format!(
        "# Written by hpk8s: {target} lives on the instance store.\n\
         [Unit]\n\
         Description=hpk8s: {target} on the instance store\n\
         RequiresMountsFor={store}\n\
         ConditionPathIsMountPoint={store}\n\
         \n\
         [Mount]\n\
         What={source}\n\
         Where={target}\n\
         Type=none\n\
         Options=bind\n\
         \n\
         [Install]\n\
         WantedBy={WANTED_BY}\n",
        store = store.display(),
        source = source.display(),
        target = target.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd() {
        // Expected values from `systemd-escape --path --suffix=mount`.
        let cases = [
            ("/mnt/k8s-disks", "mnt-k8s\\x2ddisks.mount"),
            ("/var/lib/kubelet", "var-lib-kubelet.mount"),
            ("/opt/dlami/nvme", "opt-dlami-nvme.mount"),
            ("/", "-.mount"),
            ("/.hidden/x.y", "\\x2ehidden-x.y.mount"),
            ("/a:b_c/ü", "a:b_c-\\xc3\\xbc.mount"),
            ("/var/log/pods", "var-log-pods.mount"),
        ];
        for (path, unit) in cases {
            assert_eq!(mount_unit_name(Path::new(path)), unit, "{path}");
        }
    }

    #[test]
    fn normalized_paths_only() {
        assert!(is_normalized(Path::new("/mnt/k8s-disks")));
        assert!(is_normalized(Path::new("/")));
        for bad in [
            "mnt/x",
            "/mnt/../x",
            "/mnt/./x",
            "/mnt//x",
            "/mnt/x/",
            "/a b",
        ] {
            assert!(!is_normalized(Path::new(bad)), "{bad}");
        }
    }
}
