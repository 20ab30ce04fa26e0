//! Step `instance-store` of phase `prepare`: put the node's local NVMe to
//! work as pod ephemeral storage.
//!
//! 1. An instance store the image already mounted (`/opt/dlami/nvme` on the
//!    HyperPod DLAMI) is used as it is, provided it is a real mount point.
//! 2. Otherwise the instance-store NVMe disks are found in sysfs (never EBS,
//!    never a disk with partitions, a mount or somebody else's file system).
//!    One disk is formatted directly; several become a RAID0 array with a
//!    fixed name, reused when a previous boot created it. `mkfs.xfs` runs
//!    only on a device with no file system, and the result is mounted by
//!    label through a systemd mount unit.
//! 3. `/var/lib/kubelet` (and optionally `/var/log/pods`) is bind-mounted
//!    from the store, after copying what is already there with kubelet
//!    stopped. The original directory is left in place underneath.
//!
//! containerd's data root is not moved here: the `containerd` step points
//! `root` at [`store_root`]. "No instance-store disks" is success.
//!
//! A run interrupted between stopping kubelet and starting it again leaves
//! kubelet stopped: the re-run finds it inactive and does not start it (the
//! `join` phase starts kubelet through kubeadm anyway).
//!
//! Known limit: the bind mount units order themselves after the store with
//! `RequiresMountsFor=`, which only works when the store has a mount unit
//! (ours, or one generated from fstab). An image that mounts its store late
//! from a service of its own leaves the bind unit skipped at boot (its
//! `ConditionPathIsMountPoint=` fails) and kubelet on the root disk, with
//! the contents copied at the time of the move; re-running `hpk8s` copies
//! those onto the store again (newer files there are overwritten) and
//! bind-mounts it.

pub mod disk;
mod error;
pub mod nvme;
pub mod raid;
pub mod units;

use std::path::{Path, PathBuf};

pub use self::error::Error;
pub use self::units::FS_LABEL;

use super::context::Context;
use crate::host::{Cmd, FileMode, Host};
use crate::plan::{Change, ServiceOperation, StepPlan};
use disk::{Contents, on_device, probe};

/// Step name in plans.
pub const STEP: &str = "instance-store";
/// Creates the file system.
pub const MKFS_XFS: &str = "mkfs.xfs";
/// Waits for udev to create `/dev/disk/by-label/…` after `mkfs`.
pub const UDEVADM: &str = "udevadm";
/// Copies existing state onto the store, keeping owners, modes and links.
pub const CP: &str = "cp";
/// Asks systemd whether kubelet runs.
pub const SYSTEMCTL: &str = "systemctl";
/// kubelet's unit, stopped while its directory is copied.
pub const KUBELET_UNIT: &str = "kubelet.service";
/// kubelet's state: pod volumes and ephemeral storage.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// Container logs.
pub const POD_LOGS_DIR: &str = "/var/log/pods";

/// Where the instance store is (or will be, once this step is applied)
/// mounted: `None` when disabled or when the node has no usable instance
/// store. Other steps (containerd's data root) build on this.
pub fn store_root(cx: &Context<'_>) -> Result<Option<PathBuf>, Error> {
    let mut scratch = StepPlan::new(STEP);
    Ok(survey(cx, &mut scratch)?
        .mount_point()
        .map(Path::to_path_buf))
}

/// What [`survey`] found.
#[derive(Debug)]
enum Store {
    /// `instance_store.enabled = false`.
    Disabled,
    /// No usable instance-store disk.
    Absent,
    /// Mounted by the image (an `existing_mounts` entry).
    Existing(PathBuf),
    /// hpk8s's own mount point, mounted already.
    Mounted(PathBuf),
    /// Disks to assemble, format and mount.
    Assemble {
        /// Where the result is mounted.
        mount_point: PathBuf,
        /// What to build it from.
        source: Source,
        /// Whether the device still needs a file system.
        mkfs: bool,
    },
}

impl Store {
    fn mount_point(&self) -> Option<&Path> {
        match self {
            Store::Disabled | Store::Absent => None,
            Store::Existing(p) | Store::Mounted(p) | Store::Assemble { mount_point: p, .. } => {
                Some(p)
            }
        }
    }
}

/// The block device the store's file system lives on.
#[derive(Debug)]
enum Source {
    /// One disk used directly.
    Disk(PathBuf),
    /// An array to create over these disks.
    NewArray(Vec<PathBuf>),
    /// An array that exists already.
    Array(PathBuf),
}

impl Source {
    fn device(&self, raid_name: &str) -> PathBuf {
        match self {
            Source::Disk(d) | Source::Array(d) => d.clone(),
            Source::NewArray(_) => raid::device(raid_name),
        }
    }
}

/// Looks at the host (read-only: sysfs, mountinfo, `blkid`, `mdadm
/// --detail --scan`) and decides where the store is or will be.
fn survey(cx: &Context<'_>, plan: &mut StepPlan) -> Result<Store, Error> {
    let host = cx.host;
    let cfg = &cx.config.instance_store;
    if !cfg.enabled {
        return Ok(Store::Disabled);
    }
    for existing in &cfg.existing_mounts {
        if host.mount_at(existing)?.is_some() {
            if !units::is_normalized(existing) {
                return Err(Error::InvalidPath {
                    key: "existing_mounts",
                    path: existing.clone(),
                });
            }
            return Ok(Store::Existing(existing.clone()));
        }
        if host.exists(existing) {
            plan.note(format!(
                "{} exists but is not a mount point: not using it",
                existing.display()
            ));
        }
    }
    if !units::is_normalized(&cfg.mount_point) {
        return Err(Error::InvalidPath {
            key: "mount_point",
            path: cfg.mount_point.clone(),
        });
    }
    if !raid::valid_name(&cfg.raid_name) {
        return Err(Error::InvalidRaidName {
            name: cfg.raid_name.clone(),
        });
    }
    if host.mount_at(&cfg.mount_point)?.is_some() {
        return Ok(Store::Mounted(cfg.mount_point.clone()));
    }

    let inventory = nvme::inventory(host)?;
    for (ctrl, model) in &inventory.others {
        if model != nvme::EBS_MODEL {
            plan.note(format!("{ctrl}: model `{model}` is not instance storage"));
        }
    }
    if inventory.instance_store.is_empty() {
        plan.note("no instance-store disks: nothing to do");
        return Ok(Store::Absent);
    }
    plan.note(format!(
        "instance-store disks: {}",
        inventory
            .instance_store
            .iter()
            .map(|ns| ns.dev().display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mounts = host.mounts()?;
    let mut candidates: Vec<(PathBuf, Contents)> = Vec::new();
    for ns in &inventory.instance_store {
        let dev = ns.dev();
        if nvme::has_partitions(host, &ns.name)? {
            plan.note(format!("{}: has partitions, left alone", dev.display()));
            continue;
        }
        if let Some(m) = mounts.iter().find(|m| on_device(m, &dev)) {
            plan.note(format!(
                "{}: mounted at {}, left alone",
                dev.display(),
                m.mount_point.display()
            ));
            continue;
        }
        match probe(host, &dev)? {
            Contents::Foreign(fs) => plan.note(format!(
                "{}: holds a {fs} file system, left alone",
                dev.display()
            )),
            contents => candidates.push((dev, contents)),
        }
    }
    let mount_point = cfg.mount_point.clone();
    // A disk hpk8s already formatted (a run interrupted before mounting).
    if let Some((dev, _)) = candidates.iter().find(|(_, c)| *c == Contents::Ours) {
        return Ok(Store::Assemble {
            mount_point,
            source: Source::Disk(dev.clone()),
            mkfs: false,
        });
    }
    let members = candidates.iter().any(|(_, c)| *c == Contents::RaidMember);
    if let [(dev, Contents::Blank)] = candidates.as_slice() {
        return Ok(Store::Assemble {
            mount_point,
            source: Source::Disk(dev.clone()),
            mkfs: true,
        });
    }
    if candidates.len() >= 2 || members {
        let out = host.runner().run(&raid::scan_cmd())?;
        if out.status != 0 {
            return Err(Error::RaidScan {
                command: raid::scan_cmd().display(),
                status: out.status,
                stderr: out.stderr_tail(),
            });
        }
        let arrays = raid::parse_scan(&out.stdout_str());
        if let Some(array) = raid::find(&arrays, &cfg.raid_name) {
            plan.note(format!(
                "reusing md array `{}` ({})",
                cfg.raid_name,
                array.device.display()
            ));
            let mkfs = match probe(host, &array.device)? {
                Contents::Blank => true,
                Contents::Ours => false,
                Contents::RaidMember | Contents::Foreign(_) => {
                    return Err(Error::ForeignArray {
                        device: array.device.clone(),
                        name: cfg.raid_name.clone(),
                        fs_type: disk::fs_type(host, &array.device)?,
                    });
                }
            };
            return Ok(Store::Assemble {
                mount_point,
                source: Source::Array(array.device.clone()),
                mkfs,
            });
        }
    }
    let blank: Vec<PathBuf> = candidates
        .into_iter()
        .filter_map(|(dev, c)| match c {
            Contents::Blank => Some(dev),
            _ => {
                plan.note(format!(
                    "{}: member of an md array other than `{}`, left alone",
                    dev.display(),
                    cfg.raid_name
                ));
                None
            }
        })
        .collect();
    Ok(match blank.len() {
        0 => {
            plan.note("no usable instance-store disks: nothing to do");
            Store::Absent
        }
        1 => Store::Assemble {
            mount_point,
            source: Source::Disk(blank[0].clone()),
            mkfs: true,
        },
        _ => Store::Assemble {
            mount_point,
            source: Source::NewArray(blank),
            mkfs: true,
        },
    })
}

/// What this step would change now.
pub fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let host = cx.host;
    let cfg = &cx.config.instance_store;
    let mut plan = StepPlan::new(STEP);
    let store = survey(cx, &mut plan)?;
    match &store {
        Store::Disabled => {
            plan.note("instance_store.enabled = false: local NVMe left alone");
            return Ok(plan);
        }
        Store::Absent => return Ok(plan),
        Store::Existing(p) => plan.note(format!(
            "using the instance store the image mounted at {}",
            p.display()
        )),
        Store::Mounted(p) => {
            // Persist only a file system hpk8s made: another tool's mount
            // here (the EKS AMI uses the same path) keeps its own unit.
            let source = host.mount_at(p)?.map(|m| m.source).unwrap_or_default();
            let label = if source.starts_with("/dev/") {
                disk::blkid(host, Path::new(&source), "LABEL")?
            } else {
                None
            };
            if label.as_deref() == Some(FS_LABEL) {
                plan.note(format!("instance store mounted at {}", p.display()));
                plan_store_unit(host, p, true, &mut plan)?;
            } else {
                plan.note(format!(
                    "{} is mounted from {source}, which hpk8s did not format: used as it is",
                    p.display()
                ));
            }
        }
        Store::Assemble {
            mount_point,
            source,
            mkfs,
        } => {
            let device = source.device(&cfg.raid_name);
            if let Source::NewArray(members) = source {
                plan.push(Change::run(
                    raid::create_cmd(&cfg.raid_name, members),
                    format!(
                        "stripe {} instance-store disks into one RAID0 array",
                        members.len()
                    ),
                ));
            }
            if *mkfs {
                plan.push(Change::run(
                    Cmd::new(MKFS_XFS)
                        .args(["-L", FS_LABEL])
                        .arg(device.display().to_string()),
                    format!("{} has no file system", device.display()),
                ));
            }
            // Also when an earlier, interrupted run did the mkfs: the mount
            // unit waits for the by-label link udev creates.
            plan.push(Change::run(
                Cmd::new(UDEVADM).args(["settle", "--timeout=60"]),
                format!("wait for /dev/disk/by-label/{FS_LABEL}"),
            ));
            plan_store_unit(host, mount_point, false, &mut plan)?;
        }
    }
    if let Some(root) = store.mount_point() {
        plan_moves(cx, root, &mut plan)?;
    }
    Ok(plan)
}

/// Whether `systemctl enable` has linked `unit` into `local-fs.target`.
/// The link's target is an absolute host path, so look at the link itself.
fn enabled(host: &Host, unit: &str) -> bool {
    let link = Path::new(units::UNIT_DIR)
        .join(format!("{}.wants", units::WANTED_BY))
        .join(unit);
    std::fs::symlink_metadata(host.path(link)).is_ok()
}

/// The store's mount unit, written, loaded, enabled and started.
fn plan_store_unit(
    host: &Host,
    mount_point: &Path,
    mounted: bool,
    plan: &mut StepPlan,
) -> Result<(), Error> {
    let unit = units::mount_unit_name(mount_point);
    let text = units::store_mount_unit(&format!("/dev/disk/by-label/{FS_LABEL}"), mount_point);
    let write = Change::write_file(
        host,
        Path::new(units::UNIT_DIR).join(&unit),
        text,
        FileMode::CONFIG,
        false,
    )?;
    let start = !mounted || !enabled(host, &unit);
    let reload = write.is_some() || start;
    plan.push_opt(write);
    if reload {
        // Also after an interrupted run that wrote the unit but never
        // reloaded: systemd must not act on a stale copy.
        plan.push(Change::service(
            "",
            ServiceOperation::DaemonReload,
            format!("load {unit}"),
        ));
    }
    if start {
        plan.push(Change::service(
            &unit,
            ServiceOperation::EnableNow,
            format!("mount the instance store at {}", mount_point.display()),
        ));
    }
    Ok(())
}

/// A state directory to put on the store.
struct Move {
    dir: &'static str,
    subdir: &'static str,
    key: &'static str,
}

/// Bind mounts of kubelet's directories onto the store.
fn plan_moves(cx: &Context<'_>, store: &Path, plan: &mut StepPlan) -> Result<(), Error> {
    let host = cx.host;
    let cfg = &cx.config.instance_store;
    let wanted = [
        (
            cfg.move_kubelet,
            Move {
                dir: KUBELET_DIR,
                subdir: "kubelet",
                key: "move_kubelet",
            },
        ),
        (
            cfg.move_pod_logs,
            Move {
                dir: POD_LOGS_DIR,
                subdir: "pods-logs",
                key: "move_pod_logs",
            },
        ),
    ];
    let mounts = host.mounts()?;
    let store_mount = mounts.iter().rev().find(|m| m.mount_point == store);
    let mut todo = Vec::new();
    for (on, mv) in wanted {
        if !on {
            continue;
        }
        let dir = Path::new(mv.dir);
        if let Some(m) = mounts.iter().rev().find(|m| m.mount_point == dir) {
            let ours = store_mount
                .is_some_and(|s| m.source == s.source && m.root == s.root.join(mv.subdir));
            if ours {
                plan.note(format!("{} is on the instance store", mv.dir));
                continue;
            }
            return Err(Error::ForeignMount {
                path: dir.to_path_buf(),
                source_device: m.source.clone(),
                root: m.root.clone(),
                store: store.to_path_buf(),
                key: mv.key,
            });
        }
        if let Some(inner) = mounts
            .iter()
            .find(|m| m.mount_point.starts_with(dir) && m.mount_point != dir)
        {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
                inner: inner.mount_point.clone(),
                key: mv.key,
            });
        }
        todo.push(mv);
    }
    if todo.is_empty() {
        return Ok(());
    }
    let copies: Vec<bool> = todo
        .iter()
        .map(|mv| host.list_dir(mv.dir).map(|entries| !entries.is_empty()))
        .collect::<Result<_, _>>()?;
    // kubelet writes both directories: copy them with it stopped.
    let stop_kubelet = copies.iter().any(|c| *c) && kubelet_active(host)?;
    if stop_kubelet {
        plan.push(Change::service(
            KUBELET_UNIT,
            ServiceOperation::Stop,
            "copy its files onto the instance store while it is stopped",
        ));
    }
    let mut starts = Vec::new();
    // What is bind-mounted over kubelet's directory must be root's alone:
    // a symlink planted there (by whoever could write the store before
    // hpk8s ran) would redirect kubelet's state anywhere.
    let owner = if host.is_live() || nix::unistd::geteuid().is_root() {
        0
    } else {
        nix::unistd::geteuid().as_raw()
    };
    for mv in &todo {
        let target = store.join(mv.subdir);
        if let Some(o) = host.ownership(&target)
            && !o.private_directory_of(owner)
        {
            let reason = if !o.directory {
                "it is not a directory (a symlink or a file)".to_string()
            } else if o.uid != owner {
                format!("it belongs to uid {}, not {owner}", o.uid)
            } else {
                format!("group or others may write it (mode {:04o})", o.mode)
            };
            return Err(Error::UntrustedDirectory {
                path: target,
                dir: mv.dir,
                reason,
                key: mv.key,
            });
        }
    }
    for (mv, copy) in todo.iter().zip(copies) {
        let target = store.join(mv.subdir);
        if !host.exists(&target) {
            plan.push(Change::CreateDir {
                path: target.clone(),
            });
        }
        if copy {
            plan.push(Change::run(
                Cmd::new(CP)
                    .arg("-a")
                    .arg(format!("{}/.", mv.dir))
                    .arg(format!("{}/", target.display())),
                format!("keep what is in {} already", mv.dir),
            ));
        }
        let unit = units::mount_unit_name(Path::new(mv.dir));
        plan.push_opt(Change::write_file(
            host,
            Path::new(units::UNIT_DIR).join(&unit),
            units::bind_mount_unit(store, &target, Path::new(mv.dir)),
            FileMode::CONFIG,
            false,
        )?);
        starts.push((unit, mv.dir));
    }
    plan.push(Change::service(
        "",
        ServiceOperation::DaemonReload,
        "load the bind mount units",
    ));
    for (unit, dir) in starts {
        plan.push(Change::service(
            &unit,
            ServiceOperation::EnableNow,
            format!("bind-mount {dir} from the instance store"),
        ));
    }
    if stop_kubelet {
        plan.push(Change::service(
            KUBELET_UNIT,
            ServiceOperation::Start,
            "it was running before the move",
        ));
    }
    Ok(())
}

/// `systemctl is-active kubelet.service`: 0 is active, 3 inactive, 4 no
/// such unit; anything else means systemd could not tell, and copying a
/// directory kubelet may be writing is not worth the risk.
fn kubelet_active(host: &Host) -> Result<bool, Error> {
    let cmd = Cmd::new(SYSTEMCTL).args(["is-active", KUBELET_UNIT]);
    let out = host.runner().run(&cmd)?;
    match out.status {
        0 => Ok(true),
        3 | 4 => Ok(false),
        status => Err(Error::ServiceState {
            command: cmd.display(),
            status,
            stderr: out.stderr_tail(),
        }),
    }
}
