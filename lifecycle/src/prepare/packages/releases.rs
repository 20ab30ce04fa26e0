//! Release archives that `dl.k8s.io` does not carry (containerd, runc, the
//! CNI reference plugins, crictl), fetched from a mirror laid out like
//! GitHub releases: `<base>/<owner>/<repo>/releases/download/<tag>/<asset>`.
//! `https://github.com` itself is such a mirror.
//!
//! Each release is verified against the checksum file its project
//! publishes (formats differ: see [`super::mirror::sha256_for`]) or a digest
//! pinned in `[packages.sha256]` under the asset's name. A single binary is
//! installed in place like the Kubernetes binaries; an archive is
//! downloaded to a staging file, unpacked, and recorded in a marker file
//! (`/var/lib/hpk8s/installed/<project>`, holding the asset and its digest), so a second
//! run that finds the marker and the unpacked binary changes nothing. A
//! copy the image already has (the binary without a marker) is left alone.

use std::path::{Path, PathBuf};

use crate::config::PackagesConfig;
use crate::host::{Cmd, FileMode, Host};
use crate::plan::{Change, SourceUrl, StepPlan, redact_url};

use super::error::Error;
use super::mirror::{fetch_checksum, installed_sha256, sha256_for};

/// Where unpacked archives are recorded.
pub const MARKER_DIR: &str = "/var/lib/hpk8s/installed";
/// Where archives wait between download and unpacking.
pub const STAGING_DIR: &str = "/var/lib/hpk8s/downloads";
/// GNU tar, to unpack archives.
const TAR: &str = "tar";

/// One release asset and how it is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The project, naming its marker file (`containerd`, `cni-plugins`).
    pub component: &'static str,
    /// What it is, e.g. `containerd 1.7.29`.
    pub what: String,
    /// The asset's URL.
    pub url: String,
    /// The asset's file name (the key for a pinned digest).
    pub asset: String,
    /// Its checksum file's URL.
    pub checksum_url: String,
    /// How it is installed.
    pub install: Install,
}

/// How a release is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// The asset is the binary, installed at this host path.
    Binary(PathBuf),
    /// The asset is a `.tar.gz` unpacked into `into`; `check` is a file the
    /// archive holds, whose absence means it must be unpacked again.
    Archive {
        /// Directory to unpack into.
        into: PathBuf,
        /// A file the archive puts there.
        check: PathBuf,
    },
}

fn github(base: &str, repo: &str, tag: &str, asset: &str) -> String {
    format!(
        "{}/{repo}/releases/download/{tag}/{asset}",
        base.trim_end_matches('/')
    )
}

/// containerd's release archive (`bin/containerd`, `bin/ctr`, the shims),
/// unpacked into `/usr/local` as upstream's getting-started guide does.
pub fn containerd(base: &str, version: &str, arch: &str) -> Release {
    let asset = format!("containerd-{version}-linux-{arch}.tar.gz");
    let url = github(
        base,
        "containerd/containerd",
        &format!("v{version}"),
        &asset,
    );
    Release {
        component: "containerd",
        what: format!("containerd {version}"),
        checksum_url: format!("{url}.sha256sum"),
        url,
        asset,
        install: Install::Archive {
            into: "/usr/local".into(),
            check: "/usr/local/bin/containerd".into(),
        },
    }
}

/// runc's static binary, installed as `/usr/local/sbin/runc`; its digest is
/// a line of the release-wide `runc.sha256sum`.
pub fn runc(base: &str, version: &str, arch: &str) -> Release {
    let asset = format!("runc.{arch}");
    let tag = format!("v{version}");
    Release {
        component: "runc",
        what: format!("runc {version}"),
        url: github(base, "opencontainers/runc", &tag, &asset),
        checksum_url: github(base, "opencontainers/runc", &tag, "runc.sha256sum"),
        asset,
        install: Install::Binary("/usr/local/sbin/runc".into()),
    }
}

/// The CNI reference plugins (`bridge`, `portmap`, `host-local`, …) into
/// `/opt/cni/bin`, where flannel's CNI config delegates to them.
pub fn cni_plugins(base: &str, version: &str, arch: &str) -> Release {
    let asset = format!("cni-plugins-linux-{arch}-v{version}.tgz");
    let url = github(
        base,
        "containernetworking/plugins",
        &format!("v{version}"),
        &asset,
    );
    Release {
        component: "cni-plugins",
        what: format!("CNI plugins {version}"),
        checksum_url: format!("{url}.sha256"),
        url,
        asset,
        install: Install::Archive {
            into: "/opt/cni/bin".into(),
            check: "/opt/cni/bin/bridge".into(),
        },
    }
}

/// crictl into `/usr/local/bin`.
pub fn crictl(base: &str, version: &str, arch: &str) -> Release {
    let asset = format!("crictl-v{version}-linux-{arch}.tar.gz");
    let url = github(
        base,
        "kubernetes-sigs/cri-tools",
        &format!("v{version}"),
        &asset,
    );
    Release {
        component: "crictl",
        what: format!("crictl {version}"),
        checksum_url: format!("{url}.sha256"),
        url,
        asset,
        install: Install::Archive {
            into: "/usr/local/bin".into(),
            check: "/usr/local/bin/crictl".into(),
        },
    }
}

/// Plans `release` unless it is installed; returns whether it planned
/// anything.
pub async fn plan(
    host: &Host,
    config: &PackagesConfig,
    release: &Release,
    plan: &mut StepPlan,
) -> Result<bool, Error> {
    // The image's own copy (no marker of ours): what the operator baked
    // in is not replaced, and the mirror is not even asked.
    if let Install::Archive { check, .. } = &release.install
        && host.exists(check)
        && !host.exists(Path::new(MARKER_DIR).join(release.component))
    {
        plan.note(format!(
            "{} is there, not installed by hpk8s: left as it is",
            check.display()
        ));
        return Ok(false);
    }
    let sha256 = match config.sha256.get(&release.asset) {
        Some(pinned) => pinned.to_ascii_lowercase(),
        None => {
            let body = fetch_checksum(&release.checksum_url, |url| Error::ReleaseNotFound {
                url,
                what: release.what.clone(),
            })
            .await?;
            sha256_for(&body, &release.asset).map_err(|problem| Error::MalformedChecksum {
                url: redact_url(&release.checksum_url),
                problem,
            })?
        }
    };
    let url = SourceUrl(release.url.clone());
    match &release.install {
        Install::Binary(path) => {
            if installed_sha256(host, path)?.as_deref() == Some(sha256.as_str())
                && host.mode_of(path) == Some(FileMode::EXECUTABLE.mode)
            {
                plan.note(format!(
                    "{} is installed at {}",
                    release.what,
                    path.display()
                ));
                return Ok(false);
            }
            plan.note(format!("{} goes to {}", release.what, path.display()));
            plan.push(Change::Download {
                url,
                sha256,
                path: path.clone(),
                mode: FileMode::EXECUTABLE,
            });
        }
        Install::Archive { into, check } => {
            let marker = Path::new(MARKER_DIR).join(release.component);
            let record = format!("{} {sha256}\n", release.asset);
            if host.read_string_opt(&marker)?.as_deref() == Some(record.as_str())
                && host.exists(check)
            {
                plan.note(format!(
                    "{} is installed in {}",
                    release.what,
                    into.display()
                ));
                return Ok(false);
            }

            plan.note(format!(
                "{} is unpacked into {}",
                release.what,
                into.display()
            ));
            let staged = Path::new(STAGING_DIR).join(&release.asset);
            plan.push(Change::Download {
                url,
                sha256: sha256.clone(),
                path: staged.clone(),
                mode: FileMode::SECRET,
            });
            if !host.exists(into) {
                plan.push(Change::CreateDir { path: into.clone() });
            }
            // Verified before it is unpacked; files end up root's whatever
            // the archive says (`--no-same-owner`); GNU tar refuses members
            // that would land outside `into`.
            plan.push(Change::run(
                Cmd::new(TAR).args([
                    "--extract",
                    "--gzip",
                    "--no-same-owner",
                    "--file",
                    &staged.display().to_string(),
                    "--directory",
                    &into.display().to_string(),
                ]),
                format!("unpack {}", release.what),
            ));
            plan.push_opt(Change::write_file(
                host,
                &marker,
                record,
                FileMode::CONFIG,
                false,
            )?);
            plan.push(Change::RemoveFile { path: staged });
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_urls_follow_github_layout() {
        let c = containerd("https://github.com/", "1.7.29", "amd64");
        assert_eq!(
            c.url,
            "https://github.com/containerd/containerd/releases/download/v1.7.29/containerd-1.7.29-linux-amd64.tar.gz"
        );
        assert_eq!(c.checksum_url, format!("{}.sha256sum", c.url));
        let r = runc("https://m.internal/gh", "1.3.3", "arm64");
        assert_eq!(
            r.url,
            "https://m.internal/gh/opencontainers/runc/releases/download/v1.3.3/runc.arm64"
        );
        assert!(r.checksum_url.ends_with("/v1.3.3/runc.sha256sum"));
        let n = cni_plugins("https://github.com", "1.8.0", "amd64");
        assert!(n.url.ends_with(
            "/containernetworking/plugins/releases/download/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz"
        ));
        assert_eq!(n.checksum_url, format!("{}.sha256", n.url));
        let k = crictl("https://github.com", "1.34.0", "amd64");
        assert!(k.url.ends_with(
            "/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz"
        ));
    }
}
