//! containerd and runc on a node that has none (plain Ubuntu/Debian
//! images, self-managed EC2): from the distribution's packages, or from
//! the projects' release archives. A containerd that is installed,
//! whatever installed it, is never replaced: hpk8s configures what it
//! finds.

use std::path::Path;

use crate::config::{ContainerdSource, PackageSource};
use crate::host::{Cmd, FileMode, Host};
use crate::plan::{Change, ServiceOperation, StepPlan};

use super::error::Error;
use super::{apt, releases};
use crate::prepare::context::Context;

/// Where an installed containerd is found (distribution packages, Docker's
/// `containerd.io`, the release archive).
pub const CONTAINERD_PATHS: [&str; 4] = [
    "/usr/bin/containerd",
    "/usr/local/bin/containerd",
    "/usr/sbin/containerd",
    "/bin/containerd",
];
/// The unit written for a containerd unpacked from its release archive
/// (systemd reads `/usr/local/lib/systemd/system` for local installs).
pub const RELEASE_UNIT: &str = "/usr/local/lib/systemd/system/containerd.service";
/// The unit, as upstream's `containerd.service` for 1.7 sets it up.
pub const RELEASE_UNIT_TEXT: &str = "\
# Written by hpk8s for containerd unpacked from its release archive
# (settings of upstream's containerd.service for 1.7).
[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target dbus.service

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
";
const APT_GET: &str = "apt-get";

/// Where containerd would come from on this node.
pub fn source(cx: &Context<'_>) -> ContainerdSource {
    match cx.config.containerd.source {
        ContainerdSource::Auto => match cx.config.packages.source {
            PackageSource::Apt => ContainerdSource::Apt,
            PackageSource::Mirror => ContainerdSource::Mirror,
            PackageSource::None => ContainerdSource::None,
        },
        other => other,
    }
}

/// The installed containerd binary, if any.
pub fn installed(host: &Host) -> Option<&'static str> {
    CONTAINERD_PATHS.into_iter().find(|p| host.exists(p))
}

/// Whether this run installs containerd (so that step `containerd` may
/// plan from a built-in default before it exists).
pub fn installs_containerd(cx: &Context<'_>) -> bool {
    cx.identity.joins && installed(cx.host).is_none() && source(cx) != ContainerdSource::None
}

/// Plans containerd and runc when containerd is missing.
pub async fn plan(cx: &Context<'_>, plan: &mut StepPlan) -> Result<(), Error> {
    if let Some(path) = installed(cx.host) {
        plan.note(format!(
            "containerd is installed ({path}): it is configured, not replaced"
        ));
        return Ok(());
    }
    match source(cx) {
        ContainerdSource::None | ContainerdSource::Auto => {
            plan.note(
                "containerd is not installed and containerd.source is none: nothing installs it",
            );
        }
        ContainerdSource::Apt => {
            apt::require_debian(cx.host)?;
            plan.note(
                "containerd is not installed: the distribution's containerd and runc packages",
            );
            plan.push(Change::run(
                Cmd::new(APT_GET).arg("update"),
                "package lists for containerd",
            ));
            plan.push(Change::run(
                Cmd::new(APT_GET)
                    .args([
                        "install",
                        "-y",
                        "--no-install-recommends",
                        "containerd",
                        "runc",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
                "containerd is not installed",
            ));
        }
        ContainerdSource::Mirror => {
            let arch = super::mirror::kubernetes_arch(std::env::consts::ARCH).ok_or(
                Error::UnsupportedArch {
                    arch: std::env::consts::ARCH,
                },
            )?;
            let base = cx.config.packages.release_mirror();
            let cfg = &cx.config.containerd;
            plan.note("containerd is not installed: its release archive and runc");
            for release in [
                releases::containerd(base, &cfg.version, arch),
                releases::runc(base, &cfg.runc_version, arch),
            ] {
                releases::plan(cx.host, &cx.config.packages, &release, plan).await?;
            }
            plan_unit(cx.host, plan)?;
        }
    }
    Ok(())
}

/// The unit of a containerd from the release archive, reloaded when it
/// changed (step `containerd` enables and starts it).
fn plan_unit(host: &Host, plan: &mut StepPlan) -> Result<(), Error> {
    if let Some(change) = Change::write_file(
        host,
        Path::new(RELEASE_UNIT),
        RELEASE_UNIT_TEXT,
        FileMode::CONFIG,
        false,
    )? {
        plan.push(change);
        plan.push(Change::service(
            "containerd.service",
            ServiceOperation::DaemonReload,
            "containerd's unit was written",
        ));
    }
    Ok(())
}
