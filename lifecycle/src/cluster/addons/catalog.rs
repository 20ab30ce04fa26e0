//! The built-in addons and the settings they are built from.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;

use super::error::Result;
use super::images::AddonImages;
use super::objects::AddonObject;
use super::{efa_device_plugin, flannel, nvidia_device_plugin};
use crate::config::{AddonsConfig, DeviceListStrategy};

/// Everything the addons step needs, resolved from `[addons]` and the pod
/// network.
#[derive(Debug, Clone, PartialEq)]
pub struct AddonSettings {
    /// Images, the registry mirror already applied.
    pub images: AddonImages,
    /// flannel's `Network` (must equal kubeadm's `podSubnet`).
    pub pod_subnet: String,
    /// Host directory of extra manifests.
    pub manifest_dir: PathBuf,
    /// Rollout deadline.
    pub rollout_timeout: Duration,
    /// The NVIDIA device plugin's device-list strategy.
    pub nvidia_device_list_strategy: DeviceListStrategy,
    /// Every taint configured on a group (`[groups.<name>] taints`): the
    /// device plugins tolerate them, or a tainted GPU node would get none.
    pub group_taints: Vec<crate::values::taint::Taint>,
}

impl AddonSettings {
    /// With the taints of every configured group (see [`Self::group_taints`]).
    pub fn with_group_taints(mut self, config: &crate::config::Config) -> Self {
        let mut taints: Vec<crate::values::taint::Taint> = config
            .groups
            .values()
            .flat_map(|g| g.taints.iter())
            .filter_map(|t| crate::values::taint::Taint::parse(t).ok())
            .collect();
        taints.sort();
        taints.dedup_by(|a, b| a.key == b.key && a.effect == b.effect);
        self.group_taints = taints;
        self
    }

    /// Resolves `[addons]` for a cluster whose pod subnet is `pod_subnet`.
    pub fn from_config(cfg: &AddonsConfig, pod_subnet: &str) -> Result<Self> {
        flannel::check_pod_subnet(pod_subnet)?;
        Ok(Self {
            images: AddonImages::from_config(cfg)?,
            pod_subnet: pod_subnet.to_string(),
            manifest_dir: cfg.manifest_dir.clone(),
            rollout_timeout: Duration::from_secs(cfg.rollout_timeout_secs),
            nvidia_device_list_strategy: cfg.nvidia_device_list_strategy,
            group_taints: Vec::new(),
        })
    }
}

/// One addon: its name in reports and its objects in apply order
/// (namespace and RBAC before the workloads that need them).
#[derive(Debug, Clone, PartialEq)]
pub struct Addon {
    /// Short name (`flannel`).
    pub name: &'static str,
    /// The objects.
    pub objects: Vec<AddonObject>,
}

impl Addon {
    /// The addon's DaemonSets.
    pub fn daemon_sets(&self) -> impl Iterator<Item = &DaemonSet> {
        self.objects.iter().filter_map(AddonObject::as_daemon_set)
    }
}

/// The built-in addons, in apply order.
pub fn built_in(settings: &AddonSettings) -> Result<Vec<Addon>> {
    Ok(vec![
        Addon {
            name: flannel::NAME,
            objects: flannel::objects(&settings.images, &settings.pod_subnet)?,
        },
        Addon {
            name: nvidia_device_plugin::NAME,
            objects: vec![AddonObject::DaemonSet(Box::new(
                nvidia_device_plugin::daemon_set(
                    &settings.images.nvidia_device_plugin,
                    settings.nvidia_device_list_strategy,
                    &settings.group_taints,
                ),
            ))],
        },
        Addon {
            name: efa_device_plugin::NAME,
            objects: vec![AddonObject::DaemonSet(Box::new(
                efa_device_plugin::daemon_set(
                    &settings.images.efa_device_plugin,
                    &settings.group_taints,
                ),
            ))],
        },
    ])
}
