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
//! Login nodes that do not join the cluster only get kubectl.
//!
//! This step runs first in its phase and puts its downloads first, so that a
//! bad mirror fails while planning and a bad checksum fails before anything
//! on the host changed.

pub mod apt;
pub mod mirror;
pub mod units;

use crate::config::PackageSource;
use crate::host::FsError;
use crate::plan::StepPlan;

use super::Context;

/// Step name in plans and the state file.
pub const STEP: &str = "packages";

/// The kubelet binary/package.
pub const KUBELET: &str = "kubelet";
/// The kubeadm binary/package.
pub const KUBEADM: &str = "kubeadm";
/// The kubectl binary/package.
pub const KUBECTL: &str = "kubectl";

/// What a node that joins the cluster needs.
const JOINING_NODE: [&str; 3] = [KUBELET, KUBEADM, KUBECTL];
/// What a login node that does not join needs: only the client.
const CLIENT_ONLY: [&str; 1] = [KUBECTL];

/// Errors of this step. Exit codes 75–84.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file could not be read.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `source = "apt"` on a host without dpkg.
    #[error(
        "packages.source is `apt` but this host is not Debian/Ubuntu (no {debian_version} and no {dpkg_query}); set packages.source = \"mirror\" with packages.mirror_url, or \"none\" for a pre-baked image"
    )]
    NotDebian {
        /// The marker file looked for.
        debian_version: &'static str,
        /// The dpkg query tool looked for.
        dpkg_query: &'static str,
    },
    /// A query of the package database failed.
    #[error("cannot query installed packages: `{command}` exited with status {status}: {stderr}")]
    Query {
        /// Command line.
        command: String,
        /// Exit status (-1 when it could not run).
        status: i32,
        /// Last lines of stderr.
        stderr: String,
    },
    /// `source = "mirror"` without a URL.
    #[error(
        "packages.source is `mirror` but packages.mirror_url is not set; set it to the mirror's base URL"
    )]
    MirrorUrlMissing,
    /// The machine's architecture has no Kubernetes release binaries.
    #[error(
        "no Kubernetes binaries for this machine's architecture `{arch}` (the mirror source supports x86_64 and aarch64); use packages.source = \"apt\" or \"none\""
    )]
    UnsupportedArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// The mirror could not be reached at all.
    #[error(
        "cannot reach the package mirror at {url}: {message}; check packages.mirror_url and the network path to the mirror"
    )]
    MirrorUnreachable {
        /// URL, credentials redacted.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The mirror does not have a file the step needs.
    #[error(
        "the package mirror has no {url} (not found); check packages.mirror_url and that the mirror carries Kubernetes v{version} for {arch}"
    )]
    MirrorNotFound {
        /// URL, credentials redacted.
        url: String,
        /// Kubernetes version looked for.
        version: String,
        /// Kubernetes architecture name (`amd64`, `arm64`).
        arch: &'static str,
    },
    /// The mirror answered with an error status.
    #[error(
        "the package mirror answered HTTP {status} for {url}; check the mirror's health and credentials"
    )]
    MirrorStatus {
        /// URL, credentials redacted.
        url: String,
        /// HTTP status code.
        status: u16,
    },
    /// A `.sha256` file does not hold a SHA-256 digest.
    #[error(
        "{url} is not a checksum file ({problem}); expected 64 hex digits, optionally followed by whitespace and a file name"
    )]
    MalformedChecksum {
        /// URL, credentials redacted.
        url: String,
        /// What is wrong with it (never its contents).
        problem: String,
    },
    /// A setting this step relies on is unusable.
    #[error("invalid value for `{key}`: {message}")]
    InvalidSetting {
        /// Dotted config key.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Error {
    /// Process exit code for this error (see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Fs(_) => 75,
            Error::NotDebian { .. } => 76,
            Error::Query { .. } => 77,
            Error::MirrorUrlMissing => 78,
            Error::UnsupportedArch { .. } => 79,
            Error::MirrorUnreachable { .. } => 80,
            Error::MirrorNotFound { .. } => 81,
            Error::MirrorStatus { .. } => 82,
            Error::MalformedChecksum { .. } => 83,
            Error::InvalidSetting { .. } => 84,
        }
    }
}

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
        }
    }
    Ok(plan)
}
