//! kubelet's image credential provider for Amazon ECR. Outside EKS kubelet
//! has no credentials for a private ECR registry (the in-tree AWS provider
//! left kubelet in 1.27): pulls fail with "no basic auth credentials". The
//! out-of-tree `ecr-credential-provider` (kubernetes/cloud-provider-aws)
//! trades the node's instance-role credentials for a registry token; kubelet
//! runs it for images that match the config written here, when started with
//! `--image-credential-provider-config` and `--image-credential-provider-bin-dir`
//! (which kubeadm passes from the node registration hpk8s renders).

use std::path::Path;

use crate::cluster::addons::images::AddonImages;
use crate::config::{Config, EcrCredentialProvider};
use crate::hardware::Hardware;
use crate::host::{FileMode, Host};
use crate::plan::{Change, SourceUrl, StepPlan, redact_url};

use super::error::Error;
use super::mirror::{fetch_checksum, installed_sha256, kubernetes_arch, sha256_for};

/// The provider's name, which must equal its binary's file name.
pub const PROVIDER: &str = "ecr-credential-provider";
/// kubelet's `--image-credential-provider-bin-dir`.
pub const BIN_DIR: &str = "/usr/local/libexec/hpk8s/credential-providers";
/// kubelet's `--image-credential-provider-config`.
pub const CONFIG: &str = "/etc/kubernetes/image-credential-provider-config.yaml";
/// The config: ECR registries (commercial and China partitions; a `*`
/// matches one DNS label), tokens cached for 12 hours (ECR's lifetime).
pub const CONFIG_TEXT: &str = "\
# Written by hpk8s: kubelet asks ecr-credential-provider for ECR pulls.
apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - \"*.dkr.ecr.*.amazonaws.com\"
      - \"*.dkr.ecr.*.amazonaws.com.cn\"
      - \"*.dkr.ecr-fips.*.amazonaws.com\"
    defaultCacheDuration: \"12h\"
    apiVersion: credentialprovider.kubelet.k8s.io/v1
";

/// Whether `image` is in a private ECR registry
/// (`<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]/…`).
pub fn is_ecr_image(image: &str) -> bool {
    let Some((registry, _)) = image.split_once('/') else {
        return false;
    };
    let registry = registry.split(':').next().unwrap_or(registry);
    let labels: Vec<&str> = registry.split('.').collect();
    let account = labels.first().copied().unwrap_or("");
    let tail_ok = match labels.as_slice() {
        [_, "dkr", ecr, _region, "amazonaws", "com"] => matches!(*ecr, "ecr" | "ecr-fips"),
        [_, "dkr", ecr, _region, "amazonaws", "com", "cn"] => matches!(*ecr, "ecr" | "ecr-fips"),
        _ => false,
    };
    tail_ok && account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// Whether kubelet on this node is set up with the provider: `always`, or
/// (`auto`) when an addon image this node runs is in ECR: flannel's on
/// every node, the NVIDIA plugin's where there are NVIDIA GPUs, the EFA
/// plugin's where there are EFA adapters (its DaemonSet runs nowhere else).
/// Decided from the configuration and the node's own hardware, which the
/// packages step and the node's kubeadm configuration both see.
pub fn enabled(config: &Config, hardware: &Hardware) -> bool {
    match config.addons.ecr_credential_provider {
        EcrCredentialProvider::Always => true,
        EcrCredentialProvider::Never => false,
        EcrCredentialProvider::Auto => {
            let Ok(images) = AddonImages::from_config(&config.addons) else {
                return false;
            };
            let runs_here = [
                (&images.flannel, true),
                (&images.flannel_cni_plugin, true),
                (&images.nvidia_device_plugin, hardware.nvidia_gpus > 0),
                (&images.efa_device_plugin, hardware.efa_devices > 0),
            ];
            runs_here
                .iter()
                .any(|(image, here)| *here && is_ecr_image(image))
        }
    }
}

/// The provider's URL for this machine.
fn url(config: &Config) -> Result<String, Error> {
    let arch = kubernetes_arch(std::env::consts::ARCH).ok_or(Error::UnsupportedArch {
        arch: std::env::consts::ARCH,
    })?;
    Ok(config.ecr_credential_provider_url().replace("{arch}", arch))
}

/// Plans the provider binary and kubelet's config for it.
pub async fn plan(host: &Host, config: &Config, plan: &mut StepPlan) -> Result<(), Error> {
    if !enabled(config, &Hardware::detect(host)?) {
        return Ok(());
    }
    plan.note(match config.addons.ecr_credential_provider {
        EcrCredentialProvider::Always => "ECR credential provider: addons.ecr_credential_provider = always".to_string(),
        _ => "ECR credential provider: an addon image is in ECR, which kubelet cannot pull from without it".to_string(),
    });
    let binary = Path::new(BIN_DIR).join(PROVIDER);
    let url = url(config)?;
    let sha256 = match config.packages.sha256.get(PROVIDER) {
        Some(pinned) => pinned.to_ascii_lowercase(),
        None => {
            let checksum_url = format!("{url}.sha256");
            let body = fetch_checksum(&checksum_url, |shown| Error::ReleaseNotFound {
                url: shown,
                what: format!("{PROVIDER} (addons.ecr_credential_provider_url)"),
            })
            .await?;
            let file = url.rsplit('/').next().unwrap_or(PROVIDER);
            sha256_for(&body, file).map_err(|problem| Error::MalformedChecksum {
                url: redact_url(&checksum_url),
                problem,
            })?
        }
    };
    if installed_sha256(host, &binary)?.as_deref() == Some(sha256.as_str())
        && host.mode_of(&binary) == Some(FileMode::EXECUTABLE.mode)
    {
        plan.note(format!("{PROVIDER} is installed at {}", binary.display()));
    } else {
        plan.push(Change::Download {
            url: SourceUrl(url),
            sha256,
            path: binary,
            mode: FileMode::EXECUTABLE,
        });
    }
    plan.push_opt(Change::write_file(
        host,
        CONFIG,
        CONFIG_TEXT,
        FileMode::CONFIG,
        false,
    )?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_images_are_recognised() {
        for ecr in [
            "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-efa-k8s-device-plugin:v0.5.20",
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/x:1",
            "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/x@sha256:abc",
        ] {
            assert!(is_ecr_image(ecr), "{ecr}");
        }
        for other in [
            "public.ecr.aws/eks/aws-efa-k8s-device-plugin:v0.5.20",
            "ghcr.io/flannel-io/flannel:v0.26.7",
            "mirror.internal:5000/eks/aws-efa-k8s-device-plugin:v0.5.20",
            "12345.dkr.ecr.us-west-2.amazonaws.com/x:1",
            "602401143452.dkr.ecr.us-west-2.amazonaws.com.evil.io/x:1",
            "busybox",
        ] {
            assert!(!is_ecr_image(other), "{other}");
        }
    }

    #[test]
    fn auto_follows_the_addon_images_this_node_runs() {
        let efa = Hardware {
            nvidia_gpus: 8,
            efa_devices: 32,
            gpu_device_id: Some(0x2330),
        };
        let gpu_only = Hardware {
            efa_devices: 0,
            ..efa
        };
        let mut c = Config::default();
        assert!(enabled(&c, &efa), "the default EFA image is in ECR");
        assert!(
            !enabled(&c, &gpu_only),
            "no EFA: its plugin never runs here"
        );
        c.addons.nvidia_device_plugin_image =
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/nvidia/k8s-device-plugin:v0.17.1".into();
        assert!(enabled(&c, &gpu_only));
        c.addons.registry_mirror = Some("mirror.internal:5000".into());
        assert!(!enabled(&c, &efa), "a mirror serves every addon image");
        c.addons.ecr_credential_provider = EcrCredentialProvider::Always;
        assert!(enabled(&c, &Hardware::default()));
        c.addons.registry_mirror = None;
        c.addons.ecr_credential_provider = EcrCredentialProvider::Never;
        assert!(!enabled(&c, &efa));
    }
}
