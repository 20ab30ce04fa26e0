//! `source = "mirror"`: release binaries from a mirror laid out like
//! `dl.k8s.io`: `<mirror_url>/v<version>/bin/linux/<arch>/<binary>` next to
//! `<binary>.sha256` (the hex digest, optionally followed by a file name).
//!
//! Planning fetches only the small `.sha256` files and compares them with the
//! binaries installed under `install_dir`; a binary is downloaded (and
//! verified before it is installed) only when its digest differs. A mirror
//! that is unreachable, lacks a file or serves a malformed checksum fails the
//! plan, before anything is changed.
//!
//! The architecture is that of the machine hpk8s runs on: preparing an image
//! of another architecture under `--root` is out of scope.

use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::PackagesConfig;
use crate::download::{FetchError, fetch_limited};
use crate::host::{FileMode, FsError, Host};
use crate::plan::{Change, ServiceOperation, StepPlan, redact_url};

use super::error::Error;
use super::units::{self, KUBEADM_DROP_IN, KUBELET, KUBELET_SERVICE, KUBELET_UNIT};

/// The largest `.sha256` file we accept; a real one is under 100 bytes.
const MAX_CHECKSUM_FILE: u64 = 4096;
/// systemctl, to ask whether kubelet is enabled.
const SYSTEMCTL: &str = "systemctl";

/// The Kubernetes name of a Rust architecture (`std::env::consts::ARCH`).
pub fn kubernetes_arch(rust_arch: &str) -> Option<&'static str> {
    match rust_arch {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

/// URL of `binary` for `version` and `arch` under the mirror `base`.
pub fn binary_url(base: &str, version: &str, arch: &str, binary: &str) -> String {
    format!(
        "{}/v{version}/bin/linux/{arch}/{binary}",
        base.trim_end_matches('/')
    )
}

/// Plans the binaries in `wanted` from the mirror, then (when kubelet is
/// among them) its systemd unit. Downloads come first.
pub async fn plan(
    host: &Host,
    config: &PackagesConfig,
    wanted: &[&str],
    version: &str,
    plan: &mut StepPlan,
) -> Result<(), Error> {
    let base = config
        .mirror_url
        .as_deref()
        .ok_or(Error::MirrorUrlMissing)?;
    let arch = kubernetes_arch(std::env::consts::ARCH).ok_or(Error::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })?;
    let install_dir = &config.install_dir;
    if !install_dir.is_absolute() {
        return Err(Error::InvalidSetting {
            key: "packages.install_dir",
            message: format!("`{}` must be an absolute path", install_dir.display()),
        });
    }
    plan.note(format!(
        "mirror {}",
        redact_url(&binary_url(base, version, arch, ""))
    ));
    for binary in wanted {
        let url = binary_url(base, version, arch, binary);
        // A pinned digest wins over the mirror's own checksum file.
        let sha256 = match config.sha256.get(*binary) {
            Some(pinned) => pinned.to_ascii_lowercase(),
            None => expected_sha256(&url, version, arch).await?,
        };
        let path = install_dir.join(binary);
        let installed = installed_sha256(host, &path)?;
        if installed.as_deref() == Some(sha256.as_str())
            && host.mode_of(&path) == Some(FileMode::EXECUTABLE.mode)
        {
            plan.note(format!(
                "{binary} v{version} is installed at {}",
                path.display()
            ));
            continue;
        }
        plan.note(match installed {
            None => format!("{binary} is not installed at {}", path.display()),
            Some(_) => format!(
                "{binary} at {} is not the mirror's v{version}",
                path.display()
            ),
        });
        plan.push(Change::Download {
            url: crate::plan::SourceUrl(url),
            sha256,
            path,
            mode: FileMode::EXECUTABLE,
        });
    }
    if wanted.contains(&KUBELET) {
        plan_kubelet_unit(host, &install_dir.join(KUBELET), plan)?;
    }
    Ok(())
}

/// The kubelet unit and drop-in, `daemon-reload` when they change, and
/// `enable` when kubelet is not enabled yet.
fn plan_kubelet_unit(host: &Host, kubelet: &Path, plan: &mut StepPlan) -> Result<(), Error> {
    // A unit file that is not there yet cannot be enabled: no need to ask
    // systemd (which may not even run under a test root).
    let unit_existed = host.exists(KUBELET_UNIT);
    let mut changed = false;
    for (path, text) in [
        (KUBELET_UNIT, units::kubelet_unit(kubelet)),
        (KUBEADM_DROP_IN, units::kubeadm_drop_in(kubelet)),
    ] {
        if let Some(change) = Change::write_file(host, path, text, FileMode::CONFIG, false)? {
            changed = true;
            plan.push(change);
        }
    }
    if changed {
        plan.push(Change::service(
            KUBELET_SERVICE,
            ServiceOperation::DaemonReload,
            "kubelet unit files changed",
        ));
    }
    if !unit_existed || !is_enabled(host) {
        plan.push(Change::service(
            KUBELET_SERVICE,
            ServiceOperation::Enable,
            "kubeadm expects kubelet to be enabled",
        ));
    }
    Ok(())
}

/// Whether systemd says kubelet is enabled. Anything but a clean yes
/// (including systemctl failing to run, e.g. without systemd) is a no:
/// enabling twice is harmless.
fn is_enabled(host: &Host) -> bool {
    let cmd = crate::host::Cmd::new(SYSTEMCTL).args(["is-enabled", KUBELET_SERVICE]);
    host.runner().run(&cmd).is_ok_and(|out| out.status == 0)
}

/// SHA-256 of the file at host path `path`, `None` when absent.
pub(crate) fn installed_sha256(host: &Host, path: &Path) -> Result<Option<String>, FsError> {
    let read_err = |source| FsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(host.path(path)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if !file.metadata().map_err(read_err)?.is_file() {
        return Ok(Some(String::new()));
    }
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(read_err)?;
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Fetches and parses `<url>.sha256`.
async fn expected_sha256(url: &str, version: &str, arch: &'static str) -> Result<String, Error> {
    let checksum_url = format!("{url}.sha256");
    let body = fetch_checksum(&checksum_url, |shown| Error::MirrorNotFound {
        url: shown,
        version: version.to_string(),
        arch,
    })
    .await?;
    parse_sha256(&body).map_err(|problem| Error::MalformedChecksum {
        url: redact_url(&checksum_url),
        problem,
    })
}

/// Fetches a checksum file (at most [`MAX_CHECKSUM_FILE`] bytes); a 404 is
/// `not_found(<url, credentials redacted>)`.
pub(crate) async fn fetch_checksum(
    checksum_url: &str,
    not_found: impl FnOnce(String) -> Error,
) -> Result<Vec<u8>, Error> {
    let shown = redact_url(checksum_url);
    match fetch_limited(checksum_url, MAX_CHECKSUM_FILE).await {
        Ok(body) => Ok(body),
        Err(FetchError::TooLarge(limit)) => Err(Error::MalformedChecksum {
            url: shown,
            problem: format!("larger than {limit} bytes"),
        }),
        Err(FetchError::NotFound) => Err(not_found(shown)),
        Err(FetchError::Status(status)) => Err(Error::MirrorStatus { url: shown, status }),
        Err(FetchError::Unreachable(message)) => Err(Error::MirrorUnreachable {
            url: shown,
            message,
        }),
    }
}

/// The digest of `file` in a checksum file: a bare digest (crictl's
/// `.sha256`), `<digest>  <file>` (`sha256sum` output: containerd's
/// `.sha256sum`, the CNI plugins' `.sha256`), or a `sha256sum` listing of
/// several files (runc's `runc.sha256sum`), where the line naming `file`
/// counts. In lower case.
pub fn sha256_for(body: &[u8], file: &str) -> Result<String, String> {
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > MAX_CHECKSUM_FILE {
        return Err(format!("{} bytes, too large", body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| "not text".to_string())?;
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect();
    let digest = match lines.as_slice() {
        [] => return Err("empty".into()),
        [only] if only.len() == 1 => only[0],
        _ => lines
            .iter()
            .find(|w| {
                w.len() == 2 && {
                    // `*` marks binary mode; a path may lead the name.
                    let name = w[1].trim_start_matches('*');
                    name == file || name.rsplit('/').next() == Some(file)
                }
            })
            .map(|w| w[0])
            .ok_or_else(|| format!("no line for {file}"))?,
    };
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "the digest has {} characters, not 64 hex digits",
            digest.chars().count()
        ));
    }
    Ok(digest.to_ascii_lowercase())
}

/// The digest in a `.sha256` file: 64 hex digits, then optionally
/// whitespace and a file name. Returned in lower case.
pub fn parse_sha256(body: &[u8]) -> Result<String, String> {
    if u64::try_from(body.len()).unwrap_or(u64::MAX) > MAX_CHECKSUM_FILE {
        return Err(format!("{} bytes, too large", body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| "not text".to_string())?;
    let digest = text.split_whitespace().next().ok_or("empty")?;
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "first word has {} characters, not 64 hex digits",
            digest.chars().count()
        ));
    }
    Ok(digest.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_listings() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        // crictl: bare digest.
        assert_eq!(
            sha256_for(
                format!("{a}\n").as_bytes(),
                "crictl-v1.34.0-linux-amd64.tar.gz"
            )
            .unwrap(),
            a
        );
        // containerd / CNI: one sha256sum line.
        assert_eq!(
            sha256_for(
                format!("{a}  containerd-1.7.29-linux-amd64.tar.gz\n").as_bytes(),
                "containerd-1.7.29-linux-amd64.tar.gz"
            )
            .unwrap(),
            a
        );
        // runc: a listing; the named line counts, binary-mode `*` allowed.
        let listing = format!("{a}  runc.arm64\n{b} *runc.amd64\n{a}  runc-1.3.3.tar.xz\n");
        assert_eq!(
            sha256_for(listing.as_bytes(), "runc.amd64").unwrap(),
            "b".repeat(64)
        );
        assert!(
            sha256_for(listing.as_bytes(), "runc.riscv64")
                .unwrap_err()
                .contains("no line for runc.riscv64")
        );
        // A line for another file is not accepted as this one's.
        assert!(
            sha256_for(
                format!("{a}  other.tar.gz\n").as_bytes(),
                "containerd.tar.gz"
            )
            .is_err()
        );
        assert!(sha256_for(b"", "x").is_err());
        assert!(sha256_for(b"<html>not found</html>", "x").is_err());
    }

    #[test]
    fn checksum_files() {
        let d = "a".repeat(64);
        assert_eq!(parse_sha256(d.as_bytes()).unwrap(), d);
        assert_eq!(
            parse_sha256(format!("{}  kubelet\n", "AB".repeat(32)).as_bytes()).unwrap(),
            "ab".repeat(32)
        );
        assert!(parse_sha256(b"").is_err());
        assert!(parse_sha256(b"<html>not found</html>").is_err());
        assert!(parse_sha256("g".repeat(64).as_bytes()).is_err());
        assert!(parse_sha256(&vec![b'a'; 5000]).is_err());
    }

    #[test]
    fn layout_and_arch() {
        assert_eq!(
            binary_url("https://m.example/k8s/", "1.34.1", "amd64", "kubelet"),
            "https://m.example/k8s/v1.34.1/bin/linux/amd64/kubelet"
        );
        assert_eq!(kubernetes_arch("x86_64"), Some("amd64"));
        assert_eq!(kubernetes_arch("aarch64"), Some("arm64"));
        assert_eq!(kubernetes_arch("riscv64"), None);
    }
}
