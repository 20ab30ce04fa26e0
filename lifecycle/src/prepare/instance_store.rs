//! Step `instance-store` of phase `prepare`.

use std::path::PathBuf;

use crate::plan::StepPlan;

use super::Context;

/// Errors of this step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] crate::host::FsError),
}

impl Error {
    /// Process exit code for this error (see `docs/exit-codes.md`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Fs(_) => 41,
        }
    }
}

/// Where the instance store is (or will be, once this step is applied)
/// mounted: `None` when disabled or when the node has no instance store.
/// Other steps (containerd's data root) build on this.
pub fn store_root(cx: &Context<'_>) -> Result<Option<PathBuf>, Error> {
    let cfg = &cx.config.instance_store;
    if !cfg.enabled {
        return Ok(None);
    }
    for m in &cfg.existing_mounts {
        if cx.host.mount_at(m)?.is_some() {
            return Ok(Some(m.clone()));
        }
    }
    Ok(None)
}

/// What this step would change now.
pub fn plan(_cx: &Context<'_>) -> Result<StepPlan, Error> {
    Ok(StepPlan::new("instance-store"))
}
