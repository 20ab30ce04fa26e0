//! Step `packages` of phase `prepare`: kubelet, kubeadm and kubectl at the
//! configured Kubernetes version.
//!
//! Three sources (`[packages] source`):
//! - `apt` ([`apt`]): the upstream repository for the configured minor,
//!   pinned and held at the configured patch (Debian/Ubuntu only);
//! - `mirror` ([`mirror`]): binaries laid out like `dl.k8s.io` with `.sha256`
//!   files, for private subnets without internet; the checksums are fetched
//!   while planning and every binary is verified before it is installed,
//!   plus a kubelet unit for kubeadm ([`units`]);
//! - `none`: leave whatever the image has.
//!
//! With the `mirror` source a joining node also gets the CNI reference
//! plugins and crictl ([`releases`]); and any joining node without
//! containerd gets containerd and runc ([`runtime`], `containerd.source`).
//!
//! Login nodes that do not join the cluster only get kubectl.
//!
//! This step runs first in its phase and puts its downloads first, so that a
//! bad mirror fails while planning and a bad checksum fails before anything
//! on the host changed.

pub mod apt;
pub mod credential_provider;
mod error;
pub mod mirror;
pub mod releases;
pub mod runtime;
pub mod units;

pub use self::error::Error;
pub use self::units::{KUBEADM, KUBECTL, KUBELET};

use super::context::Context;
use crate::config::PackageSource;
use crate::plan::StepPlan;

/// Step name in plans and the state file.
pub const STEP: &str = "packages";

/// What a node that joins the cluster needs.
const JOINING_NODE: [&str; 3] = [KUBELET, KUBEADM, KUBECTL];
/// What a login node that does not join needs: only the client.
const CLIENT_ONLY: [&str; 1] = [KUBECTL];

/// The binaries (or packages) this node needs.
pub fn wanted(cx: &Context<'_>) -> &'static [&'static str] {
    if cx.identity.joins {
        &JOINING_NODE
    } else {
        &CLIENT_ONLY
    }
}

/// The configured version as `MAJOR.MINOR.PATCH` and its `MAJOR.MINOR`.
fn version(cx: &Context<'_>) -> Result<(String, String), Error> {
    let (major, minor, patch) =
        cx.config
            .kubernetes
            .semver()
            .ok_or_else(|| Error::InvalidSetting {
                key: "kubernetes.version",
                message: format!(
                    "`{}` is not MAJOR.MINOR.PATCH (e.g. \"1.34.1\")",
                    cx.config.kubernetes.version
                ),
            })?;
    Ok((
        format!("{major}.{minor}.{patch}"),
        format!("{major}.{minor}"),
    ))
}

/// What this step would change now.
pub async fn plan(cx: &Context<'_>) -> Result<StepPlan, Error> {
    let mut plan = StepPlan::new(STEP);
    let wanted = wanted(cx);
    if !cx.identity.joins {
        plan.note("this node does not join the cluster: only kubectl is needed");
    }
    match cx.config.packages.source {
        PackageSource::None => {
            plan.note("packages.source = none: kubelet, kubeadm and kubectl are left as they are");
        }
        PackageSource::Apt => {
            let (version, minor) = version(cx)?;
            apt::plan(
                cx.host,
                &cx.config.packages,
                wanted,
                &version,
                &minor,
                &mut plan,
            )?;
        }
        PackageSource::Mirror => {
            let (version, _) = version(cx)?;
            mirror::plan(cx.host, &cx.config.packages, wanted, &version, &mut plan).await?;
            if cx.identity.joins {
                // What the apt source gets as kubelet's and kubeadm's
                // dependencies (`kubernetes-cni`, `cri-tools`).
                let arch = mirror::kubernetes_arch(std::env::consts::ARCH).ok_or(
                    Error::UnsupportedArch {
                        arch: std::env::consts::ARCH,
                    },
                )?;
                let cfg = &cx.config.packages;
                let base = cfg.release_mirror();
                for release in [
                    releases::cni_plugins(base, &cfg.cni_plugins_version, arch),
                    releases::crictl(base, &cfg.crictl_version, arch),
                ] {
                    releases::plan(cx.host, cfg, &release, &mut plan).await?;
                }
            }
        }
    }
    if cx.identity.joins {
        runtime::plan(cx, &mut plan).await?;
        credential_provider::plan(cx.host, cx.config, &mut plan).await?;
    }
    Ok(plan)
}
