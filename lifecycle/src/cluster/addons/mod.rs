//! Cluster addons: flannel (the pod network) and the NVIDIA and EFA device
//! plugins, built as typed Kubernetes objects, plus the operator's own
//! manifests from `addons.manifest_dir`, all applied with server-side apply.
//!
//! - [`images`]: the addon images and the registry-mirror rule.
//! - [`flannel`], [`nvidia_device_plugin`], [`efa_device_plugin`]: the objects.
//! - [`manifest_dir`]: extra manifests read from the host.
//! - [`objects`]: typed objects and their conversion; [`catalog`]: the built-in set.
//! - [`apply`]: server-side apply (field manager `hpk8s`, forced), idempotent.
//! - [`rollout`]: DaemonSet readiness with a deadline, reported, never awaited forever.
//!
//! The device plugins are applied on every cluster: their node affinity
//! keeps them off nodes without the hardware label, so a cluster without
//! GPUs simply runs zero of their pods.

pub mod apply;
pub mod catalog;
pub mod diff;
pub mod efa_device_plugin;
mod error;
pub mod flannel;
pub mod images;
pub mod manifest_dir;
pub mod nvidia_device_plugin;
pub mod objects;
pub mod rollout;

pub use self::apply::{
    ApplyOutcome, ApplyReport, all_manifests, apply_all, apply_objects, rollout_targets,
};
pub use self::catalog::{Addon, AddonSettings, built_in};
pub use self::error::{Error, Result};
pub use self::images::AddonImages;
pub use self::objects::{
    AddonObject, DEVICE_PLUGIN_DIR, KUBE_SYSTEM, MANAGED_BY_LABEL, Manifest, NODE_CRITICAL,
};
pub use self::rollout::{RolloutEntry, RolloutReport, rollout_status};
