//! Driving kubeadm: what it left on the host, which version is installed,
//! and the `init`/`join` command lines.
//!
//! kubeadm refuses to `init` or `join` a host that already carries
//! `/etc/kubernetes/manifests/kube-apiserver.yaml` or
//! `/etc/kubernetes/kubelet.conf`, so a re-run must first find out what an
//! earlier run left ([`membership`]) and skip, rather than fail in preflight.
//! A control plane whose files are only partly there (a crash during
//! `kubeadm init`) is never "repaired" silently: the operator is told the
//! recovery command.

use std::path::Path;

use super::kubeadm_config::KubeadmVersion;
use crate::host::{Cmd, CommandError, Host};

/// The kubeadm binary.
pub const KUBEADM: &str = "kubeadm";
pub use crate::kube::client::{ADMIN_CONF, KUBELET_CONF};
/// The API server's static pod: present only on a control plane.
pub const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// The cluster CA certificate (its key's pin goes into the join ticket).
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
/// Where hpk8s writes kubeadm's config documents (they hold the bootstrap
/// token: mode 0600, removed once kubeadm has read them).
pub const CONFIG_DIR: &str = "/etc/kubernetes/hpk8s";
/// `kubeadm init --config` documents.
pub const INIT_CONFIG: &str = "/etc/kubernetes/hpk8s/kubeadm-init.yaml";
/// `kubeadm join --config` document.
pub const JOIN_CONFIG: &str = "/etc/kubernetes/hpk8s/kubeadm-join.yaml";
/// How the operator starts over on a node kubeadm left half-done.
pub const RESET_COMMAND: &str = "kubeadm reset -f && hpk8s bootstrap";

/// Exit status of a shell or `chroot` that could not find the program.
const NOT_FOUND: i32 = 127;

/// What earlier kubeadm runs left on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Nothing: `init` or `join` may run.
    Fresh,
    /// A complete control plane (`init` finished).
    ControlPlane,
    /// A worker (`join` finished).
    Worker,
    /// Some control-plane files but not all: `init` stopped half-way.
    Partial {
        /// Control-plane files present.
        present: Vec<&'static str>,
        /// Control-plane files missing.
        missing: Vec<&'static str>,
    },
}

/// Files a finished `kubeadm init` leaves.
const CONTROL_PLANE_FILES: [&str; 4] = [APISERVER_MANIFEST, ADMIN_CONF, CA_CERT, KUBELET_CONF];

/// Reads what kubeadm left on `host`.
pub fn membership(host: &Host) -> Membership {
    let (present, missing): (Vec<&'static str>, Vec<&'static str>) =
        CONTROL_PLANE_FILES.iter().partition(|p| host.exists(p));
    let control_plane_started = present.iter().any(|p| *p != KUBELET_CONF && *p != CA_CERT);
    match (control_plane_started, missing.is_empty()) {
        (true, true) => Membership::ControlPlane,
        (true, false) => Membership::Partial { present, missing },
        // A worker has kubelet.conf and the CA, never the API server's files.
        (false, _) if host.exists(KUBELET_CONF) => Membership::Worker,
        (false, _) => Membership::Fresh,
    }
}

/// The installed kubeadm's version, or `None` when kubeadm is not installed
/// (a dry run before phase `prepare`).
pub fn installed_version(host: &Host) -> Result<Option<KubeadmVersion>, VersionError> {
    let cmd = Cmd::new(KUBEADM).args(["version", "-o", "short"]);
    let out = match host.runner().run(&cmd) {
        Ok(out) => out,
        Err(CommandError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(VersionError::Command(e)),
    };
    if out.status == NOT_FOUND {
        return Ok(None);
    }
    if out.status != 0 {
        return Err(VersionError::Command(CommandError::Failed {
            command: cmd.display(),
            status: out.status,
            stderr: out.stderr_tail(),
        }));
    }
    KubeadmVersion::parse(&out.stdout_str())
        .map(Some)
        .map_err(VersionError::Parse)
}

/// Why the kubeadm version could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// `kubeadm version` failed.
    #[error(transparent)]
    Command(CommandError),
    /// It printed something else than a version.
    #[error(transparent)]
    Parse(super::kubeadm_config::ClusterConfigError),
}

/// `kubeadm init --config FILE --skip-token-print`: the token is never
/// printed (kubeadm would otherwise echo it and the join command line).
pub fn init_command(config: &Path) -> Cmd {
    Cmd::new(KUBEADM).args([
        "init".to_string(),
        "--config".to_string(),
        config.display().to_string(),
        "--skip-token-print".to_string(),
    ])
}

/// `kubeadm join --config FILE` (the token travels in the file, never on
/// the command line where `ps` would show it).
pub fn join_command(config: &Path) -> Cmd {
    Cmd::new(KUBEADM).args([
        "join".to_string(),
        "--config".to_string(),
        config.display().to_string(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CmdOutput, FileMode, FixedInterfaces, ScriptedRunner};
    use std::sync::Arc;

    fn host() -> (tempfile::TempDir, Host, Arc<ScriptedRunner>) {
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(ScriptedRunner::new());
        let host = Host::new(
            dir.path(),
            runner.clone(),
            Arc::new(FixedInterfaces(vec![])),
        );
        (dir, host, runner)
    }

    fn touch(host: &Host, path: &str) {
        host.write_atomic(path, b"x", FileMode::SECRET).unwrap();
    }

    #[test]
    fn membership_from_files() {
        let (_d, host, _) = host();
        assert_eq!(membership(&host), Membership::Fresh);
        touch(&host, KUBELET_CONF);
        touch(&host, CA_CERT);
        assert_eq!(membership(&host), Membership::Worker);
        touch(&host, APISERVER_MANIFEST);
        assert_eq!(
            membership(&host),
            Membership::Partial {
                present: vec![APISERVER_MANIFEST, CA_CERT, KUBELET_CONF],
                missing: vec![ADMIN_CONF],
            }
        );
        touch(&host, ADMIN_CONF);
        assert_eq!(membership(&host), Membership::ControlPlane);
    }

    #[test]
    fn version_absent_present_and_garbled() {
        let (_d, host, runner) = host();
        let missing = "chroot: failed to run command 'kubeadm': No such file or directory";
        runner.once(&["kubeadm", "version"], CmdOutput::failed(127, missing));
        assert_eq!(installed_version(&host).unwrap(), None);
        runner.once(&["kubeadm", "version"], CmdOutput::ok("v1.31.4\n"));
        let v = installed_version(&host).unwrap().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 31, 4));
        runner.once(&["kubeadm", "version"], CmdOutput::ok("garbage"));
        assert!(matches!(
            installed_version(&host),
            Err(VersionError::Parse(_))
        ));
    }

    #[test]
    fn commands_keep_the_token_off_the_command_line() {
        let init = init_command(Path::new(INIT_CONFIG)).display();
        assert_eq!(
            init,
            "kubeadm init --config /etc/kubernetes/hpk8s/kubeadm-init.yaml --skip-token-print"
        );
        assert_eq!(
            join_command(Path::new(JOIN_CONFIG)).display(),
            "kubeadm join --config /etc/kubernetes/hpk8s/kubeadm-join.yaml"
        );
    }
}
