//! Test harness for hpk8s: fake host roots, test doubles (Kubernetes API
//! server, IMDS, moto, NVML) and launchers for real components (containerd,
//! systemd-nspawn nodes). Nothing here ships in the `hpk8s` binary.

use std::path::PathBuf;

pub mod cluster_bed;
pub mod fixtures;
pub mod golden;
pub mod imds;
pub mod kube_api;
pub mod kubeadm_stand_in;
pub mod local_apt;
pub mod logs;
pub mod mirror;
pub mod moto;
pub mod netns;
pub mod node;
pub mod nvml;
pub mod sim;

/// Whether we run under CI, where tests needing real components must fail
/// instead of skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Skips (returns `true`) when a real component is missing outside CI; panics
/// under CI, where a skipped real-component test would be a false green.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    assert!(!in_ci(), "{what} is required under CI but is not available");
    eprintln!("SKIPPED: {what} is not available (set CI=1 to make this a failure)");
    true
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The `hpk8s` binary under test: `$HPK8S_BIN`, else `target/debug/hpk8s`
/// (`scripts/test.sh` builds it before running the tests).
pub fn hpk8s_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HPK8S_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/hpk8s");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hpk8s` first",
        bin.display()
    );
    bin
}

/// The kubeadm stand-in (`tests/src/bin/kubeadm.rs`): `$HPK8S_KUBEADM_BIN`,
/// else `target/debug/kubeadm` (cargo builds it for this crate's tests).
pub fn kubeadm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HPK8S_KUBEADM_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug/kubeadm");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hpk8s-tests --bin kubeadm` first",
        bin.display()
    );
    bin
}
