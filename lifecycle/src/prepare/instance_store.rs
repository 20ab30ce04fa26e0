//! Step `instance-store` of phase `prepare`.

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

/// What this step would change now.
pub fn plan(_cx: &Context<'_>) -> Result<StepPlan, Error> {
    Ok(StepPlan::new("instance-store"))
}
