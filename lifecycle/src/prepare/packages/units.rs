//! The kubelet systemd unit and its kubeadm drop-in, for kubelets installed
//! from a mirror (the apt packages ship their own).
//!
//! The unit alone starts a bare kubelet; the drop-in gives it the command
//! line kubeadm expects: the bootstrap kubeconfig until the node has joined,
//! the config file and flags kubeadm writes during `init`/`join`, and room
//! for the operator's own flags. The drop-in has the same name as the one
//! the upstream packages install under `/usr/lib`, so ours wins if both exist.

/// The kubelet binary/package.
pub const KUBELET: &str = "kubelet";
/// The kubeadm binary/package.
pub const KUBEADM: &str = "kubeadm";
/// The kubectl binary/package.
pub const KUBECTL: &str = "kubectl";

use std::path::Path;

/// Where the kubelet unit is installed.
pub const KUBELET_UNIT: &str = "/etc/systemd/system/kubelet.service";
/// Where the kubeadm drop-in is installed.
pub const KUBEADM_DROP_IN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
/// The unit's name for systemctl.
pub const KUBELET_SERVICE: &str = "kubelet.service";

const KUBELET_UNIT_TEMPLATE: &str = "\
# Installed by hpk8s (packages step, mirror source). kubeadm supplies the
# kubelet's flags through kubelet.service.d/10-kubeadm.conf.
[Unit]
Description=kubelet: the Kubernetes node agent
Documentation=https://kubernetes.io/docs/reference/command-line-tools-reference/kubelet/
Wants=network-online.target
After=network-online.target
# kubelet exits until kubeadm has written its configuration: keep retrying.
StartLimitIntervalSec=0

[Service]
ExecStart={kubelet}
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
";

const KUBEADM_DROP_IN_TEMPLATE: &str = "\
# Installed by hpk8s: the kubelet command line for kubeadm-managed nodes.
[Service]
# Until the node has joined, kubelet authenticates with the bootstrap
# kubeconfig and writes its own credential to kubelet.conf.
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
# kubeadm init/join write KUBELET_KUBEADM_ARGS here.
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# The operator's own flags go into KUBELET_EXTRA_ARGS here.
EnvironmentFile=-/etc/default/kubelet
# An empty ExecStart= clears the unit's before the full command line is set.
ExecStart=
ExecStart={kubelet} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
";

/// The kubelet unit for the binary at `kubelet`.
pub fn kubelet_unit(kubelet: &Path) -> String {
    KUBELET_UNIT_TEMPLATE.replace("{kubelet}", &kubelet.display().to_string())
}

/// The kubeadm drop-in for the binary at `kubelet`.
pub fn kubeadm_drop_in(kubelet: &Path) -> String {
    KUBEADM_DROP_IN_TEMPLATE.replace("{kubelet}", &kubelet.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_point_at_the_installed_binary() {
        let k = Path::new("/opt/k8s/bin/kubelet");
        let unit = kubelet_unit(k);
        assert!(
            unit.contains("\nExecStart=/opt/k8s/bin/kubelet\n"),
            "{unit}"
        );
        let drop_in = kubeadm_drop_in(k);
        assert!(drop_in.contains("\nExecStart=\nExecStart=/opt/k8s/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n"), "{drop_in}");
        assert!(drop_in.contains("EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env"));
        assert!(!unit.contains('{') && !drop_in.contains('{'));
    }
}
