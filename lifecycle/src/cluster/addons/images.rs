//! The addon images and the registry-mirror rule.
//!
//! Rule: with `addons.registry_mirror = M`, every built-in addon image
//! (defaults and overrides alike) loses its registry and gets `M` instead;
//! repository path, tag and digest stay as they are:
//!
//! | image | mirrored (`M = mirror.internal:5000`) |
//! |-------|---------------------------------------|
//! | `ghcr.io/flannel-io/flannel:v0.26.7` | `mirror.internal:5000/flannel-io/flannel:v0.26.7` |
//! | `nvcr.io/nvidia/k8s-device-plugin:v0.17.1` | `mirror.internal:5000/nvidia/k8s-device-plugin:v0.17.1` |
//! | `busybox:1.36` (Docker Hub) | `mirror.internal:5000/library/busybox:1.36` |
//!
//! The first path component of an image is its registry when it contains
//! `.` or `:` or is `localhost` (Docker's rule); otherwise the image is on
//! Docker Hub. `M` may carry a path (`mirror.internal/cache`), which then
//! prefixes the repository. Manifests from `addons.manifest_dir` are the
//! operator's own and are applied as written.

use crate::config::AddonsConfig;

use super::error::{Error, Result};

/// The images of the built-in addons, mirror applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonImages {
    /// flannel (`flanneld`, and the init container copying the CNI config).
    pub flannel: String,
    /// flannel's CNI plugin binary installer.
    pub flannel_cni_plugin: String,
    /// NVIDIA device plugin.
    pub nvidia_device_plugin: String,
    /// EFA device plugin.
    pub efa_device_plugin: String,
}

impl AddonImages {
    /// The configured images, rewritten to `registry_mirror` when set.
    pub fn from_config(cfg: &AddonsConfig) -> Result<Self> {
        let mirror = cfg
            .registry_mirror
            .as_deref()
            .map(check_mirror)
            .transpose()?;
        let image = |key: &'static str, value: &str| -> Result<String> {
            check_image(key, value)?;
            Ok(match mirror {
                Some(m) => mirrored(value, m),
                None => value.to_string(),
            })
        };
        Ok(Self {
            flannel: image("flannel_image", &cfg.flannel_image)?,
            flannel_cni_plugin: image("flannel_cni_plugin_image", &cfg.flannel_cni_plugin_image)?,
            nvidia_device_plugin: image(
                "nvidia_device_plugin_image",
                &cfg.nvidia_device_plugin_image,
            )?,
            efa_device_plugin: image("efa_device_plugin_image", &cfg.efa_device_plugin_image)?,
        })
    }

    /// Every image.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.flannel,
            &self.flannel_cni_plugin,
            &self.nvidia_device_plugin,
            &self.efa_device_plugin,
        ]
    }
}

/// Validates a mirror and returns it without a trailing `/`.
fn check_mirror(value: &str) -> Result<&str> {
    let invalid = |why: &str| Error::InvalidMirror {
        value: value.to_string(),
        why: why.to_string(),
    };
    let m = value.trim_end_matches('/');
    if m.is_empty() {
        return Err(invalid("it is empty; leave the key out for no mirror"));
    }
    if m.contains("://") {
        return Err(invalid(
            "drop the scheme (container registries speak HTTPS)",
        ));
    }
    if m.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err(invalid("it contains whitespace or `@`"));
    }
    let host = m.split('/').next().unwrap_or("");
    if host.is_empty() || m.split('/').any(str::is_empty) {
        return Err(invalid("it has an empty path component"));
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(
            "the port is not a number (a tag does not belong here)",
        ));
    }
    Ok(m)
}

fn check_image(key: &'static str, value: &str) -> Result<()> {
    let why = if value.is_empty() {
        Some("it is empty")
    } else if value.contains("://") {
        Some("an image reference has no scheme")
    } else if value.chars().any(char::is_whitespace) {
        Some("it contains whitespace")
    } else if value.starts_with('/') || value.ends_with('/') || value.contains("//") {
        Some("it has an empty path component")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::InvalidImage {
            key,
            value: value.to_string(),
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Whether the first path component of an image names a registry.
fn is_registry(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// `image` with its registry replaced by `mirror` (see the module docs).
pub fn mirrored(image: &str, mirror: &str) -> String {
    let mirror = mirror.trim_end_matches('/');
    let repository = match image.split_once('/') {
        Some((first, rest)) if is_registry(first) => rest.to_string(),
        Some(_) => image.to_string(),
        // Docker Hub's official images live under `library/`.
        None => format!("library/{image}"),
    };
    format!("{mirror}/{repository}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_replaces_the_registry_only() {
        let m = "mirror.internal:5000";
        assert_eq!(
            mirrored("ghcr.io/flannel-io/flannel:v0.26.7", m),
            "mirror.internal:5000/flannel-io/flannel:v0.26.7"
        );
        assert_eq!(
            mirrored(
                "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/aws-efa-k8s-device-plugin:v0.5.20",
                m
            ),
            "mirror.internal:5000/eks/aws-efa-k8s-device-plugin:v0.5.20"
        );
        assert_eq!(
            mirrored("localhost/x/y@sha256:abc", "m.example/cache/"),
            "m.example/cache/x/y@sha256:abc"
        );
        assert_eq!(
            mirrored("busybox:1.36", m),
            "mirror.internal:5000/library/busybox:1.36"
        );
        assert_eq!(mirrored("user/app:1", m), "mirror.internal:5000/user/app:1");
        assert_eq!(
            mirrored("registry:5000/app:1", m),
            "mirror.internal:5000/app:1"
        );
    }

    #[test]
    fn bad_mirrors_are_rejected() {
        for bad in [
            "",
            "https://mirror",
            "mirror:tag/x",
            "a//b",
            "m irror",
            "mirror:",
        ] {
            let e = check_mirror(bad).unwrap_err();
            assert_eq!(e.kind(), "registry_mirror_invalid", "{bad}: {e}");
            assert!(e.to_string().contains("addons.registry_mirror"), "{e}");
        }
        assert_eq!(
            check_mirror("mirror.internal:5000/").unwrap(),
            "mirror.internal:5000"
        );
    }

    #[test]
    fn config_images_are_all_mirrored() {
        let cfg = AddonsConfig {
            registry_mirror: Some("mirror.internal:5000".into()),
            ..Default::default()
        };
        let images = AddonImages::from_config(&cfg).unwrap();
        for i in images.all() {
            assert!(i.starts_with("mirror.internal:5000/"), "{i}");
        }
        let bad = AddonsConfig {
            flannel_image: "https://x/y".into(),
            ..Default::default()
        };
        let e = AddonImages::from_config(&bad).unwrap_err();
        assert!(e.to_string().contains("addons.flannel_image"), "{e}");
    }
}
