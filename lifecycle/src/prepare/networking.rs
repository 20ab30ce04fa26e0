//! Step `networking` of phase `prepare`: the kernel modules, sysctls and
//! swap setting that kubelet and bridged pod networking need.
//!
//! Each setting is persisted (so a reboot keeps it) and applied now, but only
//! where the running kernel differs: a module that is built in (no
//! `/sys/module` entry, `modprobe` would fail) counts as present when its
//! feature is visible, and a sysctl already at its value is left alone.

use std::path::{Path, PathBuf};

use crate::host::{Cmd, FileMode, Host};
use crate::plan::{Change, StepPlan, sysctl_path};

use super::context::Context;
use crate::error::class::classify;

/// Step name in plans.
pub const STEP: &str = "networking";
/// Modules loaded at boot by `systemd-modules-load`.
pub const MODULES_LOAD_FILE: &str = "/etc/modules-load.d/hpk8s.conf";
/// Sysctls applied at boot by `systemd-sysctl`.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/99-hpk8s.conf";
/// Loaded modules, one per directory (built-ins with parameters appear too).
pub const SYS_MODULE_DIR: &str = "/sys/module";
/// Loadable modules currently loaded.
pub const PROC_MODULES: &str = "/proc/modules";
/// File systems the kernel supports now (`overlay` once its module is in).
pub const PROC_FILESYSTEMS: &str = "/proc/filesystems";
/// Active swap areas.
pub const PROC_SWAPS: &str = "/proc/swaps";
/// Static file-system table.
pub const FSTAB: &str = "/etc/fstab";
/// Loads a kernel module.
pub const MODPROBE: &str = "modprobe";
/// Turns swap off.
pub const SWAPOFF: &str = "swapoff";
/// Prefix put in front of the swap lines hpk8s comments out of `/etc/fstab`,
/// so an operator can find (and undo) them.
pub const FSTAB_COMMENT: &str = "#hpk8s: ";

/// Errors of this step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file could not be read.
    #[error(transparent)]
    Fs(#[from] crate::host::FsError),
    /// A module name in the config is not a plain module name.
    #[error(
        "networking.modules: `{name}` is not a kernel module name (letters, digits, `_` and `-` only)"
    )]
    InvalidModule {
        /// The offending entry.
        name: String,
    },
    /// A sysctl key in the config does not name a `/proc/sys` file.
    #[error("networking.sysctls: `{key}` is not a sysctl key (dotted, like `net.ipv4.ip_forward`)")]
    InvalidSysctlKey {
        /// The offending key.
        key: String,
    },
    /// A sysctl value spans several lines.
    #[error("networking.sysctls: the value of `{key}` must be a single line")]
    InvalidSysctlValue {
        /// The key whose value is wrong.
        key: String,
    },
}

classify!(Error {
    Fs { 0: e } => via e;
    InvalidModule { .. } => Config "kernel_module_name_invalid";
    InvalidSysctlKey { .. } => Config "sysctl_key_invalid";
    InvalidSysctlValue { .. } => Config "sysctl_value_invalid";
});

/// What this step would change now.
pub fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let host = cx.host;
    let cfg = &cx.config.networking;
    let mut plan = StepPlan::new(STEP);
    plan_modules(host, &cfg.modules, &mut plan)?;
    plan_sysctls(host, &cfg.sysctls, &mut plan)?;
    if cfg.disable_swap {
        plan_swap(host, &mut plan)?;
    } else {
        plan.note("networking.disable_swap = false: swap left as it is");
    }
    Ok(plan)
}

fn plan_modules(host: &Host, modules: &[String], plan: &mut StepPlan) -> Result<(), Error> {
    for name in modules {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(Error::InvalidModule { name: name.clone() });
        }
    }
    let mut persisted =
        String::from("# Written by hpk8s: kernel modules Kubernetes networking needs at boot.\n");
    for name in modules {
        persisted.push_str(name);
        persisted.push('\n');
    }
    plan.push_opt(Change::write_file(
        host,
        MODULES_LOAD_FILE,
        persisted,
        FileMode::CONFIG,
        false,
    )?);
    for name in modules {
        if module_present(host, name)? {
            continue;
        }
        plan.push(Change::run(
            Cmd::new(MODPROBE).arg(name.as_str()),
            format!("kernel module {name} is not loaded"),
        ));
    }
    Ok(())
}

/// Whether `name` is in the running kernel: loaded, listed, or (when built
/// in, which leaves no trace in `/proc/modules`) its feature is visible.
pub fn module_present(host: &Host, name: &str) -> Result<bool, Error> {
    // The kernel reports `-` and `_` interchangeably in module names.
    let canonical = name.replace('-', "_");
    if host.exists(Path::new(SYS_MODULE_DIR).join(&canonical)) {
        return Ok(true);
    }
    let listed = host.read_string_opt(PROC_MODULES)?.is_some_and(|t| {
        t.lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|m| m.replace('-', "_") == canonical)
    });
    if listed {
        return Ok(true);
    }
    Ok(match canonical.as_str() {
        "br_netfilter" => host.exists(sysctl_path("net.bridge.bridge-nf-call-iptables")),
        "overlay" => host.read_string_opt(PROC_FILESYSTEMS)?.is_some_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        }),
        _ => false,
    })
}

fn plan_sysctls(
    host: &Host,
    sysctls: &std::collections::BTreeMap<String, String>,
    plan: &mut StepPlan,
) -> Result<(), Error> {
    let mut persisted =
        String::from("# Written by hpk8s: kernel parameters Kubernetes networking needs.\n");
    for (key, value) in sysctls {
        let valid = !key.is_empty()
            && key
                .split('.')
                .all(|part| !part.is_empty() && !part.contains('/'))
            && !key.chars().any(char::is_whitespace);
        if !valid {
            return Err(Error::InvalidSysctlKey { key: key.clone() });
        }
        if value.contains('\n') || value.contains('\r') {
            return Err(Error::InvalidSysctlValue { key: key.clone() });
        }
        persisted.push_str(&format!("{key} = {value}\n"));
    }
    plan.push_opt(Change::write_file(
        host,
        SYSCTL_FILE,
        persisted,
        FileMode::CONFIG,
        false,
    )?);
    for (key, value) in sysctls {
        let current = host
            .read_string_opt(sysctl_path(key))?
            .map(|v| normalize(&v));
        let wanted = normalize(value);
        if current.as_deref() != Some(wanted.as_str()) {
            plan.push(Change::Sysctl {
                key: key.clone(),
                current,
                wanted,
            });
        }
    }
    Ok(())
}

/// The kernel prints multi-valued sysctls with tabs (`32768\t60999`);
/// compare them word by word.
fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn plan_swap(host: &Host, plan: &mut StepPlan) -> Result<(), Error> {
    let active = active_swaps(host)?;
    if !active.is_empty() {
        plan.push(Change::run(
            Cmd::new(SWAPOFF).arg("-a"),
            format!(
                "swap is on ({}); kubelet refuses to run with swap by default",
                active
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if let Some(fstab) = host.read_string_opt(FSTAB)? {
        let wanted = comment_out_swap(&fstab);
        if wanted != fstab {
            let mode = FileMode {
                mode: host.mode_of(FSTAB).unwrap_or(0o644),
                ..FileMode::CONFIG
            };
            plan.push_opt(Change::write_file(host, FSTAB, wanted, mode, false)?);
        }
    }
    Ok(())
}

/// Swap areas listed in `/proc/swaps` (after its header line).
pub fn active_swaps(host: &Host) -> Result<Vec<PathBuf>, Error> {
    Ok(host
        .read_string_opt(PROC_SWAPS)?
        .map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default())
}

/// `fstab` with every active swap line commented out; everything else kept
/// byte for byte.
pub fn comment_out_swap(fstab: &str) -> String {
    let mut out = String::with_capacity(fstab.len() + 16);
    for line in fstab.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_swap =
            !trimmed.starts_with('#') && trimmed.split_whitespace().nth(2) == Some("swap");
        if is_swap {
            out.push_str(FSTAB_COMMENT);
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_out_only_swap_lines() {
        let fstab = "# swap is here\nUUID=a / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n#/old none swap sw 0 0\nLABEL=x /data xfs defaults 0 2";
        assert_eq!(
            comment_out_swap(fstab),
            "# swap is here\nUUID=a / ext4 defaults 0 1\n#hpk8s: /swapfile none swap sw 0 0\n#/old none swap sw 0 0\nLABEL=x /data xfs defaults 0 2"
        );
        let done = comment_out_swap(fstab);
        assert_eq!(comment_out_swap(&done), done);
    }

    #[test]
    fn normalizes_multi_valued_sysctls() {
        assert_eq!(normalize("32768\t60999\n"), "32768 60999");
    }
}
