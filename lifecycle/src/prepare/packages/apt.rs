//! `source = "apt"`: the upstream Kubernetes apt repository for the
//! configured minor (`pkgs.k8s.io/core:/stable:/v1.NN/deb/`), packages
//! installed at the configured patch, pinned and held.
//!
//! When every needed package is already installed at the configured version
//! nothing is planned (not even a check of the repository files). Otherwise:
//! signing key, sources file, pin, `apt-get update` when needed, install,
//! hold, enable kubelet.

use std::collections::BTreeMap;

use crate::config::PackagesConfig;
use crate::host::{Cmd, FileMode, Host};
use crate::plan::{Change, ServiceOperation, StepPlan, redact_url};

use super::error::Error;
use super::units::{KUBELET, KUBELET_SERVICE};

/// Present on every Debian and Ubuntu system.
pub const DEBIAN_VERSION: &str = "/etc/debian_version";
/// dpkg's query tool (found even where `/etc/debian_version` was removed).
pub const DPKG_QUERY_PATH: &str = "/usr/bin/dpkg-query";
/// Directory for repository keyrings (not trusted for every repository).
pub const KEYRING_DIR: &str = "/etc/apt/keyrings";
/// The Kubernetes repository's signing key, binary (dearmored) format.
pub const KEYRING: &str = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg";
/// The repository's sources file.
pub const SOURCES_LIST: &str = "/etc/apt/sources.list.d/kubernetes.list";
/// The version pin.
pub const PREFERENCES: &str = "/etc/apt/preferences.d/kubernetes";
/// Needed to fetch the signing key.
const CURL_PATH: &str = "/usr/bin/curl";
/// Needed to dearmor the signing key.
const GPG_PATH: &str = "/usr/bin/gpg";

const DPKG_QUERY: &str = "dpkg-query";
const APT_GET: &str = "apt-get";
const APT_CACHE: &str = "apt-cache";
const APT_MARK: &str = "apt-mark";
const SH: &str = "sh";

/// `dpkg-query -W` format: name, status (`ii` = installed) and version.
const DPKG_FORMAT: &str = "${Package} ${db:Status-Abbrev} ${Version}\\n";

/// Fetches the key (its URL in a curl config on stdin: a URL may carry
/// credentials, and argument lists are world-readable in `/proc`) and
/// writes it dearmored to argument 1. A temp file rather than a pipe,
/// because `sh` may be dash, which does not report a failing curl at the
/// head of a pipe.
const FETCH_KEY_SCRIPT: &str = "set -e; key=$(mktemp); trap 'rm -f \"$key\"' EXIT; \
curl -fsSL --retry 3 -o \"$key\" --config -; gpg --dearmor --batch --yes -o \"$1\" \"$key\"; chmod 0644 \"$1\"";

/// Plans the apt packages in `wanted` at `version` (`1.34.1`) from the
/// repository for `minor` (`1.34`).
pub fn plan(
    host: &Host,
    config: &PackagesConfig,
    wanted: &[&str],
    version: &str,
    minor: &str,
    plan: &mut StepPlan,
) -> Result<(), Error> {
    require_debian(host)?;
    let installed = installed_versions(host, wanted)?;
    let mut stale = false;
    for package in wanted {
        match installed.get(*package) {
            Some(v) if matches_version(v, version) => {
                plan.note(format!("{package} {v} is installed"));
            }
            Some(v) => {
                stale = true;
                plan.note(format!("{package} {v} is installed, {version} is wanted"));
            }
            None => {
                stale = true;
                plan.note(format!("{package} is not installed"));
            }
        }
    }
    if !stale {
        return Ok(());
    }

    let repository = repository_url(&config.apt_repository, minor);
    // Credentials in the repository URL make the sources file a secret.
    let has_credentials = redact_url(&repository) != repository;
    let mut sources_changed = false;

    if !host.exists(KEYRING) {
        if !host.exists(CURL_PATH) || !host.exists(GPG_PATH) {
            plan.push(Change::run(
                Cmd::new(APT_GET).arg("update"),
                "package lists for curl and gpg",
            ));
            plan.push(Change::run(
                noninteractive(Cmd::new(APT_GET).args([
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "ca-certificates",
                    "curl",
                    "gpg",
                ])),
                "curl and gpg fetch the repository's signing key",
            ));
        }
        if !host.exists(KEYRING_DIR) {
            plan.push(Change::CreateDir {
                path: KEYRING_DIR.into(),
            });
        }
        let key_url = format!("{repository}Release.key");
        let fetch = Cmd::new(SH)
            .args(["-c", FETCH_KEY_SCRIPT, "hpk8s-fetch-key", KEYRING])
            .stdin(curl_config_url(&key_url));
        plan.push(Change::run(
            fetch,
            format!(
                "{KEYRING} is missing: fetch it from {}",
                redact_url(&key_url)
            ),
        ));
        sources_changed = true;
    }

    let sources = format!("deb [signed-by={KEYRING}] {repository} /\n");
    let (mode, secret) = if has_credentials {
        (FileMode::SECRET, true)
    } else {
        (FileMode::CONFIG, false)
    };
    if let Some(change) = Change::write_file(host, SOURCES_LIST, sources, mode, secret)? {
        plan.push(change);
        sources_changed = true;
    }
    plan.push_opt(Change::write_file(
        host,
        PREFERENCES,
        pin(wanted, version),
        FileMode::CONFIG,
        false,
    )?);

    if sources_changed {
        plan.push(Change::run(
            Cmd::new(APT_GET).arg("update"),
            "the Kubernetes repository was added or changed",
        ));
    } else if !available(host, wanted, version) {
        plan.push(Change::run(
            Cmd::new(APT_GET).arg("update"),
            format!("version {version} is not in the package lists yet"),
        ));
    }

    // --allow-change-held-packages lets apt replace our own held versions,
    // so no separate `apt-mark unhold` (which would leave them unheld if the
    // install failed) is needed.
    let install = noninteractive(
        Cmd::new(APT_GET)
            .args([
                "install",
                "-y",
                "--allow-downgrades",
                "--allow-change-held-packages",
            ])
            .args(wanted.iter().map(|p| format!("{p}={version}-*"))),
    );
    plan.push(Change::run(
        install,
        format!("install Kubernetes {version} packages"),
    ));
    plan.push(Change::run(
        Cmd::new(APT_MARK).arg("hold").args(wanted.iter().copied()),
        "keep unattended upgrades off the cluster's version",
    ));
    if wanted.contains(&KUBELET) {
        plan.push(Change::service(
            KUBELET_SERVICE,
            ServiceOperation::Enable,
            "kubeadm expects kubelet to be enabled",
        ));
    }
    Ok(())
}

/// Fails unless the host has dpkg (Debian, Ubuntu).
pub fn require_debian(host: &Host) -> Result<(), Error> {
    if !host.exists(DEBIAN_VERSION) && !host.exists(DPKG_QUERY_PATH) {
        return Err(Error::NotDebian {
            debian_version: DEBIAN_VERSION,
            dpkg_query: DPKG_QUERY_PATH,
        });
    }
    Ok(())
}

/// A curl config file (`--config -`) naming `url`, quoted as curl's
/// config syntax wants.
pub fn curl_config_url(url: &str) -> String {
    format!(
        "url = \"{}\"\n",
        url.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

fn noninteractive(cmd: Cmd) -> Cmd {
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
}

/// The repository URL for `minor`, ending in `/` (the flat repository's
/// `Release.key` and `Packages` live right under it).
pub fn repository_url(template: &str, minor: &str) -> String {
    let mut url = template.replace("{minor}", minor);
    if !url.ends_with('/') {
        url.push('/');
    }
    url
}

/// The pin: apt prefers the configured version even over a newer patch
/// (priority above 1000 also allows going back down), so an operator's
/// `apt-get install kubelet` or an upgrade after an unhold cannot move a
/// node off the cluster's version. The hold is the second guard.
pub fn pin(packages: &[&str], version: &str) -> String {
    format!(
        "# Managed by hpk8s: keep these packages at the cluster's Kubernetes version.\n\
         Package: {}\nPin: version {version}-*\nPin-Priority: 1001\n",
        packages.join(" ")
    )
}

/// Whether a Debian version (`1.34.1-1.1`, possibly with an epoch) is the
/// upstream version `version` (`1.34.1`).
pub fn matches_version(debian_version: &str, version: &str) -> bool {
    let without_epoch = debian_version
        .split_once(':')
        .map_or(debian_version, |(_, v)| v);
    let upstream = without_epoch
        .rsplit_once('-')
        .map_or(without_epoch, |(u, _)| u);
    upstream == version
}

/// Installed versions of `packages`. `dpkg-query -W` exits 1 when some are
/// unknown: what it printed for the others still counts.
fn installed_versions(host: &Host, packages: &[&str]) -> Result<BTreeMap<String, String>, Error> {
    let cmd = Cmd::new(DPKG_QUERY)
        .args(["-W", "-f", DPKG_FORMAT])
        .args(packages.iter().copied());
    let query_err = |status, stderr| Error::Query {
        command: cmd.display(),
        status,
        stderr,
    };
    let out = host
        .runner()
        .run(&cmd)
        .map_err(|e| query_err(-1, e.to_string()))?;
    if out.status != 0 && out.status != 1 {
        return Err(query_err(out.status, out.stderr_tail()));
    }
    Ok(parse_installed(&out.stdout_str()))
}

/// Parses `<package> <status> <version>` lines, keeping installed packages
/// (status letter 2 is `i`; `rc` = removed with config files left is not).
pub fn parse_installed(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (package, status, version) = (words.next()?, words.next()?, words.next()?);
            (status.as_bytes().get(1) == Some(&b'i')).then(|| (package.into(), version.into()))
        })
        .collect()
}

/// Whether apt's package lists already offer `version` of every package.
/// A failing query just means "update first".
fn available(host: &Host, packages: &[&str], version: &str) -> bool {
    let cmd = Cmd::new(APT_CACHE)
        .arg("madison")
        .args(packages.iter().copied());
    let Ok(out) = host.runner().run(&cmd) else {
        return false;
    };
    if out.status != 0 {
        return false;
    }
    let text = out.stdout_str();
    packages.iter().all(|package| {
        text.lines().any(|line| {
            let mut fields = line.split('|').map(str::trim);
            fields.next() == Some(*package)
                && fields.next().is_some_and(|v| matches_version(v, version))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_match_on_upstream_part() {
        assert!(matches_version("1.34.1-1.1", "1.34.1"));
        assert!(matches_version("1:1.34.1-1.1", "1.34.1"));
        assert!(matches_version("1.34.1", "1.34.1"));
        assert!(!matches_version("1.34.10-1.1", "1.34.1"));
        assert!(!matches_version("1.33.1-1.1", "1.34.1"));
    }

    #[test]
    fn installed_packages_only() {
        let m = parse_installed(
            "kubelet ii  1.34.1-1.1\nkubeadm rc  1.33.0-1.1\nkubectl hi  1.34.1-1.1\nfoo un  \n",
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m["kubelet"], "1.34.1-1.1");
        assert_eq!(m["kubectl"], "1.34.1-1.1");
    }

    #[test]
    fn repository_and_pin() {
        assert_eq!(
            repository_url("https://pkgs.k8s.io/core:/stable:/v{minor}/deb", "1.34"),
            "https://pkgs.k8s.io/core:/stable:/v1.34/deb/"
        );
        let p = pin(&["kubelet", "kubeadm"], "1.34.1");
        assert!(
            p.contains("Package: kubelet kubeadm\nPin: version 1.34.1-*\nPin-Priority: 1001\n")
        );
    }
}
