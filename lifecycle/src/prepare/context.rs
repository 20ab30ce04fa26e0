//! What every step of phase `prepare` gets to look at.

use crate::config::Config;
use crate::host::Host;
use crate::identity::NodeIdentity;

/// What every step gets to look at.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The host being prepared.
    pub host: &'a Host,
    /// Effective configuration.
    pub config: &'a Config,
    /// Who this node is.
    pub identity: &'a NodeIdentity,
}
